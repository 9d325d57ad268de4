package bench

import (
	"context"
	"encoding/json"
	"fmt"
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

// ProgressBytes is the size of the progress the ingest paths report.
const ProgressBytes = 200

// progressOf is row id's progress of about ProgressBytes; seq changes it
// (PathManyProgress), a constant keeps it (PathManyProgressSame).
func progressOf(id string, seq int64) json.RawMessage {
	head := fmt.Sprintf(`{"task":%q,"step":%d,"note":"`, id, seq)
	return json.RawMessage(head + strings.Repeat("x", max(ProgressBytes-len(head)-2, 0)) + `"}`)
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
	pool, err := db.newPool(ctx, 4)
	if err != nil {
		return err
	}
	defer pool.Close()
	sc := RulesOn
	sc.HeartbeatTimeout = benchTimeout
	sc.NotifyChannel = sweep.NotifyChannelDefault
	sw, err := sweep.New(pool, sc)
	if err != nil {
		return err
	}
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
	for range 3 {
		if _, err := sw.RunOnce(ctx); err != nil {
			return err
		}
	}
	times := make([]time.Duration, 0, cfg.SweepRuns)
	for range cfg.SweepRuns {
		res, err := sw.RunOnce(ctx)
		if err != nil {
			return err
		}
		if res.Swept != 0 {
			return fmt.Errorf("nothing-eligible run with the new rules on swept %d rows (%v)", res.Swept, res.ByReason())
		}
		times = append(times, res.Duration)
	}
	sr.NothingRules = dist(times)
	db.srv.logf("%d rows: nothing eligible with the progress, queue and start rules on p50 %s p95 %s",
		db.rows, sr.NothingRules.P50, sr.NothingRules.P95)
	return nil
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
			fmt.Sprintf("%.2f (%s vs %s rows/s)", x, rateStr(moved.BeatsPerSec), rateStr(plain.BeatsPerSec)))
	} else {
		add(fmt.Sprintf("HeartbeatMany with a changed %d-byte progress vs without, 4 writers", ProgressBytes), "≥ 0.8", false, false, "not measured")
	}
}

// measureProgressOnly is measureSize under Config.ProgressOnly.
func measureProgressOnly(ctx context.Context, cfg Config, db *ledgerDB, keep *keeper, sr *SizeResult, last bool, r *Results) error {
	if err := measureSweeps(ctx, cfg, db, sr); err != nil {
		r.problem(cfg, "sweeps at %d rows: %v", db.rows, err)
	}
	if err := measureNothingRules(ctx, cfg, db, sr); err != nil {
		r.problem(cfg, "sweeps with the new rules on at %d rows: %v", db.rows, err)
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
	for _, path := range []string{PathMany, PathManyProgressSame, PathManyProgress} {
		w := IngestWriters[len(IngestWriters)-1]
		row, err := runIngest(ctx, cfg, db, path, w)
		if err != nil {
			r.problem(cfg, "ingest %s: %v", path, err)
			continue
		}
		db.srv.logf("ingest %-18s writers=%d: %.0f beats/s p50 %s p99 %s, %d updates (%.1f%% HOT) for %d beats",
			path, w, row.BeatsPerSec, row.Latency.P50, row.Latency.P99, row.Updates, 100*row.HotShare(), row.Beats)
		r.Ingest = append(r.Ingest, row)
	}
	return nil
}
