// Package stress proves sweeper's promises under fire, against a real
// PostgreSQL and the built binary: a race storm of writers against three
// sweeper daemons (also behind PgBouncer, and with rows on their own
// heartbeat timeouts), faults (the server killed and restarted, a backend
// terminated, a statement timeout, the daemon killed or stopped mid-batch),
// the storm across a failover to a promoted standby (synchronous and
// asynchronous replication) and a failover of a real HA engine
// (pg_auto_failover: `pg_autoctl perform failover` under load), secrets
// that must never show, TLS with a CA made in the test, concurrent
// migrations and a dirty schema.
//
// The package has only tests. A short form of each runs in `make test`;
// `make stress` runs the long storm and fuzz runs through
// tools/stress/cmd/stressrun, which prints the summary table. The duration of the
// storm comes from -stress.duration or SWEEPER_STRESS_DURATION (default
// 8s: the short form).
package stress
