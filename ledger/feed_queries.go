package ledger

// The statements of the durable feed, the summary and the in-flight list
// (migration 000002).
//
// The feed reads in (tx_id, id) order from a cursor ($1 tx_id as text, $2
// id) and says of each event whether it is settled: written by a
// transaction older than every running one, so no event can still appear
// before it. The caller keeps the settled prefix. Each statement is a range
// of its own index: idx_delegation_events_feed (tx_id, id), _caller
// (caller_id, tx_id, id), _callee and _to_status. Optional filters are the
// empty string for "any".

const feedColumns = eventColumns + `,
    tx_id < pg_snapshot_xmin(pg_current_snapshot()) AS settled`

// feedCursorSQL finds the transaction of the cursor's event.
const feedCursorSQL = `SELECT tx_id::text FROM delegation_events WHERE id = $1`

// feedByCallerSQL: $3 caller, $4 to_status, $5 callee, $6 limit.
const feedByCallerSQL = `
SELECT ` + feedColumns + ` FROM delegation_events
WHERE caller_id = $3 AND (tx_id, id) > ($1::text::xid8, $2)
  AND ($4 = '' OR to_status = $4) AND ($5 = '' OR callee_id = $5)
ORDER BY caller_id, tx_id, id
LIMIT $6`

// feedByCalleeSQL: $3 callee, $4 to_status, $5 limit.
const feedByCalleeSQL = `
SELECT ` + feedColumns + ` FROM delegation_events
WHERE callee_id = $3 AND (tx_id, id) > ($1::text::xid8, $2)
  AND ($4 = '' OR to_status = $4)
ORDER BY callee_id, tx_id, id
LIMIT $5`

// feedByStatusSQL: $3 to_status, $4 limit.
const feedByStatusSQL = `
SELECT ` + feedColumns + ` FROM delegation_events
WHERE to_status = $3 AND (tx_id, id) > ($1::text::xid8, $2)
ORDER BY to_status, tx_id, id
LIMIT $4`

// feedAllSQL: $3 limit.
const feedAllSQL = `
SELECT ` + feedColumns + ` FROM delegation_events
WHERE (tx_id, id) > ($1::text::xid8, $2)
ORDER BY tx_id, id
LIMIT $3`

// feedHeadSQL is the id of the newest event (0 when there is none): where a
// consumer that wants only new events starts.
const feedHeadSQL = `SELECT COALESCE(max(id), 0) FROM delegation_events`

// The summary counts in-flight rows only. The status literals are the
// predicate of idx_delegations_inflight_caller (a parameter cannot prove a
// partial index's predicate), so the count reads that index, whose size
// follows the work in flight, not the ledger's history.
const summaryAllSQL = `
SELECT caller_id, status, count(*) FROM delegations
WHERE status IN ('queued', 'dispatched', 'in_progress')
GROUP BY caller_id, status
ORDER BY caller_id, status`

const summaryCallerSQL = `
SELECT caller_id, status, count(*) FROM delegations
WHERE caller_id = $1 AND status IN ('queued', 'dispatched', 'in_progress')
GROUP BY caller_id, status
ORDER BY caller_id, status`

// listInFlightByCallerSQL pages a caller's in-flight rows newest first on
// idx_delegations_inflight_caller; $2 narrows to one status, $6 to one callee.
const listInFlightByCallerSQL = `
SELECT ` + delegationColumns + ` FROM delegations
WHERE caller_id = $1 AND status IN ('queued', 'dispatched', 'in_progress')
  AND ($2 = '' OR status = $2) AND ($6 = '' OR callee_id = $6)
  AND (created_at, delegation_id) < ($3, $4)
ORDER BY created_at DESC, delegation_id DESC
LIMIT $5`

// listenEventsSQL subscribes the waiter's connection to the channel the
// migration's delegation_events_notify trigger sends on.
const listenEventsSQL = `LISTEN sweeper_events`
