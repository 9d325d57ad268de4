package ledger_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/ledger"
)

func feedIDs(evs []ledger.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.DelegationID+":"+string(e.ToStatus))
	}
	return out
}

// readFeed reads the feed from f to its end, waiting (on w, not by polling)
// while events are held back by older transactions: transactions of other
// tests on the same server hold them back too.
func readFeed(t *testing.T, l *ledger.Ledger, w *ledger.Waiter, f ledger.FeedFilter) []ledger.Event {
	t.Helper()
	ctx := context.Background()
	var out []ledger.Event
	for {
		p, err := l.Feed(ctx, f)
		if err == nil && len(p.Events) == 0 && p.Pending {
			p, err = l.FeedWait(ctx, w, f, 30*time.Second)
			if err == nil && len(p.Events) == 0 {
				t.Fatalf("feed %+v still pending after 30s", f)
			}
		}
		if err != nil {
			t.Fatalf("feed %+v: %v", f, err)
		}
		if len(p.Events) == 0 {
			return out
		}
		out = append(out, p.Events...)
		f.After = p.Events[len(p.Events)-1].ID
	}
}

func startWaiter(t *testing.T, pool *pgxpool.Pool) *ledger.Waiter {
	t.Helper()
	w := ledger.NewWaiter(pool)
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	return w
}

func TestFeedFiltersAndCursor(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	w := startWaiter(t, pool)
	ctx := context.Background()
	for _, n := range []ledger.NewDelegation{
		{DelegationID: "a", CallerID: "billing", CalleeID: "agent-1"},
		{DelegationID: "b", CallerID: "search", CalleeID: "agent-2"},
		{DelegationID: "c", CallerID: "billing", CalleeID: "agent-2"},
	} {
		if _, err := l.Insert(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"a", "b"} {
		if _, err := l.SetStatus(ctx, id, ledger.StatusFailed, ledger.Change{Actor: "t"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name string
		f    ledger.FeedFilter
		want []string
	}{
		{"all", ledger.FeedFilter{}, []string{"a:queued", "b:queued", "c:queued", "a:failed", "b:failed"}},
		{"caller", ledger.FeedFilter{CallerID: "billing"}, []string{"a:queued", "c:queued", "a:failed"}},
		{"caller and callee", ledger.FeedFilter{CallerID: "billing", CalleeID: "agent-2"}, []string{"c:queued"}},
		{"callee", ledger.FeedFilter{CalleeID: "agent-2"}, []string{"b:queued", "c:queued", "b:failed"}},
		{"status", ledger.FeedFilter{ToStatus: ledger.StatusFailed}, []string{"a:failed", "b:failed"}},
		{"caller and status", ledger.FeedFilter{CallerID: "search", ToStatus: ledger.StatusFailed}, []string{"b:failed"}},
	} {
		if got := feedIDs(readFeed(t, l, w, c.f)); !slices.Equal(got, c.want) {
			t.Errorf("%s: %v; want %v", c.name, got, c.want)
		}
	}
	// Paging by cursor, one at a time, sees every event once.
	if seen := readFeed(t, l, w, ledger.FeedFilter{Limit: 1}); len(seen) != 5 {
		t.Fatalf("paged feed = %v", feedIDs(seen))
	}
	if e := readFeed(t, l, w, ledger.FeedFilter{})[0]; e.CallerID != "billing" || e.CalleeID != "agent-1" || e.Actor == "" {
		t.Fatalf("event %+v", e)
	}
	for _, bad := range []struct {
		f     ledger.FeedFilter
		field string
	}{
		{ledger.FeedFilter{After: -1}, "after"},
		{ledger.FeedFilter{After: 1 << 40}, "after"},
		{ledger.FeedFilter{Limit: ledger.MaxFeedLimit + 1}, "limit"},
		{ledger.FeedFilter{CallerID: "a\x00"}, "caller_id"},
	} {
		_, err := l.Feed(ctx, bad.f)
		var fe *ledger.FieldError
		if !errors.As(err, &fe) || fe.Field != bad.field {
			t.Errorf("Feed(%+v) = %v, want a %s error", bad.f, err, bad.field)
		}
	}
	if _, err := l.Feed(ctx, ledger.FeedFilter{ToStatus: "done"}); !errors.Is(err, ledger.ErrInvalid) {
		t.Errorf("unknown to_status: %v", err)
	}
}

// A transaction that drew an event id first and commits last: the feed
// holds back everything after it until it ends, so a consumer resuming
// from its cursor loses nothing.
func TestFeedLateCommitIsNotSkipped(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	w := startWaiter(t, pool)
	ctx := context.Background()
	slow, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = slow.Rollback(ctx) }()
	if _, err := l.WithTx(slow).Insert(ctx, ledger.NewDelegation{DelegationID: "slow", CallerID: "c", CalleeID: "w"}); err != nil {
		t.Fatal(err)
	}
	insert(t, l, "fast", "")

	page, err := l.Feed(ctx, ledger.FeedFilter{})
	if err != nil || len(page.Events) != 0 || !page.Pending {
		t.Fatalf("feed while an older transaction runs = %v pending %v, %v", feedIDs(page.Events), page.Pending, err)
	}
	if err := slow.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := feedIDs(readFeed(t, l, w, ledger.FeedFilter{})); !slices.Equal(got, []string{"slow:queued", "fast:queued"}) {
		t.Fatalf("feed after commit = %v", got)
	}
}

func TestFeedWaitWakesOnCommit(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	w := startWaiter(t, pool)
	if err := w.Start(ctx); !errors.Is(err, ledger.ErrWaiterStarted) {
		t.Fatalf("second start: %v", err)
	}
	insert(t, l, "first", "")
	after := readFeed(t, l, w, ledger.FeedFilter{})[0].ID

	got := make(chan ledger.FeedPage, 1)
	errc := make(chan error, 1)
	changed := w.Changed()
	go func() {
		p, err := l.FeedWait(ctx, w, ledger.FeedFilter{After: after, ToStatus: ledger.StatusFailed}, time.Minute)
		got <- p
		errc <- err
	}()
	// An event that does not match wakes the poll, which keeps waiting.
	insert(t, l, "other", "")
	<-changed
	start := time.Now()
	if _, err := l.SetStatus(ctx, "first", ledger.StatusFailed, ledger.Change{Actor: "t"}); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if err := <-errc; err != nil || !slices.Equal(feedIDs(p.Events), []string{"first:failed"}) {
			t.Fatalf("FeedWait = %v, %v", feedIDs(p.Events), err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("FeedWait returned %s after the commit", d)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("FeedWait did not return after a matching commit")
	}
	// With nothing to return, the wait ends empty.
	p, err := l.FeedWait(ctx, w, ledger.FeedFilter{After: after, CallerID: "nobody"}, 50*time.Millisecond)
	if err != nil || len(p.Events) != 0 {
		t.Fatalf("empty wait = %v, %v", p, err)
	}
	w.Stop()
	w.Stop()
}

func TestSummaryAndInFlightList(t *testing.T) {
	t.Parallel()
	l, _ := newLedger(t)
	ctx := context.Background()
	for i, st := range []ledger.Status{ledger.StatusQueued, ledger.StatusInProgress, ledger.StatusInProgress, ledger.StatusCompleted} {
		id := string(rune('a' + i))
		if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: id, CallerID: "billing", CalleeID: "w"}); err != nil {
			t.Fatal(err)
		}
		if st != ledger.StatusQueued {
			if _, err := l.SetStatus(ctx, id, st, ledger.Change{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: "s", CallerID: "search", CalleeID: "w", Status: ledger.StatusDispatched}); err != nil {
		t.Fatal(err)
	}
	sum, err := l.Summary(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if sum.InFlight != 4 || sum.ByStatus[ledger.StatusInProgress] != 2 || sum.ByStatus[ledger.StatusDispatched] != 1 ||
		len(sum.ByCaller) != 2 || sum.ByCaller[0].CallerID != "billing" || sum.ByCaller[0].InFlight != 3 || sum.ByCaller[1].ByStatus[ledger.StatusQueued] != 0 {
		t.Fatalf("summary %+v", sum)
	}
	if _, ok := sum.ByStatus[ledger.StatusCompleted]; ok {
		t.Fatal("summary counts terminal rows")
	}
	one, err := l.Summary(ctx, "search")
	if err != nil || one.InFlight != 1 || len(one.ByCaller) != 1 {
		t.Fatalf("caller summary %+v, %v", one, err)
	}
	page, err := l.List(ctx, ledger.ListFilter{CallerID: "billing", InFlight: true, Limit: 2})
	if err != nil || len(page.Delegations) != 2 || page.Next == "" {
		t.Fatalf("in-flight page %+v, %v", page, err)
	}
	rest, err := l.List(ctx, ledger.ListFilter{CallerID: "billing", InFlight: true, Cursor: page.Next})
	if err != nil || len(rest.Delegations) != 1 || rest.Next != "" {
		t.Fatalf("in-flight rest %+v, %v", rest, err)
	}
	if _, err := l.List(ctx, ledger.ListFilter{InFlight: true}); !errors.Is(err, ledger.ErrInvalid) || !strings.Contains(err.Error(), "in_flight") {
		t.Fatalf("in_flight without caller: %v", err)
	}
}

func TestHeartbeatManyForBeatsOnlyTheCalleesRows(t *testing.T) {
	t.Parallel()
	l, _ := newLedger(t)
	ctx := context.Background()
	for _, n := range []ledger.NewDelegation{
		{DelegationID: "mine", CallerID: "c", CalleeID: "w1", Status: ledger.StatusInProgress},
		{DelegationID: "theirs", CallerID: "c", CalleeID: "w2", Status: ledger.StatusInProgress},
	} {
		if _, err := l.Insert(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := l.Get(ctx, "theirs")
	notLive, err := l.HeartbeatManyFor(ctx, "w1", []string{"mine", "theirs", "missing", "mine"})
	if err != nil || !slices.Equal(notLive, []string{"missing", "theirs"}) {
		t.Fatalf("notLive = %v, %v", notLive, err)
	}
	after, _ := l.Get(ctx, "theirs")
	if !after.LastHeartbeat.Equal(*before.LastHeartbeat) {
		t.Fatal("another callee's row was beaten")
	}
	if _, err := l.HeartbeatManyFor(ctx, "", []string{"mine"}); !errors.Is(err, ledger.ErrInvalid) {
		t.Fatalf("empty callee: %v", err)
	}
}

// Each feed and summary statement reads its own index.
func TestFeedAndSummaryPlansUseTheirIndexes(t *testing.T) {
	t.Parallel()
	_, pool := newLedger(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `
		INSERT INTO delegations (delegation_id, caller_id, callee_id, status)
		SELECT 'd' || i, 'caller' || (i % 50), 'callee' || (i % 70),
		       (ARRAY['queued', 'completed', 'failed', 'stuck'])[1 + i % 4]
		FROM generate_series(1, 20000) AS i;
		ANALYZE delegations; ANALYZE delegation_events`); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ sql, index string }{
		{`SELECT id FROM delegation_events WHERE (tx_id, id) > ('0'::xid8, 19990) ORDER BY tx_id, id LIMIT 100`, "idx_delegation_events_feed"},
		{`SELECT id FROM delegation_events WHERE caller_id = 'caller7' AND (tx_id, id) > ('0'::xid8, 0) ORDER BY caller_id, tx_id, id LIMIT 100`, "idx_delegation_events_caller"},
		{`SELECT id FROM delegation_events WHERE callee_id = 'callee7' AND (tx_id, id) > ('0'::xid8, 0) ORDER BY callee_id, tx_id, id LIMIT 100`, "idx_delegation_events_callee"},
		{`SELECT id FROM delegation_events WHERE to_status = 'queued' AND (tx_id, id) > ('0'::xid8, 0) ORDER BY to_status, tx_id, id LIMIT 100`, "idx_delegation_events_to_status"},
		{`SELECT caller_id, status, count(*) FROM delegations WHERE caller_id = 'caller7' AND status IN ('queued', 'dispatched', 'in_progress') GROUP BY 1, 2`, "idx_delegations_inflight"},
		{`SELECT caller_id, status, count(*) FROM delegations WHERE status IN ('queued', 'dispatched', 'in_progress') GROUP BY 1, 2`, "idx_delegations_inflight"},
	} {
		var plan strings.Builder
		rows, err := pool.Query(ctx, "EXPLAIN "+c.sql)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				t.Fatal(err)
			}
			plan.WriteString(line + "\n")
		}
		if !strings.Contains(plan.String(), c.index) || strings.Contains(plan.String(), "Seq Scan") {
			t.Errorf("%s\nplan does not read %s:\n%s", c.sql, c.index, plan.String())
		}
	}
}

// The waiter's connection is killed: waiting requests are woken (they read
// the feed again), and after it reconnects commits wake them again.
func TestWaiterReconnects(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	w := ledger.NewWaiter(pool)
	lost := make(chan error, 4)
	w.OnError = func(err error) { lost <- err }
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	woken := w.Changed()
	var killed int
	if err := pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND query = 'LISTEN sweeper_events'`).Scan(&killed); err != nil || killed != 1 {
		t.Fatalf("terminated %d listeners, %v", killed, err)
	}
	select {
	case <-woken:
	case <-time.After(30 * time.Second):
		t.Fatal("waiters not woken when the connection was lost")
	}
	select {
	case <-lost:
	case <-time.After(30 * time.Second):
		t.Fatal("OnError not called")
	}
	reconnected := w.Changed() // closed by the wake-up after the reconnect
	select {
	case <-reconnected:
	case <-time.After(30 * time.Second):
		t.Fatal("no reconnect")
	}
	next := w.Changed()
	insert(t, l, "after-reconnect", "")
	select {
	case <-next:
	case <-time.After(30 * time.Second):
		t.Fatal("a commit after the reconnect woke no one")
	}
}

// A cursor kept as (LastTx, id) reads on from where it was when the event
// it names has been deleted by the retention prune (an id-only cursor then
// names no event); the order is the transactions' numeric order across a
// change in their number of digits (an xid8 compared as text is not).
func TestFeedCursorWithTransactionOutlivesItsEvent(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	l := ledger.New(db.Pool)
	ctx := context.Background()
	// Move the transaction counter to just below a power of ten (other
	// tests' transactions move it too: the four inserts most likely cross
	// it).
	var xid int64
	if err := db.Pool.QueryRow(ctx, `SELECT pg_current_xact_id()::text::bigint`).Scan(&xid); err != nil {
		t.Fatal(err)
	}
	target := int64(10)
	for target <= xid+2 {
		target *= 10
	}
	for range target - xid - 2 {
		if _, err := db.Pool.Exec(ctx, `SELECT pg_current_xact_id()`); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"a", "b", "c", "d"} {
		if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: id, CallerID: "c", CalleeID: "w"}); err != nil {
			t.Fatal(err)
		}
	}
	settled := func(f ledger.FeedFilter) (ledger.FeedPage, error) {
		// Other tests' transactions on the server hold events back a moment.
		deadline := time.Now().Add(30 * time.Second)
		for {
			p, err := l.Feed(ctx, f)
			if err != nil || !p.Pending || time.Now().After(deadline) {
				return p, err
			}
			time.Sleep(ledger.FeedSettleRetry)
		}
	}
	first, err := settled(ledger.FeedFilter{Limit: 1})
	if err != nil || len(first.Events) != 1 || first.LastTx == "" {
		t.Fatalf("first page %+v, %v", first, err)
	}
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SET LOCAL session_replication_role = replica`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM delegation_events WHERE id = $1`, first.Events[0].ID); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Feed(ctx, ledger.FeedFilter{After: first.Events[0].ID}); !errors.Is(err, ledger.ErrInvalid) {
		t.Fatalf("id-only cursor of a deleted event: %v", err)
	}
	rest, err := settled(ledger.FeedFilter{After: first.Events[0].ID, AfterTx: first.LastTx})
	if err != nil {
		t.Fatal(err)
	}
	if got := feedIDs(rest.Events); !slices.Equal(got, []string{"b:queued", "c:queued", "d:queued"}) {
		t.Fatalf("after the deleted cursor: %v", got)
	}
	if _, err := l.Feed(ctx, ledger.FeedFilter{AfterTx: "12x"}); !errors.Is(err, ledger.ErrInvalid) {
		t.Fatalf("bad after_tx: %v", err)
	}
}
