package console

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/tasksweeper/sweeper/internal/auth"
	"github.com/tasksweeper/sweeper/ledger"
)

// Defaults of Config.
const (
	// HeartbeatTimeoutDefault is the sweep's default heartbeat timeout,
	// used for "next row due" when Config.HeartbeatTimeout is 0.
	HeartbeatTimeoutDefault = 10 * time.Minute
	// SessionTTLDefault is how long a sign-in lasts.
	SessionTTLDefault = 8 * time.Hour
	// QueryTimeoutDefault bounds the database work of one page.
	QueryTimeoutDefault = 5 * time.Second
)

// Config configures the console.
type Config struct {
	// Pool is the database (required).
	Pool *pgxpool.Pool
	// Reads, when set, runs the overview's and the lists' queries, which may
	// tolerate a few seconds of staleness: a replica router. A delegation's
	// page (which an admin's action redirects to), sign-ins and the live
	// feed stay on Pool. It must be safe for concurrent use (a pool or a
	// router of pools, not one connection): the overview runs its parts at
	// once.
	Reads ledger.DB
	// Tokens authenticates sign-ins and Bearer headers; auth.NewStore(Pool)
	// when nil.
	Tokens *auth.Store
	// Ledger makes the admin's writes; ledger.New(Pool) when nil.
	Ledger *ledger.Ledger
	// HeartbeatTimeout is the sweep's, for the overview's "next row due";
	// HeartbeatTimeoutDefault when 0.
	HeartbeatTimeout time.Duration
	// SessionTTL is how long a session lasts from sign-in;
	// SessionTTLDefault when 0.
	SessionTTL time.Duration
	// QueryTimeout bounds the database work of one page;
	// QueryTimeoutDefault when 0.
	QueryTimeout time.Duration
	// BulkTimeout bounds the database work of one bulk action (finding and
	// writing up to ledger.MaxBulk rows); BulkTimeoutDefault when 0.
	BulkTimeout time.Duration
	// Waiter wakes the live page's streams; when nil the console starts
	// its own on the first stream (one more connection) and Close stops it.
	// A daemon that serves the API passes the API's.
	Waiter *ledger.Waiter
	// SecureCookies marks cookies Secure (with the __Host- prefix) even on
	// plain HTTP requests: for a console behind a proxy that terminates
	// TLS. Under TLS they are Secure anyway.
	SecureCookies bool
	// Runs, when set, reports the sweeper's runs for the overview. A
	// console mounted outside the daemon leaves it nil and the overview
	// says the runs are not known here.
	Runs func() Runs
	// Logger receives errors (never a token); zap.NewNop() when nil.
	Logger *zap.Logger
	// Now is the clock of sessions; time.Now when nil (tests set it).
	Now func() time.Time
}

// Runs is what the daemon knows of its own sweep runs.
type Runs struct {
	// LastSuccess is when the last successful run ended (zero: none yet).
	LastSuccess time.Time
	// LastFailure is when the last failed run ended (zero: none), and
	// LastError why; Failures counts failed runs since start.
	LastFailure time.Time
	LastError   string
	Failures    int64
}

// Handler is the console: an http.Handler serving its pages, for a service
// to mount (the daemon mounts it on the API listener next to /v1/). Close
// ends the live streams it serves.
type Handler struct {
	cfg      Config
	pool     *pgxpool.Pool
	reads    ledger.DB // overview and lists: cfg.Reads, else pool
	tokens   *auth.Store
	ledger   *ledger.Ledger
	log      *zap.Logger
	pages    pages
	sessions *sessions
	mux      *http.ServeMux
	handler  http.Handler

	streams   atomic.Int64
	waitMu    sync.Mutex
	ownWaiter *ledger.Waiter

	closeOnce sync.Once
	closed    chan struct{}
}

// NewHandler returns the console over cfg.Pool.
func NewHandler(cfg Config) (*Handler, error) {
	if cfg.Pool == nil {
		return nil, errors.New("console: Config.Pool is required")
	}
	cfg.HeartbeatTimeout = cmp.Or(cfg.HeartbeatTimeout, HeartbeatTimeoutDefault)
	cfg.SessionTTL = cmp.Or(cfg.SessionTTL, SessionTTLDefault)
	cfg.QueryTimeout = cmp.Or(cfg.QueryTimeout, QueryTimeoutDefault)
	cfg.BulkTimeout = cmp.Or(cfg.BulkTimeout, BulkTimeoutDefault)
	if cfg.Tokens == nil {
		cfg.Tokens = auth.NewStore(cfg.Pool)
	}
	if cfg.Ledger == nil {
		cfg.Ledger = ledger.New(cfg.Pool)
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	ps, err := parsePages()
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	h := &Handler{
		cfg: cfg, pool: cfg.Pool, reads: cfg.Reads, tokens: cfg.Tokens, ledger: cfg.Ledger, log: cfg.Logger,
		pages: ps, sessions: newSessions(cfg.SessionTTL, cfg.Now), mux: http.NewServeMux(),
		closed: make(chan struct{}),
	}
	if h.reads == nil {
		h.reads = cfg.Pool
	}
	h.routes()
	// Cross-origin state-changing requests are refused on Sec-Fetch-Site and
	// Origin before any handler runs; every form also carries a CSRF token.
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.fail(w, r, http.StatusForbidden, "Cross-origin request refused.")
	}))
	h.handler = securityHeaders(cop.Handler(h.mux))
	return h, nil
}

// ServeHTTP serves the console.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.handler.ServeHTTP(w, r) }

// Close ends the live streams (an http.Server's Shutdown waits for them
// otherwise). It is safe to call more than once.
func (h *Handler) Close() {
	h.closeOnce.Do(func() {
		close(h.closed)
		h.waitMu.Lock()
		w := h.ownWaiter
		h.waitMu.Unlock()
		if w != nil {
			w.Stop()
		}
	})
}

func (h *Handler) routes() {
	h.mux.Handle("GET /static/", http.StripPrefix("/static/", staticHandler()))
	h.mux.HandleFunc("GET /login", h.loginForm)
	h.mux.HandleFunc("POST /login", h.login)
	h.mux.HandleFunc("POST /logout", h.logout)
	h.mux.HandleFunc("GET /{$}", h.authed(h.overviewPage))
	h.mux.HandleFunc("GET /delegations", h.authed(h.listPage))
	h.mux.HandleFunc("GET /delegations/{id}", h.authed(h.detailPage))
	h.mux.HandleFunc("POST /delegations/{id}/fail", h.authed(h.failAction))
	h.mux.HandleFunc("POST /delegations/{id}/retry", h.authed(h.retryAction))
	h.mux.HandleFunc("GET /bulk", h.authed(h.bulkConfirm))
	h.mux.HandleFunc("POST /bulk", h.authed(h.bulkAct))
	h.mux.HandleFunc("GET /live", h.authed(h.livePage))
	h.mux.HandleFunc("GET /live/events", h.authed(h.liveEvents))
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.fail(w, r, http.StatusNotFound, "No such page.")
	})
}

// contentSecurityPolicy allows nothing from another origin, no inline
// script and no framing.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", contentSecurityPolicy)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		hd.Set("Cross-Origin-Resource-Policy", "same-origin")
		hd.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
		if !strings.HasPrefix(r.URL.Path, "/static/") {
			hd.Set("Cache-Control", "no-store")
		}
		next.ServeHTTP(w, r)
	})
}

func staticHandler() http.Handler {
	fsrv := http.FileServerFS(staticFiles)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r) // no directory listings
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=300")
		fsrv.ServeHTTP(w, r)
	})
}

// Cookie names. The __Host- prefix (Secure, Path=/, no Domain) is used
// under TLS; over plain HTTP (a local console) browsers refuse Secure
// cookies, so the names lose the prefix.
const (
	sessionCookie = "sweeper_session"
	loginCookie   = "sweeper_login" // CSRF token of the sign-in form
)

func (h *Handler) secure(r *http.Request) bool { return r.TLS != nil || h.cfg.SecureCookies }

func (h *Handler) cookieName(r *http.Request, name string) string {
	if h.secure(r) {
		return "__Host-" + name
	}
	return name
}

func (h *Handler) setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge time.Duration) {
	c := &http.Cookie{
		Name: h.cookieName(r, name), Value: value, Path: "/",
		HttpOnly: true, Secure: h.secure(r), SameSite: http.SameSiteStrictMode,
	}
	if maxAge > 0 {
		c.MaxAge = int(maxAge / time.Second)
		c.Expires = h.cfg.Now().Add(maxAge).UTC()
	} else {
		c.MaxAge = -1
	}
	http.SetCookie(w, c)
}

func (h *Handler) cookieValue(r *http.Request, name string) string {
	c, err := r.Cookie(h.cookieName(r, name))
	if err != nil {
		return ""
	}
	return c.Value
}

// who is the signed-in principal of a request.
type who struct {
	auth.Principal
	// CSRF is the session's CSRF token; "" for a Bearer request, which
	// carries no ambient credential and needs none.
	CSRF   string
	Bearer bool
}

// Actor is the audit actor of the console's writes: "console:<token name>".
func (u who) Actor() string { return "console:" + u.TokenName }

// IsAdmin reports whether u may act.
func (u who) IsAdmin() bool { return u.Role == auth.RoleAdmin }

type authedFunc func(w http.ResponseWriter, r *http.Request, u who)

// authed resolves the principal from an Authorization: Bearer header or the
// session cookie. Without either, a page redirects to /login; a bad Bearer
// token is a 401.
func (h *Handler) authed(next authedFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), h.cfg.QueryTimeout)
		defer cancel()
		if hv := r.Header.Get("Authorization"); hv != "" {
			tok, ok := strings.CutPrefix(hv, "Bearer ")
			p, err := h.tokens.Authenticate(ctx, strings.TrimSpace(tok))
			if !ok || err != nil {
				if err != nil && !errors.Is(err, auth.ErrUnauthenticated) {
					h.serverError(w, r, err)
					return
				}
				w.Header().Set("WWW-Authenticate", `Bearer realm="sweeper console"`)
				h.fail(w, r, http.StatusUnauthorized, "The Authorization header does not carry a valid token.")
				return
			}
			next(w, r, who{Principal: p, Bearer: true})
			return
		}
		sid := h.cookieValue(r, sessionCookie)
		sess, ok := h.sessions.get(sid)
		if ok {
			p, err := h.tokens.Authenticate(ctx, sess.token)
			switch {
			case err == nil:
				next(w, r, who{Principal: p, CSRF: sess.csrf})
				return
			case !errors.Is(err, auth.ErrUnauthenticated):
				h.serverError(w, r, err)
				return
			}
			h.sessions.drop(sid) // the token was revoked
		}
		if r.Method != http.MethodGet {
			h.fail(w, r, http.StatusUnauthorized, "Sign in first.")
			return
		}
		target := "/login"
		if next := r.URL.RequestURI(); next != "/" && strings.HasPrefix(next, "/") && !strings.HasPrefix(next, "/live/events") {
			target += "?next=" + url.QueryEscape(next)
		}
		http.Redirect(w, r, target, http.StatusSeeOther)
	}
}

// safeNext returns next when it is a path on this site, else "/".
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") ||
		strings.ContainsAny(next, "\r\n\t") || len(next) > 2000 {
		return "/"
	}
	return next
}

type loginData struct {
	page
	Next  string
	Error string
}

// page is what the layout needs.
type page struct {
	Title  string
	Nav    string
	User   *who
	Notice string
}

func (p page) pageInfo() page { return p }

func (h *Handler) loginForm(w http.ResponseWriter, r *http.Request) {
	h.showLogin(w, r, http.StatusOK, "")
}

func (h *Handler) showLogin(w http.ResponseWriter, r *http.Request, code int, msg string) {
	csrf := randomString(32)
	h.setCookie(w, r, loginCookie, csrf, 30*time.Minute)
	h.renderCSRF(w, r, code, "login", loginData{
		page: page{Title: "Sign in"}, Next: safeNext(r.FormValue("next")), Error: msg,
	}, csrf)
}

// maxFormBytes bounds a posted form.
const maxFormBytes = 16 << 10

func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		h.fail(w, r, http.StatusBadRequest, "The form could not be read.")
		return
	}
	if !equalSecret(r.PostForm.Get("csrf"), h.cookieValue(r, loginCookie)) {
		h.fail(w, r, http.StatusForbidden, "The sign-in form expired or was not sent by this site. Reload it and try again.")
		return
	}
	tok := strings.TrimSpace(r.PostForm.Get("token"))
	if tok == "" {
		h.showLogin(w, r, http.StatusBadRequest, "Enter a token.")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.QueryTimeout)
	defer cancel()
	if _, err := h.tokens.Authenticate(ctx, tok); err != nil {
		if !errors.Is(err, auth.ErrUnauthenticated) {
			h.serverError(w, r, err)
			return
		}
		h.showLogin(w, r, http.StatusUnauthorized, "That token is not valid or has been revoked.")
		return
	}
	if old := h.cookieValue(r, sessionCookie); old != "" {
		h.sessions.drop(old)
	}
	sid, _ := h.sessions.create(tok)
	h.setCookie(w, r, sessionCookie, sid, h.cfg.SessionTTL)
	h.setCookie(w, r, loginCookie, "", 0)
	http.Redirect(w, r, safeNext(r.PostForm.Get("next")), http.StatusSeeOther)
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		h.fail(w, r, http.StatusBadRequest, "The form could not be read.")
		return
	}
	sid := h.cookieValue(r, sessionCookie)
	sess, ok := h.sessions.get(sid)
	if ok && !equalSecret(r.PostForm.Get("csrf"), sess.csrf) {
		h.fail(w, r, http.StatusForbidden, "The form was not sent by this page (missing or wrong CSRF token).")
		return
	}
	if ok {
		h.sessions.drop(sid)
	}
	h.setCookie(w, r, sessionCookie, "", 0)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// checkCSRF refuses a cookie-authenticated POST whose form lacks the
// session's CSRF token.
func (h *Handler) checkCSRF(w http.ResponseWriter, r *http.Request, u who) bool {
	if u.Bearer {
		return true
	}
	if !equalSecret(r.PostForm.Get("csrf"), u.CSRF) {
		h.fail(w, r, http.StatusForbidden, "The form was not sent by this page (missing or wrong CSRF token).")
		return false
	}
	return true
}

type overviewData struct {
	page
	O       overview
	Reasons []string
	Chart   chart
	Runs    *Runs
	Now     time.Time
	Scope   scope
}

func (h *Handler) overviewPage(w http.ResponseWriter, r *http.Request, u who) {
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.QueryTimeout)
	defer cancel()
	sc := scopeOf(u.Principal)
	o, err := h.overview(ctx, sc)
	if err != nil {
		h.serverError(w, r, err)
		return
	}
	d := overviewData{
		page: page{Title: "Overview", Nav: "overview", User: &u},
		O:    o, Reasons: o.reasons(), Chart: newChart(o.Chart, o.ChartStart, 720, 120), Now: o.Now, Scope: sc,
	}
	if h.cfg.Runs != nil {
		runs := h.cfg.Runs()
		d.Runs = &runs
	}
	h.render(w, r, http.StatusOK, "overview", d)
}

type listData struct {
	page
	F        listFilter
	Rows     []ledger.Delegation
	Next     string
	NextURL  string
	Now      time.Time
	Statuses []ledger.Status
	Scope    scope
	Errors   []string
	// Form values as typed, for redisplay.
	AfterValue, BeforeValue string
	// BulkFail and BulkRetry are the bulk actions' pages for this filter.
	BulkFail, BulkRetry string
}

// maxFilterBytes bounds a text filter.
const maxFilterBytes = ledger.MaxIDBytes

// parseList reads the delegations page's query string; errors name the
// parameter.
func parseList(q url.Values) (listFilter, []string) {
	var f listFilter
	var errs []string
	text := func(name string) string {
		v := strings.TrimSpace(q.Get(name))
		switch {
		case len(v) > maxFilterBytes:
			errs = append(errs, fmt.Sprintf("%s is longer than %d bytes", name, maxFilterBytes))
			return ""
		case !utf8.ValidString(v) || strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }):
			errs = append(errs, name+" contains invalid or control characters")
			return ""
		}
		return v
	}
	f.CallerID = text("caller_id")
	f.CalleeID = text("callee_id")
	f.IDPrefix = text("id_prefix")
	if v := q.Get("status"); v != "" {
		st, err := ledger.ParseStatus(v)
		if err != nil {
			errs = append(errs, fmt.Sprintf("status %q is not one of queued, dispatched, in_progress, completed, failed, stuck", visible(v, 40)))
		}
		f.Status = st
	}
	switch q.Get("in_flight") {
	case "", "false", "0":
	case "true", "1", "on":
		f.InFlight = true
	default:
		errs = append(errs, "in_flight must be true or false")
	}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"created_after", &f.CreatedAfter}, {"created_before", &f.CreatedBefore}} {
		v := strings.TrimSpace(q.Get(p.name))
		if v == "" {
			continue
		}
		t, err := parseTime(v)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s %q is not a time (use 2006-01-02T15:04 in UTC, or RFC 3339)", p.name, visible(v, 40)))
			continue
		}
		*p.dst = t
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPageSize {
			errs = append(errs, fmt.Sprintf("limit must be between 1 and %d", maxPageSize))
		} else {
			f.Limit = n
		}
	}
	f.Cursor = text("cursor")
	return f, errs
}

// parseTime reads an RFC 3339 time or the value of an <input
// type="datetime-local">, which has no zone and is taken as UTC.
func parseTime(v string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, v, time.UTC); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, errors.New("not a time")
}

func (h *Handler) listPage(w http.ResponseWriter, r *http.Request, u who) {
	q := r.URL.Query()
	f, errs := parseList(q)
	d := listData{
		page: page{Title: "Delegations", Nav: "delegations", User: &u},
		F:    f, Now: h.cfg.Now(), Statuses: ledger.Statuses, Scope: scopeOf(u.Principal), Errors: errs,
		AfterValue: q.Get("created_after"), BeforeValue: q.Get("created_before"),
	}
	if len(errs) > 0 {
		h.render(w, r, http.StatusBadRequest, "delegations", d)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.QueryTimeout)
	defer cancel()
	pg, err := h.list(ctx, d.Scope, f)
	var fe *ledger.FieldError
	if errors.As(err, &fe) {
		d.Errors = []string{fe.Error()}
		h.render(w, r, http.StatusBadRequest, "delegations", d)
		return
	}
	if err != nil {
		h.serverError(w, r, err)
		return
	}
	d.Rows, d.Next = pg.Rows, pg.Next
	d.BulkFail, d.BulkRetry = bulkURL("fail", q), bulkURL("retry", q)
	if pg.Next != "" {
		nq := url.Values{}
		for k, vs := range q {
			if k != "cursor" && len(vs) > 0 && vs[0] != "" {
				nq.Set(k, vs[0])
			}
		}
		nq.Set("cursor", pg.Next)
		d.NextURL = "/delegations?" + nq.Encode()
	}
	h.render(w, r, http.StatusOK, "delegations", d)
}

type detailData struct {
	page
	D      ledger.Delegation
	Events []ledger.Event
	// Attempts is the attempt chain D belongs to, narrowed to what the
	// user may see; the page shows it when it holds more than D.
	Attempts []ledger.Delegation
	Now      time.Time
	Outcome  string
	// Retryable is true when an admin may retry D now: it failed or got
	// stuck and has no next attempt yet.
	Retryable bool
}

// getVisible returns the delegation id if u may see it; a row out of scope
// is ledger.ErrNotFound, like a missing one.
func (h *Handler) getVisible(ctx context.Context, u who, id string) (ledger.Delegation, error) {
	d, err := h.ledger.Get(ctx, id)
	if err != nil {
		return d, err
	}
	if !u.CanSee(d) {
		return ledger.Delegation{}, ledger.ErrNotFound
	}
	return d, nil
}

// outcomes are the notices the detail page shows after an action.
var outcomes = map[string]string{
	"applied":           "Marked failed.",
	"unchanged":         "It was already failed: nothing changed.",
	"rejected_terminal": "It is already terminal: terminal rows never change, nothing was written.",
	"not_found":         "The delegation no longer exists.",
	"created":           "Retried: its next attempt is queued, due now.",
	"already_retried":   "It already has a next attempt: nothing was written.",
	"not_retryable":     "Only a failed or stuck delegation is retried: nothing was written.",
}

// visibleOrFail reads delegation id as u may see it; when it cannot, it
// answers the request (404 for a missing or someone else's row, else 500)
// and returns false.
func (h *Handler) visibleOrFail(ctx context.Context, w http.ResponseWriter, r *http.Request, u who, id string) (ledger.Delegation, bool) {
	d, err := h.getVisible(ctx, u, id)
	switch {
	case errors.Is(err, ledger.ErrNotFound), errors.Is(err, ledger.ErrInvalid):
		h.fail(w, r, http.StatusNotFound, "No such delegation (or it is not yours to see).")
		return d, false
	case err != nil:
		h.serverError(w, r, err)
		return d, false
	}
	return d, true
}

func (h *Handler) detailPage(w http.ResponseWriter, r *http.Request, u who) {
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.QueryTimeout)
	defer cancel()
	id := r.PathValue("id")
	d, ok := h.visibleOrFail(ctx, w, r, u, id)
	if !ok {
		return
	}
	evs, err := h.ledger.Events(ctx, id)
	if err != nil {
		h.serverError(w, r, err)
		return
	}
	// The chain: along the primary key and idx_delegations_retry_of.
	chain, err := h.ledger.Attempts(ctx, id)
	if err != nil && !errors.Is(err, ledger.ErrNotFound) {
		h.serverError(w, r, err)
		return
	}
	var attempts []ledger.Delegation
	retried := false
	for _, a := range chain {
		retried = retried || a.RetryOf == d.DelegationID
		if u.CanSee(a) {
			attempts = append(attempts, a)
		}
	}
	h.render(w, r, http.StatusOK, "detail", detailData{
		page: page{Title: "Delegation " + visible(id, 40), Nav: "delegations", User: &u, Notice: outcomes[r.URL.Query().Get("outcome")]},
		D:    d, Events: evs, Attempts: attempts, Now: h.cfg.Now(), Outcome: r.URL.Query().Get("outcome"),
		Retryable: d.Status.Retryable() && !retried,
	})
}

// maxReasonRunes bounds the reason an admin gives.
const maxReasonRunes = 500

// failAction marks a delegation failed (admin only), through the ledger:
// the same forward-only rules and audit event as every writer.
func (h *Handler) failAction(w http.ResponseWriter, r *http.Request, u who) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		h.fail(w, r, http.StatusBadRequest, "The form could not be read.")
		return
	}
	if !h.checkCSRF(w, r, u) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.QueryTimeout)
	defer cancel()
	id := r.PathValue("id")
	d, ok := h.visibleOrFail(ctx, w, r, u, id)
	if !ok {
		return
	}
	if !u.IsAdmin() {
		h.fail(w, r, http.StatusForbidden, "Only an admin token may act on delegations.")
		return
	}
	reason, msg := formReason(r.PostForm.Get("reason"))
	if msg != "" {
		h.fail(w, r, http.StatusBadRequest, msg)
		return
	}
	res, err := h.ledger.SetStatus(ctx, d.DelegationID, ledger.StatusFailed, ledger.Change{
		Actor: u.Actor(), Reason: reason, Error: "marked failed in the console: " + reason,
	})
	if err != nil {
		h.serverError(w, r, err)
		return
	}
	outcome := res.Outcome.String()
	if _, ok := outcomes[outcome]; !ok {
		outcome = ""
	}
	http.Redirect(w, r, "/delegations/"+url.PathEscape(d.DelegationID)+"?outcome="+outcome, http.StatusSeeOther)
}

// retryAction records the next attempt of a failed or stuck delegation now
// (admin only), through the ledger's Retry: due at once, the same caller,
// callee, task and policy, audited as console:<token name>.
func (h *Handler) retryAction(w http.ResponseWriter, r *http.Request, u who) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		h.fail(w, r, http.StatusBadRequest, "The form could not be read.")
		return
	}
	if !h.checkCSRF(w, r, u) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.QueryTimeout)
	defer cancel()
	d, ok := h.visibleOrFail(ctx, w, r, u, r.PathValue("id"))
	if !ok {
		return
	}
	if !u.IsAdmin() {
		h.fail(w, r, http.StatusForbidden, "Only an admin token may act on delegations.")
		return
	}
	res, err := h.ledger.Retry(ctx, d.DelegationID, ledger.RetryOptions{Actor: u.Actor(), Reason: "retried in the console"})
	var ce *ledger.ConflictError
	if errors.As(err, &ce) {
		h.fail(w, r, http.StatusConflict, "The next attempt could not be recorded: "+ce.Error())
		return
	}
	if err != nil {
		h.serverError(w, r, err)
		return
	}
	target := d.DelegationID
	if res.Outcome == ledger.RetryCreated || res.Outcome == ledger.RetryAlreadyRetried {
		target = res.DelegationID
	}
	http.Redirect(w, r, "/delegations/"+url.PathEscape(target)+"?outcome="+res.Outcome.String(), http.StatusSeeOther)
}

// asFieldError reports whether err is the user's (a *ledger.FieldError).
func asFieldError(err error) (*ledger.FieldError, bool) {
	var fe *ledger.FieldError
	ok := errors.As(err, &fe)
	return fe, ok
}

func (h *Handler) render(w http.ResponseWriter, r *http.Request, code int, name string, data any) {
	h.renderCSRF(w, r, code, name, data, "")
}

// renderCSRF renders a page; csrf, when set, overrides the session's token
// in the page's forms (the sign-in form has no session yet).
func (h *Handler) renderCSRF(w http.ResponseWriter, r *http.Request, code int, name string, data any, csrf string) {
	if p, ok := data.(interface{ pageInfo() page }); ok && csrf == "" && p.pageInfo().User != nil {
		csrf = p.pageInfo().User.CSRF
	}
	body, err := h.pages.render(name, view{Data: data, CSRF: csrf})
	if err != nil {
		h.log.Error("console: rendering a page", zap.String("page", name), zap.Error(err))
		http.Error(w, "Internal error while rendering the page.", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

// view is what every template gets: the page's data and the CSRF token of
// its forms.
type view struct {
	Data any
	CSRF string
}

type errorData struct {
	page
	Code    int
	Message string
}

// fail renders an error page with code and a message for the user.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, code int, msg string) {
	h.render(w, r, code, "error", errorData{page: page{Title: http.StatusText(code)}, Code: code, Message: msg})
}

// serverError logs err and shows a page that says nothing of it (no SQL,
// no connection string).
func (h *Handler) serverError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.DeadlineExceeded) {
		h.log.Warn("console: page timed out", zap.String("path", r.URL.Path), zap.Error(err))
		h.fail(w, r, http.StatusServiceUnavailable, "The database did not answer in time. Try again.")
		return
	}
	h.log.Error("console: page failed", zap.String("path", r.URL.Path), zap.Error(err))
	h.fail(w, r, http.StatusInternalServerError, "Something went wrong reading the ledger. The error is in the server's log.")
}
