package daemon_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/tasksweeper/sweeper/internal/auth"
	"github.com/tasksweeper/sweeper/internal/config"
	"github.com/tasksweeper/sweeper/internal/daemon"
	"github.com/tasksweeper/sweeper/internal/pgserver"
	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/migrations"
	"github.com/tasksweeper/sweeper/sweep"
)

// pooledConfig is a configuration whose database.url goes through a fresh
// pgbouncer in transaction mode with one server connection, so that every
// client connection shares it.
func pooledConfig(t *testing.T, pooler string) (config.Config, *testdb.DB) {
	t.Helper()
	db := testdb.New(t)
	b := testdb.StartPgBouncer(t, pgserver.PgBouncerOptions{PoolSize: 1})
	cfg := config.Default()
	cfg.Database.URL = db.ViaPgBouncer(t, b)
	cfg.Database.Pooler = pooler
	cfg.Database.MaxConns = 4
	return cfg, db
}

// With the default exec mode, behind PgBouncer in transaction mode, the
// second client connection finds the first one's prepared statement on the
// shared server connection: 42P05, and the message names the key to set.
func TestPgBouncerDefaultModeFailsNamingTheKey(t *testing.T) {
	t.Parallel()
	cfg, _ := pooledConfig(t, config.PoolerNone)
	ctx := context.Background()
	pool, err := daemon.OpenPool(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	first, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Release()
	if _, err := migrations.ReadState(ctx, first); err != nil {
		t.Fatalf("first connection: %v", err)
	}
	// The pool hands EnsureSchema another client connection (first is held).
	err = daemon.EnsureSchema(ctx, pool, cfg, zaptest.NewLogger(t))
	var pgErr *pgconn.PgError
	var pe *daemon.PoolerError
	if !errors.As(err, &pgErr) || pgErr.Code != pgerrcode.DuplicatePreparedStatement || !errors.As(err, &pe) {
		t.Fatalf("EnsureSchema through pgbouncer in the default mode = %v, want SQLSTATE 42P05 as a *daemon.PoolerError", err)
	}
	if !strings.Contains(err.Error(), "set database.pooler: transaction, SWEEPER_DATABASE_POOLER=transaction") {
		t.Fatalf("error does not name the key to set: %v", err)
	}
}

// With database.pooler transaction the same steps work, and so do the
// sweep, the ledger's writes and status's snapshot, on connections that
// share one server connection.
func TestPgBouncerTransactionModeWorks(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"", "simple_protocol"} {
		t.Run("exec mode "+config.DatabaseConfig{Pooler: config.PoolerTransaction, QueryExecMode: mode}.ExecModeName(), func(t *testing.T) {
			t.Parallel()
			cfg, db := pooledConfig(t, config.PoolerTransaction)
			cfg.Database.QueryExecMode = mode
			ctx := context.Background()
			pool, err := daemon.OpenPool(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			first, err := pool.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := migrations.ReadState(ctx, first); err != nil {
				t.Fatalf("first connection: %v", err)
			}
			if err := daemon.EnsureSchema(ctx, pool, cfg, zaptest.NewLogger(t)); err != nil {
				t.Fatalf("EnsureSchema: %v", err)
			}
			first.Release()

			l := ledger.New(pool)
			for i := range 20 {
				if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: fmt.Sprintf("d%d", i), CallerID: "c", CalleeID: "w"}); err != nil {
					t.Fatalf("insert: %v", err)
				}
				if _, err := l.SetStatus(ctx, fmt.Sprintf("d%d", i), ledger.StatusInProgress, ledger.Change{Actor: "test"}); err != nil {
					t.Fatalf("transition: %v", err)
				}
			}
			// Half the rows go stale, as seen by the database clock.
			if _, err := db.Pool.Exec(ctx, `UPDATE delegations SET last_heartbeat = now() - interval '1 hour'
				WHERE delegation_id IN ('d0','d1','d2','d3','d4','d5','d6','d7','d8','d9')`); err != nil {
				t.Fatal(err)
			}
			scfg := daemon.SweepConfig(cfg, zaptest.NewLogger(t))
			scfg.BatchSize = 3
			s, err := sweep.New(pool, scfg)
			if err != nil {
				t.Fatal(err)
			}
			res, err := s.RunOnce(ctx)
			if err != nil || res.Swept != 10 || res.SweptHeartbeatTimeout != 10 {
				t.Fatalf("sweep through pgbouncer: %+v, %v", res, err)
			}
			snap, err := sweep.Inspect(ctx, pool, cfg.Sweep.HeartbeatTimeout)
			if err != nil || snap.Total != 20 {
				t.Fatalf("Inspect through pgbouncer: %+v, %v", snap, err)
			}
			var events int
			if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM delegation_events WHERE to_status = 'stuck'`).Scan(&events); err != nil || events != 10 {
				t.Fatalf("stuck events = %d, %v; want 10", events, err)
			}
		})
	}
}

// migrate.auto behind a transaction pooler needs database.migrate_url.
func TestPgBouncerMigrateNeedsMigrateURL(t *testing.T) {
	t.Parallel()
	cfg, _ := pooledConfig(t, config.PoolerTransaction)
	empty := testdb.NewEmpty(t)
	b := testdb.StartPgBouncer(t, pgserver.PgBouncerOptions{})
	cfg.Database.URL = empty.ViaPgBouncer(t, b)
	cfg.Migrate.Auto = true
	ctx := context.Background()
	pool, err := daemon.OpenPool(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	err = daemon.EnsureSchema(ctx, pool, cfg, zaptest.NewLogger(t))
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Key != "database.migrate_url" {
		t.Fatalf("EnsureSchema with migrate.auto behind a transaction pooler = %v, want an error naming database.migrate_url", err)
	}
	if st, err := migrations.ReadState(ctx, empty.Pool); err != nil || st.Version != 0 || st.Dirty {
		t.Fatalf("schema after the refusal: %+v, %v; want untouched", st, err)
	}
	cfg.Database.MigrateURL = empty.URL // direct
	if err := daemon.EnsureSchema(ctx, pool, cfg, zaptest.NewLogger(t)); err != nil {
		t.Fatalf("EnsureSchema with database.migrate_url: %v", err)
	}
	if st, err := migrations.ReadState(ctx, pool); err != nil || !st.Current() {
		t.Fatalf("schema after migrating: %+v, %v", st, err)
	}
}

// The API through pgbouncer: writes and reads work, and a feed long poll
// is woken both by polling (no database.listen_url) and by LISTEN on
// database.listen_url.
func TestPgBouncerAPI(t *testing.T) {
	t.Parallel()
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("listen_url=%v", direct), func(t *testing.T) {
			t.Parallel()
			cfg, db := pooledConfig(t, config.PoolerTransaction)
			if direct {
				cfg.Database.ListenURL = db.URL
			}
			cfg.API.Listen = "127.0.0.1:0"
			ctx := context.Background()
			pool, err := daemon.OpenPool(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			tok, err := auth.NewStore(pool).Create(ctx, "admin", auth.RoleAdmin, "")
			if err != nil {
				t.Fatal(err)
			}
			s, err := daemon.StartAPI(ctx, cfg, pool, prometheus.NewRegistry(), zaptest.NewLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := s.Shutdown(ctx); err != nil {
					t.Error(err)
				}
			}()
			do := func(method, path, body string) (int, string) {
				req, _ := http.NewRequest(method, "http://"+s.Addr()+path, strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+tok)
				req.Header.Set("Content-Type", "application/json")
				res, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer res.Body.Close()
				b, _ := io.ReadAll(res.Body)
				return res.StatusCode, string(b)
			}
			// A long poll from the start of the feed waits (nothing yet);
			// the insert below wakes it.
			type page struct {
				Events []json.RawMessage `json:"events"`
			}
			got := make(chan page, 1)
			go func() {
				_, body := do("GET", "/v1/events?after=0&wait=20s", "")
				var p page
				_ = json.Unmarshal([]byte(body), &p)
				got <- p
			}()
			began := time.Now()
			if code, body := do("POST", "/v1/delegations", `{"delegation_id":"api-1","caller_id":"c","callee_id":"w"}`); code != 201 {
				t.Fatalf("insert through the API: %d %s", code, body)
			}
			if code, body := do("GET", "/v1/delegations/api-1", ""); code != 200 || !strings.Contains(body, `"api-1"`) {
				t.Fatalf("get through the API: %d %s", code, body)
			}
			select {
			case p := <-got:
				if len(p.Events) == 0 {
					t.Fatalf("long poll answered without events")
				}
				t.Logf("long poll answered %v after the insert", time.Since(began).Round(time.Millisecond))
			case <-time.After(15 * time.Second):
				t.Fatal("long poll not woken within 15s")
			}
		})
	}
}
