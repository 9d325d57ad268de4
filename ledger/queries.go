package ledger

// Every SQL statement the ledger runs, in one place. Statuses that the
// lifecycle decides (which rows a move may start from, which rows are in
// flight) are passed as parameters computed by status.go, never written here.

const delegationColumns = `
    delegation_id, caller_id, callee_id, task_preview,
    COALESCE(result_preview, '') AS result_preview,
    COALESCE(error_detail, '') AS error_detail,
    status,
    COALESCE(idempotency_key, '') AS idempotency_key,
    last_heartbeat, deadline,
    COALESCE(stuck_reason, '') AS stuck_reason,
    created_at, updated_at`

// setWriterSQL names the writer for the audit trigger, for the rest of the
// current transaction ($1 actor, $2 reason, $3 detail as JSON text).
const setWriterSQL = `
SELECT set_config('sweeper.actor', $1, true),
       set_config('sweeper.reason', $2, true),
       set_config('sweeper.detail', $3, true)`

// insertSQL inserts a delegation; a conflicting id or (caller, key) inserts
// nothing and returns no row. The deadline is $7 when given, else now() + $8
// seconds by the database clock.
const insertSQL = `
INSERT INTO delegations
    (delegation_id, caller_id, callee_id, task_preview, status, idempotency_key, deadline)
VALUES
    ($1, $2, $3, $4, $5, NULLIF($6, ''), COALESCE($7::timestamptz, now() + make_interval(secs => $8::float8)))
ON CONFLICT DO NOTHING
RETURNING delegation_id`

const selectByIdempotencyKeySQL = `
SELECT delegation_id FROM delegations WHERE caller_id = $1 AND idempotency_key = $2`

const selectCallerSQL = `
SELECT caller_id FROM delegations WHERE delegation_id = $1`

// setStatusSQL moves one row to $2 when its current status is one of $3 (the
// statuses the transition table allows to move to $2). The WHERE clause is
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
RETURNING status`

const selectStatusSQL = `
SELECT status FROM delegations WHERE delegation_id = $1`

// heartbeatSQL touches a live row ($2: the non-terminal statuses). It
// changes no indexed column except through heartbeat_minute, which moves once
// a minute, so most heartbeats are HOT updates (see the migration).
const heartbeatSQL = `
UPDATE delegations
SET last_heartbeat = now(), updated_at = now()
WHERE delegation_id = $1 AND status = ANY($2)
RETURNING status`

// heartbeatManySQL touches every live row among $1 in one statement.
const heartbeatManySQL = `
UPDATE delegations AS d
SET last_heartbeat = now(), updated_at = now()
FROM unnest($1::text[]) AS beat(delegation_id)
WHERE d.delegation_id = beat.delegation_id AND d.status = ANY($2)
RETURNING d.delegation_id`

const getSQL = `SELECT ` + delegationColumns + ` FROM delegations WHERE delegation_id = $1`

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
