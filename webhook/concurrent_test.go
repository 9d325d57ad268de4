package webhook_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/webhook"
)

// hookEvent is what the concurrency tests' receiver reads of a delivery.
type hookEvent struct {
	WebhookID    string
	EventID      int64
	DelegationID string
	Status       ledger.Status
}

// key names the event by its delegation and status.
func (e hookEvent) key() string { return e.DelegationID + ":" + string(e.Status) }

// concurrentReceiver is the endpoint of the concurrency tests. For each
// delivery it calls arrive under its lock (a non-empty answer is a broken
// rule, kept in violations), then answer outside it (which may block or
// sleep), and notes a 2xx before the answer leaves, so that arrive sees
// every 2xx the deliverer may have seen. It counts the deliveries in
// flight at once.
type concurrentReceiver struct {
	*httptest.Server
	arrive func(e hookEvent, answered map[string]bool) string
	answer func(e hookEvent) int

	mu          sync.Mutex
	answered    map[string]bool // key() of the events answered 2xx
	delivered   map[int64]int   // 2xx by event id
	arrivals    []hookEvent
	inFlight    int
	maxInFlight int
	violations  []string
}

func newConcurrentReceiver(t *testing.T, arrive func(hookEvent, map[string]bool) string, answer func(hookEvent) int) *concurrentReceiver {
	t.Helper()
	r := &concurrentReceiver{arrive: arrive, answer: answer, answered: map[string]bool{}, delivered: map[int64]int{}}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		var p webhook.Payload
		if err := json.Unmarshal(body, &p); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		e := hookEvent{WebhookID: req.Header.Get("webhook-id"), EventID: p.Data.Event.ID,
			DelegationID: p.Data.Event.DelegationID, Status: p.Data.Event.ToStatus}
		r.mu.Lock()
		r.arrivals = append(r.arrivals, e)
		r.inFlight++
		r.maxInFlight = max(r.maxInFlight, r.inFlight)
		if r.arrive != nil {
			if v := r.arrive(e, r.answered); v != "" {
				r.violations = append(r.violations, v)
			}
		}
		r.mu.Unlock()
		status := http.StatusOK
		if r.answer != nil {
			status = r.answer(e)
		}
		r.mu.Lock()
		r.inFlight--
		if status < 300 {
			r.answered[e.key()] = true
			r.delivered[e.EventID]++
		}
		r.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(r.Close)
	return r
}

// deliveredAll reports whether every event of ids was answered 2xx.
func (r *concurrentReceiver) deliveredAll(ids []int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if r.delivered[id] == 0 {
			return false
		}
	}
	return true
}

// bulkLifecycle records n delegations prefix-0.. in one transaction, then
// moves them all to in_progress in a second and to completed in a third:
// each delegation's three events lie far apart in the feed, among the
// others'. It returns the ids of the events in feed order.
func bulkLifecycle(t *testing.T, db *testdb.DB, prefix string, n int) []int64 {
	t.Helper()
	ctx := context.Background()
	if _, err := db.Pool.Exec(ctx, `INSERT INTO delegations (delegation_id, caller_id, callee_id)
		SELECT $1 || '-' || g, 'c', 'w' FROM generate_series(0, $2::int - 1) AS g`, prefix, n); err != nil {
		t.Fatal(err)
	}
	for _, st := range []string{"in_progress", "completed"} {
		if _, err := db.Pool.Exec(ctx, `UPDATE delegations SET status = $1 WHERE delegation_id LIKE $2 || '-%'`, st, prefix); err != nil {
			t.Fatal(err)
		}
	}
	return feedIDs(t, db, prefix)
}

// feedIDs are the ids of the events of delegations prefix-*, in feed
// order, once the feed has settled.
func feedIDs(t *testing.T, db *testdb.DB, prefix string) []int64 {
	t.Helper()
	l := ledger.New(db.Pool)
	var ids []int64
	for deadline := time.Now().Add(10 * time.Second); ; {
		ids = ids[:0]
		pending := false
		for after := int64(0); ; {
			page, err := l.Feed(context.Background(), ledger.FeedFilter{After: after, CallerID: "c", Limit: ledger.MaxFeedLimit})
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range page.Events {
				if len(ev.DelegationID) > len(prefix) && ev.DelegationID[:len(prefix)+1] == prefix+"-" {
					ids = append(ids, ev.ID)
				}
			}
			pending = pending || page.Pending
			if len(page.Events) == 0 {
				break
			}
			after = page.Events[len(page.Events)-1].ID
		}
		if !pending {
			return ids
		}
		if time.Now().After(deadline) {
			t.Fatal("the feed did not settle within 10s")
		}
		time.Sleep(ledger.FeedSettleRetry)
	}
}

// previous is the event of the same delegation that must be delivered
// before e: queued, then in_progress, then completed.
func previous(e hookEvent) string {
	switch e.Status {
	case ledger.StatusInProgress:
		return e.DelegationID + ":" + string(ledger.StatusQueued)
	case ledger.StatusCompleted:
		return e.DelegationID + ":" + string(ledger.StatusInProgress)
	}
	return ""
}

// Deliveries of one subscription go in parallel, at most MaxInFlight at
// once, but each delegation's events strictly one after the other: no
// event is sent before the previous one of its delegation was answered
// 2xx, while the receiver answers after random delays and fails some
// deliveries at random (retried, some events after them sent again).
// Every event is delivered and the cursor ends on the last one.
func TestConcurrentDeliveriesKeepEachDelegationsOrder(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	store := webhook.NewStore(db.Pool)
	rcv := newConcurrentReceiver(t, func(e hookEvent, answered map[string]bool) string {
		if p := previous(e); p != "" && !answered[p] {
			return fmt.Sprintf("%s (%s) arrived before %s was delivered", e.key(), e.WebhookID, p)
		}
		return ""
	}, func(hookEvent) int {
		if rand.N(3) == 0 {
			time.Sleep(rand.N(5 * time.Millisecond))
		}
		if rand.N(25) == 0 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	sub, err := store.Create(context.Background(), webhook.NewSubscription{URL: rcv.URL, AllowHTTP: true, AllowPrivate: true})
	if err != nil {
		t.Fatal(err)
	}
	// The backlog is in the feed before the deliverer starts: it reads it
	// in full pages.
	ids := bulkLifecycle(t, db, "d", 60)
	if len(ids) != 180 {
		t.Fatalf("%d events, want 180", len(ids))
	}
	cfg := fast(db)
	cfg.MaxInFlight = 8
	start(t, cfg)
	testdbEventually(t, func() bool { return rcv.deliveredAll(ids) })
	testdbEventually(t, func() bool {
		s, err := store.Get(context.Background(), sub.ID)
		return err == nil && s.Cursor == ids[len(ids)-1]
	})
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	for _, v := range rcv.violations {
		t.Error(v)
	}
	if rcv.maxInFlight < 2 || rcv.maxInFlight > cfg.MaxInFlight {
		t.Errorf("at most %d deliveries in flight at once, want 2 to %d", rcv.maxInFlight, cfg.MaxInFlight)
	}
	t.Logf("%d requests for %d events, at most %d in flight", len(rcv.arrivals), len(ids), rcv.maxInFlight)
}

// A failure in the middle of a page: the events before it are all
// delivered and the cursor stops just before the failed event (with the
// failure on record), events after it that were already delivered come
// again with the same webhook-id once it passes, its retry goes alone,
// and in the end every event is delivered and the cursor is on the last.
func TestFailureMidPageHoldsTheCursorBeforeIt(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	store := webhook.NewStore(db.Pool)
	const failing = "f-5" // the sixth event of the page
	laterDelivered := make(chan struct{})
	var laterOnce sync.Once
	retrying, release := make(chan struct{}), make(chan struct{})
	var released sync.Once
	var mu sync.Mutex
	attemptsOfFailing := 0
	probing := false // the failing event's retry is in flight
	var probeViolations []string
	rcv := newConcurrentReceiver(t, func(e hookEvent, _ map[string]bool) string {
		if probing {
			probeViolations = append(probeViolations, e.key())
		}
		if e.DelegationID == failing && attemptsOfFailing == 1 {
			probing = true
		}
		return ""
	}, func(e hookEvent) int {
		if e.DelegationID != failing {
			var n int
			if _, err := fmt.Sscanf(e.DelegationID, "f-%d", &n); err == nil && n > 5 {
				laterOnce.Do(func() { close(laterDelivered) })
			}
			return http.StatusOK
		}
		mu.Lock()
		attemptsOfFailing++
		n := attemptsOfFailing
		mu.Unlock()
		switch n {
		case 1: // fails once an event after it was delivered
			select {
			case <-laterDelivered:
			case <-time.After(5 * time.Second):
			}
			return http.StatusInternalServerError
		case 2: // the retry: held until the test has looked at the cursor
			close(retrying)
			<-release
			mu.Lock()
			probing = false // answered: the 2xx leaves now
			mu.Unlock()
		}
		return http.StatusOK
	})
	t.Cleanup(func() { released.Do(func() { close(release) }) }) // before the receiver closes: cleanups run last first
	// The arrive hook reads attemptsOfFailing under the receiver's lock,
	// answer writes it under mu: make arrive read it under mu as well.
	arrive := rcv.arrive
	rcv.arrive = func(e hookEvent, answered map[string]bool) string {
		mu.Lock()
		defer mu.Unlock()
		return arrive(e, answered)
	}
	sub, err := store.Create(context.Background(), webhook.NewSubscription{URL: rcv.URL, AllowHTTP: true, AllowPrivate: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(context.Background(), `INSERT INTO delegations (delegation_id, caller_id, callee_id)
		SELECT 'f-' || g, 'c', 'w' FROM generate_series(0, 49) AS g`); err != nil {
		t.Fatal(err)
	}
	ids := feedIDs(t, db, "f")
	if len(ids) != 50 {
		t.Fatalf("%d events, want 50", len(ids))
	}
	cfg := fast(db)
	cfg.Timeout = 10 * time.Second
	cfg.LeaseTTL = 11 * time.Second
	d := start(t, cfg)
	for a := d.TestSignals.Attempt.Wait(); a.Outcome != webhook.OutcomeFailed; a = d.TestSignals.Attempt.Wait() {
	}
	select {
	case <-retrying:
	case <-time.After(30 * time.Second):
		t.Fatal("no retry of the failed event")
	}
	s, err := store.Get(context.Background(), sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	if s.Cursor != ids[4] || s.FailedAttempts != 1 || s.State != webhook.Active {
		t.Fatalf("while the failed event is retried: cursor %d (want %d, the event before it), %d failed attempts, %s",
			s.Cursor, ids[4], s.FailedAttempts, s.State)
	}
	rcv.mu.Lock()
	for _, id := range ids[:5] {
		if rcv.delivered[id] != 1 {
			t.Errorf("event %d before the failure delivered %d times, want once", id, rcv.delivered[id])
		}
	}
	var ahead []int64 // delivered past the failed event before its retry
	for _, id := range ids[6:] {
		if rcv.delivered[id] > 0 {
			ahead = append(ahead, id)
		}
	}
	rcv.mu.Unlock()
	if len(ahead) == 0 {
		t.Fatal("no event after the failed one was delivered before it failed")
	}
	released.Do(func() { close(release) })
	testdbEventually(t, func() bool { return rcv.deliveredAll(ids) })
	testdbEventually(t, func() bool {
		s, err := store.Get(context.Background(), sub.ID)
		return err == nil && s.Cursor == ids[len(ids)-1] && s.FailedAttempts == 0
	})
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	mu.Lock()
	defer mu.Unlock()
	if len(probeViolations) > 0 {
		t.Errorf("sent while the failed event's retry was in flight: %v", probeViolations)
	}
	for _, id := range ahead {
		if rcv.delivered[id] < 2 {
			t.Errorf("event %d, delivered ahead of the cursor, came %d times, want again once the cursor reached it", id, rcv.delivered[id])
		}
	}
	for _, a := range rcv.arrivals {
		if a.WebhookID != webhook.WebhookID(a.EventID) {
			t.Errorf("event %d came with webhook-id %s", a.EventID, a.WebhookID)
		}
	}
}

// A page whose deliveries take long records its delivered prefix every
// PollInterval: while one delivery hangs, the cursor moves up to the event
// before it.
func TestSlowPageRecordsItsDeliveredPrefix(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	store := webhook.NewStore(db.Pool)
	release := make(chan struct{})
	var released sync.Once
	rcv := newConcurrentReceiver(t, nil, func(e hookEvent) int {
		if e.DelegationID == "s-9" {
			<-release
		}
		return http.StatusOK
	})
	t.Cleanup(func() { released.Do(func() { close(release) }) }) // before the receiver closes
	sub, err := store.Create(context.Background(), webhook.NewSubscription{URL: rcv.URL, AllowHTTP: true, AllowPrivate: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(context.Background(), `INSERT INTO delegations (delegation_id, caller_id, callee_id)
		SELECT 's-' || g, 'c', 'w' FROM generate_series(0, 19) AS g`); err != nil {
		t.Fatal(err)
	}
	ids := feedIDs(t, db, "s")
	began := time.Now()
	cfg := fast(db)
	cfg.Timeout = 10 * time.Second
	cfg.LeaseTTL = 11 * time.Second
	start(t, cfg)
	testdbEventually(t, func() bool {
		s, err := store.Get(context.Background(), sub.ID)
		return err == nil && s.Cursor == ids[8]
	})
	as, err := store.Attempts(context.Background(), sub.ID, 100)
	if err != nil || len(as) < 9 {
		t.Fatalf("%d attempts logged while s-9 hangs, want at least the 9 before it: %v", len(as), err)
	}
	for _, a := range as { // when each was answered, by the database clock (the same machine's)
		if a.At.Before(began.Add(-time.Second)) || a.At.After(time.Now().Add(time.Second)) {
			t.Fatalf("attempt at %s, the test ran from %s", a.At, began)
		}
	}
	released.Do(func() { close(release) })
	testdbEventually(t, func() bool {
		s, err := store.Get(context.Background(), sub.ID)
		return err == nil && s.Cursor == ids[len(ids)-1]
	})
	if !rcv.deliveredAll(ids) {
		t.Fatal("not every event delivered")
	}
}

// MaxInFlight is 1 to PageSize, MaxInFlightDefault when 0.
func TestMaxInFlightBounds(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	for _, n := range []int{-1, webhook.PageSize + 1} {
		cfg := fast(db)
		cfg.MaxInFlight = n
		if _, err := webhook.New(cfg); err == nil || !strings.Contains(err.Error(), "MaxInFlight") {
			t.Errorf("MaxInFlight %d: %v", n, err)
		}
	}
	for _, n := range []int{0, 1, webhook.PageSize} {
		cfg := fast(db)
		cfg.MaxInFlight = n
		if _, err := webhook.New(cfg); err != nil {
			t.Errorf("MaxInFlight %d: %v", n, err)
		}
	}
}
