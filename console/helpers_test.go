package console_test

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tasksweeper/sweeper/console"
	"github.com/tasksweeper/sweeper/internal/auth"
	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/ledger"
)

func TestMain(m *testing.M) { os.Exit(testdb.MainCheckingLeaks(m)) }

// env is a console over a fresh database, with one token of each role.
type env struct {
	t      *testing.T
	db     *testdb.DB
	ledger *ledger.Ledger
	h      *console.Handler
	srv    *httptest.Server
	tokens map[auth.Role]string
	logs   *observer.ObservedLogs
}

func newEnv(t *testing.T, tlsOn bool, mutate ...func(*console.Config)) *env {
	t.Helper()
	db := testdb.New(t)
	core, logs := observer.New(zap.DebugLevel)
	cfg := console.Config{Pool: db.Pool, Logger: zap.New(core)}
	for _, m := range mutate {
		m(&cfg)
	}
	h, err := console.NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var srv *httptest.Server
	if tlsOn {
		srv = httptest.NewTLSServer(h)
	} else {
		srv = httptest.NewServer(h)
	}
	t.Cleanup(func() { h.Close(); srv.Close() })
	e := &env{t: t, db: db, ledger: ledger.New(db.Pool), h: h, srv: srv, tokens: map[auth.Role]string{}, logs: logs}
	store := auth.NewStore(db.Pool)
	for _, c := range []struct {
		name      string
		role      auth.Role
		principal string
	}{
		{"root", auth.RoleAdmin, ""}, {"dash", auth.RoleReader, ""},
		{"billing-svc", auth.RoleCaller, "billing"}, {"indexer-pool", auth.RoleWorker, "indexer"},
	} {
		tok, err := store.Create(context.Background(), c.name, c.role, c.principal)
		if err != nil {
			t.Fatal(err)
		}
		e.tokens[c.role] = tok
	}
	return e
}

// insert records a delegation, failing the test on error.
func (e *env) insert(id, caller, callee string, st ledger.Status, preview string) {
	e.t.Helper()
	if _, err := e.ledger.Insert(context.Background(), ledger.NewDelegation{
		DelegationID: id, CallerID: caller, CalleeID: callee, Status: st, TaskPreview: preview,
	}); err != nil {
		e.t.Fatal(err)
	}
}

// client is a browser: a cookie jar, no redirects followed.
type client struct {
	t    *testing.T
	e    *env
	http *http.Client
}

func (e *env) client() *client {
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{
		Jar:           jar,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, //nolint:gosec // the test server's certificate
	}
	return &client{t: e.t, e: e, http: hc}
}

type resp struct {
	code   int
	body   string
	header http.Header
}

func (c *client) do(req *http.Request) resp {
	c.t.Helper()
	r, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp{code: r.StatusCode, body: string(b), header: r.Header}
}

func (c *client) get(path string, hdr ...string) resp {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodGet, c.e.srv.URL+path, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return c.do(req)
}

func (c *client) post(path string, form url.Values, hdr ...string) resp {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodPost, c.e.srv.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return c.do(req)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, body string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no CSRF token in page:\n%s", body)
	}
	return m[1]
}

// signIn signs c in with token and returns the session's CSRF token.
func (c *client) signIn(token string) string {
	c.t.Helper()
	form := c.get("/login")
	if form.code != http.StatusOK {
		c.t.Fatalf("GET /login = %d", form.code)
	}
	r := c.post("/login", url.Values{"csrf": {csrfOf(c.t, form.body)}, "token": {token}, "next": {"/"}})
	if r.code != http.StatusSeeOther || r.header.Get("Location") != "/" {
		c.t.Fatalf("POST /login = %d %q:\n%s", r.code, r.header.Get("Location"), r.body)
	}
	page := c.get("/")
	if page.code != http.StatusOK {
		c.t.Fatalf("GET / after sign-in = %d", page.code)
	}
	return csrfOf(c.t, page.body)
}

// bearer is an Authorization header for token.
func bearer(token string) []string { return []string{"Authorization", "Bearer " + token} }
