package console

import "github.com/tasksweeper/sweeper/ledger"

// Every SQL statement of the console, in one place. The console only reads
// here; its writes (an admin marking delegations failed or retrying them)
// go through the ledger package.
//
// Each statement is served by an index whose size follows either the work in
// flight (the partial indexes of migration 000001 and 000002) or the page
// asked for (a keyset range of a newest-first index, bounded by LIMIT): no
// COUNT(*) and no OFFSET over history. TestQueryPlans checks every one with
// EXPLAIN. Optional filters are the empty string for "any".

// consoleColumns is ledger.Delegation's columns (its db tags), the
// ledger's own select list.
const consoleColumns = ledger.DelegationColumns

// inFlightByCallerSQL counts in-flight rows by caller and status, for one
// caller ($1) or callee ($2) or everyone. The status literals are the
// predicate of the in-flight partial indexes (a parameter cannot prove a
// partial index's predicate), so the count reads only rows in flight.
const inFlightByCallerSQL = `
SELECT caller_id, status, count(*) FROM delegations
WHERE status IN ('queued', 'dispatched', 'in_progress')
  AND ($1 = '' OR caller_id = $1) AND ($2 = '' OR callee_id = $2)
GROUP BY caller_id, status
ORDER BY caller_id, status`

// dueSQL reads, over the in-flight rows of the scope ($1 caller, $2 callee),
// the oldest heartbeat of an in_progress row and the earliest deadline, and
// the database clock. The minimum of heartbeat_minute comes first from the
// heartbeat index; the exact oldest heartbeat is then read among the rows of
// that minute only. Rows with a heartbeat timeout of their own (schema
// version 4) are left out of the oldest heartbeat: it is compared with the
// global timeout.
const dueSQL = `
WITH scoped AS (
    SELECT min(heartbeat_minute) AS minute FROM delegations
    WHERE status = 'in_progress' AND heartbeat_timeout IS NULL AND ($1 = '' OR caller_id = $1) AND ($2 = '' OR callee_id = $2)
)
SELECT now(),
       (SELECT min(last_heartbeat) FROM delegations, scoped
        WHERE status = 'in_progress' AND heartbeat_timeout IS NULL AND heartbeat_minute = scoped.minute
          AND ($1 = '' OR caller_id = $1) AND ($2 = '' OR callee_id = $2)),
       (SELECT min(deadline) FROM delegations
        WHERE status IN ('queued', 'dispatched', 'in_progress')
          AND ($1 = '' OR caller_id = $1) AND ($2 = '' OR callee_id = $2))`

// clockSQL is the database clock, which the overview's stuck counts read
// their last day and hour from.
const clockSQL = `SELECT now()`

// eventsSinceSQL finds the first transaction id (delegation_events.tx_id,
// as a bigint) whose events are at or after time $1, by a binary search over
// idx_delegation_events_feed: about log2(transactions) index probes,
// whatever the size of the log. Event times follow transaction ids except
// where transactions overlap, so the bound may be a transaction's length
// early; stuckSinceSQL filters on the time itself as well.
const eventsSinceSQL = `
WITH RECURSIVE search (lo, hi) AS (
    SELECT (SELECT min(tx_id)::text::bigint FROM delegation_events),
           (SELECT max(tx_id)::text::bigint + 1 FROM delegation_events)
  UNION ALL
    SELECT CASE WHEN probe.at IS NULL OR probe.at >= $1 THEN search.lo ELSE probe.tx + 1 END,
           CASE WHEN probe.at IS NULL OR probe.at >= $1 THEN (search.lo + search.hi) / 2 ELSE search.hi END
    FROM search
    LEFT JOIN LATERAL (
        SELECT tx_id::text::bigint AS tx, at FROM delegation_events
        WHERE tx_id >= ((search.lo + search.hi) / 2)::text::xid8 AND tx_id < search.hi::text::xid8
        ORDER BY tx_id LIMIT 1) AS probe ON true
    WHERE search.lo < search.hi
)
SELECT COALESCE(min(lo), 0) FROM search WHERE lo >= hi`

// stuckSinceSQL counts the stuck transitions of transactions from $1 on and
// time $2 on, by reason and minute, for one caller ($3) or callee ($4) or
// everyone: an index-only range scan of idx_delegation_events_stuck
// (migration 000005: stuck events only, keyed by (tx_id, id), holding at,
// reason, caller_id and callee_id), so no heap fetch per event once the
// append-only log is vacuumed. to_status = 'stuck' is that index's
// predicate and must stay a literal.
const stuckSinceSQL = `
SELECT COALESCE(reason, ''), date_bin('1 minute', at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS minute, count(*)
FROM delegation_events
WHERE to_status = 'stuck' AND tx_id >= $1::bigint::text::xid8 AND at >= $2
  AND ($3 = '' OR caller_id = $3) AND ($4 = '' OR callee_id = $4)
GROUP BY 1, 2
ORDER BY 2`

// The list statements page newest first with a keyset cursor: rows before
// (created_at, delegation_id) < ($at, $id), at or after created_at $after.
// Statuses are a text[] (one status, the in-flight ones, or all six).

// listByStatusesSQL reads each status of $1 from idx_delegations_status, at
// most $5 rows each, and merges them: $2 at, $3 id, $4 after, $5 limit.
const listByStatusesSQL = `
SELECT d.* FROM unnest($1::text[]) AS s(status)
CROSS JOIN LATERAL (
    SELECT ` + consoleColumns + ` FROM delegations
    WHERE status = s.status
      AND (created_at, delegation_id) < ($2, $3) AND created_at >= $4
    ORDER BY created_at DESC, delegation_id DESC
    LIMIT $5) AS d
ORDER BY d.created_at DESC, d.delegation_id DESC
LIMIT $5`

// listByCallerSQL: idx_delegations_caller. $1 caller, $2 statuses, $3
// callee, $4 at, $5 id, $6 after, $7 limit.
const listByCallerSQL = `
SELECT ` + consoleColumns + ` FROM delegations
WHERE caller_id = $1 AND status = ANY($2) AND ($3 = '' OR callee_id = $3)
  AND (created_at, delegation_id) < ($4, $5) AND created_at >= $6
ORDER BY created_at DESC, delegation_id DESC
LIMIT $7`

// listInFlightByCallerSQL is listByCallerSQL over the in-flight rows only,
// on idx_delegations_inflight_caller. The literal status list is that
// index's predicate; the statuses asked for ($2) are tested with
// array_position, not = ANY: an indexable status condition let a custom
// plan at 5M rows prefer idx_delegations_status (every in-flight row of
// those statuses, 60,938 buffers, 389 ms) over the caller's range.
const listInFlightByCallerSQL = `
SELECT ` + consoleColumns + ` FROM delegations
WHERE caller_id = $1 AND status IN ('queued', 'dispatched', 'in_progress')
  AND array_position($2::text[], status) IS NOT NULL AND ($3 = '' OR callee_id = $3)
  AND (created_at, delegation_id) < ($4, $5) AND created_at >= $6
ORDER BY created_at DESC, delegation_id DESC
LIMIT $7`

// listByCalleeSQL: idx_delegations_callee. $1 callee, $2 statuses, $3 at,
// $4 id, $5 after, $6 limit.
const listByCalleeSQL = `
SELECT ` + consoleColumns + ` FROM delegations
WHERE callee_id = $1 AND status = ANY($2)
  AND (created_at, delegation_id) < ($3, $4) AND created_at >= $5
ORDER BY created_at DESC, delegation_id DESC
LIMIT $6`

// listByIDPrefixSQL reads the ids starting with $1 in id order (a range of
// the primary key from $1 to $2, the prefix followed by U+10FFFF), after
// the cursor id $3. The other filters narrow the range: $4 statuses, $5
// caller, $6 callee, $7 created at or after, $8 created before, $9 limit.
// The status test is array_position, not = ANY: an indexable status
// condition lets a generic plan prefer idx_delegations_status, which would
// read every row of those statuses instead of the prefix's range.
const listByIDPrefixSQL = `
SELECT ` + consoleColumns + ` FROM delegations
WHERE delegation_id >= $1 AND delegation_id < $2 AND delegation_id > $3
  AND starts_with(delegation_id, $1)
  AND array_position($4::text[], status) IS NOT NULL
  AND ($5 = '' OR caller_id = $5) AND ($6 = '' OR callee_id = $6)
  AND created_at >= $7 AND created_at < $8
ORDER BY delegation_id
LIMIT $9`

// recentStuckSQL is the newest $1 stuck transitions, for one caller ($2) or
// callee ($3) or everyone: the live page's first rows, read backwards on
// idx_delegation_events_stuck (or idx_delegation_events_to_status).
const recentStuckSQL = `
SELECT id, delegation_id, COALESCE(reason, '') AS reason, actor, at,
       COALESCE(caller_id, '') AS caller_id, COALESCE(callee_id, '') AS callee_id
FROM delegation_events
WHERE to_status = 'stuck' AND ($2 = '' OR caller_id = $2) AND ($3 = '' OR callee_id = $3)
ORDER BY tx_id DESC, id DESC
LIMIT $1`

// retriesSinceSQL counts the later attempts (retries, by the policy or by
// hand) created in the last hour and day, for one caller ($1) or callee
// ($2) or everyone: a range of idx_delegations_retries, which holds later
// attempts only.
const retriesSinceSQL = `
SELECT count(*) FILTER (WHERE created_at >= now() - interval '1 hour'), count(*)
FROM delegations
WHERE retry_of IS NOT NULL AND created_at >= now() - interval '1 day'
  AND ($1 = '' OR caller_id = $1) AND ($2 = '' OR callee_id = $2)`

// exhaustedSinceSQL counts the attempts that exhausted their retry policy
// in the last hour and day, by the time they ended: a range of
// idx_delegations_exhausted_finished, which holds those rows only.
const exhaustedSinceSQL = `
SELECT count(*) FILTER (WHERE finished_at >= now() - interval '1 hour'), count(*)
FROM delegations
WHERE ` + ledger.ExhaustedCondition + ` AND finished_at >= now() - interval '1 day'
  AND ($1 = '' OR caller_id = $1) AND ($2 = '' OR callee_id = $2)`

// notRetriedSQL keeps the ids of $1 that have no next attempt, each a probe
// of idx_delegations_retry_of: what a bulk retry would act on.
const notRetriedSQL = `
SELECT id FROM unnest($1::text[]) AS id
WHERE NOT EXISTS (SELECT 1 FROM delegations AS n WHERE n.retry_of = id)
ORDER BY id`
