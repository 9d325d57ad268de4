package sweep_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/sweep"
)

// waitRow is a row of the waiting-state tests, seeded with its clocks in the
// past: ages in seconds before the database's now(), negative for none.
type waitRow struct {
	id     string
	status ledger.Status
	// progressAge: progress_at; heartbeatAge: last_heartbeat (in_progress);
	// queuedAge: created_at; notBeforeAge: not_before (negative: NULL, and
	// may be in the future with notBeforeIn); dispatchedAge: dispatched_at.
	progressAge, heartbeatAge, queuedAge, dispatchedAge float64
	notBeforeIn                                         *float64
	// own timeouts in seconds, 0 for none (the global one)
	progressTimeout, queueTimeout, startTimeout float64
	wantReason                                  string // "" stays as it is
}

// seedWait inserts rows with clocks in the past, which no writer can set
// (the bookkeeping trigger keeps progress_at and dispatched_at): with the
// triggers off for the insert, then the derived columns set as the
// triggers would.
func seedWait(t *testing.T, pool *pgxpool.Pool, rows []waitRow) {
	t.Helper()
	ctx := context.Background()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SET session_replication_role = replica`); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = conn.Exec(ctx, `SET session_replication_role = DEFAULT`) }()
	ago := func(s float64) any {
		if s < 0 {
			return nil
		}
		return s
	}
	own := func(s float64) any {
		if s == 0 {
			return nil
		}
		return s
	}
	for _, r := range rows {
		var notBefore any
		if r.notBeforeIn != nil {
			notBefore = *r.notBeforeIn
		}
		if _, err := conn.Exec(ctx, `
			INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat, progress_at,
			                         created_at, not_before, dispatched_at,
			                         progress_timeout, queue_timeout, start_timeout)
			VALUES ($1, 'caller', 'callee', $2,
			        now() - make_interval(secs => $3), now() - make_interval(secs => $4),
			        now() - make_interval(secs => COALESCE($5, 0)), now() + make_interval(secs => $6),
			        now() - make_interval(secs => $7),
			        make_interval(secs => $8), make_interval(secs => $9), make_interval(secs => $10))`,
			r.id, r.status, ago(r.heartbeatAge), ago(r.progressAge), ago(r.queuedAge), notBefore,
			ago(r.dispatchedAge), own(r.progressTimeout), own(r.queueTimeout), own(r.startTimeout)); err != nil {
			t.Fatalf("seeding %s: %v", r.id, err)
		}
	}
	if _, err := conn.Exec(ctx, `
		UPDATE delegations SET
		    heartbeat_expires_at = sweeper_heartbeat_expiry(last_heartbeat, heartbeat_timeout),
		    progress_minute = date_bin('1 minute', progress_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'),
		    progress_expires_at = sweeper_heartbeat_expiry(progress_at, progress_timeout),
		    queue_expires_at = sweeper_wait_expiry(COALESCE(not_before, created_at), queue_timeout),
		    start_expires_at = sweeper_wait_expiry(dispatched_at, start_timeout)`); err != nil {
		t.Fatal(err)
	}
}

func ptr[T any](v T) *T { return &v }

// The three rules mark exactly the rows past their timeout, global or own,
// under their reason; the heartbeat rule and the deadline come first; a
// rule whose global timeout is off leaves the rows on it alone. A dry run
// counts exactly what the sweep then marks.
func TestWaitingRulesMarkExactlyTheRightRows(t *testing.T) {
	t.Parallel()
	const none = -1.0
	rows := []waitRow{
		// stalled, global 600 s
		{id: "stalled-global", status: ledger.StatusInProgress, progressAge: 700, heartbeatAge: 1, wantReason: sweep.ReasonStalled},
		{id: "progressing-global", status: ledger.StatusInProgress, progressAge: 590, heartbeatAge: 1},
		{id: "dead-and-stalled", status: ledger.StatusInProgress, progressAge: 3600, heartbeatAge: 3600, wantReason: sweep.ReasonHeartbeatTimeout},
		// stalled, own timeouts (shorter and longer than the global one)
		{id: "stalled-own-30s", status: ledger.StatusInProgress, progressAge: 31, heartbeatAge: 1, progressTimeout: 30, wantReason: sweep.ReasonStalled},
		{id: "progressing-own-30s", status: ledger.StatusInProgress, progressAge: 28, heartbeatAge: 1, progressTimeout: 30},
		{id: "progressing-own-1h", status: ledger.StatusInProgress, progressAge: 700, heartbeatAge: 1, progressTimeout: 3600},
		// queue, global 300 s, since created or since not_before
		{id: "queued-late", status: ledger.StatusQueued, progressAge: none, heartbeatAge: none, queuedAge: 301, wantReason: sweep.ReasonQueueTimeout},
		{id: "queued-young", status: ledger.StatusQueued, progressAge: none, heartbeatAge: none, queuedAge: 290},
		{id: "queued-old-retry-due-now", status: ledger.StatusQueued, progressAge: none, heartbeatAge: none, queuedAge: 3600, notBeforeIn: ptr(-10.0)},
		{id: "queued-old-retry-due-long-ago", status: ledger.StatusQueued, progressAge: none, heartbeatAge: none, queuedAge: 3600, notBeforeIn: ptr(-400.0), wantReason: sweep.ReasonQueueTimeout},
		{id: "queued-own-10s", status: ledger.StatusQueued, progressAge: none, heartbeatAge: none, queuedAge: 11, queueTimeout: 10, wantReason: sweep.ReasonQueueTimeout},
		{id: "queued-own-1h", status: ledger.StatusQueued, progressAge: none, heartbeatAge: none, queuedAge: 400, queueTimeout: 3600},
		{id: "queued-own-retry-later", status: ledger.StatusQueued, progressAge: none, heartbeatAge: none, queuedAge: 3600, notBeforeIn: ptr(60.0), queueTimeout: 10},
		// start, global 120 s
		{id: "dispatched-late", status: ledger.StatusDispatched, progressAge: none, heartbeatAge: none, queuedAge: 900, dispatchedAge: 121, wantReason: sweep.ReasonStartTimeout},
		{id: "dispatched-young", status: ledger.StatusDispatched, progressAge: none, heartbeatAge: none, queuedAge: 900, dispatchedAge: 100},
		{id: "dispatched-own-5s", status: ledger.StatusDispatched, progressAge: none, heartbeatAge: none, queuedAge: 900, dispatchedAge: 6, startTimeout: 5, wantReason: sweep.ReasonStartTimeout},
		{id: "dispatched-own-1h", status: ledger.StatusDispatched, progressAge: none, heartbeatAge: none, queuedAge: 900, dispatchedAge: 900, startTimeout: 3600},
	}
	cfg := sweep.Config{HeartbeatTimeout: 10 * time.Minute, ProgressTimeout: 10 * time.Minute,
		QueueTimeout: 5 * time.Minute, StartTimeout: 2 * time.Minute}

	db := testdb.New(t)
	seedWait(t, db.Pool, rows)
	dry, err := newSweeper(t, db.Pool, sweep.Config{HeartbeatTimeout: cfg.HeartbeatTimeout, ProgressTimeout: cfg.ProgressTimeout,
		QueueTimeout: cfg.QueueTimeout, StartTimeout: cfg.StartTimeout, DryRun: true}).RunOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	listener, err := pgx.Connect(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close(ctx)
	if _, err := listener.Exec(ctx, `LISTEN `+sweep.NotifyChannelDefault); err != nil {
		t.Fatal(err)
	}
	res, err := newSweeper(t, db.Pool, cfg).RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Each stuck row's notification, and its event in the feed, carry its
	// reason.
	notified := map[string]string{}
	for range res.Notified {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		note, err := listener.WaitForNotification(wctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		var p struct {
			DelegationID string `json:"delegation_id"`
			Reason       string `json:"reason"`
		}
		if err := json.Unmarshal([]byte(note.Payload), &p); err != nil {
			t.Fatal(err)
		}
		notified[p.DelegationID] = p.Reason
	}
	// The feed holds back events while an older transaction may still
	// commit before them (Pending): other tests' transactions on the same
	// server count, so ask again until every event is settled.
	var page ledger.FeedPage
	for deadline := time.Now().Add(10 * time.Second); ; {
		if page, err = ledger.New(db.Pool).Feed(ctx, ledger.FeedFilter{ToStatus: ledger.StatusStuck, Limit: 100}); err != nil {
			t.Fatal(err)
		}
		if !page.Pending {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the feed's stuck events did not settle within 10s")
		}
		time.Sleep(ledger.FeedSettleRetry)
	}
	fed := map[string]string{}
	for _, ev := range page.Events {
		fed[ev.DelegationID] = ev.Reason
	}
	for _, r := range rows {
		if r.wantReason != "" && (notified[r.id] != r.wantReason || fed[r.id] != r.wantReason) {
			t.Errorf("%s: notified with reason %q, in the feed %q; want %s", r.id, notified[r.id], fed[r.id], r.wantReason)
		}
	}
	want := map[string]int{}
	for _, r := range rows {
		if r.wantReason != "" {
			want[r.wantReason]++
		}
		st, reason := statusOf(t, db.Pool, r.id)
		switch {
		case r.wantReason == "" && st != r.status:
			t.Errorf("%s: %s/%s, want it left %s", r.id, st, reason, r.status)
		case r.wantReason != "" && (st != ledger.StatusStuck || reason != r.wantReason):
			t.Errorf("%s: %s/%s, want stuck/%s", r.id, st, reason, r.wantReason)
		}
	}
	for reason, n := range want {
		if res.ByReason()[reason] != n || dry.ByReason()[reason] != n {
			t.Errorf("%s: swept %d, dry run %d, want %d", reason, res.ByReason()[reason], dry.ByReason()[reason], n)
		}
	}
	// The stuck event keeps the last progress's age and the heartbeat's,
	// and names the timeout that applied.
	var detail map[string]any
	if err := db.Pool.QueryRow(context.Background(), `SELECT detail FROM delegation_events
		WHERE delegation_id = 'stalled-global' AND to_status = 'stuck'`).Scan(&detail); err != nil {
		t.Fatal(err)
	}
	if age, _ := detail["progress_age_seconds"].(float64); age < 700 || age > 760 {
		t.Errorf("stalled-global detail %v: progress age %v, want about 700", detail, detail["progress_age_seconds"])
	}
	if age, _ := detail["heartbeat_age_seconds"].(float64); age < 1 || age > 60 {
		t.Errorf("stalled-global detail %v: heartbeat age, want about 1", detail)
	}
	if detail["progress_timeout_seconds"] != 600.0 {
		t.Errorf("stalled-global detail %v: want progress_timeout_seconds 600", detail)
	}

	// With the global rules off (the default), only own timeouts apply: the
	// rows left on the global timeouts stay as they are, however old.
	db2 := testdb.New(t)
	seedWait(t, db2.Pool, rows)
	off, err := newSweeper(t, db2.Pool, sweep.Config{HeartbeatTimeout: cfg.HeartbeatTimeout}).RunOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"stalled-global", "queued-late", "queued-old-retry-due-long-ago", "dispatched-late"} {
		if st, _ := statusOf(t, db2.Pool, id); st == ledger.StatusStuck {
			t.Errorf("%s marked stuck with its global rule off", id)
		}
	}
	if off.SweptStalled != 1 || off.SweptQueueTimeout != 1 || off.SweptStartTimeout != 1 || off.SweptHeartbeatTimeout != 1 {
		t.Errorf("with the global rules off: %+v, want one of each own rule and the dead row", off)
	}
}

// A worker that heartbeats every second with unchanged progress is marked
// stuck (stalled) within the progress timeout plus one adaptive interval of
// its last change of progress, and learns why on its next heartbeat; a
// worker whose progress moves, on the same schedule, stays live.
func TestHeartbeatingWorkerWithoutProgressIsStalled(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	l := ledger.New(db.Pool)
	for _, id := range []string{"wedged", "working"} {
		if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: id, CallerID: "c", CalleeID: "w",
			Status: ledger.StatusInProgress}); err != nil {
			t.Fatal(err)
		}
	}
	const (
		progressTimeout = 3 * time.Second
		ceiling         = time.Second // one adaptive interval, at most
	)
	s := newSweeper(t, db.Pool, sweep.Config{
		Schedule:        sweep.ScheduleAdaptive,
		ProgressTimeout: progressTimeout,
		AdaptiveFloor:   50 * time.Millisecond,
		AdaptiveCeiling: ceiling,
	})
	s.TestSignals.Init(t)
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()

	type answer struct {
		res ledger.HeartbeatResult
		err error
	}
	wedged := make(chan answer, 64)
	stop := make(chan struct{})
	var workingLive atomic.Bool
	workingLive.Store(true)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // both workers beat once a second, as a worker's heartbeat thread does
		defer wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for step := 1; ; step++ {
			res, err := l.HeartbeatProgress(ctx, "wedged", json.RawMessage(`{"step": 1, "of": 7}`))
			wedged <- answer{res, err}
			res, err = l.HeartbeatProgress(ctx, "working", json.RawMessage(fmt.Sprintf(`{"step": %d, "of": 1000}`, step)))
			if err != nil || !res.Live {
				workingLive.Store(false)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	deadline := time.After(progressTimeout + 20*time.Second)
	var last answer
	for last.err != nil || last.res.Live || last.res.Status == "" {
		select {
		case last = <-wedged:
			if last.err != nil {
				t.Fatal(last.err)
			}
		case <-deadline:
			t.Fatalf("the wedged worker is still live: %+v", last.res)
		}
	}
	if last.res.Status != ledger.StatusStuck || last.res.Reason != sweep.ReasonStalled {
		t.Fatalf("wedged worker's heartbeat answered %+v, want stuck/stalled", last.res)
	}
	// When: the stuck event's time against the last change of progress,
	// both by the database clock.
	lag := one[float64](t, db.Pool, `SELECT EXTRACT(EPOCH FROM e.at - d.progress_at)::float8
		FROM delegations d JOIN delegation_events e USING (delegation_id)
		WHERE d.delegation_id = 'wedged' AND e.to_status = 'stuck' AND e.reason = 'stalled'`)
	if limit := (progressTimeout + ceiling).Seconds(); lag < progressTimeout.Seconds() || lag > limit {
		t.Fatalf("stuck %.3f s after its last progress, want between %s and %.1f s", lag, progressTimeout, limit)
	}
	t.Logf("wedged worker stuck (stalled) %.3f s after its last progress (timeout %s, ceiling %s)", lag, progressTimeout, ceiling)

	// The working one stays live for another full timeout and more.
	more := time.After(progressTimeout + ceiling)
	for done := false; !done; {
		select {
		case <-wedged:
		case <-more:
			done = true
		}
	}
	if st, _ := statusOf(t, db.Pool, "working"); st != ledger.StatusInProgress || !workingLive.Load() {
		t.Fatalf("working worker: %s, live %v; want in_progress and live throughout", st, workingLive.Load())
	}
}

// A race storm: sweepers run the three rules (own timeouts of one second)
// while writers change progress, move queued rows to dispatched and
// dispatched rows to in_progress, at random. No row is marked against its
// rule as it was when the mark committed: every stalled row's progress is
// older than its timeout at the moment of its stuck event, every
// queue_timeout row left queued and every start_timeout row left
// dispatched past their timeouts; and once the writers stop, every row past
// its timeout is marked.
func TestWaitingRulesRaceStorm(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	l := ledger.New(db.Pool)
	const perKind = 60
	for i := range perKind {
		for _, r := range []struct {
			prefix string
			status ledger.Status
			nd     ledger.NewDelegation
		}{
			{"p", ledger.StatusInProgress, ledger.NewDelegation{ProgressTimeout: time.Second}},
			{"q", ledger.StatusQueued, ledger.NewDelegation{QueueTimeout: time.Second}},
			{"s", ledger.StatusDispatched, ledger.NewDelegation{StartTimeout: time.Second}},
		} {
			n := r.nd
			n.DelegationID, n.CallerID, n.CalleeID, n.Status = fmt.Sprintf("%s%d", r.prefix, i), "c", "w", r.status
			if _, err := l.Insert(ctx, n); err != nil {
				t.Fatal(err)
			}
		}
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writes, sweeps atomic.Int64
	for w := range 4 { // writers
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for step := 0; ; step++ {
				select {
				case <-stop:
					return
				default:
				}
				i := rng.IntN(perKind)
				var err error
				switch rng.IntN(3) {
				case 0: // progress, changed about every other beat
					_, err = l.HeartbeatProgress(ctx, fmt.Sprintf("p%d", i), json.RawMessage(fmt.Sprintf(`{"n": %d}`, step/2)))
				case 1:
					_, err = l.SetStatus(ctx, fmt.Sprintf("q%d", i), ledger.StatusDispatched, ledger.Change{Actor: "storm"})
				case 2:
					if rng.IntN(4) == 0 {
						_, err = l.SetStatus(ctx, fmt.Sprintf("s%d", i), ledger.StatusInProgress, ledger.Change{Actor: "storm"})
					} else {
						_, err = l.Heartbeat(ctx, fmt.Sprintf("s%d", i))
					}
				}
				if err != nil {
					t.Error(err)
					return
				}
				writes.Add(1)
				if step%8 == 0 { // pace: let rows go past their second now and then
					select {
					case <-stop:
						return
					case <-time.After(time.Duration(rng.IntN(60)) * time.Millisecond):
					}
				}
			}
		}()
	}
	for range 2 { // sweepers
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := newSweeper(t, db.Pool, sweep.Config{BatchSize: 7})
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := s.RunOnce(ctx); err != nil {
					t.Error(err)
					return
				}
				sweeps.Add(1)
			}
		}()
	}
	time.Sleep(4 * time.Second) // the storm's length, not a wait for a result
	close(stop)
	wg.Wait()
	if t.Failed() {
		return
	}

	// Writers stopped: every row past its timeout is marked, within a bound.
	s := newSweeper(t, db.Pool, sweep.Config{})
	bound := time.Now().Add(15 * time.Second)
	for {
		if _, err := s.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		left := one[int](t, db.Pool, `SELECT count(*) FROM delegations
			WHERE (status = 'in_progress' AND progress_timeout IS NOT NULL)
			   OR (status = 'queued' AND queue_timeout IS NOT NULL)
			   OR (status = 'dispatched' AND start_timeout IS NOT NULL)`)
		if left == 0 {
			break
		}
		if time.Now().After(bound) {
			t.Fatalf("%d rows past their timeouts still not marked", left)
		}
		select { // poll the next second's expiries
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
		}
	}

	violations := one[int](t, db.Pool, `
		SELECT count(*) FROM delegations d JOIN delegation_events e USING (delegation_id)
		WHERE e.to_status = 'stuck' AND NOT CASE e.reason
		    WHEN 'stalled' THEN e.from_status = 'in_progress' AND e.at - d.progress_at > d.progress_timeout
		    WHEN 'queue_timeout' THEN e.from_status = 'queued'
		                             AND e.at - COALESCE(d.not_before, d.created_at) > d.queue_timeout
		    WHEN 'start_timeout' THEN e.from_status = 'dispatched' AND e.at - d.dispatched_at > d.start_timeout
		    ELSE false END`)
	byReason := map[string]int{}
	rows, err := db.Pool.Query(ctx, `SELECT stuck_reason, count(*) FROM delegations WHERE status = 'stuck' GROUP BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var r string
		var n int
		if err := rows.Scan(&r, &n); err != nil {
			t.Fatal(err)
		}
		byReason[r] = n
	}
	events := one[int](t, db.Pool, `SELECT count(*) FROM delegation_events WHERE to_status = 'stuck'`)
	stuck := one[int](t, db.Pool, `SELECT count(*) FROM delegations WHERE status = 'stuck'`)
	t.Logf("writes %d, sweeps %d, stuck %v, stuck events %d, violations %d", writes.Load(), sweeps.Load(), byReason, events, violations)
	if violations != 0 {
		t.Fatalf("%d rows marked against their rule", violations)
	}
	if events != stuck {
		t.Fatalf("%d stuck events for %d stuck rows: a transition applied twice or lost", events, stuck)
	}
	if byReason[sweep.ReasonStalled] == 0 || byReason[sweep.ReasonQueueTimeout]+byReason[sweep.ReasonStartTimeout] == 0 {
		t.Fatalf("the storm exercised too little: %v", byReason)
	}
}
