package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSQLiteSyncsEveryAcknowledgedSend counts, with strace, the fsync and
// fdatasync calls a real parleyd on SQLite makes while it acknowledges
// sends one at a time. Each send waits for its answer, so each is alone in
// its group commit, its own transaction: by default (--sqlite-synchronous full) there must be at
// least one sync per acknowledged send: an envelope answered 200 is on disk
// and survives a power cut. With the documented opt-in
// --sqlite-synchronous normal, syncs happen only at checkpoints: far fewer.
//
// strace comes from scripts/with-strace (make test), which sets
// PARLEY_TEST_STRACE_REQUIRED=1 so a missing or failing strace fails the test.
func TestSQLiteSyncsEveryAcknowledgedSend(t *testing.T) {
	strace := straceOrSkip(t)
	const sends = 100
	for _, tc := range []struct {
		name string
		args []string
		env  []string
	}{
		{"default", nil, nil},
		{"full", []string{"--sqlite-synchronous", "full"}, nil},
		{"normal", nil, []string{"PARLEY_SQLITE_SYNCHRONOUS=normal"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := start(t, append([]string{testNumbers}, tc.env...), append([]string{"--data-dir", t.TempDir()}, tc.args...)...)
			alice := registerDevice(t, p, "+15555550100")
			bob := registerDevice(t, p, "+15555550101")
			syncs := countSyncs(t, strace, p.cmd.Process.Pid, func() {
				for i := range sends {
					st, err := sendText(p, alice, bob, fmt.Sprint("m", i), fmt.Sprint("key-", i))
					if err != nil || st != 200 {
						t.Fatalf("send %d: %d %v", i, st, err)
					}
				}
			})
			p.stop()
			t.Logf("%s: %d fsync/fdatasync calls for %d acknowledged sends", tc.name, syncs, sends)
			if tc.name == "normal" {
				if syncs*4 > sends {
					t.Errorf("synchronous=normal: %d syncs for %d sends; expected syncs only at checkpoints", syncs, sends)
				}
				return
			}
			if syncs < sends {
				t.Errorf("%d syncs for %d acknowledged sends: an acknowledged envelope is not on disk before the 200 "+
					"(a power cut or OS crash can lose it)", syncs, sends)
			}
		})
	}
}

// straceOrSkip returns strace's path, skipping (or failing, under
// PARLEY_TEST_STRACE_REQUIRED=1) when it is missing or cannot trace here.
func straceOrSkip(t *testing.T) string {
	t.Helper()
	required := os.Getenv("PARLEY_TEST_STRACE_REQUIRED") == "1"
	path, err := exec.LookPath("strace")
	if err == nil {
		out, terr := exec.Command(path, "-f", "-e", "trace=fsync", "-o", os.DevNull, "true").CombinedOutput()
		if terr != nil {
			err = fmt.Errorf("strace cannot trace here (ptrace refused?): %v: %s", terr, out)
		}
	}
	if err != nil {
		if required {
			t.Fatalf("strace is required (PARLEY_TEST_STRACE_REQUIRED=1): %v", err)
		}
		t.Skipf("skipping: counting fsyncs needs strace (%v); run under scripts/with-strace, which installs it", err)
	}
	return path
}

// countSyncs attaches strace to every thread of pid, runs f, detaches and
// returns how many fsync and fdatasync calls the process made meanwhile.
func countSyncs(t *testing.T, strace string, pid int, f func()) int {
	t.Helper()
	summary := filepath.Join(t.TempDir(), "strace.txt")
	cmd := exec.Command(strace, "-f", "-p", strconv.Itoa(pid), "-e", "trace=fsync,fdatasync", "-c", "-o", summary)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// strace says "Process N attached" once per thread; the first line is
	// the main thread, and the others follow at once.
	attached := make(chan struct{})
	var errLines []string
	go func() {
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			errLines = append(errLines, sc.Text())
			if !once && strings.Contains(sc.Text(), "attached") {
				once = true
				close(attached)
			}
		}
	}()
	select {
	case <-attached:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("strace did not attach to parleyd: %q", errLines)
	}
	time.Sleep(200 * time.Millisecond) // the remaining threads
	f()
	cmd.Process.Signal(syscall.SIGINT) // detach and write the summary
	if err := cmd.Wait(); err != nil && !interrupted(err) {
		t.Fatalf("strace: %v: %q", err, errLines)
	}
	b, err := os.ReadFile(summary)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for line := range strings.Lines(string(b)) {
		fields := strings.Fields(line)
		if len(fields) < 5 || (fields[len(fields)-1] != "fsync" && fields[len(fields)-1] != "fdatasync") {
			continue
		}
		calls, err := strconv.Atoi(fields[3])
		if err != nil {
			t.Fatalf("strace summary line %q: %v", line, err)
		}
		n += calls
	}
	return n
}

// interrupted reports whether err is strace's exit after the SIGINT that
// detaches it.
func interrupted(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && (ws.Signaled() && ws.Signal() == syscall.SIGINT || ws.ExitStatus() == 128+int(syscall.SIGINT))
}
