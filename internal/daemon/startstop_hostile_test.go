package daemon_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/tasksweeper/sweeper/internal/config"
	"github.com/tasksweeper/sweeper/internal/daemon"
	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/sweep"
)

// TestMain runs the tests against a real PostgreSQL, then checks that no
// goroutine daemon.Run started (pool, scheduler, runs, HTTP server) outlived
// them.
func TestMain(m *testing.M) { os.Exit(testdb.MainCheckingLeaks(m)) }

// daemon.Run started and stopped many times, the stop coming at every stage
// of start-up and sweeping (before the pool connects, while it starts, once
// ready, mid-run, after runs), with and without HTTP, on a cron and on the
// adaptive schedule: each Run returns nil, and nothing keeps running.
func TestRunStartStopLeavesNothingRunning(t *testing.T) {
	db := testdb.New(t)
	// What runs now (the test's pool, the database server's helpers) is
	// not the daemon's.
	ignore := goleak.IgnoreCurrent()

	stops := []struct {
		name string
		wait stopAfter
	}{
		{"before start", nil},
		{"at once", func(<-chan struct{}, <-chan struct{}) {}},
		{"after a millisecond", func(<-chan struct{}, <-chan struct{}) { time.Sleep(time.Millisecond) }},
		{"once ready", func(ready <-chan struct{}, _ <-chan struct{}) { <-ready }},
		{"during the first run", func(ready <-chan struct{}, _ <-chan struct{}) { <-ready; time.Sleep(5 * time.Millisecond) }},
		{"after a run", func(ready <-chan struct{}, runs <-chan struct{}) { <-ready; <-runs }},
		{"after two runs", func(ready <-chan struct{}, runs <-chan struct{}) { <-ready; <-runs; <-runs }},
	}
	cycles := 0
	for _, schedule := range []string{"@every 1s", sweep.ScheduleAdaptive} {
		for _, stop := range stops {
			for _, listen := range []string{"", "127.0.0.1:0"} {
				// Rows going stale within seconds, so that runs have batches
				// to do when the stop comes, and the adaptive schedule wakes.
				if _, err := db.Pool.Exec(context.Background(), `INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat)
					SELECT $1 || g, 'c', 'w', 'in_progress', now() - make_interval(secs => g % 3) FROM generate_series(1, 500) AS g`,
					fmt.Sprintf("c%d-", cycles)); err != nil {
					t.Fatal(err)
				}
				cfg := config.Default()
				cfg.Database.URL = db.URL
				cfg.HTTP.Listen = listen
				cfg.Sweep.Schedule = schedule
				cfg.Sweep.BatchSize = 50 // the drain takes many batches: stops land mid-run
				cfg.Sweep.HeartbeatTimeout = time.Second
				cfg.ShutdownGrace = 30 * time.Second
				name := fmt.Sprintf("stop %s, listen %q, schedule %s", stop.name, listen, schedule)

				err := cycle(t, cfg, stop.wait)
				// Cancelled before the pool connected, Run reports the failed
				// connection; from then on, a stop is clean.
				if err != nil && stop.wait != nil && stop.name != "at once" && stop.name != "after a millisecond" {
					t.Errorf("%s: Run = %v", name, err)
				}
				cycles++
			}
		}
	}
	goleak.VerifyNone(t, ignore)
	t.Logf("%d start/stop cycles", cycles)
}

// stopAfter waits for the moment to stop the daemon: ready is closed when it
// serves and sweeps, runs receives one value per finished run.
type stopAfter func(ready <-chan struct{}, runs <-chan struct{})

// cycle runs the daemon until wait returns (nil wait: with a context
// cancelled from the start) and returns what Run returned.
func cycle(t *testing.T, cfg config.Config, wait stopAfter) error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if wait == nil {
		cancel()
	}
	ready := make(chan struct{})
	runs := make(chan struct{}, 100)
	done := make(chan error, 1)
	go func() {
		done <- daemon.Run(ctx, cfg, daemon.Options{
			Logger: zaptest.NewLogger(t),
			Ready:  ready,
			OnRun: func(sweep.Result, error) {
				select {
				case runs <- struct{}{}:
				default:
				}
			},
		})
	}()
	if wait != nil {
		waited := make(chan struct{})
		go func() { wait(ready, runs); close(waited) }()
		select {
		case <-waited:
		case err := <-done:
			t.Fatalf("Run returned before the stop: %v", err)
		case <-time.After(time.Minute):
			t.Fatal("no progress within a minute")
		}
		cancel()
	}
	select {
	case err := <-done:
		return err
	case <-time.After(time.Minute):
		t.Fatal("Run did not return within a minute of the stop")
		return nil
	}
}
