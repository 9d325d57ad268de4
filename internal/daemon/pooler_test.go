package daemon_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tasksweeper/sweeper/internal/auth"
	"github.com/tasksweeper/sweeper/internal/config"
	"github.com/tasksweeper/sweeper/internal/daemon"
	"github.com/tasksweeper/sweeper/internal/pgserver"
	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/migrations"
	"github.com/tasksweeper/sweeper/sweep"
)

// pooledConfig is a configuration whose database.url goes through a fresh
// pgbouncer in transaction mode with one server connection, so that every
// client connection shares it.
func pooledConfig(t *testing.T, pooler string) (config.Config, *testdb.DB) {
	t.Helper()
	db := testdb.New(t)
	b := testdb.StartPgBouncer(t, pgserver.PgBouncerOptions{PoolSize: 1})
	cfg := config.Default()
	cfg.Database.URL = db.ViaPgBouncer(t, b)
	cfg.Database.Pooler = pooler
	cfg.Database.MaxConns = 4
	return cfg, db
}

// With the default exec mode, behind PgBouncer in transaction mode, the
// second client connection finds the first one's prepared statement on the
// shared server connection: 42P05, and the message names the key to set.
func TestPgBouncerDefaultModeFailsNamingTheKey(t *testing.T) {
	t.Parallel()
	cfg, _ := pooledConfig(t, config.PoolerNone)
	ctx := context.Background()
	pool, err := daemon.OpenPool(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	first, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Release()
	if _, err := migrations.ReadState(ctx, first); err != nil {
		t.Fatalf("first connection: %v", err)
	}
	// The pool hands EnsureSchema another client connection (first is held).
	err = daemon.EnsureSchema(ctx, pool, cfg, zaptest.NewLogger(t))
	var pgErr *pgconn.PgError
	var pe *daemon.PoolerError
	if !errors.As(err, &pgErr) || pgErr.Code != pgerrcode.DuplicatePreparedStatement || !errors.As(err, &pe) {
		t.Fatalf("EnsureSchema through pgbouncer in the default mode = %v, want SQLSTATE 42P05 as a *daemon.PoolerError", err)
	}
	if !strings.Contains(err.Error(), "set database.pooler: transaction, SWEEPER_DATABASE_POOLER=transaction") {
		t.Fatalf("error does not name the key to set: %v", err)
	}
}

// With database.pooler transaction the same steps work, and so do the
// sweep, the ledger's writes and status's snapshot, on connections that
// share one server connection.
func TestPgBouncerTransactionModeWorks(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"", "simple_protocol"} {
		t.Run("exec mode "+config.DatabaseConfig{Pooler: config.PoolerTransaction, QueryExecMode: mode}.ExecModeName(), func(t *testing.T) {
			t.Parallel()
			cfg, db := pooledConfig(t, config.PoolerTransaction)
			cfg.Database.QueryExecMode = mode
			ctx := context.Background()
			pool, err := daemon.OpenPool(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			first, err := pool.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := migrations.ReadState(ctx, first); err != nil {
				t.Fatalf("first connection: %v", err)
			}
			if err := daemon.EnsureSchema(ctx, pool, cfg, zaptest.NewLogger(t)); err != nil {
				t.Fatalf("EnsureSchema: %v", err)
			}
			first.Release()

			l := ledger.New(pool)
			for i := range 20 {
				if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: fmt.Sprintf("d%d", i), CallerID: "c", CalleeID: "w"}); err != nil {
					t.Fatalf("insert: %v", err)
				}
				if _, err := l.SetStatus(ctx, fmt.Sprintf("d%d", i), ledger.StatusInProgress, ledger.Change{Actor: "test"}); err != nil {
					t.Fatalf("transition: %v", err)
				}
			}
			// Half the rows go stale, as seen by the database clock.
			if _, err := db.Pool.Exec(ctx, `UPDATE delegations SET last_heartbeat = now() - interval '1 hour'
				WHERE delegation_id IN ('d0','d1','d2','d3','d4','d5','d6','d7','d8','d9')`); err != nil {
				t.Fatal(err)
			}
			scfg := daemon.SweepConfig(cfg, zaptest.NewLogger(t))
			scfg.BatchSize = 3
			s, err := sweep.New(pool, scfg)
			if err != nil {
				t.Fatal(err)
			}
			res, err := s.RunOnce(ctx)
			if err != nil || res.Swept != 10 || res.SweptHeartbeatTimeout != 10 {
				t.Fatalf("sweep through pgbouncer: %+v, %v", res, err)
			}
			snap, err := sweep.Inspect(ctx, pool, cfg.Sweep.HeartbeatTimeout)
			if err != nil || snap.Total != 20 {
				t.Fatalf("Inspect through pgbouncer: %+v, %v", snap, err)
			}
			var events int
			if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM delegation_events WHERE to_status = 'stuck'`).Scan(&events); err != nil || events != 10 {
				t.Fatalf("stuck events = %d, %v; want 10", events, err)
			}
		})
	}
}

// migrate.auto behind a transaction pooler needs database.migrate_url.
func TestPgBouncerMigrateNeedsMigrateURL(t *testing.T) {
	t.Parallel()
	cfg, _ := pooledConfig(t, config.PoolerTransaction)
	empty := testdb.NewEmpty(t)
	b := testdb.StartPgBouncer(t, pgserver.PgBouncerOptions{})
	cfg.Database.URL = empty.ViaPgBouncer(t, b)
	cfg.Migrate.Auto = true
	ctx := context.Background()
	pool, err := daemon.OpenPool(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	err = daemon.EnsureSchema(ctx, pool, cfg, zaptest.NewLogger(t))
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Key != "database.migrate_url" {
		t.Fatalf("EnsureSchema with migrate.auto behind a transaction pooler = %v, want an error naming database.migrate_url", err)
	}
	if st, err := migrations.ReadState(ctx, empty.Pool); err != nil || st.Version != 0 || st.Dirty {
		t.Fatalf("schema after the refusal: %+v, %v; want untouched", st, err)
	}
	cfg.Database.MigrateURL = empty.URL // direct
	if err := daemon.EnsureSchema(ctx, pool, cfg, zaptest.NewLogger(t)); err != nil {
		t.Fatalf("EnsureSchema with database.migrate_url: %v", err)
	}
	if st, err := migrations.ReadState(ctx, pool); err != nil || !st.Current() {
		t.Fatalf("schema after migrating: %+v, %v", st, err)
	}
}

// The API through pgbouncer: writes and reads work, and a feed long poll
// is woken both by polling (no database.listen_url) and by LISTEN on
// database.listen_url.
func TestPgBouncerAPI(t *testing.T) {
	t.Parallel()
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("listen_url=%v", direct), func(t *testing.T) {
			t.Parallel()
			cfg, db := pooledConfig(t, config.PoolerTransaction)
			if direct {
				cfg.Database.ListenURL = db.URL
			}
			cfg.API.Listen = "127.0.0.1:0"
			ctx := context.Background()
			pool, err := daemon.OpenPool(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			tok, err := auth.NewStore(pool).Create(ctx, "admin", auth.RoleAdmin, "")
			if err != nil {
				t.Fatal(err)
			}
			s, err := daemon.StartAPI(ctx, cfg, pool, prometheus.NewRegistry(), zaptest.NewLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := s.Shutdown(ctx); err != nil {
					t.Error(err)
				}
			}()
			do := func(method, path, body string) (int, string) {
				req, _ := http.NewRequest(method, "http://"+s.Addr()+path, strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+tok)
				req.Header.Set("Content-Type", "application/json")
				res, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer res.Body.Close()
				b, _ := io.ReadAll(res.Body)
				return res.StatusCode, string(b)
			}
			// A long poll from the start of the feed waits (nothing yet);
			// the insert below wakes it.
			type page struct {
				Events []json.RawMessage `json:"events"`
			}
			got := make(chan page, 1)
			go func() {
				_, body := do("GET", "/v1/events?after=0&wait=20s", "")
				var p page
				_ = json.Unmarshal([]byte(body), &p)
				got <- p
			}()
			began := time.Now()
			if code, body := do("POST", "/v1/delegations", `{"delegation_id":"api-1","caller_id":"c","callee_id":"w"}`); code != 201 {
				t.Fatalf("insert through the API: %d %s", code, body)
			}
			if code, body := do("GET", "/v1/delegations/api-1", ""); code != 200 || !strings.Contains(body, `"api-1"`) {
				t.Fatalf("get through the API: %d %s", code, body)
			}
			select {
			case p := <-got:
				if len(p.Events) == 0 {
					t.Fatalf("long poll answered without events")
				}
				t.Logf("long poll answered %v after the insert", time.Since(began).Round(time.Millisecond))
			case <-time.After(15 * time.Second):
				t.Fatal("long poll not woken within 15s")
			}
		})
	}
}

// consoleClient is a browser of the console at base: a cookie jar, no
// redirects followed.
type consoleClient struct {
	t    *testing.T
	base string
	http *http.Client
}

func newConsoleClient(t *testing.T, base string) *consoleClient {
	jar, _ := cookiejar.New(nil)
	return &consoleClient{t: t, base: base, http: &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (c *consoleClient) do(method, path string, form url.Values) (int, string, http.Header) {
	c.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	res, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b), res.Header
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// signIn signs in with token through the form and returns the session's
// CSRF token.
func (c *consoleClient) signIn(token string) string {
	c.t.Helper()
	code, body, _ := c.do("GET", "/login", nil)
	m := csrfRE.FindStringSubmatch(body)
	if code != http.StatusOK || m == nil {
		c.t.Fatalf("GET /login = %d:\n%s", code, body)
	}
	code, body, h := c.do("POST", "/login", url.Values{"csrf": {m[1]}, "token": {token}, "next": {"/"}})
	if code != http.StatusSeeOther || h.Get("Location") != "/" {
		c.t.Fatalf("POST /login = %d %q:\n%s", code, h.Get("Location"), body)
	}
	code, body, _ = c.do("GET", "/", nil)
	if m = csrfRE.FindStringSubmatch(body); code != http.StatusOK || m == nil {
		c.t.Fatalf("GET / after sign-in = %d:\n%s", code, body)
	}
	return m[1]
}

// stream opens the live page's event stream and returns its lines as they
// come; the stream has sent its opening comment when it returns.
func (c *consoleClient) stream(ctx context.Context) <-chan string {
	c.t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+"/live/events", nil)
	if err != nil {
		c.t.Fatal(err)
	}
	hc := *c.http
	hc.Timeout = 0 // the stream outlives any single timeout; ctx ends it
	res, err := hc.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		res.Body.Close()
		c.t.Fatalf("GET /live/events = %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	lines := make(chan string, 64)
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if sc.Text() == ": open" {
			break
		}
	}
	go func() {
		defer close(lines)
		defer res.Body.Close()
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	return lines
}

// The console through pgbouncer in transaction mode: sign-in, the overview,
// the list, a detail page, an admin action, and the live page's stream,
// which gets a stuck transition within a few seconds: woken by LISTEN on
// database.listen_url (one LISTEN connection, shared with the API's feed),
// or, without it, by polling the feed every config.FeedPollInterval after a
// warning at start. Before the console shared the API's Waiter, it LISTENed
// through the pooler and was woken only when its long poll (25 s) ended.
func TestPgBouncerConsole(t *testing.T) {
	t.Parallel()
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("listen_url=%v", direct), func(t *testing.T) {
			t.Parallel()
			cfg, db := pooledConfig(t, config.PoolerTransaction)
			appName := fmt.Sprintf("sweeper-listen-%d", time.Now().UnixNano())
			if direct {
				u, err := url.Parse(db.URL)
				if err != nil {
					t.Fatal(err)
				}
				q := u.Query()
				q.Set("application_name", appName)
				u.RawQuery = q.Encode()
				cfg.Database.ListenURL = u.String()
			}
			cfg.API.Listen = "127.0.0.1:0"
			ctx := context.Background()
			pool, err := daemon.OpenPool(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			tok, err := auth.NewStore(pool).Create(ctx, "ops", auth.RoleAdmin, "")
			if err != nil {
				t.Fatal(err)
			}
			l := ledger.New(pool)
			for _, id := range []string{"live-1", "stale-1", "to-fail"} {
				if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: id, CallerID: "c", CalleeID: "w",
					Status: ledger.StatusInProgress, TaskPreview: "task " + id}); err != nil {
					t.Fatal(err)
				}
			}
			core, logs := observer.New(zap.WarnLevel)
			log := zap.New(zapcore.NewTee(core, zaptest.NewLogger(t).Core()))
			s, err := daemon.StartAPI(ctx, cfg, pool, prometheus.NewRegistry(), log)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := s.Shutdown(ctx); err != nil {
					t.Error(err)
				}
			}()
			warned := logs.FilterMessageSnippet("database.listen_url is not set").Len()
			if direct && warned != 0 || !direct && warned != 1 {
				t.Fatalf("%d warnings that database.listen_url is not set, with listen_url=%v", warned, direct)
			}
			if direct {
				// One LISTEN connection on listen_url, for the API and the
				// console.
				var n int
				if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
					WHERE application_name = $1 AND query LIKE 'LISTEN%'`, appName).Scan(&n); err != nil || n != 1 {
					t.Fatalf("LISTEN connections on database.listen_url = %d, %v; want 1", n, err)
				}
			}

			c := newConsoleClient(t, "http://"+s.Addr())
			csrf := c.signIn(tok)
			for path, want := range map[string]string{
				"/":                               "ops · admin",
				"/delegations":                    "stale-1",
				"/delegations?status=in_progress": "live-1",
				"/delegations/live-1":             "task live-1",
				"/live":                           "Live",
			} {
				if code, body, _ := c.do("GET", path, nil); code != http.StatusOK || !strings.Contains(body, want) {
					t.Fatalf("GET %s through pgbouncer = %d, want 200 with %q:\n%s", path, code, want, body)
				}
			}
			code, body, h := c.do("POST", "/delegations/to-fail/fail", url.Values{"csrf": {csrf}, "reason": {"pooler test"}})
			if code != http.StatusSeeOther || !strings.Contains(h.Get("Location"), "outcome=applied") {
				t.Fatalf("admin fail action through pgbouncer = %d %q:\n%s", code, h.Get("Location"), body)
			}

			sctx, cancel := context.WithCancel(ctx)
			defer cancel()
			lines := c.stream(sctx)
			if _, err := db.Pool.Exec(ctx, `UPDATE delegations SET last_heartbeat = now() - interval '1 hour'
				WHERE delegation_id = 'stale-1'`); err != nil {
				t.Fatal(err)
			}
			sw, err := sweep.New(pool, daemon.SweepConfig(cfg, zaptest.NewLogger(t)))
			if err != nil {
				t.Fatal(err)
			}
			if res, err := sw.RunOnce(ctx); err != nil || res.Swept != 1 {
				t.Fatalf("sweep through pgbouncer: %+v, %v", res, err)
			}
			began := time.Now()
			// Well under the stream's own long poll (25 s): only a wake-up
			// (LISTEN or the poll) can deliver the event in time.
			timeout := time.After(8 * time.Second)
			for {
				select {
				case line, ok := <-lines:
					if !ok {
						t.Fatal("the live stream ended")
					}
					if !strings.HasPrefix(line, "data: ") {
						continue
					}
					if !strings.Contains(line, `"delegation_id":"stale-1"`) || !strings.Contains(line, `"reason":"heartbeat_timeout"`) {
						t.Fatalf("live stream sent %s, want the stuck transition of stale-1", line)
					}
					t.Logf("live stream through pgbouncer (listen_url=%v): stuck transition %v after the sweep committed",
						direct, time.Since(began).Round(time.Millisecond))
					return
				case <-timeout:
					t.Fatal("the live stream did not get the stuck transition within 8s")
				}
			}
		})
	}
}
