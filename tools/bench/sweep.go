package bench

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/sweep"
)

// bareDrainSQL is the machine's limit for the drain: the same claim and the
// same change, as a bare UPDATE on a session with triggers off (no guard,
// no bookkeeping, no audit event) and no notification. bareDrainSQLv0 is the
// same for the schema before heartbeat_minute, to measure the code before
// the heartbeat fast path with the same suite.
const bareDrainSQLv0 = `
UPDATE delegations AS d
SET status = 'stuck', stuck_reason = 'heartbeat_timeout'
WHERE d.delegation_id = ANY(ARRAY(
        SELECT delegation_id FROM delegations
        WHERE status = 'in_progress'
          AND last_heartbeat < now() - make_interval(secs => $1)
        ORDER BY last_heartbeat
        LIMIT $2
        FOR UPDATE SKIP LOCKED))`

const bareDrainSQL = `
UPDATE delegations AS d
SET status = 'stuck', stuck_reason = 'heartbeat_timeout'
WHERE d.delegation_id = ANY(ARRAY(
        SELECT delegation_id FROM delegations
        WHERE status = 'in_progress'
          AND heartbeat_minute < now() - make_interval(secs => $1)
          AND last_heartbeat < now() - make_interval(secs => $1)
        ORDER BY heartbeat_minute
        LIMIT $2
        FOR UPDATE SKIP LOCKED))`

// newPool opens a pool on the ledger of db.
func (db *ledgerDB) newPool(ctx context.Context, conns int32) (*pgxpool.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(db.url)
	if err != nil {
		return nil, err
	}
	pcfg.MaxConns = conns
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, err
	}
	return pool, pool.Ping(ctx)
}

// listener counts stuck notifications and hands each payload to onNotify.
type listener struct {
	conn     *pgx.Conn
	count    atomic.Int64
	cancel   context.CancelFunc
	done     chan struct{}
	onNotify func(payload string, at time.Time)
}

func listen(ctx context.Context, url string, onNotify func(string, time.Time)) (*listener, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, `LISTEN `+sweep.NotifyChannelDefault); err != nil {
		_ = conn.Close(ctx)
		return nil, err
	}
	lctx, cancel := context.WithCancel(context.Background())
	l := &listener{conn: conn, cancel: cancel, done: make(chan struct{}), onNotify: onNotify}
	go func() {
		defer close(l.done)
		for {
			n, err := conn.WaitForNotification(lctx)
			if err != nil {
				return
			}
			at := time.Now()
			l.count.Add(1)
			if l.onNotify != nil {
				l.onNotify(n.Payload, at)
			}
		}
	}()
	return l, nil
}

func (l *listener) close() {
	l.cancel()
	<-l.done
	_ = l.conn.Close(context.Background())
}

// waitCount waits until the listener has counted n notifications (they are
// delivered after the commit that sent them), or a second passes.
func (l *listener) waitCount(n int64) int64 {
	deadline := time.Now().Add(time.Second)
	for l.count.Load() < n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	return l.count.Load()
}

func measureSweeps(ctx context.Context, cfg Config, db *ledgerDB, sr *SizeResult) error {
	pool, err := db.newPool(ctx, 4)
	if err != nil {
		return err
	}
	defer pool.Close()
	lis, err := listen(ctx, db.url, nil)
	if err != nil {
		return err
	}
	defer lis.close()
	sw, err := sweep.New(pool, sweep.Config{
		HeartbeatTimeout: benchTimeout,
		MaxBatchesPerRun: cfg.Backlog/sweep.BatchSizeDefault + 10,
		NotifyChannel:    sweep.NotifyChannelDefault,
	})
	if err != nil {
		return err
	}
	logf := db.srv.logf

	// Nothing eligible, as a running ledger has it: every live row was
	// just beaten, so its heap pages are not all-visible.
	if err := beatAll(ctx, db, cfg.InFlight); err != nil {
		return err
	}
	for range 3 {
		if _, err := sw.RunOnce(ctx); err != nil {
			return err
		}
	}
	_, _ = db.pool.Exec(ctx, `SELECT pg_stat_statements_reset()`)
	times := make([]time.Duration, 0, cfg.SweepRuns)
	for range cfg.SweepRuns {
		res, err := sw.RunOnce(ctx)
		if err != nil {
			return err
		}
		if res.Swept != 0 {
			return fmt.Errorf("nothing-eligible run swept %d rows", res.Swept)
		}
		if res.InFlight != int64(cfg.InFlight) {
			return fmt.Errorf("nothing-eligible run counted %d rows in flight, want %d", res.InFlight, cfg.InFlight)
		}
		times = append(times, res.Duration)
	}
	sr.Nothing = dist(times)
	logf("%d rows: nothing eligible p50 %s p95 %s", db.rows, sr.Nothing.P50, sr.Nothing.P95)

	// The same with the in-flight recount, which a run does once a minute
	// (Config.InFlightRecount): the first run of a new Sweeper always counts.
	times = times[:0]
	for range recountRuns {
		fresh, err := sweep.New(pool, sw.Config())
		if err != nil {
			return err
		}
		res, err := fresh.RunOnce(ctx)
		if err != nil {
			return err
		}
		if res.InFlight != int64(cfg.InFlight) {
			return fmt.Errorf("recounting run counted %d rows in flight, want %d", res.InFlight, cfg.InFlight)
		}
		times = append(times, res.Duration)
	}
	sr.NothingRecount = dist(times)
	sr.Breakdown = statementTimes(ctx, db)
	logf("%d rows: nothing eligible with the in-flight recount p50 %s", db.rows, sr.NothingRecount.P50)

	// A few eligible rows, in flight with the others.
	times = times[:0]
	for range cfg.EligibleRuns {
		if _, err := db.addStale(ctx, cfg.Eligible, false); err != nil {
			return err
		}
		res, err := sw.RunOnce(ctx)
		if err != nil {
			return err
		}
		if res.Swept != cfg.Eligible {
			return fmt.Errorf("few-eligible run swept %d rows, want %d", res.Swept, cfg.Eligible)
		}
		times = append(times, res.Duration)
	}
	sr.FewEligible = dist(times)
	logf("%d rows: %d eligible p50 %s", db.rows, cfg.Eligible, sr.FewEligible.P50)

	// The drain of a backlog: the bare UPDATEs against the sweep, in ABBA
	// order (bare first in odd rounds, so drift favours the baselines).
	const (
		kindBare = iota
		kindTriggers
		kindSweep
	)
	names := []string{"bare UPDATE, triggers off", "bare UPDATE, table triggers on", "sweep"}
	for round := range cfg.DrainRounds {
		order := []int{kindBare, kindTriggers, kindSweep}
		if round%2 == 1 {
			slices.Reverse(order)
		}
		for _, kind := range order {
			if _, err := db.addStale(ctx, cfg.Backlog, true); err != nil {
				return err
			}
			var d DrainResult
			switch kind {
			case kindBare:
				d, err = bareDrain(ctx, db, true)
			case kindTriggers:
				d, err = bareDrain(ctx, db, false)
			default:
				d, err = sweepDrain(ctx, db, sw, lis)
			}
			if err != nil {
				return err
			}
			if d.Rows != cfg.Backlog {
				return fmt.Errorf("drain (%s) marked %d rows, want %d", names[kind], d.Rows, cfg.Backlog)
			}
			switch kind {
			case kindBare:
				sr.BareDrains = append(sr.BareDrains, d)
			case kindTriggers:
				sr.TriggerDrains = append(sr.TriggerDrains, d)
			default:
				sr.Drains = append(sr.Drains, d)
			}
			logf("%d rows: drain (%s) %d rows in %s: %.0f rows/s", db.rows, names[kind], d.Rows, d.Duration.Round(time.Millisecond), d.Rate())
		}
	}
	return nil
}

// beatAll heartbeats every live row once, in batches of 1000.
func beatAll(ctx context.Context, db *ledgerDB, inFlight int) error {
	ids := make([]string, 0, 1000)
	for i := 1; i <= inFlight; i++ {
		ids = append(ids, fmt.Sprintf("f%d", i))
		if len(ids) == cap(ids) || i == inFlight {
			notLive, err := db.heartbeatMany(ctx, ids)
			if err != nil {
				return err
			}
			if len(notLive) > 0 {
				return fmt.Errorf("%d live rows reported not live, e.g. %s", len(notLive), notLive[0])
			}
			ids = ids[:0]
		}
	}
	return nil
}

// sweepRunner runs one sweep: this build's sweep.Sweeper, or version 5's
// (v5Sweeper) on a version 5 ledger.
type sweepRunner interface {
	RunOnce(ctx context.Context) (sweep.Result, error)
}

func sweepDrain(ctx context.Context, db *ledgerDB, sw sweepRunner, lis *listener) (DrainResult, error) {
	events0, err := db.count(ctx, `SELECT count(*) FROM delegation_events WHERE to_status = 'stuck'`)
	if err != nil {
		return DrainResult{}, err
	}
	notes0 := lis.count.Load()
	res, err := sw.RunOnce(ctx)
	if err != nil {
		return DrainResult{}, err
	}
	if res.More {
		return DrainResult{}, fmt.Errorf("drain stopped at MaxBatchesPerRun")
	}
	d := DrainResult{Rows: res.Swept, Duration: res.Duration, Batches: res.Batches}
	d.Notified = int(lis.waitCount(notes0+int64(res.Swept)) - notes0)
	events, err := db.count(ctx, `SELECT count(*) FROM delegation_events WHERE to_status = 'stuck'`)
	if err != nil {
		return d, err
	}
	d.Events = events - events0
	if d.Notified != d.Rows || d.Events != d.Rows {
		return d, fmt.Errorf("drain of %d rows sent %d notifications and wrote %d audit events", d.Rows, d.Notified, d.Events)
	}
	return d, nil
}

// bareDrain drains the backlog with bareDrainSQL in batches, with the
// table's triggers off (the machine's limit) or on (what any writer's UPDATE
// costs: guard, bookkeeping and one audit event per row, no notification).
func bareDrain(ctx context.Context, db *ledgerDB, triggersOff bool) (DrainResult, error) {
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return DrainResult{}, err
	}
	defer conn.Release()
	if triggersOff {
		if _, err := conn.Exec(ctx, `SET session_replication_role = replica`); err != nil {
			return DrainResult{}, err
		}
		defer func() { _, _ = conn.Exec(ctx, `SET session_replication_role = DEFAULT`) }()
	}
	stmt := bareDrainSQL
	var minute bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_attribute
		WHERE attrelid = 'delegations'::regclass AND attname = 'heartbeat_minute')`).Scan(&minute); err != nil {
		return DrainResult{}, err
	}
	if !minute {
		stmt = bareDrainSQLv0
	}
	var d DrainResult
	start := time.Now()
	for {
		tag, err := conn.Exec(ctx, stmt, benchTimeout.Seconds(), sweep.BatchSizeDefault)
		if err != nil {
			return d, err
		}
		d.Batches++
		d.Rows += int(tag.RowsAffected())
		if tag.RowsAffected() < sweep.BatchSizeDefault {
			break
		}
	}
	d.Duration = time.Since(start)
	return d, nil
}

// recountRuns is the number of timed nothing-eligible runs that recount the
// rows in flight.
const recountRuns = 5

// statementTimes reads the server-side mean time of the statements that ran
// since the last reset (pg_stat_statements), slowest first. It returns nil
// when the extension is not loaded.
func statementTimes(ctx context.Context, db *ledgerDB) []StatementTime {
	rows, err := db.pool.Query(ctx, `
		SELECT query, calls, mean_exec_time
		FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND query NOT ILIKE '%pg_stat_statements%'
		ORDER BY mean_exec_time DESC`)
	if err != nil {
		return nil
	}
	var out []StatementTime
	for rows.Next() {
		var q string
		var calls int64
		var mean float64
		if err := rows.Scan(&q, &calls, &mean); err != nil {
			return nil
		}
		out = append(out, StatementTime{Query: summarizeSQL(q), Calls: calls, Mean: time.Duration(mean * float64(time.Millisecond))})
	}
	return out
}

// summarizeSQL shortens a statement to its first meaningful words.
func summarizeSQL(q string) string {
	q = strings.Join(strings.Fields(q), " ")
	switch {
	case strings.Contains(q, "deadline_exceeded") && strings.HasPrefix(q, "WITH swept"):
		return "sweep by deadline (batch statement)"
	case strings.Contains(q, "heartbeat_timeout") && strings.HasPrefix(q, "WITH swept"):
		return "sweep by heartbeat (batch statement)"
	case strings.Contains(q, "AS in_flight"):
		return "gauges (in-flight count, oldest heartbeat, next eligible)"
	case strings.Contains(q, "next_eligible_in_seconds"):
		return "gauges (oldest heartbeat, next eligible)"
	case strings.HasPrefix(q, "SELECT count(*) FROM delegations WHERE status IN"):
		return "count in flight (once a minute)"
	case strings.Contains(q, "set_config("):
		return "set_config (audit actor)"
	}
	if len(q) > 60 {
		q = q[:60] + "…"
	}
	return q
}

// dist summarises durations.
func dist(ds []time.Duration) Dist {
	if len(ds) == 0 {
		return Dist{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(p float64) time.Duration { return s[int(p*float64(len(s)-1)+0.5)] }
	return Dist{N: len(s), P50: at(0.50), P95: at(0.95), P99: at(0.99), Max: s[len(s)-1]}
}
