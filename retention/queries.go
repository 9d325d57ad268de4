package retention

// Every SQL statement the pruner runs, in one place.
//
// The eligibility rule, "status = $1 AND finished_at < now() - retention",
// is an index condition on idx_delegations_finished (status, finished_at,
// terminal rows only), so a pass reads only the rows it deletes, whatever
// the size of the ledger. Retentions are passed as seconds ($2), judged by
// the database clock. Rows are claimed oldest first, FOR UPDATE SKIP LOCKED,
// so concurrent pruners split the work; terminal rows are frozen, so no other
// writer holds them.
//
// The delete itself is sweeper_prune(ids, completed, failed, stuck) (the
// migration 000003): it deletes those of ids that are terminal and older
// than their status's retention (NULL: keep), their events go with them
// (trigger), and it returns the counts by status.

// jitOffSQL turns JIT compilation off for the batch's transaction: the
// planner's estimate for a claim of a batch with its events crosses
// jit_above_cost, and compiling took longer (about 45 ms) than the statement.
const jitOffSQL = `SELECT set_config('jit', 'off', true)`

// pruneBatchSQL claims up to $3 eligible rows of status $1 (retention $2
// seconds) and deletes them with their events, in one statement. $4, $5, $6
// are the retentions of completed, failed and stuck in seconds (NULL: keep),
// which sweeper_prune checks each row against once more.
const pruneBatchSQL = `
SELECT status, delegations, events FROM sweeper_prune(
    ARRAY(SELECT delegation_id FROM delegations
          WHERE status = $1 AND finished_at < now() - make_interval(secs => $2::float8)
          ORDER BY finished_at
          LIMIT $3
          FOR UPDATE SKIP LOCKED),
    make_interval(secs => $4::float8), make_interval(secs => $5::float8), make_interval(secs => $6::float8))`

// claimArchiveSQL claims up to $3 eligible rows of status $1 (retention $2
// seconds) and renders each, with its events in id order, as one JSON object
// on one line: the archive line. Every column is included, so a column added
// later is archived without a change here. It is built as json text
// (row_to_json, joined), not jsonb: the jsonb form (to_jsonb, jsonb_agg,
// ||) converted every value twice and took twice as long, 250-300 ms against
// 110-140 ms for a batch of 1000 with 3 events each on the 2-core bench
// machine under load, where the delete itself takes under 100 ms.
// (json_agg of the events took 200-290 ms in the same runs.)
const claimArchiveSQL = `
SELECT d.delegation_id,
       left(row_to_json(d)::text, -1) || ',"events":[' || COALESCE(
           (SELECT string_agg(row_to_json(e)::text, ',' ORDER BY e.id)
            FROM delegation_events AS e WHERE e.delegation_id = d.delegation_id),
           '') || ']}'
FROM delegations AS d
WHERE d.status = $1 AND d.finished_at < now() - make_interval(secs => $2::float8)
ORDER BY d.finished_at
LIMIT $3
FOR UPDATE OF d SKIP LOCKED`

// pruneIDsSQL deletes the claimed rows $1, once they are archived, with
// their events; $2, $3, $4 are the retentions of completed, failed and stuck
// in seconds (NULL: keep).
const pruneIDsSQL = `
SELECT status, delegations, events FROM sweeper_prune($1::text[],
    make_interval(secs => $2::float8), make_interval(secs => $3::float8), make_interval(secs => $4::float8))`

// countEligibleSQL is the dry run: the rows of status $1 that a pass would
// delete now (retention $2 seconds), and their events.
const countEligibleSQL = `
SELECT count(*), COALESCE(sum((SELECT count(*) FROM delegation_events AS e
                               WHERE e.delegation_id = d.delegation_id)), 0)::bigint
FROM delegations AS d
WHERE d.status = $1 AND d.finished_at < now() - make_interval(secs => $2::float8)`

// overdueSQL reads, after a pass, the rows of status $1 still eligible
// (retention $2 seconds), counted up to $3, and how long the oldest of them
// has been eligible (0 when none): two probes of the index.
const overdueSQL = `
SELECT (SELECT count(*) FROM (
            SELECT 1 FROM delegations
            WHERE status = $1 AND finished_at < now() - make_interval(secs => $2::float8)
            LIMIT $3) AS overdue),
       COALESCE(EXTRACT(EPOCH FROM now() - make_interval(secs => $2::float8) - (
            SELECT min(finished_at) FROM delegations
            WHERE status = $1 AND finished_at < now() - make_interval(secs => $2::float8))), 0)::float8`
