package daemon_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap/zaptest"

	"github.com/tasksweeper/sweeper/internal/config"
	"github.com/tasksweeper/sweeper/internal/daemon"
	"github.com/tasksweeper/sweeper/internal/pgserver"
	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/migrations"
	"github.com/tasksweeper/sweeper/sweep"
)

// runOutcome is one run's error, as the daemon reported it.
type runOutcome struct{ err error }

// TestReadyFollowsRunsWithoutProbes: a daemon run as under systemd (no HTTP
// server, so nothing ever requests /readyz) shows sweeper_ready 1 after its
// first successful run, 0 after a run while PostgreSQL is down, and 1 again
// after a run once it is back. Before the fix the gauge only moved on a
// /readyz request and stayed 0 throughout.
func TestReadyFollowsRunsWithoutProbes(t *testing.T) {
	t.Parallel()
	srv := testdb.StartServer(t, pgserver.Options{Kinds: []pgserver.Kind{pgserver.KindLocal}})
	ctx := context.Background()
	dsn := databaseOn(t, srv.URL, "ready")
	if err := migrations.Up(ctx, dsn); err != nil {
		t.Fatal(err)
	}

	cfg := config.Default()
	cfg.Database.URL = dsn
	cfg.HTTP.Listen = "" // no probes
	cfg.Sweep.Schedule = "@every 1s"
	metrics := daemon.NewMetrics()
	runs := make(chan runOutcome, 100)
	ready := make(chan struct{})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- daemon.Run(rctx, cfg, daemon.Options{
			Logger:  zaptest.NewLogger(t),
			Metrics: metrics,
			Ready:   ready,
			OnRun:   func(_ sweep.Result, err error) { runs <- runOutcome{err} },
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()

	// The gauge is read once the run has reported (OnRun is called after
	// the daemon's own bookkeeping).
	waitRun(t, runs, true)
	if got := gauge(t, metrics, "sweeper_ready"); got != 1 {
		t.Fatalf("sweeper_ready = %v after a successful run, want 1", got)
	}

	// The sweeper's first run may come before the services started after
	// it (the webhook deliverer connects its listener last): a kill before
	// those are up fails the daemon's start, not a run.
	select {
	case <-ready:
	case err := <-done:
		done <- err // for the deferred check
		t.Fatalf("Run ended before the daemon started: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("the daemon did not start within a minute")
	}
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	waitRun(t, runs, false)
	if got := gauge(t, metrics, "sweeper_ready"); got != 0 {
		t.Fatalf("sweeper_ready = %v after a run with PostgreSQL down, want 0", got)
	}

	sctx, scancel := context.WithTimeout(ctx, 2*time.Minute)
	defer scancel()
	if err := srv.Restart(sctx); err != nil {
		t.Fatal(err)
	}
	waitRun(t, runs, true)
	if got := gauge(t, metrics, "sweeper_ready"); got != 1 {
		t.Fatalf("sweeper_ready = %v after PostgreSQL came back, want 1", got)
	}
}

// waitRun waits for the next run that succeeded (ok) or failed (!ok),
// skipping the others (a run in flight at the kill or the restart).
func waitRun(t *testing.T, runs <-chan runOutcome, ok bool) {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case r := <-runs:
			if (r.err == nil) == ok {
				return
			}
		case <-timeout:
			t.Fatalf("no run with ok=%v within a minute", ok)
		}
	}
}

// gauge reads a gauge without labels from the daemon's registry, as a
// scrape of /metrics would.
func gauge(t *testing.T, m *daemon.Metrics, name string) float64 {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}

// databaseOn creates database name on the server of adminURL and returns
// its URL.
func databaseOn(t *testing.T, adminURL, name string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(adminURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}
