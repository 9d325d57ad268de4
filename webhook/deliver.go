package webhook

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
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
	"go.opentelemetry.io/otel/codes"
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
	// RetryMinBackoff and RetryMaxBackoff bound the wait before the next
	// attempt: RetryMinBackoff doubled after each failure, at most
	// RetryMaxBackoff, then drawn uniformly from its upper half (jitter).
	RetryMinBackoff, RetryMaxBackoff time.Duration
	// LeaseTTL is how long a replica's lease on a subscription lasts
	// without renewal: a replica that dies is replaced within LeaseTTL +
	// PollInterval. Renewed every PollInterval and after each delivery; it
	// must be longer than Timeout + PollInterval.
	LeaseTTL time.Duration
	// PollInterval is how often leases are renewed and free subscriptions
	// taken, and the longest a subscription waits to see a new event when
	// no notification wakes it.
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
	OutcomeDelivered Outcome = "delivered" // 2xx: the cursor moved past the event
	OutcomeFailed    Outcome = "failed"    // any other status, a timeout, a network error: retried
	OutcomeGone      Outcome = "gone"      // 410: the subscription is disabled
	OutcomeRefused   Outcome = "refused"   // the URL or address was refused: retried (the name may move)
)

// AttemptDone is the test signal of one attempt.
type AttemptDone struct {
	Subscription string
	EventID      int64
	Outcome      Outcome
	State        State
}

// TestSignals are the Deliverer's test signals.
type TestSignals struct {
	// Attempt receives every attempt once logged.
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
	send    sender
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
	return &Deliverer{
		cfg: cfg, log: log, ledger: ledger.New(cfg.Pool), metrics: m, waiter: w,
		send: sender{client: newClient(cfg.Timeout, cfg.AllowPrivateNetworks, cfg.Resolver),
			allowHTTP: cfg.AllowHTTP, allowPrivate: cfg.AllowPrivateNetworks},
	}, nil
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

// Stop ends deliveries (one in flight is cut off: it is delivered again,
// with the same webhook-id, by whoever holds the lease next), releases the
// leases and waits for the work to end.
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

// work delivers one subscription until ctx ends or the lease is lost.
func (d *Deliverer) work(ctx context.Context, id string) {
	log := d.log.With(zap.String("subscription", id))
	for ctx.Err() == nil {
		changed := d.waiter.Changed()
		err := d.step(ctx, id, log, changed)
		if errors.Is(err, errLeaseLost) {
			return
		}
		if err != nil && ctx.Err() == nil {
			log.Warn("webhook delivery loop", zap.Error(err))
			sleep(ctx, d.cfg.PollInterval)
		}
	}
}

// step reads one page of the subscription's feed and delivers it, or
// waits for the next attempt or event.
func (d *Deliverer) step(ctx context.Context, id string, log *zap.Logger, changed <-chan struct{}) error {
	sub, err := d.load(ctx, id)
	if err != nil {
		return err
	}
	if sub.WaitSeconds > 0 {
		sleep(ctx, min(time.Duration(sub.WaitSeconds*float64(time.Second)), d.cfg.PollInterval))
		return nil
	}
	page, err := d.ledger.Feed(ctx, ledger.FeedFilter{
		After: sub.Cursor, AfterTx: sub.CursorTx, CallerID: sub.CallerID, CalleeID: sub.CalleeID, Limit: PageSize,
	})
	if err != nil {
		return err
	}
	if len(page.Events) == 0 {
		wait := d.cfg.PollInterval
		if page.Pending {
			wait = ledger.FeedSettleRetry
		}
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-changed:
		case <-t.C:
		}
		return nil
	}
	// The secrets are read after the page, not with the subscription: every
	// event that committed after a rotation committed is then signed with the
	// new secret too, so a receiver may switch to it at once.
	var secret, previous string
	if err := d.cfg.Pool.QueryRow(ctx, signingSecretsSQL, sub.ID).Scan(&secret, &previous); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return errLeaseLost // deleted meanwhile
		}
		return fmt.Errorf("reading the signing secrets: %w", err)
	}
	secrets := []string{secret}
	if previous != "" {
		secrets = append(secrets, previous)
	}
	for i, ev := range page.Events {
		if !sub.Matches(ev) {
			continue
		}
		tx := ""
		if i == len(page.Events)-1 {
			tx = page.LastTx
		}
		// A 2xx moves the cursor past ev (in deliver, with the attempt's
		// log line, in one transaction).
		out, err := d.deliver(ctx, &sub, secrets, ev, tx, log)
		if err != nil {
			return err
		}
		if out != OutcomeDelivered {
			return nil // the retry is scheduled; read the subscription again
		}
	}
	// Past the page, including the events that did not match.
	return d.advance(ctx, &sub, page.Events[len(page.Events)-1].ID, page.LastTx)
}

// advance moves the cursor past events that do not match, to event id of
// transaction tx.
func (d *Deliverer) advance(ctx context.Context, sub *leased, id int64, tx string) error {
	if id == sub.Cursor {
		return nil
	}
	if err := d.cfg.Pool.QueryRow(ctx, advanceCursorSQL, sub.ID, d.cfg.Owner, id, tx, false, d.cfg.LeaseTTL).Scan(&sub.CursorTx); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return errLeaseLost
		}
		return err
	}
	sub.Cursor = id
	return nil
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

func (d *Deliverer) payload(ctx context.Context, ev ledger.Event) ([]byte, error) {
	var p Payload
	p.Type = "delegation." + string(ev.ToStatus)
	p.Timestamp = ev.At.UTC()
	p.Data.Event = ev
	del, err := d.ledger.Get(ctx, ev.DelegationID)
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		p.Data.Delegation = nil // pruned since: the event alone
	case err != nil:
		return nil, err
	case d.cfg.Render != nil:
		p.Data.Delegation = d.cfg.Render(del)
	default:
		p.Data.Delegation = del
	}
	return json.Marshal(p)
}

// deliver makes one attempt at ev and records it; a non-2xx schedules the
// retry (or pauses, or disables) before it returns.
func (d *Deliverer) deliver(ctx context.Context, sub *leased, secrets []string, ev ledger.Event, tx string, log *zap.Logger) (Outcome, error) {
	body, err := d.payload(ctx, ev)
	if err != nil {
		return "", err
	}
	wid := WebhookID(ev.ID)
	ctx, span := d.startSpan(ctx, sub, ev)
	defer span.End()
	res := d.send.post(ctx, sub.URL, wid, secrets, body)
	span.SetAttributes(attribute.String("webhook.outcome", string(res.outcome)))
	if res.status != 0 {
		span.SetAttributes(attribute.Int("http.response.status_code", res.status))
	}
	if res.outcome != OutcomeDelivered {
		span.SetStatus(codes.Error, truncate(res.summary(), 200))
	}
	if ctx.Err() != nil {
		return "", ctx.Err() // stopping: not the endpoint's failure
	}
	d.metrics.observe(sub.ID, res)
	var code any
	if res.status != 0 {
		code = res.status
	}
	if res.outcome == OutcomeDelivered {
		// The attempt's log line and the cursor's move, in one round trip
		// and one (implicit) transaction: one commit per delivery.
		b := &pgx.Batch{}
		b.Queue(insertAttemptSQL, sub.ID, ev.ID, wid, code, res.latency.Milliseconds(), string(res.outcome), res.err, res.response)
		b.Queue(advanceCursorSQL, sub.ID, d.cfg.Owner, ev.ID, tx, true, d.cfg.LeaseTTL)
		br := d.cfg.Pool.SendBatch(ctx, b)
		_, err := br.Exec()
		if err == nil {
			err = br.QueryRow().Scan(&sub.CursorTx)
		}
		if closeErr := br.Close(); err == nil {
			err = closeErr
		}
		if errors.Is(err, pgx.ErrNoRows) {
			return "", errLeaseLost
		}
		if err != nil {
			return "", err
		}
		sub.Cursor = ev.ID
	} else if _, err := d.cfg.Pool.Exec(ctx, insertAttemptSQL, sub.ID, ev.ID, wid, code, res.latency.Milliseconds(),
		string(res.outcome), res.err, res.response); err != nil {
		return "", err
	}
	if rand.N(100) == 0 { // now and then, not on every delivery
		if _, err := d.cfg.Pool.Exec(ctx, trimAttemptsSQL, sub.ID, AttemptsKept); err != nil {
			return "", err
		}
	}
	state := Active
	switch res.outcome {
	case OutcomeDelivered:
	case OutcomeGone:
		state = Disabled
		if _, err := d.cfg.Pool.Exec(ctx, disableSQL, sub.ID, d.cfg.Owner, "the endpoint answered 410 Gone"); err != nil {
			return "", err
		}
		log.Warn("webhook subscription disabled: the endpoint answered 410 Gone", zap.Int64("event_id", ev.ID))
	default:
		backoff := d.backoff(sub.FailedAttempts + 1)
		reason := fmt.Sprintf("paused after failing for %s (webhooks.max_retry_age); last error: %s", d.cfg.MaxRetryAge, res.summary())
		var st string
		var n int
		if err := d.cfg.Pool.QueryRow(ctx, failedAttemptSQL, sub.ID, d.cfg.Owner, backoff, d.cfg.MaxRetryAge, truncate(reason, 1024)).Scan(&st, &n); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return "", errLeaseLost
			}
			return "", err
		}
		state = State(st)
		if state == Paused {
			log.Warn("webhook subscription paused: its head event kept failing for webhooks.max_retry_age",
				zap.Int64("event_id", ev.ID), zap.Int("failed_attempts", n), zap.String("last_error", res.summary()))
		} else {
			log.Info("webhook delivery failed; retrying", zap.Int64("event_id", ev.ID), zap.Int("failed_attempts", n),
				zap.Duration("retry_in", backoff), zap.String("error", res.summary()))
		}
	}
	d.TestSignals.Attempt.Signal(AttemptDone{Subscription: sub.ID, EventID: ev.ID, Outcome: res.outcome, State: state})
	return res.outcome, nil
}

// startSpan starts the span of one delivery: a child of the span that
// inserted the delegation (its stored traceparent), so the caller's trace
// shows what became of its delegation. Without Config.Tracing the span is
// a no-op and no query is made.
func (d *Deliverer) startSpan(ctx context.Context, sub *leased, ev ledger.Event) (context.Context, trace.Span) {
	if !d.cfg.Tracing {
		return ctx, trace.SpanFromContext(context.Background())
	}
	parent := ctx
	var tp string
	if err := d.cfg.Pool.QueryRow(ctx, traceParentSQL, ev.DelegationID).Scan(&tp); err == nil && tp != "" {
		parent = telemetry.ContextFromTraceParent(ctx, tp)
	}
	return telemetry.Tracer().Start(parent, "webhook delivery "+string(ev.ToStatus), trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("webhook.subscription", sub.ID), attribute.String("webhook.id", WebhookID(ev.ID)),
			attribute.String("webhook.type", "delegation."+string(ev.ToStatus)), attribute.String("delegation.id", ev.DelegationID),
			attribute.Int64("webhook.event_id", ev.ID), attribute.String("http.request.method", http.MethodPost)))
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
