package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/internal/pgserver"
	"github.com/tasksweeper/sweeper/internal/testbin"
	"github.com/tasksweeper/sweeper/internal/testdb"
)

var apiAddrRE = regexp.MustCompile(`"api_address":"([^"]+)"`)

// The ledger over HTTP through the real binary: tokens from the CLI, a
// worker and a caller over the API, a sweep that the feed's long poll sees
// within a second, revocation at once, slow clients cut off, and no token
// in any output.
//
// It runs on a PostgreSQL server of its own: the feed holds events back while
// any older write transaction on the server runs (docs/design.md, "the feed's
// order"), and the other tests of this package write on the shared server
// all the time, with transactions that last seconds.
func TestAPIThroughTheBinary(t *testing.T) {
	t.Parallel()
	srv := testdb.StartServer(t, pgserver.Options{})
	env := []string{"SWEEPER_DATABASE_URL=" + srv.URL}
	if r := run(t, env, "migrate", "up"); r.Code != 0 {
		t.Fatalf("migrate up: %s", r)
	}

	tokens := map[string]string{}
	var outputs []string
	for _, c := range [][]string{
		{"--name", "billing", "--role", "caller", "--principal", "billing"},
		{"--name", "agent", "--role", "worker", "--principal", "agent-a"},
		{"--name", "console", "--role", "reader"},
	} {
		r := run(t, env, append([]string{"token", "create", "--output", "json"}, c...)...)
		var line struct{ Name, Role, Principal, Token string }
		if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &line) != nil || line.Name != c[1] || !strings.HasPrefix(line.Token, "swp_") {
			t.Fatalf("token create %v: %s", c, r)
		}
		tokens[line.Name] = line.Token
		outputs = append(outputs, r.Stderr)
	}
	for _, bad := range [][]string{
		{"token", "create", "--name", "billing", "--role", "caller", "--principal", "x"},
		{"token", "create", "--name", "x y", "--role", "reader"},
		{"token", "create", "--name", "w", "--role", "worker"},
		{"token", "create", "--name", "w", "--role", "root"},
		{"token", "revoke", "nobody"},
		{"token", "frobnicate"},
	} {
		if r := run(t, env, bad...); r.Code != 2 {
			t.Fatalf("%v: want exit 2, got %s", bad, r)
		}
	}
	list := run(t, env, "token", "list")
	if list.Code != 0 || !strings.Contains(list.Stdout, "billing") || !strings.Contains(list.Stdout, "agent-a") {
		t.Fatalf("token list: %s", list)
	}
	outputs = append(outputs, list.Stdout, list.Stderr)

	d := testbin.StartDaemon(t, binary, "sweeper", append(env,
		"SWEEPER_API_LISTEN=127.0.0.1:0", "SWEEPER_SWEEP_SCHEDULE=@every 1s", "SWEEPER_LOG_LEVEL=debug",
		"SWEEPER_API_READ_HEADER_TIMEOUT=300ms"))
	m := apiAddrRE.FindStringSubmatch(d.Logs())
	if m == nil {
		t.Fatalf("no api_address logged:\n%s", d.Logs())
	}
	base := "http://" + m[1]
	call := func(token, method, path string, body any) (int, map[string]any) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, base+path, rd)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+tokens[token])
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer res.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(res.Body).Decode(&out)
		return res.StatusCode, out
	}

	if code, p := call("", "GET", "/v1/summary", nil); code != 401 || p["type"] != "urn:sweeper:problem:unauthenticated" {
		t.Fatalf("anonymous: %d %v", code, p)
	}
	if code, out := call("billing", "POST", "/v1/delegations", map[string]any{"delegation_id": "job-1", "callee_id": "agent-a", "timeout_seconds": 2}); code != 201 {
		t.Fatalf("insert: %d %v", code, out)
	}
	if code, out := call("agent", "POST", "/v1/delegations/job-1/transitions", map[string]any{"to": "in_progress"}); code != 200 || out["outcome"] != "applied" {
		t.Fatalf("start: %d %v", code, out)
	}
	if code, out := call("agent", "POST", "/v1/delegations/job-1/heartbeat", nil); code != 200 || out["live"] != true {
		t.Fatalf("heartbeat: %d %v", code, out)
	}
	// The caller follows its stuck delegations; the daemon's sweep marks
	// job-1 past its deadline and the long poll returns.
	code, feed := call("billing", "GET", "/v1/events?to_status=stuck&wait=30s", nil)
	returned := time.Now()
	if code != 200 || len(feed["events"].([]any)) != 1 {
		t.Fatalf("feed: %d %v", code, feed)
	}
	ev := feed["events"].([]any)[0].(map[string]any)
	if ev["delegation_id"] != "job-1" || ev["actor"] != "sweeper" {
		t.Fatalf("event %v", ev)
	}
	at, err := time.Parse(time.RFC3339Nano, ev["at"].(string))
	if err != nil {
		t.Fatal(err)
	}
	// at is the sweep transaction's start (now()); its commit is later.
	if lag := returned.Sub(at); lag > time.Second {
		t.Fatalf("long poll returned %s after the sweep", lag)
	} else {
		t.Logf("long poll returned %s after the sweep's transaction started", lag)
	}
	if code, out := call("agent", "POST", "/v1/delegations/job-1/heartbeat", nil); code != 200 || out["live"] != false || out["status"] != "stuck" {
		t.Fatalf("heartbeat after stuck: %d %v", code, out)
	}

	// Revoked: refused at once.
	if r := run(t, env, "token", "revoke", "console"); r.Code != 0 {
		t.Fatalf("revoke: %s", r)
	}
	if code, _ := call("console", "GET", "/v1/summary", nil); code != 401 {
		t.Fatalf("revoked token: %d", code)
	}

	// A slow client that never finishes its headers is cut off.
	conn, err := net.Dial("tcp", m[1])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	fmt.Fprintf(conn, "GET /v1/summary HTTP/1.1\r\nHost: x\r\n")
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(conn); err != nil || time.Since(start) > 5*time.Second {
		t.Fatalf("slow client: %v after %s", err, time.Since(start))
	}

	metrics := d.MustMetrics(t)
	if metrics[`sweeper_api_requests_total{code="201",method="POST",route="/v1/delegations"}`] != 1 || metrics["sweeper_api_auth_rejected_total"] < 2 {
		t.Fatalf("api metrics missing from /metrics: %v", metrics)
	}
	if code := d.Stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit %d\n%s", code, d.Logs())
	}
	all := d.Logs() + strings.Join(outputs, "\n")
	for name, tok := range tokens {
		if strings.Contains(all, tok) {
			t.Fatalf("token %s appears in the daemon's or the CLI's output", name)
		}
	}
	if strings.Contains(strings.ToLower(d.Logs()), "bearer") {
		t.Fatal("logs mention the Authorization header")
	}
}

// Broken API configuration exits 2 naming the key.
func TestAPIConfigErrorsNameTheKey(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	for _, c := range []struct {
		env []string
		key string
	}{
		{[]string{"SWEEPER_API_LISTEN=nope"}, "api.listen"},
		{[]string{"SWEEPER_API_LISTEN=127.0.0.1:0", "SWEEPER_API_TLS_CERT_FILE=/nonexistent"}, "api.tls_key_file"},
		{[]string{"SWEEPER_API_LISTEN=127.0.0.1:0", "SWEEPER_API_TLS_CERT_FILE=/nonexistent", "SWEEPER_API_TLS_KEY_FILE=/nonexistent"}, "api.tls_cert_file"},
		{[]string{"SWEEPER_API_LISTEN=127.0.0.1:0", "SWEEPER_API_CLIENT_CA_FILE=/x"}, "api.client_ca_file"},
		{[]string{"SWEEPER_API_LISTEN=127.0.0.1:0", "SWEEPER_API_MAX_WAIT=2m"}, "api.write_timeout"},
		{[]string{"SWEEPER_API_MAX_BATCH=0"}, "api.max_batch"},
		{[]string{"SWEEPER_API_RATE_LIMIT=-1"}, "api.rate_limit"},
	} {
		r := run(t, append([]string{"SWEEPER_DATABASE_URL=" + db.URL, "SWEEPER_HTTP_LISTEN="}, c.env...))
		if r.Code != 2 || !strings.Contains(r.Stderr, c.key) {
			t.Errorf("%v: want exit 2 naming %s, got %s", c.env, c.key, r)
		}
	}
}
