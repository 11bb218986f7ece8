package keys

import "go.mau.fi/libsignal/logger"

// quietLogger discards libsignal's log output: its debug calls format key
// material and signed messages, and its default logger writes to stdout.
type quietLogger struct{}

func (quietLogger) Debug(string, string)   {}
func (quietLogger) Info(string, string)    {}
func (quietLogger) Warning(string, string) {}
func (quietLogger) Error(string, string)   {}
func (quietLogger) Configure(string)       {}

// libsignal keeps its logger in a package variable that it initialises
// lazily and without synchronisation on first use; concurrent first uses
// race. Installing ours before any use (package initialisation runs
// before main and before any test) removes both problems for every
// program that links this package.
func init() {
	var l logger.Loggable = quietLogger{}
	logger.Setup(&l)
}
