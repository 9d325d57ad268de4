// Package pgserver starts a throwaway PostgreSQL server for tests and for
// `sweeper dev`.
//
// Start finds a server in this order (see Options.Kinds):
//
//  1. env: the existing server named by SWEEPER_TEST_DATABASE_URL; Close
//     leaves it alone;
//  2. docker: a postgres:15 container, when Options.Docker is set and a
//     Docker engine answers. This package links no Docker client: the
//     client is package pgdocker (dockertest), which the test harness
//     (internal/testdb) and the benchmarks pass in. Programs that do not
//     import pgdocker, such as the sweeper binary (`sweeper dev`), never
//     start containers;
//  3. local: the PostgreSQL server binaries of this machine (initdb and
//     postgres, found in PATH or under /usr/lib/postgresql/*/bin, newest
//     first), with a data directory in a temporary directory (on /dev/shm when
//     it has room), listening on a free 127.0.0.1 port. A root process runs
//     them as the user postgres, since PostgreSQL refuses to run as root.
//
// Throwaway servers run with durability switched off (fsync, full_page_writes
// and synchronous_commit off): they are fast and lose nothing unless the
// machine, or, for synchronous_commit, the server process, crashes.
//
// Nothing is left behind: a small watchdog process (/bin/sh) holds the read
// end of a pipe whose write end only the Go process holds. When that process
// ends in any way (Close, a failed test, a panic, SIGKILL), the watchdog reads
// end-of-file and, unless Close already cleaned up, stops the server and
// removes its directory or container.
//
// StartStandby makes a streaming standby of a local server (pg_basebackup,
// synchronous or not, optionally through a replication slot) and
// Server.Promote promotes it: failover tests kill the primary and promote
// the standby.
//
// When nothing is found Start returns an error that wraps ErrNoPostgres, so
// callers can tell "no PostgreSQL here" (tests skip) from "PostgreSQL failed"
// (tests fail).
package pgserver
