// Command sweeper finds delegations that stopped making progress and marks
// them stuck. Run `sweeper --help` for usage; the README documents the
// configuration, metrics and exit codes.
package main

import (
	"os"

	"github.com/tasksweeper/sweeper/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr, os.Environ()))
}
