package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestPoolerExecMode(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, pooler, mode string
		want               pgx.QueryExecMode
		wantErr            string // substring of Validate's error; "" for none
	}{
		{name: "direct default", pooler: PoolerNone, want: pgx.QueryExecModeCacheStatement},
		{name: "transaction default", pooler: PoolerTransaction, want: pgx.QueryExecModeExec},
		{name: "transaction simple protocol", pooler: PoolerTransaction, mode: "simple_protocol", want: pgx.QueryExecModeSimpleProtocol},
		{name: "direct describe_exec", pooler: PoolerNone, mode: "describe_exec", want: pgx.QueryExecModeDescribeExec},
		{name: "transaction cache_statement refused", pooler: PoolerTransaction, mode: "cache_statement",
			wantErr: "database.query_exec_mode: must be exec or simple_protocol (or empty) when database.pooler is transaction"},
		{name: "transaction cache_describe refused", pooler: PoolerTransaction, mode: "cache_describe",
			wantErr: "database.query_exec_mode: must be exec or simple_protocol"},
		{name: "unknown pooler", pooler: "session", wantErr: "database.pooler: must be one of none, transaction"},
		{name: "unknown mode", pooler: PoolerNone, mode: "fast", wantErr: "database.query_exec_mode: must be one of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := Default()
			c.Database.Pooler, c.Database.QueryExecMode = tc.pooler, tc.mode
			err := c.Validate()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Validate = %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Validate = %v", err)
			}
			if got := c.Database.ExecMode(); got != tc.want {
				t.Fatalf("ExecMode = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPoolerFromEnvironment(t *testing.T) {
	t.Parallel()
	_, err := Load("", []string{"SWEEPER_DATABASE_POOLER=transaction", "SWEEPER_DATABASE_QUERY_EXEC_MODE=cache_statement"}, nil)
	var ce *Error
	if !errors.As(err, &ce) || ce.Key != "database.query_exec_mode" || !strings.Contains(ce.Source, "SWEEPER_DATABASE_QUERY_EXEC_MODE") {
		t.Fatalf("Load = %v, want an *Error on database.query_exec_mode from SWEEPER_DATABASE_QUERY_EXEC_MODE", err)
	}
}

func TestMigrationURL(t *testing.T) {
	t.Parallel()
	const pooled, direct = "postgres://u:secret@bouncer:6432/db", "postgres://u:secret@db:5432/db"
	for _, tc := range []struct {
		name             string
		d                DatabaseConfig
		want             string
		wantErrSubstring string
	}{
		{name: "direct", d: DatabaseConfig{URL: direct, Pooler: PoolerNone}, want: direct},
		{name: "migrate_url wins", d: DatabaseConfig{URL: pooled, Pooler: PoolerNone, MigrateURL: direct}, want: direct},
		{name: "transaction with migrate_url", d: DatabaseConfig{URL: pooled, Pooler: PoolerTransaction, MigrateURL: direct}, want: direct},
		{name: "transaction without migrate_url", d: DatabaseConfig{URL: pooled, Pooler: PoolerTransaction},
			wantErrSubstring: "database.migrate_url: is not set, and database.pooler is transaction"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := tc.d.MigrationURL()
			if tc.wantErrSubstring != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErrSubstring) || strings.Contains(err.Error(), "secret") {
					t.Fatalf("MigrationURL = %q, %v; want an error containing %q and no password", got, err, tc.wantErrSubstring)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("MigrationURL = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
