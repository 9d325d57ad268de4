// Package sweep finds delegations that stopped making progress and marks them
// stuck.
//
// Two rules, judged by the database clock:
//
//  1. an in_progress delegation whose last heartbeat is older than its
//     heartbeat timeout (its own heartbeat_timeout, or else the sweeper's,
//     default 10 minutes) is stuck with reason heartbeat_timeout;
//  2. any non-terminal delegation past its deadline is stuck with reason
//     deadline_exceeded.
//
// Rows are claimed with FOR UPDATE SKIP LOCKED in bounded batches, one
// transaction per batch, each with its audit events (actor "sweeper") and one
// pg_notify per stuck delegation. The UPDATE re-checks the rule against the
// row as it is when locked, so a heartbeat or completion that commits first
// always wins, and the move goes through the same lifecycle guard as every
// other writer (ledger.Sources in Go, the guard trigger in the database).
// Correctness under several concurrent sweepers comes from those guards, not
// from a leader.
package sweep
