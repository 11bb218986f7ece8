package main

import "syscall"

// umask sets the process umask and returns the previous one, so the
// daemon's socket is created owner-only without a window where it is not.
func umask(mask int) int { return syscall.Umask(mask) }
