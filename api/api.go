package api

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tasksweeper/sweeper/internal/auth"
	"github.com/tasksweeper/sweeper/ledger"
)

// Defaults for the zero values of Options.
const (
	MaxBodyBytesDefault = 1 << 20
	MaxBatchDefault     = 10000
	MaxWaitDefault      = 60 * time.Second
)

// Options configure a Handler.
type Options struct {
	// Pool is the database. Required.
	Pool *pgxpool.Pool
	// Logger receives request failures (never a token or an Authorization
	// header) and, at debug level, one line per request. Defaults to a no-op.
	Logger *zap.Logger
	// Registerer, when set, receives the API's Prometheus metrics.
	Registerer prometheus.Registerer
	// MaxBodyBytes bounds a request body (MaxBodyBytesDefault when 0).
	MaxBodyBytes int64
	// MaxBatch bounds the ids of one POST /v1/heartbeats (MaxBatchDefault
	// when 0).
	MaxBatch int
	// RateLimit is the requests per second each token may make; 0 is
	// unlimited. RateBurst is the bucket size (RateLimit rounded up when 0).
	RateLimit float64
	RateBurst int
	// MaxWait bounds the wait of a feed long poll (MaxWaitDefault when 0).
	MaxWait time.Duration
	// Reads, when set, runs the read-only list and summary queries
	// (GET /v1/delegations, GET /v1/summary), which may tolerate a few
	// seconds of staleness: a replica router. Writes, reads by id (a client
	// reads its own writes), the feed and token checks stay on Pool.
	Reads ledger.DB
	// ListenPool, when set, is where the feed's LISTEN connection comes
	// from instead of Pool: a direct connection when Pool goes through a
	// pooler in transaction mode.
	ListenPool *pgxpool.Pool
	// FeedPoll, when more than 0, makes long polls re-read the feed this
	// often instead of being woken by LISTEN (ledger.NewPollingWaiter): for
	// a Pool behind a transaction pooler and no ListenPool.
	FeedPoll time.Duration
}

// Handler serves the API. Start it before serving (the feed's long poll
// needs its LISTEN connection) and Stop it after the server has shut down.
type Handler struct {
	opts    Options
	log     *zap.Logger
	ledger  *ledger.Ledger
	reads   *ledger.Ledger // lists and summaries: opts.Reads, else ledger
	tokens  *auth.Store
	waiter  *ledger.Waiter
	metrics *metrics
	limits  *limiters
	mux     *http.ServeMux
	stopped chan struct{}
	onWait  func() // test signal: a long poll starts waiting
}

// NewHandler returns the API over opts.Pool.
func NewHandler(opts Options) (*Handler, error) {
	if opts.Pool == nil {
		return nil, errors.New("api: Options.Pool is required")
	}
	if opts.MaxBodyBytes < 0 || opts.MaxBatch < 0 || opts.RateLimit < 0 || opts.RateBurst < 0 || opts.MaxWait < 0 ||
		math.IsNaN(opts.RateLimit) || math.IsInf(opts.RateLimit, 0) {
		return nil, fmt.Errorf("api: negative or invalid limit in Options")
	}
	opts.MaxBodyBytes = cmp.Or(opts.MaxBodyBytes, MaxBodyBytesDefault)
	opts.MaxBatch = cmp.Or(opts.MaxBatch, MaxBatchDefault)
	opts.MaxWait = cmp.Or(opts.MaxWait, MaxWaitDefault)
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("api: registering metrics: %w", err)
	}
	h := &Handler{
		opts:    opts,
		log:     log,
		ledger:  ledger.New(opts.Pool),
		reads:   ledger.New(opts.Pool),
		tokens:  auth.NewStore(opts.Pool),
		waiter:  newWaiter(opts),
		metrics: m,
		limits:  newLimiters(opts.RateLimit, opts.RateBurst),
		stopped: make(chan struct{}),
	}
	if opts.Reads != nil {
		h.reads = ledger.New(opts.Reads)
	}
	h.waiter.OnError = func(err error) { log.Warn("feed listener lost its connection; reconnecting", zap.Error(err)) }
	h.routes()
	return h, nil
}

// newWaiter is the feed's waker that opts ask for.
func newWaiter(opts Options) *ledger.Waiter {
	switch {
	case opts.ListenPool != nil:
		return ledger.NewWaiter(opts.ListenPool)
	case opts.FeedPoll > 0:
		return ledger.NewPollingWaiter(opts.FeedPoll)
	default:
		return ledger.NewWaiter(opts.Pool)
	}
}

// Start opens the feed's LISTEN connection; it returns once listening.
func (h *Handler) Start(ctx context.Context) error { return h.waiter.Start(ctx) }

// Waiter is what wakes the feed's long polls: a LISTEN on Options.ListenPool
// or Options.Pool, or a timer when Options.FeedPoll is set. The handler
// starts and stops it; a console beside the API shares it (console.Config's
// Waiter) rather than open a LISTEN connection of its own.
func (h *Handler) Waiter() *ledger.Waiter { return h.waiter }

// Stop closes the LISTEN connection and ends waiting long polls at once. It
// is safe to call more than once.
func (h *Handler) Stop() {
	select {
	case <-h.stopped:
	default:
		close(h.stopped)
	}
	h.waiter.Stop()
}

// handlerFunc is an endpoint: it writes its success answer itself and
// returns an error for writeProblem.
type handlerFunc func(w http.ResponseWriter, r *http.Request, p auth.Principal) error

func (h *Handler) routes() {
	h.mux = http.NewServeMux()
	endpoints := map[string][]struct {
		method string
		fn     handlerFunc
	}{
		"/v1/delegations":                  {{"POST", h.insert}, {"GET", h.list}},
		"/v1/delegations/{id}":             {{"GET", h.get}},
		"/v1/delegations/{id}/transitions": {{"POST", h.transition}},
		"/v1/delegations/{id}/heartbeat":   {{"POST", h.heartbeat}},
		"/v1/delegations/{id}/events":      {{"GET", h.events}},
		"/v1/delegations/{id}/retry":       {{"POST", h.retry}},
		"/v1/delegations/{id}/attempts":    {{"GET", h.attempts}},
		"/v1/heartbeats":                   {{"POST", h.heartbeats}},
		"/v1/claims":                       {{"POST", h.claim}},
		"/v1/events":                       {{"GET", h.feed}},
		"/v1/summary":                      {{"GET", h.summary}},
		"/v1/openapi.json":                 {{"GET", h.openapi}},
	}
	for path, eps := range endpoints {
		var allow []string
		for _, ep := range eps {
			allow = append(allow, ep.method)
			h.mux.Handle(ep.method+" "+path, h.authed(ep.fn))
			if ep.method == "GET" {
				allow = append(allow, "HEAD")
			}
		}
		allowed := strings.Join(allow, ", ")
		h.mux.Handle(path, h.authed(func(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
			w.Header().Set("Allow", allowed)
			return newProblem(http.StatusMethodNotAllowed, "method-not-allowed", "Method not allowed",
				"this endpoint accepts "+allowed)
		}))
	}
	h.mux.Handle("/", h.authed(func(http.ResponseWriter, *http.Request, auth.Principal) error {
		return errRouteNotFound
	}))
}

// ServeHTTP serves the API. Every request is counted and timed by route
// pattern; the body is limited to MaxBodyBytes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	r.Body = http.MaxBytesReader(sw, r.Body, h.opts.MaxBodyBytes)
	h.mux.ServeHTTP(sw, r)
	route := routeOf(r)
	code := sw.code
	if code == 0 {
		code = http.StatusOK
	}
	d := time.Since(start)
	h.metrics.requests.WithLabelValues(route, r.Method, strconv.Itoa(code)).Inc()
	h.metrics.latency.WithLabelValues(route).Observe(d.Seconds())
	if ce := h.log.Check(zap.DebugLevel, "api request"); ce != nil {
		ce.Write(zap.String("method", r.Method), zap.String("route", route), zap.Int("code", code),
			zap.Duration("duration", d), zap.String("token_name", sw.tokenName))
	}
}

// routeOf is the pattern that served r, without its method ("unmatched"
// for none): a bounded label, never the raw path.
func routeOf(r *http.Request) string {
	if r.Pattern == "" || r.Pattern == "/" {
		return "unmatched"
	}
	_, path, found := strings.Cut(r.Pattern, " ")
	if !found {
		return r.Pattern
	}
	return path
}

// authed authenticates the bearer token, applies the token's rate limit and
// runs fn, rendering its error as a problem.
func (h *Handler) authed(fn handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := h.authenticate(r)
		if err != nil {
			if errors.Is(err, errUnauthenticated) {
				h.metrics.authRejects.Inc()
				w.Header().Set("WWW-Authenticate", `Bearer realm="sweeper"`)
			}
			h.writeProblem(w, r, err)
			return
		}
		if sw, ok := w.(*statusWriter); ok {
			sw.tokenName = p.TokenName
		}
		if ok, wait := h.limits.allow(p.TokenName, time.Now()); !ok {
			h.metrics.rateLimited.Inc()
			lim := newProblem(http.StatusTooManyRequests, "rate-limited", "Too many requests",
				fmt.Sprintf("this token may make %g requests per second", h.opts.RateLimit))
			lim.retryAfter = max(1, int(math.Ceil(wait.Seconds())))
			h.writeProblem(w, r, lim)
			return
		}
		if err := fn(w, r, p); err != nil {
			h.writeProblem(w, r, err)
		}
	})
}

func (h *Handler) authenticate(r *http.Request) (auth.Principal, error) {
	hdr := r.Header.Values("Authorization")
	if len(hdr) != 1 {
		return auth.Principal{}, errUnauthenticated
	}
	scheme, token, ok := strings.Cut(hdr[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return auth.Principal{}, errUnauthenticated
	}
	p, err := h.tokens.Authenticate(r.Context(), strings.TrimSpace(token))
	if errors.Is(err, auth.ErrUnauthenticated) {
		return auth.Principal{}, errUnauthenticated
	}
	return p, err
}

// statusWriter records the status code and the token name for the request
// log and metrics.
type statusWriter struct {
	http.ResponseWriter
	code      int
	tokenName string
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
