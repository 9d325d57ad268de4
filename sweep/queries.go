package sweep

// Every SQL statement the sweep runs, in one place.
//
// Each rule is its own statement so that each is an index condition on its
// own partial index: an OR of the two rules makes the planner filter every
// in-flight row, and `IN (subquery)` with a large LIMIT tips it into a
// sequential scan of the whole table, so the UPDATE takes its rows with
// `= ANY(ARRAY(subquery))`.
//
// The status literals in the claim subqueries are the rules themselves and
// must match the partial indexes' predicates (a parameter cannot prove a
// partial index predicate). The lifecycle's own guard is the $3 parameter:
// the statuses ledger.Sources(stuck) allows to move to stuck. The database
// trigger checks the move once more.
//
// Every row is claimed with FOR UPDATE SKIP LOCKED (rows a writer holds are
// left for the next run), and the UPDATE re-checks its rule against the row
// as it is now: a heartbeat or completion that commits first always wins.
//
// The UPDATE reaches rows only through the claimed keys (the primary key).
// Its re-check is written `(...) IS TRUE` so that it can only be a filter on
// the rows the key found: as plain conditions the planner answered them with
// other indexes (a BitmapAnd of idx_delegations_status, every in_progress
// entry, with the primary key; a scan of the deadline index), so a sweep
// that found nothing cost more as the rows in flight grew (issue 9). A row
// with a NULL in the re-check is not marked, as before.
//
// The heartbeat claim bounds heartbeat_minute from below by the oldest
// minute in its index (every in_progress row is at or above it, so the
// bound removes nothing). It is there for the generic plan PostgreSQL may
// use for a prepared statement: with the timeout a parameter, a one-sided
// bound is guessed to keep a third of the rows, and the planner chose a
// scan of the deadline index and a sort; a two-sided range is guessed
// narrow, and the heartbeat index is read in order. The plan test checks
// both kinds of plan, statement by statement.
//
// An empty notification channel sends no notification.
//
// The sweep statements set updated_at = now() themselves, so the bookkeeping
// trigger is not called for each marked row.

// sweptColumns is what every sweep statement returns of the rows it
// marked, for sweptSQL.
const sweptColumns = `d.delegation_id, d.caller_id, d.callee_id, d.status, d.stuck_reason, d.last_heartbeat,
        d.deadline, d.attempt,
        (d.status = ANY(d.retry_on) AND d.max_attempts > 1 AND d.attempt < d.max_attempts) AS retried,
        (d.status = ANY(d.retry_on) AND d.max_attempts > 1 AND d.attempt >= d.max_attempts) AS exhausted`

// sweptSQL ends every sweep statement: it counts the rows marked, those
// whose retry policy scheduled the next attempt and those that exhausted it,
// and sends one notification for each on channel $3 (an empty channel sends
// none). The retry policy (migration 000008) is counted from the rows: a row
// moved to a status of its retry_on with attempts left had its next attempt
// inserted by the audit trigger (retried); with none left, and a policy with
// retries, it is exhausted.
const sweptSQL = `
SELECT count(*) AS swept,
       count(*) FILTER (WHERE retried) AS retried,
       count(*) FILTER (WHERE exhausted) AS exhausted,
       count(CASE WHEN $3 <> '' THEN pg_notify($3, json_build_object(
           'delegation_id', delegation_id, 'caller_id', caller_id, 'callee_id', callee_id,
           'reason', stuck_reason, 'last_heartbeat', last_heartbeat, 'deadline', deadline,
           'attempt', attempt)::text) END) AS notified
FROM swept`

// setActorSQL names the sweeper in the audit events of this transaction.
const setActorSQL = `
SELECT set_config('sweeper.actor', 'sweeper', true),
       set_config('sweeper.reason', '', true),
       set_config('sweeper.detail', $1, true)`

// oldestMinuteSQL is the oldest heartbeat_minute in the heartbeat index of
// rows on the global timeout (NULL when there are none): the lower bound of
// the heartbeat claim, for the planner's sake (see above).
const oldestMinuteSQL = `SELECT min(heartbeat_minute) FROM delegations WHERE status = 'in_progress' AND heartbeat_timeout IS NULL`

// ownExpirySQL is the earliest heartbeat_expires_at in the index of rows
// with their own heartbeat_timeout (NULL when there are none): the lower
// bound of that claim, for the same reason as oldestMinuteSQL.
const ownExpirySQL = `SELECT min(heartbeat_expires_at) FROM delegations
    WHERE status = 'in_progress' AND heartbeat_timeout IS NOT NULL`

// sweepDeadlineSQL marks non-terminal rows past their deadline ($1 batch size,
// $2 statuses that may move to stuck, $3 channel).
const sweepDeadlineSQL = `
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
    RETURNING ` + sweptColumns + `
)
` + sweptSQL

// sweepHeartbeatSQL marks in_progress rows on the global timeout (their
// heartbeat_timeout is NULL) whose heartbeat is older than it ($1 batch
// size, $2 statuses that may move to stuck, $3 channel, $4 timeout in
// seconds). The index holds heartbeat_minute (last_heartbeat
// rounded down to the minute, so heartbeats are HOT updates): the minute is
// the index condition, last_heartbeat the exact rule.
const sweepHeartbeatSQL = `
WITH swept AS (
    UPDATE delegations AS d
    SET status = 'stuck', stuck_reason = 'heartbeat_timeout', updated_at = now()
    WHERE d.delegation_id = ANY(ARRAY(
            SELECT delegation_id FROM delegations
            WHERE status = 'in_progress' AND heartbeat_timeout IS NULL
              AND heartbeat_minute >= (` + oldestMinuteSQL + `)
              AND heartbeat_minute < now() - make_interval(secs => $4)
              AND last_heartbeat < now() - make_interval(secs => $4)
            ORDER BY heartbeat_minute
            LIMIT $1
            FOR UPDATE SKIP LOCKED))
      AND (d.status = ANY($2) AND d.status = 'in_progress' AND d.heartbeat_timeout IS NULL
           AND d.last_heartbeat < now() - make_interval(secs => $4)) IS TRUE
    RETURNING ` + sweptColumns + `
)
` + sweptSQL

// sweepOwnTimeoutSQL marks in_progress rows with their own heartbeat_timeout
// whose heartbeat is older than it ($1 batch size, $2 statuses that may move
// to stuck, $3 channel). The index holds heartbeat_expires_at, each row's
// expiry to within its bin (see the migration), a lower bound: it is the
// index condition, "now() - last_heartbeat > heartbeat_timeout" the exact
// rule (an interval compared as a duration: a day is 24 hours whatever the
// session's time zone). There is no parameter in the rule, so the custom
// and the generic plan are the same.
const sweepOwnTimeoutSQL = `
WITH swept AS (
    UPDATE delegations AS d
    SET status = 'stuck', stuck_reason = 'heartbeat_timeout', updated_at = now()
    WHERE d.delegation_id = ANY(ARRAY(
            SELECT delegation_id FROM delegations
            WHERE status = 'in_progress' AND heartbeat_timeout IS NOT NULL
              AND heartbeat_expires_at >= (` + ownExpirySQL + `)
              AND heartbeat_expires_at < now()
              AND now() - last_heartbeat > heartbeat_timeout
            ORDER BY heartbeat_expires_at
            LIMIT $1
            FOR UPDATE SKIP LOCKED))
      AND (d.status = ANY($2) AND d.status = 'in_progress'
           AND now() - d.last_heartbeat > d.heartbeat_timeout) IS TRUE
    RETURNING ` + sweptColumns + `
)
` + sweptSQL

// Dry run: the same rules, read only, up to $1 rows each (heartbeat: $2
// timeout in seconds). A row that meets
// both rules is counted once, under the deadline, as the real sweep (which
// runs the deadline rule first) would mark it. With $1 = 1 each is the
// run's probe: is anything eligible by this rule?
//
// Each count after the deadline's reads its rule's rows in a subquery
// fenced with OFFSET 0 (candidate) and leaves the rows of the rules before
// it (deadline >= now(), ...) outside the fence: the planner then has only
// the rule's own conditions to choose an index by. Without the fence it
// answered the stalled rule's probe through the deadline index on a ledger
// of 5M rows with 50k in flight whose statistics predated their progress
// (ANALYZE comes after 10% of the table changed, so for hours at that
// size): the history's deadlines have passed, "deadline >= now()" looked
// selective, and the probe read every row in flight (43 ms a run instead
// of a few index pages).

// fencedCount is a rule's count statement ($1: the limit): the rows that
// meet rule, read in a subquery fenced with OFFSET 0 (see above), less
// those the rules before it take (deadline >= now(), and leave: a further
// condition on deadline, heartbeat_timeout and last_heartbeat, or "").
func fencedCount(rule, leave string) string {
	return `
SELECT count(*) FROM (
    SELECT 1 FROM (
        SELECT deadline, heartbeat_timeout, last_heartbeat FROM delegations
        WHERE ` + rule + `
        OFFSET 0) AS candidate
    WHERE deadline >= now()` + leave + `
    LIMIT $1) AS eligible`
}

const countDeadlineSQL = `
SELECT count(*) FROM (
    SELECT 1 FROM delegations
    WHERE status IN ('queued', 'dispatched', 'in_progress')
      AND deadline < now()
    LIMIT $1) AS eligible`

var countHeartbeatSQL = fencedCount(`status = 'in_progress' AND heartbeat_timeout IS NULL
          AND heartbeat_minute >= (`+oldestMinuteSQL+`)
          AND heartbeat_minute < now() - make_interval(secs => $2)
          AND last_heartbeat < now() - make_interval(secs => $2)`, "")

var countOwnTimeoutSQL = fencedCount(`status = 'in_progress' AND heartbeat_timeout IS NOT NULL
          AND heartbeat_expires_at >= (`+ownExpirySQL+`)
          AND heartbeat_expires_at < now()
          AND now() - last_heartbeat > heartbeat_timeout`, "")

// oldestHeartbeatExpr is the oldest in_progress heartbeat of the rows on the
// global timeout, from hb.minute, the oldest minute in their heartbeat
// index. When that minute is within two minutes of becoming stale under
// timeout $1, it reads the first rows in minute order (through the index:
// rows that have not beaten for minutes, so usually few) and is exact if
// they include every row of that minute; otherwise, or when they do not, it
// is the minute itself, a lower bound at most a minute early. That is enough
// for the gauge, and the adaptive schedule wakes early, never late. At most
// 256 rows are read, of the two oldest minutes: that bound keeps the read on
// the heartbeat index (with a lower bound alone the planner chose the
// deadline and status indexes, every row in flight); the rows of the oldest
// minute are all within it.
const oldestHeartbeatExpr = `
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

// ownNextExpr is the earliest exact expiry (last_heartbeat +
// heartbeat_timeout) of the rows with their own timeout, from own.minute,
// the earliest heartbeat_expires_at in their index. Within two minutes of
// now it reads, in index order, the rows whose heartbeat_expires_at is
// within a minute of own.minute, at most 256: a row expires less than a bin
// (at most a minute) after its heartbeat_expires_at, so the earliest expiry
// is among them, and it is exact if they were all read or if the earliest
// among those read is no later than the last heartbeat_expires_at read.
// Otherwise it is own.minute, a lower bound at most a minute early, as for
// oldestHeartbeatExpr.
const ownNextExpr = `
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

// oldestProgressExpr is oldestHeartbeatExpr for the stalled rule: the
// oldest progress_at of in_progress rows on the global progress timeout
// ($2), from pr.minute, the oldest progress_minute in their index; exact
// near the boundary, else a lower bound at most a minute early.
const oldestProgressExpr = `
CASE WHEN pr.minute < now() - make_interval(secs => $2) + interval '2 minutes'
     THEN (SELECT CASE WHEN count(*) < 256 OR max(progress_minute) > pr.minute
                       THEN min(progress_at) FILTER (WHERE progress_minute = pr.minute)
                       ELSE pr.minute END
           FROM (SELECT progress_minute, progress_at FROM delegations
                 WHERE status = 'in_progress' AND progress_timeout IS NULL
                   AND progress_minute >= pr.minute AND progress_minute < pr.minute + interval '2 minutes'
                 ORDER BY progress_minute
                 LIMIT 256) AS oldest)
     ELSE pr.minute END`

// ownProgressNextExpr is ownNextExpr for the stalled rule: the earliest
// exact expiry (progress_at + progress_timeout) of rows with their own
// progress timeout, from ownpr.minute.
const ownProgressNextExpr = `
CASE WHEN ownpr.minute < now() + interval '2 minutes'
     THEN (SELECT CASE WHEN count(*) < 256 OR min(expiry) <= max(progress_expires_at)
                       THEN min(expiry) ELSE ownpr.minute END
           FROM (SELECT progress_expires_at,
                        progress_at + make_interval(secs => EXTRACT(EPOCH FROM progress_timeout)::float8) AS expiry
                 FROM delegations
                 WHERE status = 'in_progress' AND progress_timeout IS NOT NULL
                   AND progress_expires_at >= ownpr.minute
                   AND progress_expires_at < ownpr.minute + interval '1 minute'
                 ORDER BY progress_expires_at
                 LIMIT 256) AS earliest)
     ELSE ownpr.minute END`

// gaugesSQL reads, after each run, the oldest heartbeat (of rows on the
// global timeout) and when the next row can become eligible under any rule,
// or reach its deadline ($1 global heartbeat timeout, $2 progress, $3 queue,
// $4 start timeout, in seconds, NULL when that global rule is off; NULL
// when nothing is in flight), for the gauges and the adaptive schedule, from
// the rules' partial indexes: a few index probes, whatever the size of the
// ledger. The queue and start expiries are exact (their keys never move on
// a heartbeat); the stalled ones are exact near the boundary, as the
// heartbeat ones.
const gaugesSQL = `
SELECT COALESCE(EXTRACT(EPOCH FROM now() - oldest.hb), 0)::float8 AS oldest_heartbeat_age_seconds,
       LEAST(
           EXTRACT(EPOCH FROM oldest.hb + make_interval(secs => $1) - now()),
           EXTRACT(EPOCH FROM own.next - now()),
           EXTRACT(EPOCH FROM (SELECT min(deadline) FROM delegations
                               WHERE status IN ('queued', 'dispatched', 'in_progress')) - now()),
           EXTRACT(EPOCH FROM oldestpr.at + make_interval(secs => $2) - now()),
           EXTRACT(EPOCH FROM ownpr.next - now()),
           EXTRACT(EPOCH FROM (` + oldestQueuedSQL + `) + make_interval(secs => $3) - now()),
           EXTRACT(EPOCH FROM (` + ownQueueExpirySQL + `) - now()),
           EXTRACT(EPOCH FROM (` + oldestDispatchedSQL + `) + make_interval(secs => $4) - now()),
           EXTRACT(EPOCH FROM (` + ownStartExpirySQL + `) - now())
       )::float8 AS next_eligible_in_seconds
FROM (SELECT ` + oldestHeartbeatExpr + ` AS hb
      FROM (` + oldestMinuteSQL + `) AS hb(minute)
      OFFSET 0) AS oldest, -- OFFSET 0: computed once, not once per use of oldest.hb
     (SELECT ` + ownNextExpr + ` AS next
      FROM (` + ownExpirySQL + `) AS own(minute)
      OFFSET 0) AS own,
     (SELECT CASE WHEN $2::float8 IS NOT NULL THEN ` + oldestProgressExpr + ` END AS at
      FROM (` + oldestProgressMinuteSQL + `) AS pr(minute)
      OFFSET 0) AS oldestpr,
     (SELECT ` + ownProgressNextExpr + ` AS next
      FROM (` + ownProgressExpirySQL + `) AS ownpr(minute)
      OFFSET 0) AS ownpr`

// genericPlansSQL comes first in a run's probe batch: the batch is one
// implicit transaction (a pipeline of statements with one Sync, or one
// simple-protocol query), and for the rest of it the probes and the gauges
// run their prepared statements' generic plans. They are written for them
// (each probe bounded from below by its index's oldest key, TestPlansUseIndexes
// checks both kinds), and with PostgreSQL's default (auto) the planner kept
// choosing custom plans for them, planning the gauges' dozen subqueries
// again on every run: a nothing-eligible run took 2-4 ms of planning for
// 0.1 ms of execution (100k and 5M rows, rules off: their NULL arguments
// fold parts away, so a custom plan always looked cheaper).
const genericPlansSQL = `SELECT set_config('plan_cache_mode', 'force_generic_plan', true)`

// countInFlightSQL counts the rows in flight for the in-flight gauge. It
// reads every in-flight row (an index-only scan that must visit the heap
// pages heartbeats keep dirty), so the sweeper runs it at most once per
// Config.InFlightRecount, not after every run.
const countInFlightSQL = `
SELECT count(*) FROM delegations WHERE status IN ('queued', 'dispatched', 'in_progress')`

// countByStatusSQL is for `sweeper status`: every row, grouped.
const countByStatusSQL = `
SELECT status, count(*) FROM delegations GROUP BY status`

// oldestHeartbeatSQL reads the age of the oldest in_progress heartbeat of
// the rows on the global timeout, exactly, NULL when there are none: from
// the rows of the oldest minute in their heartbeat index. The minute is written as a range (from the
// oldest minute to the next) rather than `= (subquery)`: the planner read an
// equality to a subquery's value through the deadline index, every row in
// flight.
const oldestHeartbeatSQL = `
SELECT EXTRACT(EPOCH FROM now() - min(last_heartbeat))::float8
FROM delegations
WHERE status = 'in_progress' AND heartbeat_timeout IS NULL
  AND heartbeat_minute >= (` + oldestMinuteSQL + `)
  AND heartbeat_minute < (` + oldestMinuteSQL + `) + interval '1 minute'`

// The rules of issue 20: stalled (in_progress, progress unchanged for
// longer than progress_timeout), queue_timeout (queued longer than it,
// since coalesce(not_before, created_at)) and start_timeout (dispatched
// longer than it, since dispatched_at). Each has two statements, as the
// heartbeat rule: rows on the sweeper's global timeout ($4 of the batch
// statement, $2 of the count, in seconds; the rule is not run when the
// global timeout is off) and rows with their own, each an index condition
// on its own partial index, each bounded from below by the oldest key in
// its index for the generic plan's sake (see above), each re-checked in the
// UPDATE: a progress change, a move to in_progress or a completion that
// commits first wins. The count statements leave rows an earlier rule marks
// (deadline; for stalled, the heartbeat rule: $3 is the global heartbeat
// timeout), so a dry run counts each row once, under the reason the sweep
// would give it.

// oldestProgressMinuteSQL is the oldest progress_minute in the index of
// in_progress rows on the global progress timeout.
const oldestProgressMinuteSQL = `SELECT min(progress_minute) FROM delegations
    WHERE status = 'in_progress' AND progress_timeout IS NULL`

// ownProgressExpirySQL is the earliest progress_expires_at of rows with their own progress timeout.
const ownProgressExpirySQL = `SELECT min(progress_expires_at) FROM delegations
    WHERE status = 'in_progress' AND progress_timeout IS NOT NULL`

// oldestQueuedSQL is the oldest "queued since" of queued rows on the global queue timeout.
const oldestQueuedSQL = `SELECT min(COALESCE(not_before, created_at)) FROM delegations
    WHERE status = 'queued' AND queue_timeout IS NULL`

// ownQueueExpirySQL is the earliest queue_expires_at of queued rows with their own queue timeout.
const ownQueueExpirySQL = `SELECT min(queue_expires_at) FROM delegations
    WHERE status = 'queued' AND queue_timeout IS NOT NULL`

// oldestDispatchedSQL is the oldest dispatched_at of dispatched rows on the global start timeout.
const oldestDispatchedSQL = `SELECT min(dispatched_at) FROM delegations
    WHERE status = 'dispatched' AND start_timeout IS NULL`

// ownStartExpirySQL is the earliest start_expires_at of dispatched rows with their own start timeout.
const ownStartExpirySQL = `SELECT min(start_expires_at) FROM delegations
    WHERE status = 'dispatched' AND start_timeout IS NOT NULL`

// sweptReturning is what every sweep statement returns for sweptSQL.
const sweptReturning = `
    RETURNING ` + sweptColumns + `
)
` + sweptSQL

// sweepStalledSQL: in_progress rows on the global progress timeout whose
// progress is older than $4 seconds. progress_minute is the index condition
// (it moves once a minute, so progress changes are HOT updates),
// progress_at the exact rule.
const sweepStalledSQL = `
WITH swept AS (
    UPDATE delegations AS d
    SET status = 'stuck', stuck_reason = 'stalled', updated_at = now()
    WHERE d.delegation_id = ANY(ARRAY(
            SELECT delegation_id FROM delegations
            WHERE status = 'in_progress' AND progress_timeout IS NULL
              AND progress_minute >= (` + oldestProgressMinuteSQL + `)
              AND progress_minute < now() - make_interval(secs => $4)
              AND progress_at < now() - make_interval(secs => $4)
            ORDER BY progress_minute
            LIMIT $1
            FOR UPDATE SKIP LOCKED))
      AND (d.status = ANY($2) AND d.status = 'in_progress' AND d.progress_timeout IS NULL
           AND d.progress_at < now() - make_interval(secs => $4)) IS TRUE` + sweptReturning

// sweepStalledOwnSQL: in_progress rows with their own progress_timeout
// whose progress is older than it. progress_expires_at (a lower bound, to
// within its bin) is the index condition, the exact rule its filter.
const sweepStalledOwnSQL = `
WITH swept AS (
    UPDATE delegations AS d
    SET status = 'stuck', stuck_reason = 'stalled', updated_at = now()
    WHERE d.delegation_id = ANY(ARRAY(
            SELECT delegation_id FROM delegations
            WHERE status = 'in_progress' AND progress_timeout IS NOT NULL
              AND progress_expires_at >= (` + ownProgressExpirySQL + `)
              AND progress_expires_at < now()
              AND now() - progress_at > progress_timeout
            ORDER BY progress_expires_at
            LIMIT $1
            FOR UPDATE SKIP LOCKED))
      AND (d.status = ANY($2) AND d.status = 'in_progress'
           AND now() - d.progress_at > d.progress_timeout) IS TRUE` + sweptReturning

// sweepQueuedSQL: queued rows on the global queue timeout, queued (or due,
// after not_before) more than $4 seconds ago.
const sweepQueuedSQL = `
WITH swept AS (
    UPDATE delegations AS d
    SET status = 'stuck', stuck_reason = 'queue_timeout', updated_at = now()
    WHERE d.delegation_id = ANY(ARRAY(
            SELECT delegation_id FROM delegations
            WHERE status = 'queued' AND queue_timeout IS NULL
              AND COALESCE(not_before, created_at) >= (` + oldestQueuedSQL + `)
              AND COALESCE(not_before, created_at) < now() - make_interval(secs => $4)
            ORDER BY COALESCE(not_before, created_at)
            LIMIT $1
            FOR UPDATE SKIP LOCKED))
      AND (d.status = ANY($2) AND d.status = 'queued' AND d.queue_timeout IS NULL
           AND COALESCE(d.not_before, d.created_at) < now() - make_interval(secs => $4)) IS TRUE` + sweptReturning

// sweepQueuedOwnSQL: queued rows with their own queue_timeout, past it.
const sweepQueuedOwnSQL = `
WITH swept AS (
    UPDATE delegations AS d
    SET status = 'stuck', stuck_reason = 'queue_timeout', updated_at = now()
    WHERE d.delegation_id = ANY(ARRAY(
            SELECT delegation_id FROM delegations
            WHERE status = 'queued' AND queue_timeout IS NOT NULL
              AND queue_expires_at >= (` + ownQueueExpirySQL + `)
              AND queue_expires_at < now()
            ORDER BY queue_expires_at
            LIMIT $1
            FOR UPDATE SKIP LOCKED))
      AND (d.status = ANY($2) AND d.status = 'queued'
           AND now() - COALESCE(d.not_before, d.created_at) > d.queue_timeout) IS TRUE` + sweptReturning

// sweepDispatchedSQL: dispatched rows on the global start timeout,
// dispatched more than $4 seconds ago.
const sweepDispatchedSQL = `
WITH swept AS (
    UPDATE delegations AS d
    SET status = 'stuck', stuck_reason = 'start_timeout', updated_at = now()
    WHERE d.delegation_id = ANY(ARRAY(
            SELECT delegation_id FROM delegations
            WHERE status = 'dispatched' AND start_timeout IS NULL
              AND dispatched_at >= (` + oldestDispatchedSQL + `)
              AND dispatched_at < now() - make_interval(secs => $4)
            ORDER BY dispatched_at
            LIMIT $1
            FOR UPDATE SKIP LOCKED))
      AND (d.status = ANY($2) AND d.status = 'dispatched' AND d.start_timeout IS NULL
           AND d.dispatched_at < now() - make_interval(secs => $4)) IS TRUE` + sweptReturning

// sweepDispatchedOwnSQL: dispatched rows with their own start_timeout, past it.
const sweepDispatchedOwnSQL = `
WITH swept AS (
    UPDATE delegations AS d
    SET status = 'stuck', stuck_reason = 'start_timeout', updated_at = now()
    WHERE d.delegation_id = ANY(ARRAY(
            SELECT delegation_id FROM delegations
            WHERE status = 'dispatched' AND start_timeout IS NOT NULL
              AND start_expires_at >= (` + ownStartExpirySQL + `)
              AND start_expires_at < now()
            ORDER BY start_expires_at
            LIMIT $1
            FOR UPDATE SKIP LOCKED))
      AND (d.status = ANY($2) AND d.status = 'dispatched'
           AND now() - d.dispatched_at > d.start_timeout) IS TRUE` + sweptReturning

// heartbeatLive is a condition true for an in_progress row that the
// heartbeat rule does not mark (param: the global heartbeat timeout in
// seconds): the stalled counts leave the others to it.
func heartbeatLive(param string) string {
	return `
      AND NOT (CASE WHEN heartbeat_timeout IS NULL THEN last_heartbeat < now() - make_interval(secs => ` + param + `)
                    ELSE now() - last_heartbeat > heartbeat_timeout END)`
}

// countStalledSQL: $1 limit, $2 the global progress timeout, $3 the global
// heartbeat timeout (seconds).
var countStalledSQL = fencedCount(`status = 'in_progress' AND progress_timeout IS NULL
          AND progress_minute >= (`+oldestProgressMinuteSQL+`)
          AND progress_minute < now() - make_interval(secs => $2)
          AND progress_at < now() - make_interval(secs => $2)`, heartbeatLive("$3"))

// countStalledOwnSQL: $1 limit, $2 the global heartbeat timeout (seconds).
var countStalledOwnSQL = fencedCount(`status = 'in_progress' AND progress_timeout IS NOT NULL
          AND progress_expires_at >= (`+ownProgressExpirySQL+`)
          AND progress_expires_at < now()
          AND now() - progress_at > progress_timeout`, heartbeatLive("$2"))

var countQueuedSQL = fencedCount(`status = 'queued' AND queue_timeout IS NULL
          AND COALESCE(not_before, created_at) >= (`+oldestQueuedSQL+`)
          AND COALESCE(not_before, created_at) < now() - make_interval(secs => $2)`, "")

var countQueuedOwnSQL = fencedCount(`status = 'queued' AND queue_timeout IS NOT NULL
          AND queue_expires_at >= (`+ownQueueExpirySQL+`)
          AND queue_expires_at < now()`, "")

var countDispatchedSQL = fencedCount(`status = 'dispatched' AND start_timeout IS NULL
          AND dispatched_at >= (`+oldestDispatchedSQL+`)
          AND dispatched_at < now() - make_interval(secs => $2)`, "")

var countDispatchedOwnSQL = fencedCount(`status = 'dispatched' AND start_timeout IS NOT NULL
          AND start_expires_at >= (`+ownStartExpirySQL+`)
          AND start_expires_at < now()`, "")
