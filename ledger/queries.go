package ledger

// Every SQL statement the ledger runs, in one place. Statuses that the
// lifecycle decides (which rows a move may start from, which rows are in
// flight) are passed as parameters computed by status.go, never written here.

// DelegationColumns is the select list that pgx.RowToStructByName scans into
// a Delegation: for packages that read delegations with queries of their own
// (the console), so that a column added here reaches them too.
const DelegationColumns = delegationColumns

const delegationColumns = `
    delegation_id, caller_id, callee_id, task_preview,
    COALESCE(result_preview, '') AS result_preview,
    COALESCE(error_detail, '') AS error_detail,
    status,
    COALESCE(idempotency_key, '') AS idempotency_key,
    last_heartbeat, deadline,
    COALESCE(stuck_reason, '') AS stuck_reason,
    created_at, updated_at,
    heartbeat_timeout, attempt,
    COALESCE(retry_of, '') AS retry_of,
    progress, progress_at, progress_timeout, queue_timeout, start_timeout,
    not_before, dispatched_at, max_attempts, retry_backoff, retry_backoff_max, retry_on,
    ` + exhaustedExpr + ` AS exhausted`

// ExhaustedCondition is true for an attempt whose retry policy had retries
// and used them all: the predicate of idx_delegations_exhausted and
// idx_delegations_exhausted_finished, for packages that count such rows with
// queries of their own (the console), written as the indexes' predicate so
// that the planner proves it.
const ExhaustedCondition = exhaustedExpr

const exhaustedExpr = `(status = ANY(retry_on) AND attempt >= max_attempts AND max_attempts > 1)`

// setWriterSQL names the writer for the audit trigger, for the rest of the
// current transaction ($1 actor, $2 reason, $3 detail as JSON text).
const setWriterSQL = `
SELECT set_config('sweeper.actor', $1, true),
       set_config('sweeper.reason', $2, true),
       set_config('sweeper.detail', $3, true)`

// insertSQL inserts a delegation; a conflicting id or (caller, key) inserts
// nothing and returns no row. The deadline is $7 when given, else now() + $8
// seconds by the database clock; $9 is the heartbeat timeout (NULL: the
// sweeper's global one), $11, $12, $13 the progress, queue and start
// timeouts (likewise). With an idempotency key whose latest attempt
// failed or got stuck ($10: those statuses), the row is that attempt's next
// one (attempt n+1, retry_of its id); whose latest attempt is live or
// completed, nothing is inserted. The key's attempts are read through
// idx_delegations_idempotency_attempt; a concurrent insert of the same next
// attempt meets its unique index, or that of retry_of. $11 to $13 are the
// progress, queue and start timeouts, $14 to $17 the retry policy
// (max_attempts, backoff, backoff max, retry_on).
const insertSQL = insertHead + `) SELECT ` + insertValues + ` ` + insertTail

// insertTracedSQL is insertSQL that also stores $18, the traceparent
// (schema version 9). Inserts without one keep to insertSQL.
const insertTracedSQL = insertHead + `, traceparent) SELECT ` + insertValues + `, $18 ` + insertTail

const insertHead = `
WITH prev AS (
    SELECT delegation_id, attempt, status FROM delegations
    WHERE caller_id = $2 AND idempotency_key = NULLIF($6, '')
    ORDER BY attempt DESC
    LIMIT 1
)
INSERT INTO delegations
    (delegation_id, caller_id, callee_id, task_preview, status, idempotency_key, deadline,
     heartbeat_timeout, attempt, retry_of, progress_timeout, queue_timeout, start_timeout,
     max_attempts, retry_backoff, retry_backoff_max, retry_on`

const insertValues = `$1, $2, $3, $4, $5, NULLIF($6, ''),
       COALESCE($7::timestamptz, now() + make_interval(secs => $8::float8)),
       $9::interval, COALESCE(prev.attempt + 1, 1), prev.delegation_id,
       $11::interval, $12::interval, $13::interval,
       $14, $15::interval, $16::interval, $17::text[]`

const insertTail = `
FROM (SELECT) AS one LEFT JOIN prev ON true
WHERE prev.delegation_id IS NULL OR prev.status = ANY($10)
ON CONFLICT DO NOTHING
RETURNING delegation_id, attempt, COALESCE(retry_of, '')`

// selectLatestAttemptSQL is the latest attempt under a caller's idempotency key.
const selectLatestAttemptSQL = `
SELECT delegation_id, status FROM delegations
WHERE caller_id = $1 AND idempotency_key = $2
ORDER BY attempt DESC
LIMIT 1`

// retrySQL inserts the next attempt of delegation $1 when its status is one
// of $2 (failed, stuck): new id $3, same caller, and the callee, task
// preview and idempotency key of the previous attempt unless overridden
// ($4, $5, $6: "" keeps; $7 true clears the key), deadline $8 or now() + $9
// seconds, heartbeat timeout $10 (NULL keeps the previous attempt's), status
// $11. The next attempt also keeps the previous one's progress, queue and
// start timeouts and its retry policy, inherits its last progress (what it
// was doing when it stopped: the next attempt can resume from it), and is
// due now (not_before). Of concurrent retries, one inserts: the others meet
// idx_delegations_retry_of (or the primary key) and insert nothing.
const retrySQL = `
INSERT INTO delegations
    (delegation_id, caller_id, callee_id, task_preview, status, idempotency_key, deadline,
     heartbeat_timeout, attempt, retry_of, progress_timeout, queue_timeout, start_timeout, progress,
     not_before, max_attempts, retry_backoff, retry_backoff_max, retry_on)
SELECT $3, p.caller_id, COALESCE(NULLIF($4, ''), p.callee_id), COALESCE(NULLIF($5, ''), p.task_preview),
       $11, CASE WHEN $7 THEN NULL ELSE COALESCE(NULLIF($6, ''), p.idempotency_key) END,
       COALESCE($8::timestamptz, now() + make_interval(secs => $9::float8)),
       COALESCE($10::interval, p.heartbeat_timeout), p.attempt + 1, p.delegation_id,
       p.progress_timeout, p.queue_timeout, p.start_timeout, p.progress,
       now(), p.max_attempts, p.retry_backoff, p.retry_backoff_max, p.retry_on
FROM delegations AS p
WHERE p.delegation_id = $1 AND p.status = ANY($2)
ON CONFLICT DO NOTHING
RETURNING delegation_id, attempt`

// selectAttemptSQL reads what Retry needs to explain an insert that did not
// happen: the delegation's status and attempt, and its next attempt if any.
const selectAttemptSQL = `
SELECT p.status, p.attempt, COALESCE(n.delegation_id, '')
FROM delegations AS p
LEFT JOIN delegations AS n ON n.retry_of = p.delegation_id
WHERE p.delegation_id = $1`

// attemptsSQL lists the attempt chain that delegation $1 belongs to, first
// attempt first: back along retry_of (the primary key) to the earliest
// attempt still in the ledger, then forward along idx_delegations_retry_of.
// UNION, not UNION ALL: a cycle written by hand ends instead of looping.
const attemptsSQL = `
WITH RECURSIVE back AS (
    SELECT delegation_id, retry_of, attempt FROM delegations WHERE delegation_id = $1
    UNION
    SELECT d.delegation_id, d.retry_of, d.attempt
    FROM delegations AS d JOIN back ON d.delegation_id = back.retry_of
), first AS (
    SELECT delegation_id FROM back ORDER BY attempt, delegation_id LIMIT 1
), chain AS (
    SELECT delegation_id FROM first
    UNION
    SELECT d.delegation_id FROM delegations AS d JOIN chain ON d.retry_of = chain.delegation_id
)
SELECT ` + delegationColumns + ` FROM delegations
WHERE delegation_id IN (SELECT delegation_id FROM chain)
ORDER BY attempt, delegation_id`

const selectCallerSQL = `
SELECT caller_id FROM delegations WHERE delegation_id = $1`

// setStatusSQL moves one row to $2 when its current status is one of $3 (the
// statuses the transition table allows to move to $2), and says whether the
// move scheduled the next attempt under the row's retry policy (the trigger
// inserts it) or exhausted the policy. The WHERE clause is
// the check: a row that changed concurrently is re-checked by PostgreSQL
// after the other writer commits, so the first writer wins.
//
// Every UPDATE here sets updated_at = now() itself: the bookkeeping trigger
// then has nothing to do and is not called (see the migration).
const setStatusSQL = `
UPDATE delegations
SET status = $2,
    updated_at = now(),
    result_preview = COALESCE(NULLIF($4, ''), result_preview),
    error_detail = COALESCE(NULLIF($5, ''), error_detail)
WHERE delegation_id = $1 AND status = ANY($3)
RETURNING status,
    (status = ANY(retry_on) AND max_attempts > 1 AND attempt < max_attempts) AS retried,
    ` + exhaustedExpr + ` AS exhausted`

const selectStatusSQL = `
SELECT status FROM delegations WHERE delegation_id = $1`

// heartbeatSQL touches a live row ($2: the non-terminal statuses) and, when
// $3 is not NULL, sets its progress (text, cast to jsonb here). It changes
// no indexed column except through heartbeat_minute and progress_minute
// (and the expiries of rows with their own timeouts), which move once a
// bin, so most heartbeats are HOT updates (see the migrations). progress_at
// is the database's clock: when the progress changes (jsonb equality) the
// statement sets it to now(), with its minute and expiry, exactly as the
// bookkeeping trigger would, and the trigger then calls no function
// (migration 000011; any other value and the trigger sets them itself).
const heartbeatSQL = `
UPDATE delegations AS d
SET last_heartbeat = now(), updated_at = now(), progress = COALESCE(beat.progress, d.progress),
    ` + progressMovesSQL + `
FROM (SELECT $3::jsonb AS progress OFFSET 0) AS beat -- OFFSET 0: cast once, not once per use
WHERE d.delegation_id = $1 AND d.status = ANY($2)
RETURNING d.status`

// progressMovesSQL sets progress_at, progress_minute and
// progress_expires_at of row d as the bookkeeping trigger would for a
// heartbeat whose progress is beat.progress (jsonb; NULL keeps it): now()
// and the keys derived from it when the value changes, as they were
// otherwise.
const progressMovesSQL = `progress_at = CASE WHEN ` + progressMovedSQL + ` THEN now() ELSE d.progress_at END,
    progress_minute = CASE WHEN ` + progressMovedSQL + `
                           THEN date_bin('1 minute', now(), TIMESTAMPTZ '2000-01-01 00:00:00+00') ELSE d.progress_minute END,
    progress_expires_at = CASE WHEN ` + progressMovedSQL + `
                               THEN sweeper_heartbeat_expiry(now(), d.progress_timeout) ELSE d.progress_expires_at END`

// progressMovedSQL: the beat carries a progress other than the row's. The
// NULL test comes first, so a beat without progress compares no jsonb.
const progressMovedSQL = `(beat.progress IS NOT NULL AND beat.progress IS DISTINCT FROM d.progress)`

// heartbeatManySQL touches every live row among $1 in one statement, each
// with its progress in $3 (text[], parallel to $1; NULL or a NULL element
// leaves progress as it is) and only when it is a delegation of the callee
// in $4 (text[], parallel to $1; ” for any callee). It returns the live
// rows' ids and statuses (a heartbeat does not change the status). A
// changed progress moves progress_at as in heartbeatSQL.
const heartbeatManySQL = `
UPDATE delegations AS d
SET last_heartbeat = now(), updated_at = now(), progress = COALESCE(beat.progress, d.progress),
    ` + progressMovesSQL + `
FROM (SELECT b.delegation_id, b.progress::jsonb AS progress, b.callee_id
      FROM unnest($1::text[], $3::text[], $4::text[]) AS b(delegation_id, progress, callee_id)
      OFFSET 0) AS beat -- OFFSET 0: each progress cast once, not once per use
WHERE d.delegation_id = beat.delegation_id AND d.status = ANY($2)
  AND (beat.callee_id = '' OR d.callee_id = beat.callee_id)
RETURNING d.delegation_id, d.status`

// selectStatusReasonSQL reads what a heartbeat on a row that is not live
// answers: its status and, when stuck, why.
const selectStatusReasonSQL = `
SELECT status, COALESCE(stuck_reason, '') FROM delegations WHERE delegation_id = $1`

const getSQL = `SELECT ` + delegationColumns + ` FROM delegations WHERE delegation_id = $1`

// getManySQL reads the delegations of the ids $1 that exist, in one
// statement (the primary key, an index scan per id).
const getManySQL = `SELECT ` + delegationColumns + ` FROM delegations WHERE delegation_id = ANY($1::text[])`

// The list queries page newest first with a keyset cursor ($3, $4): each is
// served by its own index, idx_delegations_caller, _callee and _status.
// $2 is an optional status filter (the empty string for any); listing by
// caller may also filter by callee ($6).
const listByCallerSQL = `
SELECT ` + delegationColumns + ` FROM delegations
WHERE caller_id = $1 AND ($2 = '' OR status = $2) AND ($6 = '' OR callee_id = $6)
  AND (created_at, delegation_id) < ($3, $4)
ORDER BY created_at DESC, delegation_id DESC
LIMIT $5`

const listByCalleeSQL = `
SELECT ` + delegationColumns + ` FROM delegations
WHERE callee_id = $1 AND ($2 = '' OR status = $2)
  AND (created_at, delegation_id) < ($3, $4)
ORDER BY created_at DESC, delegation_id DESC
LIMIT $5`

const listByStatusSQL = `
SELECT ` + delegationColumns + ` FROM delegations
WHERE status = $1
  AND (created_at, delegation_id) < ($2, $3)
ORDER BY created_at DESC, delegation_id DESC
LIMIT $4`

const eventColumns = `
    id, delegation_id, COALESCE(from_status, '') AS from_status, to_status,
    COALESCE(reason, '') AS reason, actor, at, detail,
    COALESCE(caller_id, '') AS caller_id, COALESCE(callee_id, '') AS callee_id`

const listEventsSQL = `
SELECT ` + eventColumns + `
FROM delegation_events
WHERE delegation_id = $1
ORDER BY id`

// listExhaustedSQL pages the attempts that exhausted their retry policy,
// newest first, on idx_delegations_exhausted; $1, $2 and $3 narrow to one
// caller, callee or status ("" for any).
const listExhaustedSQL = `
SELECT ` + delegationColumns + ` FROM delegations
WHERE ` + exhaustedExpr + `
  AND ($1 = '' OR caller_id = $1) AND ($2 = '' OR callee_id = $2) AND ($3 = '' OR status = $3)
  AND (created_at, delegation_id) < ($4, $5)
ORDER BY created_at DESC, delegation_id DESC
LIMIT $6`

// claimSQL moves up to $2 due queued rows of callee $1 to dispatched, the
// longest due first, and returns them in that order. The claim reads
// idx_delegations_queued_callee (queued rows only, by callee and the time
// they are due: COALESCE(not_before, created_at), the index's expression,
// written the same way), takes its rows with FOR UPDATE SKIP LOCKED, and the
// UPDATE re-checks them (a row another writer moved first is left out).
const claimSQL = `
WITH claimed AS (
    UPDATE delegations AS d
    SET status = 'dispatched', updated_at = now()
    WHERE d.delegation_id = ANY(ARRAY(
            SELECT delegation_id FROM delegations
            WHERE callee_id = $1 AND status = 'queued'
              AND COALESCE(not_before, created_at) <= now()
            ORDER BY COALESCE(not_before, created_at)
            LIMIT $2
            FOR UPDATE SKIP LOCKED))
      AND (d.status = 'queued' AND COALESCE(d.not_before, d.created_at) <= now()) IS TRUE
    RETURNING ` + delegationColumns + `
)
SELECT * FROM claimed
ORDER BY COALESCE(not_before, created_at), delegation_id`

// setStatusManySQL moves the rows of $1 (sorted ids) to $2 where their
// status is one of $3, as setStatusSQL does one: rows are locked in id order
// (so concurrent bulk writes do not deadlock), and the UPDATE re-checks
// their status. It counts the rows moved, and those whose retry policy
// scheduled the next attempt or had none left.
const setStatusManySQL = `
WITH moved AS (
    UPDATE delegations AS d
    SET status = $2,
        updated_at = now(),
        result_preview = COALESCE(NULLIF($4, ''), d.result_preview),
        error_detail = COALESCE(NULLIF($5, ''), d.error_detail)
    WHERE d.delegation_id = ANY(ARRAY(
            SELECT delegation_id FROM delegations
            WHERE delegation_id = ANY($1) AND status = ANY($3)
            ORDER BY delegation_id
            FOR UPDATE))
      AND d.status = ANY($3)
    RETURNING (d.status = ANY(d.retry_on) AND d.max_attempts > 1 AND d.attempt < d.max_attempts) AS retried,
              ` + exhaustedExpr + ` AS exhausted
)
SELECT count(*), count(*) FILTER (WHERE retried), count(*) FILTER (WHERE exhausted) FROM moved`

// retryManySQL inserts the next attempt of each row of $1 whose status is
// one of $2 (failed, stuck) and that has none yet, as retrySQL does with no
// override: id sweeper_next_attempt_id (rows whose id would be too long
// are left out), deadline now() + $3 seconds, due now. A taken id or a
// concurrent retry inserts nothing for that row. It counts the rows
// inserted.
const retryManySQL = `
WITH inserted AS (
    INSERT INTO delegations
        (delegation_id, caller_id, callee_id, task_preview, status, idempotency_key, deadline,
         heartbeat_timeout, attempt, retry_of, not_before,
         max_attempts, retry_backoff, retry_backoff_max, retry_on)
    SELECT sweeper_next_attempt_id(p.delegation_id, p.attempt), p.caller_id, p.callee_id, p.task_preview,
           'queued', p.idempotency_key, now() + make_interval(secs => $3::float8),
           p.heartbeat_timeout, p.attempt + 1, p.delegation_id, now(),
           p.max_attempts, p.retry_backoff, p.retry_backoff_max, p.retry_on
    FROM delegations AS p
    WHERE p.delegation_id = ANY($1) AND p.status = ANY($2)
      AND sweeper_next_attempt_id(p.delegation_id, p.attempt) IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM delegations AS n WHERE n.retry_of = p.delegation_id)
    ORDER BY p.delegation_id
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM inserted`
