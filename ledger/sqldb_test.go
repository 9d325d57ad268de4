package ledger_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	_ "github.com/lib/pq"              // database/sql driver "postgres"

	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/ledger"
)

// envLedgerDriver names the database/sql driver that newLedger gives its
// ledgers ("postgres" for lib/pq, "pgx" for pgx's stdlib); unset, pgx.
const envLedgerDriver = "SWEEPER_TEST_LEDGER_DRIVER"

// sqlDrivers are the database/sql drivers NewSQL is tested with.
var sqlDrivers = []string{"postgres", "pgx"}

// TestLedgerOverDatabaseSQL runs every other test of this package again,
// with newLedger's ledgers over database/sql (ledger.NewSQL on a *sql.DB),
// once per driver: the same tests of the same API must pass over lib/pq
// and pgx's stdlib as over a pgx pool.
func TestLedgerOverDatabaseSQL(t *testing.T) {
	if os.Getenv(envLedgerDriver) != "" {
		t.Skip("already running over database/sql")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, driver := range sqlDrivers {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(exe, "-test.count=1", "-test.skip", "^TestLedgerOverDatabaseSQL$", "-test.v")
			cmd.Env = append(os.Environ(), envLedgerDriver+"="+driver)
			out, err := cmd.CombinedOutput()
			passed := strings.Count(string(out), "--- PASS")
			if err != nil {
				t.Fatalf("tests over %s failed: %v\n%s", driver, err, out)
			}
			if passed < 40 || strings.Contains(string(out), "--- SKIP") {
				t.Fatalf("over %s: %d tests passed (want at least 40, none skipped):\n%s", driver, passed, out)
			}
			t.Logf("over %s: %d tests and subtests passed", driver, passed)
		})
	}
}

// sqlOpen opens db's database through a database/sql driver.
func sqlOpen(t *testing.T, driver string, db *testdb.DB) *sql.DB {
	t.Helper()
	s, err := sql.Open(driver, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestNewSQLInsideTheCallersTransaction: an Insert through NewSQL on the
// caller's *sql.Tx is part of it: rolled back with it, committed with it,
// and its audit event names the actor the ledger set in that transaction.
func TestNewSQLInsideTheCallersTransaction(t *testing.T) {
	t.Parallel()
	for _, driver := range sqlDrivers {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			db := testdb.New(t)
			s := sqlOpen(t, driver, db)
			ctx := context.Background()
			if _, err := s.ExecContext(ctx, `CREATE TABLE invoices (id text PRIMARY KEY)`); err != nil {
				t.Fatal(err)
			}
			for _, commit := range []bool{false, true} {
				id := "rolled-back"
				if commit {
					id = "committed"
				}
				tx, err := s.BeginTx(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := tx.ExecContext(ctx, `INSERT INTO invoices VALUES ($1)`, id); err != nil {
					t.Fatal(err)
				}
				res, err := ledger.NewSQL(tx).Insert(ctx, ledger.NewDelegation{
					DelegationID: id, CallerID: "billing", CalleeID: "renderer", Actor: "billing-svc",
					HeartbeatTimeout: 90 * time.Second,
				})
				if err != nil || res.Outcome != ledger.Inserted {
					t.Fatalf("Insert in tx: %+v, %v", res, err)
				}
				// Visible inside the transaction, not outside it yet.
				if d, err := ledger.NewSQL(tx).Get(ctx, id); err != nil || d.CallerID != "billing" {
					t.Fatalf("Get in tx: %+v, %v", d, err)
				}
				if n := countRows(t, db.Pool, `SELECT count(*) FROM delegations WHERE delegation_id = $1`, id); n != 0 {
					t.Fatalf("uncommitted row seen outside the transaction")
				}
				if commit {
					err = tx.Commit()
				} else {
					err = tx.Rollback()
				}
				if err != nil {
					t.Fatal(err)
				}
				want := 0
				if commit {
					want = 1
				}
				for _, table := range []string{"delegations", "delegation_events"} {
					if n := countRows(t, db.Pool, `SELECT count(*) FROM `+table+` WHERE delegation_id = $1`, id); n != want {
						t.Fatalf("%s: %d rows of %s after commit=%v, want %d", driver, n, table, commit, want)
					}
				}
			}
			l := ledger.New(db.Pool)
			evs, err := l.Events(ctx, "committed")
			if err != nil || len(evs) != 1 || evs[0].Actor != "billing-svc" {
				t.Fatalf("events: %+v, %v", evs, err)
			}
			d, err := ledger.NewSQL(s).Get(ctx, "committed")
			if err != nil || d.HeartbeatTimeout == nil || *d.HeartbeatTimeout != 90*time.Second {
				t.Fatalf("Get over %s: %+v, %v", driver, d, err)
			}
		})
	}
}

// TestNewSQLOnAConnAndErrors: a *sql.Conn works (the two-statement writes
// run in a transaction the ledger begins on it), and driver errors map to
// the ledger's: a refused CHECK is ErrInvalid, a missing row ErrNotFound, a
// unique violation ErrConflict, whatever the driver.
func TestNewSQLOnAConnAndErrors(t *testing.T) {
	t.Parallel()
	for _, driver := range sqlDrivers {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			db := testdb.New(t)
			s := sqlOpen(t, driver, db)
			ctx := context.Background()
			conn, err := s.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			l := ledger.NewSQL(conn)
			if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: "a", CallerID: "c", CalleeID: "w"}); err != nil {
				t.Fatal(err)
			}
			res, err := l.SetStatus(ctx, "a", ledger.StatusInProgress, ledger.Change{Actor: "worker-1", Reason: "picked up", Detail: map[string]int{"n": 1}})
			if err != nil || res.Outcome != ledger.OutcomeApplied {
				t.Fatalf("SetStatus: %+v, %v", res, err)
			}
			evs, err := l.Events(ctx, "a")
			if err != nil || len(evs) != 2 || evs[1].Actor != "worker-1" || evs[1].Reason != "picked up" || string(evs[1].Detail) != `{"n": 1}` {
				t.Fatalf("events: %+v, %v", evs, err)
			}
			// The session is clean afterwards: the actor was transaction-local.
			var actor sql.NullString
			if err := conn.QueryRowContext(ctx, `SELECT current_setting('sweeper.actor', true)`).Scan(&actor); err != nil {
				t.Fatal(err)
			}
			if actor.String != "" {
				t.Fatalf("sweeper.actor left set on the session: %q", actor.String)
			}
			if _, err := l.Get(ctx, "missing"); !errors.Is(err, ledger.ErrNotFound) {
				t.Fatalf("Get missing: %v", err)
			}
			// A value the database refuses (its SQLSTATE is a data
			// exception) is ErrInvalid, and nothing is written.
			_, err = l.Insert(ctx, ledger.NewDelegation{DelegationID: "b", CallerID: "c", CalleeID: "w",
				Deadline: time.Date(-5000, 1, 1, 0, 0, 0, 0, time.UTC)})
			if !errors.Is(err, ledger.ErrInvalid) {
				t.Fatalf("Insert with a deadline in 5001 BC: %v", err)
			}
			if _, err := l.Get(ctx, "b"); !errors.Is(err, ledger.ErrNotFound) {
				t.Fatalf("refused insert wrote a row: %v", err)
			}
			if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: "a", CallerID: "other", CalleeID: "w"}); !errors.Is(err, ledger.ErrConflict) {
				t.Fatalf("Insert under another caller: %v", err)
			}
			if _, err := conn.ExecContext(ctx, `INSERT INTO delegations (delegation_id, caller_id, callee_id, task_preview, status) VALUES ('x', 'c', 'w', '', 'queued')`); err != nil {
				t.Fatal(err)
			}
			hb, err := l.Heartbeat(ctx, "a")
			if err != nil || !hb.Live || hb.Status != ledger.StatusInProgress {
				t.Fatalf("Heartbeat: %+v, %v", hb, err)
			}
		})
	}
}
