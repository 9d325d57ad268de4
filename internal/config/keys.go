package config

import (
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap/zapcore"

	"github.com/tasksweeper/sweeper/sweep"
	"github.com/tasksweeper/sweeper/webhook"
)

// keys is the one table of configuration keys. Each entry gives a key's YAML
// path, the Config field it fills, its default, how its text is parsed and
// checked, and its documentation; the environment variable and flag names
// derive from the path (envName, flagName). Default, Load, RegisterFlags,
// Validate, Keys and config.example.yaml all follow this table.
var keys = []key{
	newKey("database.url", func(c *Config) *string { return &c.Database.URL },
		"", dsnText, checkDSN,
		"PostgreSQL connection string: postgres://user:password@host:5432/dbname, or keyword/value pairs "+
			"(host=db user=sweeper dbname=sweeper). Empty means unset: DATABASE_URL is then read. "+
			"Its password is never logged; set it in the environment rather than in a file or a flag, "+
			"which other users may read."),
	newKey("database.max_conns", func(c *Config) *int { return &c.Database.MaxConns },
		4, intText, intBetween(1, 1000),
		"Size of the connection pool (1 to 1000)."),
	newKey("database.pooler", func(c *Config) *string { return &c.Database.Pooler },
		PoolerNone, stringText, stringOneOf(PoolerNone, PoolerTransaction),
		"What sits between sweeper and PostgreSQL: none (a direct connection, or a pooler in session mode) or "+
			"transaction (PgBouncer, RDS Proxy, Supavisor... in transaction pooling mode). transaction makes every "+
			"connection pooler-safe: no named prepared statements, no session state; migrations then need "+
			"database.migrate_url, and the API feed and the console's live page database.listen_url (else they poll)."),
	newKey("database.query_exec_mode", func(c *Config) *string { return &c.Database.QueryExecMode },
		"", stringText, stringOneOf(append([]string{""}, QueryExecModes...)...),
		"pgx's query exec mode: empty picks it from database.pooler (cache_statement for none, "+
			"exec for transaction); or one of cache_statement, cache_describe, describe_exec, exec, simple_protocol. "+
			"With database.pooler transaction only exec and simple_protocol are allowed."),
	newKey("database.migrate_url", func(c *Config) *string { return &c.Database.MigrateURL },
		"", dsnText, checkDSN,
		"Direct connection string (not through a transaction pooler) for sweeper migrate and migrate.auto, "+
			"which hold a session advisory lock; empty means database.url. Required when database.pooler is "+
			"transaction and migrations run."),
	newKey("database.listen_url", func(c *Config) *string { return &c.Database.ListenURL },
		"", dsnText, checkDSN,
		"Direct connection string (not through a transaction pooler) for the LISTEN of the API feed and the "+
			"console's live page, which needs a session; empty means database.url, or, when database.pooler is "+
			"transaction, that long polls and the live page re-read the feed every "+formatDuration(FeedPollInterval)+
			" instead of being woken."),
	newKey("database.read_url", func(c *Config) *string { return &c.Database.ReadURL },
		"", dsnText, checkDSN,
		"Connection string of a streaming replica (a hot standby) for the API's and the console's heavy "+
			"read-only queries: lists, summaries, the console's overview and lists. Writes, the sweep, the "+
			"pruner, token checks, reads by id and the feed stay on database.url; while the replica lags more "+
			"than database.read_max_lag, or cannot be reached, its reads go to database.url too. Empty: every "+
			"read goes to database.url. It holds a password like database.url; database.pooler and "+
			"database.query_exec_mode apply to it as well."),
	newKey("database.read_max_lag", func(c *Config) *time.Duration { return &c.Database.ReadMaxLag },
		10*time.Second, durationText, durationAtLeast(2*ReplicaCheckInterval),
		"Most staleness allowed of database.read_url (at least "+formatDuration(2*ReplicaCheckInterval)+
			"): reads go to the primary while the replica has not replayed what the primary had written this "+
			"long ago. Measured every "+formatDuration(ReplicaCheckInterval)+", to within that interval."),

	newKey("sweep.schedule", func(c *Config) *string { return &c.Sweep.Schedule },
		sweep.ScheduleDefault, stringText, checkSchedule,
		"When to sweep: a robfig/cron spec, five fields (*/5 * * * *) or a descriptor "+
			"(@every 30s, @hourly), in UTC unless it starts with CRON_TZ=; or "+sweep.ScheduleAdaptive+", to sleep "+
			"until the next delegation can become stuck (within "+formatDuration(sweep.AdaptiveFloorDefault)+
			" and "+formatDuration(sweep.AdaptiveCeilingDefault)+")."),
	newKey("sweep.heartbeat_timeout", func(c *Config) *time.Duration { return &c.Sweep.HeartbeatTimeout },
		sweep.HeartbeatTimeoutDefault, durationText, durationAtLeast(time.Second),
		"An in_progress delegation whose last heartbeat is older than this is marked stuck (at least 1s)."),
	newKey("sweep.progress_timeout", func(c *Config) *time.Duration { return &c.Sweep.ProgressTimeout },
		0, durationText, durationZeroOrAtLeast(time.Second),
		"An in_progress delegation whose progress (reported with its heartbeats) has not changed for longer "+
			"than this is marked stuck with reason stalled, however often it heartbeats (0 = off, else at least "+
			"1s). A delegation's own progress_timeout_seconds applies instead."),
	newKey("sweep.queue_timeout", func(c *Config) *time.Duration { return &c.Sweep.QueueTimeout },
		0, durationText, durationZeroOrAtLeast(time.Second),
		"A delegation queued longer than this (since created, or since its not_before) is marked stuck with "+
			"reason queue_timeout (0 = off, else at least 1s). A delegation's own queue_timeout_seconds applies instead."),
	newKey("sweep.start_timeout", func(c *Config) *time.Duration { return &c.Sweep.StartTimeout },
		0, durationText, durationZeroOrAtLeast(time.Second),
		"A delegation dispatched longer than this without entering in_progress is marked stuck with reason "+
			"start_timeout (0 = off, else at least 1s). A delegation's own start_timeout_seconds applies instead."),
	newKey("sweep.batch_size", func(c *Config) *int { return &c.Sweep.BatchSize },
		sweep.BatchSizeDefault, intText, intBetween(1, 100000),
		"Rows claimed and marked per batch, 1 to 100000; each batch is one transaction."),
	newKey("sweep.max_batches_per_run", func(c *Config) *int { return &c.Sweep.MaxBatchesPerRun },
		sweep.MaxBatchesPerRunDefault, intText, intBetween(1, math.MaxInt),
		"Most batches one run may take (at least 1); the rest waits for the next run."),
	newKey("sweep.notify_channel", func(c *Config) *string { return &c.Sweep.NotifyChannel },
		sweep.NotifyChannelDefault, stringText, checkChannel,
		"Channel of the pg_notify sent for each delegation marked stuck, in the transaction that marks it "+
			"(lower-case letters, digits and _); empty disables notifications."),
	newKey("sweep.dry_run", func(c *Config) *bool { return &c.Sweep.DryRun },
		false, boolText, nil,
		"Find the delegations that would be marked stuck, and change nothing."),

	newKey("migrate.auto", func(c *Config) *bool { return &c.Migrate.Auto },
		false, boolText, nil,
		"Migrate the schema up at start-up. When false, the daemon refuses to start on a schema "+
			"that is behind or dirty."),

	newKey("http.listen", func(c *Config) *string { return &c.HTTP.Listen },
		":9090", stringText, checkListen,
		"host:port for /metrics, /healthz and /readyz (:9090, 127.0.0.1:9090); empty disables the server."),

	newKey("api.listen", func(c *Config) *string { return &c.API.Listen },
		"", stringText, checkListen,
		"host:port of the ledger's HTTP API (/v1/...), a listener of its own; empty disables it. "+
			"Every request needs a bearer token (sweeper token create)."),
	newKey("api.tls_cert_file", func(c *Config) *string { return &c.API.TLSCertFile },
		"", stringText, nil,
		"PEM certificate (chain) of the API; with api.tls_key_file the API serves HTTPS only."),
	newKey("api.tls_key_file", func(c *Config) *string { return &c.API.TLSKeyFile },
		"", stringText, nil,
		"PEM private key of api.tls_cert_file."),
	newKey("api.client_ca_file", func(c *Config) *string { return &c.API.ClientCAFile },
		"", stringText, nil,
		"PEM CA certificates; when set (with TLS) the API requires client certificates they signed (mTLS)."),
	newKey("api.max_body_bytes", func(c *Config) *int { return &c.API.MaxBodyBytes },
		1<<20, intText, intBetween(1024, 1<<30),
		"Largest request body the API reads, in bytes (1024 to 1073741824); larger bodies get 413."),
	newKey("api.max_batch", func(c *Config) *int { return &c.API.MaxBatch },
		10000, intText, intBetween(1, 100000),
		"Most ids in one POST /v1/heartbeats (1 to 100000)."),
	newKey("api.rate_limit", func(c *Config) *int { return &c.API.RateLimit },
		0, intText, intBetween(0, 1000000),
		"Requests per second each API token may make; 0 is unlimited. Over it: 429 with Retry-After."),
	newKey("api.rate_burst", func(c *Config) *int { return &c.API.RateBurst },
		0, intText, intBetween(0, 1000000),
		"Requests a token may make at once above api.rate_limit; 0 means api.rate_limit."),
	newKey("api.max_wait", func(c *Config) *time.Duration { return &c.API.MaxWait },
		60*time.Second, durationText, durationAtLeast(time.Second),
		"Longest wait of a feed long poll (GET /v1/events?wait=...), at least 1s; below api.write_timeout."),
	newKey("api.read_header_timeout", func(c *Config) *time.Duration { return &c.API.ReadHeaderTimeout },
		5*time.Second, durationText, durationAtLeast(time.Millisecond),
		"Time a client has to send the request headers (slow clients are cut off)."),
	newKey("api.read_timeout", func(c *Config) *time.Duration { return &c.API.ReadTimeout },
		30*time.Second, durationText, durationAtLeast(time.Millisecond),
		"Time a client has to send the whole request, body included."),
	newKey("api.write_timeout", func(c *Config) *time.Duration { return &c.API.WriteTimeout },
		90*time.Second, durationText, durationAtLeast(time.Millisecond),
		"Time the API has to answer a request, long polls included: keep it above api.max_wait."),
	newKey("api.idle_timeout", func(c *Config) *time.Duration { return &c.API.IdleTimeout },
		120*time.Second, durationText, durationAtLeast(time.Millisecond),
		"How long an idle keep-alive connection stays open."),
	newKey("api.max_header_bytes", func(c *Config) *int { return &c.API.MaxHeaderBytes },
		16384, intText, intBetween(1024, 1<<20),
		"Largest request header block, in bytes (1024 to 1048576)."),

	newKey("log.level", func(c *Config) *string { return &c.Log.Level },
		"info", stringText, stringOneOf(LogLevels...),
		"Least severe level logged: debug, info, warn or error."),
	newKey("log.format", func(c *Config) *string { return &c.Log.Format },
		LogFormatJSON, stringText, stringOneOf(LogFormatJSON, LogFormatConsole),
		"json (one object per line, for production) or console (for people)."),

	newKey("retention.completed", func(c *Config) *time.Duration { return &c.Retention.Completed },
		30*day, ageText, retentionAge,
		"Completed delegations are deleted, with their events, once they have been completed this long "+
			"(30d, 12h, 1d12h; at least 1h); 0 keeps them for ever."),
	newKey("retention.failed", func(c *Config) *time.Duration { return &c.Retention.Failed },
		90*day, ageText, retentionAge,
		"Failed delegations are deleted, with their events, once they have been failed this long "+
			"(at least 1h); 0 keeps them for ever."),
	newKey("retention.stuck", func(c *Config) *time.Duration { return &c.Retention.Stuck },
		90*day, ageText, retentionAge,
		"Stuck delegations are deleted, with their events, once they have been stuck this long "+
			"(at least 1h); 0 keeps them for ever."),
	newKey("retention.schedule", func(c *Config) *string { return &c.Retention.Schedule },
		"@every 1h", stringText, checkRetentionSchedule,
		"When the daemon prunes: a robfig/cron spec (@every 1h, 0 3 * * *), in UTC unless it starts with "+
			"CRON_TZ=. sweeper prune runs one pass on demand."),
	newKey("retention.batch_size", func(c *Config) *int { return &c.Retention.BatchSize },
		1000, intText, intBetween(1, 100000),
		"Delegations deleted per batch, 1 to 100000; each batch, with its events, is one transaction."),
	newKey("retention.archive_dir", func(c *Config) *string { return &c.Retention.ArchiveDir },
		"", stringText, nil,
		"Directory where each batch is written as gzip JSON Lines, fsynced, before it is deleted; "+
			"empty deletes without archiving. Check the files with sweeper archive verify DIR."),

	newKey("webhooks.enabled", func(c *Config) *bool { return &c.Webhooks.Enabled },
		true, boolText, nil,
		"Deliver webhook subscriptions (sweeper webhook create) from this daemon. Several replicas may all "+
			"deliver: one at a time per subscription, by a lease in the database."),
	newKey("webhooks.timeout", func(c *Config) *time.Duration { return &c.Webhooks.Timeout },
		webhook.TimeoutDefault, durationText, durationBetween(100*time.Millisecond, 5*time.Minute),
		"Time one delivery has to connect, send and get its response (100ms to 5m); past it, the attempt failed."),
	newKey("webhooks.max_retry_age", func(c *Config) *time.Duration { return &c.Webhooks.MaxRetryAge },
		webhook.MaxRetryAgeDefault, ageText, durationAtLeast(time.Second),
		"How long a subscription's head event may keep failing (3d, 12h; at least 1s) before the subscription "+
			"is paused; sweeper webhook resume delivers it again from where it stopped."),
	newKey("webhooks.retry_min_backoff", func(c *Config) *time.Duration { return &c.Webhooks.RetryMinBackoff },
		webhook.RetryMinBackoffDefault, durationText, durationAtLeast(10*time.Millisecond),
		"Wait before the first retry of a failed delivery (at least 10ms); doubled after each failure up to "+
			"webhooks.retry_max_backoff, then drawn at random from its upper half (jitter)."),
	newKey("webhooks.retry_max_backoff", func(c *Config) *time.Duration { return &c.Webhooks.RetryMaxBackoff },
		webhook.RetryMaxBackoffDefault, durationText, durationAtLeast(10*time.Millisecond),
		"Longest wait between two attempts of a failed delivery; at least webhooks.retry_min_backoff."),
	newKey("webhooks.lease_ttl", func(c *Config) *time.Duration { return &c.Webhooks.LeaseTTL },
		webhook.LeaseTTLDefault, durationText, durationAtLeast(time.Second),
		"How long a replica's lease on a subscription lasts unrenewed: a replica that dies is replaced within "+
			"webhooks.lease_ttl + webhooks.poll_interval. Longer than webhooks.timeout + webhooks.poll_interval."),
	newKey("webhooks.poll_interval", func(c *Config) *time.Duration { return &c.Webhooks.PollInterval },
		webhook.PollIntervalDefault, durationText, durationBetween(10*time.Millisecond, time.Minute),
		"How often leases are renewed and free subscriptions taken (10ms to 1m); new events wake deliveries at once. "+
			"A page whose deliveries take longer records what was delivered this often."),
	newKey("webhooks.max_in_flight", func(c *Config) *int { return &c.Webhooks.MaxInFlight },
		webhook.MaxInFlightDefault, intText, intBetween(1, webhook.PageSize),
		fmt.Sprintf("Deliveries of one subscription in flight at once (1 to %d, the events of a page): events of "+
			"different delegations go in parallel, those of one delegation one after the other, in feed order. "+
			"1 delivers every event in feed order.", webhook.PageSize)),
	newKey("webhooks.allow_http", func(c *Config) *bool { return &c.Webhooks.AllowHTTP },
		false, boolText, nil,
		"Accept http:// destinations; when false only https:// ones are created and delivered to."),
	newKey("webhooks.allow_private_networks", func(c *Config) *bool { return &c.Webhooks.AllowPrivateNetworks },
		false, boolText, nil,
		"Deliver to loopback, private, link-local, unique-local, shared and cloud metadata addresses; when false "+
			"they are refused when dialled, after DNS resolution (a rebinding name cannot reach them)."),

	newKey("shutdown_grace", func(c *Config) *time.Duration { return &c.ShutdownGrace },
		30*time.Second, durationText, durationAtLeast(time.Nanosecond),
		"After SIGINT or SIGTERM, how long to wait for the running batch to commit or roll back "+
			"before exiting (more than 0)."),
}

// KeyInfo describes one configuration key, for documentation and for tests
// that keep documents such as config.example.yaml in step with the code.
type KeyInfo struct {
	// Path is the key's YAML path: "sweep.batch_size".
	Path string
	// Env is the environment variable that sets it: "SWEEPER_SWEEP_BATCH_SIZE".
	Env string
	// Flag is the flag that sets it, without dashes: "sweep-batch-size".
	Flag string
	// Type is "string", "int", "bool" or "duration".
	Type string
	// Default is the default as text, in the form the key is written in.
	Default string
	// Doc is the key's documentation, one or two sentences.
	Doc string
	// Secret reports whether the value may hold a password: it is only
	// ever shown as DisplayDSN renders it.
	Secret bool
}

// Keys describes every configuration key, in the order of the YAML file.
func Keys() []KeyInfo {
	d := Default()
	out := make([]KeyInfo, len(keys))
	for i := range keys {
		k := &keys[i]
		out[i] = KeyInfo{
			Path:    k.path,
			Env:     envName(k.path),
			Flag:    flagName(k.path),
			Type:    k.typ,
			Default: k.format(&d),
			Doc:     k.doc,
			Secret:  k.secret,
		}
	}
	return out
}

// envPrefix starts the name of every environment variable of this package.
const envPrefix = "SWEEPER_"

// envName derives a key's environment variable: sweep.batch_size becomes
// SWEEPER_SWEEP_BATCH_SIZE.
func envName(path string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(path, ".", "_"))
}

// flagName derives a key's flag: sweep.batch_size becomes sweep-batch-size.
func flagName(path string) string {
	return strings.NewReplacer(".", "-", "_", "-").Replace(path)
}

// key is one entry of the keys table, with its typed parts hidden behind
// closures so that keys of every type sit in one slice.
type key struct {
	path   string
	doc    string
	typ    string
	secret bool

	// setDefault stores the default in c.
	setDefault func(c *Config)
	// parse stores the value written as s in c, or returns why it cannot.
	parse func(c *Config, s string) (reason string)
	// format returns c's value as text that parse accepts.
	format func(c *Config) string
	// check returns why c's value is invalid, or "".
	check func(c *Config) (reason string)
	// log adds c's value to enc under name.
	log func(enc zapcore.ObjectEncoder, name string, c *Config)
	// jsonValue returns c's value for encoding/json, as YAML writes it.
	jsonValue func(c *Config) any
}

// shown returns s as it may be shown in an error: for a secret key, as
// DisplayDSN renders it.
func (k *key) shown(s string) string {
	if k.secret {
		return DisplayDSN(s)
	}
	return s
}

// codec reads and writes one type of value as text.
type codec[T any] struct {
	typ    string
	want   string // what parse accepts, after "must be "
	secret bool
	parse  func(s string) (T, bool)
	format func(v T) string
	log    func(enc zapcore.ObjectEncoder, name string, v T)
	// jsonValue is the value encoding/json writes; nil for v itself.
	jsonValue func(v T) any
}

// newKey builds a table entry for the Config field that field points to.
// check may be nil when every value that parses is valid.
func newKey[T any](path string, field func(*Config) *T, def T, cd codec[T], check func(T) string, doc string) key {
	return key{
		path:       path,
		doc:        doc,
		typ:        cd.typ,
		secret:     cd.secret,
		setDefault: func(c *Config) { *field(c) = def },
		parse: func(c *Config, s string) string {
			v, ok := cd.parse(s)
			if !ok {
				if s == "" {
					return "is empty; it must be " + cd.want
				}
				return "must be " + cd.want
			}
			*field(c) = v
			return ""
		},
		format: func(c *Config) string { return cd.format(*field(c)) },
		check: func(c *Config) string {
			if check == nil {
				return ""
			}
			return check(*field(c))
		},
		log: func(enc zapcore.ObjectEncoder, name string, c *Config) { cd.log(enc, name, *field(c)) },
		jsonValue: func(c *Config) any {
			if cd.jsonValue == nil {
				return *field(c)
			}
			return cd.jsonValue(*field(c))
		},
	}
}

var (
	stringText = codec[string]{
		typ:    "string",
		parse:  func(s string) (string, bool) { return s, true },
		format: func(v string) string { return v },
		log:    func(enc zapcore.ObjectEncoder, name, v string) { enc.AddString(name, v) },
	}
	// dsnText is stringText for a connection string: shown, logged and
	// encoded as DisplayDSN renders it, without the password.
	dsnText = codec[string]{
		typ:       "string",
		secret:    true,
		parse:     func(s string) (string, bool) { return s, true },
		format:    func(v string) string { return v },
		log:       func(enc zapcore.ObjectEncoder, name, v string) { enc.AddString(name, DisplayDSN(v)) },
		jsonValue: func(v string) any { return DisplayDSN(v) },
	}
	intText = codec[int]{
		typ:  "int",
		want: "a decimal integer",
		parse: func(s string) (int, bool) {
			v, err := strconv.Atoi(s)
			return v, err == nil
		},
		format: strconv.Itoa,
		log:    func(enc zapcore.ObjectEncoder, name string, v int) { enc.AddInt(name, v) },
	}
	boolText = codec[bool]{
		typ:  "bool",
		want: "true or false (or 1 or 0)",
		parse: func(s string) (bool, bool) {
			v, err := strconv.ParseBool(s)
			return v, err == nil
		},
		format: strconv.FormatBool,
		log:    func(enc zapcore.ObjectEncoder, name string, v bool) { enc.AddBool(name, v) },
	}
	durationText = codec[time.Duration]{
		typ:  "duration",
		want: "a duration such as 30s, 10m or 1h30m",
		parse: func(s string) (time.Duration, bool) {
			v, err := time.ParseDuration(s)
			return v, err == nil
		},
		format: formatDuration,
		log: func(enc zapcore.ObjectEncoder, name string, v time.Duration) {
			enc.AddString(name, formatDuration(v))
		},
		jsonValue: func(v time.Duration) any { return formatDuration(v) },
	}
)

// day is the unit of ageText.
const day = 24 * time.Hour

// ageText is durationText that also takes whole days, as retentions are
// written: 30d, 1d12h, 90d; and writes a whole number of days as such.
var ageText = codec[time.Duration]{
	typ:  "duration",
	want: "a duration such as 30d, 36h or 1d12h (d is 24h), or 0",
	parse: func(s string) (time.Duration, bool) {
		days, rest, ok := strings.Cut(s, "d")
		if !ok {
			v, err := time.ParseDuration(s)
			return v, err == nil
		}
		n, err := strconv.ParseUint(days, 10, 16) // up to 65535 days
		if err != nil || days == "" || days[0] == '+' {
			return 0, false
		}
		v := time.Duration(n) * day
		if rest != "" {
			r, err := time.ParseDuration(rest)
			if err != nil || r < 0 || rest[0] == '+' || rest[0] == '-' {
				return 0, false
			}
			v += r
		}
		return v, true
	},
	format:    formatAge,
	jsonValue: func(v time.Duration) any { return formatAge(v) },
	log: func(enc zapcore.ObjectEncoder, name string, v time.Duration) {
		enc.AddString(name, formatAge(v))
	},
}

// formatAge writes d with whole days as Nd: 30d, 1d12h, 0s for 0.
func formatAge(d time.Duration) string {
	if d >= day {
		days, rest := d/day, d%day
		if rest == 0 {
			return strconv.FormatInt(int64(days), 10) + "d"
		}
		return strconv.FormatInt(int64(days), 10) + "d" + formatDuration(rest)
	}
	return formatDuration(d)
}

// retentionAge accepts 0 (keep for ever) or at least one hour, the floor
// the database's prune function enforces too.
func retentionAge(v time.Duration) string {
	if v == 0 || v >= time.Hour {
		return ""
	}
	return "must be 0 (keep for ever) or at least 1h"
}

// checkRetentionSchedule is checkSchedule without @adaptive, which only the
// sweep has.
func checkRetentionSchedule(spec string) string {
	if spec == sweep.ScheduleAdaptive {
		return "must be a cron spec such as \"@every 1h\" or \"0 3 * * *\" (@adaptive is for sweep.schedule only)"
	}
	if reason := checkSchedule(spec); reason != "" {
		return strings.ReplaceAll(reason, ", or @adaptive", "")
	}
	return ""
}

// formatDuration writes d as time.Duration.String does, without the zero
// units at the end: 10m rather than 10m0s, 1h rather than 1h0m0s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// intBetween accepts lo <= v <= hi; hi == math.MaxInt means no upper bound.
func intBetween(lo, hi int) func(int) string {
	return func(v int) string {
		if v >= lo && v <= hi {
			return ""
		}
		if hi == math.MaxInt {
			return fmt.Sprintf("must be at least %d", lo)
		}
		return fmt.Sprintf("must be between %d and %d", lo, hi)
	}
}

// durationBetween accepts lo <= v <= hi.
func durationBetween(lo, hi time.Duration) func(time.Duration) string {
	return func(v time.Duration) string {
		if v < lo || v > hi {
			return "must be from " + formatDuration(lo) + " to " + formatDuration(hi)
		}
		return ""
	}
}

// durationAtLeast accepts v >= lo; lo of 1ns reads "more than 0".
// durationZeroOrAtLeast accepts 0 (off) or a duration of at least lo.
func durationZeroOrAtLeast(lo time.Duration) func(time.Duration) string {
	return func(v time.Duration) string {
		if v == 0 || v >= lo {
			return ""
		}
		return "must be 0 (off) or at least " + formatDuration(lo)
	}
}

func durationAtLeast(lo time.Duration) func(time.Duration) string {
	return func(v time.Duration) string {
		switch {
		case v >= lo:
			return ""
		case lo == time.Nanosecond:
			return "must be more than 0"
		default:
			return "must be at least " + formatDuration(lo)
		}
	}
}

// stringOneOf accepts exactly one of values.
func stringOneOf(values ...string) func(string) string {
	values = slices.Clone(values)
	return func(v string) string {
		for _, ok := range values {
			if v == ok {
				return ""
			}
		}
		return "must be one of " + strings.Join(values, ", ")
	}
}

// checkDSN accepts "" (unset) and whatever pgconn.ParseConfig accepts. The
// reason never repeats pgx's message, which may quote part of the password.
func checkDSN(dsn string) string {
	if dsn == "" {
		return ""
	}
	if _, err := pgconn.ParseConfig(dsn); err != nil {
		return "is not a valid PostgreSQL connection string (want postgres://user:password@host:port/dbname, " +
			"special characters percent-encoded, or keyword=value pairs)"
	}
	return ""
}

// checkSchedule is sweep.ValidateSchedule: the sweep package owns what a
// schedule may be.
func checkSchedule(spec string) string {
	if err := sweep.ValidateSchedule(spec); err != nil {
		return err.Error()
	}
	return ""
}

// maxChannelLen is PostgreSQL's identifier limit (NAMEDATALEN - 1).
const maxChannelLen = 63

// checkChannel accepts "" (notifications off) or a lower-case identifier of
// at most 63 bytes. Upper case is refused because LISTEN folds an unquoted
// name to lower case while pg_notify does not, so listeners would miss it.
func checkChannel(ch string) string {
	if ch == "" {
		return ""
	}
	const want = "must be empty (no notifications) or a lower-case identifier: " +
		"a letter or _ then letters, digits or _, at most 63 bytes"
	if len(ch) > maxChannelLen {
		return want
	}
	for i := 0; i < len(ch); i++ {
		c := ch[i]
		switch {
		case c >= 'a' && c <= 'z', c == '_':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return want
		}
	}
	return ""
}

// checkListen accepts "" (server off) or host:port with a port of 0 to 65535.
func checkListen(addr string) string {
	if addr == "" {
		return ""
	}
	const want = "must be host:port with a port from 0 to 65535 (:9090, 127.0.0.1:9090, [::1]:9090), or empty to disable"
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return want
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 || port[0] == '+' || port[0] == '-' {
		return want
	}
	return ""
}
