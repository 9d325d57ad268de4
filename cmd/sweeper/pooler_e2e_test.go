package main_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/internal/pgserver"
	"github.com/tasksweeper/sweeper/internal/testbin"
	"github.com/tasksweeper/sweeper/internal/testdb"
)

// The binary behind a real PgBouncer in transaction mode with one server
// connection, which every process in turn gets.

// In the default mode the second process finds the first one's prepared
// statement on the shared server connection (42P05); the error says which
// key to set.
func TestPgBouncerDefaultModeErrorNamesTheKey(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	b := testdb.StartPgBouncer(t, pgserver.PgBouncerOptions{PoolSize: 1})
	env := []string{"SWEEPER_DATABASE_URL=" + withPassword(db.ViaPgBouncer(t, b))}
	_ = run(t, env, "status") // leaves its prepared statements on the server connection
	r := run(t, env, "status")
	if r.Code != 1 || !strings.Contains(r.Stderr, "SQLSTATE 42P05") ||
		!strings.Contains(r.Stderr, "set database.pooler: transaction, SWEEPER_DATABASE_POOLER=transaction") {
		t.Fatalf("status through pgbouncer in the default mode, second process: %s", r)
	}
	assertNoSecret(t, "status", r)
}

// With SWEEPER_DATABASE_POOLER=transaction: --once, status, migrate (refused
// without database.migrate_url, done with it) and the daemon work.
func TestPgBouncerTransactionModeBinary(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	seedRaw(t, db, seedSQL)
	b := testdb.StartPgBouncer(t, pgserver.PgBouncerOptions{PoolSize: 1})
	env := []string{"SWEEPER_DATABASE_URL=" + withPassword(db.ViaPgBouncer(t, b)), "SWEEPER_DATABASE_POOLER=transaction"}

	for range 2 { // a second process reuses the server connection
		if st := run(t, env, "status", "--output", "json"); st.Code != 0 || !strings.Contains(st.Stdout, `"total":5`) {
			t.Fatalf("status: %s", st)
		}
	}
	once := run(t, env, "--once", "--output", "json")
	if once.Code != 0 || !strings.HasPrefix(once.Stdout, `{"swept":3,"by_reason":{"heartbeat_timeout":2,"deadline_exceeded":1,"stalled":0,"queue_timeout":0,"start_timeout":0}`) {
		t.Fatalf("--once: %s", once)
	}
	if again := run(t, env, "--once"); again.Code != 0 || !strings.Contains(again.Stdout, "marked 0 stuck") {
		t.Fatalf("second --once: %s", again)
	}

	mig := run(t, env, "migrate", "up")
	if mig.Code != 2 || !strings.Contains(mig.Stderr, "database.migrate_url") || !strings.Contains(mig.Stderr, "session advisory lock") {
		t.Fatalf("migrate up through a transaction pooler without database.migrate_url: %s", mig)
	}
	withDirect := append([]string{"SWEEPER_DATABASE_MIGRATE_URL=" + withPassword(db.URL)}, env...)
	if mig := run(t, withDirect, "migrate", "up"); mig.Code != 0 || !strings.Contains(mig.Stdout, "schema version") {
		t.Fatalf("migrate up with database.migrate_url: %s", mig)
	}
	assertNoSecret(t, "migrate up", mig)

	seedRaw(t, db, `INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat)
		VALUES ('stale-3', 'c', 'w', 'in_progress', now() - interval '1 hour')`)
	d := testbin.StartDaemon(t, binary, "sweeper", append([]string{"SWEEPER_SWEEP_SCHEDULE=@every 1s"}, env...))
	testbin.Eventually(t, 20*time.Second, "a sweep through pgbouncer in /metrics", func() bool {
		_, body := get(t, d, "/metrics")
		return strings.Contains(body, `sweeper_swept_total{reason="heartbeat_timeout"} 1`)
	})
	if code, body := get(t, d, "/readyz"); code != 200 {
		t.Errorf("/readyz = %d %q", code, body)
	}
	if _, body := get(t, d, "/metrics"); !strings.Contains(body, `sweeper_runs_total{result="error"} 0`) {
		t.Errorf("failed runs through pgbouncer:\n%s", d.Logs())
	}
	if code := d.Stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM\n%s", code, d.Logs())
	}
	if strings.Contains(d.Logs(), secret) {
		t.Fatalf("logs show the password:\n%s", d.Logs())
	}
}

// `sweeper prune` through PgBouncer in transaction mode: the dry run, then
// the archived passes (one transaction per batch), each a new process on the
// same server connection.
func TestPgBouncerPruneCommand(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	seedRetention(t, db)
	b := testdb.StartPgBouncer(t, pgserver.PgBouncerOptions{PoolSize: 1})
	archive := filepath.Join(t.TempDir(), "archive")
	env := []string{"SWEEPER_DATABASE_URL=" + withPassword(db.ViaPgBouncer(t, b)), "SWEEPER_DATABASE_POOLER=transaction",
		"SWEEPER_RETENTION_ARCHIVE_DIR=" + archive, "SWEEPER_RETENTION_BATCH_SIZE=1"}
	parse := func(r testbin.Result) pruneLine {
		t.Helper()
		var p pruneLine
		if r.Code != 0 || json.Unmarshal([]byte(strings.TrimSpace(r.Stdout)), &p) != nil {
			t.Fatalf("prune through pgbouncer: %s", r)
		}
		assertNoSecret(t, "prune", r)
		return p
	}
	if d := parse(run(t, env, "prune", "--dry-run", "--output", "json")); !d.DryRun || d.Pruned != 3 || d.EventsPruned != 6 {
		t.Fatalf("prune --dry-run through pgbouncer: %+v", d)
	}
	p := parse(run(t, env, "prune", "--output", "json"))
	if p.Pruned != 3 || p.ByStatus["completed"] != 2 || p.ByStatus["failed"] != 1 || p.EventsPruned != 6 || p.Batches != 3 || p.ArchiveFiles != 3 {
		t.Fatalf("prune through pgbouncer: %+v", p)
	}
	if again := parse(run(t, env, "prune", "--output", "json")); again.Pruned != 0 {
		t.Fatalf("second prune through pgbouncer: %+v", again)
	}
	var n int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM delegations`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("after prune through pgbouncer %d rows, %v; want 2", n, err)
	}
	if v := run(t, nil, "archive", "verify", archive); v.Code != 0 || !strings.Contains(v.Stdout, "3 files, 3 delegations, 6 events") {
		t.Fatalf("archive verify: %s", v)
	}
}

// The daemon through PgBouncer in transaction mode: its pruner's pass at
// start, and the console (token from the CLI, sign-in, overview, list,
// detail, the live page) whose event stream gets the stuck transition of
// the daemon's own sweep, woken by LISTEN on database.listen_url (set from
// the environment). Polling without it, and its warning, are tested in
// internal/daemon (TestPgBouncerConsole), with a process fewer here.
func TestPgBouncerDaemonPrunesAndServesConsole(t *testing.T) {
	t.Parallel()
	for _, direct := range []bool{true} {
		t.Run(fmt.Sprintf("listen_url=%v", direct), func(t *testing.T) {
			t.Parallel()
			db := testdb.New(t)
			seedRetention(t, db)
			b := testdb.StartPgBouncer(t, pgserver.PgBouncerOptions{PoolSize: 1})
			env := []string{"SWEEPER_DATABASE_URL=" + withPassword(db.ViaPgBouncer(t, b)), "SWEEPER_DATABASE_POOLER=transaction"}
			if direct {
				env = append(env, "SWEEPER_DATABASE_LISTEN_URL="+withPassword(db.URL))
			}
			r := run(t, env, "token", "create", "--name", "ops", "--role", "reader", "--output", "json")
			var tok struct{ Token string }
			if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &tok) != nil {
				t.Fatalf("token create through pgbouncer: %s", r)
			}
			d := testbin.StartDaemon(t, binary, "sweeper", append([]string{"SWEEPER_API_LISTEN=127.0.0.1:0",
				"SWEEPER_SWEEP_SCHEDULE=@every 1s"}, env...))
			testbin.Eventually(t, 30*time.Second, "a prune pass through pgbouncer", func() bool {
				m, _, err := d.Metrics()
				return err == nil && m[`sweeper_retention_runs_total{result="ok"}`]+m[`sweeper_retention_runs_total{result="error"}`] >= 1
			})
			m := d.MustMetrics(t)
			for series, want := range map[string]float64{
				`sweeper_retention_runs_total{result="error"}`:       0,
				`sweeper_retention_pruned_total{status="completed"}`: 2,
				`sweeper_retention_pruned_total{status="failed"}`:    1,
				`sweeper_retention_events_pruned_total`:              6,
			} {
				if m[series] != want {
					t.Errorf("%s = %v, want %v\n%s", series, m[series], want, d.Logs())
				}
			}
			warned := strings.Contains(d.Logs(), "database.listen_url is not set")
			if warned == direct {
				t.Errorf("warning that database.listen_url is not set: %v, with listen_url=%v\n%s", warned, direct, d.Logs())
			}

			am := apiAddrRE.FindStringSubmatch(d.Logs())
			if am == nil {
				t.Fatalf("no api_address logged:\n%s", d.Logs())
			}
			base := "http://" + am[1]
			jar, _ := cookiejar.New(nil)
			hc := &http.Client{Jar: jar, Timeout: 30 * time.Second,
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			do := func(method, path string, form url.Values) (int, string) {
				t.Helper()
				var body io.Reader
				if form != nil {
					body = strings.NewReader(form.Encode())
				}
				req, _ := http.NewRequest(method, base+path, body)
				if form != nil {
					req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				}
				res, err := hc.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer res.Body.Close()
				bb, _ := io.ReadAll(res.Body)
				return res.StatusCode, string(bb)
			}
			code, body := do("GET", "/login", nil)
			csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(body)
			if code != http.StatusOK || csrf == nil {
				t.Fatalf("GET /login = %d", code)
			}
			if code, body := do("POST", "/login", url.Values{"csrf": {csrf[1]}, "token": {tok.Token}, "next": {"/"}}); code != http.StatusSeeOther {
				t.Fatalf("sign-in through pgbouncer = %d:\n%s", code, body)
			}
			for path, want := range map[string]string{
				"/":                   `data-testid="failures">0<`,
				"/delegations":        "recent",
				"/delegations/live":   "live",
				"/delegations/recent": "completed",
				"/live":               "Live",
			} {
				if code, body := do("GET", path, nil); code != http.StatusOK || !strings.Contains(body, want) {
					t.Fatalf("GET %s through pgbouncer = %d, want 200 with %q:\n%s", path, code, want, body)
				}
			}

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", base+"/live/events", nil)
			sc := *hc
			sc.Timeout = 0 // the stream outlives any single timeout; ctx ends it
			res, err := sc.Do(req)
			if err != nil || res.StatusCode != http.StatusOK {
				t.Fatalf("GET /live/events = %v, %v", res, err)
			}
			defer res.Body.Close()
			lines := bufio.NewScanner(res.Body)
			for lines.Scan() && lines.Text() != ": open" {
			}
			seedRaw(t, db, `UPDATE delegations SET last_heartbeat = now() - interval '1 hour' WHERE delegation_id = 'live'`)
			began := time.Now()
			got := make(chan string, 1)
			go func() {
				defer close(got)
				for lines.Scan() {
					if strings.HasPrefix(lines.Text(), "data: ") {
						got <- lines.Text()
						return
					}
				}
			}()
			select {
			case line := <-got:
				if !strings.Contains(line, `"delegation_id":"live"`) || !strings.Contains(line, `"reason":"heartbeat_timeout"`) {
					t.Fatalf("live stream sent %q, want the stuck transition of live", line)
				}
				t.Logf("live stream through pgbouncer (listen_url=%v): the daemon's stuck transition %v after the row went stale",
					direct, time.Since(began).Round(time.Millisecond))
			case <-time.After(10 * time.Second):
				// The schedule sweeps within 1 s; the stream's own long
				// poll ends after 25 s: only a wake-up is in time.
				t.Fatalf("the live stream did not get the stuck transition within 10s\n%s", d.Logs())
			}
			cancel()
			if code := d.Stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
				t.Fatalf("exit %d after SIGTERM\n%s", code, d.Logs())
			}
			if strings.Contains(d.Logs(), secret) || strings.Contains(d.Logs(), tok.Token) {
				t.Fatalf("logs show the password or the token:\n%s", d.Logs())
			}
		})
	}
}
