// Package cli is sweeper's command line: it parses arguments, loads the
// configuration, runs the chosen command and maps the outcome to an exit code.
// cmd/sweeper/main.go only calls Main.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tasksweeper/sweeper/internal/config"
)

// Exit codes, documented in the README.
const (
	ExitOK      = 0 // success
	ExitFailure = 1 // runtime failure: database unreachable, schema refused, sweep failed
	ExitUsage   = 2 // usage or configuration error
	ExitStuck   = 3 // --once --fail-on-stuck marked (or, with --dry-run, found) stuck delegations
)

// usageError marks an error as the user's: bad arguments or configuration.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// errStuck is returned by --once --fail-on-stuck after printing its summary.
var errStuck = errors.New("stuck delegations found")

const usageText = `sweeper finds delegations that stopped making progress and marks them stuck.

Usage:
  sweeper [flags]                     run the daemon: sweep on a schedule until SIGINT/SIGTERM
  sweeper --once [flags]              run one full sweep and exit
  sweeper migrate up|down|version|force N [flags]
  sweeper status [flags]              counts by status, oldest heartbeat, rows eligible now
  sweeper config validate [flags]     load and check the configuration, print it (no password)
  sweeper prune [--dry-run] [flags]   delete terminal delegations past their retention, with their events
  sweeper archive verify DIR          check the archive files written by prune (retention.archive_dir)
  sweeper dev                         throwaway PostgreSQL + demo ledger + daemon; Ctrl-C cleans up
  sweeper token create --name N --role R [--principal ID] | token list | token revoke N
                                      API bearer tokens (shown once, stored hashed)
  sweeper webhook create --url URL [--events stuck,failed] [--caller-id ID] [--callee-id ID]
  sweeper webhook list | delete ID | rotate-secret ID | resume ID
                                      webhook subscriptions (the signing secret is shown once)

Flags:
`

const exitText = `
Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error,
3 with --once --fail-on-stuck when delegations were marked stuck.
Configuration: defaults < --config file < SWEEPER_* environment < flags.
`

// options are the flags that are not configuration keys.
type options struct {
	configPath  string
	once        bool
	dryRun      bool
	failOnStuck bool
	output      string
	showVersion bool
}

// invocation is one run of sweeper: its streams, environment and parsed
// flags, which every command reads besides its arguments.
type invocation struct {
	stdout, stderr io.Writer
	environ        []string
	opts           options
	token          tokenFlags
	webhook        webhookFlags
	flags          *flag.FlagSet
}

// Main runs sweeper with args (without the program name) and returns the
// process exit code. It installs the SIGINT/SIGTERM handler.
func Main(args []string, stdout, stderr io.Writer, environ []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Run(ctx, args, stdout, stderr, environ)
}

// Run is Main with the context given: cancelling it is a shutdown signal.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer, environ []string) int {
	inv := &invocation{stdout: stdout, stderr: stderr, environ: environ}
	fs := newFlagSet(&inv.opts)
	inv.token.register(fs)
	inv.webhook.register(fs)
	inv.flags = fs

	positional, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		printUsage(stdout, fs)
		return ExitOK
	}
	if err == nil {
		err = inv.dispatch(ctx, positional)
	}
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		// SIGINT or SIGTERM before the command was done: a clean stop.
		err = nil
	}
	return inv.exit(err)
}

// newFlagSet registers every flag of every command on one set, storing the
// options in opts; each command then refuses the flags it does not accept.
func newFlagSet(opts *options) *flag.FlagSet {
	fs := flag.NewFlagSet("sweeper", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&opts.configPath, flagConfig, "", "path of the YAML configuration `file` (env SWEEPER_CONFIG)")
	fs.BoolVar(&opts.once, flagOnce, false, "run one full sweep and exit")
	fs.BoolVar(&opts.dryRun, flagDryRun, false, "find what would be marked stuck, change nothing (same as --sweep-dry-run)")
	fs.BoolVar(&opts.failOnStuck, flagFailOnStuck, false, "with --once: exit 3 when delegations were marked (or in a dry run, found) stuck")
	fs.StringVar(&opts.output, flagOutput, "text", "output `format` of --once, migrate, status, config validate, token and webhook: text or json")
	fs.BoolVar(&opts.showVersion, flagVersion, false, "print the version and exit")
	config.RegisterFlags(fs)
	return fs
}

// dispatch picks the command that the arguments name, refuses the flags set
// that it does not accept, and runs it.
func (inv *invocation) dispatch(ctx context.Context, positional []string) error {
	cmd, args, err := selectCommand(inv.opts, positional)
	if err != nil {
		return err
	}
	if err := cmd.checkFlags(inv.flags); err != nil {
		return err
	}
	if inv.opts.output != "text" && inv.opts.output != "json" {
		return usagef("--output: must be text or json, got %q", inv.opts.output)
	}
	return cmd.run(inv, ctx, args)
}

// exit prints err as one line and maps it to an exit code.
func (inv *invocation) exit(err error) int {
	if err == nil {
		return ExitOK
	}
	if errors.Is(err, errStuck) {
		return ExitStuck
	}
	var ue usageError
	var ce *config.Error
	code := ExitFailure
	if errors.As(err, &ue) || errors.As(err, &ce) {
		code = ExitUsage
	}
	msg := strings.ReplaceAll(err.Error(), "\n", "; ")
	fmt.Fprintf(inv.stderr, "sweeper: %s\n", msg)
	if code == ExitUsage {
		fmt.Fprintln(inv.stderr, "Run 'sweeper --help' for usage.")
	}
	return code
}

// parseInterleaved parses flags wherever they stand among the positional
// arguments: `sweeper migrate force 3 --config x` and
// `sweeper --config x migrate force 3` mean the same.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err}
		}
		if fs.NArg() == 0 {
			return positional, nil
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func printUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, usageText)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
	fmt.Fprint(w, "\nFlags by command (any other flag is a usage error):\n")
	fmt.Fprint(w, flagsByCommand())
	fmt.Fprint(w, exitText)
}

// loadConfig loads the configuration from the --config file (or
// SWEEPER_CONFIG), the environment and the flags.
func (inv *invocation) loadConfig() (config.Config, error) {
	path := inv.opts.configPath
	if path == "" {
		path = lookupEnv(inv.environ, "SWEEPER_CONFIG")
	}
	cfg, err := config.Load(path, withoutConfigVar(inv.environ), inv.flags)
	if err != nil {
		return cfg, err
	}
	if inv.opts.dryRun {
		cfg.Sweep.DryRun = true
	}
	return cfg, nil
}

func lookupEnv(environ []string, name string) string {
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v
		}
	}
	return ""
}

// withoutConfigVar drops SWEEPER_CONFIG, which names the file rather than a key.
func withoutConfigVar(environ []string) []string {
	out := make([]string, 0, len(environ))
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "SWEEPER_CONFIG=") {
			out = append(out, kv)
		}
	}
	return out
}

// newLogger builds the zap logger the configuration asks for, writing to w.
func newLogger(cfg config.Config, w io.Writer) *zap.Logger {
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.TimeKey = "ts"
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	encCfg.EncodeDuration = zapcore.StringDurationEncoder
	var enc zapcore.Encoder
	if cfg.Log.Format == config.LogFormatConsole {
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), cfg.Log.ZapLevel())
	return zap.New(core, zap.ErrorOutput(zapcore.Lock(zapcore.AddSync(w))))
}
