package config

import (
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Values of database.pooler.
const (
	// PoolerNone is a direct connection (or a pooler in session mode): every
	// connection is a session of its own, and the fastest exec mode is used.
	PoolerNone = "none"
	// PoolerTransaction is a pooler in transaction mode (PgBouncer
	// pool_mode=transaction and the like): consecutive transactions of one
	// client connection may run on different server connections, so nothing
	// may outlive a transaction (no named prepared statements, no LISTEN, no
	// session advisory lock).
	PoolerTransaction = "transaction"
)

// QueryExecModes lists the values of database.query_exec_mode besides "",
// in pgx's names (pgx.QueryExecMode.String).
var QueryExecModes = []string{"cache_statement", "cache_describe", "describe_exec", "exec", "simple_protocol"}

// execModes maps QueryExecModes to pgx's constants.
var execModes = map[string]pgx.QueryExecMode{
	"cache_statement": pgx.QueryExecModeCacheStatement,
	"cache_describe":  pgx.QueryExecModeCacheDescribe,
	"describe_exec":   pgx.QueryExecModeDescribeExec,
	"exec":            pgx.QueryExecModeExec,
	"simple_protocol": pgx.QueryExecModeSimpleProtocol,
}

// poolerSafeModes are the exec modes that run each statement in one round
// trip with the unnamed statement, so that nothing outlives it on the
// server connection: the modes allowed with PoolerTransaction.
var poolerSafeModes = map[string]bool{"exec": true, "simple_protocol": true}

// FeedPollInterval is how often an API feed long poll re-reads the feed when
// it cannot be woken by LISTEN (database.pooler transaction without
// database.listen_url).
const FeedPollInterval = time.Second

// ReplicaCheckInterval is how often the daemon measures the lag of
// database.read_url.
const ReplicaCheckInterval = time.Second

// ExecModeName is the effective database.query_exec_mode: QueryExecMode when
// set, else exec under PoolerTransaction and cache_statement (pgx's default,
// the fastest on a direct connection) otherwise.
func (d DatabaseConfig) ExecModeName() string {
	switch {
	case d.QueryExecMode != "":
		return d.QueryExecMode
	case d.Pooler == PoolerTransaction:
		return "exec"
	default:
		return "cache_statement"
	}
}

// ExecMode is ExecModeName as pgx's constant, for
// pgx.ConnConfig.DefaultQueryExecMode.
func (d DatabaseConfig) ExecMode() pgx.QueryExecMode {
	if m, ok := execModes[d.ExecModeName()]; ok {
		return m
	}
	return pgx.QueryExecModeCacheStatement
}

// TransactionPooler reports whether database.url goes through a pooler in
// transaction mode.
func (d DatabaseConfig) TransactionPooler() bool { return d.Pooler == PoolerTransaction }

// MigrationURL returns the connection string migrations use: MigrateURL when
// set, else URL unless URL goes through a transaction pooler, where
// golang-migrate's session advisory lock would be taken on one server
// connection and released (or not) on another. That case is an *Error naming
// database.migrate_url.
func (d DatabaseConfig) MigrationURL() (string, error) {
	if d.MigrateURL != "" {
		return d.MigrateURL, nil
	}
	if d.TransactionPooler() {
		return "", &Error{Key: "database.migrate_url", Reason: "is not set, and database.pooler is transaction: " +
			"migrations hold a session advisory lock, which a transaction pooler cannot keep; " +
			"set database.migrate_url (SWEEPER_DATABASE_MIGRATE_URL) to a direct connection to PostgreSQL " +
			"(or to a session-mode pool)"}
	}
	return d.URL, nil
}

// checkPooler returns the problems between the database keys: an exec mode
// that a transaction pooler breaks.
func (c Config) checkPooler(origins map[string]origin) []error {
	d := c.Database
	if !d.TransactionPooler() || d.QueryExecMode == "" || poolerSafeModes[d.QueryExecMode] {
		return nil
	}
	o := origins["database.query_exec_mode"]
	return []error{&Error{Key: "database.query_exec_mode", Value: d.QueryExecMode, Source: o.source,
		Reason: fmt.Sprintf("must be exec or simple_protocol (or empty) when database.pooler is %s: "+
			"%s keeps prepared statements on a server connection that the pooler shares", PoolerTransaction, d.QueryExecMode)}}
}
