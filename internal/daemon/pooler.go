package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/internal/config"
)

// PoolerError wraps an error that a pooler in transaction mode causes when
// the connection is used as a session: a named prepared statement that
// already exists (SQLSTATE 42P05) or does not exist (26000) on the server
// connection the pooler handed out. Its message says which key to set.
type PoolerError struct {
	Err error
}

func (e *PoolerError) Error() string {
	return e.Err.Error() + " (this is what a connection pooler in transaction mode does to prepared statements, " +
		"PgBouncer pool_mode=transaction for one: set database.pooler: transaction, " +
		"SWEEPER_DATABASE_POOLER=transaction; see docs/operations.md, \"Behind a connection pooler\")"
}

func (e *PoolerError) Unwrap() error { return e.Err }

// IsPoolerSymptom reports whether err is one of the errors that a pooler in
// transaction mode gives a client using session state.
func IsPoolerSymptom(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case pgerrcode.DuplicatePreparedStatement, pgerrcode.InvalidSQLStatementName:
		return true
	}
	return strings.Contains(pgErr.Message, "prepared statement") && strings.Contains(pgErr.Message, "does not exist")
}

// ExplainPooler returns err wrapped in a *PoolerError when it is a pooler
// symptom (IsPoolerSymptom), else err itself (nil stays nil).
func ExplainPooler(err error) error {
	var pe *PoolerError
	if err == nil || errors.As(err, &pe) || !IsPoolerSymptom(err) {
		return err
	}
	return &PoolerError{Err: err}
}

// openListenPool opens the pool of the API feed's LISTEN connection on
// database.listen_url: a direct connection beside a transaction pooler. It
// returns nil, nil when database.listen_url is empty.
func openListenPool(ctx context.Context, cfg config.Config) (*pgxpool.Pool, error) {
	if cfg.Database.ListenURL == "" {
		return nil, nil
	}
	lcfg := cfg
	lcfg.Database.URL = cfg.Database.ListenURL
	lcfg.Database.Pooler = config.PoolerNone
	lcfg.Database.QueryExecMode = ""
	lcfg.Database.MaxConns = 2 // the LISTEN connection leaves the pool; one more to reconnect
	pool, err := OpenPool(ctx, lcfg)
	if err != nil {
		return nil, fmt.Errorf("database.listen_url: %w", err)
	}
	return pool, nil
}
