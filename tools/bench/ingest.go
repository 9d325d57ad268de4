package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/ledger"
)

// Ingest paths.
const (
	PathSingle   = "single"   // Ledger.Heartbeat, one delegation per statement
	PathMany     = "many"     // Ledger.HeartbeatMany, 1000 per statement
	PathCoalesce = "coalesce" // ledger.Coalescer fed by many goroutines
)

// IngestWriters are the writer counts measured for every path.
var IngestWriters = []int{1, 4}

// PathManyNewMinute is HeartbeatMany where every beat moves its row into a
// new minute (the rows were last beaten minutes before): heartbeat_minute
// changes, so no beat is a HOT update. The other paths measure beats within
// the minute of the previous one; tasks beating every I seconds see a
// fraction I/60 of these (SteadyState).
const PathManyNewMinute = "many-new-minute"

// coalesceCallers is the number of goroutines calling Beat per flusher: enough
// to fill a batch of 1000 while the previous one is being written.
const coalesceCallers = 2000

func measureIngest(ctx context.Context, cfg Config, db *ledgerDB) ([]IngestRow, error) {
	if err := db.addIngestRows(ctx, cfg.IngestRows, ""); err != nil {
		return nil, err
	}
	defer db.dropIngestRows(ctx)
	var out []IngestRow
	type conf struct {
		path    string
		writers int
	}
	// First the beats into a new minute, on rows last beaten minutes ago.
	confs := []conf{{PathManyNewMinute, IngestWriters[len(IngestWriters)-1]}}
	for _, path := range []string{PathSingle, PathMany, PathCoalesce} {
		for _, w := range IngestWriters {
			confs = append(confs, conf{path, w})
		}
	}
	for _, path := range []string{PathManyProgressSame, PathManyProgress} {
		confs = append(confs, conf{path, IngestWriters[len(IngestWriters)-1]})
	}
	for _, c := range confs {
		if c.path == PathManyProgressSame {
			if err := db.setIngestProgress(ctx); err != nil {
				return out, err
			}
		}
		row, err := runIngest(ctx, cfg, db, c.path, c.writers)
		if err != nil {
			return out, fmt.Errorf("%s with %d writers: %w", c.path, c.writers, err)
		}
		db.srv.logf("ingest %-11s writers=%d: %.0f beats/s p50 %s p99 %s, %d updates (%.0f%% HOT) for %d beats",
			c.path, c.writers, row.BeatsPerSec, row.Latency.P50, row.Latency.P99, row.Updates, 100*row.HotShare(), row.Beats)
		out = append(out, row)
	}
	return out, nil
}

// addIngestRows adds n in_progress rows i1..in last beaten two minutes ago,
// of callee callee ("" spreads them over 89 callees).
func (db *ledgerDB) addIngestRows(ctx context.Context, n int, callee string) error {
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	for _, st := range []string{
		`SET session_replication_role = replica`,
		addIngestRowsSQL,
		`SET session_replication_role = DEFAULT`,
		`VACUUM (ANALYZE) delegations`,
	} {
		var args []any
		if st == addIngestRowsSQL {
			args = []any{n, callee}
		}
		if _, err := conn.Exec(ctx, st, args...); err != nil {
			return fmt.Errorf("adding ingest rows: %w", err)
		}
	}
	return nil
}

// addIngestRowsSQL inserts rows i1..i$1 of callee $2 (or 89 callees).
const addIngestRowsSQL = `
	INSERT INTO delegations (delegation_id, caller_id, callee_id, task_preview, status, last_heartbeat, deadline, created_at)
	SELECT 'i' || g, 'caller-' || (g % 97), COALESCE(NULLIF($2::text, ''), 'callee-' || (g % 89)), 'ingest task number ' || g,
	       'in_progress', now() - interval '2 minutes', now() + interval '6 hours', now() - interval '1 hour'
	FROM generate_series(1, $1::int) g`

// dropIngestRows removes the ingest rows again, so the daemon meets the same
// rows in flight as the sweeps did.
// The rows are in flight, which a schema with retention's delete guard
// refuses to delete: the bench removes its own rows with triggers off, as
// it added them.
func (db *ledgerDB) dropIngestRows(ctx context.Context) {
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		db.srv.logf("removing ingest rows: %v", err)
		return
	}
	defer conn.Release()
	for _, st := range []string{
		`SET session_replication_role = replica`,
		`DELETE FROM delegations WHERE delegation_id LIKE 'i%'`,
		`SET session_replication_role = DEFAULT`,
		`VACUUM (ANALYZE) delegations`,
	} {
		if _, err := conn.Exec(ctx, st); err != nil {
			db.srv.logf("removing ingest rows: %v", err)
			return
		}
	}
}

// tableUpdates reads the delegations table's update counters.
func tableUpdates(ctx context.Context, db *ledgerDB) (upd, hot int64, err error) {
	err = db.pool.QueryRow(ctx, `
		SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'delegations'`).Scan(&upd, &hot)
	return upd, hot, err
}

// singleRows is the number of ingest rows the single-row path cycles
// through (at most Config.IngestRows): at its rate, a row comes round about
// every ten seconds, as with the other paths over all Config.IngestRows rows.
// At the rates measured a row comes round every few seconds, as with tasks
// that beat every few seconds. A beat that moves the row into a new minute
// changes an indexed column (heartbeat_minute) and cannot be HOT.
const singleRows = 40_000

// ingestWarmupCap bounds the warm-up cycle of a configuration; warm-up and
// measurement start with at least ingestMinuteLeft left in the minute, so
// that they share it.
const (
	ingestWarmupCap  = 20 * time.Second
	ingestMinuteLeft = 30 * time.Second
)

// ingestState is what carries over from a configuration's warm-up to its
// measurement: each writer's place in its cycle.
type ingestState struct {
	path    string
	writers int
	rows    int
	orders  [][]int       // per writer, its rows in the order it beats them
	next    []int         // per writer, the position of its next beat
	shared  atomic.Int64  // the coalescer's callers: the next place in one shared cycle
	perm    []int         // the coalescer's cycle: every row once, shuffled
	cycled  []atomic.Bool // per writer (one for the coalescer): a full cycle is done
	api     *apiTarget    // PathHTTPMany's API
}

func newIngestState(path string, writers, rows int) *ingestState {
	st := &ingestState{path: path, writers: writers, rows: rows}
	if path == PathSingle {
		st.rows = min(singleRows, rows)
	}
	per := st.rows / writers
	for range writers {
		st.orders = append(st.orders, rand.Perm(per))
		st.next = append(st.next, 0)
	}
	st.cycled = make([]atomic.Bool, writers)
	if path == PathCoalesce {
		st.perm = rand.Perm(st.rows)
	}
	return st
}

// idOf is the k-th row of writer w: writers beat disjoint rows (each service
// instance beats its own tasks).
func (st *ingestState) idOf(w, k int) string { return fmt.Sprintf("i%d", 1+w+k*st.writers) }

// phaseResult is what one phase of a configuration measured.
type phaseResult struct {
	beats   int64
	elapsed time.Duration
	lats    []time.Duration
	batch   float64
	cpu     time.Duration // the server's CPU time (see serverCPU)
}

// runIngest runs one configuration: a warm-up phase until every writer has
// beaten each of its rows once, so each row's previous beat is one cycle
// old and in the same minute (the phases start early enough in a minute to
// end in it), then cfg.IngestDuration measured. PathManyNewMinute has no
// warm-up: its rows were last beaten minutes before. Each phase has its own
// connections, closed at its end, so the table statistics (n_tup_upd,
// n_tup_hot_upd) backends report when they exit are split between phases.
func runIngest(ctx context.Context, cfg Config, db *ledgerDB, path string, writers int) (IngestRow, error) {
	return runIngestState(ctx, cfg, db, newIngestState(path, writers, cfg.IngestRows))
}

// runIngestState is runIngest of a prepared state.
func runIngestState(ctx context.Context, cfg Config, db *ledgerDB, st *ingestState) (IngestRow, error) {
	path, writers := st.path, st.writers
	row := IngestRow{Path: path, Writers: writers}
	if path != PathManyNewMinute {
		need := min(ingestMinuteLeft, 5*cfg.IngestDuration+5*time.Second)
		now := time.Now()
		if left := now.Truncate(time.Minute).Add(time.Minute).Sub(now); left < need {
			time.Sleep(left + 200*time.Millisecond)
		}
		if _, err := runPhase(ctx, db, st, ingestWarmupCap, true); err != nil {
			return row, fmt.Errorf("warm-up: %w", err)
		}
	}
	time.Sleep(700 * time.Millisecond)
	upd0, hot0, err := tableUpdates(ctx, db)
	if err != nil {
		return row, err
	}
	ph, err := runPhase(ctx, db, st, cfg.IngestDuration, false)
	if err != nil {
		return row, err
	}
	// Backends report their table statistics when they exit.
	time.Sleep(700 * time.Millisecond)
	upd1, hot1, err := tableUpdates(ctx, db)
	if err != nil {
		return row, err
	}
	row.Beats = ph.beats
	row.BeatsPerSec = float64(ph.beats) / ph.elapsed.Seconds()
	row.Latency = dist(ph.lats)
	row.BatchAvg = ph.batch
	row.ServerCPU = ph.cpu
	row.Updates, row.HotUpdates = upd1-upd0, hot1-hot0
	return row, nil
}

// runPhase runs the writers of st for d, or, with untilCycled, until every
// writer has gone once through its rows (at most d).
func runPhase(ctx context.Context, db *ledgerDB, st *ingestState, d time.Duration, untilCycled bool) (phaseResult, error) {
	var res phaseResult
	writers := st.writers
	pcfg, err := pgxpool.ParseConfig(db.url)
	if err != nil {
		return res, err
	}
	pcfg.MaxConns = int32(writers)
	pcfg.MinConns = int32(writers)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return res, err
	}
	defer pool.Close()
	// Open every connection before the clock starts.
	var conns []*pgxpool.Conn
	for range writers {
		c, err := pool.Acquire(ctx)
		if err != nil {
			return res, err
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		c.Release()
	}
	// The server's CPU from here to the end of the phase: every process
	// of the database, the phase's backends included (they end with it).
	cpu0 := db.serverCPU(ctx)
	for i := range st.cycled {
		st.cycled[i].Store(false)
	}

	l := ledger.New(pool)
	var (
		stop    atomic.Bool
		beats   atomic.Int64
		mu      sync.Mutex
		firstEr error
		wg      sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		if firstEr == nil {
			firstEr = err
		}
		mu.Unlock()
		stop.Store(true)
	}
	record := func(local []time.Duration) {
		mu.Lock()
		res.lats = append(res.lats, local...)
		mu.Unlock()
	}
	done := func() bool {
		if stop.Load() {
			return true
		}
		if !untilCycled {
			return false
		}
		for i := range st.cycled {
			if !st.cycled[i].Load() {
				return false
			}
		}
		stop.Store(true)
		return true
	}
	// advance moves writer w's cycle on by one and returns the row to beat.
	advance := func(w int) string {
		order := st.orders[w]
		id := st.idOf(w, order[st.next[w]])
		st.next[w]++
		if st.next[w] == len(order) {
			st.next[w] = 0
			st.cycled[w].Store(true)
		}
		return id
	}

	start := time.Now()
	timer := time.AfterFunc(d, func() { stop.Store(true) })
	defer timer.Stop()
	var coalescer *ledger.Coalescer
	switch st.path {
	case PathSingle:
		for w := range writers {
			wg.Go(func() {
				var local []time.Duration
				defer func() { record(local) }()
				for !done() {
					id := advance(w)
					t := time.Now()
					hb, err := l.Heartbeat(ctx, id)
					if err != nil {
						fail(err)
						return
					}
					if !hb.Live {
						fail(fmt.Errorf("%s reported not live", id))
						return
					}
					local = append(local, time.Since(t))
					beats.Add(1)
				}
			})
		}
	case PathManyProgressSame, PathManyProgress:
		for w := range writers {
			wg.Go(func() {
				var local []time.Duration
				defer func() { record(local) }()
				beatsOf := make([]ledger.Beat, min(1000, len(st.orders[w])))
				var seq int64
				for !done() {
					seq++
					for i := range beatsOf {
						id := advance(w)
						p := progressOf(id, 1)
						if st.path == PathManyProgress {
							p = progressOf(id, seq)
						}
						beatsOf[i] = ledger.Beat{ID: id, Progress: p}
					}
					t := time.Now()
					notLive, err := l.HeartbeatBeats(ctx, beatsOf)
					if err != nil {
						fail(err)
						return
					}
					if len(notLive) > 0 {
						fail(fmt.Errorf("%d live rows reported not live", len(notLive)))
						return
					}
					local = append(local, time.Since(t))
					beats.Add(int64(len(beatsOf)))
				}
			})
		}
		res.batch = float64(min(1000, len(st.orders[0])))
	case PathMany, PathManyNewMinute:
		for w := range writers {
			wg.Go(func() {
				var local []time.Duration
				defer func() { record(local) }()
				ids := make([]string, min(1000, len(st.orders[w])))
				for !done() {
					for i := range ids {
						ids[i] = advance(w)
					}
					t := time.Now()
					notLive, err := l.HeartbeatMany(ctx, ids)
					if err != nil {
						fail(err)
						return
					}
					if len(notLive) > 0 {
						fail(fmt.Errorf("%d live rows reported not live", len(notLive)))
						return
					}
					local = append(local, time.Since(t))
					beats.Add(int64(len(ids)))
				}
			})
		}
		res.batch = float64(min(1000, len(st.orders[0])))
	case PathHTTPMany:
		if st.api == nil {
			return res, errors.New("no API to post heartbeats to")
		}
		for w := range writers {
			wg.Go(func() {
				var local []time.Duration
				defer func() { record(local) }()
				ids := make([]string, min(1000, len(st.orders[w])))
				for !done() {
					for i := range ids {
						ids[i] = advance(w)
					}
					t := time.Now()
					if err := st.api.postBeats(ctx, ids); err != nil {
						fail(err)
						return
					}
					local = append(local, time.Since(t))
					beats.Add(int64(len(ids)))
				}
			})
		}
		res.batch = float64(min(1000, len(st.orders[0])))
	case PathCoalesce:
		var err error
		if coalescer, err = ledger.NewCoalescer(l, ledger.CoalescerConfig{Flushers: writers}); err != nil {
			return res, err
		}
		if err := coalescer.Start(ctx); err != nil {
			return res, err
		}
		for range coalesceCallers * writers {
			wg.Go(func() {
				var local []time.Duration
				defer func() { record(local) }()
				for !done() {
					n := st.shared.Add(1)
					if n%int64(st.rows) == 0 {
						st.cycled[0].Store(true)
						for i := 1; i < len(st.cycled); i++ {
							st.cycled[i].Store(true)
						}
					}
					id := fmt.Sprintf("i%d", 1+st.perm[n%int64(st.rows)])
					t := time.Now()
					live, err := coalescer.Beat(ctx, id)
					if err != nil {
						fail(err)
						return
					}
					if !live {
						fail(fmt.Errorf("%s reported not live", id))
						return
					}
					local = append(local, time.Since(t))
					beats.Add(1)
				}
			})
		}
	default:
		return res, fmt.Errorf("unknown ingest path %q", st.path)
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.cpu = db.serverCPU(ctx).sub(cpu0)
	if coalescer != nil {
		coalescer.Stop()
		if cs := coalescer.Stats(); cs.Flushes > 0 {
			res.batch = float64(cs.IDs) / float64(cs.Flushes)
		}
	}
	res.beats = beats.Load()
	if firstEr != nil {
		return res, firstEr
	}
	return res, nil
}
