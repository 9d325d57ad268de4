package daemon

// The daemon's own SQL: the replica lag check of ReadRouter. LSNs are read
// as bytes since 0/0 (bigint) so that they compare as numbers in Go.

// primaryLSNSQL is the primary's WAL write position: every commit
// acknowledged before it was read lies at or before it (under
// synchronous_commit off, every commit older than about three times
// wal_writer_delay). Not pg_current_wal_insert_lsn: on an idle primary
// whose last record ends a page, that points past the next page header,
// which no standby ever reports replayed.
const primaryLSNSQL = `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint`

// replicaLSNSQL is whether the replica is a standby, and the end of the WAL
// it has replayed (NULL on a server that is not in recovery).
const replicaLSNSQL = `SELECT pg_is_in_recovery(), pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint`
