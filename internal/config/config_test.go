package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tasksweeper/sweeper/sweep"
)

// writeConfig writes content to a fresh file and returns its path.
func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sweeper.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// parsedFlags registers the config flags on a new flag set and parses args.
func parsedFlags(t *testing.T, args ...string) *flag.FlagSet {
	t.Helper()
	fs := flag.NewFlagSet("sweeper", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse flags %q: %v", args, err)
	}
	return fs
}

// configErrors flattens an error returned by Load or Validate into its
// *Error parts, failing the test on any other kind of error.
func configErrors(t testing.TB, err error) []*Error {
	t.Helper()
	var out []*Error
	var walk func(error)
	walk = func(err error) {
		if joined, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range joined.Unwrap() {
				walk(e)
			}
			return
		}
		var ce *Error
		if !errors.As(err, &ce) {
			t.Fatalf("error %v (%T) is not a *config.Error", err, err)
		}
		out = append(out, ce)
	}
	if err != nil {
		walk(err)
	}
	return out
}

func TestDefault(t *testing.T) {
	t.Parallel()
	want := Config{
		Database: DatabaseConfig{URL: "", MaxConns: 4, Pooler: PoolerNone, ReadMaxLag: 10 * time.Second},
		Sweep: SweepConfig{
			Schedule:         "@every 30s",
			HeartbeatTimeout: 10 * time.Minute,
			BatchSize:        1000,
			MaxBatchesPerRun: 100,
			NotifyChannel:    "delegation_stuck",
			DryRun:           false,
		},
		Migrate: MigrateConfig{Auto: false},
		HTTP:    HTTPConfig{Listen: ":9090"},
		API: APIConfig{Listen: "", MaxBodyBytes: 1 << 20, MaxBatch: 10000, MaxWait: time.Minute,
			ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 90 * time.Second,
			IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16384},
		Log: LogConfig{Level: "info", Format: "json"},
		Retention: RetentionConfig{Completed: 30 * 24 * time.Hour, Failed: 90 * 24 * time.Hour,
			Stuck: 90 * 24 * time.Hour, Schedule: "@every 1h", BatchSize: 1000},
		Webhooks: WebhooksConfig{Enabled: true, Timeout: 10 * time.Second, MaxRetryAge: 72 * time.Hour,
			RetryMinBackoff: 5 * time.Second, RetryMaxBackoff: time.Hour, LeaseTTL: 30 * time.Second, PollInterval: time.Second,
			MaxInFlight: 16},
		ShutdownGrace: 30 * time.Second,
	}
	if got := Default(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Default() =\n%#v\nwant\n%#v", got, want)
	}
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
	got, err := Load("", nil, nil)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Load with no sources = %v, %v; want the defaults", got, err)
	}
}

// TestLoadPrecedence checks defaults <- file <- environment <- flags.
func TestLoadPrecedence(t *testing.T) {
	t.Parallel()
	const file = `
database:
  url: postgres://file@filehost/db
  max_conns: 8
sweep:
  schedule: "*/5 * * * *"
  heartbeat_timeout: 5m
  batch_size: 500
  max_batches_per_run: 7
  notify_channel: ""
  dry_run: true
migrate:
  auto: true
http:
  listen: ""
log:
  level: debug
  format: console
shutdown_grace: 1m
`
	fromFile := Default()
	fromFile.Database = DatabaseConfig{URL: "postgres://file@filehost/db", MaxConns: 8, Pooler: PoolerNone, ReadMaxLag: 10 * time.Second}
	fromFile.Sweep = SweepConfig{Schedule: "*/5 * * * *", HeartbeatTimeout: 5 * time.Minute,
		BatchSize: 500, MaxBatchesPerRun: 7, NotifyChannel: "", DryRun: true}
	fromFile.Migrate.Auto = true
	fromFile.HTTP.Listen = ""
	fromFile.Log = LogConfig{Level: "debug", Format: "console"}
	fromFile.ShutdownGrace = time.Minute

	tests := []struct {
		name  string
		file  string // "" for no file
		env   []string
		flags []string
		want  func(c *Config)
	}{
		{
			name: "defaults only",
			want: func(*Config) {},
		},
		{
			name: "file only",
			file: file,
			want: func(c *Config) { *c = fromFile },
		},
		{
			name: "partial file keeps other defaults",
			file: "sweep:\n  batch_size: 10\n",
			want: func(c *Config) { c.Sweep.BatchSize = 10 },
		},
		{
			name: "empty file",
			file: "\n",
			want: func(*Config) {},
		},
		{
			name: "comments only",
			file: "# nothing here\n",
			want: func(*Config) {},
		},
		{
			name: "null document and empty section",
			file: "sweep:\nlog: ~\n",
			want: func(*Config) {},
		},
		{
			name: "env overrides file",
			file: file,
			env: []string{
				"SWEEPER_SWEEP_BATCH_SIZE=42",
				"SWEEPER_SWEEP_HEARTBEAT_TIMEOUT=90s",
				"SWEEPER_SWEEP_DRY_RUN=0",
				"SWEEPER_HTTP_LISTEN=127.0.0.1:9191",
				"SWEEPER_SHUTDOWN_GRACE=5s",
				"SWEEPER_DATABASE_MAX_CONNS=2",
				"SWEEPER_SWEEP_NOTIFY_CHANNEL=stuck_tasks",
				"SWEEPER_LOG_LEVEL=warn",
				"PATH=/usr/bin",
			},
			want: func(c *Config) {
				*c = fromFile
				c.Sweep.BatchSize = 42
				c.Sweep.HeartbeatTimeout = 90 * time.Second
				c.Sweep.DryRun = false
				c.HTTP.Listen = "127.0.0.1:9191"
				c.ShutdownGrace = 5 * time.Second
				c.Database.MaxConns = 2
				c.Sweep.NotifyChannel = "stuck_tasks"
				c.Log.Level = "warn"
			},
		},
		{
			name: "env may set a value to empty",
			env:  []string{"SWEEPER_HTTP_LISTEN=", "SWEEPER_SWEEP_NOTIFY_CHANNEL="},
			want: func(c *Config) { c.HTTP.Listen = ""; c.Sweep.NotifyChannel = "" },
		},
		{
			name:  "flag overrides env and file",
			file:  file,
			env:   []string{"SWEEPER_SWEEP_BATCH_SIZE=42", "SWEEPER_LOG_FORMAT=json"},
			flags: []string{"--sweep-batch-size=7", "--log-format", "console", "--sweep-dry-run=false"},
			want: func(c *Config) {
				*c = fromFile
				c.Sweep.BatchSize = 7
				c.Log.Format = "console"
				c.Sweep.DryRun = false
			},
		},
		{
			name:  "flags not given leave env alone",
			env:   []string{"SWEEPER_SWEEP_BATCH_SIZE=42"},
			flags: []string{"--log-level=error"},
			want:  func(c *Config) { c.Sweep.BatchSize = 42; c.Log.Level = "error" },
		},
		{
			name:  "bare bool flags",
			flags: []string{"--sweep-dry-run", "--migrate-auto"},
			want:  func(c *Config) { c.Sweep.DryRun = true; c.Migrate.Auto = true },
		},
		{
			name: "every flag",
			flags: []string{
				"--database-url=postgres://flag@flaghost/db", "--database-max-conns=9",
				"--sweep-schedule=@hourly", "--sweep-heartbeat-timeout=2m", "--sweep-batch-size=3",
				"--sweep-max-batches-per-run=4", "--sweep-notify-channel=x1", "--sweep-dry-run=true",
				"--migrate-auto=1", "--http-listen=[::1]:0", "--log-level=warn", "--log-format=console",
				"--shutdown-grace=1h30m",
				"--retention-completed=1d", "--retention-failed=36h", "--retention-stuck=0",
				"--retention-schedule=@daily", "--retention-batch-size=5", "--retention-archive-dir=/a",
			},
			want: func(c *Config) {
				*c = Config{
					Database: DatabaseConfig{URL: "postgres://flag@flaghost/db", MaxConns: 9, Pooler: PoolerNone, ReadMaxLag: 10 * time.Second},
					Sweep: SweepConfig{Schedule: "@hourly", HeartbeatTimeout: 2 * time.Minute, BatchSize: 3,
						MaxBatchesPerRun: 4, NotifyChannel: "x1", DryRun: true},
					Migrate: MigrateConfig{Auto: true},
					HTTP:    HTTPConfig{Listen: "[::1]:0"},
					API:     Default().API,
					Log:     LogConfig{Level: "warn", Format: "console"},
					Retention: RetentionConfig{Completed: 24 * time.Hour, Failed: 36 * time.Hour,
						Schedule: "@daily", BatchSize: 5, ArchiveDir: "/a"},
					Webhooks:      Default().Webhooks,
					ShutdownGrace: 90 * time.Minute,
				}
			},
		},
		{
			name: "yaml anchors and quoted values",
			file: "sweep:\n  batch_size: &n 250\n  max_batches_per_run: *n\n  heartbeat_timeout: \"15m\"\n  dry_run: \"true\"\n",
			want: func(c *Config) {
				c.Sweep.BatchSize = 250
				c.Sweep.MaxBatchesPerRun = 250
				c.Sweep.HeartbeatTimeout = 15 * time.Minute
				c.Sweep.DryRun = true
			},
		},
		{
			name: "test harness variables are ignored",
			env:  []string{"SWEEPER_TEST_DATABASE_URL=postgres://x@y/z", "SWEEPER_REQUIRE_DB=1", "SWEEPER_TEST_ANYTHING=1"},
			want: func(*Config) {},
		},
		{
			name: "first of duplicate env entries wins, as with os.Getenv",
			env:  []string{"SWEEPER_SWEEP_BATCH_SIZE=11", "SWEEPER_SWEEP_BATCH_SIZE=22"},
			want: func(c *Config) { c.Sweep.BatchSize = 11 },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := ""
			if tt.file != "" {
				path = writeConfig(t, tt.file)
			}
			var fs *flag.FlagSet
			if tt.flags != nil {
				fs = parsedFlags(t, tt.flags...)
			}
			got, err := Load(path, tt.env, fs)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			want := Default()
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("Load =\n%v\nwant\n%v", got, want)
			}
		})
	}
}

func TestDatabaseURLFallback(t *testing.T) {
	t.Parallel()
	const (
		fileURL    = "postgres://file@filehost/db"
		sweeperURL = "postgres://sweeper@envhost/db"
		plainURL   = "postgres://plain@plainhost/db"
		flagURL    = "postgres://flag@flaghost/db"
	)
	tests := []struct {
		name       string
		file       string
		env        []string
		flags      []string
		want       string
		wantSource string
	}{
		{name: "DATABASE_URL alone", env: []string{"DATABASE_URL=" + plainURL}, want: plainURL},
		{name: "SWEEPER_DATABASE_URL beats DATABASE_URL",
			env: []string{"DATABASE_URL=" + plainURL, "SWEEPER_DATABASE_URL=" + sweeperURL}, want: sweeperURL},
		{name: "file beats DATABASE_URL",
			file: "database:\n  url: " + fileURL + "\n", env: []string{"DATABASE_URL=" + plainURL}, want: fileURL},
		{name: "SWEEPER_DATABASE_URL beats file",
			file: "database:\n  url: " + fileURL + "\n", env: []string{"SWEEPER_DATABASE_URL=" + sweeperURL}, want: sweeperURL},
		{name: "empty file url falls back",
			file: "database:\n  url: \"\"\n", env: []string{"DATABASE_URL=" + plainURL}, want: plainURL},
		{name: "empty SWEEPER_DATABASE_URL falls back",
			env: []string{"SWEEPER_DATABASE_URL=", "DATABASE_URL=" + plainURL}, want: plainURL},
		{name: "flag beats everything",
			file:  "database:\n  url: " + fileURL + "\n",
			env:   []string{"DATABASE_URL=" + plainURL, "SWEEPER_DATABASE_URL=" + sweeperURL},
			flags: []string{"--database-url=" + flagURL}, want: flagURL},
		{name: "flag beats DATABASE_URL",
			env: []string{"DATABASE_URL=" + plainURL}, flags: []string{"--database-url", flagURL}, want: flagURL},
		{name: "bad DATABASE_URL ignored when SWEEPER_DATABASE_URL is set",
			env: []string{"DATABASE_URL=::not a dsn::", "SWEEPER_DATABASE_URL=" + sweeperURL}, want: sweeperURL},
		{name: "nothing set", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := ""
			if tt.file != "" {
				path = writeConfig(t, tt.file)
			}
			var fs *flag.FlagSet
			if tt.flags != nil {
				fs = parsedFlags(t, tt.flags...)
			}
			got, err := Load(path, tt.env, fs)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got.Database.URL != tt.want {
				t.Fatalf("database.url = %q, want %q", got.Database.URL, tt.want)
			}
			if err := got.RequireDatabase(); (err == nil) != (tt.want != "") {
				t.Fatalf("RequireDatabase() = %v with url %q", err, tt.want)
			}
		})
	}
}

func TestRequireDatabase(t *testing.T) {
	t.Parallel()
	err := Default().RequireDatabase()
	want := "config: database.url: is not set (set database.url, SWEEPER_DATABASE_URL or DATABASE_URL)"
	if err == nil || err.Error() != want {
		t.Fatalf("RequireDatabase() = %v, want %q", err, want)
	}
	c := Default()
	c.Database.URL = "postgres://u:hunter2@h:notaport/db"
	err = c.RequireDatabase()
	if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "database.url") {
		t.Fatalf("RequireDatabase() with a bad DSN = %v", err)
	}
	c.Database.URL = "host=db user=sweeper password=hunter2 dbname=sweeper"
	if err := c.RequireDatabase(); err != nil {
		t.Fatalf("RequireDatabase() = %v", err)
	}
}

// TestLoadErrors feeds broken configurations and checks that each fails
// with an error naming the offending key, its source, and no password.
func TestLoadErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		file    string
		env     []string
		flags   []string
		wantKey string   // Key of the (first) error
		want    []string // substrings of the error message
	}{
		{name: "unknown key", file: "sweep:\n  bath_size: 5\n",
			wantKey: "sweep.bath_size", want: []string{"unknown key", "did you mean sweep.batch_size?", "sweeper.yaml:2"}},
		{name: "unknown section", file: "swep:\n  batch_size: 5\n",
			wantKey: "swep", want: []string{"unknown key", "did you mean sweep?", ":1)"}},
		{name: "unknown top-level key", file: "verbose: true\n",
			wantKey: "verbose", want: []string{"unknown key"}},
		{name: "key in the wrong section", file: "http:\n  batch_size: 5\n",
			wantKey: "http.batch_size", want: []string{"did you mean sweep.batch_size?"}},
		{name: "key at the top level", file: "heartbeat_timeout: 5m\n",
			wantKey: "heartbeat_timeout", want: []string{"did you mean sweep.heartbeat_timeout?"}},
		{name: "dotted key", file: "sweep.batch_size: 5\n",
			wantKey: "sweep.batch_size", want: []string{"unknown key; did you mean sweep.batch_size (written as sweep: {batch_size: ...})?"}},
		{name: "nested unknown below a key", file: "sweep:\n  batch_size:\n    value: 5\n",
			wantKey: "sweep.batch_size", want: []string{"must be a single value, not a mapping"}},
		{name: "list for a value", file: "sweep:\n  batch_size: [1, 2]\n",
			wantKey: "sweep.batch_size", want: []string{"must be a single value, not a list"}},
		{name: "merge key", file: "base: &b\n  level: info\nlog:\n  <<: *b\n",
			wantKey: "base", want: []string{"log.<<: YAML merge keys (<<) are not supported"}},
		{name: "value for a section", file: "sweep: fast\n",
			wantKey: "sweep", want: []string{"must be a mapping of keys, not a single value"}},
		{name: "word for an int", file: "sweep:\n  batch_size: lots\n",
			wantKey: "sweep.batch_size", want: []string{`must be a decimal integer, got "lots"`}},
		{name: "float for an int", file: "database:\n  max_conns: 1.5\n",
			wantKey: "database.max_conns", want: []string{"must be a decimal integer"}},
		{name: "duration without unit", file: "sweep:\n  heartbeat_timeout: 600\n",
			wantKey: "sweep.heartbeat_timeout", want: []string{`must be a duration such as 30s, 10m or 1h30m, got "600"`}},
		{name: "bad duration", file: "shutdown_grace: soon\n",
			wantKey: "shutdown_grace", want: []string{"must be a duration"}},
		{name: "negative duration", file: "sweep:\n  heartbeat_timeout: -5m\n",
			wantKey: "sweep.heartbeat_timeout", want: []string{`must be at least 1s, got "-5m"`}},
		{name: "sub-second heartbeat timeout", file: "sweep:\n  heartbeat_timeout: 500ms\n",
			wantKey: "sweep.heartbeat_timeout", want: []string{"must be at least 1s"}},
		{name: "sub-second progress timeout", file: "sweep:\n  progress_timeout: 500ms\n",
			wantKey: "sweep.progress_timeout", want: []string{"must be 0 (off) or at least 1s"}},
		{name: "negative queue timeout", file: "sweep:\n  queue_timeout: -1m\n",
			wantKey: "sweep.queue_timeout", want: []string{"must be 0 (off) or at least 1s"}},
		{name: "zero shutdown grace", file: "shutdown_grace: 0s\n",
			wantKey: "shutdown_grace", want: []string{"must be more than 0"}},
		{name: "zero batch", file: "sweep:\n  batch_size: 0\n",
			wantKey: "sweep.batch_size", want: []string{`must be between 1 and 100000, got "0" (from file`}},
		{name: "huge batch", file: "sweep:\n  batch_size: 100001\n",
			wantKey: "sweep.batch_size", want: []string{"must be between 1 and 100000"}},
		{name: "int overflow", file: "sweep:\n  batch_size: 99999999999999999999999\n",
			wantKey: "sweep.batch_size", want: []string{"must be a decimal integer"}},
		{name: "negative batches", file: "sweep:\n  max_batches_per_run: -1\n",
			wantKey: "sweep.max_batches_per_run", want: []string{"must be at least 1"}},
		{name: "zero max_conns", file: "database:\n  max_conns: 0\n",
			wantKey: "database.max_conns", want: []string{"must be between 1 and 1000"}},
		{name: "bad schedule", file: "sweep:\n  schedule: every 30s\n",
			wantKey: "sweep.schedule", want: []string{"is not a valid cron spec"}},
		{name: "six-field schedule", file: "sweep:\n  schedule: \"*/5 * * * * *\"\n",
			wantKey: "sweep.schedule", want: []string{"is not a valid cron spec"}},
		{name: "sub-second @every", file: "sweep:\n  schedule: \"@every 500ms\"\n",
			wantKey: "sweep.schedule", want: []string{"whole seconds, at least 1s"}},
		{name: "time zone without schedule", file: "sweep:\n  schedule: CRON_TZ=UTC\n",
			wantKey: "sweep.schedule", want: []string{"a time zone must be followed by a space and a schedule"}},
		{name: "empty schedule", file: "sweep:\n  schedule: \"\"\n",
			wantKey: "sweep.schedule", want: []string{"is empty"}},
		{name: "bad level", file: "log:\n  level: verbose\n",
			wantKey: "log.level", want: []string{`must be one of debug, info, warn, error, got "verbose"`}},
		{name: "upper-case level", file: "log:\n  level: INFO\n",
			wantKey: "log.level", want: []string{"must be one of"}},
		{name: "bad format", file: "log:\n  format: text\n",
			wantKey: "log.format", want: []string{"must be one of json, console"}},
		{name: "listen without port", file: "http:\n  listen: localhost\n",
			wantKey: "http.listen", want: []string{"must be host:port"}},
		{name: "listen port too big", file: "http:\n  listen: \":99999\"\n",
			wantKey: "http.listen", want: []string{"port from 0 to 65535"}},
		{name: "listen named port", file: "http:\n  listen: \"localhost:http\"\n",
			wantKey: "http.listen", want: []string{"must be host:port"}},
		{name: "listen number only", file: "http:\n  listen: 9090\n",
			wantKey: "http.listen", want: []string{"must be host:port"}},
		{name: "upper-case channel", file: "sweep:\n  notify_channel: Delegation_Stuck\n",
			wantKey: "sweep.notify_channel", want: []string{"lower-case identifier"}},
		{name: "channel with a dash", file: "sweep:\n  notify_channel: delegation-stuck\n",
			wantKey: "sweep.notify_channel", want: []string{"lower-case identifier"}},
		{name: "channel too long", file: "sweep:\n  notify_channel: " + strings.Repeat("a", 64) + "\n",
			wantKey: "sweep.notify_channel", want: []string{"at most 63 bytes"}},
		{name: "yes for a bool", file: "sweep:\n  dry_run: yes\n",
			wantKey: "sweep.dry_run", want: []string{`must be true or false (or 1 or 0), got "yes"`}},
		{name: "null value", file: "log:\n  level:\n",
			wantKey: "log.level", want: []string{"has no value"}},
		{name: "duplicate key", file: "sweep:\n  batch_size: 5\n  batch_size: 6\n",
			wantKey: "sweep.batch_size", want: []string{"is set twice (first on line 2)", ":3)"}},
		{name: "malformed yaml", file: "sweep:\n  batch_size: 5\n   dry_run: true\n",
			want: []string{"is not valid YAML", "sweeper.yaml:3"}},
		{name: "unterminated quote", file: "sweep:\n  schedule: \"@every 30s\n",
			want: []string{"is not valid YAML"}},
		{name: "tab indentation", file: "sweep:\n\tbatch_size: 5\n",
			want: []string{"is not valid YAML"}},
		{name: "not a mapping", file: "- sweep\n- log\n",
			want: []string{"must be a YAML mapping of keys (database:, sweep:, migrate:, http:, api:, log:, retention:, webhooks:, shutdown_grace:)"}},
		{name: "two documents", file: "sweep:\n  batch_size: 5\n---\nlog:\n  level: info\n",
			want: []string{"second YAML document", ":3)"}},
		{name: "unknown env var", env: []string{"SWEEPER_SWEEP_BATCHSIZE=5"},
			wantKey: "SWEEPER_SWEEP_BATCHSIZE", want: []string{"unknown environment variable; did you mean SWEEPER_SWEEP_BATCH_SIZE?"}},
		{name: "env var missing its section", env: []string{"SWEEPER_LISTEN=:80"},
			wantKey: "SWEEPER_LISTEN", want: []string{"did you mean SWEEPER_HTTP_LISTEN?"}},
		{name: "bad env int", env: []string{"SWEEPER_SWEEP_BATCH_SIZE=ten"},
			wantKey: "sweep.batch_size", want: []string{`must be a decimal integer, got "ten" (from env SWEEPER_SWEEP_BATCH_SIZE)`}},
		{name: "empty env int", env: []string{"SWEEPER_DATABASE_MAX_CONNS="},
			wantKey: "database.max_conns", want: []string{"is empty; it must be a decimal integer (from env SWEEPER_DATABASE_MAX_CONNS)"}},
		{name: "zero batch from env", env: []string{"SWEEPER_SWEEP_BATCH_SIZE=0"},
			wantKey: "sweep.batch_size", want: []string{`config: sweep.batch_size: must be between 1 and 100000, got "0" (from env SWEEPER_SWEEP_BATCH_SIZE)`}},
		{name: "bad env bool", env: []string{"SWEEPER_MIGRATE_AUTO=sure"},
			wantKey: "migrate.auto", want: []string{"must be true or false", "env SWEEPER_MIGRATE_AUTO"}},
		{name: "bad env duration", env: []string{"SWEEPER_SHUTDOWN_GRACE=30"},
			wantKey: "shutdown_grace", want: []string{"must be a duration", "env SWEEPER_SHUTDOWN_GRACE"}},
		{name: "bad DSN in file", file: "database:\n  url: postgres://sweeper:hunter2@db:port/sweeper\n",
			wantKey: "database.url", want: []string{"is not a valid PostgreSQL connection string", "; the value is not shown, as it may hold a password (from file"}},
		{name: "bad DSN from DATABASE_URL", env: []string{"DATABASE_URL=host=db password='hunter2"},
			wantKey: "database.url", want: []string{"is not a valid PostgreSQL connection string", "(from env DATABASE_URL)"}},
		{name: "bad flag int", flags: []string{"--sweep-batch-size=0"},
			wantKey: "sweep.batch_size", want: []string{"(from flag --sweep-batch-size)"}},
		{name: "bad flag bool", flags: []string{"--migrate-auto=maybe"},
			wantKey: "migrate.auto", want: []string{"must be true or false", "flag --migrate-auto"}},
		{name: "bad file value reported even when env overrides it",
			file: "sweep:\n  batch_size: 0\n", env: []string{"SWEEPER_SWEEP_BATCH_SIZE=5"},
			wantKey: "sweep.batch_size", want: []string{"from file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := ""
			if tt.file != "" {
				path = writeConfig(t, tt.file)
			}
			var fs *flag.FlagSet
			if tt.flags != nil {
				fs = parsedFlags(t, tt.flags...)
			}
			got, err := Load(path, tt.env, fs)
			if err == nil {
				t.Fatalf("Load succeeded with %+v, want an error", got)
			}
			errs := configErrors(t, err)
			if errs[0].Key != tt.wantKey {
				t.Errorf("first error's Key = %q, want %q (error: %v)", errs[0].Key, tt.wantKey, err)
			}
			msg := err.Error()
			if tt.wantKey != "" && !strings.Contains(msg, "config: "+tt.wantKey+": ") {
				t.Errorf("error %q does not name key %q", msg, tt.wantKey)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			if strings.Contains(msg, "hunter2") {
				t.Errorf("error %q shows the password", msg)
			}
			if !reflect.DeepEqual(got, Config{}) {
				t.Errorf("Load returned %+v with its error, want the zero Config", got)
			}
		})
	}
}

func TestLoadReportsEveryProblem(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, "sweep:\n  batch_size: 0\n  bogus: 1\nlog:\n  level: loud\n")
	_, err := Load(path, []string{"SWEEPER_HTTP_LISTEN=nope", "SWEEPER_NOPE=1"}, parsedFlags(t, "--shutdown-grace=-1s"))
	var keys []string
	for _, e := range configErrors(t, err) {
		keys = append(keys, e.Key)
	}
	want := []string{"sweep.batch_size", "sweep.bogus", "log.level", "http.listen", "SWEEPER_NOPE", "shutdown_grace"}
	if !reflect.DeepEqual(keys, want) {
		t.Fatalf("errors name keys %q, want %q; error:\n%v", keys, want, err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "absent.yaml")
	_, err := Load(path, nil, nil)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load of a missing file = %v, want fs.ErrNotExist", err)
	}
	var ce *Error
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "cannot read the config file") || !strings.Contains(err.Error(), path) {
		t.Fatalf("Load of a missing file = %v", err)
	}
}

// TestPasswordNeverShown puts a password in every place it could leak from.
func TestPasswordNeverShown(t *testing.T) {
	t.Parallel()
	const pw = "hunter2-S3cr3t"
	tests := []struct {
		name  string
		file  string
		env   []string
		flags []string
	}{
		{name: "bad port in file URL", file: "database:\n  url: postgres://u:" + pw + "@h:x/db\n"},
		{name: "slash in URL password", env: []string{"SWEEPER_DATABASE_URL=postgres://u:" + pw + "/x@h/db"}},
		{name: "at sign in URL password", env: []string{"SWEEPER_DATABASE_URL=postgres://u:" + pw + "@x@h:bad/db"}},
		{name: "query password with ampersand",
			env: []string{"SWEEPER_DATABASE_URL=postgres://u@h/db?password=" + pw + "&x&sslmode=bogus"}},
		{name: "sslpassword in query", env: []string{"DATABASE_URL=postgres://u@h/db?sslpassword=" + pw + "&port=x"}},
		{name: "unterminated quote", env: []string{"DATABASE_URL=host=h password='" + pw}},
		{name: "password with a space", flags: []string{"--database-url=host=h password=" + pw + " x"}},
		{name: "bare password", file: "database:\n  url: " + pw + "\n"},
		{name: "missing password keyword", file: "database:\n  url: host=h user=u " + pw + "\n"},
		{name: "url as a list", file: "database:\n  url: [postgres://u:" + pw + "@h/db]\n"},
		{name: "url as a mapping", file: "database:\n  url:\n    password: " + pw + "\n"},
		{name: "unknown key holding a password", file: "database:\n  password: " + pw + "\n"},
		{name: "connection string as a key", file: "database:\n  postgres://u:" + pw + "@h/db: 1\n"},
		{name: "keyword/value string as a key", file: "database:\n  host=h password=" + pw + ": 1\n"},
		{name: "unknown env var holding a password", env: []string{"SWEEPER_DATABASE_PASSWORD=" + pw}},
		{name: "yaml syntax error on the url line", file: "database:\n  url: \"postgres://u:" + pw + "@h/db\n"},
		{name: "yaml anchor named like the password", file: "database:\n  url: *" + pw + "\n"},
		{name: "bad URL and other errors", file: "database:\n  url: postgres://u:" + pw + "@h:x/db\n  max_conns: 0\n",
			env: []string{"SWEEPER_SWEEP_BATCH_SIZE=x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := ""
			if tt.file != "" {
				path = writeConfig(t, tt.file)
			}
			var fs *flag.FlagSet
			if tt.flags != nil {
				fs = parsedFlags(t, tt.flags...)
				fs.VisitAll(func(f *flag.Flag) {
					if strings.Contains(f.Value.String(), pw) || strings.Contains(f.DefValue, pw) {
						t.Errorf("flag %s shows the password: %q", f.Name, f.Value.String())
					}
				})
			}
			_, err := Load(path, tt.env, fs)
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			if strings.Contains(err.Error(), pw) {
				t.Fatalf("error shows the password:\n%v", err)
			}
			for _, e := range configErrors(t, err) {
				if strings.Contains(e.Value, pw) || strings.Contains(e.Reason, pw) || strings.Contains(e.Key, pw) {
					t.Fatalf("error field shows the password: %#v", e)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	c := Default()
	c.Sweep.BatchSize = 0
	c.Log.Format = "xml"
	c.Database.URL = "postgres://u:hunter2@h:x/db"
	errs := configErrors(t, c.Validate())
	var got []string
	for _, e := range errs {
		got = append(got, e.Error())
	}
	want := []string{
		`config: database.url: ` + checkDSN("x") + `; the value is not shown, as it may hold a password`,
		`config: sweep.batch_size: must be between 1 and 100000, got "0"`,
		`config: log.format: must be one of json, console, got "xml"`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Validate errors:\n%q\nwant\n%q", got, want)
	}
}

func TestPrintingShowsTheDSNWithoutPassword(t *testing.T) {
	t.Parallel()
	const pw = "hunter2"
	c := Default()
	c.Database.URL = "postgres://sweeper:" + pw + "@db:5432/sweeper?sslmode=disable"
	const shown = "sweeper@db:5432/sweeper"

	wantString := `database.url="sweeper@db:5432/sweeper" database.max_conns=4 database.pooler="none" ` +
		`database.query_exec_mode="" database.migrate_url="" database.listen_url="" database.read_url="" database.read_max_lag=10s ` +
		`sweep.schedule="@every 30s" sweep.heartbeat_timeout=10m sweep.progress_timeout=0s sweep.queue_timeout=0s sweep.start_timeout=0s sweep.batch_size=1000 sweep.max_batches_per_run=100 ` +
		`sweep.notify_channel="delegation_stuck" sweep.dry_run=false migrate.auto=false http.listen=":9090" ` +
		`api.listen="" api.tls_cert_file="" api.tls_key_file="" api.client_ca_file="" api.max_body_bytes=1048576 ` +
		`api.max_batch=10000 api.rate_limit=0 api.rate_burst=0 api.max_wait=1m api.read_header_timeout=5s ` +
		`api.read_timeout=30s api.write_timeout=1m30s api.idle_timeout=2m api.max_header_bytes=16384 ` +
		`log.level="info" log.format="json" retention.completed=30d retention.failed=90d retention.stuck=90d ` +
		`retention.schedule="@every 1h" retention.batch_size=1000 retention.archive_dir="" ` +
		`webhooks.enabled=true webhooks.timeout=10s webhooks.max_retry_age=3d webhooks.retry_min_backoff=5s ` +
		`webhooks.retry_max_backoff=1h webhooks.lease_ttl=30s webhooks.poll_interval=1s webhooks.max_in_flight=16 webhooks.allow_http=false ` +
		`webhooks.allow_private_networks=false shutdown_grace=30s`
	if got := c.String(); got != wantString {
		t.Fatalf("String() =\n%s\nwant\n%s", got, wantString)
	}

	var logged bytes.Buffer
	logger := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&logged), zap.DebugLevel))
	logger.Info("config", zap.Any("config", c), zap.Any("database", c.Database))
	var entry struct {
		Config struct {
			Database struct {
				URL      string `json:"url"`
				MaxConns int    `json:"max_conns"`
			} `json:"database"`
			Sweep struct {
				HeartbeatTimeout string `json:"heartbeat_timeout"`
				DryRun           bool   `json:"dry_run"`
			} `json:"sweep"`
			ShutdownGrace string `json:"shutdown_grace"`
		} `json:"config"`
	}
	if err := json.Unmarshal(logged.Bytes(), &entry); err != nil {
		t.Fatalf("log line %s: %v", logged.Bytes(), err)
	}
	if entry.Config.Database.URL != shown || entry.Config.Database.MaxConns != 4 ||
		entry.Config.Sweep.HeartbeatTimeout != "10m" || entry.Config.ShutdownGrace != "30s" {
		t.Fatalf("logged config = %s", logged.Bytes())
	}

	for _, s := range []string{
		logged.String(),
		fmt.Sprint(c), fmt.Sprintf("%v|%+v|%#v|%s|%q", c, c, c, c, c),
		fmt.Sprintf("%v|%+v|%#v|%s", c.Database, c.Database, c.Database, c.Database),
		fmt.Sprintf("%v", &c),
		string(mustJSON(t, c)), string(mustJSON(t, c.Database)), string(mustJSON(t, &c)),
	} {
		if strings.Contains(s, pw) {
			t.Fatalf("printed config shows the password: %s", s)
		}
	}
}

// TestConfigJSON pins the shape of Config's JSON, which `sweeper config
// validate --output json` prints: the YAML key names, nested by section in
// the order of Keys, each value as YAML writes it, the DSN without password.
func TestConfigJSON(t *testing.T) {
	t.Parallel()
	c := Default()
	c.Database.URL = "postgres://sweeper:hunter2@db:5432/app?sslmode=disable"
	c.Sweep.HeartbeatTimeout = 90 * time.Second
	const want = `{"database":{"url":"sweeper@db:5432/app","max_conns":4,"pooler":"none","query_exec_mode":"",` +
		`"migrate_url":"","listen_url":"","read_url":"","read_max_lag":"10s"},` +
		`"sweep":{"schedule":"@every 30s","heartbeat_timeout":"1m30s","progress_timeout":"0s","queue_timeout":"0s","start_timeout":"0s","batch_size":1000,"max_batches_per_run":100,` +
		`"notify_channel":"delegation_stuck","dry_run":false},"migrate":{"auto":false},"http":{"listen":":9090"},` +
		`"api":{"listen":"","tls_cert_file":"","tls_key_file":"","client_ca_file":"","max_body_bytes":1048576,` +
		`"max_batch":10000,"rate_limit":0,"rate_burst":0,"max_wait":"1m","read_header_timeout":"5s","read_timeout":"30s",` +
		`"write_timeout":"1m30s","idle_timeout":"2m","max_header_bytes":16384},"log":{"level":"info","format":"json"},` +
		`"retention":{"completed":"30d","failed":"90d","stuck":"90d","schedule":"@every 1h","batch_size":1000,"archive_dir":""},` +
		`"webhooks":{"enabled":true,"timeout":"10s","max_retry_age":"3d","retry_min_backoff":"5s","retry_max_backoff":"1h",` +
		`"lease_ttl":"30s","poll_interval":"1s","max_in_flight":16,"allow_http":false,"allow_private_networks":false},` +
		`"shutdown_grace":"30s"}`
	if got := string(mustJSON(t, c)); got != want {
		t.Fatalf("json.Marshal(Config) =\n%s\nwant\n%s", got, want)
	}
	if got, want := string(mustJSON(t, c.Database)), `{"url":"sweeper@db:5432/app","max_conns":4,"pooler":"none","query_exec_mode":"","migrate_url":"","listen_url":"","read_url":"","read_max_lag":"10s"}`; got != want {
		t.Fatalf("json.Marshal(DatabaseConfig) = %s, want %s", got, want)
	}

	// Every key is at its path, with the value Keys documents as its
	// default (a new key shows up without changing this test).
	var tree map[string]any
	dec := json.NewDecoder(bytes.NewReader(mustJSON(t, Default())))
	dec.UseNumber() // 1048576, not 1.048576e+06
	if err := dec.Decode(&tree); err != nil {
		t.Fatal(err)
	}
	for _, k := range Keys() {
		node := any(tree)
		for _, part := range strings.Split(k.Path, ".") {
			m, ok := node.(map[string]any)
			if !ok {
				t.Fatalf("%s: %v is not an object", k.Path, node)
			}
			node, ok = m[part]
			if !ok {
				t.Fatalf("JSON lacks %s: %v", k.Path, tree)
			}
		}
		got := fmt.Sprint(node)
		if f, ok := node.(float64); ok { // 1048576, not 1.048576e+06
			got = strconv.FormatFloat(f, 'f', -1, 64)
		}
		if got != k.Default {
			t.Errorf("JSON %s = %v (%T), want the default %q", k.Path, node, node, k.Default)
		}
		if typ := map[string]string{"string": "string", "duration": "string", "int": "json.Number", "bool": "bool"}[k.Type]; fmt.Sprintf("%T", node) != typ {
			t.Errorf("JSON %s is a %T, want a %s for a %s key", k.Path, node, typ, k.Type)
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestKeys(t *testing.T) {
	t.Parallel()
	ks := Keys()
	if len(ks) != 52 {
		t.Fatalf("Keys() has %d keys, want the 13 of the design, the 14 of the API, the 4 of poolers, 6 of retention, 2 of replica reads, 3 of progress and waiting states and 10 of webhooks", len(ks))
	}
	want := map[string][2]string{ // path -> env, flag
		"database.url":                    {"SWEEPER_DATABASE_URL", "database-url"},
		"database.max_conns":              {"SWEEPER_DATABASE_MAX_CONNS", "database-max-conns"},
		"database.pooler":                 {"SWEEPER_DATABASE_POOLER", "database-pooler"},
		"webhooks.enabled":                {"SWEEPER_WEBHOOKS_ENABLED", "webhooks-enabled"},
		"webhooks.timeout":                {"SWEEPER_WEBHOOKS_TIMEOUT", "webhooks-timeout"},
		"webhooks.retry_min_backoff":      {"SWEEPER_WEBHOOKS_RETRY_MIN_BACKOFF", "webhooks-retry-min-backoff"},
		"webhooks.retry_max_backoff":      {"SWEEPER_WEBHOOKS_RETRY_MAX_BACKOFF", "webhooks-retry-max-backoff"},
		"webhooks.lease_ttl":              {"SWEEPER_WEBHOOKS_LEASE_TTL", "webhooks-lease-ttl"},
		"webhooks.poll_interval":          {"SWEEPER_WEBHOOKS_POLL_INTERVAL", "webhooks-poll-interval"},
		"webhooks.max_in_flight":          {"SWEEPER_WEBHOOKS_MAX_IN_FLIGHT", "webhooks-max-in-flight"},
		"webhooks.allow_http":             {"SWEEPER_WEBHOOKS_ALLOW_HTTP", "webhooks-allow-http"},
		"webhooks.max_retry_age":          {"SWEEPER_WEBHOOKS_MAX_RETRY_AGE", "webhooks-max-retry-age"},
		"webhooks.allow_private_networks": {"SWEEPER_WEBHOOKS_ALLOW_PRIVATE_NETWORKS", "webhooks-allow-private-networks"},
		"database.query_exec_mode":        {"SWEEPER_DATABASE_QUERY_EXEC_MODE", "database-query-exec-mode"},
		"database.migrate_url":            {"SWEEPER_DATABASE_MIGRATE_URL", "database-migrate-url"},
		"database.listen_url":             {"SWEEPER_DATABASE_LISTEN_URL", "database-listen-url"},
		"database.read_url":               {"SWEEPER_DATABASE_READ_URL", "database-read-url"},
		"database.read_max_lag":           {"SWEEPER_DATABASE_READ_MAX_LAG", "database-read-max-lag"},
		"sweep.schedule":                  {"SWEEPER_SWEEP_SCHEDULE", "sweep-schedule"},
		"sweep.heartbeat_timeout":         {"SWEEPER_SWEEP_HEARTBEAT_TIMEOUT", "sweep-heartbeat-timeout"},
		"sweep.batch_size":                {"SWEEPER_SWEEP_BATCH_SIZE", "sweep-batch-size"},
		"sweep.max_batches_per_run":       {"SWEEPER_SWEEP_MAX_BATCHES_PER_RUN", "sweep-max-batches-per-run"},
		"sweep.notify_channel":            {"SWEEPER_SWEEP_NOTIFY_CHANNEL", "sweep-notify-channel"},
		"sweep.dry_run":                   {"SWEEPER_SWEEP_DRY_RUN", "sweep-dry-run"},
		"migrate.auto":                    {"SWEEPER_MIGRATE_AUTO", "migrate-auto"},
		"http.listen":                     {"SWEEPER_HTTP_LISTEN", "http-listen"},
		"api.listen":                      {"SWEEPER_API_LISTEN", "api-listen"},
		"api.tls_cert_file":               {"SWEEPER_API_TLS_CERT_FILE", "api-tls-cert-file"},
		"api.tls_key_file":                {"SWEEPER_API_TLS_KEY_FILE", "api-tls-key-file"},
		"api.client_ca_file":              {"SWEEPER_API_CLIENT_CA_FILE", "api-client-ca-file"},
		"api.max_body_bytes":              {"SWEEPER_API_MAX_BODY_BYTES", "api-max-body-bytes"},
		"api.max_batch":                   {"SWEEPER_API_MAX_BATCH", "api-max-batch"},
		"api.rate_limit":                  {"SWEEPER_API_RATE_LIMIT", "api-rate-limit"},
		"api.rate_burst":                  {"SWEEPER_API_RATE_BURST", "api-rate-burst"},
		"api.max_wait":                    {"SWEEPER_API_MAX_WAIT", "api-max-wait"},
		"api.read_header_timeout":         {"SWEEPER_API_READ_HEADER_TIMEOUT", "api-read-header-timeout"},
		"api.read_timeout":                {"SWEEPER_API_READ_TIMEOUT", "api-read-timeout"},
		"api.write_timeout":               {"SWEEPER_API_WRITE_TIMEOUT", "api-write-timeout"},
		"api.idle_timeout":                {"SWEEPER_API_IDLE_TIMEOUT", "api-idle-timeout"},
		"api.max_header_bytes":            {"SWEEPER_API_MAX_HEADER_BYTES", "api-max-header-bytes"},
		"log.level":                       {"SWEEPER_LOG_LEVEL", "log-level"},
		"log.format":                      {"SWEEPER_LOG_FORMAT", "log-format"},
		"shutdown_grace":                  {"SWEEPER_SHUTDOWN_GRACE", "shutdown-grace"},
		"retention.completed":             {"SWEEPER_RETENTION_COMPLETED", "retention-completed"},
		"retention.failed":                {"SWEEPER_RETENTION_FAILED", "retention-failed"},
		"retention.stuck":                 {"SWEEPER_RETENTION_STUCK", "retention-stuck"},
		"retention.schedule":              {"SWEEPER_RETENTION_SCHEDULE", "retention-schedule"},
		"retention.batch_size":            {"SWEEPER_RETENTION_BATCH_SIZE", "retention-batch-size"},
		"retention.archive_dir":           {"SWEEPER_RETENTION_ARCHIVE_DIR", "retention-archive-dir"},
		"sweep.progress_timeout":          {"SWEEPER_SWEEP_PROGRESS_TIMEOUT", "sweep-progress-timeout"},
		"sweep.queue_timeout":             {"SWEEPER_SWEEP_QUEUE_TIMEOUT", "sweep-queue-timeout"},
		"sweep.start_timeout":             {"SWEEPER_SWEEP_START_TIMEOUT", "sweep-start-timeout"},
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	RegisterFlags(fs)
	d := Default()
	for i, k := range ks {
		w, ok := want[k.Path]
		if !ok {
			t.Errorf("unexpected key %q", k.Path)
			continue
		}
		if k.Env != w[0] || k.Flag != w[1] {
			t.Errorf("%s: env %q flag %q, want %q %q", k.Path, k.Env, k.Flag, w[0], w[1])
		}
		if k.Doc == "" || k.Type == "" {
			t.Errorf("%s: no doc or type", k.Path)
		}
		if k.Secret != (k.Path == "database.url" || k.Path == "database.migrate_url" || k.Path == "database.listen_url" || k.Path == "database.read_url") {
			t.Errorf("%s: Secret = %v", k.Path, k.Secret)
		}
		f := fs.Lookup(k.Flag)
		if f == nil {
			t.Errorf("%s: flag --%s not registered", k.Path, k.Flag)
			continue
		}
		if f.DefValue != k.Default || !strings.Contains(f.Usage, k.Env) {
			t.Errorf("flag --%s: default %q usage %q", k.Flag, f.DefValue, f.Usage)
		}
		// The default, written as text, reads back as the default.
		var c Config
		if reason := keys[i].parse(&c, k.Default); reason != "" || keys[i].format(&c) != keys[i].format(&d) {
			t.Errorf("%s: default %q does not read back: %s", k.Path, k.Default, reason)
		}
	}
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n != len(ks) {
		t.Errorf("RegisterFlags registered %d flags, want %d", n, len(ks))
	}
}

func TestFlagUsage(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("sweeper", flag.ContinueOnError)
	RegisterFlags(fs)
	var out bytes.Buffer
	fs.SetOutput(&out)
	fs.PrintDefaults()
	usage := out.String()
	for _, want := range []string{
		"-sweep-batch-size int\n",
		"(int, env SWEEPER_SWEEP_BATCH_SIZE) (default 1000)",
		"-sweep-heartbeat-timeout duration\n",
		"(default 10m)",
		"-sweep-dry-run\n",
		"(env SWEEPER_SWEEP_DRY_RUN)\n",
		"(default @every 30s)",
	} {
		if !strings.Contains(usage, want) {
			t.Errorf("usage does not contain %q:\n%s", want, usage)
		}
	}
	if strings.Contains(usage, "(default false)") {
		t.Errorf("usage shows (default false):\n%s", usage)
	}
}

func TestLogZapLevel(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		level string
		want  zapcore.Level
	}{
		{"debug", zapcore.DebugLevel}, {"info", zapcore.InfoLevel}, {"warn", zapcore.WarnLevel},
		{"error", zapcore.ErrorLevel}, {"bogus", zapcore.InfoLevel},
	} {
		if got := (LogConfig{Level: tt.level}).ZapLevel(); got != tt.want {
			t.Errorf("ZapLevel(%q) = %v, want %v", tt.level, got, tt.want)
		}
	}
	for _, l := range LogLevels {
		if err := (func() error { c := Default(); c.Log.Level = l; return c.Validate() })(); err != nil {
			t.Errorf("level %q: %v", l, err)
		}
	}
}

func TestErrorFormat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  *Error
		want string
	}{
		{"all fields", &Error{Key: "sweep.batch_size", Value: "0", Source: "env SWEEPER_SWEEP_BATCH_SIZE", Reason: "must be between 1 and 100000"},
			`config: sweep.batch_size: must be between 1 and 100000, got "0" (from env SWEEPER_SWEEP_BATCH_SIZE)`},
		{"no value", &Error{Key: "sweep.bath_size", Source: "file a.yaml:3", Reason: "unknown key"},
			`config: sweep.bath_size: unknown key (from file a.yaml:3)`},
		{"no key", &Error{Source: "file a.yaml:3", Reason: "is not valid YAML: x"},
			`config: is not valid YAML: x (from file a.yaml:3)`},
		{"long value", &Error{Key: "k", Value: strings.Repeat("é", 100), Reason: "bad"},
			`config: k: bad, got "` + strings.Repeat("é", 60) + `..."`},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("%s: Error() =\n%s\nwant\n%s", tt.name, got, tt.want)
		}
	}
}

func TestAdaptiveSchedule(t *testing.T) {
	t.Parallel()
	cfg, err := Load("", []string{"SWEEPER_SWEEP_SCHEDULE=@adaptive"}, nil)
	if err != nil || cfg.Sweep.Schedule != sweep.ScheduleAdaptive {
		t.Fatalf("@adaptive: %q, %v", cfg.Sweep.Schedule, err)
	}
	if _, err := Load("", []string{"SWEEPER_SWEEP_SCHEDULE=@adaptive-ish"}, nil); err == nil {
		t.Fatal("@adaptive-ish accepted")
	}
}

// The webhooks keys that depend on each other are checked together.
func TestWebhooksKeysCheckedTogether(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		env  []string
		want string
	}{
		{[]string{"SWEEPER_WEBHOOKS_RETRY_MIN_BACKOFF=2m", "SWEEPER_WEBHOOKS_RETRY_MAX_BACKOFF=1m"}, "webhooks.retry_max_backoff"},
		{[]string{"SWEEPER_WEBHOOKS_TIMEOUT=30s", "SWEEPER_WEBHOOKS_LEASE_TTL=30s"}, "webhooks.lease_ttl"},
		{[]string{"SWEEPER_WEBHOOKS_TIMEOUT=10m"}, "webhooks.timeout"},
		{[]string{"SWEEPER_WEBHOOKS_MAX_RETRY_AGE=0s"}, "webhooks.max_retry_age"},
		{[]string{"SWEEPER_WEBHOOKS_MAX_IN_FLIGHT=0"}, "webhooks.max_in_flight"},
		{[]string{"SWEEPER_WEBHOOKS_MAX_IN_FLIGHT=101"}, "webhooks.max_in_flight"},
	} {
		_, err := Load("", c.env, nil)
		var ce *Error
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: want an error naming %s, got %v", c.env, c.want, err)
		}
	}
	cfg, err := Load("", []string{"SWEEPER_WEBHOOKS_MAX_RETRY_AGE=3d", "SWEEPER_WEBHOOKS_ALLOW_HTTP=true", "SWEEPER_WEBHOOKS_MAX_IN_FLIGHT=100"}, nil)
	if err != nil || cfg.Webhooks.MaxRetryAge != 72*time.Hour || !cfg.Webhooks.AllowHTTP || cfg.Webhooks.MaxInFlight != 100 {
		t.Fatalf("%+v, %v", cfg.Webhooks, err)
	}
}
