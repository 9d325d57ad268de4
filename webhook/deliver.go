package webhook

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/tasksweeper/sweeper/internal/startstop"
	"github.com/tasksweeper/sweeper/internal/telemetry"
	"github.com/tasksweeper/sweeper/internal/testsignal"
	"github.com/tasksweeper/sweeper/internal/version"
	"github.com/tasksweeper/sweeper/ledger"
)

// Defaults of Config's zero values (the webhooks.* keys' defaults).
const (
	TimeoutDefault         = 10 * time.Second
	MaxRetryAgeDefault     = 72 * time.Hour
	RetryMinBackoffDefault = 5 * time.Second
	RetryMaxBackoffDefault = time.Hour
	LeaseTTLDefault        = 30 * time.Second
	PollIntervalDefault    = time.Second
	// PageSize is how many events a subscription reads from the feed at once.
	PageSize = 100
	// MaxInFlightDefault is how many deliveries of one subscription may be
	// in flight at once by default (webhooks.max_in_flight); at most
	// PageSize, since a page is delivered whole before the next is read.
	MaxInFlightDefault = 16
	// AttemptsKept is how many attempts of each subscription the log keeps.
	AttemptsKept = 1000
)

// Config configures a Deliverer.
type Config struct {
	// Pool is the database. Required.
	Pool *pgxpool.Pool
	// ListenPool, when set, gives the LISTEN connection that wakes
	// deliveries as events commit (a direct connection when Pool goes
	// through a transaction pooler). FeedPoll, when more than 0 and
	// ListenPool is nil, makes the feed be re-read that often instead.
	ListenPool *pgxpool.Pool
	FeedPoll   time.Duration
	// Logger defaults to a no-op. It never receives a secret.
	Logger *zap.Logger
	// Metrics, when set, receives the delivery series (registered by the
	// caller); else they are new, and registered with Registerer when set.
	Metrics    *Metrics
	Registerer prometheus.Registerer
	// Timeout bounds one delivery: connect, TLS, request and response.
	Timeout time.Duration
	// MaxRetryAge is how long the head event of a subscription may keep
	// failing before the subscription is paused.
	MaxRetryAge time.Duration
	// MaxInFlight is how many deliveries of one subscription may be in
	// flight at once, 1 to PageSize (MaxInFlightDefault when 0): events of
	// different delegations go in parallel, those of one delegation one
	// after the other, in feed order.
	MaxInFlight int
	// RetryMinBackoff and RetryMaxBackoff bound the wait before the next
	// attempt: RetryMinBackoff doubled after each failure, at most
	// RetryMaxBackoff, then drawn uniformly from its upper half (jitter).
	RetryMinBackoff, RetryMaxBackoff time.Duration
	// LeaseTTL is how long a replica's lease on a subscription lasts
	// without renewal: a replica that dies is replaced within LeaseTTL +
	// PollInterval. Renewed every PollInterval and whenever the cursor
	// moves; it must be longer than Timeout + PollInterval.
	LeaseTTL time.Duration
	// PollInterval is how often leases are renewed and free subscriptions
	// taken, the longest a subscription waits to see a new event when no
	// notification wakes it, and how often a page whose deliveries take
	// longer records those answered so far.
	PollInterval time.Duration
	// AllowHTTP and AllowPrivateNetworks lift the https-only and the
	// public-address rules (webhooks.allow_http,
	// webhooks.allow_private_networks).
	AllowHTTP, AllowPrivateNetworks bool
	// Render, when set, renders a delegation in a delivery's data as the
	// API's GET does (the daemon passes the API's rendering); the ledger's
	// JSON form when nil.
	Render func(ledger.Delegation) any
	// Owner names this replica in leases; a host, process and random
	// suffix when empty.
	Owner string
	// Resolver, when set, resolves destination names (tests point it at
	// their own DNS server).
	Resolver *net.Resolver
	// Tracing makes a span of each delivery (with the global tracer
	// provider, telemetry.Setup), a child of the trace the delegation was
	// inserted under (its stored traceparent), and sends the span's own
	// traceparent with the request.
	Tracing bool
}

// Outcome is what an attempt came to.
type Outcome string

// The outcomes of an attempt, as logged and counted.
const (
	OutcomeDelivered Outcome = "delivered" // 2xx: the cursor moves past the event once those before it are delivered too
	OutcomeFailed    Outcome = "failed"    // any other status, a timeout, a network error: retried
	OutcomeGone      Outcome = "gone"      // 410: the subscription is disabled
	OutcomeRefused   Outcome = "refused"   // the URL or address was refused: retried (the name may move)
)

// AttemptDone is the test signal of one attempt, sent once it is logged;
// State is the subscription's state after the commit that logged it.
type AttemptDone struct {
	Subscription string
	EventID      int64
	Outcome      Outcome
	State        State
}

// TestSignals are the Deliverer's test signals.
type TestSignals struct {
	// Attempt receives every attempt once logged, in the order they were
	// answered.
	Attempt testsignal.Signal[AttemptDone]
	// Leases receives the subscriptions held after each lease round.
	Leases testsignal.Signal[[]string]
}

// Init turns every signal on.
func (ts *TestSignals) Init(tb testsignal.TB) {
	ts.Attempt.Init(tb)
	ts.Leases.Init(tb)
}

// Deliverer delivers every active subscription it holds a lease on. It is a
// startstop service of the daemon.
type Deliverer struct {
	startstop.Base
	cfg     Config
	log     *zap.Logger
	ledger  *ledger.Ledger
	metrics *Metrics
	waiter  *ledger.Waiter
	// TestSignals are off unless a test Inits them.
	TestSignals TestSignals

	mu      sync.Mutex
	workers map[string]*worker
}

// worker is the goroutine delivering one subscription.
type worker struct{ cancel context.CancelFunc }

// New returns a Deliverer; it checks cfg and fills the defaults.
func New(cfg Config) (*Deliverer, error) {
	if cfg.Pool == nil {
		return nil, errors.New("webhook: Config.Pool is required")
	}
	cfg.Timeout = cmp.Or(cfg.Timeout, TimeoutDefault)
	cfg.MaxRetryAge = cmp.Or(cfg.MaxRetryAge, MaxRetryAgeDefault)
	cfg.RetryMinBackoff = cmp.Or(cfg.RetryMinBackoff, RetryMinBackoffDefault)
	cfg.RetryMaxBackoff = cmp.Or(cfg.RetryMaxBackoff, RetryMaxBackoffDefault)
	cfg.LeaseTTL = cmp.Or(cfg.LeaseTTL, LeaseTTLDefault)
	cfg.PollInterval = cmp.Or(cfg.PollInterval, PollIntervalDefault)
	cfg.MaxInFlight = cmp.Or(cfg.MaxInFlight, MaxInFlightDefault)
	if cfg.MaxInFlight < 1 || cfg.MaxInFlight > PageSize {
		return nil, fmt.Errorf("webhook: MaxInFlight (%d) must be between 1 and %d (a page's events)", cfg.MaxInFlight, PageSize)
	}
	if cfg.RetryMaxBackoff < cfg.RetryMinBackoff {
		return nil, fmt.Errorf("webhook: RetryMaxBackoff (%s) is below RetryMinBackoff (%s)", cfg.RetryMaxBackoff, cfg.RetryMinBackoff)
	}
	if cfg.LeaseTTL <= cfg.Timeout+cfg.PollInterval {
		return nil, fmt.Errorf("webhook: LeaseTTL (%s) must be longer than Timeout + PollInterval (%s)", cfg.LeaseTTL, cfg.Timeout+cfg.PollInterval)
	}
	if cfg.Owner == "" {
		host, _ := os.Hostname()
		b := make([]byte, 4)
		for i := range b {
			b[i] = byte(rand.UintN(256))
		}
		cfg.Owner = fmt.Sprintf("%s-%d-%x", cmp.Or(host, "sweeper"), os.Getpid(), b)
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	m := cfg.Metrics
	if m == nil {
		m = NewMetrics()
		if cfg.Registerer != nil {
			for _, c := range m.Collectors() {
				if err := cfg.Registerer.Register(c); err != nil {
					return nil, fmt.Errorf("webhook: registering metrics: %w", err)
				}
			}
		}
	}
	var w *ledger.Waiter
	switch {
	case cfg.ListenPool != nil:
		w = ledger.NewWaiter(cfg.ListenPool)
	case cfg.FeedPoll > 0:
		w = ledger.NewPollingWaiter(cfg.FeedPoll)
	default:
		w = ledger.NewWaiter(cfg.Pool)
	}
	w.OnError = func(err error) { log.Warn("webhook feed listener lost its connection; reconnecting", zap.Error(err)) }
	return &Deliverer{cfg: cfg, log: log, ledger: ledger.New(cfg.Pool), metrics: m, waiter: w}, nil
}

// Owner is the name of this replica in leases.
func (d *Deliverer) Owner() string { return d.cfg.Owner }

// Start listens for new events and starts the lease loop; it returns once
// listening.
func (d *Deliverer) Start(ctx context.Context) error {
	runCtx, err := d.StartInit(ctx)
	if err != nil {
		return err
	}
	if err := d.waiter.Start(runCtx); err != nil {
		d.StartFailed()
		return fmt.Errorf("webhook deliverer: %w", err)
	}
	d.mu.Lock()
	d.workers = map[string]*worker{}
	d.mu.Unlock()
	d.Go(func() { d.run(runCtx) })
	return nil
}

// Stop ends deliveries, releases the leases and waits for the work to end.
// Deliveries in flight are cut off: they are delivered again, with the same
// webhook-id, by whoever holds the lease next; those already answered are
// recorded first (within 5 seconds).
func (d *Deliverer) Stop() {
	d.Base.Stop()
	d.waiter.Stop()
}

// run is the lease loop: every PollInterval it renews this replica's
// leases and takes free ones, starts a worker for each subscription newly
// held and stops those of subscriptions lost (paused, deleted, or taken
// after an expiry).
func (d *Deliverer) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer func() {
		d.mu.Lock()
		for _, w := range d.workers {
			w.cancel()
		}
		d.mu.Unlock()
		wg.Wait()
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := d.cfg.Pool.Exec(rctx, releaseLeasesSQL, d.cfg.Owner); err != nil {
			d.log.Warn("webhook deliverer: releasing leases", zap.Error(err))
		}
	}()
	tick := time.NewTicker(d.cfg.PollInterval)
	defer tick.Stop()
	for {
		held, err := d.acquire(ctx)
		if err != nil && ctx.Err() == nil {
			d.log.Warn("webhook deliverer: renewing leases", zap.Error(err))
		}
		if err == nil {
			d.mu.Lock()
			for id, w := range d.workers {
				if !held[id] {
					w.cancel()
					delete(d.workers, id)
				}
			}
			ids := make([]string, 0, len(held))
			for id := range held {
				ids = append(ids, id)
				if _, ok := d.workers[id]; ok {
					continue
				}
				wctx, cancel := context.WithCancel(ctx)
				w := &worker{cancel: cancel}
				d.workers[id] = w
				wg.Go(func() {
					defer func() {
						// Ended on its own (lease lost, paused): the
						// next round starts another if it holds the
						// subscription again.
						d.mu.Lock()
						if d.workers[id] == w {
							delete(d.workers, id)
						}
						d.mu.Unlock()
						cancel()
					}()
					d.work(wctx, id)
				})
			}
			d.mu.Unlock()
			d.TestSignals.Leases.Signal(ids)
		}
		d.observe(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (d *Deliverer) acquire(ctx context.Context) (map[string]bool, error) {
	rows, err := d.cfg.Pool.Query(ctx, acquireLeasesSQL, d.cfg.Owner, d.cfg.LeaseTTL)
	if err != nil {
		return nil, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	held := make(map[string]bool, len(ids))
	for _, id := range ids {
		held[id] = true
	}
	return held, nil
}

// observe sets the gauges: subscriptions by state, lag of each.
func (d *Deliverer) observe(ctx context.Context) {
	rows, err := d.cfg.Pool.Query(ctx, statesSQL)
	if err == nil {
		counts := map[string]float64{string(Active): 0, string(Paused): 0, string(Disabled): 0}
		var st string
		var n float64
		_, err = pgx.ForEachRow(rows, []any{&st, &n}, func() error { counts[st] = n; return nil })
		for s, n := range counts {
			d.metrics.subscriptions.WithLabelValues(s).Set(n)
		}
	}
	if err != nil {
		return
	}
	rows, err = d.cfg.Pool.Query(ctx, lagSQL)
	if err == nil {
		var id string
		var lag float64
		d.metrics.lag.Reset()
		_, _ = pgx.ForEachRow(rows, []any{&id, &lag}, func() error { d.metrics.lag.WithLabelValues(id).Set(lag); return nil })
	}
}

// leased is a subscription as its worker reads it.
type leased struct {
	Subscription
	CursorTx    string  `db:"cursor_tx"`
	WaitSeconds float64 `db:"wait_seconds"`
}

// errLeaseLost ends a worker whose lease another replica took or whose
// subscription left the active state.
var errLeaseLost = errors.New("lease lost")

func (d *Deliverer) load(ctx context.Context, id string) (leased, error) {
	rows, err := d.cfg.Pool.Query(ctx, leasedSubscriptionSQL, id, d.cfg.Owner)
	if err != nil {
		return leased{}, err
	}
	s, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[leased])
	if errors.Is(err, pgx.ErrNoRows) {
		return leased{}, errLeaseLost
	}
	return s, err
}

// Payload is the body of a delivery.
type Payload struct {
	// Type is "delegation." and the status the event moved to.
	Type string `json:"type"`
	// Timestamp is when the event happened (its at).
	Timestamp time.Time `json:"timestamp"`
	Data      struct {
		Event      ledger.Event `json:"event"`
		Delegation any          `json:"delegation"`
	} `json:"data"`
}

// WebhookID is the webhook-id of event id: stable across retries and
// replicas, so receivers drop duplicates by it.
func WebhookID(eventID int64) string { return "evt_" + strconv.FormatInt(eventID, 10) }

// traceParents reads, with Config.Tracing, the trace context each of the
// page's delegations ids was inserted under, in one query ("" or absent
// for none; an error leaves the deliveries without a parent span, as a
// missing context would). Without Config.Tracing it makes no query.
func (d *Deliverer) traceParents(ctx context.Context, ids []string) map[string]string {
	if !d.cfg.Tracing || len(ids) == 0 {
		return nil
	}
	rows, err := d.cfg.Pool.Query(ctx, traceParentsSQL, ids)
	if err != nil {
		return nil
	}
	parents := make(map[string]string, len(ids))
	var id, tp string
	if _, err := pgx.ForEachRow(rows, []any{&id, &tp}, func() error {
		parents[id] = tp
		return nil
	}); err != nil {
		return nil
	}
	return parents
}

// startSpan starts the span of one delivery: a child of the span that
// inserted the delegation (traceParent, its stored trace context), so the
// caller's trace shows what became of its delegation. Without
// Config.Tracing the span is a no-op.
func (d *Deliverer) startSpan(ctx context.Context, subID string, ev ledger.Event, traceParent string) (context.Context, trace.Span) {
	if !d.cfg.Tracing {
		return ctx, trace.SpanFromContext(context.Background())
	}
	parent := ctx
	if traceParent != "" {
		parent = telemetry.ContextFromTraceParent(ctx, traceParent)
	}
	return telemetry.Tracer().Start(parent, "webhook delivery "+string(ev.ToStatus), trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("webhook.subscription", subID), attribute.String("webhook.id", WebhookID(ev.ID)),
			attribute.String("webhook.type", "delegation."+string(ev.ToStatus)), attribute.String("delegation.id", ev.DelegationID),
			attribute.Int64("webhook.event_id", ev.ID), attribute.String("http.request.method", http.MethodPost)))
}

// signingSecrets are the secrets that sign a delivery: secret, and
// previous while a rotation lasts ("" after).
func signingSecrets(secret, previous string) []string {
	if previous == "" {
		return []string{secret}
	}
	return []string{secret, previous}
}

// backoff is the wait before attempt n+1 after n failures: RetryMinBackoff
// doubled n-1 times, at most RetryMaxBackoff, drawn from its upper half.
func (d *Deliverer) backoff(n int) time.Duration {
	b := d.cfg.RetryMinBackoff
	for i := 1; i < n && b < d.cfg.RetryMaxBackoff; i++ {
		b *= 2
	}
	b = min(b, d.cfg.RetryMaxBackoff)
	return b/2 + rand.N(b/2+1)
}

// result is what one POST came to.
type result struct {
	outcome  Outcome
	status   int
	latency  time.Duration
	err      string
	response string
}

func (r result) summary() string {
	if r.err != "" {
		return r.err
	}
	return "HTTP " + strconv.Itoa(r.status)
}

// sender posts deliveries: the client of newClient and the URL rules.
type sender struct {
	client                  *http.Client
	allowHTTP, allowPrivate bool
}

// post sends one delivery.
func (d sender) post(ctx context.Context, url, wid string, secrets []string, body []byte) result {
	ts := time.Now().Unix()
	sig, err := Signature(secrets, wid, ts, body)
	if err != nil {
		return result{outcome: OutcomeRefused, err: err.Error()}
	}
	if err := CheckURL(url, d.allowHTTP, d.allowPrivate); err != nil {
		return result{outcome: OutcomeRefused, err: err.Error()}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return result{outcome: OutcomeRefused, err: "url: " + err.Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "sweeper-webhooks/"+version.Version)
	req.Header.Set(HeaderID, wid)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderSignature, sig)
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		// The delivery's own span, for the receiver to continue.
		telemetry.Propagator.Inject(ctx, propagation.HeaderCarrier(req.Header))
	}
	start := time.Now()
	resp, err := d.client.Do(req)
	res := result{latency: time.Since(start)}
	if err != nil {
		res.outcome = OutcomeFailed
		var ae *AddressError
		if errors.As(err, &ae) {
			res.outcome = OutcomeRefused
			res.err = ae.Error()
		} else {
			res.err = truncate(err.Error(), ResponseKeepBytes)
		}
		return res
	}
	defer resp.Body.Close()
	kept, _ := io.ReadAll(io.LimitReader(resp.Body, ResponseKeepBytes))
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10) // let the connection be reused
	res.latency = time.Since(start)
	res.status = resp.StatusCode
	res.response = truncate(string(kept), ResponseKeepBytes)
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		res.outcome = OutcomeDelivered
	case resp.StatusCode == http.StatusGone:
		res.outcome = OutcomeGone
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		res.outcome = OutcomeFailed
		res.err = fmt.Sprintf("HTTP %d: %s (Location %q)", resp.StatusCode, errRedirect, truncate(resp.Header.Get("Location"), 200))
	default:
		res.outcome = OutcomeFailed
		res.err = "HTTP " + strconv.Itoa(resp.StatusCode)
	}
	return res
}

// truncate makes s valid UTF-8 without NUL and cuts it to at most n bytes
// on a rune boundary.
func truncate(s string, n int) string {
	s = strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "\uFFFD")
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
