// Package version says which build of parley or parleyd is running: the
// module version (a release tag, or "(devel)" for a local build), the
// source revision when the build recorded one, and the Go version.
package version

import (
	"fmt"
	"runtime/debug"
)

// String describes the running build of program, for `version` commands.
func String(program string) string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return program + " (no build information)"
	}
	s := fmt.Sprintf("%s %s", program, info.Main.Version)
	var rev, modified string
	for _, kv := range info.Settings {
		switch kv.Key {
		case "vcs.revision":
			rev = kv.Value
		case "vcs.modified":
			if kv.Value == "true" {
				modified = "+modified"
			}
		}
	}
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		s += " (" + rev + modified + ")"
	}
	return s + " " + info.GoVersion
}
