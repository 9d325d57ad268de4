package bench

import (
	"context"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/tasksweeper/sweeper/console"
	"github.com/tasksweeper/sweeper/internal/auth"
)

// ConsolePage is the server time of one console page at one ledger size.
type ConsolePage struct {
	Page string `json:"page"`
	// Role is the token the requests were signed in with: "reader" (every
	// row) or "caller" (one caller's rows: a caller filter on every
	// statement).
	Role string `json:"role"`
	Path string `json:"path"`
	// Time is the handler's time per request (console.Handler.ServeHTTP,
	// authentication, queries and rendering, from the request's arrival
	// to the last byte written), after consoleWarmup requests.
	Time Dist `json:"time"`
	// Bytes is the size of the last response.
	Bytes int `json:"bytes"`
}

// ConsoleResult is what the console measurement found at one size.
type ConsoleResult struct {
	Pages []ConsolePage `json:"pages"`
	// Events is the size of the audit log the pages read.
	Events int64 `json:"events"`
	// Caller is the caller of the caller token.
	Caller string `json:"caller"`
}

// Max is the slowest p95 of the pages.
func (c *ConsoleResult) Max() (ConsolePage, bool) {
	var worst ConsolePage
	for _, p := range c.Pages {
		if p.Time.P95 >= worst.Time.P95 {
			worst = p
		}
	}
	return worst, len(c.Pages) > 0
}

// Console page timing: consoleWarmup requests of a page, then
// Config.ConsoleRequests timed ones, one at a time.
const (
	consoleWarmup = 5
	// ConsoleP95Target is issue 11's bound on each page's server time.
	ConsoleP95Target = 50 * time.Millisecond
)

// timedHandler records the time each request spends in the handler, by the
// X-Bench-Page header of the request.
type timedHandler struct {
	next http.Handler
	mu   sync.Mutex
	last map[string]time.Duration
}

func (t *timedHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	began := time.Now()
	t.next.ServeHTTP(w, r)
	d := time.Since(began)
	t.mu.Lock()
	t.last[r.Header.Get("X-Bench-Page")] = d
	t.mu.Unlock()
}

func (t *timedHandler) took(page string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.last[page]
}

// consolePage is one page to time: its path, and a string its body must
// contain (what shows the page found what it should).
type consolePage struct {
	name, path, want string
}

var noRows = regexp.MustCompile(`\b0 shown`)

var nextLink = regexp.MustCompile(`href="(/delegations\?[^"]*)"[^>]*data-testid="next-page"`)

// measureConsole serves the console in process, on a real listener, over
// the ledger of db, and times its pages signed in as a reader and as a
// caller (Bearer tokens, which the console accepts like a session).
func measureConsole(ctx context.Context, cfg Config, db *ledgerDB) (*ConsoleResult, error) {
	pool, err := db.newPool(ctx, 4)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	h, err := console.NewHandler(console.Config{Pool: pool, HeartbeatTimeout: benchTimeout})
	if err != nil {
		return nil, err
	}
	defer h.Close()
	store := auth.NewStore(pool)
	reader, err := store.Create(ctx, "console-bench-reader", auth.RoleReader, "")
	if err != nil {
		return nil, err
	}
	history := db.rows - cfg.InFlight
	// The caller of the first second attempt (h1010 retries h1009), and
	// rows of it: one in the middle of the history, and that attempt chain.
	const chained = 1000 + 10
	callerN := (chained - 1) % 97
	caller := fmt.Sprintf("caller-%d", callerN)
	callerTok, err := store.Create(ctx, "console-bench-caller", auth.RoleCaller, caller)
	if err != nil {
		return nil, err
	}
	mid := history / 2
	mid -= (mid - callerN) % 97 // a row of caller
	callee := fmt.Sprintf("callee-%d", mid%89)
	res := &ConsoleResult{Caller: caller}
	if err := db.pool.QueryRow(ctx, `SELECT count(*) FROM delegation_events`).Scan(&res.Events); err != nil {
		return nil, err
	}

	timed := &timedHandler{next: h, last: map[string]time.Duration{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: timed, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer func() { _ = srv.Close() }()
	base := "http://" + ln.Addr().String()
	client := &http.Client{Timeout: 30 * time.Second}

	get := func(page, path, token string) (string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		if err != nil {
			return "", err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("X-Bench-Page", page)
		resp, err := client.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return "", err
		}
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		return string(b), nil
	}

	// A window of an hour in the middle of the history (created_at of row
	// g is now - 2h - 5m - (history - g) / 2 s, as loaded).
	from := time.Now().UTC().Add(-2*time.Hour - 5*time.Minute - time.Duration(history/4)*time.Second)
	window := url.Values{
		"created_after":  {from.Format(time.RFC3339)},
		"created_before": {from.Add(time.Hour).Format(time.RFC3339)},
	}.Encode()
	list := `data-testid="delegations"`
	for _, role := range []struct {
		name, token string
		detail      int
	}{
		{"reader", reader, mid + 1},
		{"caller", callerTok, mid},
	} {
		pages := []consolePage{
			{"overview", "/", `data-testid="stuck-chart"`},
			{"list", "/delegations", list},
			{"by caller", "/delegations?caller_id=" + caller, list},
			{"by callee", "/delegations?callee_id=" + callee, list},
			{"stuck", "/delegations?status=stuck", list},
			{"in flight", "/delegations?in_flight=true", list},
			{"time range", "/delegations?" + window, list},
			{"id prefix", "/delegations?id_prefix=h12", list},
			{"next page", "", list}, // the list's next page, filled in below
			{"detail", fmt.Sprintf("/delegations/h%d", role.detail), `data-testid="timeline"`},
			{"detail, attempt chain", fmt.Sprintf("/delegations/h%d", chained), `data-testid="attempts"`},
		}
		for _, p := range pages {
			if p.name == "next page" {
				// A caller on a tiny ledger (the tests') has fewer rows
				// than a page: smaller pages then.
				var m []string
				for _, first := range []string{"/delegations", "/delegations?limit=10"} {
					body, err := get("list", first, role.token)
					if err != nil {
						return res, err
					}
					if m = nextLink.FindStringSubmatch(body); m != nil {
						break
					}
				}
				if m == nil {
					return res, fmt.Errorf("%s: the list has no next page", role.name)
				}
				p.path = html.UnescapeString(m[1])
			}
			cp := ConsolePage{Page: p.name, Role: role.name, Path: p.path}
			times := make([]time.Duration, 0, cfg.ConsoleRequests)
			for i := range consoleWarmup + cfg.ConsoleRequests {
				body, err := get(p.name, p.path, role.token)
				if err != nil {
					return res, fmt.Errorf("%s as %s: %w", p.name, role.name, err)
				}
				if !strings.Contains(body, p.want) {
					return res, fmt.Errorf("%s as %s (%s): the page lacks %s", p.name, role.name, p.path, p.want)
				}
				if p.want == list && noRows.MatchString(body) {
					return res, fmt.Errorf("%s as %s (%s): no rows", p.name, role.name, p.path)
				}
				cp.Bytes = len(body)
				if i >= consoleWarmup {
					times = append(times, timed.took(p.name))
				}
			}
			cp.Time = dist(times)
			res.Pages = append(res.Pages, cp)
			db.srv.logf("%d rows: console %-22s as %-6s p50 %s p95 %s max %s", db.rows, p.name, role.name,
				ms(cp.Time.P50), ms(cp.Time.P95), ms(cp.Time.Max))
		}
	}
	return res, ctx.Err()
}
