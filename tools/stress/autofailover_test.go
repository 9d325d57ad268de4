//go:build unix

package stress

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/internal/pgserver"
	"github.com/tasksweeper/sweeper/internal/stress/report"
	"github.com/tasksweeper/sweeper/ledger"
)

// The failover test: a real HA engine, pg_auto_failover (a monitor and two
// nodes on local ports), under load. The sweeper daemon and the writers
// reach the formation through its multi-host URI (target_session_attrs=
// read-write) only; `pg_autoctl perform failover` moves the primary to the
// other node while they work. Afterwards: the daemon sweeps again on the new
// primary and is ready, the writers went on, no acknowledged write was lost,
// and the storm's invariants hold (one event per transition, stuck only
// when really stale, whole batches).

const (
	// afTimeout is the daemon's heartbeat timeout: longer than the
	// switchover, so that a diligent worker's row survives it.
	afTimeout = 10 * time.Second
	afBatch   = 50
	afOpLimit = 5 * time.Second // bound on one writer operation
)

// afPhases are how long the load runs before the failover and after the
// formation has settled on the new primary; after must exceed afTimeout
// so that rows abandoned before the failover are swept on the new primary.
func afPhases() (before, after time.Duration) {
	if full() {
		return 20 * time.Second, 40 * time.Second
	}
	return 5 * time.Second, afTimeout + 4*time.Second
}

// startFormation starts a pg_auto_failover formation for t, or skips when
// pg_autoctl is not installed and SWEEPER_REQUIRE_DB is not 1.
func startFormation(t *testing.T) *pgserver.AutoFailover {
	t.Helper()
	f, err := pgserver.StartAutoFailover(context.Background(), pgserver.AutoFailoverOptions{Logf: t.Logf})
	if errors.Is(err, pgserver.ErrNoAutoFailover) && os.Getenv("SWEEPER_REQUIRE_DB") != "1" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("closing the formation: %v", err)
		}
	})
	return f
}

// afWriter is one writer of the failover test; it logs like the storm's.
type afWriter struct {
	writer
	errs     int       // operations that failed (the failover window)
	lastOK   time.Time // acknowledgement of the latest successful operation
	longest  time.Duration
	okAfter  int // successful operations acknowledged after the failover settled
	settled  *time.Time
	settleMu *sync.Mutex
}

// done records the end of an operation.
func (w *afWriter) done(o op) {
	if o.acked.IsZero() {
		o.acked = time.Now()
	}
	w.log(o)
	if o.err != "" {
		w.errs++
		return
	}
	if !w.lastOK.IsZero() {
		w.longest = max(w.longest, o.acked.Sub(w.lastOK))
	}
	w.lastOK = o.acked
	w.settleMu.Lock()
	if !w.settled.IsZero() && o.sent.After(*w.settled) {
		w.okAfter++
	}
	w.settleMu.Unlock()
}

func afCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), afOpLimit)
}

// diligent inserts an in_progress delegation, heartbeats it every 200-400ms
// for 1-4s, then completes it, retrying each call that failed until it gets
// an answer: a worker that rides out the failover.
func diligent(ctx context.Context, l *ledger.Ledger, w *afWriter) {
	for ctx.Err() == nil {
		id := w.newID()
		c, cancel := afCtx()
		sent := time.Now()
		res, err := l.Insert(c, ledger.NewDelegation{DelegationID: id, CallerID: w.name, CalleeID: "worker",
			Status: ledger.StatusInProgress, Timeout: 10 * time.Minute})
		cancel()
		w.done(op{kind: opInsert, id: id, what: "Insert in_progress", sent: sent, applied: err == nil && res.Outcome == ledger.Inserted,
			to: ledger.StatusInProgress, status: ledger.StatusInProgress, outcome: res.Outcome.String(), err: errText(err)})
		if err != nil {
			sleep(ctx, 100*time.Millisecond)
			continue
		}
		lifetime := time.Now().Add(w.between(time.Second, 4*time.Second))
		live := true
		for live && time.Now().Before(lifetime) && sleep(ctx, w.between(200*time.Millisecond, 400*time.Millisecond)) {
			c, cancel := afCtx()
			sent := time.Now()
			hb, err := l.Heartbeat(c, id)
			cancel()
			w.done(op{kind: opHeartbeat, id: id, what: "Heartbeat", sent: sent, live: err == nil && hb.Live, status: hb.Status, err: errText(err)})
			live = err != nil || hb.Live
		}
		for ctx.Err() == nil {
			c, cancel := afCtx()
			sent := time.Now()
			res, err := l.SetStatus(c, id, ledger.StatusCompleted, ledger.Change{Actor: w.name, Reason: "done"})
			cancel()
			w.done(op{kind: opStatus, id: id, what: "SetStatus completed", sent: sent, applied: err == nil && res.Outcome == ledger.OutcomeApplied,
				to: ledger.StatusCompleted, status: res.Status, outcome: res.Outcome.String(), err: errText(err)})
			if err == nil {
				break
			}
			sleep(ctx, 100*time.Millisecond)
		}
	}
}

// afAbandoned is a row the abandoner walked away from.
type afAbandoned struct {
	id       string
	inserted time.Time // acknowledgement of the insert
	deadline bool      // swept by deadline (else by heartbeat)
}

// abandon inserts, every 100-300ms, an in_progress row it never beats again
// (swept after afTimeout) or a queued row with a deadline of 1-2s.
func abandon(ctx context.Context, l *ledger.Ledger, w *afWriter, out *[]afAbandoned) {
	for sleep(ctx, w.between(100*time.Millisecond, 300*time.Millisecond)) {
		id := w.newID()
		n := ledger.NewDelegation{DelegationID: id, CallerID: w.name, CalleeID: "nobody", Status: ledger.StatusInProgress, Timeout: 10 * time.Minute}
		byDeadline := w.rng.IntN(2) == 0
		if byDeadline {
			n.Status, n.Timeout = ledger.StatusQueued, w.between(time.Second, 2*time.Second)
		}
		c, cancel := afCtx()
		sent := time.Now()
		res, err := l.Insert(c, n)
		cancel()
		o := op{kind: opInsert, id: id, what: "Insert " + string(n.Status), sent: sent, applied: err == nil && res.Outcome == ledger.Inserted,
			to: n.Status, status: n.Status, outcome: res.Outcome.String(), err: errText(err)}
		w.done(o)
		if o.applied {
			*out = append(*out, afAbandoned{id: id, inserted: time.Now(), deadline: byDeadline})
		}
	}
}

// runLine is one sweep run in the daemon's log.
type runLine struct {
	at time.Time
	ok bool
}

// sweepRuns reads the runs from the daemon's JSON log (log.level debug:
// every run logs one line).
func sweepRuns(t *testing.T, logs string) []runLine {
	t.Helper()
	var runs []runLine
	for _, line := range strings.Split(logs, "\n") {
		var l struct {
			TS  string `json:"ts"`
			Msg string `json:"msg"`
		}
		if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &l) != nil {
			continue
		}
		var ok bool
		switch l.Msg {
		case "sweep found nothing", "sweep marked delegations stuck":
			ok = true
		case "sweep failed":
		default:
			continue
		}
		at, err := time.Parse("2006-01-02T15:04:05.000Z0700", l.TS)
		if err != nil {
			t.Fatalf("daemon log time %q: %v", l.TS, err)
		}
		runs = append(runs, runLine{at, ok})
	}
	return runs
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

func TestAutoFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("the failover test does not run with -short")
	}
	t.Parallel()
	ctx := context.Background()
	f := startFormation(t)
	old, err := f.Primary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("formation URI: %s (primary %s on port %d)", f.FormationURI, old.Name, old.Port)
	if !strings.Contains(f.FormationURI, "target_session_attrs=read-write") {
		t.Fatalf("formation URI %q lacks target_session_attrs=read-write", f.FormationURI)
	}

	env := []string{"SWEEPER_DATABASE_URL=" + f.URL}
	if r := run(t, env, "migrate", "up"); r.Code != 0 {
		t.Fatalf("migrate up through the formation URI: %s", r)
	}
	d := startDaemon(t, "daemon", append(env,
		"SWEEPER_SWEEP_SCHEDULE=@every 1s",
		"SWEEPER_SWEEP_HEARTBEAT_TIMEOUT="+afTimeout.String(),
		fmt.Sprintf("SWEEPER_SWEEP_BATCH_SIZE=%d", afBatch),
		"SWEEPER_LOG_LEVEL=debug"))

	pcfg, err := pgxpool.ParseConfig(f.URL)
	if err != nil {
		t.Fatal(err)
	}
	pcfg.MaxConns = 10
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	l := ledger.New(pool)

	var settled time.Time
	var settleMu sync.Mutex
	var writers []*afWriter
	newWriter := func(name string) *afWriter {
		w := &afWriter{writer: writer{name: name, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(len(writers))))},
			settled: &settled, settleMu: &settleMu}
		writers = append(writers, w)
		return w
	}
	wctx, stopWriters := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range 4 {
		w := newWriter(fmt.Sprintf("diligent-%d", i+1))
		wg.Go(func() { diligent(wctx, l, w) })
	}
	var abandoned []afAbandoned
	ab := newWriter("abandoner")
	wg.Go(func() { abandon(wctx, l, ab, &abandoned) })

	before, after := afPhases()
	if !sleep(ctx, before) {
		t.Fatal("interrupted")
	}
	// /readyz while the primary moves: a failed run makes it 503, the
	// next successful one 200 again. An HTTP endpoint of another process
	// has no signal to wait on: probe it every 50ms.
	t0 := time.Now()
	var downAt, upAt time.Time
	probeCtx, stopProbe := context.WithCancel(ctx)
	probeDone := make(chan struct{})
	go func() {
		defer close(probeDone)
		for sleep(probeCtx, 50*time.Millisecond) {
			code, _, err := d.Get("/readyz")
			ready := err == nil && code == 200
			switch {
			case !ready && downAt.IsZero():
				downAt = time.Now()
			case ready && !downAt.IsZero():
				upAt = time.Now()
				return
			}
		}
	}()
	newPrimary, err := f.PerformFailover(ctx)
	if err != nil {
		stopProbe()
		stopWriters()
		wg.Wait()
		t.Fatal(err)
	}
	t1 := time.Now()
	settleMu.Lock()
	settled = t1
	settleMu.Unlock()
	t.Logf("pg_autoctl perform failover: %s -> %s, settled in %s", old.Name, newPrimary.Name, seconds(t1.Sub(t0)))
	// Ready again (or never lost) within a minute.
	select {
	case <-probeDone:
	case <-time.After(time.Minute):
	}
	stopProbe()
	<-probeDone
	readyAt := upAt
	switch {
	case downAt.IsZero():
		t.Log("/readyz stayed 200 through the failover")
		readyAt = t0
	case upAt.IsZero():
		t.Errorf("/readyz went 503 %s after the failover began and was not 200 again a minute after it settled", seconds(downAt.Sub(t0)))
		readyAt = time.Now()
	}
	sleep(ctx, after)
	stopWriters()
	wg.Wait()
	end := time.Now()
	if d.Exited() {
		t.Fatalf("the daemon exited: %v\n%s", d.ExitErr(), d.Logs())
	}
	if code, body, err := d.Get("/readyz"); err != nil || code != 200 {
		t.Errorf("/readyz at the end: %d %q %v", code, body, err)
	}
	if code := d.Stop(t, syscall.SIGTERM, time.Minute); code != 0 {
		t.Errorf("the daemon exited %d after SIGTERM\n%s", code, d.Logs())
	}

	fig := report.Figures{}
	v := &violations{t: t}

	// The new primary is the other node; the formation URI reaches it.
	v.check(newPrimary.Name != old.Name, "the primary is still %s after the failover", old.Name)
	var port int
	var standby bool
	var syncNames string
	pconn := connect(t, f.URL)
	if err := pconn.QueryRow(ctx, `SELECT inet_server_port(), pg_is_in_recovery(), current_setting('synchronous_standby_names')`).
		Scan(&port, &standby, &syncNames); err != nil {
		t.Fatal(err)
	}
	v.check(port == newPrimary.Port && !standby, "the formation URI reaches port %d (in recovery %v), the new primary %s is on %d",
		port, standby, newPrimary.Name, newPrimary.Port)
	oconn := connect(t, old.URL)
	if err := oconn.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&standby); err != nil {
		t.Fatal(err)
	}
	v.check(standby, "the old primary %s is not a standby after the failover", old.Name)

	// The daemon's runs: failures in the failover window only, and
	// successful runs on the new primary after it.
	runs := sweepRuns(t, d.Logs())
	var failed, okAfter int
	var lastFail, lastOKBefore, resumed time.Time
	for _, r := range runs {
		switch {
		case !r.ok:
			failed++
			lastFail = r.at
			v.check(r.at.After(t0.Add(-time.Second)) && r.at.Before(readyAt.Add(time.Second)),
				"a sweep failed at %s, outside the failover window %s..%s", r.at, t0, readyAt)
		case r.at.Before(t0):
			lastOKBefore = r.at
		case r.at.After(t1):
			okAfter++
		}
	}
	for _, r := range runs {
		if r.ok && r.at.After(t0) && r.at.After(lastFail) {
			resumed = r.at
			break
		}
	}
	v.check(okAfter >= int(after/time.Second)/2, "%d successful sweeps after the failover settled (in %s)", okAfter, after)
	v.check(!resumed.IsZero(), "no successful sweep after the failover began")
	if !resumed.IsZero() && !lastOKBefore.IsZero() {
		t.Logf("sweeps: last success before the failover %s before it began; %d failed runs; resumed %s after it began (%s of sweeping lost); /readyz 503 after %s, 200 again %s after it began",
			seconds(t0.Sub(lastOKBefore)), failed, seconds(resumed.Sub(t0)), seconds(resumed.Sub(lastOKBefore)), seconds(max(0, downAt.Sub(t0))), seconds(readyAt.Sub(t0)))
		fig["resume_ms"] = resumed.Sub(t0).Milliseconds()
		fig["sweep_gap_ms"] = resumed.Sub(lastOKBefore).Milliseconds()
	}
	fig["failover_ms"] = t1.Sub(t0).Milliseconds()
	fig["readyz_ms"] = readyAt.Sub(t0).Milliseconds()
	fig["failed_runs"] = int64(failed)
	fig["runs_after_failover"] = int64(okAfter)

	// What the new primary holds.
	rows := map[string]row{}
	rr, err := pconn.Query(ctx, `SELECT delegation_id, status, COALESCE(stuck_reason, ''), last_heartbeat, deadline FROM delegations`)
	if err != nil {
		t.Fatal(err)
	}
	for rr.Next() {
		var id string
		var r row
		if err := rr.Scan(&id, &r.status, &r.reason, &r.lastHeartbeat, &r.deadline); err != nil {
			t.Fatal(err)
		}
		rows[id] = r
	}
	if err := rr.Err(); err != nil {
		t.Fatal(err)
	}
	evByRow := map[string][]event{}
	er, err := pconn.Query(ctx, `SELECT id, delegation_id, COALESCE(from_status, ''), to_status, actor, COALESCE(reason, ''), at
		FROM delegation_events ORDER BY delegation_id, id`)
	if err != nil {
		t.Fatal(err)
	}
	var stuckEvents, transitions int
	stuckEvent := map[string]event{}
	for er.Next() {
		var e event
		if err := er.Scan(&e.id, &e.delegationID, &e.from, &e.to, &e.actor, &e.reason, &e.at); err != nil {
			t.Fatal(err)
		}
		evByRow[e.delegationID] = append(evByRow[e.delegationID], e)
		if e.to == "stuck" {
			stuckEvents++
			stuckEvent[e.delegationID] = e
		}
		if e.from != "" {
			transitions++
		}
	}
	if err := er.Err(); err != nil {
		t.Fatal(err)
	}

	// One event per transition: each row's events chain from its insert to
	// its status, each step to a higher rank.
	for id, r := range rows {
		evs := evByRow[id]
		ok := len(evs) > 0 && evs[0].from == ""
		for i := 1; ok && i < len(evs); i++ {
			ok = evs[i].from == evs[i-1].to && ledger.Status(evs[i].to).Rank() > ledger.Status(evs[i].from).Rank()
		}
		v.check(ok && evs[len(evs)-1].to == r.status, "row %q (%s): events do not form a chain ending at its status: %v", id, r.status, evs)
	}
	// Stuck only when really stale, by the clock of the marking transaction.
	var stuck, stuckHB, stuckDL, stuckAfter int
	for id, r := range rows {
		if r.status != "stuck" {
			continue
		}
		stuck++
		e := stuckEvent[id]
		v.check(e.actor == "sweeper" && e.reason == r.reason, "stuck row %q: event %+v, stuck_reason %q", id, e, r.reason)
		if e.at.After(t1) {
			stuckAfter++
		}
		switch r.reason {
		case "heartbeat_timeout":
			stuckHB++
			v.check(r.lastHeartbeat != nil && e.at.Sub(*r.lastHeartbeat) > afTimeout,
				"row %q marked stuck at %s while its last heartbeat %v was fresh (timeout %s)", id, e.at, r.lastHeartbeat, afTimeout)
		case "deadline_exceeded":
			stuckDL++
			v.check(e.at.After(r.deadline), "row %q marked deadline_exceeded at %s, before its deadline %s", id, e.at, r.deadline)
		default:
			v.check(false, "row %q stuck with reason %q", id, r.reason)
		}
	}
	v.check(stuckEvents == stuck, "%d stuck events for %d stuck rows", stuckEvents, stuck)
	v.check(stuckAfter > 0, "no row was marked stuck on the new primary")
	txs, _ := batchCheck(t, f.URL, afBatch, false)

	// The writers' acknowledged writes survived the failover, and they went
	// on after it.
	var live, errs, ops int
	var writerGap time.Duration
	for _, w := range writers {
		v.check(w.okAfter > 0, "%s made no successful operation after the failover", w.name)
		errs += w.errs
		writerGap = max(writerGap, w.longest)
		for _, o := range w.ops {
			ops++
			if o.err != "" {
				continue
			}
			r, exists := rows[o.id]
			switch o.kind {
			case opInsert:
				v.check(o.applied && exists, "%s: acknowledged insert of %q (%s) is not on the new primary", w.name, o.id, o.outcome)
			case opStatus:
				if o.applied {
					v.check(r.status == string(o.to), "%s was told %q moved to %s, the row ended %s", w.name, o.id, o.to, r.status)
				}
			case opHeartbeat:
				if !o.live {
					v.check(ledger.Status(r.status).Terminal(), "%s: heartbeat of %q told not live, row ended %s", w.name, o.id, r.status)
					continue
				}
				live++
				if r.reason == "heartbeat_timeout" {
					e := stuckEvent[o.id]
					lb := o.sent.Truncate(time.Microsecond)
					v.check(e.at.Sub(lb) > afTimeout, "%s: heartbeat of %q acknowledged live, sent at %s, yet the row was marked stuck at %s",
						w.name, o.id, lb.Format(time.RFC3339Nano), e.at.Format(time.RFC3339Nano))
				}
			}
		}
	}
	// Liveness on the new primary: every abandoned row past its rule,
	// with a few schedule periods of margin, is stuck.
	var dueAbandoned int
	for _, a := range abandoned {
		r := rows[a.id]
		due := a.inserted.Add(afTimeout)
		if a.deadline {
			due = r.deadline
		}
		if due.Before(end.Add(-5 * time.Second)) {
			dueAbandoned++
			v.check(r.status == "stuck", "abandoned row %q was due at %s and is %s at the end (%s)", a.id, due, r.status, end)
		}
	}
	t.Logf("rows %d, transitions %d, stuck %d (heartbeat_timeout %d, deadline_exceeded %d; %d on the new primary) in %d sweep transactions; "+
		"writer ops %d (%d failed in the failover window, longest writer gap %s), live heartbeats %d; synchronous_standby_names on the new primary: %q",
		len(rows), transitions, stuck, stuckHB, stuckDL, stuckAfter, txs, ops, errs, seconds(writerGap), live, syncNames)
	fig[report.Writers] = int64(len(writers))
	fig[report.WriterOps] = int64(ops)
	fig[report.Inserts] = int64(len(rows))
	fig[report.Transitions] = int64(transitions)
	fig[report.Stuck], fig[report.StuckHeartbeat], fig[report.StuckDeadline] = int64(stuck), int64(stuckHB), int64(stuckDL)
	fig[report.LiveHeartbeats] = int64(live)
	fig["stuck_on_new_primary"] = int64(stuckAfter)
	fig["abandoned_due"] = int64(dueAbandoned)
	fig["writer_errors"] = int64(errs)
	fig["writer_gap_ms"] = writerGap.Milliseconds()
	fig[report.Checks] = v.checks
	fig[report.Violations] = v.n
	record(t, fig)
	if v.n > 0 {
		t.Fatalf("%d of %d checks failed:\n%s", v.n, v.checks, v.summary())
	}
}
