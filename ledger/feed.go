package ledger

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Page sizes of Feed.
const (
	DefaultFeedLimit = 100
	MaxFeedLimit     = 1000
)

// FeedFilter selects events for Feed. Empty fields match anything.
type FeedFilter struct {
	// After is the cursor: only events with a larger id are returned. 0
	// starts at the beginning of the log.
	After int64
	// Limit is the page size: DefaultFeedLimit when 0, at most MaxFeedLimit.
	Limit    int
	ToStatus Status
	CallerID string
	CalleeID string
}

func (f *FeedFilter) validate() error {
	if f.After < 0 {
		return &FieldError{Field: "after", Reason: fmt.Sprintf("must be 0 or more, got %d", f.After)}
	}
	switch {
	case f.Limit == 0:
		f.Limit = DefaultFeedLimit
	case f.Limit < 0 || f.Limit > MaxFeedLimit:
		return &FieldError{Field: "limit", Reason: fmt.Sprintf("must be between 1 and %d, got %d", MaxFeedLimit, f.Limit)}
	}
	if f.ToStatus != "" && !f.ToStatus.Valid() {
		return &UnknownStatusError{Value: string(f.ToStatus)}
	}
	for _, v := range []struct{ name, v string }{{"caller_id", f.CallerID}, {"callee_id", f.CalleeID}} {
		if v.v != "" {
			if err := checkID(v.name, v.v); err != nil {
				return err
			}
		}
	}
	return nil
}

// FeedPage is one answer of Feed.
type FeedPage struct {
	// Events are in feed order; the last one's ID is the next cursor.
	Events []Event
	// Pending reports that matching events exist past Events that are not
	// settled yet (an older transaction is still running); asking again
	// shortly returns them.
	Pending bool
}

// Feed returns the events after the cursor f.After that match f: the durable
// feed. A consumer that keeps the id of the last event it processed and asks
// again from it misses nothing and sees nothing twice, across restarts.
//
// Event ids are drawn before commit, so a transaction that commits late can
// add an event with an id below one already read. The feed is therefore in
// (transaction, id) order: ids increase within a transaction and a
// transaction's events come out together, and only once every transaction
// older than it has ended, when no event can appear before them any more.
// A long-running transaction (of any kind, on the same server) delays the
// feed; it never makes it skip.
func (l *Ledger) Feed(ctx context.Context, f FeedFilter) (FeedPage, error) {
	if err := f.validate(); err != nil {
		return FeedPage{}, fmt.Errorf("reading the feed: %w", err)
	}
	tx := "0"
	if f.After > 0 {
		err := l.db.QueryRow(ctx, feedCursorSQL, f.After).Scan(&tx)
		if errors.Is(err, pgx.ErrNoRows) {
			return FeedPage{}, fmt.Errorf("reading the feed: %w", &FieldError{Field: "after",
				Reason: fmt.Sprintf("names no event (%d): use the id of an event the feed returned", f.After)})
		}
		if err != nil {
			return FeedPage{}, wrapDBError("reading the feed cursor", err)
		}
	}
	var rows pgx.Rows
	var err error
	switch {
	case f.CallerID != "":
		rows, err = l.db.Query(ctx, feedByCallerSQL, tx, f.After, f.CallerID, f.ToStatus, f.CalleeID, f.Limit)
	case f.CalleeID != "":
		rows, err = l.db.Query(ctx, feedByCalleeSQL, tx, f.After, f.CalleeID, f.ToStatus, f.Limit)
	case f.ToStatus != "":
		rows, err = l.db.Query(ctx, feedByStatusSQL, tx, f.After, f.ToStatus, f.Limit)
	default:
		rows, err = l.db.Query(ctx, feedAllSQL, tx, f.After, f.Limit)
	}
	if err != nil {
		return FeedPage{}, wrapDBError("reading the feed", err)
	}
	type feedRow struct {
		Event
		Settled bool `db:"settled"`
	}
	frs, err := pgx.CollectRows(rows, pgx.RowToStructByName[feedRow])
	if err != nil {
		return FeedPage{}, wrapDBError("reading the feed", err)
	}
	page := FeedPage{Events: make([]Event, 0, len(frs))}
	for _, r := range frs {
		if !r.Settled {
			page.Pending = true
			break
		}
		page.Events = append(page.Events, r.Event)
	}
	return page, nil
}

// FeedHead returns the id of the newest event, 0 when there is none: the
// cursor of a consumer that wants only what happens from now on.
func (l *Ledger) FeedHead(ctx context.Context) (int64, error) {
	var id int64
	if err := l.db.QueryRow(ctx, feedHeadSQL).Scan(&id); err != nil {
		return 0, wrapDBError("reading the feed head", err)
	}
	return id, nil
}

// FeedSettleRetry is how long FeedWait waits before asking again when
// matching events exist but are not settled yet (FeedPage.Pending).
const FeedSettleRetry = 20 * time.Millisecond

// FeedWait is Feed as a long poll: when nothing matches yet it waits, up to
// wait, for w to report a new event commit and asks again. It returns the
// first non-empty page, or an empty one when wait ends. It does not poll,
// except every FeedSettleRetry while matching events wait for an older
// transaction to end.
func (l *Ledger) FeedWait(ctx context.Context, w *Waiter, f FeedFilter, wait time.Duration) (FeedPage, error) {
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	for {
		// Take the channel before reading: an event committed after the
		// read closes it.
		changed := w.Changed()
		page, err := l.Feed(ctx, f)
		if err != nil || len(page.Events) > 0 || timeout == nil {
			return page, err
		}
		var settle *time.Timer
		var settled <-chan time.Time
		if page.Pending {
			settle = time.NewTimer(FeedSettleRetry)
			settled = settle.C
		}
		select {
		case <-changed:
		case <-settled:
		case <-timeout:
			return page, nil
		case <-ctx.Done():
			return FeedPage{}, ctx.Err()
		}
		if settle != nil {
			settle.Stop()
		}
	}
}

// Summary is what is in flight (queued, dispatched or in_progress), counted
// from the in-flight partial index: its cost follows the work in flight, not
// the ledger's history.
type Summary struct {
	// InFlight is the number of in-flight delegations.
	InFlight int64 `json:"in_flight"`
	// ByStatus counts them by status (every non-terminal status is present).
	ByStatus map[Status]int64 `json:"by_status"`
	// ByCaller counts them per caller, by caller_id.
	ByCaller []CallerSummary `json:"by_caller"`
}

// CallerSummary is one caller's in-flight delegations.
type CallerSummary struct {
	CallerID string           `json:"caller_id"`
	InFlight int64            `json:"in_flight"`
	ByStatus map[Status]int64 `json:"by_status"`
}

// Summary counts the in-flight delegations of callerID, or of every caller
// when it is "".
func (l *Ledger) Summary(ctx context.Context, callerID string) (Summary, error) {
	var rows pgx.Rows
	var err error
	if callerID != "" {
		if err := checkID("caller_id", callerID); err != nil {
			return Summary{}, fmt.Errorf("summarising: %w", err)
		}
		rows, err = l.db.Query(ctx, summaryCallerSQL, callerID)
	} else {
		rows, err = l.db.Query(ctx, summaryAllSQL)
	}
	if err != nil {
		return Summary{}, wrapDBError("summarising", err)
	}
	type count struct {
		caller string
		status Status
		n      int64
	}
	counts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (count, error) {
		var c count
		err := r.Scan(&c.caller, &c.status, &c.n)
		return c, err
	})
	if err != nil {
		return Summary{}, wrapDBError("summarising", err)
	}
	zero := func() map[Status]int64 {
		m := map[Status]int64{}
		for _, s := range NonTerminal() {
			m[s] = 0
		}
		return m
	}
	sum := Summary{ByStatus: zero(), ByCaller: []CallerSummary{}}
	for _, c := range counts {
		if n := len(sum.ByCaller); n == 0 || sum.ByCaller[n-1].CallerID != c.caller {
			sum.ByCaller = append(sum.ByCaller, CallerSummary{CallerID: c.caller, ByStatus: zero()})
		}
		cs := &sum.ByCaller[len(sum.ByCaller)-1]
		cs.ByStatus[c.status] += c.n
		cs.InFlight += c.n
		sum.ByStatus[c.status] += c.n
		sum.InFlight += c.n
	}
	return sum, nil
}

// HeartbeatManyFor is HeartbeatMany limited to the delegations of one
// callee: ids of other callees' rows are reported not live, like missing
// ones, and are not touched. It is what a worker may beat.
func (l *Ledger) HeartbeatManyFor(ctx context.Context, calleeID string, ids []string) (notLive []string, err error) {
	return l.HeartbeatBeatsFor(ctx, calleeID, beatsOf(ids))
}

// EventsChannel is the channel on which the schema notifies, once per
// statement, that events were appended to delegation_events.
const EventsChannel = "sweeper_events"

// Waiter wakes long polls of the feed: one connection LISTENs on
// EventsChannel for every waiting request, and each notification closes the
// channel that Changed returned. When the connection drops, the Waiter wakes
// everyone (they read the feed again, so nothing is missed) and reconnects.
type Waiter struct {
	pool *pgxpool.Pool
	poll time.Duration // > 0: no connection, wake every poll
	// OnError, when set, is told of each lost connection (for logs and
	// metrics); the Waiter reconnects on its own.
	OnError func(error)

	mu      sync.Mutex
	changed chan struct{}
	cancel  context.CancelFunc
	done    chan struct{}
}

// NewWaiter returns a Waiter that takes its connection from pool (and gives
// the pool room for another: the connection leaves the pool for good).
func NewWaiter(pool *pgxpool.Pool) *Waiter {
	return &Waiter{pool: pool, changed: make(chan struct{})}
}

// NewPollingWaiter returns a Waiter that holds no connection: it wakes every
// waiting request each interval, and they read the feed again. It is for a
// database reached only through a pooler in transaction mode, where LISTEN
// cannot work (the pooler hands the session to other clients after each
// transaction); long polls then answer within interval of a change instead
// of at once.
func NewPollingWaiter(interval time.Duration) *Waiter {
	return &Waiter{poll: max(interval, time.Millisecond), changed: make(chan struct{})}
}

// ErrWaiterStarted is returned by Start on a started Waiter.
var ErrWaiterStarted = errors.New("ledger: waiter already started")

// Start connects and LISTENs, and returns once notifications are being
// received; it then runs until Stop or until ctx ends.
func (w *Waiter) Start(ctx context.Context) error {
	w.mu.Lock()
	if w.done != nil {
		w.mu.Unlock()
		return ErrWaiterStarted
	}
	if w.poll > 0 {
		ctx, w.cancel = context.WithCancel(ctx)
		w.done = make(chan struct{})
		w.mu.Unlock()
		go w.runPolling(ctx)
		return nil
	}
	conn, err := w.listen(ctx)
	if err != nil {
		w.mu.Unlock()
		return err
	}
	ctx, w.cancel = context.WithCancel(ctx)
	w.done = make(chan struct{})
	w.mu.Unlock()
	go w.run(ctx, conn)
	return nil
}

// runPolling wakes everyone every w.poll until ctx ends.
func (w *Waiter) runPolling(ctx context.Context) {
	defer close(w.done)
	defer w.wake()
	tick := time.NewTicker(w.poll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			w.wake()
		}
	}
}

// Stop ends the Waiter and closes its connection; waiting requests are woken.
// It is safe to call more than once, and before Start.
func (w *Waiter) Stop() {
	w.mu.Lock()
	cancel, done := w.cancel, w.done
	w.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
}

// Changed returns a channel that is closed at the next notification (or
// when the connection is lost, or the Waiter stops).
func (w *Waiter) Changed() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changed
}

func (w *Waiter) wake() {
	w.mu.Lock()
	defer w.mu.Unlock()
	close(w.changed)
	w.changed = make(chan struct{})
}

func (w *Waiter) listen(ctx context.Context) (*pgx.Conn, error) {
	pc, err := w.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("feed waiter: connecting: %w", err)
	}
	conn := pc.Hijack()
	if _, err := conn.Exec(ctx, listenEventsSQL); err != nil {
		_ = conn.Close(context.Background())
		return nil, fmt.Errorf("feed waiter: listening: %w", err)
	}
	return conn, nil
}

func (w *Waiter) run(ctx context.Context, conn *pgx.Conn) {
	defer close(w.done)
	defer w.wake()
	backoff := 100 * time.Millisecond
	for {
		for conn != nil {
			_, err := conn.WaitForNotification(ctx)
			if err != nil {
				_ = conn.Close(context.Background())
				conn = nil
				if ctx.Err() != nil {
					return
				}
				if w.OnError != nil {
					w.OnError(err)
				}
			}
			w.wake()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		var err error
		if conn, err = w.listen(ctx); err != nil {
			if w.OnError != nil && ctx.Err() == nil {
				w.OnError(err)
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		w.wake() // events may have committed while no one listened
	}
}
