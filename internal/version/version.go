// Package version holds the build's version and commit, set at link time:
//
//	go build -ldflags "-X github.com/tasksweeper/sweeper/internal/version.Version=v1.2.3 \
//	  -X github.com/tasksweeper/sweeper/internal/version.Commit=abc1234"
package version

import "runtime"

// Version is the release version; "dev" for builds without -ldflags.
var Version = "dev"

// Commit is the source commit; "unknown" for builds without -ldflags.
var Commit = "unknown"

// GoVersion is the Go toolchain the binary was built with.
var GoVersion = runtime.Version()

// String renders the version line printed by `sweeper --version`.
func String() string {
	return "sweeper " + Version + " (commit " + Commit + ", " + GoVersion + ")"
}

// ClientVersion is the version of the API clients shipped with this
// daemon (clients/python, clients/typescript): released together, their
// version follows the daemon's minor version, and a test of each client
// fails when its package version differs from this.
const ClientVersion = "0.4.0"
