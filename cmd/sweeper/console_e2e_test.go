package main_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/internal/testbin"
	"github.com/tasksweeper/sweeper/internal/testdb"
)

// The console through the real binary: served on the API listener next to
// /v1/, signed in with a token from the CLI, showing the daemon's own sweep
// runs.
func TestConsoleThroughTheBinary(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	env := []string{"SWEEPER_DATABASE_URL=" + db.URL}
	r := run(t, env, "token", "create", "--name", "ops", "--role", "reader", "--output", "json")
	var tok struct{ Token string }
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &tok) != nil {
		t.Fatalf("token create: %s", r)
	}
	d := testbin.StartDaemon(t, binary, "sweeper", append(env,
		"SWEEPER_API_LISTEN=127.0.0.1:0", "SWEEPER_SWEEP_SCHEDULE=@every 1s"))
	m := apiAddrRE.FindStringSubmatch(d.Logs())
	if m == nil {
		t.Fatalf("no api_address logged:\n%s", d.Logs())
	}
	base := "http://" + m[1]
	get := func(path string, bearer bool) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if bearer {
			req.Header.Set("Authorization", "Bearer "+tok.Token)
		}
		c := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b), res.Header
	}
	if code, _, h := get("/", false); code != http.StatusSeeOther || h.Get("Location") != "/login" {
		t.Fatalf("anonymous console = %d %q", code, h.Get("Location"))
	}
	if code, body, h := get("/login", false); code != http.StatusOK || !strings.Contains(body, `name="token"`) || !strings.Contains(h.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Fatalf("/login = %d", code)
	}
	// The API keeps /v1/.
	if code, _, h := get("/v1/summary", true); code != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "application/json") {
		t.Fatalf("/v1/summary = %d %s", code, h.Get("Content-Type"))
	}
	// The overview is told of the daemon's runs (a console outside the
	// daemon says they are not known; whether the first run has ended yet
	// is a race, so only the failure count is checked).
	code, body, _ := get("/", true)
	if code != http.StatusOK || !strings.Contains(body, `data-testid="failures">0<`) || !strings.Contains(body, "ops · reader") {
		t.Fatalf("overview = %d:\n%s", code, body)
	}
	if strings.Contains(d.Logs(), tok.Token) {
		t.Fatal("the token is in the daemon's log")
	}
	if code := d.Stop(t, syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Fatalf("exit %d:\n%s", code, d.Logs())
	}
}
