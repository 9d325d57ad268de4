package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/sweep"
)

// The measurements of issue 20 (progress, stalls and the waiting states).

// Ingest paths with progress: HeartbeatBeats, 1000 beats per call, each
// with a progress of about ProgressBytes.
const (
	// PathManyProgressSame reports the progress each row already has: the
	// value does not change, so progress_at does not move.
	PathManyProgressSame = "many-progress-same"
	// PathManyProgress reports a new progress on every beat: progress_at
	// moves (within the minute of the previous beat, so its bin does not).
	PathManyProgress = "many-progress"
)

// progressRounds is the number of interleaved rounds of the progress-only
// ingest.
const progressRounds = 5

// ProgressBytes is the size of the progress the ingest paths report.
const ProgressBytes = 200

// progressOf is row id's progress of about ProgressBytes; seq changes it
// (PathManyProgress), a constant keeps it (PathManyProgressSame). It is
// appended byte by byte, not formatted: the writers share the machine with
// the server, and the bench's own work should cost it as little as a
// worker's ready-made progress would. (Ids are plain: no JSON escaping.)
func progressOf(id string, seq int64) json.RawMessage {
	b := make([]byte, 0, ProgressBytes+24)
	b = append(b, `{"task":"`...)
	b = append(b, id...)
	b = append(b, `","step":`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `,"note":"`...)
	b = append(b, progressPad[:max(ProgressBytes-len(b)-2, 0)]...)
	return append(b, `"}`...)
}

// progressPad pads progressOf.
var progressPad = strings.Repeat("x", ProgressBytes)

// setIngestProgress gives every ingest row the progress the
// PathManyProgressSame writers report (progressOf(id, 1)), dated two
// minutes ago, as the triggers would have: the ledger of workers that
// already report progress, whose rows are as wide as they will stay. (The
// first progress of a row widens it, and the row version may then not fit
// its page: that one-time move is not what a heartbeat costs.)
func (db *ledgerDB) setIngestProgress(ctx context.Context) error {
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	for _, st := range []string{
		`SET session_replication_role = replica`,
		`UPDATE delegations SET
		     progress = ('{"task":"' || delegation_id || '","step":1,"note":"'
		                 || repeat('x', greatest(` + fmt.Sprint(ProgressBytes) + ` - length('{"task":"' || delegation_id || '","step":1,"note":"') - 2, 0))
		                 || '"}')::jsonb,
		     progress_at = now() - interval '2 minutes',
		     progress_minute = date_bin('1 minute', now() - interval '2 minutes', TIMESTAMPTZ '2000-01-01 00:00:00+00')
		 WHERE delegation_id LIKE 'i%'`,
		`SET session_replication_role = DEFAULT`,
		`VACUUM (ANALYZE) delegations`,
	} {
		if _, err := conn.Exec(ctx, st); err != nil {
			return fmt.Errorf("giving the ingest rows a progress: %w", err)
		}
	}
	return nil
}

// RulesOn is the sweep configuration of the nothing-eligible runs "with the
// new rules on": every global timeout of issue 20 set.
var RulesOn = sweep.Config{
	ProgressTimeout: 10 * time.Minute,
	QueueTimeout:    time.Hour,
	StartTimeout:    10 * time.Minute,
}

// measureNothingRules measures nothing-eligible runs with every rule on,
// after every live row reported a progress (so the stalled rule's index
// holds them all, as in a ledger whose workers report progress).
func measureNothingRules(ctx context.Context, cfg Config, db *ledgerDB, sr *SizeResult) error {
	l := ledger.New(db.pool)
	beats := make([]ledger.Beat, 0, 1000)
	for i := 1; i <= cfg.InFlight; i++ {
		id := fmt.Sprintf("f%d", i)
		beats = append(beats, ledger.Beat{ID: id, Progress: progressOf(id, 1)})
		if len(beats) == cap(beats) || i == cfg.InFlight {
			notLive, err := l.HeartbeatBeats(ctx, beats)
			if err != nil {
				return err
			}
			if len(notLive) > 0 {
				return fmt.Errorf("%d live rows reported not live, e.g. %s", len(notLive), notLive[0])
			}
			beats = beats[:0]
		}
	}
	d, err := measureNothing(ctx, cfg, db, RulesOn)
	if err != nil {
		return err
	}
	sr.NothingRules = d
	db.srv.logf("%d rows: nothing eligible with the progress, queue and start rules on p50 %s p95 %s",
		db.rows, d.P50, d.P95)
	return nil
}

// measureNothing times cfg.SweepRuns runs of a sweeper configured as sc
// (plus the bench's heartbeat timeout) that must find nothing.
func measureNothing(ctx context.Context, cfg Config, db *ledgerDB, sc sweep.Config) (Dist, error) {
	pool, err := db.newPool(ctx, 4)
	if err != nil {
		return Dist{}, err
	}
	defer pool.Close()
	sc.HeartbeatTimeout = benchTimeout
	sc.NotifyChannel = sweep.NotifyChannelDefault
	sw, err := sweep.New(pool, sc)
	if err != nil {
		return Dist{}, err
	}
	for range 3 {
		if _, err := sw.RunOnce(ctx); err != nil {
			return Dist{}, err
		}
	}
	times := make([]time.Duration, 0, cfg.SweepRuns)
	for range cfg.SweepRuns {
		res, err := sw.RunOnce(ctx)
		if err != nil {
			return Dist{}, err
		}
		if res.Swept != 0 {
			return Dist{}, fmt.Errorf("nothing-eligible run swept %d rows (%v)", res.Swept, res.ByReason())
		}
		times = append(times, res.Duration)
	}
	return dist(times), nil
}

// progressTargets are issue 20's targets.
func (r *Results) progressTargets(add func(name, want string, known, met bool, figure string)) {
	if n := len(r.Sizes); n > 0 {
		big := r.Sizes[n-1]
		add(fmt.Sprintf("nothing-eligible sweep at %s rows, %s in flight, progress/queue/start rules on (p50, issue 20)",
			count(big.Rows), count(r.Config.InFlight)),
			"≤ 1 ms", big.NothingRules.N > 0, big.NothingRules.P50 <= time.Millisecond,
			fmt.Sprintf("%s (p95 %s; rules off: %s)", ms(big.NothingRules.P50), ms(big.NothingRules.P95), ms(big.Nothing.P50)))
	}
	same, moved, plain := r.ingest(PathManyProgressSame, 4), r.ingest(PathManyProgress, 4), r.ingest(PathMany, 4)
	hot := func(row *IngestRow, want float64, what string) {
		if row == nil {
			add(what, fmt.Sprintf("≥ %.0f%%", 100*want), false, false, "not measured")
			return
		}
		add(what, fmt.Sprintf("≥ %.0f%%", 100*want), row.Updates > 0, row.HotShare() >= want,
			fmt.Sprintf("%.1f%% of %d updates", 100*row.HotShare(), row.Updates))
	}
	hot(same, 0.95, fmt.Sprintf("HOT share, heartbeats with an unchanged %d-byte progress, within the bin (4 writers)", ProgressBytes))
	hot(moved, 0.90, fmt.Sprintf("HOT share, heartbeats with a changed %d-byte progress, within the bin (4 writers)", ProgressBytes))
	if moved != nil && plain != nil && plain.BeatsPerSec > 0 {
		x := moved.BeatsPerSec / plain.BeatsPerSec
		add(fmt.Sprintf("HeartbeatMany with a changed %d-byte progress vs without, 4 writers", ProgressBytes), "≥ 0.8", true, x >= 0.8,
			fmt.Sprintf("%.2f (%s vs %s rows/s; server CPU %.1f vs %.1f µs a beat)", x, rateStr(moved.BeatsPerSec), rateStr(plain.BeatsPerSec),
				moved.CPUPerBeat(), plain.CPUPerBeat()))
	} else {
		add(fmt.Sprintf("HeartbeatMany with a changed %d-byte progress vs without, 4 writers", ProgressBytes), "≥ 0.8", false, false, "not measured")
	}
}

// measureProgressOnly is measureSize under Config.ProgressOnly.
func measureProgressOnly(ctx context.Context, cfg Config, db *ledgerDB, keep *keeper, sr *SizeResult, last bool, r *Results) error {
	// Rules off, then on, then off and on again: the load of a shared
	// machine drifts, and the first runs after a load meet autovacuum.
	if err := beatAll(ctx, db, cfg.InFlight); err != nil {
		return err
	}
	for range 2 {
		d, err := measureNothing(ctx, cfg, db, sweep.Config{})
		if err != nil {
			r.problem(cfg, "sweeps at %d rows: %v", db.rows, err)
		}
		sr.Nothing = d
		db.srv.logf("%d rows: nothing eligible, rules off, p50 %s p95 %s", db.rows, d.P50, d.P95)
		if err := measureNothingRules(ctx, cfg, db, sr); err != nil {
			r.problem(cfg, "sweeps with the new rules on at %d rows: %v", db.rows, err)
		}
	}
	r.Sizes = append(r.Sizes, *sr)
	if !last {
		return nil
	}
	keep.Pause()
	defer func() {
		if err := keep.Resume(ctx); err != nil {
			r.problem(cfg, "beating the live rows: %v", err)
		}
	}()
	if err := db.addIngestRows(ctx, cfg.IngestRows, ""); err != nil {
		return err
	}
	defer db.dropIngestRows(ctx)
	// The rows report a progress from the start (each path's warm-up brings
	// every row into the current minute, as for PathMany). The three paths
	// run in turn, progressRounds times, and each keeps its median round: on
	// a shared machine the load drifts between runs, and interleaving
	// (in an order that rotates from round to round) spreads the drift
	// over all three. Each run starts on a vacuumed
	// table: every path leaves about as many dead row versions a beat, and
	// autovacuum of a 5M-row ledger (due every million or so) would
	// otherwise land on whichever run happens to cross its threshold and
	// halve that run alone.
	if err := db.setIngestProgress(ctx); err != nil {
		return err
	}
	w := IngestWriters[len(IngestWriters)-1]
	byPath := map[string][]IngestRow{}
	paths := []string{PathMany, PathManyProgressSame, PathManyProgress}
	for round := range progressRounds {
		// Each round starts with the next path, so that no path is always
		// the one run first (or right after another) in its round.
		for k := range paths {
			path := paths[(round+k)%len(paths)]
			if err := db.vacuum(ctx, "ingest "+path); err != nil {
				return err
			}
			row, err := runIngest(ctx, cfg, db, path, w)
			if err != nil {
				r.problem(cfg, "ingest %s: %v", path, err)
				continue
			}
			db.srv.logf("ingest round %d %-18s writers=%d: %.0f beats/s p50 %s p99 %s, %d updates (%.1f%% HOT) for %d beats, server CPU %.1f µs a beat",
				round+1, path, w, row.BeatsPerSec, row.Latency.P50, row.Latency.P99, row.Updates, 100*row.HotShare(), row.Beats, row.CPUPerBeat())
			byPath[path] = append(byPath[path], row)
		}
	}
	for _, path := range paths {
		rows := byPath[path]
		if len(rows) == 0 {
			continue
		}
		slices.SortFunc(rows, func(a, b IngestRow) int { return cmp.Compare(a.BeatsPerSec, b.BeatsPerSec) })
		med := rows[len(rows)/2]
		med.Note = fmt.Sprintf("median of %d interleaved rounds", len(rows))
		r.Ingest = append(r.Ingest, med)
	}
	return nil
}
