package bench

import (
	"context"
	"fmt"
	"os"
	"strings"
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

// retentionTargets judges the prune passes and the steady state.
func (r *Results) retentionTargets() []Target {
	var out []Target
	add := func(name, want string, known, met bool, figure string) {
		out = append(out, Target{Name: name, Want: want, Figure: figure, Met: known && met, Known: known})
	}
	for _, s := range r.Sizes {
		if len(s.Prunes) == 0 {
			continue
		}
		v := pruneRate(s.Prunes, false)
		add(fmt.Sprintf("prune rate at %s rows, archive off (delegations/s, %d events each)", count(s.Rows), pruneEventsPerRow),
			fmt.Sprintf("≥ %s rows/s", rateStr(PruneTarget)), v > 0, v >= PruneTarget,
			fmt.Sprintf("%s rows/s (archive on: %s rows/s)", rateStr(v), rateStr(pruneRate(s.Prunes, true))))
	}
	st := r.Steady
	if st == nil {
		return out
	}
	if len(st.Thirds) < 3 {
		add("retention steady state", "", false, false, "not measured")
		return out
	}
	first, last := st.Thirds[0], st.Thirds[2]
	add(fmt.Sprintf("steady state: table + index size at day %d vs day %d", last.LastDay, first.LastDay),
		fmt.Sprintf("≤ %.1f×", SteadySizeRatioTarget), true, st.SizeRatio() <= SteadySizeRatioTarget,
		fmt.Sprintf("%.2f× (%s vs %s)", st.SizeRatio(), mib(last.Bytes), mib(first.Bytes)))
	for _, c := range []struct {
		name string
		p50  func(SteadyThird) time.Duration
	}{
		{"nothing-eligible sweep", func(t SteadyThird) time.Duration { return t.Sweep.P50 }},
		{"console overview page", func(t SteadyThird) time.Duration { return t.Overview.P50 }},
		{"console delegation list page", func(t SteadyThird) time.Duration { return t.List.P50 }},
	} {
		x := st.timeRatio(c.p50)
		add(fmt.Sprintf("steady state: %s p50, last third vs first", c.name), fmt.Sprintf("≤ %.1f×", SteadyTimeRatioTarget),
			x > 0, x <= SteadyTimeRatioTarget, fmt.Sprintf("%.2f× (%s vs %s)", x, ms(c.p50(last)), ms(c.p50(first))))
	}
	for _, c := range []struct {
		name string
		bufs func(SteadyThird) float64
	}{
		{"nothing-eligible sweep", func(t SteadyThird) float64 { return t.SweepBuffers }},
		{"console overview page", func(t SteadyThird) float64 { return t.OverviewBuffers }},
		{"console delegation list page", func(t SteadyThird) float64 { return t.ListBuffers }},
	} {
		x := ratio(c.bufs(last), c.bufs(first))
		add(fmt.Sprintf("steady state: %s work (shared buffers), last third vs first", c.name), fmt.Sprintf("≤ %.1f×", SteadyTimeRatioTarget),
			c.bufs(first) > 0, x <= SteadyTimeRatioTarget, fmt.Sprintf("%.2f× (%.0f vs %.0f buffers)", x, c.bufs(last), c.bufs(first)))
	}
	n := st.LateSeqScans()
	add("steady state: sequential scans of delegations and delegation_events, last two thirds", "0", true, n == 0,
		fmt.Sprintf("%d", n))
	return out
}

// renderRetention writes the report's Retention section.
func renderRetention(w func(string, ...any), r *Results) {
	var prunes bool
	for _, s := range r.Sizes {
		prunes = prunes || len(s.Prunes) > 0
	}
	st := r.Steady
	if !prunes && st == nil {
		return
	}
	w("## Retention\n\n")
	if prunes {
		w("The real `retention.Pruner` (the daemon's path: `RunOnce`, default policy, batches of %d), over a backlog of\n", retention.BatchSizeDefault)
		w("old terminal delegations (80%% completed, 10%% failed, 10%% stuck, finished 100 days ago), %d events each\n", pruneEventsPerRow)
		w("(created, in_progress, terminal), added with triggers off next to the ledger's rows and vacuumed. Each pass\n")
		w("must delete the whole backlog and its events. Archive on writes each batch as gzip JSON Lines, fsynced, before\n")
		w("its delete commits.\n\n")
		w("| ledger rows | archive | delegations | events | batches | time | delegations/s |\n|---|---|---|---|---|---|---|\n")
		for _, s := range r.Sizes {
			for _, p := range s.Prunes {
				a := "off"
				if p.Archive {
					a = fmt.Sprintf("on (%s written)", mib(p.ArchiveBytes))
				}
				w("| %s | %s | %s | %s | %d | %s | %s |\n", count(s.Rows), a, count(p.Rows), count(p.Events), p.Batches,
					secs(p.Duration), rateStr(p.Rate()))
			}
		}
		w("\n")
	}
	if st == nil {
		return
	}
	w("### Steady state over a simulated month\n\n")
	w("%d simulated days of %s delegations a day (%.1f%% completed, %.1f%% failed, %.1f%% abandoned in progress and\n",
		st.Days, count(st.PerDay), float64(shareCompleted)/10, float64(shareFailed)/10, float64(shareAbandoned)/10)
	w("%.1f%% left queued, both marked stuck by the sweeper the next day), %s delegations in progress all month, with\n",
		float64(shareQueued)/10, count(st.LongRunning))
	w("retention on: completed kept %s, failed %s, stuck %s (the default policy, 30/90/90 days, scaled down so that\n",
		days(st.Completed), days(st.Failed), days(st.Stuck))
	w("the steady state is reached before the first third ends), on a server of its own.\n\n")
	w("**Time compression.** The server runs under libfaketime (`LD_PRELOAD`), and each round the bench moves its clock a\n")
	w("day forward (the offset file, read again by every server process within a second or two; the bench waits until\n")
	w("every connection reads the new day). `now()` is the only clock the ledger, the sweeper and the pruner judge by,\n")
	w("so every default, every trigger's `updated_at` (hence the generated `finished_at`) and every cut-off moves with\n")
	w("it: no row is written with a time of the bench's choosing and no trigger is off. The monotonic clock is real, so\n")
	w("timeouts and the durations below are real. A day: the clock moves; the long-running rows beat; the real\n")
	w("`sweep.Sweeper` marks stuck exactly the rows left the day before (checked); the real `retention.Pruner` runs once;\n")
	w("autovacuum catches up; the day's rows, in %d waves (a real day's work arrives all day, so only a few thousand are\n", steadyWaves)
	w("in flight at once), are inserted queued (set-based `INSERT`, 1000 a statement, triggers on), moved to `in_progress`\n")
	w("(100 a statement), beaten twice through `Ledger.HeartbeatMany` (1000 a call) and finished (100 a statement);\n")
	w("autovacuum catches up; then the measurements: total size of both tables\n")
	w("(`pg_total_relation_size`, indexes and TOAST included), %d nothing-eligible sweeps, and the console's overview\n", r.steadySweepRuns())
	w("(`/`) and delegation list (`/delegations`) served in process to a reader's Bearer token.\n\n")
	w("**Autovacuum** is on, its schedule compressed too (`autovacuum_naptime=1s`, `autovacuum_vacuum_cost_delay=0`), and\n")
	w("the bench never runs `VACUUM` itself. \"Catches up\" means the bench waits (at most %s) until autovacuum has\n", settleTimeout)
	w("vacuumed each table once after the writes, or, for a table below its own autovacuum trigger, %s passed\n", settleQuiet)
	w("without a vacuum starting: a real day gives the launcher 1440 naps and a busy table dozens of vacuums, a\n")
	w("simulated one lasts seconds, and without the wait the size measured follows the machine's speed (one run without\n")
	w("it, 10k a day: 1.13×). The wait between the prune and the work stands for the hours between the pruner's passes and\n")
	w("a day's work: the index pages a prune empties are free again for the next inserts only after a vacuum. It took\n")
	settled := "both tables settled every time"
	if n := st.unsettled(); n > 0 {
		settled = fmt.Sprintf("on %d of %d days the wait ran out before both tables settled", n, len(st.Rounds))
	}
	w("%s over the month; %s.\n\n", st.vacuumWait().Round(time.Second), settled)
	w("| third | last day | rows | events | tables + indexes | sweep p50 (buffers) | overview p50 (buffers) | list p50 (buffers) | sequential scans |\n")
	w("|---|---|---|---|---|---|---|---|---|\n")
	for i, t := range st.Thirds {
		w("| %d | %d | %s | %s | %s | %s (%.0f) | %s (%.0f) | %s (%.0f) | %d |\n", i+1, t.LastDay, count(int(t.Rows)), count(int(t.Events)),
			mib(t.Bytes), ms(t.Sweep.P50), t.SweepBuffers, ms(t.Overview.P50), t.OverviewBuffers, ms(t.List.P50), t.ListBuffers, t.SeqScans)
	}
	w("\n")
	w("Times are real and move with the machine's load; the buffers (shared buffers hit or read by the statements of\n")
	w("one sweep or one page load, from `pg_stat_statements`, averaged over the third's days) are the work, which the\n")
	w("load does not change.\n\n")
	w("Targets: size at the end ≤ %.1f× the size at the end of the first third; each p50 of the last third ≤ %.1f× its\n",
		SteadySizeRatioTarget, SteadyTimeRatioTarget)
	w("first-third p50 (flat), and the same for the buffers; no sequential scan of `delegations` or `delegation_events` by\n")
	w("any statement run (sweep, prune, console, the workload's writes and heartbeats) in the last two thirds, read from\n")
	w("`pg_stat_user_tables` once every connection has flushed its statistics (the bench's own daily row counts read an\n")
	w("index; on the first days the tables are a few pages, where a scan is the right plan). Autovacuum ran %d times and autoanalyze %d times on the two\n", st.Autovacuums, st.Autoanalyzes)
	w("tables; the run took %s (load average at its end %s).\n\n", st.Elapsed.Round(time.Second), strings.Join(st.Load, " "))
	w("| day | swept | pruned | prune time | rows | tables + indexes | sweep p50 | overview p50 | list p50 |\n")
	w("|---|---|---|---|---|---|---|---|---|\n")
	for _, d := range st.Rounds {
		w("| %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", d.Day, count(d.Swept), count(d.Pruned), ms(d.PruneDuration),
			count(int(d.Rows)), mib(d.Bytes), ms(d.Sweep.P50), ms(d.Overview.P50), ms(d.List.P50))
	}
	w("\n")
}

// steadySweepRuns is the nothing-eligible sweeps of a steady-state day.
func (r *Results) steadySweepRuns() int {
	if r.Steady != nil && len(r.Steady.Rounds) > 0 {
		return r.Steady.Rounds[0].Sweep.N
	}
	return SteadySweepRunsDefault
}

func days(d time.Duration) string {
	if n := d.Hours() / 24; n != 1 {
		return fmt.Sprintf("%g days", n)
	}
	return "1 day"
}
