// Package roles tests the least-privilege database roles of
// deploy/postgres (roles.sql, grants.sql; docs/operations.md, "Database
// roles"): migrations run as sweeper_owner, and the real sweeper binary runs
// as sweeper_daemon, once and as a daemon, while everything the daemon must
// not do is refused by PostgreSQL.
package roles

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tasksweeper/sweeper/internal/testbin"
	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/ledger"
)

var binary string

// TestMain builds the sweeper binary and runs the tests in deploy/postgres of
// the repository, where the SQL files they check live: this package is in the
// tools module, apart from the product.
func TestMain(m *testing.M) {
	if err := os.Chdir("../../../deploy/postgres"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin, cleanup, err := testbin.Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = bin
	code := testdb.Main(m)
	cleanup()
	os.Exit(code)
}

// setup is a database with the two roles of roles.sql, under names unique to
// this test (roles are global to the server), migrated by the owner role and
// granted by grants.sql.
type setup struct {
	admin, owner, daemon  string // connection URLs
	ownerRole, daemonRole string
}

func withUser(t *testing.T, raw, user, password string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(user, password)
	return u.String()
}

// sqlFile reads a file of deploy/postgres with the role names replaced.
func sqlFile(t *testing.T, name string, s *setup) string {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return strings.NewReplacer("sweeper_owner", s.ownerRole, "sweeper_daemon", s.daemonRole).Replace(string(data))
}

func exec1(t *testing.T, dsn, sql string, args ...any) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	defer conn.Close(ctx)
	if len(args) == 0 {
		// Simple protocol: a file of several statements.
		_, err = conn.PgConn().Exec(ctx, sql).ReadAll()
		return err
	}
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

func newSetup(t *testing.T) *setup {
	t.Helper()
	db := testdb.NewEmpty(t)
	suffix := strings.TrimPrefix(db.Name, "sweeper_t")
	s := &setup{admin: db.URL, ownerRole: "sweeper_owner" + suffix, daemonRole: "sweeper_daemon" + suffix}
	s.owner = withUser(t, db.URL, s.ownerRole, "owner-secret")
	s.daemon = withUser(t, db.URL, s.daemonRole, "daemon-secret")

	if err := exec1(t, s.admin, sqlFile(t, "roles.sql", s)); err != nil {
		t.Fatalf("roles.sql: %v", err)
	}
	// Twice: it is idempotent.
	if err := exec1(t, s.admin, sqlFile(t, "roles.sql", s)); err != nil {
		t.Fatalf("roles.sql, second run: %v", err)
	}
	for role, pw := range map[string]string{s.ownerRole: "owner-secret", s.daemonRole: "daemon-secret"} {
		if err := exec1(t, s.admin, fmt.Sprintf(`ALTER ROLE %s PASSWORD '%s'`, role, pw)); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		// Before testdb drops the database: the roles own its objects.
		_ = exec1(t, s.admin, fmt.Sprintf(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename IN ('%s', '%s')`, s.ownerRole, s.daemonRole))
		if err := exec1(t, s.admin, fmt.Sprintf(`DROP OWNED BY %s, %s CASCADE; DROP ROLE %s; DROP ROLE %s`, s.ownerRole, s.daemonRole, s.ownerRole, s.daemonRole)); err != nil {
			t.Errorf("dropping the roles: %v", err)
		}
	})

	if r := run(t, s.owner, "migrate", "up"); r.Code != 0 {
		t.Fatalf("migrate up as the owner: %s", r)
	}
	if err := exec1(t, s.owner, sqlFile(t, "grants.sql", s)); err != nil {
		t.Fatalf("grants.sql as the owner: %v", err)
	}
	if err := exec1(t, s.owner, sqlFile(t, "grants.sql", s)); err != nil {
		t.Fatalf("grants.sql, second run: %v", err)
	}
	return s
}

// run runs the binary as the role of dsn, without the HTTP server.
func run(t *testing.T, dsn string, args ...string) testbin.Result {
	t.Helper()
	return testbin.Run(t, binary, []string{"SWEEPER_DATABASE_URL=" + dsn, "SWEEPER_HTTP_LISTEN="}, args...)
}

// seed inserts, as the owner (standing in for the application), one live
// delegation and two that the sweep must mark: a stale heartbeat and a
// passed deadline.
func seed(t *testing.T, s *setup) {
	t.Helper()
	err := exec1(t, s.owner, `
INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat, deadline) VALUES
  ('live',  'c', 'w', 'in_progress', now(),                       now() + interval '1 hour'),
  ('stale', 'c', 'w', 'in_progress', now() - interval '1 hour',   now() + interval '1 hour'),
  ('late',  'c', 'w', 'queued',      NULL,                        now() - interval '1 minute');`)
	if err != nil {
		t.Fatalf("seeding: %v", err)
	}
}

func TestDaemonRoleSweepsOnce(t *testing.T) {
	s := newSetup(t)
	seed(t, s)

	r := run(t, s.daemon, "--once", "--output", "json")
	if r.Code != 0 {
		t.Fatalf("sweeper --once as %s: %s", s.daemonRole, r)
	}
	var sum struct {
		Swept    int            `json:"swept"`
		ByReason map[string]int `json:"by_reason"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.Stdout)), &sum); err != nil {
		t.Fatalf("summary %q: %v", r.Stdout, err)
	}
	if sum.Swept != 2 || sum.ByReason["heartbeat_timeout"] != 1 || sum.ByReason["deadline_exceeded"] != 1 {
		t.Errorf("summary = %+v, want 2 swept, one per reason", sum)
	}

	// The audit trigger wrote the events as the daemon role.
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.owner)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var stuck, events int
	if err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE status = 'stuck'), (SELECT count(*) FROM delegation_events WHERE to_status = 'stuck') FROM delegations`).Scan(&stuck, &events); err != nil {
		t.Fatal(err)
	}
	if stuck != 2 || events != 2 {
		t.Errorf("stuck rows %d, stuck events %d; want 2 and 2", stuck, events)
	}

	if r := run(t, s.daemon, "status", "--output", "json"); r.Code != 0 {
		t.Errorf("sweeper status as the daemon role: %s", r)
	}
	if v := schemaVersion(t, s.daemon); v.Dirty || !v.Current {
		t.Errorf("sweeper migrate version as the daemon role: %+v", v)
	}

	// A heartbeat that changes its progress, as the daemon role: the
	// statement sets progress_at itself (schema 11); a progress_at the
	// daemon makes up is replaced by now().
	dconn, err := pgx.Connect(ctx, s.daemon)
	if err != nil {
		t.Fatal(err)
	}
	defer dconn.Close(ctx)
	if notLive, err := ledger.New(dconn).HeartbeatBeats(ctx, []ledger.Beat{{ID: "live", Progress: json.RawMessage(`{"step": 2}`)}}); err != nil || len(notLive) != 0 {
		t.Fatalf("heartbeat with progress as the daemon role: %v %v", notLive, err)
	}
	if err := exec1(t, s.daemon, `UPDATE delegations SET progress = '{"step": 3}', progress_at = now() - interval '1 day' WHERE delegation_id = 'live'`); err != nil {
		t.Fatal(err)
	}
	var fresh bool
	if err := conn.QueryRow(ctx, `SELECT progress_at > now() - interval '1 minute' AND progress = '{"step": 3}' FROM delegations WHERE delegation_id = 'live'`).Scan(&fresh); err != nil || !fresh {
		t.Errorf("progress_at after the daemon set it a day back: fresh=%v (%v), want now()", fresh, err)
	}
}

// TestDaemonRoleIsRefused: what the daemon role must not do, PostgreSQL refuses.
func TestDaemonRoleIsRefused(t *testing.T) {
	s := newSetup(t)
	seed(t, s)
	refused := map[string]string{
		"delete a delegation":        `DELETE FROM delegations WHERE delegation_id = 'live'`,
		"delete a terminal row":      `DELETE FROM delegations WHERE status = 'stuck'`,
		"replace the prune function": `CREATE OR REPLACE FUNCTION sweeper_prune(ids text[], completed interval, failed interval, stuck interval) RETURNS TABLE (status text, delegations bigint, events bigint) LANGUAGE sql AS 'SELECT NULL::text, 0::bigint, 0::bigint'`,
		"truncate":                   `TRUNCATE delegations`,
		"insert a chosen created_at": `INSERT INTO delegations (delegation_id, caller_id, callee_id, created_at) VALUES ('x', 'c', 'w', now() - interval '1 year')`,
		"insert a chosen heartbeat":  `INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat) VALUES ('x', 'c', 'w', 'in_progress', now() + interval '1 year')`,
		"change another column":      `UPDATE delegations SET callee_id = 'other' WHERE delegation_id = 'live'`,
		"change the caller":          `UPDATE delegations SET caller_id = 'other' WHERE delegation_id = 'live'`,
		"move a deadline":            `UPDATE delegations SET deadline = now() + interval '1 year' WHERE delegation_id = 'live'`,
		"rewrite a task preview":     `UPDATE delegations SET task_preview = 'x' WHERE delegation_id = 'live'`,
		"mint a token":               `INSERT INTO api_tokens (name, role, hash) VALUES ('mine', 'admin', sha256('x'))`,
		"revoke a token":             `UPDATE api_tokens SET revoked_at = now()`,
		"un-revoke a token":          `UPDATE api_tokens SET revoked_at = NULL`,
		"delete a token":             `DELETE FROM api_tokens`,
		"truncate the tokens":        `TRUNCATE api_tokens`,
		"rewrite the audit log":      `UPDATE delegation_events SET actor = 'me'`,
		"delete from the audit log":  `DELETE FROM delegation_events`,
		"disable the guard trigger":  `ALTER TABLE delegations DISABLE TRIGGER delegations_before_update`,
		"create a table":             `CREATE TABLE mine (x int)`,
		"change the schema version":  `UPDATE sweeper_schema_migrations SET dirty = true`,
		"drop the table":             `DROP TABLE delegations`,
		"create a function":          `CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'`,
	}
	for name, sql := range refused {
		t.Run(name, func(t *testing.T) {
			err := exec1(t, s.daemon, sql)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != pgerrcode.InsufficientPrivilege {
				t.Errorf("%s: err = %v, want insufficient_privilege (42501)", sql, err)
			}
		})
	}

	// Migrations as the daemon role fail without touching the schema.
	if r := run(t, s.daemon, "migrate", "down"); r.Code == 0 {
		t.Errorf("migrate down as the daemon role succeeded: %s", r)
	}
	if v := schemaVersion(t, s.owner); v.Dirty || !v.Current {
		t.Errorf("after the refused down, the schema is %+v", v)
	}
	if err := exec1(t, s.owner, `SELECT 1 FROM delegations LIMIT 1`); err != nil {
		t.Errorf("delegations gone after a refused migrate down: %v", err)
	}
}

type version struct {
	Version uint `json:"version"`
	Dirty   bool `json:"dirty"`
	Current bool `json:"current"`
}

// schemaVersion runs `sweeper migrate version --output json` as dsn's role.
func schemaVersion(t *testing.T, dsn string) version {
	t.Helper()
	r := run(t, dsn, "migrate", "version", "--output", "json")
	var v version
	if r.Code != 0 {
		t.Fatalf("migrate version: %s", r)
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.Stdout)), &v); err != nil {
		t.Fatalf("migrate version output %q: %v", r.Stdout, err)
	}
	return v
}

// TestDaemonRoleRunsTheDaemon: the daemon starts under the role (schema
// check included), becomes ready, sweeps, and exits 0 on SIGTERM.
func TestDaemonRoleRunsTheDaemon(t *testing.T) {
	s := newSetup(t)
	seed(t, s)
	d := testbin.StartDaemon(t, binary, "daemon", []string{"SWEEPER_DATABASE_URL=" + s.daemon, "SWEEPER_SWEEP_SCHEDULE=@every 1s"})
	testbin.Eventually(t, 30*time.Second, "ready and swept", func() bool {
		code, _, _ := d.Get("/readyz")
		_, metrics, _ := d.Get("/metrics")
		return code == http.StatusOK && strings.Contains(metrics, `sweeper_swept_total{reason="heartbeat_timeout"} 1`)
	})
	if code := d.Stop(t, syscall.SIGTERM, 35*time.Second); code != 0 {
		t.Errorf("exit %d after SIGTERM\n%s", code, d.Logs())
	}
	if strings.Contains(d.Logs(), "daemon-secret") {
		t.Errorf("the password appears in the logs")
	}
}

// TestDaemonRolePrunes: with EXECUTE on sweeper_prune and no DELETE
// privilege, the daemon role prunes exactly the old terminal rows (archived
// first), and cannot use the function to delete anything else.
func TestDaemonRolePrunes(t *testing.T) {
	s := newSetup(t)
	seed(t, s)
	if r := run(t, s.daemon, "--once"); r.Code != 0 { // 'stale' and 'late' become stuck
		t.Fatalf("--once: %s", r)
	}
	// Test data: the stuck rows became stuck 100 days ago (triggers off,
	// as the superuser, through updated_at; no writer can choose finished_at).
	if err := exec1(t, s.admin, `SET session_replication_role = replica;
		UPDATE delegations SET updated_at = now() - interval '100 days' WHERE delegation_id = 'stale';
		SET session_replication_role = DEFAULT`); err != nil {
		t.Fatal(err)
	}
	archive := t.TempDir()
	r := testbin.Run(t, binary, []string{"SWEEPER_DATABASE_URL=" + s.daemon, "SWEEPER_HTTP_LISTEN=",
		"SWEEPER_RETENTION_ARCHIVE_DIR=" + archive}, "prune", "--output", "json")
	if r.Code != 0 || !strings.Contains(r.Stdout, `"pruned":1,`) || !strings.Contains(r.Stdout, `"stuck":1`) {
		t.Fatalf("prune as %s: %s", s.daemonRole, r)
	}
	if v := testbin.Run(t, binary, nil, "archive", "verify", archive); v.Code != 0 || !strings.Contains(v.Stdout, "1 files, 1 delegations") {
		t.Fatalf("archive verify: %s", v)
	}
	// Called by hand, the function deletes nothing that is live or young,
	// and refuses a retention under an hour.
	if err := exec1(t, s.daemon, `SELECT * FROM sweeper_prune(ARRAY['live', 'late'], interval '1 hour', interval '1 hour', interval '1 hour')`); err != nil {
		t.Fatalf("sweeper_prune as the daemon role: %v", err)
	}
	var pgErr *pgconn.PgError
	if err := exec1(t, s.daemon, `SELECT * FROM sweeper_prune(ARRAY['late'], NULL, NULL, interval '1 second')`); !errors.As(err, &pgErr) || pgErr.Code != pgerrcode.InvalidParameterValue {
		t.Fatalf("sweeper_prune with a 1s retention: %v, want invalid_parameter_value", err)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.owner)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var left []string
	rows, err := conn.Query(ctx, `SELECT delegation_id FROM delegations ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	left, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || strings.Join(left, ",") != "late,live" {
		t.Fatalf("rows left %v, %v; want late,live", left, err)
	}
}

var apiAddrRE = regexp.MustCompile(`"api_address":"([^"]+)"`)

// createToken runs `sweeper token create` as dsn's role and returns the
// token, or "" and the result when the command failed.
func createToken(t *testing.T, dsn, name, role, principal string) (string, testbin.Result) {
	t.Helper()
	r := run(t, dsn, "token", "create", "--output", "json", "--name", name, "--role", role, "--principal", principal)
	if r.Code != 0 {
		return "", r
	}
	var line struct{ Token string }
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.Stdout)), &line); err != nil || !strings.HasPrefix(line.Token, "swp_") {
		t.Fatalf("token create output %q: %v", r.Stdout, err)
	}
	return line.Token, r
}

// TestDaemonRoleServesTheAPI: the daemon, logged in as sweeper_daemon with
// api.listen set, answers every endpoint of the API and every page and the
// one action of the console without a server error, while the tokens are
// the owner's to create and revoke.
func TestDaemonRoleServesTheAPI(t *testing.T) {
	s := newSetup(t)
	seed(t, s)

	// Token management is the owner's; the daemon role is refused and
	// leaves no row behind.
	if tok, r := createToken(t, s.daemon, "intruder", "admin", ""); tok != "" || r.Code == 0 {
		t.Fatalf("token create as the daemon role succeeded: %s", r)
	}
	tokens := map[string]string{}
	for _, c := range [][3]string{{"billing", "caller", "billing"}, {"agent", "worker", "w"}, {"root", "admin", ""}, {"gone", "reader", ""}} {
		tok, r := createToken(t, s.owner, c[0], c[1], c[2])
		if tok == "" {
			t.Fatalf("token create %v as the owner: %s", c, r)
		}
		tokens[c[0]] = tok
	}
	if r := run(t, s.daemon, "token", "revoke", "gone"); r.Code == 0 {
		t.Fatalf("token revoke as the daemon role succeeded: %s", r)
	}
	if r := run(t, s.daemon, "token", "list"); r.Code != 0 || !strings.Contains(r.Stdout, "billing") {
		t.Errorf("token list as the daemon role (read only): %s", r)
	}

	d := testbin.StartDaemon(t, binary, "daemon", []string{"SWEEPER_DATABASE_URL=" + s.daemon,
		"SWEEPER_API_LISTEN=127.0.0.1:0", "SWEEPER_SWEEP_SCHEDULE=@every 1h"})
	m := apiAddrRE.FindStringSubmatch(d.Logs())
	if m == nil {
		t.Fatalf("no api_address logged:\n%s", d.Logs())
	}
	base := "http://" + m[1]
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	call := func(token, method, path, contentType, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		req.Header.Set("Authorization", "Bearer "+tokens[token])
		res, err := noRedirect.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	const js = "application/json"
	for _, c := range []struct {
		token, method, path, ctype, body string
		want                             int
		contains                         string
	}{
		{"billing", "POST", "/v1/delegations", js, `{"delegation_id":"api-1","callee_id":"w","task_preview":"p","idempotency_key":"k1","timeout_seconds":3600}`, 201, `"api-1"`},
		{"billing", "POST", "/v1/delegations", js, `{"delegation_id":"api-2","callee_id":"w","deadline":"2099-01-01T00:00:00Z"}`, 201, `"api-2"`},
		{"billing", "POST", "/v1/delegations", js, `{"delegation_id":"api-1","callee_id":"w","idempotency_key":"k1"}`, 200, `"api-1"`},
		{"billing", "GET", "/v1/delegations/api-1", "", "", 200, `"queued"`},
		{"billing", "GET", "/v1/delegations?caller_id=billing", "", "", 200, `"api-2"`},
		{"agent", "POST", "/v1/delegations/api-1/transitions", js, `{"to":"in_progress"}`, 200, `"applied"`},
		{"agent", "POST", "/v1/delegations/api-1/heartbeat", "", "", 200, `"live":true`},
		{"agent", "POST", "/v1/heartbeats", js, `{"ids":["api-1","api-2"]}`, 200, ""},
		{"root", "POST", "/v1/heartbeats", js, `{"ids":["api-1","live"]}`, 200, ""},
		{"agent", "POST", "/v1/delegations/api-1/transitions", js, `{"to":"completed","result":"done"}`, 200, `"applied"`},
		{"agent", "POST", "/v1/delegations/api-2/transitions", js, `{"to":"failed","error":"broke"}`, 200, `"applied"`},
		{"agent", "POST", "/v1/delegations/api-1/transitions", js, `{"to":"in_progress"}`, 409, ""},
		{"billing", "GET", "/v1/delegations/api-1/events", "", "", 200, `"completed"`},
		{"billing", "GET", "/v1/events", "", "", 200, `"events"`},
		{"root", "GET", "/v1/events?to_status=completed&wait=0s", "", "", 200, `"events"`},
		{"billing", "GET", "/v1/summary", "", "", 200, ""},
		{"root", "GET", "/v1/summary", "", "", 200, ""},
		{"root", "GET", "/v1/openapi.json", "", "", 200, `"openapi"`},
		{"gone", "GET", "/v1/summary", "", "", 200, ""}, // not revoked: the daemon role could not
		// Schema 8: a retry policy (the next attempt, inserted by the
		// trigger through the owner's sweeper_insert_retries), a manual
		// retry, a claim.
		{"billing", "POST", "/v1/delegations", js, `{"delegation_id":"api-3","callee_id":"w","retry":{"max_attempts":2,"backoff_seconds":0.01,"on":["failed"]}}`, 201, `"api-3"`},
		{"agent", "POST", "/v1/delegations/api-3/transitions", js, `{"to":"failed","error":"flaky"}`, 200, `"applied"`},
		{"billing", "GET", "/v1/delegations/api-3%232", "", "", 200, `"retry_of":"api-3"`},
		{"billing", "POST", "/v1/delegations/api-2/retry", js, `{}`, 201, `"api-2#2"`},
		{"agent", "POST", "/v1/claims", js, `{"limit":10}`, 200, `"api-2#2"`},
		// The console, Bearer-authenticated (no CSRF form needed).
		{"root", "GET", "/", "", "", 200, ""},
		{"root", "GET", "/delegations", "", "", 200, "api-2"},
		{"root", "GET", "/delegations?in_flight=true&caller_id=billing", "", "", 200, ""},
		{"root", "GET", "/delegations/live", "", "", 200, "live"},
		{"root", "GET", "/live", "", "", 200, ""},
		{"root", "POST", "/delegations/live/fail", "application/x-www-form-urlencoded", "reason=operator", 303, ""},
		{"root", "POST", "/bulk", "application/x-www-form-urlencoded", "action=retry&caller_id=billing&reason=operator", 200, "bulk-applied"},
	} {
		code, body := call(c.token, c.method, c.path, c.ctype, c.body)
		if code != c.want || !strings.Contains(body, c.contains) {
			t.Errorf("%s %s as %s: %d %.300s; want %d containing %q", c.method, c.path, c.token, code, body, c.want, c.contains)
		}
	}

	// What the API wrote, as the owner sees it.
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.owner)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT delegation_id || ':' || status || ':' || COALESCE(result_preview, error_detail, '') FROM delegations WHERE delegation_id IN ('api-1', 'api-2', 'live') ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if want := "api-1:completed:done,api-2:failed:broke,live:failed:"; err != nil || !strings.HasPrefix(strings.Join(got, ","), want) {
		t.Errorf("rows %v, %v; want %s...", got, err, want)
	}
	var intruders int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM api_tokens WHERE name = 'intruder' OR (name = 'gone' AND revoked_at IS NOT NULL)`).Scan(&intruders); err != nil || intruders != 0 {
		t.Errorf("token rows written by the daemon role: %d, %v", intruders, err)
	}

	metrics := d.MustMetrics(t)
	for k, v := range metrics {
		if strings.HasPrefix(k, "sweeper_api_requests_total") && strings.Contains(k, `code="500"`) && v > 0 {
			t.Errorf("%s = %v", k, v)
		}
	}
	if code := d.Stop(t, syscall.SIGTERM, 35*time.Second); code != 0 {
		t.Errorf("exit %d after SIGTERM\n%s", code, d.Logs())
	}
	for name, tok := range tokens {
		if strings.Contains(d.Logs(), tok) {
			t.Errorf("token %s appears in the logs", name)
		}
	}
}
