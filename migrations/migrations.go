// Package migrations holds sweeper's database schema as golang-migrate files,
// embedded in the binary, and the few functions that apply and inspect them.
//
// Library users who record delegations from their own services migrate with
// the same files the daemon uses:
//
//	if err := migrations.Up(ctx, dsn); err != nil { ... }
//
// Migrations take a PostgreSQL advisory lock, so several processes may run
// Up at once; the schema is applied once. The lock is a session lock: give
// Up and Open a direct connection string, never one through a pooler in
// transaction mode, which could run the lock, the migration and the unlock
// on different server connections (sweeper's database.migrate_url). The version is kept in the table
// named by VersionTable, apart from any schema_migrations table of the
// application that shares the database.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"

	"github.com/golang-migrate/migrate/v4"
	migratepgx "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// FS holds the migration files, named NNNNNN_name.up.sql and .down.sql.
//
//go:embed *.sql
var FS embed.FS

// Latest is the schema version this build of sweeper expects.
const Latest uint = 12

// VersionTable is the table where golang-migrate records the applied version.
const VersionTable = "sweeper_schema_migrations"

// Migrator applies and reverts the embedded migrations on one database.
// Close it when done.
type Migrator struct {
	m  *migrate.Migrate
	db *sql.DB
}

// Open connects to the database named by dsn (URL or key=value form) and
// prepares the embedded migrations. Errors never contain the DSN.
func Open(dsn string) (*Migrator, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parsing database url: %w", redactParseError(err))
	}
	db := stdlib.OpenDB(*cfg)
	driver, err := migratepgx.WithInstance(db, &migratepgx.Config{MigrationsTable: VersionTable})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("connecting to database for migrations: %w", err)
	}
	src, err := iofs.New(FS, ".")
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("reading embedded migrations: %w", err)
	}
	m, err := migrate.NewWithInstance("iofs", src, "pgx5", driver)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("preparing migrations: %w", err)
	}
	return &Migrator{m: m, db: db}, nil
}

// Up applies every migration not yet applied. A current schema is not an error.
func (mg *Migrator) Up() error {
	if err := mg.m.Up(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return fmt.Errorf("migrating up: %w", err)
	}
	return nil
}

// Down reverts every migration, leaving no sweeper object in the database.
func (mg *Migrator) Down() error {
	if err := mg.m.Down(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return fmt.Errorf("migrating down: %w", err)
	}
	return nil
}

// Steps applies (n > 0) or reverts (n < 0) n migrations.
func (mg *Migrator) Steps(n int) error {
	if err := mg.m.Steps(n); err != nil {
		return fmt.Errorf("migrating %+d steps: %w", n, err)
	}
	return nil
}

// Version reports the applied version and whether a failed migration left the
// schema dirty. Version 0 means nothing is applied.
func (mg *Migrator) Version() (version uint, dirty bool, err error) {
	v, dirty, err := mg.m.Version()
	if errors.Is(err, migrate.ErrNilVersion) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("reading schema version: %w", err)
	}
	return v, dirty, nil
}

// Force records version as applied and clean without running anything. It is
// the operator's repair after fixing a failed migration by hand; sweeper never
// calls it on its own. -1 means no version.
func (mg *Migrator) Force(version int) error {
	if err := mg.m.Force(version); err != nil {
		return fmt.Errorf("forcing schema version %d: %w", version, err)
	}
	return nil
}

// Close releases the migrator's connection.
func (mg *Migrator) Close() error {
	srcErr, dbErr := mg.m.Close()
	return errors.Join(srcErr, dbErr, mg.db.Close())
}

// Up opens the database named by dsn, applies every pending migration and
// closes the connection.
func Up(ctx context.Context, dsn string) error {
	mg, err := Open(dsn)
	if err != nil {
		return err
	}
	defer mg.Close()
	done := make(chan error, 1)
	go func() { done <- mg.Up() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		mg.m.GracefulStop <- true
		<-done
		return ctx.Err()
	}
}

// Querier is the subset of pgx's pool, connection and transaction that
// ReadState needs.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// State is the schema's state as the daemon sees it before starting.
type State struct {
	Version uint // applied version; 0 when nothing is applied
	Dirty   bool // a migration failed half way; an operator must repair it
}

// Current reports whether the schema is exactly what this build expects.
func (s State) Current() bool { return !s.Dirty && s.Version == Latest }

// Problem describes what is wrong with the schema and what to run, or "" when
// it is current.
func (s State) Problem() string {
	switch {
	case s.Dirty:
		return fmt.Sprintf("schema version %d is dirty (a migration failed part way): "+
			"inspect the database, repair it, then run `sweeper migrate force N` (see docs/operations.md)", s.Version)
	case s.Version < Latest:
		return fmt.Sprintf("schema version %d is behind %d: run `sweeper migrate up` or set migrate.auto: true",
			s.Version, Latest)
	case s.Version > Latest:
		return fmt.Sprintf("schema version %d is newer than this build's %d: upgrade sweeper", s.Version, Latest)
	}
	return ""
}

const readStateSQL = `SELECT version, dirty FROM ` + VersionTable + ` LIMIT 1`

// ReadState reads the schema version through an existing pool or connection,
// without taking the migration lock. A missing version table is version 0.
func ReadState(ctx context.Context, q Querier) (State, error) {
	var version int64
	var dirty bool
	err := q.QueryRow(ctx, readStateSQL).Scan(&version, &dirty)
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return State{}, nil
	case errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UndefinedTable:
		return State{}, nil
	case err != nil:
		return State{}, fmt.Errorf("reading schema version: %w", err)
	}
	return State{Version: uint(version), Dirty: dirty}, nil
}

// redactParseError drops pgx's parse error text, which can quote the DSN
// (and so its password), keeping only a generic reason.
func redactParseError(err error) error {
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		return errors.New("invalid connection string (check its syntax; the value is not shown because it may contain a password)")
	}
	return err
}
