package webhook_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/webhook"
)

// delivery is one request a receiver got.
type delivery struct {
	header http.Header
	body   []byte
	status int
}

// recorder is an HTTP endpoint that records every delivery and answers
// with what respond says (200 when nil).
type recorder struct {
	*httptest.Server
	mu      sync.Mutex
	got     []delivery
	respond func(n int, d delivery) int
}

func newReceiver(t *testing.T, respond func(n int, d delivery) int) *recorder {
	t.Helper()
	r := &recorder{respond: respond}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		d := delivery{header: req.Header.Clone(), body: body, status: 200}
		r.mu.Lock()
		if r.respond != nil {
			d.status = r.respond(len(r.got), d)
		}
		r.got = append(r.got, d)
		r.mu.Unlock()
		w.WriteHeader(d.status)
		_, _ = w.Write([]byte(strings.Repeat("r", 3000))) // more than is kept
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *recorder) deliveries() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// fast is a Config for tests: short backoffs and leases, loopback allowed.
func fast(db *testdb.DB) webhook.Config {
	return webhook.Config{
		Pool: db.Pool, AllowHTTP: true, AllowPrivateNetworks: true,
		Timeout: 2 * time.Second, PollInterval: 50 * time.Millisecond, LeaseTTL: 3 * time.Second,
		RetryMinBackoff: 10 * time.Millisecond, RetryMaxBackoff: 40 * time.Millisecond,
	}
}

func start(t *testing.T, cfg webhook.Config) *webhook.Deliverer {
	t.Helper()
	d, err := webhook.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d.TestSignals.Init(t)
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	return d
}

// lifecycle records n delegations, each inserted, started and completed
// (three events each), and returns the ids of their events in feed order.
func lifecycle(t *testing.T, l *ledger.Ledger, prefix, caller string, n int) {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		id := fmt.Sprintf("%s-%d", prefix, i)
		if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: id, CallerID: caller, CalleeID: "worker"}); err != nil {
			t.Fatal(err)
		}
		for _, st := range []ledger.Status{ledger.StatusInProgress, ledger.StatusCompleted} {
			if _, err := l.SetStatus(ctx, id, st, ledger.Change{}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// waitDelivered waits for attempts until the subscription has delivered
// want events, failing on an outcome not in allowed.
func waitDelivered(t *testing.T, d *webhook.Deliverer, want int, allowed ...webhook.Outcome) []webhook.AttemptDone {
	t.Helper()
	var all []webhook.AttemptDone
	for n := 0; n < want; {
		a := d.TestSignals.Attempt.Wait()
		all = append(all, a)
		switch {
		case a.Outcome == webhook.OutcomeDelivered:
			n++
		case !slices.Contains(allowed, a.Outcome):
			t.Fatalf("attempt %+v", a)
		}
	}
	return all
}

// Every event after the subscription's creation is delivered, signed with
// its secret, in feed order (one delivery in flight at a time: with more,
// only each delegation's events keep their order, see
// TestConcurrentDeliveriesKeepEachDelegationsOrder); a failing event is
// retried with the same webhook-id until a 2xx, and no later event
// overtakes it; the cursor ends on the last event and the attempts log
// keeps 1 KiB of each response.
func TestDeliversEveryEventInOrderAtLeastOnce(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	l := ledger.New(db.Pool)
	lifecycle(t, l, "before", "c1", 2) // before the subscription: not delivered
	store := webhook.NewStore(db.Pool)
	failing := map[int]bool{1: true, 2: true, 7: true}
	rcv := newReceiver(t, func(n int, _ delivery) int {
		if failing[n] {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	sub, err := store.Create(context.Background(), webhook.NewSubscription{URL: rcv.URL + "/hook", AllowHTTP: true, AllowPrivate: true})
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.DebugLevel)
	cfg := fast(db)
	cfg.MaxInFlight = 1
	cfg.Logger = zap.New(core)
	if testing.Verbose() {
		cfg.Logger = zap.New(zapcore.NewTee(core, zaptest.NewLogger(t).Core()))
	}
	d := start(t, cfg)
	lifecycle(t, l, "d", "c1", 5)
	waitDelivered(t, d, 15, webhook.OutcomeFailed)

	got := rcv.deliveries()
	if len(got) != 18 {
		for _, g := range got {
			t.Log(g.header.Get("webhook-id"), g.status)
		}
		t.Fatalf("%d requests, want 15 deliveries and 3 failures", len(got))
	}
	var ids []string
	var order []string
	for i, g := range got {
		if err := webhook.Verify(sub.Secret, g.header, g.body, time.Now(), 0); err != nil {
			t.Fatalf("delivery %d: %v", i, err)
		}
		var p webhook.Payload
		var raw struct {
			Data struct {
				Delegation ledger.Delegation `json:"delegation"`
			} `json:"data"`
		}
		if err := json.Unmarshal(g.body, &p); err != nil || json.Unmarshal(g.body, &raw) != nil {
			t.Fatal(err)
		}
		if p.Type != "delegation."+string(p.Data.Event.ToStatus) || raw.Data.Delegation.DelegationID != p.Data.Event.DelegationID ||
			g.header.Get("webhook-id") != webhook.WebhookID(p.Data.Event.ID) {
			t.Fatalf("delivery %d: %s %+v", i, g.body, g.header)
		}
		if g.status < 300 {
			ids = append(ids, g.header.Get("webhook-id"))
			order = append(order, p.Data.Event.DelegationID+":"+string(p.Data.Event.ToStatus))
		} else if i+1 < len(got) && got[i+1].header.Get("webhook-id") != g.header.Get("webhook-id") {
			t.Fatalf("after the failure of %s came %s", g.header.Get("webhook-id"), got[i+1].header.Get("webhook-id"))
		}
	}
	// Other tests' transactions on the same server may hold the feed back
	// (Pending): ask until every event is settled.
	var evs ledger.FeedPage
	for deadline := time.Now().Add(10 * time.Second); ; {
		var err error
		if evs, err = l.Feed(context.Background(), ledger.FeedFilter{}); err != nil {
			t.Fatal(err)
		}
		if !evs.Pending {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the feed did not settle within 10s")
		}
		time.Sleep(ledger.FeedSettleRetry)
	}
	var want []string
	for _, ev := range evs.Events[6:] {
		want = append(want, webhook.WebhookID(ev.ID))
	}
	if !slices.Equal(ids, want) {
		t.Fatalf("delivered %v\nwant      %v", ids, want)
	}
	if order[0] != "d-0:queued" || order[1] != "d-0:in_progress" || order[2] != "d-0:completed" {
		t.Fatalf("order %v", order)
	}
	var s webhook.Subscription
	testdbEventually(t, func() bool { // the cursor moves just after the signal
		s, err = store.Get(context.Background(), sub.ID)
		return err == nil && s.Cursor == evs.Events[len(evs.Events)-1].ID
	})
	if s.Cursor != evs.Events[len(evs.Events)-1].ID || s.FailedAttempts != 0 || s.State != webhook.Active || s.LastDeliveryAt == nil {
		t.Fatalf("subscription after: %+v", s)
	}
	as, err := store.Attempts(context.Background(), sub.ID, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(as) != 18 || as[0].Outcome != "delivered" || len(as[0].Response) != webhook.ResponseKeepBytes || *as[0].StatusCode != 200 {
		t.Fatalf("%d attempts, newest %+v", len(as), as[0])
	}
	for _, e := range logs.All() {
		if strings.Contains(fmt.Sprint(e.Message, e.ContextMap()), strings.TrimPrefix(sub.Secret, "whsec_")) {
			t.Fatal("the secret is in the log")
		}
	}
}

// Filters: events, caller and callee; events that do not match are passed
// over (the cursor moves past them) and never sent.
func TestDeliversOnlyMatchingEvents(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	l := ledger.New(db.Pool)
	store := webhook.NewStore(db.Pool)
	rcv := newReceiver(t, nil)
	sub, err := store.Create(context.Background(), webhook.NewSubscription{URL: rcv.URL, AllowHTTP: true, AllowPrivate: true,
		Events: []ledger.Status{ledger.StatusCompleted}, CallerID: "mine"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := fast(db)
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	d := start(t, cfg)
	lifecycle(t, l, "other", "theirs", 3)
	lifecycle(t, l, "d", "mine", 2)
	waitDelivered(t, d, 2)
	// The metrics: two deliveries counted and timed, by subscription id
	// (never a URL or a secret); one active subscription.
	if got := deliveredCount(t, reg, sub.ID); got != 2 {
		t.Fatalf("sweeper_webhook_deliveries_total = %v, want 2", got)
	}
	testdbEventually(t, func() bool {
		families, _ := reg.Gather()
		for _, f := range families {
			if f.GetName() == "sweeper_webhook_subscriptions" {
				for _, m := range f.GetMetric() {
					if m.GetLabel()[0].GetValue() == "active" && m.GetGauge().GetValue() == 1 {
						return true
					}
				}
			}
		}
		return false
	})
	families, _ := reg.Gather()
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if strings.Contains(lp.GetValue(), "whsec_") || strings.Contains(lp.GetValue(), "http") {
					t.Fatalf("metric %s carries %q", f.GetName(), lp.GetValue())
				}
			}
		}
	}
	for _, g := range rcv.deliveries() {
		var p webhook.Payload
		_ = json.Unmarshal(g.body, &p)
		if p.Type != "delegation.completed" || p.Data.Event.CallerID != "mine" {
			t.Fatalf("delivered %s", g.body)
		}
		// The body carries the event's delegation as it is now (read for
		// the page at once): its id, caller and terminal status.
		del, _ := p.Data.Delegation.(map[string]any)
		if del["delegation_id"] != p.Data.Event.DelegationID || del["caller_id"] != "mine" || del["status"] != "completed" {
			t.Fatalf("delivered delegation %v for event %+v", p.Data.Delegation, p.Data.Event)
		}
	}
	head, _ := l.FeedHead(context.Background())
	testdbEventually(t, func() bool {
		s, _ := store.Get(context.Background(), sub.ID)
		return s.Cursor == head
	})
}

// testdbEventually polls cond every 20 ms for up to 10 s.
func testdbEventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// 410 Gone disables the subscription at once; failures that last past
// MaxRetryAge pause it; resume delivers the held event first.
func TestGoneDisablesAndMaxRetryAgePauses(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	l := ledger.New(db.Pool)
	store := webhook.NewStore(db.Pool)
	var mu sync.Mutex
	status := http.StatusGone
	rcv := newReceiver(t, func(int, delivery) int { mu.Lock(); defer mu.Unlock(); return status })
	sub, err := store.Create(context.Background(), webhook.NewSubscription{URL: rcv.URL, AllowHTTP: true, AllowPrivate: true})
	if err != nil {
		t.Fatal(err)
	}
	cfg := fast(db)
	cfg.MaxRetryAge = 100 * time.Millisecond
	if testing.Verbose() {
		cfg.Logger = zaptest.NewLogger(t)
	}
	d := start(t, cfg)
	lifecycle(t, l, "d", "c", 1)
	if a := d.TestSignals.Attempt.Wait(); a.Outcome != webhook.OutcomeGone || a.State != webhook.Disabled {
		t.Fatalf("after 410: %+v", a)
	}
	s, _ := store.Get(context.Background(), sub.ID)
	if s.State != webhook.Disabled || !strings.Contains(s.StateReason, "410") {
		t.Fatalf("after 410: %+v", s)
	}
	mu.Lock()
	status = http.StatusInternalServerError
	mu.Unlock()
	if _, err := store.Resume(context.Background(), sub.ID); err != nil {
		t.Fatal(err)
	}
	for {
		a := d.TestSignals.Attempt.Wait()
		if a.Outcome != webhook.OutcomeFailed {
			t.Fatalf("attempt %+v", a)
		}
		if a.State == webhook.Paused {
			break
		}
	}
	s, _ = store.Get(context.Background(), sub.ID)
	if s.State != webhook.Paused || !strings.Contains(s.StateReason, "HTTP 500") || s.FailedAttempts < 2 {
		t.Fatalf("after max retry age: %+v", s)
	}
	mu.Lock()
	status = http.StatusOK
	mu.Unlock()
	if _, err := store.Resume(context.Background(), sub.ID); err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, d, 3)
	first := rcv.deliveries()[0].header.Get("webhook-id")
	if got := rcv.deliveries(); got[len(got)-3].header.Get("webhook-id") != first {
		for _, g := range got {
			t.Log(g.header.Get("webhook-id"), g.status)
		}
		t.Fatal("after resume, the held event was not delivered first")
	}
}

// Two replicas never hold the same subscription; when one stops, the
// other takes its subscriptions over and delivers what remains.
func TestLeasesSplitSubscriptionsBetweenReplicas(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	l := ledger.New(db.Pool)
	store := webhook.NewStore(db.Pool)
	rcv := newReceiver(t, nil)
	var subs []string
	for range 4 {
		s, err := store.Create(context.Background(), webhook.NewSubscription{URL: rcv.URL, AllowHTTP: true, AllowPrivate: true})
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, s.ID)
	}
	ca, cb := fast(db), fast(db)
	ca.Owner, cb.Owner = "replica-a", "replica-b"
	a := start(t, ca)
	b := start(t, cb)
	for range 5 {
		ha, hb := a.TestSignals.Leases.Wait(), b.TestSignals.Leases.Wait()
		for _, id := range ha {
			if slices.Contains(hb, id) {
				t.Fatalf("both replicas hold %s", id)
			}
		}
	}
	lifecycle(t, l, "d", "c", 2)
	testdbEventually(t, func() bool { return len(rcv.deliveries()) >= 4*6 })
	a.Stop()
	lifecycle(t, l, "e", "c", 1)
	for {
		if held := b.TestSignals.Leases.Wait(); len(held) == 4 {
			break
		}
	}
	head, _ := l.FeedHead(context.Background())
	var owners []string
	testdbEventually(t, func() bool {
		list, _ := store.List(context.Background())
		owners = owners[:0]
		for _, s := range list {
			if s.Cursor != head {
				return false
			}
			owners = append(owners, s.LeaseOwner)
		}
		return len(list) == len(subs)
	})
	if n := len(rcv.deliveries()); n < 4*9 {
		t.Fatalf("%d deliveries, want at least %d", n, 4*9)
	}
	if slices.Contains(owners, "replica-a") {
		t.Fatalf("owners %v after replica-a stopped", owners)
	}
}

// The list and every answer but Create's and RotateSecret's carry no
// secret; a rotation signs with both secrets until its end.
func TestStoreNeverListsSecretsAndRotationSignsWithBoth(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	store := webhook.NewStore(db.Pool)
	ctx := context.Background()
	rcv := newReceiver(t, nil)
	created, err := store.Create(ctx, webhook.NewSubscription{URL: rcv.URL, AllowHTTP: true, AllowPrivate: true,
		Events: []ledger.Status{ledger.StatusStuck, ledger.StatusFailed}, CalleeID: "w"})
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := store.RotateSecret(ctx, created.ID)
	if err != nil || rotated.Secret == created.Secret || rotated.RotationEndsAt == nil {
		t.Fatalf("rotate: %+v %v", rotated.Subscription, err)
	}
	list, err := store.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(list)
	for _, s := range []string{created.Secret, rotated.Secret, "whsec_"} {
		if strings.Contains(string(b), s) {
			t.Fatalf("the list shows a secret: %s", b)
		}
	}
	if len(list) != 1 || !slices.Equal(list[0].Events, []ledger.Status{ledger.StatusStuck, ledger.StatusFailed}) || list[0].CalleeID != "w" {
		t.Fatalf("list %s", b)
	}
	d := start(t, fast(db))
	l := ledger.New(db.Pool)
	if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: "x", CallerID: "c", CalleeID: "w"}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.SetStatus(ctx, "x", ledger.StatusFailed, ledger.Change{}); err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, d, 1)
	g := rcv.deliveries()[0]
	for _, secret := range []string{created.Secret, rotated.Secret} {
		if err := webhook.Verify(secret, g.header, g.body, time.Now(), 0); err != nil {
			t.Fatalf("during the rotation: %v", err)
		}
	}
	for _, bad := range []webhook.NewSubscription{
		{URL: "http://example.com/x"},
		{URL: "https://127.0.0.1/x"},
		{URL: "https://example.com/x", Events: []ledger.Status{"exploded"}},
		{URL: "https://example.com/x", Events: []ledger.Status{"stuck", "stuck"}},
		{URL: "https://example.com/x", CallerID: " "},
		{URL: ""},
	} {
		if _, err := store.Create(ctx, bad); err == nil || !strings.Contains(err.Error(), "creating a webhook subscription") {
			t.Errorf("Create(%+v) = %v", bad, err)
		}
	}
	if err := store.Delete(ctx, created.ID); err != nil {
		t.Fatal(err)
	}
	if err := store.Delete(ctx, created.ID); err != webhook.ErrNotFound {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := store.Resume(ctx, "wh_nope"); err != webhook.ErrNotFound {
		t.Fatalf("resume of a bad id: %v", err)
	}
}

// A redirect is not followed (the target never hears of it) and a slow
// endpoint is cut off at Config.Timeout: both are failed attempts, retried,
// with the reason in the attempts log.
func TestNoRedirectsAndATimeoutPerDelivery(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	l := ledger.New(db.Pool)
	store := webhook.NewStore(db.Pool)
	ctx := context.Background()
	target := newReceiver(t, nil)
	release := make(chan struct{})
	var mu sync.Mutex
	mode := "redirect"
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		m := mode
		mu.Unlock()
		if m == "redirect" {
			http.Redirect(w, r, target.URL+"/elsewhere", http.StatusTemporaryRedirect)
			return
		}
		select { // slower than the timeout
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(rcv.Close)
	t.Cleanup(func() { close(release) }) // before rcv.Close, which waits for the handler
	sub, err := store.Create(ctx, webhook.NewSubscription{URL: rcv.URL, AllowHTTP: true, AllowPrivate: true})
	if err != nil {
		t.Fatal(err)
	}
	cfg := fast(db)
	cfg.Timeout = 300 * time.Millisecond
	cfg.RetryMinBackoff, cfg.RetryMaxBackoff = 50*time.Millisecond, 100*time.Millisecond
	d := start(t, cfg)
	if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: "r-1", CallerID: "c", CalleeID: "w"}); err != nil {
		t.Fatal(err)
	}
	if a := d.TestSignals.Attempt.Wait(); a.Outcome != webhook.OutcomeFailed {
		t.Fatalf("redirect: %+v", a)
	}
	mu.Lock()
	mode = "slow"
	mu.Unlock()
	began := time.Now()
	for {
		a := d.TestSignals.Attempt.Wait()
		if a.Outcome != webhook.OutcomeFailed {
			t.Fatalf("slow: %+v", a)
		}
		as, _ := store.Attempts(ctx, sub.ID, 1)
		if e := strings.ToLower(as[0].Error); strings.Contains(e, "timeout") || strings.Contains(e, "deadline exceeded") {
			if as[0].LatencyMS > 2000 {
				t.Fatalf("cut off after %d ms, timeout 300ms", as[0].LatencyMS)
			}
			break
		}
		if time.Since(began) > 30*time.Second {
			t.Fatalf("no timeout logged; last %+v", as[0])
		}
	}
	as, err := store.Attempts(ctx, sub.ID, 50)
	if err != nil {
		t.Fatal(err)
	}
	first := as[len(as)-1]
	if first.StatusCode == nil || *first.StatusCode != http.StatusTemporaryRedirect || !strings.Contains(first.Error, "redirect not followed") {
		t.Fatalf("the redirect's attempt: %+v", first)
	}
	if n := len(target.deliveries()); n != 0 {
		t.Fatalf("the redirect's target got %d requests", n)
	}
}

// deliveredCount is sweeper_webhook_deliveries_total{outcome="delivered"}
// of subscription sub.
func deliveredCount(t *testing.T, reg *prometheus.Registry, sub string) float64 {
	const name = "sweeper_webhook_deliveries_total"
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			if labels["subscription"] == sub && labels["outcome"] == "delivered" {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s for %s", name, sub)
	return 0
}
