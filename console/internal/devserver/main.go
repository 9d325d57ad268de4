// Command devserver runs the console on a throwaway PostgreSQL with a
// seeded ledger, a real sweeper on a one-second schedule and one token of
// each role: what the browser tests (console/browser) drive.
//
// It prints one JSON line to stdout when ready:
//
//	{"url":"http://127.0.0.1:PORT","control":"http://127.0.0.1:PORT2","tokens":{"admin":"swp_...",...}}
//
// The control listener (a second port, never part of the product) answers
// the tests' questions from the database directly, with plain COUNT(*)
// queries independent of the console's own: GET /counts. POST
// /stuck-soon?id=ID inserts an in_progress delegation whose deadline passes
// in a second, for the live page's test. It stops on SIGINT/SIGTERM or
// when stdin closes, and removes the database.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/tasksweeper/sweeper/console"
	"github.com/tasksweeper/sweeper/internal/auth"
	"github.com/tasksweeper/sweeper/internal/pgserver"
	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/migrations"
	"github.com/tasksweeper/sweeper/sweep"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "console address")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { // the parent closing stdin also stops us
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop()
	}()
	if err := run(ctx, *listen); err != nil {
		fmt.Fprintln(os.Stderr, "devserver:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, listen string) error {
	srv, err := pgserver.Start(ctx, pgserver.Options{Kinds: []pgserver.Kind{pgserver.KindEnv, pgserver.KindLocal}})
	if err != nil {
		return err
	}
	defer srv.Close()
	dbURL, err := createDatabase(ctx, srv.URL)
	if err != nil {
		return err
	}
	if err := migrations.Up(ctx, dbURL); err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := seed(ctx, pool); err != nil {
		return err
	}
	tokens := auth.NewStore(pool)
	toks := map[string]string{}
	for _, t := range []struct {
		name      string
		role      auth.Role
		principal string
	}{
		{"ops-admin", auth.RoleAdmin, ""}, {"dashboard", auth.RoleReader, ""},
		{"billing-svc", auth.RoleCaller, "billing"}, {"indexer-pool", auth.RoleWorker, "indexer"},
	} {
		tok, err := tokens.Create(ctx, t.name, t.role, t.principal)
		if err != nil {
			return err
		}
		toks[string(t.role)] = tok
	}

	runs := console.NewRunTracker()
	sw, err := sweep.New(pool, sweep.Config{
		Schedule: "@every 1s", HeartbeatTimeout: 10 * time.Minute,
		OnRun: func(_ sweep.Result, err error) { runs.RunDone(err) },
	})
	if err != nil {
		return err
	}
	log, _ := zap.NewDevelopment()
	h, err := console.NewHandler(console.Config{Pool: pool, HeartbeatTimeout: 10 * time.Minute, Runs: runs.Runs, Logger: log})
	if err != nil {
		return err
	}
	defer h.Close()
	if err := sw.Start(ctx); err != nil {
		return err
	}
	defer sw.Stop()

	cln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	ctlLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	consoleSrv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	ctlSrv := &http.Server{Handler: control(pool), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- consoleSrv.Serve(cln) }()
	go func() { errc <- ctlSrv.Serve(ctlLn) }()

	ready, _ := json.Marshal(map[string]any{
		"url": "http://" + cln.Addr().String(), "control": "http://" + ctlLn.Addr().String(), "tokens": toks,
	})
	fmt.Println(string(ready))

	select {
	case <-ctx.Done():
	case err := <-errc:
		return err
	}
	h.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = consoleSrv.Shutdown(sctx)
	_ = ctlSrv.Shutdown(sctx)
	return nil
}

func createDatabase(ctx context.Context, serverURL string) (string, error) {
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	name := fmt.Sprintf("console_dev_%d", time.Now().UnixNano())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", err
	}
	cfg, err := pgx.ParseConfig(serverURL)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Host, cfg.Port, name), nil
}

// seed writes a small fleet: history in every status, work in flight for
// four callers, rows that became stuck over the last hours (events dated
// back), and one row of hostile text.
func seed(ctx context.Context, pool *pgxpool.Pool) error {
	l := ledger.New(pool)
	callers := []string{"billing", "search", "support-bot", "etl"}
	callees := []string{"invoice-agent", "indexer", "llm-worker", "pdf-renderer"}
	for i := range 240 {
		st := []ledger.Status{ledger.StatusQueued, ledger.StatusDispatched, ledger.StatusInProgress}[i%3]
		_, err := l.Insert(ctx, ledger.NewDelegation{
			DelegationID: fmt.Sprintf("d-%04d", i), CallerID: callers[i%4], CalleeID: callees[(i/4)%4],
			TaskPreview: fmt.Sprintf("task %d: summarise ticket #%d", i, 1000+i), Status: st, Timeout: 6 * time.Hour,
		})
		if err != nil {
			return err
		}
		switch {
		case i%10 == 0:
			_, err = l.SetStatus(ctx, fmt.Sprintf("d-%04d", i), ledger.StatusCompleted, ledger.Change{Actor: "seed", Result: "ok"})
		case i%10 == 1:
			_, err = l.SetStatus(ctx, fmt.Sprintf("d-%04d", i), ledger.StatusFailed, ledger.Change{Actor: "seed", Error: "worker crashed", Reason: "exit 137"})
		}
		if err != nil {
			return err
		}
	}
	// Stuck over the last five hours, by the sweep's two reasons: the rows
	// are marked as the sweep does, then their events are dated back (the
	// one sanctioned rewrite of the append-only log, as in a migration).
	_, err := pool.Exec(ctx, `
		INSERT INTO delegations (delegation_id, caller_id, callee_id, task_preview, status, last_heartbeat, stuck_reason, created_at)
		SELECT 'old-stuck-' || g, (ARRAY['billing', 'search', 'etl'])[1 + g % 3], 'llm-worker', 'long job ' || g,
		       'stuck', now() - make_interval(mins => g * 7), (ARRAY['heartbeat_timeout', 'deadline_exceeded'])[1 + g % 2],
		       now() - make_interval(mins => g * 7 + 30)
		FROM generate_series(40, 1, -1) g`) // oldest first, as a sweep would have written them
	if err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, `ALTER TABLE delegation_events DISABLE TRIGGER delegation_events_append_only`); err != nil {
		return err
	}
	_, err = pool.Exec(ctx, `
		UPDATE delegation_events e SET at = d.last_heartbeat, actor = 'sweeper'
		FROM delegations d WHERE d.delegation_id = e.delegation_id AND d.delegation_id LIKE 'old-stuck-%'`)
	if _, err2 := pool.Exec(ctx, `ALTER TABLE delegation_events ENABLE TRIGGER delegation_events_append_only`); err == nil {
		err = err2
	}
	if err != nil {
		return err
	}
	_, err = l.Insert(ctx, ledger.NewDelegation{
		DelegationID: "hostile-<script>alert(1)</script>", CallerID: "search", CalleeID: "llm-worker\u202Egnp.exe",
		TaskPreview: "<img src=x onerror=alert(1)> zero\u200bwidth " + longLine(),
		Status:      ledger.StatusInProgress,
	})
	return err
}

func longLine() string { return strings.Repeat("W", 1500) }

// control answers the browser tests from the database, with queries of its
// own (plain counts, not the console's statements).
func control(pool *pgxpool.Pool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /counts", func(w http.ResponseWriter, r *http.Request) {
		out := map[string]int64{}
		rows, err := pool.Query(r.Context(), `
			SELECT 'in_flight_' || status, count(*) FROM delegations
			WHERE status IN ('queued', 'dispatched', 'in_progress') GROUP BY status
			UNION ALL
			SELECT 'in_flight', count(*) FROM delegations WHERE status IN ('queued', 'dispatched', 'in_progress')
			UNION ALL
			SELECT 'stuck_day_' || reason, count(*) FROM delegation_events
			WHERE to_status = 'stuck' AND at > now() - interval '1 day' GROUP BY reason
			UNION ALL
			SELECT 'stuck_hour_' || reason, count(*) FROM delegation_events
			WHERE to_status = 'stuck' AND at > now() - interval '1 hour' GROUP BY reason
			UNION ALL
			SELECT 'retries_day', count(*) FROM delegations
			WHERE retry_of IS NOT NULL AND created_at > now() - interval '1 day'
			UNION ALL
			SELECT 'queued_' || callee_id, count(*) FROM delegations WHERE status = 'queued' GROUP BY callee_id`)
		if err == nil {
			var k string
			var n int64
			_, err = pgx.ForEachRow(rows, []any{&k, &n}, func() error { out[k] = n; return nil })
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_ = json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("POST /stuck-soon", func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("id")
		_, err := ledger.New(pool).Insert(r.Context(), ledger.NewDelegation{
			DelegationID: id, CallerID: "billing", CalleeID: "indexer", TaskPreview: "will miss its deadline",
			Status: ledger.StatusInProgress, Timeout: time.Second,
		})
		if err != nil {
			status := http.StatusInternalServerError
			if errors.Is(err, ledger.ErrInvalid) {
				status = http.StatusBadRequest
			}
			http.Error(w, err.Error(), status)
			return
		}
		w.WriteHeader(http.StatusCreated)
	})
	return mux
}
