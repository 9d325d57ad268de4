package console_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/console"
	"github.com/tasksweeper/sweeper/internal/auth"
	"github.com/tasksweeper/sweeper/ledger"
)

// seedScopes writes rows of two callers and two callees.
func seedScopes(e *env) {
	e.insert("own-caller", "billing", "mailer", ledger.StatusInProgress, "billing's task")
	e.insert("own-callee", "search", "indexer", ledger.StatusQueued, "indexer's task")
	e.insert("other", "search", "crawler", ledger.StatusDispatched, "nobody's task")
}

func TestPagesByRoleAndScope(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	seedScopes(e)
	c := e.client()
	visible := map[auth.Role][]string{
		auth.RoleAdmin:  {"own-caller", "own-callee", "other"},
		auth.RoleReader: {"own-caller", "own-callee", "other"},
		auth.RoleCaller: {"own-caller"},
		auth.RoleWorker: {"own-callee"},
	}
	for role, ids := range visible {
		t.Run(string(role), func(t *testing.T) {
			hdr := bearer(e.tokens[role])
			for _, p := range []string{"/", "/delegations", "/live"} {
				if r := c.get(p, hdr...); r.code != http.StatusOK {
					t.Errorf("%s %s = %d", role, p, r.code)
				}
			}
			list := c.get("/delegations", hdr...).body
			for _, id := range []string{"own-caller", "own-callee", "other"} {
				want := contains(ids, id)
				r := c.get("/delegations/"+id, hdr...)
				if got := r.code == http.StatusOK; got != want {
					t.Errorf("%s GET /delegations/%s = %d, want visible=%v", role, id, r.code, want)
				}
				if !want && r.code != http.StatusNotFound {
					t.Errorf("%s: out of scope answers %d, want 404", role, r.code)
				}
				if got := strings.Contains(list, ">"+id+"<"); got != want {
					t.Errorf("%s: list shows %s = %v, want %v", role, id, got, want)
				}
			}
			// Asking the list for another principal's rows shows nothing.
			if role == auth.RoleCaller {
				if r := c.get("/delegations?caller_id=search", hdr...); strings.Contains(r.body, ">other<") {
					t.Errorf("a caller listed another caller's rows")
				}
			}
			overview := c.get("/", hdr...).body
			if n := testid(t, overview, "in-flight-total"); n != fmt.Sprint(len(ids)) {
				t.Errorf("%s: overview in flight %s, want %d", role, n, len(ids))
			}
			acts := strings.Contains(c.get("/delegations/"+ids[0], hdr...).body, "Mark failed")
			if acts != (role == auth.RoleAdmin) {
				t.Errorf("%s: action button shown = %v", role, acts)
			}
		})
	}
	if r := c.get("/delegations/missing", bearer(e.tokens[auth.RoleAdmin])...); r.code != http.StatusNotFound {
		t.Errorf("missing delegation = %d", r.code)
	}
	if r := c.get("/no-such-page", bearer(e.tokens[auth.RoleAdmin])...); r.code != http.StatusNotFound {
		t.Errorf("unknown page = %d", r.code)
	}
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// testid returns the text of the element with data-testid id.
func testid(t *testing.T, body, id string) string {
	t.Helper()
	m := regexp.MustCompile(`data-testid="` + regexp.QuoteMeta(id) + `"[^>]*>([^<]*)<`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no data-testid=%q in page", id)
	}
	return strings.TrimSpace(m[1])
}

func TestSignInSessionAndSignOut(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	c := e.client()

	// Anonymous pages redirect to the sign-in form; posts are refused.
	if r := c.get("/delegations?status=stuck"); r.code != http.StatusSeeOther || r.header.Get("Location") != "/login?next=%2Fdelegations%3Fstatus%3Dstuck" {
		t.Fatalf("anonymous GET = %d %q", r.code, r.header.Get("Location"))
	}
	if r := c.post("/delegations/x/fail", url.Values{"reason": {"x"}}); r.code != http.StatusUnauthorized {
		t.Fatalf("anonymous POST = %d", r.code)
	}
	// A token in the URL signs nobody in.
	if r := c.get("/?token=" + e.tokens[auth.RoleAdmin]); r.code != http.StatusSeeOther {
		t.Fatalf("token in URL = %d", r.code)
	}

	form := c.get("/login")
	csrf := csrfOf(t, form.body)
	if !strings.Contains(form.body, `<label for="token">`) || !strings.Contains(form.body, `name="token"`) {
		t.Fatal("the sign-in form has no labelled token field")
	}
	if r := c.post("/login", url.Values{"token": {e.tokens[auth.RoleAdmin]}}); r.code != http.StatusForbidden {
		t.Fatalf("sign-in without CSRF = %d", r.code)
	}
	if r := c.post("/login", url.Values{"csrf": {csrf}, "token": {"swp_wrong"}}); r.code != http.StatusUnauthorized || !strings.Contains(r.body, "not valid") {
		t.Fatalf("wrong token = %d", r.code)
	}
	r := c.post("/login", url.Values{"csrf": {csrfOf(t, c.get("/login").body)}, "token": {e.tokens[auth.RoleReader]}, "next": {"//evil.example/"}})
	if r.code != http.StatusSeeOther || r.header.Get("Location") != "/" {
		t.Fatalf("sign-in = %d to %q (an off-site next must become /)", r.code, r.header.Get("Location"))
	}
	var session *http.Cookie
	for _, ck := range (&http.Response{Header: r.header}).Cookies() {
		if ck.Name == "sweeper_session" && ck.Value != "" {
			session = ck
		}
	}
	if session == nil || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode || session.MaxAge != int(console.SessionTTLDefault/time.Second) || session.Secure {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Max-Age of the TTL, not Secure over plain HTTP", session)
	}
	if strings.Contains(session.Value, e.tokens[auth.RoleReader]) {
		t.Fatal("the cookie holds the token")
	}
	page := c.get("/")
	if page.code != http.StatusOK || !strings.Contains(page.body, "dash · reader") {
		t.Fatalf("signed-in overview = %d", page.code)
	}

	// Sign out needs the CSRF token, then the session is gone.
	if r := c.post("/logout", url.Values{}); r.code != http.StatusForbidden {
		t.Fatalf("logout without CSRF = %d", r.code)
	}
	if r := c.post("/logout", url.Values{"csrf": {csrfOf(t, page.body)}}); r.code != http.StatusSeeOther {
		t.Fatalf("logout = %d", r.code)
	}
	if r := c.get("/"); r.code != http.StatusSeeOther {
		t.Fatalf("after logout GET / = %d", r.code)
	}
	// The old cookie replayed is dead too.
	replay := e.client()
	u, _ := url.Parse(e.srv.URL)
	replay.http.Jar.SetCookies(u, []*http.Cookie{{Name: "sweeper_session", Value: session.Value}})
	if r := replay.get("/"); r.code != http.StatusSeeOther {
		t.Fatalf("replayed session after logout = %d", r.code)
	}
}

func TestSessionEndsWhenTokenRevokedOrExpired(t *testing.T) {
	t.Parallel()
	var now = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e := newEnv(t, false, func(c *console.Config) {
		c.SessionTTL = time.Hour
		c.Now = func() time.Time { return now }
	})
	c := e.client()
	c.signIn(e.tokens[auth.RoleReader])
	now = now.Add(59 * time.Minute)
	if r := c.get("/"); r.code != http.StatusOK {
		t.Fatalf("within the TTL = %d", r.code)
	}
	now = now.Add(2 * time.Minute)
	if r := c.get("/"); r.code != http.StatusSeeOther {
		t.Fatalf("past the TTL = %d", r.code)
	}

	c2 := e.client()
	c2.signIn(e.tokens[auth.RoleAdmin])
	if err := auth.NewStore(e.db.Pool).Revoke(context.Background(), "root"); err != nil {
		t.Fatal(err)
	}
	if r := c2.get("/"); r.code != http.StatusSeeOther {
		t.Fatalf("revoked token's session = %d", r.code)
	}
	if r := c2.get("/", bearer(e.tokens[auth.RoleAdmin])...); r.code != http.StatusUnauthorized || r.header.Get("WWW-Authenticate") == "" {
		t.Fatalf("revoked Bearer = %d", r.code)
	}
}

func TestSecureCookiesUnderTLS(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true)
	c := e.client()
	form := c.get("/login")
	r := c.post("/login", url.Values{"csrf": {csrfOf(t, form.body)}, "token": {e.tokens[auth.RoleReader]}})
	if r.code != http.StatusSeeOther {
		t.Fatalf("sign-in over TLS = %d", r.code)
	}
	var found bool
	for _, ck := range (&http.Response{Header: r.header}).Cookies() {
		if ck.Name == "__Host-sweeper_session" {
			found = ck.Secure && ck.HttpOnly && ck.SameSite == http.SameSiteStrictMode && ck.Path == "/"
		}
	}
	if !found {
		t.Fatalf("no Secure __Host- session cookie: %v", r.header["Set-Cookie"])
	}
}

func TestAdminActionCSRFAndRoles(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	e.insert("act-1", "billing", "indexer", ledger.StatusInProgress, "")
	admin := e.client()
	csrf := admin.signIn(e.tokens[auth.RoleAdmin])
	status := func() ledger.Status {
		d, err := e.ledger.Get(context.Background(), "act-1")
		if err != nil {
			t.Fatal(err)
		}
		return d.Status
	}
	for _, c := range []struct {
		name string
		form url.Values
		hdr  []string
		code int
	}{
		{"no CSRF token", url.Values{"reason": {"x"}}, nil, http.StatusForbidden},
		{"wrong CSRF token", url.Values{"reason": {"x"}, "csrf": {"AAAA"}}, nil, http.StatusForbidden},
		{"cross-site", url.Values{"reason": {"x"}, "csrf": {csrf}}, []string{"Sec-Fetch-Site", "cross-site"}, http.StatusForbidden},
		{"other origin", url.Values{"reason": {"x"}, "csrf": {csrf}}, []string{"Origin", "https://evil.example"}, http.StatusForbidden},
		{"no reason", url.Values{"csrf": {csrf}}, nil, http.StatusBadRequest},
		{"reason too long", url.Values{"csrf": {csrf}, "reason": {strings.Repeat("r", 501)}}, nil, http.StatusBadRequest},
	} {
		if r := admin.post("/delegations/act-1/fail", c.form, c.hdr...); r.code != c.code {
			t.Errorf("%s: %d, want %d", c.name, r.code, c.code)
		}
	}
	if st := status(); st != ledger.StatusInProgress {
		t.Fatalf("a refused POST changed the row: %s", st)
	}

	for _, role := range []auth.Role{auth.RoleReader, auth.RoleCaller, auth.RoleWorker} {
		u := e.client()
		tok := u.signIn(e.tokens[role])
		r := u.post("/delegations/act-1/fail", url.Values{"reason": {"x"}, "csrf": {tok}})
		// act-1 is visible to all three (caller billing, callee indexer),
		// but only an admin may act.
		if r.code != http.StatusForbidden {
			t.Errorf("%s POST = %d, want 403", role, r.code)
		}
	}
	if st := status(); st != ledger.StatusInProgress {
		t.Fatalf("a non-admin changed the row: %s", st)
	}

	r := admin.post("/delegations/act-1/fail", url.Values{"reason": {"customer <b>cancelled</b>"}, "csrf": {csrf}})
	if r.code != http.StatusSeeOther || r.header.Get("Location") != "/delegations/act-1?outcome=applied" {
		t.Fatalf("admin POST = %d %q: %s", r.code, r.header.Get("Location"), r.body)
	}
	if st := status(); st != ledger.StatusFailed {
		t.Fatalf("status %s, want failed", st)
	}
	evs, err := e.ledger.Events(context.Background(), "act-1")
	if err != nil {
		t.Fatal(err)
	}
	last := evs[len(evs)-1]
	if last.Actor != "console:root" || last.Reason != "customer <b>cancelled</b>" || last.ToStatus != ledger.StatusFailed {
		t.Fatalf("audit event %+v", last)
	}
	page := admin.get("/delegations/act-1?outcome=applied")
	if !strings.Contains(page.body, "Marked failed.") || strings.Contains(page.body, "<b>cancelled</b>") || !strings.Contains(page.body, "&lt;b&gt;cancelled&lt;/b&gt;") {
		t.Fatal("the detail page does not show the escaped reason and the notice")
	}
	// Forward-only: again is a no-op reported as such, and the form is gone.
	if strings.Contains(page.body, "Mark failed</button>") {
		t.Fatal("a terminal row still offers the action")
	}
	r = admin.post("/delegations/act-1/fail", url.Values{"reason": {"again"}, "csrf": {csrf}})
	if r.header.Get("Location") != "/delegations/act-1?outcome=unchanged" {
		t.Fatalf("second POST went to %q", r.header.Get("Location"))
	}
	// A Bearer request carries no ambient credential: it needs no CSRF token.
	e.insert("act-2", "billing", "indexer", ledger.StatusQueued, "")
	if r := admin.post("/delegations/act-2/fail", url.Values{"reason": {"script"}}, bearer(e.tokens[auth.RoleAdmin])...); r.code != http.StatusSeeOther {
		t.Fatalf("Bearer admin POST = %d", r.code)
	}
}

func TestSecurityHeaders(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	c := e.client()
	for _, p := range []string{"/login", "/", "/static/style.css", "/static/app.js", "/nope"} {
		r := c.get(p, bearer(e.tokens[auth.RoleReader])...)
		want := map[string]string{
			"Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
			"X-Content-Type-Options":  "nosniff",
			"X-Frame-Options":         "DENY",
			"Referrer-Policy":         "same-origin",
		}
		for k, v := range want {
			if got := r.header.Get(k); got != v {
				t.Errorf("%s: %s = %q, want %q", p, k, got, v)
			}
		}
		if !strings.HasPrefix(p, "/static/") && r.header.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: Cache-Control %q", p, r.header.Get("Cache-Control"))
		}
		if strings.Contains(r.body, "<script>") || strings.Contains(r.body, " on"+"click=") || strings.Contains(r.body, "http://") || strings.Contains(r.body, "https://") {
			t.Errorf("%s has inline script or a link to another origin", p)
		}
	}
	if ct := c.get("/static/app.js").header.Get("Content-Type"); !strings.HasPrefix(ct, "text/javascript") {
		t.Errorf("app.js Content-Type %q", ct)
	}
	if r := c.get("/static/"); r.code != http.StatusNotFound {
		t.Errorf("static directory listing = %d", r.code)
	}
	if r := c.get("/", "Authorization", "Basic Zm9vOmJhcg=="); r.code != http.StatusUnauthorized {
		t.Errorf("a non-Bearer Authorization = %d", r.code)
	}
}

func TestHostileDataRendersAsText(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	long := strings.Repeat("W", 1900)
	hostileID := `x"><script>alert(1)</script>`
	e.insert(hostileID, "caller\u202Eevil", "callee\u200Bzw", ledger.StatusInProgress,
		"<img src=x onerror=alert(1)> \u2066rtl\u2069 "+long)
	if _, err := e.ledger.SetStatus(context.Background(), hostileID, ledger.StatusFailed, ledger.Change{
		Actor: "<b>actor</b>", Reason: "javascript:alert(1) \u202Egnp.exe", Error: "<script>x</script>\n" + long,
		Detail: map[string]string{"html": "</pre><script>alert(2)</script>"},
	}); err != nil {
		t.Fatal(err)
	}
	c := e.client()
	hdr := bearer(e.tokens[auth.RoleAdmin])
	list := c.get("/delegations", hdr...).body
	detail := c.get("/delegations/"+url.PathEscape(hostileID), hdr...)
	if detail.code != http.StatusOK {
		t.Fatalf("detail = %d", detail.code)
	}
	live := c.get("/live", hdr...).body
	// html/template writes "+" as &#43;: the page reads ⟨U+202E⟩.
	for name, body := range map[string]string{"list": list, "detail": detail.body, "live": live} {
		for _, bad := range []string{"<script>alert", "<img src=x", "<b>actor</b>", "\u202E", "\u200B", "\u2066", `"><script>`} {
			if strings.Contains(body, bad) {
				t.Errorf("%s page contains raw %q", name, bad)
			}
		}
	}
	for _, want := range []string{"&lt;script&gt;alert(1)&lt;/script&gt;", "caller⟨U&#43;202E⟩evil", "callee⟨U&#43;200B⟩zw", "&lt;img src=x onerror=alert(1)&gt;"} {
		if !strings.Contains(list, want) {
			t.Errorf("list does not show %q", want)
		}
	}
	for _, want := range []string{"⟨U&#43;2066⟩rtl⟨U&#43;2069⟩", "&lt;b&gt;actor&lt;/b&gt;", "⟨U&#43;202E⟩gnp.exe", "&lt;/pre&gt;&lt;script&gt;alert(2)&lt;/script&gt;"} {
		if !strings.Contains(detail.body, want) {
			t.Errorf("detail does not show %q", want)
		}
	}
	// Bounded: a list cell shows at most 80 characters.
	if strings.Contains(list, strings.Repeat("W", 81)) {
		t.Error("the list shows a 1900-character line whole")
	}
	if !strings.Contains(detail.body, strings.Repeat("W", 1000)) {
		t.Error("the detail page does not show the task text")
	}
	// The link to the detail page is path-escaped.
	if !strings.Contains(list, `href="/delegations/x%22%3E%3Cscript%3Ealert%281%29%3C%2Fscript%3E"`) {
		t.Errorf("detail link not escaped:\n%s", list)
	}
}

func TestListFiltersAndKeysetPages(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	ctx := context.Background()
	if _, err := e.db.Pool.Exec(ctx, `
		INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat, created_at)
		SELECT 'row-' || lpad(g::text, 3, '0'), (ARRAY['billing', 'search'])[1 + g % 2], (ARRAY['a', 'b', 'c'])[1 + g % 3],
		       (ARRAY['queued', 'in_progress', 'completed', 'stuck'])[1 + g % 4],
		       now(), TIMESTAMPTZ '2026-01-01 00:00:00+00' + make_interval(mins => g)
		FROM generate_series(1, 120) g`); err != nil {
		t.Fatal(err)
	}
	c := e.client()
	hdr := bearer(e.tokens[auth.RoleReader])
	ids := regexp.MustCompile(`<bdi class="clip">(row-\d+)</bdi></a>`)
	next := regexp.MustCompile(`href="(/delegations\?[^"]+)" rel="next"`)
	// walk follows Next links and returns every id, in page order.
	walk := func(path string) []string {
		t.Helper()
		var out []string
		for range 100 {
			r := c.get(path, hdr...)
			if r.code != http.StatusOK {
				t.Fatalf("GET %s = %d\n%s", path, r.code, r.body)
			}
			for _, m := range ids.FindAllStringSubmatch(r.body, -1) {
				out = append(out, m[1])
			}
			m := next.FindStringSubmatch(r.body)
			if m == nil {
				return out
			}
			path = strings.ReplaceAll(m[1], "&amp;", "&")
		}
		t.Fatal("pagination did not end")
		return nil
	}
	// want lists rows g in newest-first order matching keep.
	want := func(keep func(g int) bool) []string {
		var out []string
		for g := 120; g >= 1; g-- {
			if keep(g) {
				out = append(out, fmt.Sprintf("row-%03d", g))
			}
		}
		return out
	}
	statusOf := func(g int) string { return []string{"queued", "in_progress", "completed", "stuck"}[g%4] }
	for _, c := range []struct {
		query string
		keep  func(g int) bool
	}{
		{"limit=7", func(int) bool { return true }},
		{"status=stuck&limit=4", func(g int) bool { return statusOf(g) == "stuck" }},
		{"in_flight=true&limit=9", func(g int) bool { return g%4 < 2 }},
		{"caller_id=search&limit=5", func(g int) bool { return g%2 == 1 }},
		{"caller_id=search&in_flight=true&limit=5", func(g int) bool { return g%2 == 1 && g%4 < 2 }},
		{"caller_id=billing&callee_id=b&status=queued", func(g int) bool { return g%2 == 0 && g%3 == 1 && g%4 == 0 }},
		{"callee_id=c&limit=6", func(g int) bool { return g%3 == 2 }},
		{"callee_id=c&in_flight=true", func(g int) bool { return g%3 == 2 && g%4 < 2 }},
		{"created_after=2026-01-01T01:00&created_before=2026-01-01T01:30:00Z&limit=4", func(g int) bool { return g >= 60 && g < 90 }},
		{"status=completed&in_flight=true", func(int) bool { return false }},
	} {
		if got, w := walk("/delegations?"+c.query), want(c.keep); strings.Join(got, ",") != strings.Join(w, ",") {
			t.Errorf("%s:\n got %v\nwant %v", c.query, got, w)
		}
	}
	// The id prefix lists in id order.
	got := walk("/delegations?id_prefix=row-01&limit=3")
	if strings.Join(got, ",") != "row-010,row-011,row-012,row-013,row-014,row-015,row-016,row-017,row-018,row-019" {
		t.Errorf("id prefix: %v", got)
	}
	if got := walk("/delegations?id_prefix=row-01&status=stuck&caller_id=search"); strings.Join(got, ",") != "row-011,row-015,row-019" {
		t.Errorf("id prefix with filters: %v", got)
	}

	// Bad input: 400 naming the parameter.
	for q, msg := range map[string]string{
		"status=done":                           "status &#34;done&#34; is not one of",
		"in_flight=maybe":                       "in_flight must be true or false",
		"created_after=yesterday":               "created_after &#34;yesterday&#34; is not a time",
		"limit=0":                               "limit must be between 1 and 200",
		"limit=100000":                          "limit must be between 1 and 200",
		"cursor=not-a-cursor":                   "cursor is not a cursor of this page",
		"caller_id=" + strings.Repeat("x", 300): "caller_id is longer than 255 bytes",
		"callee_id=a%00b":                       "callee_id contains invalid or control characters",
	} {
		r := c.get("/delegations?"+q, hdr...)
		if r.code != http.StatusBadRequest || !strings.Contains(r.body, msg) {
			t.Errorf("%s = %d, want 400 with %q", q, r.code, msg)
		}
	}
}

func TestSecureCookiesBehindTLSProxy(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, func(c *console.Config) { c.SecureCookies = true })
	c := e.client()
	r := c.get("/login")
	ok := false
	for _, ck := range (&http.Response{Header: r.header}).Cookies() {
		ok = ok || (ck.Name == "__Host-sweeper_login" && ck.Secure && ck.HttpOnly)
	}
	if !ok {
		t.Fatalf("SecureCookies: %v", r.header["Set-Cookie"])
	}
}

// The detail page lists the attempt chain, each attempt linked, when the
// delegation has more than one attempt; a worker sees only its own.
func TestDetailAttempts(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	ctx := context.Background()
	e.insert("job", "billing", "indexer", ledger.StatusInProgress, "index it")
	c := e.client()
	admin := bearer(e.tokens[auth.RoleAdmin])
	if body := c.get("/delegations/job", admin...).body; strings.Contains(body, `data-testid="attempts"`) {
		t.Fatal("a single attempt shows an Attempts section")
	}
	if _, err := e.ledger.SetStatus(ctx, "job", ledger.StatusFailed, ledger.Change{Error: "boom"}); err != nil {
		t.Fatal(err)
	}
	if res, err := e.ledger.Retry(ctx, "job", ledger.RetryOptions{}); err != nil || res.DelegationID != "job#2" {
		t.Fatalf("retry: %+v %v", res, err)
	}
	if _, err := e.ledger.SetStatus(ctx, "job#2", ledger.StatusStuck, ledger.Change{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ledger.Retry(ctx, "job#2", ledger.RetryOptions{DelegationID: "job-third", CalleeID: "crawler"}); err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile(`(?s)<tr[^>]*>\s*<td data-testid="attempt-n">(\d+)</td>\s*<td>(.*?)</td>\s*<td[^>]*><span class="status s-(\w+)">`)
	for _, c2 := range []struct {
		page string
		hdr  []string
		want string // attempt:link-or-self:status, in order
	}{
		{"/delegations/job%232", admin, "1:/delegations/job:failed 2:self:stuck 3:/delegations/job-third:queued"},
		{"/delegations/job", admin, "1:self:failed 2:/delegations/job%232:stuck 3:/delegations/job-third:queued"},
		// The worker indexer ran attempts 1 and 2, not crawler's third.
		{"/delegations/job", bearer(e.tokens[auth.RoleWorker]), "1:self:failed 2:/delegations/job%232:stuck"},
	} {
		body := c.get(c2.page, c2.hdr...).body
		var got []string
		for _, m := range row.FindAllStringSubmatch(body, -1) {
			link := "self"
			if h := regexp.MustCompile(`href="([^"]+)"`).FindStringSubmatch(m[2]); h != nil {
				link = h[1]
			}
			got = append(got, m[1]+":"+link+":"+m[3])
		}
		if strings.Join(got, " ") != c2.want {
			t.Errorf("%s: attempts %q, want %q", c2.page, strings.Join(got, " "), c2.want)
		}
	}
}
