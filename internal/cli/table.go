package cli

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strings"

	"github.com/tasksweeper/sweeper/internal/config"
	"github.com/tasksweeper/sweeper/internal/version"
)

// The flags that are not configuration keys.
const (
	flagConfig      = "config"
	flagOnce        = "once"
	flagDryRun      = "dry-run"
	flagFailOnStuck = "fail-on-stuck"
	flagOutput      = "output"
	flagVersion     = "version"
	flagName        = "name"
	flagRole        = "role"
	flagPrincipal   = "principal"
)

// allKeys, as command.keys, accepts the flag of every configuration key.
var allKeys = []string{"*"}

// command is one of sweeper's commands with the flags it accepts: a flag
// set on the command line that the command does not list is a usage error,
// never silently ignored.
type command struct {
	// name is the command as the user types it: "sweeper --once".
	name string
	// options lists the flags other than configuration keys that it
	// accepts. The flag that selects the command (--once, --version) is
	// listed too.
	options []string
	// keys lists the configuration keys whose flags it accepts (the keys it
	// reads), or is allKeys.
	keys []string
	// run runs the command with its positional arguments after the name.
	run func(inv *invocation, ctx context.Context, args []string) error
}

// Every command, in the order of the usage text.
var (
	cmdDaemon = &command{
		name:    "sweeper",
		options: []string{flagConfig, flagDryRun},
		keys:    allKeys,
		run:     noArgs("sweeper", (*invocation).runDaemon),
	}
	cmdOnce = &command{
		name:    "sweeper --once",
		options: []string{flagOnce, flagConfig, flagDryRun, flagFailOnStuck, flagOutput},
		// Everything but what only the long-running process reads: it
		// neither schedules, serves HTTP nor waits out a grace period.
		keys: []string{"database.url", "database.max_conns", "database.pooler", "database.query_exec_mode", "database.migrate_url",
			"sweep.heartbeat_timeout", "sweep.progress_timeout", "sweep.queue_timeout", "sweep.start_timeout",
			"sweep.batch_size", "sweep.max_batches_per_run",
			"sweep.notify_channel", "sweep.dry_run", "migrate.auto", "log.level", "log.format"},
		run: noArgs("sweeper --once", (*invocation).runOnce),
	}
	cmdMigrate = &command{
		name:    "sweeper migrate",
		options: []string{flagConfig, flagOutput},
		keys:    []string{"database.url", "database.pooler", "database.migrate_url"},
		run:     (*invocation).runMigrate,
	}
	cmdStatus = &command{
		name:    "sweeper status",
		options: []string{flagConfig, flagOutput},
		keys: []string{"database.url", "database.max_conns", "database.pooler", "database.query_exec_mode",
			"sweep.heartbeat_timeout", "sweep.progress_timeout", "sweep.queue_timeout", "sweep.start_timeout"},
		run: noArgs("status", (*invocation).runStatus),
	}
	cmdConfigValidate = &command{
		name:    "sweeper config validate",
		options: []string{flagConfig, flagDryRun, flagOutput},
		keys:    allKeys,
		run:     (*invocation).runConfigValidate,
	}
	cmdToken = &command{
		name:    "sweeper token",
		options: []string{flagConfig, flagOutput, flagName, flagRole, flagPrincipal},
		keys:    []string{"database.url", "database.max_conns", "database.pooler", "database.query_exec_mode", "log.level", "log.format"},
		run:     (*invocation).runToken,
	}
	cmdPrune = &command{
		name:    "sweeper prune",
		options: []string{flagConfig, flagDryRun, flagOutput},
		keys: []string{"database.url", "database.max_conns", "database.pooler", "database.query_exec_mode",
			"database.migrate_url", "sweep.dry_run", "migrate.auto",
			"retention.completed", "retention.failed", "retention.stuck", "retention.batch_size",
			"retention.archive_dir", "log.level", "log.format"},
		run: noArgs("prune", (*invocation).runPrune),
	}
	cmdArchive = &command{
		name:    "sweeper archive verify",
		options: []string{flagOutput},
		run: func(inv *invocation, _ context.Context, args []string) error {
			return inv.runArchive(args)
		},
	}
	cmdDev = &command{
		name: "sweeper dev",
		run:  noArgs("dev", (*invocation).runDev),
	}
	cmdHelp = &command{
		name: "sweeper help",
		// run is set by init: the usage text lists every command.
	}
	cmdVersion = &command{
		name:    "sweeper --version",
		options: []string{flagVersion},
		run: noArgs("version", func(inv *invocation, _ context.Context) error {
			fmt.Fprintln(inv.stdout, version.String())
			return nil
		}),
	}
	commands = []*command{cmdDaemon, cmdOnce, cmdMigrate, cmdStatus, cmdConfigValidate, cmdToken, cmdPrune, cmdArchive, cmdDev, cmdHelp, cmdVersion}
)

func init() {
	cmdHelp.run = func(inv *invocation, _ context.Context, _ []string) error {
		printUsage(inv.stdout, inv.flags)
		return nil
	}
}

// noArgs adapts a command that takes no positional arguments, refusing any.
func noArgs(name string, run func(*invocation, context.Context) error) func(*invocation, context.Context, []string) error {
	return func(inv *invocation, ctx context.Context, args []string) error {
		if len(args) > 0 {
			return usagef("%s takes no arguments, got %q", name, strings.Join(args, " "))
		}
		return run(inv, ctx)
	}
}

// selectCommand returns the command the arguments name and its remaining
// positional arguments.
func selectCommand(opts options, positional []string) (*command, []string, error) {
	switch {
	case len(positional) == 0 && opts.showVersion:
		return cmdVersion, nil, nil
	case len(positional) == 0 && opts.once:
		return cmdOnce, nil, nil
	case len(positional) == 0:
		return cmdDaemon, nil, nil
	}
	name, rest := positional[0], positional[1:]
	switch name {
	case "migrate":
		return cmdMigrate, rest, nil
	case "status":
		return cmdStatus, rest, nil
	case "config":
		if len(rest) != 1 || rest[0] != "validate" {
			return nil, nil, usagef("usage: sweeper config validate")
		}
		return cmdConfigValidate, nil, nil
	case "prune":
		return cmdPrune, rest, nil
	case "archive":
		return cmdArchive, rest, nil
	case "token":
		return cmdToken, rest, nil
	case "dev":
		return cmdDev, rest, nil
	case "help":
		return cmdHelp, rest, nil
	case "version":
		return cmdVersion, rest, nil // noArgs refuses rest
	}
	return nil, nil, usagef("unknown command %q (run sweeper --help)", name)
}

// checkFlags refuses the first flag set on the command line, in flag order,
// that c does not accept, naming it and the commands it goes with.
func (c *command) checkFlags(fs *flag.FlagSet) error {
	var bad string
	fs.Visit(func(f *flag.Flag) {
		if bad == "" && !c.accepts(f.Name) {
			bad = f.Name
		}
	})
	if bad == "" {
		return nil
	}
	var with []string
	for _, other := range commands {
		if other.accepts(bad) {
			with = append(with, other.name)
		}
	}
	return usagef("--%s does not apply to %s; it goes with %s", bad, c.name, strings.Join(with, ", "))
}

// accepts reports whether the flag named name applies to c.
func (c *command) accepts(name string) bool {
	if slices.Contains(c.options, name) {
		return true
	}
	path, isKey := keyOfFlag[name]
	return isKey && c.readsKey(path)
}

// readsKey reports whether c reads the configuration key at path.
func (c *command) readsKey(path string) bool {
	return slices.Equal(c.keys, allKeys) || slices.Contains(c.keys, path)
}

// keyOfFlag maps each configuration flag to its key's path.
var keyOfFlag = func() map[string]string {
	m := map[string]string{}
	for _, k := range config.Keys() {
		m[k.Flag] = k.Path
	}
	return m
}()

// flagsByCommand renders, for the usage text, which flags each command
// accepts.
func flagsByCommand() string {
	var b strings.Builder
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-25s %s\n", c.name, c.describeFlags(func(f string) string { return f }))
	}
	return b.String()
}

// describeFlags says which flags c accepts, each flag written by quote:
// "--config --output, every configuration flag".
func (c *command) describeFlags(quote func(string) string) string {
	var opts, read, skipped []string
	for _, o := range c.options {
		if o != flagOnce && o != flagVersion {
			opts = append(opts, quote("--"+o))
		}
	}
	for _, k := range config.Keys() {
		if c.readsKey(k.Path) {
			read = append(read, quote("--"+k.Flag))
		} else {
			skipped = append(skipped, quote("--"+k.Flag))
		}
	}
	text := strings.Join(opts, " ")
	switch {
	case len(skipped) == 0:
		text += ", every configuration flag"
	case len(read) > len(skipped):
		text += ", the configuration flags but " + strings.Join(skipped, " ")
	case len(read) > 0:
		text += " " + strings.Join(read, " ")
	case text == "":
		text = "no flags"
	}
	return text
}
