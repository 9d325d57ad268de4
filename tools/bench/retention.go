package bench

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/tasksweeper/sweeper/retention"
)

// PruneBacklogDefault is the number of old terminal rows, with three events
// each, that each prune pass deletes; PruneRoundsDefault the number of
// (archive off, archive on) pass pairs per size.
const (
	PruneBacklogDefault = 100_000
	PruneRoundsDefault  = 1
)

// PruneTarget is the prune rate a pass must reach, in delegations per
// second with their events (issue 12).
const PruneTarget = 20_000

// pruneEventsPerRow is the events each backlog row carries: created,
// in_progress and its terminal status, as the audit trigger writes them.
const pruneEventsPerRow = 3

// PruneResult is one pass of the real retention.Pruner (the daemon's path)
// over a backlog of old terminal delegations with their events.
type PruneResult struct {
	Archive bool `json:"archive"`
	// Rows and Events are what the pass deleted; Batches its transactions.
	Rows     int           `json:"rows"`
	Events   int           `json:"events"`
	Batches  int           `json:"batches"`
	Duration time.Duration `json:"duration"`
	// ArchiveBytes is the compressed size of the archive files written.
	ArchiveBytes int64 `json:"archive_bytes,omitempty"`
}

// Rate is delegations deleted per second, with their events.
func (p PruneResult) Rate() float64 {
	if p.Duration <= 0 {
		return 0
	}
	return float64(p.Rows) / p.Duration.Seconds()
}

// pruneRate is the delegations per second of the passes with archive on or
// off, all together.
func pruneRate(ps []PruneResult, archive bool) float64 {
	var rows int
	var d time.Duration
	for _, p := range ps {
		if p.Archive == archive {
			rows += p.Rows
			d += p.Duration
		}
	}
	if d <= 0 {
		return 0
	}
	return float64(rows) / d.Seconds()
}

// addPruneBacklog inserts n terminal rows finished 100 days ago and more
// (past every default retention: 80% completed, 10% failed, 10% stuck) with
// pruneEventsPerRow events each, as the owner with triggers off (a load of
// history, as loadLedger's), then VACUUM ANALYZE, as autovacuum would have
// run while such a backlog aged.
func (db *ledgerDB) addPruneBacklog(ctx context.Context, n int) (string, error) {
	db.seq++
	prefix := fmt.Sprintf("p%d-", db.seq)
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Release()
	stmts := []string{
		`SET session_replication_role = replica`,
		fmt.Sprintf(`
		INSERT INTO delegations (delegation_id, caller_id, callee_id, task_preview, result_preview, error_detail,
		                         status, last_heartbeat, deadline, stuck_reason, created_at, updated_at)
		SELECT '%s' || g, 'caller-' || (g %% 97), 'callee-' || (g %% 89), 'old task number ' || g,
		       CASE WHEN g %% 10 < 8 THEN 'stored result ' || g END,
		       CASE WHEN g %% 10 = 8 THEN 'worker reported an error' END,
		       CASE WHEN g %% 10 < 8 THEN 'completed' WHEN g %% 10 = 8 THEN 'failed' ELSE 'stuck' END,
		       ts - interval '1 minute', ts + interval '6 hours',
		       CASE WHEN g %% 10 = 9 THEN 'heartbeat_timeout' END,
		       ts - interval '5 minutes', ts
		FROM generate_series(1, %d) g,
		     LATERAL (SELECT now() - interval '100 days' - make_interval(secs => g * 0.5)) AS t(ts)`, prefix, n),
		// The audit trail of each: created, in_progress, then terminal.
		fmt.Sprintf(`
		INSERT INTO delegation_events (delegation_id, from_status, to_status, reason, actor, at, caller_id, callee_id)
		SELECT d.delegation_id, s.from_status, COALESCE(s.to_status, d.status),
		       CASE WHEN s.to_status IS NULL THEN d.stuck_reason END, 'bench', d.created_at + s.after,
		       d.caller_id, d.callee_id
		FROM delegations AS d,
		     (VALUES (NULL, 'queued', interval '0'), ('queued', 'in_progress', interval '1 minute'),
		             ('in_progress', NULL, interval '5 minutes')) AS s(from_status, to_status, after)
		WHERE d.delegation_id LIKE '%s%%'
		ORDER BY d.created_at, s.after`, prefix),
		`SET session_replication_role = DEFAULT`,
		`VACUUM (ANALYZE) delegations`,
		`VACUUM (ANALYZE) delegation_events`,
	}
	for _, st := range stmts {
		if _, err := conn.Exec(ctx, st); err != nil {
			return "", fmt.Errorf("adding the prune backlog: %s: %w", firstLine(st), err)
		}
	}
	return prefix, nil
}

// measurePrune adds a backlog of old terminal rows and prunes it with the
// real retention.Pruner (default policy, archive off, then archive on),
// PruneRounds times, in ABBA order.
func measurePrune(ctx context.Context, cfg Config, db *ledgerDB, sr *SizeResult) error {
	pool, err := db.newPool(ctx, 4)
	if err != nil {
		return err
	}
	defer pool.Close()
	dir, err := os.MkdirTemp("", "sweeperbench-archive-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	for round := range cfg.PruneRounds {
		order := []bool{false, true}
		if round%2 == 1 {
			order = []bool{true, false}
		}
		for _, archive := range order {
			if _, err := db.addPruneBacklog(ctx, cfg.PruneBacklog); err != nil {
				return err
			}
			pc := retention.Config{}
			if archive {
				pc.ArchiveDir = dir
			}
			p, err := retention.New(pool, pc)
			if err != nil {
				return err
			}
			res, err := p.RunOnce(ctx)
			if err != nil {
				return fmt.Errorf("prune pass (archive %v): %w", archive, err)
			}
			if res.Pruned != cfg.PruneBacklog || res.EventsPruned != pruneEventsPerRow*cfg.PruneBacklog {
				return fmt.Errorf("prune pass (archive %v) deleted %d rows and %d events, want %d and %d",
					archive, res.Pruned, res.EventsPruned, cfg.PruneBacklog, pruneEventsPerRow*cfg.PruneBacklog)
			}
			pr := PruneResult{Archive: archive, Rows: res.Pruned, Events: res.EventsPruned, Batches: res.Batches,
				Duration: res.Duration, ArchiveBytes: res.ArchiveBytes}
			sr.Prunes = append(sr.Prunes, pr)
			db.srv.logf("%d rows: prune (archive %v) %d rows, %d events in %s: %.0f rows/s",
				db.rows, archive, pr.Rows, pr.Events, pr.Duration.Round(time.Millisecond), pr.Rate())
			if err := os.RemoveAll(dir); err != nil {
				return err
			}
		}
	}
	return nil
}
