// Package roles tests the least-privilege database roles of
// deploy/postgres (roles.sql, grants.sql; docs/operations.md, "Database
// roles"): migrations run as sweeper_owner, and the real sweeper binary runs
// as sweeper_daemon, once and as a daemon, while everything the daemon must
// not do is refused by PostgreSQL.
package roles

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tasksweeper/sweeper/internal/testdb"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sweeper-roles-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "sweeper")
	build := exec.Command("go", "build", "-o", binary, "../../cmd/sweeper")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building sweeper:", err)
		os.Exit(1)
	}
	code := testdb.Main(m)
	_ = os.RemoveAll(dir)
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

	if r := run(t, s.owner, "migrate", "up"); r.code != 0 {
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

type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
}

func env(dsn string, extra ...string) []string {
	e := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir(), "SWEEPER_DATABASE_URL=" + dsn, "SWEEPER_LOG_FORMAT=json"}
	return append(e, extra...)
}

func run(t *testing.T, dsn string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = env(dsn, "SWEEPER_HTTP_LISTEN=")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running sweeper %v: %v", args, err)
	}
	return result{code, out.String(), errb.String()}
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
	if r.code != 0 {
		t.Fatalf("sweeper --once as %s: %s", s.daemonRole, r)
	}
	var sum struct {
		Swept    int            `json:"swept"`
		ByReason map[string]int `json:"by_reason"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.stdout)), &sum); err != nil {
		t.Fatalf("summary %q: %v", r.stdout, err)
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

	if r := run(t, s.daemon, "status", "--output", "json"); r.code != 0 {
		t.Errorf("sweeper status as the daemon role: %s", r)
	}
	if v := schemaVersion(t, s.daemon); v.Dirty || !v.Current {
		t.Errorf("sweeper migrate version as the daemon role: %+v", v)
	}
}

// TestDaemonRoleIsRefused: what the daemon role must not do, PostgreSQL refuses.
func TestDaemonRoleIsRefused(t *testing.T) {
	s := newSetup(t)
	seed(t, s)
	refused := map[string]string{
		"delete a delegation":       `DELETE FROM delegations WHERE delegation_id = 'live'`,
		"truncate":                  `TRUNCATE delegations`,
		"insert a delegation":       `INSERT INTO delegations (delegation_id, caller_id, callee_id) VALUES ('x', 'c', 'w')`,
		"change another column":     `UPDATE delegations SET callee_id = 'other' WHERE delegation_id = 'live'`,
		"rewrite the audit log":     `UPDATE delegation_events SET actor = 'me'`,
		"delete from the audit log": `DELETE FROM delegation_events`,
		"disable the guard trigger": `ALTER TABLE delegations DISABLE TRIGGER delegations_guard`,
		"create a table":            `CREATE TABLE mine (x int)`,
		"change the schema version": `UPDATE sweeper_schema_migrations SET dirty = true`,
		"drop the table":            `DROP TABLE delegations`,
		"create a function":         `CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'`,
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
	if r := run(t, s.daemon, "migrate", "down"); r.code == 0 {
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
	if r.code != 0 {
		t.Fatalf("migrate version: %s", r)
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.stdout)), &v); err != nil {
		t.Fatalf("migrate version output %q: %v", r.stdout, err)
	}
	return v
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestDaemonRoleRunsTheDaemon: the daemon starts under the role (schema
// check included), becomes ready, sweeps, and exits 0 on SIGTERM.
func TestDaemonRoleRunsTheDaemon(t *testing.T) {
	s := newSetup(t)
	seed(t, s)
	addr := freePort(t)
	cmd := exec.Command(binary)
	cmd.Env = env(s.daemon, "SWEEPER_HTTP_LISTEN="+addr, "SWEEPER_SWEEP_SCHEDULE=@every 1s")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, _ := get("/readyz")
		_, metrics := get("/metrics")
		if code == http.StatusOK && strings.Contains(metrics, `sweeper_swept_total{reason="heartbeat_timeout"} 1`) {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("daemon exited: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			code, body := get("/readyz")
			t.Fatalf("not ready and swept within 30s: /readyz %d %q\nlogs:\n%s", code, body, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(35 * time.Second):
		t.Fatalf("no exit within 35s of SIGTERM\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "daemon-secret") {
		t.Errorf("the password appears in the logs")
	}
}
