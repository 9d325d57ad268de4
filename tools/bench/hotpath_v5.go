package bench

// Version 5's statements, for the version 5 ledger of the hot path
// measurement (hotpath.go). This build's ledger and sweep packages name
// columns that versions 7 to 9 added (progress, retry_on, ...), so they can
// no longer drive a version 5 ledger; the statements below are what the
// version 5 sweeper and ledger ran, copied from this repository's commit
// 7ae4fde (the last commit where migrations.Latest was 5; its child a8bdb2e
// added migration 000006_hot_path):
//
//   - sweep/queries.go: sweptSQL, setActorSQL, oldestMinuteSQL,
//     ownExpirySQL, sweepDeadlineSQL, sweepHeartbeatSQL, sweepOwnTimeoutSQL,
//     oldestHeartbeatExpr, ownNextExpr, gaugesSQL, countInFlightSQL;
//   - sweep/sweeper.go: the rules and their order, a rule's audit detail,
//     RunOnce (each rule in batches of one set_config and one batch
//     statement in one pgx.Batch, until a batch marks fewer rows than the
//     batch size, then the gauges, and the in-flight count when the run
//     marked rows or the last count is older than InFlightRecount);
//   - ledger/queries.go and ledger/ledger.go: setWriterSQL and setStatusSQL
//     as Ledger.SetStatus sent them (one batch), heartbeatManySQL as
//     Ledger.HeartbeatMany ran it (ids sorted and unique).
//
// The statuses passed as parameters are version 5's lifecycle: a move to a
// terminal status (stuck, completed) is applied from queued, dispatched and
// in_progress, which are also the non-terminal statuses heartbeats accept.
// Only the names of the constants changed (a v5 prefix), and the Go around
// them is cut to what the measurement runs (no dry run, schedule, logs,
// metrics or spans; version 5 had no spans).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/migrations"
	"github.com/tasksweeper/sweeper/sweep"
)

// v5Unfinished is version 5's ledger.Sources(stuck), ledger.Sources(completed)
// and ledger.NonTerminal(), as text[] parameters.
var v5Unfinished = []string{"queued", "dispatched", "in_progress"}

const v5SweptSQL = `
SELECT count(*) AS swept,
       count(CASE WHEN $3 <> '' THEN pg_notify($3, json_build_object(
           'delegation_id', delegation_id, 'caller_id', caller_id, 'callee_id', callee_id,
           'reason', stuck_reason, 'last_heartbeat', last_heartbeat, 'deadline', deadline,
           'attempt', attempt)::text) END) AS notified
FROM swept`

const v5SetActorSQL = `
SELECT set_config('sweeper.actor', 'sweeper', true),
       set_config('sweeper.reason', '', true),
       set_config('sweeper.detail', $1, true)`

const v5OldestMinuteSQL = `SELECT min(heartbeat_minute) FROM delegations WHERE status = 'in_progress' AND heartbeat_timeout IS NULL`

const v5OwnExpirySQL = `SELECT min(heartbeat_expires_at) FROM delegations
    WHERE status = 'in_progress' AND heartbeat_timeout IS NOT NULL`

const v5SweepDeadlineSQL = `
WITH swept AS (
    UPDATE delegations AS d
    SET status = 'stuck', stuck_reason = 'deadline_exceeded', updated_at = now()
    WHERE d.delegation_id = ANY(ARRAY(
            SELECT delegation_id FROM delegations
            WHERE status IN ('queued', 'dispatched', 'in_progress')
              AND deadline < now()
            ORDER BY deadline
            LIMIT $1
            FOR UPDATE SKIP LOCKED))
      AND (d.status = ANY($2) AND d.deadline < now()) IS TRUE
    RETURNING d.delegation_id, d.caller_id, d.callee_id, d.status, d.stuck_reason, d.last_heartbeat, d.deadline, d.attempt
)
` + v5SweptSQL

const v5SweepHeartbeatSQL = `
WITH swept AS (
    UPDATE delegations AS d
    SET status = 'stuck', stuck_reason = 'heartbeat_timeout', updated_at = now()
    WHERE d.delegation_id = ANY(ARRAY(
            SELECT delegation_id FROM delegations
            WHERE status = 'in_progress' AND heartbeat_timeout IS NULL
              AND heartbeat_minute >= (` + v5OldestMinuteSQL + `)
              AND heartbeat_minute < now() - make_interval(secs => $4)
              AND last_heartbeat < now() - make_interval(secs => $4)
            ORDER BY heartbeat_minute
            LIMIT $1
            FOR UPDATE SKIP LOCKED))
      AND (d.status = ANY($2) AND d.status = 'in_progress' AND d.heartbeat_timeout IS NULL
           AND d.last_heartbeat < now() - make_interval(secs => $4)) IS TRUE
    RETURNING d.delegation_id, d.caller_id, d.callee_id, d.status, d.stuck_reason, d.last_heartbeat, d.deadline, d.attempt
)
` + v5SweptSQL

const v5SweepOwnTimeoutSQL = `
WITH swept AS (
    UPDATE delegations AS d
    SET status = 'stuck', stuck_reason = 'heartbeat_timeout', updated_at = now()
    WHERE d.delegation_id = ANY(ARRAY(
            SELECT delegation_id FROM delegations
            WHERE status = 'in_progress' AND heartbeat_timeout IS NOT NULL
              AND heartbeat_expires_at >= (` + v5OwnExpirySQL + `)
              AND heartbeat_expires_at < now()
              AND now() - last_heartbeat > heartbeat_timeout
            ORDER BY heartbeat_expires_at
            LIMIT $1
            FOR UPDATE SKIP LOCKED))
      AND (d.status = ANY($2) AND d.status = 'in_progress'
           AND now() - d.last_heartbeat > d.heartbeat_timeout) IS TRUE
    RETURNING d.delegation_id, d.caller_id, d.callee_id, d.status, d.stuck_reason, d.last_heartbeat, d.deadline, d.attempt
)
` + v5SweptSQL

const v5OldestHeartbeatExpr = `
CASE WHEN hb.minute < now() - make_interval(secs => $1) + interval '2 minutes'
     THEN (SELECT CASE WHEN count(*) < 256 OR max(heartbeat_minute) > hb.minute
                       THEN min(last_heartbeat) FILTER (WHERE heartbeat_minute = hb.minute)
                       ELSE hb.minute END
           FROM (SELECT heartbeat_minute, last_heartbeat FROM delegations
                 WHERE status = 'in_progress' AND heartbeat_timeout IS NULL
                   AND heartbeat_minute >= hb.minute AND heartbeat_minute < hb.minute + interval '2 minutes'
                 ORDER BY heartbeat_minute
                 LIMIT 256) AS oldest)
     ELSE hb.minute END`

const v5OwnNextExpr = `
CASE WHEN own.minute < now() + interval '2 minutes'
     THEN (SELECT CASE WHEN count(*) < 256 OR min(expiry) <= max(heartbeat_expires_at)
                       THEN min(expiry) ELSE own.minute END
           FROM (SELECT heartbeat_expires_at,
                        last_heartbeat + make_interval(secs => EXTRACT(EPOCH FROM heartbeat_timeout)::float8) AS expiry
                 FROM delegations
                 WHERE status = 'in_progress' AND heartbeat_timeout IS NOT NULL
                   AND heartbeat_expires_at >= own.minute
                   AND heartbeat_expires_at < own.minute + interval '1 minute'
                 ORDER BY heartbeat_expires_at
                 LIMIT 256) AS earliest)
     ELSE own.minute END`

const v5GaugesSQL = `
SELECT COALESCE(EXTRACT(EPOCH FROM now() - oldest.hb), 0)::float8 AS oldest_heartbeat_age_seconds,
       LEAST(
           EXTRACT(EPOCH FROM oldest.hb + make_interval(secs => $1) - now()),
           EXTRACT(EPOCH FROM own.next - now()),
           EXTRACT(EPOCH FROM (SELECT min(deadline) FROM delegations
                               WHERE status IN ('queued', 'dispatched', 'in_progress')) - now())
       )::float8 AS next_eligible_in_seconds
FROM (SELECT ` + v5OldestHeartbeatExpr + ` AS hb
      FROM (` + v5OldestMinuteSQL + `) AS hb(minute)
      OFFSET 0) AS oldest, -- OFFSET 0: computed once, not once per use of oldest.hb
     (SELECT ` + v5OwnNextExpr + ` AS next
      FROM (` + v5OwnExpirySQL + `) AS own(minute)
      OFFSET 0) AS own`

const v5CountInFlightSQL = `
SELECT count(*) FROM delegations WHERE status IN ('queued', 'dispatched', 'in_progress')`

const v5SetWriterSQL = `
SELECT set_config('sweeper.actor', $1, true),
       set_config('sweeper.reason', $2, true),
       set_config('sweeper.detail', $3, true)`

const v5SetStatusSQL = `
UPDATE delegations
SET status = $2,
    updated_at = now(),
    result_preview = COALESCE(NULLIF($4, ''), result_preview),
    error_detail = COALESCE(NULLIF($5, ''), error_detail)
WHERE delegation_id = $1 AND status = ANY($3)
RETURNING status`

const v5HeartbeatManySQL = `
UPDATE delegations AS d
SET last_heartbeat = now(), updated_at = now()
FROM unnest($1::text[]) AS beat(delegation_id)
WHERE d.delegation_id = beat.delegation_id AND d.status = ANY($2)
RETURNING d.delegation_id`

// v5Rule is one of version 5's sweep rules, in the order it ran them.
type v5Rule struct {
	name        string
	reason      string
	sql         string
	withTimeout bool // the statement takes the global heartbeat timeout as $4
	ownTimeout  bool // the audit detail says the row's own timeout
}

var v5Rules = []v5Rule{
	{"deadline", sweep.ReasonDeadlineExceeded, v5SweepDeadlineSQL, false, false},
	{"global heartbeat timeout", sweep.ReasonHeartbeatTimeout, v5SweepHeartbeatSQL, true, false},
	{"own heartbeat timeout", sweep.ReasonHeartbeatTimeout, v5SweepOwnTimeoutSQL, false, true},
}

// v5Sweeper is version 5's sweep.Sweeper.RunOnce (no dry run) over pool.
type v5Sweeper struct {
	pool       *pgxpool.Pool
	timeout    time.Duration // the global heartbeat timeout
	batchSize  int
	maxBatches int
	channel    string
	recount    time.Duration
	countedAt  time.Time
	inFlight   int64
}

// newV5Sweeper is sweep.New with version 5's defaults for what cfg leaves
// zero (they were the same as this build's).
func newV5Sweeper(pool *pgxpool.Pool, cfg sweep.Config) *v5Sweeper {
	return &v5Sweeper{
		pool:       pool,
		timeout:    or(cfg.HeartbeatTimeout, sweep.HeartbeatTimeoutDefault),
		batchSize:  or(cfg.BatchSize, sweep.BatchSizeDefault),
		maxBatches: or(cfg.MaxBatchesPerRun, sweep.MaxBatchesPerRunDefault),
		channel:    cfg.NotifyChannel,
		recount:    or(cfg.InFlightRecount, sweep.InFlightRecountDefault),
	}
}

// RunOnce is one run of version 5's sweep: each rule in batches, then the
// gauges (and the in-flight count), as sweep.Sweeper.RunOnce did at version
// 5. The result fills the fields version 5's Result had.
func (s *v5Sweeper) RunOnce(ctx context.Context) (sweep.Result, error) {
	start := time.Now()
	var res sweep.Result
	err := s.sweep(ctx, &res)
	if err == nil {
		err = s.readGauges(ctx, &res)
	}
	res.Duration = time.Since(start)
	return res, err
}

func (s *v5Sweeper) sweep(ctx context.Context, res *sweep.Result) error {
	for _, r := range v5Rules {
		detail := r.detail(s.timeout)
		for {
			if res.Batches >= s.maxBatches {
				res.More = true
				return nil
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			args := []any{s.batchSize, v5Unfinished, s.channel}
			if r.withTimeout {
				args = append(args, s.timeout.Seconds())
			}
			batch := &pgx.Batch{}
			batch.Queue(v5SetActorSQL, detail)
			batch.Queue(r.sql, args...)
			br := s.pool.SendBatch(ctx, batch)
			_, err := br.Exec()
			var n, notified int
			if err == nil {
				err = br.QueryRow().Scan(&n, &notified)
			}
			if closeErr := br.Close(); err == nil {
				err = closeErr
			}
			if err != nil {
				return fmt.Errorf("version 5 sweep by %s: %w", r.name, err)
			}
			res.Batches++
			res.Notified += notified
			res.Swept += n
			switch r.reason {
			case sweep.ReasonDeadlineExceeded:
				res.SweptDeadlineExceeded += n
			default:
				res.SweptHeartbeatTimeout += n
			}
			if n < s.batchSize {
				break
			}
		}
	}
	return nil
}

// detail is version 5's audit detail of a rule's stuck events.
func (r v5Rule) detail(global time.Duration) string {
	if r.ownTimeout {
		return `{"heartbeat_timeout":"own"}`
	}
	b, _ := json.Marshal(map[string]any{"heartbeat_timeout_seconds": global.Seconds()})
	return string(b)
}

func (s *v5Sweeper) readGauges(ctx context.Context, res *sweep.Result) error {
	var ageSeconds float64
	var nextSeconds *float64
	if err := s.pool.QueryRow(ctx, v5GaugesSQL, s.timeout.Seconds()).Scan(&ageSeconds, &nextSeconds); err != nil {
		return fmt.Errorf("version 5 gauges: %w", err)
	}
	if s.countedAt.IsZero() || res.Swept > 0 || time.Since(s.countedAt) >= s.recount {
		at := time.Now()
		if err := s.pool.QueryRow(ctx, v5CountInFlightSQL).Scan(&s.inFlight); err != nil {
			return fmt.Errorf("version 5 in-flight count: %w", err)
		}
		s.countedAt = at
	}
	res.InFlight = s.inFlight
	res.OldestHeartbeatAge = time.Duration(ageSeconds * float64(time.Second))
	if nextSeconds != nil {
		next := max(time.Duration(*nextSeconds*float64(time.Second)), 0)
		res.NextEligibleIn = &next
	}
	return nil
}

// v5SetStatus is version 5's Ledger.SetStatus of a row to a terminal
// status to, as actor, without result or error text: one batch of the
// writer's name and the UPDATE. It reports whether the row moved.
func v5SetStatus(ctx context.Context, pool *pgxpool.Pool, id, to, actor string) (bool, error) {
	batch := &pgx.Batch{}
	batch.Queue(v5SetWriterSQL, actor, "", "")
	batch.Queue(v5SetStatusSQL, id, to, v5Unfinished, "", "")
	br := pool.SendBatch(ctx, batch)
	_, err := br.Exec()
	var got string
	if err == nil {
		err = br.QueryRow().Scan(&got)
	}
	if closeErr := br.Close(); err == nil {
		err = closeErr
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// v5HeartbeatMany is version 5's Ledger.HeartbeatMany: the rows of ids
// that were not live.
func v5HeartbeatMany(ctx context.Context, pool *pgxpool.Pool, ids []string) ([]string, error) {
	sorted := slices.Clone(ids)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	rows, err := pool.Query(ctx, v5HeartbeatManySQL, sorted, v5Unfinished)
	if err != nil {
		return nil, err
	}
	live, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	slices.Sort(live)
	var notLive []string
	for _, id := range sorted {
		if _, found := slices.BinarySearch(live, id); !found {
			notLive = append(notLive, id)
		}
	}
	return notLive, nil
}

// v5Columns are columns that versions 6 to 9 added to delegations: a
// version 5 ledger has none of them.
var v5Columns = []string{
	"progress", "progress_at", "progress_timeout", "queue_timeout", "start_timeout", "not_before", "dispatched_at",
	"progress_minute", "progress_expires_at", "queue_expires_at", "start_expires_at", // 7
	"max_attempts", "retry_backoff", "retry_backoff_max", "retry_on", // 8
	"traceparent", // 9
}

// checkV5Ledger checks that db is a version 5 ledger as version 5 ran it:
// schema version 5, none of the later columns, and version 5's audit
// trigger and per-statement notification trigger on and enabled.
func checkV5Ledger(ctx context.Context, db *ledgerDB) error {
	var version int
	var dirty bool
	if err := db.pool.QueryRow(ctx, `SELECT version, dirty FROM `+migrations.VersionTable).Scan(&version, &dirty); err != nil {
		return fmt.Errorf("reading the schema version: %w", err)
	}
	if version != hotPathPrevious || dirty {
		return fmt.Errorf("schema version %d (dirty %v), want %d", version, dirty, hotPathPrevious)
	}
	var later []string
	rows, err := db.pool.Query(ctx, `SELECT attname FROM pg_attribute
		WHERE attrelid = 'delegations'::regclass AND attname = ANY($1) AND NOT attisdropped ORDER BY attname`, v5Columns)
	if err != nil {
		return err
	}
	if later, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		return err
	}
	if len(later) > 0 {
		return fmt.Errorf("the version %d ledger has later columns %v", hotPathPrevious, later)
	}
	for _, t := range []struct{ table, trigger string }{
		{"delegations", "delegations_audit_update"},
		{"delegation_events", "delegation_events_notify"},
	} {
		var enabled string
		err := db.pool.QueryRow(ctx, `SELECT tgenabled::text FROM pg_trigger
			WHERE tgrelid = $1::regclass AND tgname = $2`, t.table, t.trigger).Scan(&enabled)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("the version %d ledger has no trigger %s on %s", hotPathPrevious, t.trigger, t.table)
		}
		if err != nil {
			return err
		}
		if enabled != "O" {
			return fmt.Errorf("trigger %s on %s is not enabled (tgenabled %q)", t.trigger, t.table, enabled)
		}
	}
	return nil
}

// heartbeatMany beats ids with the statements of db's schema: version 5's
// HeartbeatMany on a version 5 ledger, this build's ledger otherwise. It
// returns the ids that were not live.
func (db *ledgerDB) heartbeatMany(ctx context.Context, ids []string) ([]string, error) {
	if db.version == hotPathPrevious {
		return v5HeartbeatMany(ctx, db.pool, ids)
	}
	return ledger.New(db.pool).HeartbeatMany(ctx, ids)
}
