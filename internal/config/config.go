package config

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"
)

// Config is the daemon's configuration. Load builds one; Default returns the
// built-in defaults. The YAML path of each field is given in its comment.
//
// String, GoString and MarshalLogObject mask the database password, so a
// Config may be printed or logged (zap.Any, zap.Object) as it is.
type Config struct {
	// Database says how to reach PostgreSQL.
	Database DatabaseConfig
	// Sweep tunes the stuck-task sweep.
	Sweep SweepConfig
	// Migrate controls schema migrations at start-up.
	Migrate MigrateConfig
	// HTTP configures the /metrics, /healthz and /readyz server.
	HTTP HTTPConfig
	// API configures the ledger's HTTP API (its own listener).
	API APIConfig
	// Log configures logging.
	Log LogConfig
	// ShutdownGrace (shutdown_grace) bounds how long the daemon waits, after
	// SIGINT or SIGTERM, for the running batch to finish before it exits.
	ShutdownGrace time.Duration
}

// DatabaseConfig is the database section.
type DatabaseConfig struct {
	// URL (database.url) is the PostgreSQL connection string, in URL form
	// (postgres://user:password@host:5432/dbname) or keyword/value form
	// ("host=db user=sweeper dbname=sweeper"). It holds the password: log
	// RedactDSN(URL), never URL. Empty means not set; see RequireDatabase.
	URL string
	// MaxConns (database.max_conns) is the connection pool's size.
	MaxConns int
}

// SweepConfig is the sweep section.
type SweepConfig struct {
	// Schedule (sweep.schedule) is when the daemon sweeps, as a robfig/cron
	// spec: five fields ("*/5 * * * *") or a descriptor ("@every 30s",
	// "@hourly"), evaluated in UTC unless it starts with CRON_TZ=.
	Schedule string
	// HeartbeatTimeout (sweep.heartbeat_timeout): an in_progress delegation
	// whose last heartbeat is older than this is stuck.
	HeartbeatTimeout time.Duration
	// BatchSize (sweep.batch_size) is how many rows one batch transaction
	// claims at most.
	BatchSize int
	// MaxBatchesPerRun (sweep.max_batches_per_run) bounds the batches of one
	// run; the rest waits for the next run.
	MaxBatchesPerRun int
	// NotifyChannel (sweep.notify_channel) is the channel pg_notify is sent
	// on for each batch; empty disables notifications.
	NotifyChannel string
	// DryRun (sweep.dry_run) finds the stuck delegations without marking them.
	DryRun bool
}

// MigrateConfig is the migrate section.
type MigrateConfig struct {
	// Auto (migrate.auto) migrates the schema up at start-up; without it the
	// daemon refuses to start on a schema that is behind or dirty.
	Auto bool
}

// HTTPConfig is the http section.
type HTTPConfig struct {
	// Listen (http.listen) is the host:port of the /metrics, /healthz and
	// /readyz server; empty disables it.
	Listen string
}

// APIConfig is the api section: the ledger over HTTP (package api).
type APIConfig struct {
	// Listen (api.listen) is the host:port of the API; empty disables it.
	Listen string
	// TLSCertFile and TLSKeyFile (api.tls_cert_file, api.tls_key_file)
	// serve HTTPS when both are set.
	TLSCertFile string
	TLSKeyFile  string
	// ClientCAFile (api.client_ca_file), with TLS, requires client
	// certificates signed by these CAs (mTLS), besides the bearer token.
	ClientCAFile string
	// MaxBodyBytes (api.max_body_bytes) bounds a request body.
	MaxBodyBytes int
	// MaxBatch (api.max_batch) bounds the ids of one POST /v1/heartbeats.
	MaxBatch int
	// RateLimit (api.rate_limit) is each token's requests per second; 0 is
	// unlimited. RateBurst (api.rate_burst) is its bucket; 0 means RateLimit.
	RateLimit int
	RateBurst int
	// MaxWait (api.max_wait) bounds a feed long poll's wait.
	MaxWait time.Duration
	// Server timeouts: api.read_header_timeout, api.read_timeout,
	// api.write_timeout (longer than MaxWait), api.idle_timeout; and
	// api.max_header_bytes.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
}

// LogConfig is the log section.
type LogConfig struct {
	// Level (log.level) is one of LogLevels: "debug", "info", "warn", "error".
	Level string
	// Format (log.format) is LogFormatJSON or LogFormatConsole.
	Format string
}

// Log formats: the values log.format accepts.
const (
	// LogFormatJSON is one JSON object per line, for production.
	LogFormatJSON = "json"
	// LogFormatConsole is zap's human-readable console encoding, for
	// development.
	LogFormatConsole = "console"
)

// LogLevels lists the values log.level accepts, from the most verbose.
var LogLevels = []string{"debug", "info", "warn", "error"}

// ZapLevel returns Level as a zap level, or zapcore.InfoLevel when Level is
// not one of LogLevels (a Config that passed Validate always has one).
func (c LogConfig) ZapLevel() zapcore.Level {
	switch c.Level {
	case "debug":
		return zapcore.DebugLevel
	case "warn":
		return zapcore.WarnLevel
	case "error":
		return zapcore.ErrorLevel
	default:
		return zapcore.InfoLevel
	}
}

// Default returns the built-in defaults, the values a key has when neither
// the file, the environment nor a flag sets it.
func Default() Config {
	var c Config
	for i := range keys {
		keys[i].setDefault(&c)
	}
	return c
}

// Validate checks every value and returns nil or the problems found, one
// *Error per bad key, joined with errors.Join. An empty database.url is
// valid here: commands that need the database call RequireDatabase.
func (c Config) Validate() error {
	return errors.Join(c.validate(nil)...)
}

// validate checks every key; origins, when it has an entry for a key, says
// where its value came from and how it was written.
func (c Config) validate(origins map[string]origin) []error {
	var errs []error
	for i := range keys {
		k := &keys[i]
		reason := k.check(&c)
		if reason == "" {
			continue
		}
		o, ok := origins[k.path]
		if !ok {
			o = origin{raw: k.format(&c)}
		}
		errs = append(errs, &Error{Key: k.path, Value: k.shown(o.raw), Source: o.source, Reason: reason})
	}
	return errs
}

// RequireDatabase returns an *Error unless database.url is set and parses as
// a PostgreSQL connection string. Commands that talk to the database call it
// after Load.
func (c Config) RequireDatabase() error {
	if c.Database.URL == "" {
		return &Error{
			Key:    "database.url",
			Reason: "is not set (set database.url, SWEEPER_DATABASE_URL or DATABASE_URL)",
		}
	}
	if reason := checkDSN(c.Database.URL); reason != "" {
		return &Error{Key: "database.url", Value: RedactDSN(c.Database.URL), Reason: reason}
	}
	return nil
}

// Redacted returns a copy of c whose database.url has its password replaced
// by "xxxxx" (see RedactDSN), fit for printing and logging.
func (c Config) Redacted() Config {
	c.Database.URL = RedactDSN(c.Database.URL)
	return c
}

// String renders every key as path=value on one line, in the order of Keys,
// with the password masked:
//
//	database.url="postgres://sweeper:xxxxx@db/sweeper" database.max_conns=4 ...
func (c Config) String() string {
	var b strings.Builder
	for i := range keys {
		k := &keys[i]
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(k.path)
		b.WriteByte('=')
		v := k.shown(k.format(&c))
		if k.typ == "string" {
			v = strconv.Quote(v)
		}
		b.WriteString(v)
	}
	return b.String()
}

// GoString is String, so that %#v masks the password too.
func (c Config) GoString() string { return "config.Config{" + c.String() + "}" }

// MarshalLogObject writes the configuration as nested zap fields named after
// the YAML keys (database.max_conns becomes database: {max_conns: 4}), with
// the password masked. It makes zap.Any("config", cfg) and
// zap.Object("config", cfg) safe.
func (c Config) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	return marshalSection(enc, &c, "")
}

// marshalSection writes the keys whose path starts with prefix, descending
// into subsections as nested objects.
func marshalSection(enc zapcore.ObjectEncoder, c *Config, prefix string) error {
	done := map[string]bool{}
	for i := range keys {
		k := &keys[i]
		rest, ok := strings.CutPrefix(k.path, prefix)
		if !ok {
			continue
		}
		if section, _, nested := strings.Cut(rest, "."); nested {
			if done[section] {
				continue
			}
			done[section] = true
			sub := prefix + section + "."
			err := enc.AddObject(section, zapcore.ObjectMarshalerFunc(func(enc zapcore.ObjectEncoder) error {
				return marshalSection(enc, c, sub)
			}))
			if err != nil {
				return err
			}
			continue
		}
		k.log(enc, rest, c)
	}
	return nil
}

// String renders the section with the password masked.
func (d DatabaseConfig) String() string {
	return "{URL:" + strconv.Quote(RedactDSN(d.URL)) + " MaxConns:" + strconv.Itoa(d.MaxConns) + "}"
}

// GoString is String, so that %#v masks the password too.
func (d DatabaseConfig) GoString() string { return "config.DatabaseConfig" + d.String() }
