package testdb

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/internal/pgserver"
	"github.com/tasksweeper/sweeper/migrations"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func tableExists(t *testing.T, pool *pgxpool.Pool, table string) bool {
	t.Helper()
	var exists bool
	if err := pool.QueryRow(context.Background(), "SELECT to_regclass($1) IS NOT NULL", table).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	return exists
}

func TestNewIsMigrated(t *testing.T) {
	t.Parallel()
	db := New(t)
	for _, table := range []string{"delegations", "delegation_events", migrations.VersionTable} {
		if !tableExists(t, db.Pool, table) {
			t.Errorf("table %s missing in a new database", table)
		}
	}
	state, err := migrations.ReadState(context.Background(), db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	if !state.Current() {
		t.Errorf("schema state %+v, want version %d clean", state, migrations.Latest)
	}
}

func TestNewDatabasesAreIsolated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, b := New(t), New(t)
	if a.Name == b.Name || a.URL == b.URL {
		t.Fatalf("two New calls gave the same database %q", a.Name)
	}
	if _, err := a.Pool.Exec(ctx, "CREATE TABLE only_in_a (id int)"); err != nil {
		t.Fatal(err)
	}
	if tableExists(t, b.Pool, "only_in_a") {
		t.Fatal("a table created in one test database shows in another")
	}

	// URL reaches the same database as Pool.
	conn, err := pgx.Connect(ctx, a.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var name string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&name); err != nil {
		t.Fatal(err)
	}
	if name != a.Name {
		t.Fatalf("URL connects to %q, want %q", name, a.Name)
	}
}

func TestNewEmptyIsNotMigrated(t *testing.T) {
	t.Parallel()
	db := NewEmpty(t)
	if tableExists(t, db.Pool, "delegations") {
		t.Fatal("NewEmpty gave a migrated database")
	}
	if err := migrations.Up(context.Background(), db.URL); err != nil {
		t.Fatalf("migrating an empty database: %v", err)
	}
	if !tableExists(t, db.Pool, "delegations") {
		t.Fatal("no delegations table after migrating")
	}
}

func TestDatabaseDroppedWhenTestEnds(t *testing.T) {
	t.Parallel()
	var name string
	t.Run("user", func(t *testing.T) {
		db := New(t)
		name = db.Name
		// A connection the test forgot to close does not block the drop.
		conn, err := pgx.Connect(context.Background(), db.URL)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn
	})
	var exists bool
	if err := shared.admin.QueryRow(context.Background(),
		"SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Fatalf("database %s still exists after its test ended", name)
	}
}

func TestNewIsFast(t *testing.T) {
	t.Parallel()
	New(t) // the first New of the binary may start the server
	const n = 5
	began := time.Now()
	for range n {
		New(t)
	}
	per := time.Since(began) / n
	t.Logf("New takes %v per database", per)
	if per > 2*time.Second {
		t.Errorf("New takes %v per database; a template copy should take tens of milliseconds", per)
	}
}

func TestMustSkip(t *testing.T) {
	noPG := fmt.Errorf("%w (local: no initdb)", pgserver.ErrNoPostgres)
	broken := errors.New("starting local postgres: initdb failed")
	for _, tc := range []struct {
		name      string
		err       error
		requireDB string
		want      bool
	}{
		{"no postgres, not required", noPG, "", true},
		{"no postgres, required", noPG, "1", false},
		{"no postgres, required with true", noPG, "true", false},
		{"no postgres, explicitly not required", noPG, "0", true},
		{"broken postgres, not required", broken, "", false},
		{"broken postgres, required", broken, "1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := mustSkip(tc.err, tc.requireDB); got != tc.want {
				t.Fatalf("mustSkip(%v, %q) = %v, want %v", tc.err, tc.requireDB, got, tc.want)
			}
		})
	}
}

func TestWithDatabase(t *testing.T) {
	for _, tc := range []struct {
		dsn, want string
	}{
		{"postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "postgres://postgres@127.0.0.1:5432/x_1?sslmode=disable"},
		{"postgresql://u:p%40ss@h/db", "postgresql://u:p%40ss@h/x_1"},
		{"postgres://u@h", "postgres://u@h/x_1"},
		{"host=/tmp dbname=postgres", "host=/tmp dbname=postgres dbname=x_1"},
	} {
		got, err := withDatabase(tc.dsn, "x_1")
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("withDatabase(%q) = %q, want %q", tc.dsn, got, tc.want)
		}
		cfg, err := pgx.ParseConfig(got)
		if err != nil {
			t.Fatalf("parsing %q: %v", got, err)
		}
		if cfg.Database != "x_1" {
			t.Errorf("%q names database %q, want x_1", got, cfg.Database)
		}
	}
}

func TestCreatedAt(t *testing.T) {
	name := newName()
	got, ok := createdAt(name)
	if !ok || time.Since(got) > time.Minute {
		t.Fatalf("createdAt(%q) = %v, %v", name, got, ok)
	}
	if got, ok := createdAt(name + "_tpl"); !ok || time.Since(got) > time.Minute {
		t.Fatalf("createdAt of a template name = %v, %v", got, ok)
	}
	for _, other := range []string{"postgres", "sweeper_t_x_1", "sweeper_tests"} {
		if _, ok := createdAt(other); ok {
			t.Errorf("createdAt(%q) claims a database that is not ours", other)
		}
	}
}
