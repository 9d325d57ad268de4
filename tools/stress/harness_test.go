package stress

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasksweeper/sweeper/internal/stress/report"
	"github.com/tasksweeper/sweeper/internal/testbin"
	"github.com/tasksweeper/sweeper/internal/testdb"
)

// EnvDuration sets the storm's duration when -stress.duration is not given.
const EnvDuration = "SWEEPER_STRESS_DURATION"

// shortDuration is the storm's duration in `make test`.
const shortDuration = 8 * time.Second

var flagDuration = flag.Duration("stress.duration", 0,
	"how long the race storm runs (default: $"+EnvDuration+", else "+shortDuration.String()+")")

// binary is the sweeper binary built by TestMain.
var binary string

func TestMain(m *testing.M) {
	flag.Parse()
	var flags []string
	if v, _ := strconv.ParseBool(os.Getenv("SWEEPER_STRESS_RACE")); v {
		flags = append(flags, "-race")
	}
	bin, cleanup, err := testbin.Build(flags...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = bin
	code := testdb.MainCheckingLeaks(m)
	cleanup()
	os.Exit(code)
}

// EnvFull, set to 1 by `make stress`, makes the tests that enumerate inputs
// try every combination rather than a sample, and the faults drain more rows.
const EnvFull = "SWEEPER_STRESS_FULL"

// full reports whether the long form of the suite runs.
func full() bool {
	v, _ := strconv.ParseBool(os.Getenv(EnvFull))
	return v
}

// stormDuration is the configured duration of the race storm.
func stormDuration(t *testing.T) time.Duration {
	t.Helper()
	if *flagDuration > 0 {
		return *flagDuration
	}
	if v := os.Getenv(EnvDuration); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("%s=%q: want a positive duration such as 60s", EnvDuration, v)
		}
		return d
	}
	return shortDuration
}

// record logs a test's figures and hands them to the summary of `make stress`.
func record(t *testing.T, f report.Figures) {
	t.Helper()
	line, err := report.Record(t.Name(), f)
	if err != nil {
		t.Error(err)
	}
	t.Log(line)
}

// secret is the password put in every DSN the tests give the binary; it must
// never show in any output.
const secret = "Pw-9f3e-hunter2"

// withUser returns dsn (a URL) with user and password set.
func withUser(t *testing.T, dsn, user, password string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if password == "" {
		u.User = url.User(user)
	} else {
		u.User = url.UserPassword(user, password)
	}
	return u.String()
}

// withQuery returns dsn (a URL) with query parameters set.
func withQuery(t *testing.T, dsn string, kv ...string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	// Spaces as %20: pgx does not read "+" as a space.
	u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")
	return u.String()
}

// result is one finished run of the binary; proc a running daemon.
type (
	result = testbin.Result
	proc   = testbin.Daemon
)

// run runs the binary to its end with env added to a clean environment.
func run(t *testing.T, env []string, args ...string) result {
	t.Helper()
	return testbin.Run(t, binary, env, args...)
}

// startDaemon starts `sweeper` (daemon mode) with env and waits until it
// serves HTTP. The test's cleanup kills it if it still runs.
func startDaemon(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	return testbin.StartDaemon(t, binary, name, env, args...)
}

// eventually polls cond until it holds, or fails the test after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testbin.Eventually(t, timeout, what, cond)
}

// Series of the daemon's metrics used by the tests.
const (
	runsOK       = `sweeper_runs_total{result="ok"}`
	runsError    = `sweeper_runs_total{result="error"}`
	sweptHB      = `sweeper_swept_total{reason="heartbeat_timeout"}`
	sweptDL      = `sweeper_swept_total{reason="deadline_exceeded"}`
	lastSuccess  = `sweeper_last_success_timestamp_seconds`
	batchesTotal = `sweeper_batches_total`
)

// connect opens a connection that the test's cleanup closes.
func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// queryInt runs a query returning one integer on a fresh connection (so it
// works across server restarts).
func queryInt(dsn, sql string, args ...any) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var n int64
	err = conn.QueryRow(ctx, sql, args...).Scan(&n)
	return n, err
}

func mustInt(t *testing.T, dsn, sql string, args ...any) int64 {
	t.Helper()
	n, err := queryInt(dsn, sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func mustExec(t *testing.T, dsn, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	defer conn.Close(context.Background())
	if len(args) == 0 {
		_, err = conn.PgConn().Exec(ctx, sql).ReadAll()
	} else {
		_, err = conn.Exec(ctx, sql, args...)
	}
	if err != nil {
		t.Fatalf("%s: %v", firstLine(sql), err)
	}
}

// execErr runs one statement on a fresh connection and returns its error.
func execErr(t *testing.T, dsn, sql string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}

// assertNoSecret fails the test when text shows the password.
func assertNoSecret(t *testing.T, what, text string) {
	t.Helper()
	if strings.Contains(text, secret) {
		t.Errorf("%s shows the DSN password:\n%s", what, text)
	}
}

// batchCheck verifies that every sweep transaction was applied whole: for
// each transaction that wrote stuck events, its events and the rows it left
// stuck are the same set, and it holds at most batch rows (exactly batch when
// full is set: the rows were all eligible from the start). It returns the
// number of transactions and of stuck rows.
func batchCheck(t *testing.T, dsn string, batch int, full bool) (txs, stuck int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	// Rows marked stuck: their tuple's xmin is the sweep transaction (a
	// terminal row is never updated again). Events: the audit trigger
	// inserted them in the same transaction.
	rows, err := conn.Query(ctx, `
WITH ev AS (
    SELECT xmin::text AS tx, delegation_id FROM delegation_events WHERE to_status = 'stuck'
), rw AS (
    SELECT xmin::text AS tx, delegation_id FROM delegations WHERE status = 'stuck'
)
SELECT COALESCE(ev.tx, rw.tx) AS tx,
       count(ev.delegation_id) AS events,
       count(rw.delegation_id) AS rows,
       count(*) FILTER (WHERE ev.delegation_id IS NULL OR rw.delegation_id IS NULL) AS unmatched
FROM ev FULL JOIN rw ON ev.tx = rw.tx AND ev.delegation_id = rw.delegation_id
GROUP BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	bad := 0
	for rows.Next() {
		var tx string
		var events, rws, unmatched int64
		if err := rows.Scan(&tx, &events, &rws, &unmatched); err != nil {
			t.Fatal(err)
		}
		txs++
		stuck += rws
		switch {
		case unmatched != 0 || events != rws:
			t.Errorf("transaction %s: %d stuck events, %d stuck rows, %d unmatched: a batch was applied in part", tx, events, rws, unmatched)
			bad++
		case rws > int64(batch) || full && rws != int64(batch):
			t.Errorf("transaction %s marked %d rows; batch size %d (full batches expected: %v)", tx, rws, batch, full)
			bad++
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if bad > 0 {
		t.Fatalf("%d of %d sweep transactions were not whole", bad, txs)
	}
	return txs, stuck
}
