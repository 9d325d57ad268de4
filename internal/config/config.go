package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"
)

// Config is the daemon's configuration. Load builds one; Default returns the
// built-in defaults. The YAML path of each field is given in its comment.
//
// String, GoString, MarshalLogObject and MarshalJSON show database.url as
// DisplayDSN renders it, without the password, so a Config may be printed,
// logged (zap.Any, zap.Object) or encoded (encoding/json) as it is.
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
	// Retention says when terminal delegations are deleted.
	Retention RetentionConfig
	// Webhooks configures the delivery of webhook subscriptions.
	Webhooks WebhooksConfig
	// ShutdownGrace (shutdown_grace) bounds how long the daemon waits, after
	// SIGINT or SIGTERM, for the running batch to finish before it exits.
	ShutdownGrace time.Duration
}

// DatabaseConfig is the database section.
type DatabaseConfig struct {
	// URL (database.url) is the PostgreSQL connection string, in URL form
	// (postgres://user:password@host:5432/dbname) or keyword/value form
	// ("host=db user=sweeper dbname=sweeper"). It holds the password: show
	// DisplayDSN(URL), never URL. Empty means not set; see RequireDatabase.
	URL string
	// MaxConns (database.max_conns) is the connection pool's size.
	MaxConns int
	// Pooler (database.pooler) is PoolerNone or PoolerTransaction: whether
	// URL goes through a pooler in transaction mode.
	Pooler string
	// QueryExecMode (database.query_exec_mode) is one of QueryExecModes, or
	// "" to derive it from Pooler; see ExecMode.
	QueryExecMode string
	// MigrateURL (database.migrate_url) is a direct connection string for
	// migrations (session advisory locks); "" means URL. It holds a
	// password like URL.
	MigrateURL string
	// ListenURL (database.listen_url) is a direct connection string for the
	// API feed's LISTEN; "" means URL, or polling under a transaction
	// pooler. It holds a password like URL.
	ListenURL string
	// ReadURL (database.read_url) is a streaming replica for the API's and
	// the console's read-only list and summary queries; "" means none. It
	// holds a password like URL.
	ReadURL string
	// ReadMaxLag (database.read_max_lag) is the staleness beyond which the
	// replica's reads go to URL instead.
	ReadMaxLag time.Duration
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
	// ProgressTimeout (sweep.progress_timeout): an in_progress delegation
	// whose progress has not changed for longer than this is stuck
	// (stalled); 0 turns the global rule off.
	ProgressTimeout time.Duration
	// QueueTimeout (sweep.queue_timeout): a delegation queued longer than
	// this is stuck (queue_timeout); 0: off.
	QueueTimeout time.Duration
	// StartTimeout (sweep.start_timeout): a delegation dispatched longer
	// than this without entering in_progress is stuck (start_timeout); 0: off.
	StartTimeout time.Duration
	// BatchSize (sweep.batch_size) is how many rows one batch transaction
	// claims at most.
	BatchSize int
	// MaxBatchesPerRun (sweep.max_batches_per_run) bounds the batches of one
	// run; the rest waits for the next run.
	MaxBatchesPerRun int
	// NotifyChannel (sweep.notify_channel) is the channel of the pg_notify
	// sent for each delegation marked stuck, in the transaction that marks
	// it; empty disables notifications.
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

// WebhooksConfig is the webhooks section: how the daemon delivers webhook
// subscriptions (package webhook).
type WebhooksConfig struct {
	// Enabled (webhooks.enabled) runs the deliverer in the daemon.
	Enabled bool
	// Timeout (webhooks.timeout) bounds one delivery.
	Timeout time.Duration
	// MaxRetryAge (webhooks.max_retry_age) is how long a head event may
	// keep failing before its subscription is paused.
	MaxRetryAge time.Duration
	// RetryMinBackoff and RetryMaxBackoff (webhooks.retry_min_backoff,
	// webhooks.retry_max_backoff) bound the wait between attempts.
	RetryMinBackoff, RetryMaxBackoff time.Duration
	// LeaseTTL (webhooks.lease_ttl) is how long a lease lasts unrenewed.
	LeaseTTL time.Duration
	// PollInterval (webhooks.poll_interval) is how often leases are renewed.
	PollInterval time.Duration
	// MaxInFlight (webhooks.max_in_flight) is how many deliveries of one
	// subscription may be in flight at once.
	MaxInFlight int
	// AllowHTTP (webhooks.allow_http) accepts http:// destinations.
	AllowHTTP bool
	// AllowPrivateNetworks (webhooks.allow_private_networks) lifts the
	// dial-time refusal of non-public addresses.
	AllowPrivateNetworks bool
}

// RetentionConfig is the retention section: how long terminal delegations
// are kept, counted from the moment they became terminal (finished_at). A
// retention of 0 keeps that status for ever.
type RetentionConfig struct {
	// Completed, Failed and Stuck (retention.completed, retention.failed,
	// retention.stuck) are the retentions of each terminal status.
	Completed, Failed, Stuck time.Duration
	// Schedule (retention.schedule) is when the daemon prunes, as a
	// robfig/cron spec in UTC.
	Schedule string
	// BatchSize (retention.batch_size) is how many delegations one batch
	// transaction deletes at most.
	BatchSize int
	// ArchiveDir (retention.archive_dir), when set, is where each batch is
	// archived (gzip JSON Lines, fsynced) before it is deleted.
	ArchiveDir string
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
	if len(errs) == 0 {
		errs = c.checkPooler(origins)
	}
	if len(errs) == 0 {
		errs = c.checkWebhooks()
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
		return &Error{Key: "database.url", Value: DisplayDSN(c.Database.URL), Reason: reason}
	}
	return nil
}

// String renders every key as path=value on one line, in the order of Keys,
// database.url as DisplayDSN renders it:
//
//	database.url="sweeper@db:5432/sweeper" database.max_conns=4 ...
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

// GoString is String, so that %#v leaves the password out too.
func (c Config) GoString() string { return "config.Config{" + c.String() + "}" }

// MarshalLogObject writes the configuration as nested zap fields named after
// the YAML keys (database.max_conns becomes database: {max_conns: 4}),
// database.url as DisplayDSN renders it. It makes zap.Any("config", cfg) and
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

// String renders the section with URL, MigrateURL, ListenURL and ReadURL as
// DisplayDSN renders them.
func (d DatabaseConfig) String() string {
	return "{URL:" + strconv.Quote(DisplayDSN(d.URL)) + " MaxConns:" + strconv.Itoa(d.MaxConns) +
		" Pooler:" + strconv.Quote(d.Pooler) + " QueryExecMode:" + strconv.Quote(d.QueryExecMode) +
		" MigrateURL:" + strconv.Quote(DisplayDSN(d.MigrateURL)) + " ListenURL:" + strconv.Quote(DisplayDSN(d.ListenURL)) +
		" ReadURL:" + strconv.Quote(DisplayDSN(d.ReadURL)) + " ReadMaxLag:" + formatDuration(d.ReadMaxLag) + "}"
}

// GoString is String, so that %#v leaves the password out too.
func (d DatabaseConfig) GoString() string { return "config.DatabaseConfig" + d.String() }

// MarshalJSON writes the configuration as the YAML file is written: objects
// named after the sections and keys, in the order of Keys, each value as it
// is written in YAML (durations as "10m", database.url as DisplayDSN renders
// it):
//
//	{"database":{"url":"sweeper@db:5432/app","max_conns":4},"sweep":{"schedule":"@every 30s","heartbeat_timeout":"10m",...},...}
func (c Config) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	if err := writeJSONSection(&b, &c, ""); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// MarshalJSON writes the section as Config.MarshalJSON does, so that the
// section alone never shows the password either.
func (d DatabaseConfig) MarshalJSON() ([]byte, error) {
	c := Config{Database: d}
	var b bytes.Buffer
	if err := writeJSONSection(&b, &c, "database."); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// writeJSONSection writes, as one JSON object, the keys whose path starts
// with prefix, descending into subsections as nested objects.
func writeJSONSection(b *bytes.Buffer, c *Config, prefix string) error {
	b.WriteByte('{')
	done := map[string]bool{}
	for i := range keys {
		k := &keys[i]
		rest, ok := strings.CutPrefix(k.path, prefix)
		if !ok {
			continue
		}
		section, _, nested := strings.Cut(rest, ".")
		if nested && done[section] {
			continue
		}
		done[section] = true
		if len(done) > 1 {
			b.WriteByte(',')
		}
		name, _ := json.Marshal(section)
		b.Write(name)
		b.WriteByte(':')
		if nested {
			if err := writeJSONSection(b, c, prefix+section+"."); err != nil {
				return err
			}
			continue
		}
		v, err := json.Marshal(k.jsonValue(c))
		if err != nil {
			return fmt.Errorf("encoding %s: %w", k.path, err)
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return nil
}

// checkWebhooks returns the problems between the webhooks keys.
func (c Config) checkWebhooks() []error {
	w := c.Webhooks
	var errs []error
	if w.RetryMaxBackoff < w.RetryMinBackoff {
		errs = append(errs, &Error{Key: "webhooks.retry_max_backoff", Value: formatDuration(w.RetryMaxBackoff),
			Reason: "must be at least webhooks.retry_min_backoff (" + formatDuration(w.RetryMinBackoff) + ")"})
	}
	if w.LeaseTTL <= w.Timeout+w.PollInterval {
		errs = append(errs, &Error{Key: "webhooks.lease_ttl", Value: formatDuration(w.LeaseTTL),
			Reason: "must be longer than webhooks.timeout + webhooks.poll_interval (" + formatDuration(w.Timeout+w.PollInterval) +
				"), or a delivery in flight could outlive its lease"})
	}
	return errs
}
