// Package devmode is `sweeper dev`: a throwaway PostgreSQL, a demo ledger
// with a live workload, and the daemon sweeping it on a fast schedule, so a
// newcomer sees the whole product run with one command. Everything it starts
// is removed when its context ends (Ctrl-C).
package devmode

import (
	"cmp"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/tasksweeper/sweeper/internal/auth"
	"github.com/tasksweeper/sweeper/internal/config"
	"github.com/tasksweeper/sweeper/internal/daemon"
	"github.com/tasksweeper/sweeper/internal/pgserver"
	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/migrations"
	"github.com/tasksweeper/sweeper/sweep"
)

// The demo's pace: fast enough to watch.
const (
	Schedule         = "@every 2s"
	HeartbeatTimeout = 15 * time.Second
	HTTPListen       = "127.0.0.1:9090"
	APIListen        = "127.0.0.1:8080"
	workerTick       = time.Second
)

// Run starts the demo and blocks until ctx is done, then removes everything
// it created. Sweep summaries go to out; logs go to log.
func Run(ctx context.Context, out io.Writer, log *zap.Logger) error {
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	say("sweeper dev: starting a throwaway PostgreSQL...")
	// This machine's PostgreSQL binaries only: the binary links no Docker
	// client (see pgserver.Options.Docker).
	srv, err := pgserver.Start(ctx, pgserver.Options{
		Kinds: []pgserver.Kind{pgserver.KindLocal},
		Logf:  func(f string, a ...any) { log.Debug(fmt.Sprintf(f, a...)) },
	})
	if err != nil {
		return fmt.Errorf("starting PostgreSQL: %w", err)
	}
	defer func() {
		if err := srv.Close(); err != nil {
			log.Warn("removing PostgreSQL", zap.Error(err))
		}
		say("sweeper dev: removed the throwaway database; bye")
	}()

	dbURL, dropDB, err := createDatabase(ctx, srv.URL)
	if err != nil {
		return err
	}
	defer dropDB()
	say("sweeper dev: PostgreSQL (%s) ready; migrating and seeding the demo ledger...", srv.Kind)
	if err := migrations.Up(ctx, dbURL); err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("connecting to the demo database: %w", err)
	}
	defer pool.Close()
	live, err := seed(ctx, pool)
	if err != nil {
		return err
	}

	cfg := config.Default()
	cfg.Database.URL = dbURL
	cfg.Sweep.Schedule = Schedule
	cfg.Sweep.HeartbeatTimeout = HeartbeatTimeout
	cfg.Log.Format = config.LogFormatConsole
	cfg.ShutdownGrace = 10 * time.Second
	cfg.HTTP.Listen = HTTPListen
	if ln, err := net.Listen("tcp", HTTPListen); err != nil {
		cfg.HTTP.Listen = "127.0.0.1:0"
	} else {
		_ = ln.Close()
	}
	cfg.API.Listen = freeAddr(APIListen)
	demoToken, err := auth.NewStore(pool).Create(ctx, "demo", auth.RoleAdmin, "")
	if err != nil {
		return err
	}
	say("sweeper dev: %d delegations seeded; a simulated fleet heartbeats %d of them, completes some, and lets some go silent.",
		seededTotal, len(live))
	say("sweeper dev: sweeping %s with heartbeat_timeout %s; metrics on http://%s/metrics. Ctrl-C to stop and clean up.",
		Schedule, HeartbeatTimeout, cfg.HTTP.Listen)
	say("sweeper dev: the demo database is %s; %s", config.DisplayDSN(dbURL), psqlCommand(dbURL))
	say("sweeper dev: ledger API on http://%s with the demo admin token (throwaway, like the database):", cfg.API.Listen)
	say("  curl -sS -H 'Authorization: Bearer %s' 'http://%s/v1/events?to_status=stuck&wait=30s'", demoToken, cfg.API.Listen)
	say("sweeper dev: console on http://%s/ (sign in with the same token)", cfg.API.Listen)

	var wg sync.WaitGroup
	wctx, stopWorkers := context.WithCancel(ctx)
	wg.Go(func() { simulateFleet(wctx, pool, live, log) })
	err = daemon.Run(ctx, cfg, daemon.Options{
		Logger: log,
		OnRun: func(res sweep.Result, err error) {
			stamp := time.Now().Format("15:04:05")
			if err != nil {
				say("%s sweep failed: %v", stamp, err)
				return
			}
			say("%s sweep: marked %d stuck (heartbeat_timeout %d, deadline_exceeded %d, stalled %d, queue_timeout %d, start_timeout %d) in %d batches, %s; %d in flight",
				stamp, res.Swept, res.SweptHeartbeatTimeout, res.SweptDeadlineExceeded,
				res.SweptStalled, res.SweptQueueTimeout, res.SweptStartTimeout, res.Batches,
				res.Duration.Round(time.Millisecond), res.InFlight)
		},
	})
	stopWorkers()
	wg.Wait()
	return err
}

// psqlCommand returns the psql command line that connects to the database
// at dbURL, without its password, which psql asks for if the server wants
// one (a server named by SWEEPER_TEST_DATABASE_URL may).
func psqlCommand(dbURL string) string {
	u, err := url.Parse(dbURL)
	if err != nil {
		return "psql (the URL does not parse)"
	}
	return fmt.Sprintf("psql -h %s -p %s -U %s %s", u.Hostname(), cmp.Or(u.Port(), "5432"), u.User.Username(), strings.TrimPrefix(u.Path, "/"))
}

// freeAddr returns addr when it can be listened on, else a free loopback
// port, so the demo can print where it serves.
func freeAddr(addr string) string {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return addr
		}
	}
	defer ln.Close()
	return ln.Addr().String()
}

// createDatabase makes a database of its own on the server and returns its
// URL and a function that drops it.
func createDatabase(ctx context.Context, serverURL string) (string, func(), error) {
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return "", nil, fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	defer conn.Close(ctx)
	suffix := make([]byte, 4)
	_, _ = crand.Read(suffix)
	name := "sweeper_dev_" + hex.EncodeToString(suffix)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", nil, fmt.Errorf("creating demo database: %w", err)
	}
	u, err := url.Parse(serverURL)
	if err != nil {
		return "", nil, fmt.Errorf("parsing server URL: %w", err)
	}
	u.Path = "/" + name
	drop := func() {
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if c, err := pgx.Connect(dctx, serverURL); err == nil {
			_, _ = c.Exec(dctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			_ = c.Close(dctx)
		}
	}
	return u.String(), drop, nil
}

const seededTotal = 6000

// seed writes the demo ledger: history in every terminal status, work queued
// and dispatched (some past its deadline), and work in progress (some with
// heartbeats long gone). It returns the ids the simulated fleet keeps alive.
func seed(ctx context.Context, pool *pgxpool.Pool) ([]string, error) {
	_, err := pool.Exec(ctx, `
		INSERT INTO delegations (delegation_id, caller_id, callee_id, task_preview, status, last_heartbeat, deadline, created_at)
		SELECT 'demo-' || g,
		       (ARRAY['billing', 'search', 'support-bot', 'etl'])[1 + g % 4],
		       (ARRAY['invoice-agent', 'indexer', 'llm-worker', 'pdf-renderer', 'mailer'])[1 + g % 5],
		       'demo task #' || g,
		       CASE WHEN g <= 1500 THEN 'completed'
		            WHEN g <= 2100 THEN 'failed'
		            WHEN g <= 2300 THEN 'stuck'
		            WHEN g <= 3100 THEN 'queued'
		            WHEN g <= 3600 THEN 'dispatched'
		            ELSE 'in_progress' END,
		       CASE WHEN g > 3600 AND g <= 3900 THEN now() - interval '1 hour'
		            WHEN g > 3600 THEN now() END,
		       CASE WHEN g > 2300 AND g % 10 = 0 AND g <= 3600 THEN now() - interval '5 minutes'
		            ELSE now() + interval '6 hours' END,
		       now() - make_interval(secs => g)
		FROM generate_series(1, $1::int) g`, seededTotal)
	if err != nil {
		return nil, fmt.Errorf("seeding demo ledger: %w", err)
	}
	rows, err := pool.Query(ctx, `SELECT delegation_id FROM delegations WHERE status = 'in_progress' AND last_heartbeat > now() - interval '1 minute'`)
	if err != nil {
		return nil, fmt.Errorf("reading demo ledger: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// simulateFleet plays the callees: every tick it heartbeats the live tasks in
// one batch, completes or fails a few, lets a few go silent (they will be
// swept after the timeout), and takes on new work.
func simulateFleet(ctx context.Context, pool *pgxpool.Pool, live []string, log *zap.Logger) {
	l := ledger.New(pool)
	t := time.NewTicker(workerTick)
	defer t.Stop()
	next := seededTotal
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		kept := live[:0]
		for _, id := range live {
			var err error
			switch r := rand.IntN(1000); {
			case r < 8:
				_, err = l.SetStatus(ctx, id, ledger.StatusCompleted, ledger.Change{Actor: "demo-fleet", Result: "done"})
			case r < 10:
				_, err = l.SetStatus(ctx, id, ledger.StatusFailed, ledger.Change{Actor: "demo-fleet", Error: "simulated failure"})
			case r < 14:
				// The worker dies silently: no more heartbeats.
			default:
				kept = append(kept, id)
			}
			if err != nil && !errors.Is(err, context.Canceled) {
				log.Warn("demo fleet", zap.Error(err))
			}
		}
		live = kept
		for range 15 {
			next++
			id := fmt.Sprintf("demo-%d", next)
			_, err := l.Insert(ctx, ledger.NewDelegation{
				DelegationID: id, CallerID: "billing", CalleeID: "llm-worker",
				TaskPreview: "fresh demo task", Status: ledger.StatusInProgress,
			})
			if err != nil {
				continue
			}
			live = append(live, id)
		}
		notLive, err := l.HeartbeatMany(ctx, live)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("demo fleet heartbeat", zap.Error(err))
			}
			continue
		}
		// Workers whose task was marked stuck learn it here and stop.
		if len(notLive) > 0 {
			dead := map[string]bool{}
			for _, id := range notLive {
				dead[id] = true
			}
			kept := live[:0]
			for _, id := range live {
				if !dead[id] {
					kept = append(kept, id)
				}
			}
			live = kept
		}
	}
}
