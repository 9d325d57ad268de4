package bench

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/console"
	"github.com/tasksweeper/sweeper/internal/auth"
	"github.com/tasksweeper/sweeper/internal/pgserver"
	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/migrations"
	"github.com/tasksweeper/sweeper/retention"
	"github.com/tasksweeper/sweeper/sweep"
)

// The steady state: a simulated month of work with retention on, on a
// server of its own whose clock is advanced a day per round.
//
// Time is compressed by moving the database's clock, the only clock the
// ledger, the sweeper and the pruner judge by: the server runs under
// libfaketime (LD_PRELOAD), whose offset the bench rewrites at the start of
// each round ("+<day>d"), so now(), every DEFAULT now(), the triggers'
// updated_at (hence finished_at) and the sweeper's and pruner's cut-offs all
// move a day forward at once. No row is written with a time of the bench's
// choosing, no trigger is off: each day's rows are inserted, moved to
// in_progress, beaten and finished by ordinary writers, and the database
// dates them. The monotonic clock is not faked (DONT_FAKE_MONOTONIC), so
// timeouts, latches and the durations measured stay real.
//
// Each round (one simulated day): advance the clock; the long-running rows
// beat (their workers are alive); the real sweep.Sweeper marks stuck the rows
// that stopped beating the day before and the queued rows past their
// deadline (exactly those, checked); the real retention.Pruner prunes with
// the scaled policy; the day's work is written; then the measurements:
// table + index size, nothing-eligible sweeps, and console pages.

// libfaketimePaths are where Debian's and other distributions' libfaketime
// packages install the library.
var libfaketimePaths = []string{
	"/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
	"/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
	"/usr/lib/faketime/libfaketime.so.1",
	"/usr/lib64/faketime/libfaketime.so.1",
	"/usr/local/lib/faketime/libfaketime.so.1",
}

// Defaults of SteadyConfig. The retentions are the default policy (30 days
// completed, 90 failed and stuck) scaled by 1/30, a day for a month. The
// rows reach their steady count once the longest retention has passed (day
// 4), the indexes a few days later: an index page empties only once every
// row of its key range is pruned, and is reused only after a vacuum frees
// it. Measured, the size stops growing about two longest retentions and two
// days in: day 14 with 2 and 6 days kept, day 7 with 1 and 3, before the end
// of the first third (day 10) that the size target compares the month's end
// with. 20k a day, because a prune of 10k rows a day falls just under the
// delegations table's own autovacuum trigger (10000 dead rows + 1%), which a
// real day's heartbeats would cross many times over: the space it frees
// then waits a day for a vacuum, and the size crept up all month (1.11x).
const (
	SteadyDaysDefault        = 30
	SteadyPerDayDefault      = 20_000
	SteadyLongRunningDefault = 1_000
	SteadySweepRunsDefault   = 20
	SteadyConsoleRunsDefault = 10
	SteadyCompletedDefault   = 1 * retention.Day
	SteadyFailedDefault      = 3 * retention.Day
	SteadyStuckDefault       = 3 * retention.Day
)

// Targets of the steady state.
const (
	// SteadySizeRatioTarget bounds the size at the end over the size at
	// the end of the first third.
	SteadySizeRatioTarget = 1.1
	// SteadyTimeRatioTarget bounds a last-third p50 over its first-third
	// p50 (sweep and console times "flat").
	SteadyTimeRatioTarget = 1.5
)

// Shares of each day's delegations, in per mille: completed, failed,
// abandoned in_progress (the sweeper marks them stuck, heartbeat timeout)
// and left queued (stuck next day, deadline exceeded); they add up to 1000.
const (
	shareCompleted = 850
	shareFailed    = 70
	shareAbandoned = 60
	shareQueued    = 20
)

// SteadyConfig configures the steady-state run. Zero values take the
// defaults above; Days 0 skips the run.
type SteadyConfig struct {
	// Days is the number of simulated days (rounds).
	Days int
	// PerDay is the delegations inserted each day.
	PerDay int
	// LongRunning rows stay in_progress all month, beating every day.
	LongRunning int
	// Completed, Failed and Stuck are the retention policy.
	Completed, Failed, Stuck time.Duration
	// SweepRuns is the nothing-eligible sweeps timed per round;
	// ConsoleRuns the loads of each console page timed per round.
	SweepRuns   int
	ConsoleRuns int
}

func (c *SteadyConfig) fill() {
	c.PerDay = or(c.PerDay, SteadyPerDayDefault)
	c.LongRunning = or(c.LongRunning, SteadyLongRunningDefault)
	c.Completed = or(c.Completed, SteadyCompletedDefault)
	c.Failed = or(c.Failed, SteadyFailedDefault)
	c.Stuck = or(c.Stuck, SteadyStuckDefault)
	c.SweepRuns = or(c.SweepRuns, SteadySweepRunsDefault)
	c.ConsoleRuns = or(c.ConsoleRuns, SteadyConsoleRunsDefault)
}

// SteadyRound is one simulated day.
type SteadyRound struct {
	Day int `json:"day"`
	// Completed and Failed are the day's delegations finished so; Left
	// those abandoned in progress or left queued, for the next day's sweep.
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
	Left      int `json:"left"`
	// Swept and Pruned are what the sweeper marked stuck and the pruner
	// deleted at the start of the day (PrunedEvents their events).
	Swept        int `json:"swept"`
	Pruned       int `json:"pruned"`
	PrunedEvents int `json:"pruned_events"`
	// PruneDuration is the pruner's pass.
	PruneDuration time.Duration `json:"prune_duration"`
	SteadyMeasures
	// VacuumWait is how long the round waited for autovacuum after the
	// prune and after the day's work (settle); Settled whether both
	// tables settled both times.
	VacuumWait time.Duration `json:"vacuum_wait"`
	Settled    bool          `json:"settled"`
	// Elapsed is the real time of the round.
	Elapsed time.Duration `json:"elapsed"`
}

// SteadyMeasures are what a round measures, and a third sums up.
type SteadyMeasures struct {
	// Rows and Events are the rows of the two tables at the end of the day
	// (counted), Bytes their total size, indexes and TOAST included.
	Rows   int64 `json:"rows"`
	Events int64 `json:"events"`
	Bytes  int64 `json:"bytes"`
	// Sweep, Overview and List are the nothing-eligible sweeps and console
	// page loads (the overview and the delegation list).
	Sweep    Dist `json:"sweep"`
	Overview Dist `json:"overview"`
	List     Dist `json:"list"`
	// SweepBuffers, OverviewBuffers and ListBuffers are the shared buffers
	// (hit or read) the statements of one sweep or one page load touched,
	// on average (pg_stat_statements): the work, which the machine's load
	// does not change. A third's are its rounds' means.
	SweepBuffers    float64 `json:"sweep_buffers"`
	OverviewBuffers float64 `json:"overview_buffers"`
	ListBuffers     float64 `json:"list_buffers"`
	// SeqScans is the sequential scans of delegations and
	// delegation_events (pg_stat_user_tables), by any statement.
	SeqScans int64 `json:"seq_scans"`
}

// SteadyThird summarises a third of the month: the size at its end, the
// p50 of every sample taken in it, its sequential scans.
type SteadyThird struct {
	LastDay int `json:"last_day"`
	SteadyMeasures
}

// SteadyResult is the steady-state run.
type SteadyResult struct {
	Days        int           `json:"days"`
	PerDay      int           `json:"per_day"`
	LongRunning int           `json:"long_running"`
	Completed   time.Duration `json:"completed"`
	Failed      time.Duration `json:"failed"`
	Stuck       time.Duration `json:"stuck"`
	Rounds      []SteadyRound `json:"rounds"`
	Thirds      []SteadyThird `json:"thirds"`
	// Autovacuums and Autoanalyzes are the runs autovacuum made on the two
	// tables over the month.
	Autovacuums  int64         `json:"autovacuums"`
	Autoanalyzes int64         `json:"autoanalyzes"`
	Elapsed      time.Duration `json:"elapsed"`
	Load         []string      `json:"load"` // load averages at the end
}

// SizeRatio is the size at the end over the size at the end of the first
// third (0 without thirds).
func (s *SteadyResult) SizeRatio() float64 {
	if len(s.Thirds) < 3 || s.Thirds[0].Bytes == 0 {
		return 0
	}
	return float64(s.Thirds[2].Bytes) / float64(s.Thirds[0].Bytes)
}

// timeRatio is a last-third p50 over its first-third p50.
func (s *SteadyResult) timeRatio(p50 func(SteadyThird) time.Duration) float64 {
	if len(s.Thirds) < 3 || p50(s.Thirds[0]) == 0 {
		return 0
	}
	return float64(p50(s.Thirds[2])) / float64(p50(s.Thirds[0]))
}

// vacuumWait is the rounds' waits for autovacuum, in all.
func (s *SteadyResult) vacuumWait() time.Duration {
	var d time.Duration
	for _, r := range s.Rounds {
		d += r.VacuumWait
	}
	return d
}

// unsettled is the rounds whose waits for autovacuum ran out
// (settleTimeout) before both tables settled.
func (s *SteadyResult) unsettled() int {
	n := 0
	for _, r := range s.Rounds {
		if !r.Settled {
			n++
		}
	}
	return n
}

// LateSeqScans is the sequential scans in the last two thirds, once the
// tables hold the steady state (a planner may rightly scan a table of a
// few pages on the first day).
func (s *SteadyResult) LateSeqScans() int64 {
	var n int64
	for _, t := range s.Thirds[1:] {
		n += t.SeqScans
	}
	return n
}

// findLibfaketime returns the libfaketime library, or an error saying how
// to install it.
func findLibfaketime() (string, error) {
	if p := os.Getenv("SWEEPER_LIBFAKETIME"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("SWEEPER_LIBFAKETIME: %w", err)
		}
		return p, nil
	}
	for _, p := range libfaketimePaths {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("the steady state runs PostgreSQL under libfaketime, which is not installed " +
		"(apt-get install libfaketime, or set SWEEPER_LIBFAKETIME to libfaketime.so.1)")
}

// fakeClock is the offset file of a server run under libfaketime.
type fakeClock struct {
	path string
	day  int
}

// fakeCacheSeconds is how long libfaketime keeps the offset it read: every
// process of the server reads the file again within two such periods.
const fakeCacheSeconds = 1

// advance moves the database clock to day (days after the start) and waits
// until every connection of pool reads it. libfaketime gives no signal when
// a process reads the new offset, so this polls now() on each connection.
func (c *fakeClock) advance(ctx context.Context, pool *pgxpool.Pool, day int) error {
	if err := os.WriteFile(c.path+".tmp", []byte("+"+strconv.Itoa(day)+"d\n"), 0o644); err != nil {
		return err
	}
	if err := os.Rename(c.path+".tmp", c.path); err != nil {
		return err
	}
	c.day = day
	want := time.Now().Add(time.Duration(day)*retention.Day - time.Hour)
	deadline := time.Now().Add(10 * fakeCacheSeconds * time.Second)
	for {
		behind := 0
		var readErr error
		conns := pool.AcquireAllIdle(ctx)
		for _, conn := range conns {
			var ok bool
			if err := conn.QueryRow(ctx, `SELECT now() > $1`, want).Scan(&ok); err != nil {
				readErr = err
			} else if !ok {
				behind++
			}
			conn.Release()
		}
		switch {
		case readErr != nil:
			return fmt.Errorf("reading the database clock: %w", readErr)
		case behind == 0 && len(conns) > 0:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("the database clock did not move to day %d within %s", day, 10*fakeCacheSeconds*time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startFakeServer starts a local server (the docker kind would not inherit
// LD_PRELOAD) under libfaketime, its clock at day 0.
func startFakeServer(ctx context.Context, cfg Config) (*pgserver.Server, *fakeClock, func(), error) {
	lib, err := findLibfaketime()
	if err != nil {
		return nil, nil, nil, err
	}
	dir, err := os.MkdirTemp("", "sweeperbench-clock-")
	if err != nil {
		return nil, nil, nil, err
	}
	cleanup := func() { _ = os.RemoveAll(dir) }
	// The server runs as user postgres: the directory and file are readable.
	if err := os.Chmod(dir, 0o755); err != nil {
		cleanup()
		return nil, nil, nil, err
	}
	clock := &fakeClock{path: filepath.Join(dir, "offset")}
	if err := os.WriteFile(clock.path, []byte("+0d\n"), 0o644); err != nil {
		cleanup()
		return nil, nil, nil, err
	}
	// The preload goes to this server's processes alone (Options.Env):
	// setting it in our own environment would also reach any server another
	// test starts meanwhile, and move its clock too.
	env := []string{
		"LD_PRELOAD=" + lib,
		"FAKETIME_TIMESTAMP_FILE=" + clock.path,
		"FAKETIME_CACHE_DURATION=" + strconv.Itoa(fakeCacheSeconds),
		"DONT_FAKE_MONOTONIC=1",
	}
	settings := maps.Clone(ServerSettings)
	maps.Copy(settings, SteadySettings)
	maps.Copy(settings, cfg.Settings)
	s, err := pgserver.Start(ctx, pgserver.Options{Kinds: []pgserver.Kind{pgserver.KindLocal}, Settings: settings, Logf: cfg.Logf, Env: env})
	if err != nil {
		cleanup()
		return nil, nil, nil, fmt.Errorf("starting PostgreSQL under libfaketime: %w", err)
	}
	return s, clock, cleanup, nil
}

// SteadySettings are the steady-state server's settings on top of
// ServerSettings: autovacuum's schedule and throttle are real-time, so they
// are compressed with the clock. A simulated day lasts seconds, where a
// real one gives the launcher 1440 naps of a minute and a throttled worker
// hours of I/O; with a nap of 1 s (the minimum) and no cost delay, it still
// gets far less time per simulated day than a real server would.
var SteadySettings = map[string]string{
	"autovacuum_naptime":           "1s",
	"autovacuum_vacuum_cost_delay": "0",
}

// steadyRun is the state of one steady-state run.
type steadyRun struct {
	cfg     SteadyConfig
	pool    *pgxpool.Pool
	ledger  *ledger.Ledger
	sweeper *sweep.Sweeper
	pruner  *retention.Pruner
	console http.Handler
	token   string
	logf    func(string, ...any)
	// abandoned and queued are the rows left yesterday to be swept today.
	abandoned, queued int
	long              []string
}

// RunSteady runs the steady state of cfg.Steady on a server of its own.
func RunSteady(ctx context.Context, cfg Config) (*SteadyResult, error) {
	cfg.fill()
	sc := cfg.Steady
	sc.fill()
	if sc.Days < 3 {
		return nil, fmt.Errorf("the steady state needs at least 3 days (a third each), got %d", sc.Days)
	}
	began := time.Now()
	s, clock, cleanup, err := startFakeServer(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	defer func() { _ = s.Close() }()
	if err := migrations.Up(ctx, s.URL); err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(s.URL)
	if err != nil {
		return nil, err
	}
	pcfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	run := &steadyRun{cfg: sc, pool: pool, ledger: ledger.New(pool), logf: cfg.Logf}
	if run.sweeper, err = sweep.New(pool, sweep.Config{}); err != nil {
		return nil, err
	}
	if run.pruner, err = retention.New(pool, retention.Config{Completed: sc.Completed, Failed: sc.Failed, Stuck: sc.Stuck}); err != nil {
		return nil, err
	}
	ch, err := console.NewHandler(console.Config{Pool: pool})
	if err != nil {
		return nil, err
	}
	defer ch.Close()
	run.console = ch
	if run.token, err = auth.NewStore(pool).Create(ctx, "steady-reader", auth.RoleReader, ""); err != nil {
		return nil, err
	}
	if _, err := pool.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err != nil {
		return nil, fmt.Errorf("pg_stat_statements (preloaded by ServerSettings): %w", err)
	}
	if err := run.startLongRunning(ctx); err != nil {
		return nil, err
	}

	res := &SteadyResult{Days: sc.Days, PerDay: sc.PerDay, LongRunning: sc.LongRunning,
		Completed: sc.Completed, Failed: sc.Failed, Stuck: sc.Stuck}
	third := func(day int) int { return min(3*(day-1)/sc.Days, 2) }
	var samples [3][3][]time.Duration // third, (sweep, overview, list)
	for day := 1; day <= sc.Days; day++ {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if err := clock.advance(ctx, pool, day); err != nil {
			return res, err
		}
		before, err := seqScans(ctx, pool)
		if err != nil {
			return res, err
		}
		round, err := run.day(ctx, day, &samples[third(day)])
		if err != nil {
			return res, fmt.Errorf("day %d: %w", day, err)
		}
		after, err := seqScans(ctx, pool)
		if err != nil {
			return res, err
		}
		round.SeqScans = after - before
		res.Rounds = append(res.Rounds, round)
		cfg.Logf("steady day %d: %d rows, %d events, %.1f MiB; swept %d, pruned %d in %s; autovacuum settled %v after %s; sweep p50 %s, overview p50 %s, list p50 %s; %d sequential scans (%s)",
			day, round.Rows, round.Events, float64(round.Bytes)/(1<<20), round.Swept, round.Pruned,
			round.PruneDuration.Round(time.Millisecond), round.Settled, round.VacuumWait.Round(time.Millisecond),
			round.Sweep.P50, round.Overview.P50, round.List.P50, round.SeqScans, round.Elapsed.Round(time.Millisecond))
	}
	res.Thirds = make([]SteadyThird, 3)
	for _, r := range res.Rounds {
		res.Thirds[third(r.Day)].SeqScans += r.SeqScans
	}
	for i := range res.Thirds {
		t := &res.Thirds[i]
		for _, r := range res.Rounds {
			if third(r.Day) == i {
				t.LastDay, t.Rows, t.Events, t.Bytes = r.Day, r.Rows, r.Events, r.Bytes
			}
		}
		t.Sweep, t.Overview, t.List = dist(samples[i][0]), dist(samples[i][1]), dist(samples[i][2])
		var n float64
		for _, r := range res.Rounds {
			if third(r.Day) == i {
				t.SweepBuffers += r.SweepBuffers
				t.OverviewBuffers += r.OverviewBuffers
				t.ListBuffers += r.ListBuffers
				n++
			}
		}
		if n > 0 {
			t.SweepBuffers, t.OverviewBuffers, t.ListBuffers = t.SweepBuffers/n, t.OverviewBuffers/n, t.ListBuffers/n
		}
	}
	if err := pool.QueryRow(ctx, `
		SELECT COALESCE(sum(autovacuum_count), 0)::bigint, COALESCE(sum(autoanalyze_count), 0)::bigint
		FROM pg_stat_user_tables WHERE relname IN ('delegations', 'delegation_events')`).Scan(&res.Autovacuums, &res.Autoanalyzes); err != nil {
		return res, err
	}
	res.Elapsed = time.Since(began)
	res.Load = loadAverage()
	return res, nil
}

// seqScans reads the sequential scans of the two tables so far, once every
// idle connection of pool has flushed its statistics: a backend sends them
// at most once a second and when it next goes idle, so a connection that
// sat in the pool since its last statement may still hold scans of days
// ago, which would then be counted in a later third.
func seqScans(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
	for _, c := range pool.AcquireAllIdle(ctx) {
		// Flushed as the statement ends, before the reply.
		_, err := c.Exec(ctx, `SELECT pg_stat_force_next_flush()`)
		c.Release()
		if err != nil {
			return 0, fmt.Errorf("flushing a connection's statistics: %w", err)
		}
	}
	var n int64
	err := pool.QueryRow(ctx, `
		SELECT COALESCE(sum(seq_scan), 0)::bigint FROM pg_stat_user_tables
		WHERE relname IN ('delegations', 'delegation_events')`).Scan(&n)
	return n, err
}

// startLongRunning inserts the rows that stay in flight all month, with a
// deadline past its end.
func (r *steadyRun) startLongRunning(ctx context.Context) error {
	deadline := time.Now().Add(time.Duration(r.cfg.Days+30) * retention.Day)
	for i := range r.cfg.LongRunning {
		id := fmt.Sprintf("long-%d", i)
		if _, err := r.ledger.Insert(ctx, ledger.NewDelegation{DelegationID: id, CallerID: "caller-long",
			CalleeID: fmt.Sprintf("callee-%d", i%89), TaskPreview: "a long-running task", Deadline: deadline}); err != nil {
			return err
		}
		r.long = append(r.long, id)
	}
	_, err := r.pool.Exec(ctx, steadyMoveSQL, r.long, "in_progress")
	return err
}

// steadyInsertSQL inserts the day's delegations $2 .. $3 (prefix $1) as an
// API client would, queued, with the default deadline (6 hours); the
// database dates them and writes their audit events.
const steadyInsertSQL = `
INSERT INTO delegations (delegation_id, caller_id, callee_id, task_preview, status)
SELECT $1 || g, 'caller-' || (g % 97), 'callee-' || (g % 89), 'task number ' || g || ' of the day', 'queued'
FROM generate_series($2::int, $3::int) g`

// steadyMoveSQL moves the delegations $1 to status $2, as workers reporting
// do (the guard, the bookkeeping and the audit trigger run as for any
// writer).
const steadyMoveSQL = `UPDATE delegations SET status = $2 WHERE delegation_id = ANY($1::text[])`

// steadyFinishSQL finishes the delegations $1 with status $2, a result or
// an error detail.
const steadyFinishSQL = `
UPDATE delegations
SET status = $2,
    result_preview = CASE WHEN $2 = 'completed' THEN 'result of ' || delegation_id END,
    error_detail = CASE WHEN $2 = 'failed' THEN 'the worker reported an error' END
WHERE delegation_id = ANY($1::text[])`

// day runs one simulated day and its measurements.
func (r *steadyRun) day(ctx context.Context, day int, samples *[3][]time.Duration) (SteadyRound, error) {
	began := time.Now()
	round := SteadyRound{Day: day}
	// The long-running workers are alive: they beat as the day starts.
	if err := r.beat(ctx, r.long); err != nil {
		return round, err
	}
	sw, err := r.sweepAll(ctx)
	if err != nil {
		return round, err
	}
	if want := r.abandoned + r.queued; sw != want {
		return round, fmt.Errorf("the sweep marked %d rows stuck, want the %d abandoned and queued yesterday", sw, want)
	}
	round.Swept = sw
	pr, err := r.pruner.RunOnce(ctx)
	if err != nil {
		return round, err
	}
	round.Pruned, round.PrunedEvents, round.PruneDuration = pr.Pruned, pr.EventsPruned, pr.Duration
	// Autovacuum after the prune, as a real day's would run between the
	// pruner's passes and the day's work: the index pages the prune emptied
	// are then free for the day's inserts.
	wait, settled, err := r.settle(ctx)
	if err != nil {
		return round, err
	}

	if round.Completed, round.Failed, err = r.work(ctx, day); err != nil {
		return round, err
	}
	round.Left = r.abandoned + r.queued
	wait2, settled2, err := r.settle(ctx)
	if err != nil {
		return round, err
	}
	round.VacuumWait, round.Settled = wait+wait2, settled && settled2

	if err := r.measureSize(ctx, &round); err != nil {
		return round, err
	}
	var times []time.Duration
	if err := r.resetBuffers(ctx); err != nil {
		return round, err
	}
	for range r.cfg.SweepRuns {
		res, err := r.sweeper.RunOnce(ctx)
		if err != nil {
			return round, err
		}
		if res.Swept != 0 {
			return round, fmt.Errorf("a nothing-eligible sweep marked %d rows", res.Swept)
		}
		times = append(times, res.Duration)
	}
	round.Sweep = dist(times)
	samples[0] = append(samples[0], times...)
	if round.SweepBuffers, err = r.buffers(ctx, r.cfg.SweepRuns); err != nil {
		return round, err
	}
	for i, page := range []string{"/", "/delegations"} {
		times = times[:0]
		if err := r.resetBuffers(ctx); err != nil {
			return round, err
		}
		for range r.cfg.ConsoleRuns {
			d, err := r.load(ctx, page)
			if err != nil {
				return round, err
			}
			times = append(times, d)
		}
		samples[i+1] = append(samples[i+1], times...)
		b, err := r.buffers(ctx, r.cfg.ConsoleRuns)
		if err != nil {
			return round, err
		}
		if i == 0 {
			round.Overview, round.OverviewBuffers = dist(times), b
		} else {
			round.List, round.ListBuffers = dist(times), b
		}
	}
	round.Elapsed = time.Since(began)
	return round, nil
}

// settleTimeout bounds the wait for autovacuum after a day's writes;
// settleQuiet is how long a table below its autovacuum trigger must stay
// unvacuumed before the wait stops for it (statistics reach the launcher
// within a second, and it naps a second: autovacuum_naptime).
const (
	settleTimeout = 30 * time.Second
	settleQuiet   = 3 * time.Second
)

// settleSQL reads, for each table, autovacuum's runs so far, whether a
// vacuum is under way, and whether the table is past its autovacuum
// trigger (dead rows over autovacuum_vacuum_threshold + scale_factor x
// rows, or rows inserted since the last vacuum over the insert trigger),
// each setting from the table's own options or else the server's.
const settleSQL = `
SELECT s.relname, s.autovacuum_count,
       EXISTS (SELECT 1 FROM pg_stat_progress_vacuum p WHERE p.relid = s.relid),
       s.n_dead_tup > o.vt + o.vs * greatest(c.reltuples, 0)
       OR s.n_ins_since_vacuum > o.it + o.isf * greatest(c.reltuples, 0)
FROM pg_stat_user_tables s
JOIN pg_class c ON c.oid = s.relid
CROSS JOIN LATERAL (
    SELECT COALESCE(max(option_value) FILTER (WHERE option_name = 'autovacuum_vacuum_threshold'),
                    current_setting('autovacuum_vacuum_threshold'))::float8 AS vt,
           COALESCE(max(option_value) FILTER (WHERE option_name = 'autovacuum_vacuum_scale_factor'),
                    current_setting('autovacuum_vacuum_scale_factor'))::float8 AS vs,
           COALESCE(max(option_value) FILTER (WHERE option_name = 'autovacuum_vacuum_insert_threshold'),
                    current_setting('autovacuum_vacuum_insert_threshold'))::float8 AS it,
           COALESCE(max(option_value) FILTER (WHERE option_name = 'autovacuum_vacuum_insert_scale_factor'),
                    current_setting('autovacuum_vacuum_insert_scale_factor'))::float8 AS isf
    FROM pg_options_to_table(c.reloptions)) AS o
WHERE s.relname IN ('delegations', 'delegation_events')`

// settle waits until autovacuum has caught up with the day's writes: each
// of the two tables vacuumed once after them (a vacuum under way when they
// ended does not count: it may have started before them), or, for a table
// below its autovacuum trigger, settleQuiet without a vacuum starting. It
// returns how long it waited and whether both tables settled within
// settleTimeout. A real day gives the launcher 1440 naps and each busy
// table dozens of vacuums; a simulated one lasts seconds, in which
// autovacuum might not reach a table at all, and the size measured would
// then depend on the machine's speed. One vacuum a day is still far less
// than a real server's, and the bench never runs VACUUM itself:
// autovacuum decides, by the tables' own settings.
func (r *steadyRun) settle(ctx context.Context) (time.Duration, bool, error) {
	began := time.Now()
	type state struct {
		count        int64
		running, due bool
	}
	read := func() (map[string]state, error) {
		rows, err := r.pool.Query(ctx, settleSQL)
		if err != nil {
			return nil, fmt.Errorf("reading autovacuum's state: %w", err)
		}
		out := map[string]state{}
		for rows.Next() {
			var name string
			var st state
			if err := rows.Scan(&name, &st.count, &st.running, &st.due); err != nil {
				return nil, err
			}
			out[name] = st
		}
		return out, rows.Err()
	}
	first, err := read()
	if err != nil {
		return 0, false, err
	}
	want := map[string]int64{}
	for name, st := range first {
		want[name] = st.count + 1
		if st.running {
			want[name]++
		}
	}
	for {
		now, err := read()
		if err != nil {
			return 0, false, err
		}
		settled := len(now) == 2
		for name, st := range now {
			quiet := time.Since(began) >= settleQuiet && !st.running && !st.due
			settled = settled && (st.count >= want[name] || quiet)
		}
		if settled || time.Since(began) >= settleTimeout {
			return time.Since(began), settled, nil
		}
		select {
		case <-ctx.Done():
			return 0, false, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// measureSize counts the rows of both tables and reads their size. The
// counts read an index (enable_seqscan off for them alone), so that every
// sequential scan the run reports is one of the ledger's statements or the
// workload's.
func (r *steadyRun) measureSize(ctx context.Context, round *SteadyRound) error {
	return pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL enable_seqscan = off`); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `
			SELECT (SELECT count(*) FROM delegations), (SELECT count(*) FROM delegation_events),
			       pg_total_relation_size('delegations') + pg_total_relation_size('delegation_events')`).
			Scan(&round.Rows, &round.Events, &round.Bytes); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `
			SELECT c.relname, pg_relation_size(c.oid), COALESCE(s.n_dead_tup, 0)
			FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
			WHERE c.oid IN ('delegations'::regclass, 'delegation_events'::regclass)
			   OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid IN ('delegations'::regclass, 'delegation_events'::regclass))
			ORDER BY pg_relation_size(c.oid) DESC`)
		if err != nil {
			return err
		}
		var line string
		for rows.Next() {
			var name string
			var size, dead int64
			if err := rows.Scan(&name, &size, &dead); err != nil {
				return err
			}
			line += fmt.Sprintf(" %s=%.1f", name, float64(size)/(1<<20))
			if dead > 0 {
				line += fmt.Sprintf("(dead %d)", dead)
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		r.logf("steady day %d relations (MiB):%s", round.Day, line)
		return nil
	})
}

// resetBuffers starts counting the statements' buffers afresh.
func (r *steadyRun) resetBuffers(ctx context.Context) error {
	_, err := r.pool.Exec(ctx, `SELECT pg_stat_statements_reset()`)
	return err
}

// buffers is the shared buffers the statements run since resetBuffers
// touched, per run of runs. Only the measured runs run meanwhile (the
// workload is done; autovacuum is not a statement).
func (r *steadyRun) buffers(ctx context.Context, runs int) (float64, error) {
	var n float64
	err := r.pool.QueryRow(ctx, `
		SELECT COALESCE(sum(shared_blks_hit + shared_blks_read), 0)::float8 FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&n)
	return n / float64(max(runs, 1)), err
}

// sweepAll runs the sweeper until nothing is left and returns the rows it
// marked.
func (r *steadyRun) sweepAll(ctx context.Context) (int, error) {
	total := 0
	for {
		res, err := r.sweeper.RunOnce(ctx)
		if err != nil {
			return total, err
		}
		total += res.Swept
		if !res.More {
			return total, nil
		}
	}
}

// steadyWaves is how many waves a day's work comes in: a real day's
// delegations arrive and finish all day, so only a few thousand are in
// flight at once. Written all at once, every row of the day would be in
// flight together (70% of the table), an autoanalyze in the middle would
// record that, and the console's in-flight counts would rightly plan a
// sequential scan until the next one.
const steadyWaves = 10

// work writes the day in steadyWaves waves, each of PerDay/steadyWaves
// delegations inserted, moved to in_progress, beaten twice, then completed,
// failed, abandoned (no more beats) or left queued. Inserts go 1000 a
// statement; moves and finishes, which find their rows by id, 100 a
// statement, as workers reporting in small batches would (on a table of a
// few ten thousand rows the planner rightly reads a thousand ids by a
// sequential scan, the workload's plan, not the ledger's). It returns the
// completed and failed.
func (r *steadyRun) work(ctx context.Context, day int) (completedN, failedN int, err error) {
	const chunk, moveChunk = 1000, 100
	prefix := fmt.Sprintf("d%d-", day)
	n := r.cfg.PerDay
	per := (n + steadyWaves - 1) / steadyWaves
	r.abandoned, r.queued = 0, 0
	for first := 1; first <= n; first += per {
		last := min(first+per-1, n)
		for lo := first; lo <= last; lo += chunk {
			if _, err := r.pool.Exec(ctx, steadyInsertSQL, prefix, lo, min(lo+chunk-1, last)); err != nil {
				return 0, 0, fmt.Errorf("inserting: %w", err)
			}
		}
		ids := func(from, to int) []string { // per mille of the day, from..to
			var out []string
			for g := first; g <= last; g++ {
				if m := (g * 7919) % 1000; m >= from && m < to {
					out = append(out, prefix+strconv.Itoa(g))
				}
			}
			return out
		}
		started := ids(0, shareCompleted+shareFailed+shareAbandoned)
		queued := ids(shareCompleted+shareFailed+shareAbandoned, shareCompleted+shareFailed+shareAbandoned+shareQueued)
		for c := range slices.Chunk(started, moveChunk) {
			if _, err := r.pool.Exec(ctx, steadyMoveSQL, c, "in_progress"); err != nil {
				return 0, 0, fmt.Errorf("moving to in_progress: %w", err)
			}
		}
		for range 2 {
			if err := r.beat(ctx, started); err != nil {
				return 0, 0, err
			}
		}
		completed := ids(0, shareCompleted)
		failed := ids(shareCompleted, shareCompleted+shareFailed)
		for _, g := range []struct {
			ids    []string
			status string
		}{{completed, "completed"}, {failed, "failed"}} {
			for c := range slices.Chunk(g.ids, moveChunk) {
				if _, err := r.pool.Exec(ctx, steadyFinishSQL, c, g.status); err != nil {
					return 0, 0, fmt.Errorf("finishing as %s: %w", g.status, err)
				}
			}
		}
		completedN += len(completed)
		failedN += len(failed)
		r.abandoned += len(started) - len(completed) - len(failed)
		r.queued += len(queued)
	}
	return completedN, failedN, nil
}

// beat heartbeats ids through the ledger, 1000 a call; every one must be live.
func (r *steadyRun) beat(ctx context.Context, ids []string) error {
	for c := range slices.Chunk(ids, 1000) {
		notLive, err := r.ledger.HeartbeatMany(ctx, c)
		if err != nil {
			return fmt.Errorf("heartbeats: %w", err)
		}
		if len(notLive) > 0 {
			return fmt.Errorf("%d live rows reported not live, e.g. %s", len(notLive), notLive[0])
		}
	}
	return nil
}

// load serves one console page in process, as a reader with a Bearer
// token, and returns how long it took.
func (r *steadyRun) load(ctx context.Context, page string) (time.Duration, error) {
	req := httptest.NewRequestWithContext(ctx, http.MethodGet, page, nil)
	req.Header.Set("Authorization", "Bearer "+r.token)
	rec := httptest.NewRecorder()
	began := time.Now()
	r.console.ServeHTTP(rec, req)
	d := time.Since(began)
	if rec.Code != http.StatusOK {
		return 0, fmt.Errorf("console %s: status %d", page, rec.Code)
	}
	return d, nil
}

// DescribeMachine describes this machine, with the load averages now as
// LoadStart: for a run that does not go through Run.
func DescribeMachine() Machine {
	m := describeMachine()
	m.LoadStart = loadAverage()
	return m
}
