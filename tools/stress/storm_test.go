package stress

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/internal/pgserver"
	"github.com/tasksweeper/sweeper/internal/stress/report"
	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/ledger"
)

// The race storm: for a configurable duration, two dozen writers of eight
// kinds change the ledger (through the library and as raw SQL on their own
// connections) while three sweeper daemons, separate processes running as
// the least-privilege role of deploy/postgres, sweep every second with a
// heartbeat timeout of two seconds. Every writer keeps a log of what it did
// and what it was told. Afterwards the log, the rows, the event log, the
// notifications and the daemons' metrics are checked against each other.

const (
	stormTimeout   = 2 * time.Second // the daemons' heartbeat timeout
	stormBatchSize = 20              // small, so runs take several batches and replicas meet
	stormDaemons   = 3
	stormChannel   = "delegation_stuck"
	stormRowDelay  = 3 * time.Millisecond // added to each row a sweep marks
)

// opKind is what a writer did.
type opKind string

const (
	opInsert    opKind = "insert"          // ledger Insert
	opRawInsert opKind = "raw_insert"      // INSERT on the writer's own connection
	opStatus    opKind = "set_status"      // ledger SetStatus on the writer's own row
	opRawStatus opKind = "raw_status"      // UPDATE ... SET status on the writer's own row
	opHeartbeat opKind = "heartbeat"       // ledger Heartbeat or HeartbeatMany, one op per row
	opRawBeat   opKind = "raw_heartbeat"   // UPDATE ... SET last_heartbeat = now(), maybe inside a longer transaction
	opRevive    opKind = "revive"          // ledger call that tries to change a terminal row
	opRawRevive opKind = "raw_revive"      // raw SQL that tries to change a terminal row
	opFinish    opKind = "finisher_status" // the finisher's completion of what was left in flight
)

// op is one entry of a writer's log.
type op struct {
	writer string
	kind   opKind
	id     string
	what   string // the statement or call, for messages
	sent   time.Time
	acked  time.Time

	applied bool          // a status change or insert that took effect
	to      ledger.Status // the status asked for
	status  ledger.Status // the status the writer was told the row has (after the call)
	live    bool          // heartbeats: told the row is live
	hb      time.Time     // heartbeats: the last_heartbeat written, when the writer knows it exactly
	outcome string        // ledger outcome, or "refused:<constraint>" for raw SQL
	err     string        // an unexpected error
}

// writer is one goroutine of the storm with its own log.
type writer struct {
	name string
	kind string
	rng  *rand.Rand
	conn *pgx.Conn // raw writers' own connection
	ops  []op
	n    int

	reconnects []*pgx.Conn // connections liveConn opened, closed after the storm
}

func (w *writer) newID() string {
	w.n++
	return fmt.Sprintf("%s-%d", w.name, w.n)
}

func (w *writer) log(o op) {
	o.writer = w.name
	if o.acked.IsZero() {
		o.acked = time.Now()
	}
	w.ops = append(w.ops, o)
	if o.err != "" {
		// While the server is unreachable (a failover) every call fails
		// at once: do not spin.
		time.Sleep(20 * time.Millisecond)
	}
}

// between returns a random duration in [lo, hi).
func (w *writer) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(w.rng.Int64N(int64(hi-lo)))
}

// sleep waits d or until ctx is done; it reports whether to go on.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// opCtx bounds one operation. Operations are not cancelled by the end of the
// storm: a writer finishes what it started, so its log says what happened.
func opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), time.Minute)
}

var terminalNames = []string{"completed", "failed", "stuck"}

// storm holds what the writers share.
type storm struct {
	dsn    string // superuser URL: the application's writers
	l      *ledger.Ledger
	errors atomic.Int64
	// mixed: rows get their own heartbeat_timeout (see storm_mixed_test.go);
	// otherwise every row is on the daemons' global one.
	mixed bool
}

// rowTimeout picks a new row's own heartbeat timeout (0: NULL, the global
// one) and returns it with the timeout the row is swept by. Without mixed
// timeouts every row is on the global one.
func (s *storm) rowTimeout(w *writer) (own, effective time.Duration) {
	if !s.mixed {
		return 0, stormTimeout
	}
	own = mixedClasses[w.rng.IntN(len(mixedClasses))]
	return own, cmp.Or(own, stormTimeout)
}

// scaled returns d scaled from the global timeout to timeout: the writers'
// rhythms are written for stormTimeout, and a row with its own timeout
// beats, pauses and lives in proportion to it.
func scaled(d, timeout time.Duration) time.Duration {
	return time.Duration(float64(d) * float64(timeout) / float64(stormTimeout))
}

func (s *storm) rawConn(t *testing.T, actor string) *pgx.Conn {
	conn := connect(t, s.dsn)
	ctx, cancel := opCtx()
	defer cancel()
	if _, err := conn.Exec(ctx, `SELECT set_config('sweeper.actor', $1, false)`, actor); err != nil {
		t.Fatal(err)
	}
	return conn
}

// liveConn returns w's own connection, connecting again (s.dsn, which may
// name several hosts) when the server closed it, as in a failover. When
// that fails it returns the closed connection: the writer's next operations
// fail and are logged as such.
func (s *storm) liveConn(w *writer) *pgx.Conn {
	if !w.conn.IsClosed() {
		return w.conn
	}
	ctx, cancel := opCtx()
	defer cancel()
	conn, err := pgx.Connect(ctx, s.dsn)
	if err == nil {
		_, err = conn.Exec(ctx, `SELECT set_config('sweeper.actor', $1, false)`, w.name)
		if err != nil {
			_ = conn.Close(ctx)
		}
	}
	if err != nil {
		time.Sleep(20 * time.Millisecond)
		return w.conn
	}
	w.reconnects = append(w.reconnects, conn)
	w.conn = conn
	return conn
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// ledgerWorker inserts a delegation, walks it to in_progress, heartbeats it
// every period (given the row's heartbeat timeout) for a while, finishes
// it, then tries to revive it. Diligent workers beat well within the
// timeout; flaky ones beat around it.
func (s *storm) ledgerWorker(ctx context.Context, w *writer, period func(timeout time.Duration) time.Duration) {
	for ctx.Err() == nil {
		id := w.newID()
		own, timeout := s.rowTimeout(w)
		start := ledger.StatusInProgress
		if w.rng.IntN(3) == 0 {
			start = ledger.StatusQueued
		}
		c, cancel := opCtx()
		sent := time.Now()
		res, err := s.l.Insert(c, ledger.NewDelegation{DelegationID: id, CallerID: w.name, CalleeID: "worker",
			TaskPreview: "storm task " + id, Status: start, Timeout: time.Minute, HeartbeatTimeout: own})
		cancel()
		w.log(op{kind: opInsert, id: id, what: "Insert " + string(start), sent: sent, applied: err == nil && res.Outcome == ledger.Inserted,
			to: start, status: start, outcome: res.Outcome.String(), err: errText(err)})
		if err != nil {
			continue
		}
		if start == ledger.StatusQueued {
			for _, to := range []ledger.Status{ledger.StatusDispatched, ledger.StatusInProgress} {
				s.setStatus(w, opStatus, id, to)
			}
		}
		lifetime := time.Now().Add(w.between(scaled(300*time.Millisecond, timeout), scaled(3*time.Second, timeout)))
		live := true
		for live && time.Now().Before(lifetime) && sleep(ctx, period(timeout)) {
			live = s.heartbeat(w, opHeartbeat, id)
		}
		to := ledger.StatusCompleted
		if w.rng.IntN(4) == 0 {
			to = ledger.StatusFailed
		}
		s.setStatus(w, opStatus, id, to)
		// The row is terminal now, by this writer or a sweeper: try to revive it.
		s.setStatus(w, opRevive, id, []ledger.Status{ledger.StatusQueued, ledger.StatusInProgress}[w.rng.IntN(2)])
		s.heartbeat(w, opRevive, id)
	}
}

// setStatus calls SetStatus as w and logs it; the kind says whether it is a
// move of w's own live row or a revive attempt.
func (s *storm) setStatus(w *writer, kind opKind, id string, to ledger.Status) ledger.StatusResult {
	c, cancel := opCtx()
	defer cancel()
	sent := time.Now()
	res, err := s.l.SetStatus(c, id, to, ledger.Change{Actor: w.name, Reason: "storm", Result: "done by " + w.name,
		Detail: map[string]any{"writer": w.name}})
	w.log(op{kind: kind, id: id, what: "SetStatus " + string(to), sent: sent, applied: err == nil && res.Outcome == ledger.OutcomeApplied,
		to: to, status: res.Status, outcome: res.Outcome.String(), err: errText(err)})
	return res
}

// heartbeat calls Heartbeat as w and logs it; it reports whether the row is live.
func (s *storm) heartbeat(w *writer, kind opKind, id string) bool {
	c, cancel := opCtx()
	defer cancel()
	sent := time.Now()
	hb, err := s.l.Heartbeat(c, id)
	w.log(op{kind: kind, id: id, what: "Heartbeat", sent: sent, live: err == nil && hb.Live, status: hb.Status, err: errText(err)})
	return err == nil && hb.Live
}

// fleetWorker tends a fleet of in_progress delegations with HeartbeatMany,
// completes some, silently forgets some (they must be swept), and now and
// then pauses for about the timeout (with mixed timeouts, about one class's
// timeout), so its whole fleet races the sweepers.
func (s *storm) fleetWorker(ctx context.Context, w *writer) {
	const fleetSize = 15
	var tended []string
	for ctx.Err() == nil {
		for len(tended) < fleetSize {
			id := w.newID()
			own, _ := s.rowTimeout(w)
			c, cancel := opCtx()
			sent := time.Now()
			res, err := s.l.Insert(c, ledger.NewDelegation{DelegationID: id, CallerID: w.name, CalleeID: "fleet",
				Status: ledger.StatusInProgress, Timeout: time.Minute, HeartbeatTimeout: own})
			cancel()
			w.log(op{kind: opInsert, id: id, what: "Insert in_progress", sent: sent, applied: err == nil && res.Outcome == ledger.Inserted,
				to: ledger.StatusInProgress, status: ledger.StatusInProgress, outcome: res.Outcome.String(), err: errText(err)})
			if err == nil {
				tended = append(tended, id)
			}
		}
		pause := w.between(150*time.Millisecond, 700*time.Millisecond)
		if w.rng.IntN(8) == 0 {
			_, timeout := s.rowTimeout(w)
			pause = w.between(timeout-scaled(500*time.Millisecond, timeout), timeout+scaled(500*time.Millisecond, timeout))
		}
		if !sleep(ctx, pause) {
			break
		}
		c, cancel := opCtx()
		sent := time.Now()
		notLive, err := s.l.HeartbeatMany(c, tended)
		cancel()
		acked := time.Now()
		for _, id := range tended {
			dead := slices.Contains(notLive, id)
			w.log(op{kind: opHeartbeat, id: id, what: "HeartbeatMany", sent: sent, acked: acked, live: err == nil && !dead, err: errText(err)})
		}
		tended = slices.DeleteFunc(tended, func(id string) bool { return slices.Contains(notLive, id) })
		if len(tended) > 0 && w.rng.IntN(10) < 3 {
			i := w.rng.IntN(len(tended))
			s.setStatus(w, opStatus, tended[i], ledger.StatusCompleted)
			tended = slices.Delete(tended, i, i+1)
		}
		if len(tended) > 0 && w.rng.IntN(20) == 0 {
			i := w.rng.IntN(len(tended)) // forgotten: never beaten again
			tended = slices.Delete(tended, i, i+1)
		}
	}
}

// abandoner inserts delegations and walks away: in_progress rows that will
// time out, and queued, dispatched or in_progress rows with a deadline of a
// second or two.
func (s *storm) abandoner(ctx context.Context, w *writer) {
	for sleep(ctx, w.between(50*time.Millisecond, 250*time.Millisecond)) {
		for range 1 + w.rng.IntN(5) {
			id := w.newID()
			own, _ := s.rowTimeout(w)
			n := ledger.NewDelegation{DelegationID: id, CallerID: w.name, CalleeID: "nobody", TaskPreview: "abandoned", Timeout: time.Minute,
				HeartbeatTimeout: own}
			switch w.rng.IntN(4) {
			case 0, 1:
				n.Status = ledger.StatusInProgress
			case 2:
				n.Status = []ledger.Status{ledger.StatusQueued, ledger.StatusDispatched}[w.rng.IntN(2)]
				n.Timeout = w.between(500*time.Millisecond, 2*time.Second)
			case 3:
				n.Status = ledger.StatusInProgress
				n.Timeout = w.between(time.Second, 3*time.Second)
			}
			c, cancel := opCtx()
			sent := time.Now()
			res, err := s.l.Insert(c, n)
			cancel()
			w.log(op{kind: opInsert, id: id, what: "Insert " + string(n.Status), sent: sent, applied: err == nil && res.Outcome == ledger.Inserted,
				to: n.Status, status: n.Status, outcome: res.Outcome.String(), err: errText(err)})
		}
	}
}

// rawWorker does a worker's whole life in SQL on its own connection, as a
// service written in another language would: insert, dispatch, start,
// heartbeat (sometimes inside a transaction that holds the row lock for a
// while), finish, and try to revive the finished row.
func (s *storm) rawWorker(ctx context.Context, w *writer) {
	var conn *pgx.Conn
	exec := func(sql string, args ...any) (pgconn.CommandTag, time.Time, error) {
		c, cancel := opCtx()
		defer cancel()
		sent := time.Now()
		tag, err := conn.Exec(c, sql, args...)
		return tag, sent, err
	}
	for ctx.Err() == nil {
		conn = s.liveConn(w)
		id := w.newID()
		own, timeout := s.rowTimeout(w)
		var ownSecs *float64 // NULL: the global timeout
		if own > 0 {
			ownSecs = new(own.Seconds())
		}
		tag, sent, err := exec(`INSERT INTO delegations (delegation_id, caller_id, callee_id, task_preview, deadline, heartbeat_timeout)
			VALUES ($1, $2, 'raw-worker', 'raw task', now() + interval '1 minute', $3::float8 * interval '1 second')`, id, w.name, ownSecs)
		w.log(op{kind: opRawInsert, id: id, what: "INSERT", sent: sent, applied: err == nil && tag.RowsAffected() == 1,
			to: ledger.StatusQueued, status: ledger.StatusQueued, err: errText(err)})
		if err != nil {
			continue
		}
		tag, sent, err = exec(`UPDATE delegations SET status = 'dispatched' WHERE delegation_id = $1 AND status = 'queued'`, id)
		w.log(op{kind: opRawStatus, id: id, what: "UPDATE dispatched", sent: sent, applied: err == nil && tag.RowsAffected() == 1,
			to: ledger.StatusDispatched, err: errText(err)})
		// Entering in_progress is the first heartbeat: the writer learns its value.
		var hb time.Time
		c, cancel := opCtx()
		sent = time.Now()
		err = conn.QueryRow(c, `UPDATE delegations SET status = 'in_progress'
			WHERE delegation_id = $1 AND status IN ('queued', 'dispatched') RETURNING last_heartbeat`, id).Scan(&hb)
		cancel()
		started := err == nil
		if errors.Is(err, pgx.ErrNoRows) {
			err = nil
		}
		w.log(op{kind: opRawStatus, id: id, what: "UPDATE in_progress", sent: sent, applied: started, to: ledger.StatusInProgress, err: errText(err)})
		if started {
			w.log(op{kind: opRawBeat, id: id, what: "UPDATE in_progress (first heartbeat)", sent: sent, live: true, hb: hb})
		}
		lifetime := time.Now().Add(w.between(scaled(500*time.Millisecond, timeout), scaled(4*time.Second, timeout)))
		live := started
		for live && time.Now().Before(lifetime) &&
			sleep(ctx, w.between(scaled(300*time.Millisecond, timeout), timeout+scaled(600*time.Millisecond, timeout))) {
			live = s.rawHeartbeat(w, conn, id)
		}
		to := []string{"completed", "failed"}[w.rng.IntN(2)]
		var got string
		c, cancel = opCtx()
		sent = time.Now()
		err = conn.QueryRow(c, `UPDATE delegations SET status = $2, result_preview = 'raw result'
			WHERE delegation_id = $1 AND status IN ('queued', 'dispatched', 'in_progress') RETURNING status`, id, to).Scan(&got)
		applied := err == nil
		if errors.Is(err, pgx.ErrNoRows) {
			// Lost the race: learn the status the row has.
			err = conn.QueryRow(c, `SELECT status FROM delegations WHERE delegation_id = $1`, id).Scan(&got)
		}
		cancel()
		w.log(op{kind: opRawStatus, id: id, what: "UPDATE " + to, sent: sent, applied: applied, to: ledger.Status(to),
			status: ledger.Status(got), err: errText(err)})
		s.rawRevive(w, conn, id, ledger.Status(got))
	}
}

// rawHeartbeat beats id on conn, half the time inside a transaction that
// holds the row lock for up to 400ms before it commits (the sweepers must
// skip the row meanwhile). It logs the value written and reports liveness.
func (s *storm) rawHeartbeat(w *writer, conn *pgx.Conn, id string) bool {
	c, cancel := opCtx()
	defer cancel()
	const beat = `UPDATE delegations SET last_heartbeat = now()
		WHERE delegation_id = $1 AND status = 'in_progress' RETURNING last_heartbeat`
	sent := time.Now()
	var hb time.Time
	var err error
	what := "UPDATE last_heartbeat"
	if w.rng.IntN(2) == 0 {
		err = conn.QueryRow(c, beat, id).Scan(&hb)
	} else {
		what = "BEGIN; UPDATE last_heartbeat; pg_sleep; COMMIT"
		hold := w.between(50*time.Millisecond, 400*time.Millisecond).Seconds()
		err = pgx.BeginFunc(c, conn, func(tx pgx.Tx) error {
			if err := tx.QueryRow(c, beat, id).Scan(&hb); err != nil {
				return err
			}
			_, err := tx.Exec(c, `SELECT pg_sleep($1)`, hold)
			return err
		})
	}
	live := err == nil
	if errors.Is(err, pgx.ErrNoRows) {
		err = nil
	}
	w.log(op{kind: opRawBeat, id: id, what: what, sent: sent, live: live, hb: hb, err: errText(err)})
	return live
}

// rawRevive tries, in SQL, to change a row that is terminal with status st.
func (s *storm) rawRevive(w *writer, conn *pgx.Conn, id string, st ledger.Status) {
	attempts := []struct{ what, sql string }{
		{"UPDATE status back to in_progress", `UPDATE delegations SET status = 'in_progress' WHERE delegation_id = $1`},
		{"UPDATE status to queued", `UPDATE delegations SET status = 'queued' WHERE delegation_id = $1`},
		{"UPDATE to another terminal status", `UPDATE delegations SET status = CASE status WHEN 'completed' THEN 'failed' ELSE 'completed' END WHERE delegation_id = $1`},
		{"UPDATE last_heartbeat", `UPDATE delegations SET last_heartbeat = now() WHERE delegation_id = $1`},
		{"UPDATE task_preview", `UPDATE delegations SET task_preview = 'rewritten' WHERE delegation_id = $1`},
		{"UPDATE stuck_reason", `UPDATE delegations SET stuck_reason = NULL, deadline = now() + interval '1 hour' WHERE delegation_id = $1`},
		{"UPSERT back to queued", `INSERT INTO delegations (delegation_id, caller_id, callee_id) VALUES ($1, 'x', 'y')
			ON CONFLICT (delegation_id) DO UPDATE SET status = 'queued', last_heartbeat = NULL`},
	}
	a := attempts[w.rng.IntN(len(attempts))]
	c, cancel := opCtx()
	defer cancel()
	sent := time.Now()
	tag, err := conn.Exec(c, a.sql, id)
	o := op{kind: opRawRevive, id: id, what: a.what, sent: sent, status: st, applied: err == nil && tag.RowsAffected() > 0}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.ConstraintName != "" {
		o.outcome = "refused:" + pgErr.ConstraintName
	} else {
		o.err = errText(err)
	}
	w.log(o)
}

// reviver picks rows that recently became terminal and tries to change them
// every way it can, through the ledger and in SQL.
func (s *storm) reviver(ctx context.Context, w *writer) {
	for sleep(ctx, w.between(50*time.Millisecond, 200*time.Millisecond)) {
		conn := s.liveConn(w)
		c, cancel := opCtx()
		rows, err := conn.Query(c, `SELECT delegation_id, to_status FROM delegation_events
			WHERE to_status = ANY($1) ORDER BY id DESC LIMIT 30`, terminalNames)
		var picks []struct {
			id string
			st ledger.Status
		}
		if err == nil {
			for rows.Next() {
				var id, st string
				if err := rows.Scan(&id, &st); err == nil {
					picks = append(picks, struct {
						id string
						st ledger.Status
					}{id, ledger.Status(st)})
				}
			}
			rows.Close()
			err = rows.Err()
		}
		cancel()
		if err != nil {
			s.errors.Add(1)
			w.log(op{kind: opRevive, what: "pick terminal rows", err: err.Error()})
			continue
		}
		for range 3 {
			if len(picks) == 0 {
				break
			}
			p := picks[w.rng.IntN(len(picks))]
			switch w.rng.IntN(4) {
			case 0:
				to := ledger.Statuses[w.rng.IntN(len(ledger.Statuses))]
				for to == p.st {
					to = ledger.Statuses[w.rng.IntN(len(ledger.Statuses))]
				}
				s.setStatus(w, opRevive, p.id, to)
			case 1:
				s.heartbeat(w, opRevive, p.id)
			case 2:
				c, cancel := opCtx()
				sent := time.Now()
				notLive, err := s.l.HeartbeatMany(c, []string{p.id})
				cancel()
				w.log(op{kind: opRevive, id: p.id, what: "HeartbeatMany", sent: sent, live: err == nil && len(notLive) == 0,
					status: p.st, err: errText(err)})
			default:
				s.rawRevive(w, conn, p.id, p.st)
			}
		}
	}
}

// notification is one delegation_stuck payload.
type notification struct {
	DelegationID string `json:"delegation_id"`
	Reason       string `json:"reason"`
	Sentinel     bool   `json:"sentinel"`
}

// listen collects the notifications of channel on a dedicated connection
// until it receives the sentinel. Start it before the daemons. With
// reconnect (a failover) a broken connection is replaced and LISTEN issued
// again: what was notified meanwhile is not received.
func listen(t *testing.T, dsn string, reconnect bool) (got func() []notification, wait func(time.Duration) error) {
	conn := connect(t, dsn)
	if _, err := conn.Exec(context.Background(), "LISTEN "+stormChannel); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var notes []notification
	var loopErr error
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	relisten := func() *pgx.Conn {
		for sleep(ctx, 20*time.Millisecond) {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			c, err := pgx.Connect(cctx, dsn)
			if err == nil {
				_, err = c.Exec(cctx, "LISTEN "+stormChannel)
			}
			cancel()
			if err != nil && c != nil {
				_ = c.Close(context.Background())
			}
			if err != nil {
				continue
			}
			return c
		}
		return nil
	}
	go func() {
		defer close(done)
		for {
			n, err := conn.WaitForNotification(ctx)
			if err != nil && reconnect && ctx.Err() == nil && conn.IsClosed() {
				if c := relisten(); c != nil {
					defer c.Close(context.Background())
					conn = c
					continue
				}
			}
			if err != nil {
				mu.Lock()
				loopErr = err
				mu.Unlock()
				return
			}
			var p notification
			if err := json.Unmarshal([]byte(n.Payload), &p); err != nil {
				p = notification{DelegationID: "unparsable: " + n.Payload}
			}
			if p.Sentinel {
				return
			}
			mu.Lock()
			notes = append(notes, p)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	got = func() []notification {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(notes)
	}
	wait = func(timeout time.Duration) error {
		mustExec(t, dsn, `SELECT pg_notify('`+stormChannel+`', '{"sentinel":true}')`)
		select {
		case <-done:
			mu.Lock()
			defer mu.Unlock()
			if loopErr != nil {
				return fmt.Errorf("listener: %w", loopErr)
			}
			return nil
		case <-time.After(timeout):
			return errors.New("the sentinel notification did not arrive")
		}
	}
	return got, wait
}

// terminalMonitor snapshots every terminal row (its whole text) every
// interval and reports any terminal row that changed or vanished.
type terminalMonitor struct {
	conn      *pgx.Conn
	seen      map[string]string // id -> md5 of the row
	snapshots int
	changed   []string
	changedAt []int // the snapshot that saw each change

	// dsn, when set, is where the monitor connects again after its
	// connection broke (a failover); the connections it opens are closed
	// by close.
	dsn    string
	extra  []*pgx.Conn
	failed int // snapshots that failed (with dsn set)
}

// close closes the connections the monitor opened itself.
func (m *terminalMonitor) close() {
	for _, c := range m.extra {
		_ = c.Close(context.Background())
	}
}

func (m *terminalMonitor) snapshot() error {
	ctx, cancel := opCtx()
	defer cancel()
	if m.dsn != "" && m.conn.IsClosed() {
		c, err := pgx.Connect(ctx, m.dsn)
		if err != nil {
			m.failed++
			return nil
		}
		m.extra = append(m.extra, c)
		m.conn = c
	}
	rows, err := m.conn.Query(ctx, `SELECT delegation_id, md5(d::text) FROM delegations AS d WHERE status = ANY($1)`, terminalNames)
	if err != nil {
		if m.dsn != "" {
			m.failed++
			return nil
		}
		return err
	}
	now := map[string]string{}
	for rows.Next() {
		var id, sum string
		if err := rows.Scan(&id, &sum); err != nil {
			return err
		}
		now[id] = sum
	}
	if err := rows.Err(); err != nil {
		if m.dsn != "" {
			m.failed++
			return nil
		}
		return err
	}
	m.snapshots++
	for id, sum := range m.seen {
		if got, ok := now[id]; !ok || got != sum {
			m.changed = append(m.changed, fmt.Sprintf("terminal row %q changed or vanished after snapshot %d", id, m.snapshots-1))
			m.changedAt = append(m.changedAt, m.snapshots)
			delete(m.seen, id) // each change reported once
		}
	}
	maps.Copy(m.seen, now)
	return nil
}

// violations collects failed checks; the first few are reported in full.
type violations struct {
	t      *testing.T
	checks int64
	n      int64
	byRule map[string]int // failures by the check's message format
}

func (v *violations) check(ok bool, format string, args ...any) {
	v.t.Helper()
	v.checks++
	if ok {
		return
	}
	v.n++
	if v.byRule == nil {
		v.byRule = map[string]int{}
	}
	v.byRule[format]++
	if v.byRule[format] <= 5 {
		v.t.Errorf("violation: "+format, args...)
	}
}

// summary lists the failed checks by rule.
func (v *violations) summary() string {
	var lines []string
	for _, f := range slices.Sorted(maps.Keys(v.byRule)) {
		lines = append(lines, fmt.Sprintf("%6d x %s", v.byRule[f], f))
	}
	return strings.Join(lines, "\n")
}

// row is a delegation as it ended.
type row struct {
	status, reason string
	lastHeartbeat  *time.Time
	deadline       time.Time
	ownTimeout     time.Duration // its own heartbeat_timeout; 0 when NULL (the global one)
	markedAt       *time.Time    // a stuck row: its stuck event's time (the marking transaction's now())
}

// timeout is the heartbeat timeout the row is swept by: its own, or global.
// A terminal row is frozen, so a stuck row's is the one it was marked by.
func (r row) timeout(global time.Duration) time.Duration { return cmp.Or(r.ownTimeout, global) }

// event is an audit event.
type event struct {
	id                   int64
	delegationID         string
	from, to             string
	actor, reason        string
	at                   time.Time
	tx                   string
	heartbeatTimeoutSecs *float64
	heartbeatTimeoutOwn  bool // detail {"heartbeat_timeout":"own"}
}

func TestRaceStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("the race storm does not run with -short")
	}
	// Not parallel: the fault tests, which are, start after it.
	raceStorm(t, stormOptions{})
}

// TestRaceStormThroughPgBouncer is the storm with the daemons and the
// ledger writers behind a real PgBouncer in transaction mode
// (database.pooler: transaction; the writers' pool in pgx's exec mode). The
// raw writers, which keep session settings, and the listener stay on direct
// connections, as such clients must.
func TestRaceStormThroughPgBouncer(t *testing.T) {
	if testing.Short() {
		t.Skip("the race storm does not run with -short")
	}
	raceStorm(t, stormOptions{pooled: true})
}

// stormPgBouncerPoolSize is the server connections per user of the storm's
// pgbouncer: fewer than its clients, so that they share them.
const stormPgBouncerPoolSize = 6

// stormOptions are the variants of the storm.
type stormOptions struct {
	pooled bool      // through pgbouncer in transaction mode
	mixed  bool      // rows with their own heartbeat timeouts (storm_mixed_test.go)
	fo     *failover // fail the primary over to a standby in the middle (failover_test.go)
}

// raceStorm runs the storm in the variant o.
func raceStorm(t *testing.T, o stormOptions) {
	pooled, fo := o.pooled, o.fo
	duration := stormDuration(t)
	ctx := context.Background()
	var rdb *roleDB
	if fo != nil {
		rdb = fo.start(t)
	} else {
		rdb = newRoleDB(t)
	}

	writersURL, daemonURL := rdb.admin, rdb.daemon
	var poolerEnv []string
	if pooled {
		b := testdb.StartPgBouncer(t, pgserver.PgBouncerOptions{Users: []string{rdb.daemonRole}, PoolSize: stormPgBouncerPoolSize})
		writersURL, daemonURL = rdb.db.ViaPgBouncer(t, b), viaPgBouncer(t, b, rdb.daemon)
		poolerEnv = []string{"SWEEPER_DATABASE_POOLER=transaction"}
	}
	pcfg, err := pgxpool.ParseConfig(writersURL)
	if err != nil {
		t.Fatal(err)
	}
	if pooled {
		pcfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
	}
	pcfg.MaxConns = 20
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s := &storm{dsn: rdb.admin, l: ledger.New(pool), mixed: o.mixed}

	// Every row a sweep marks takes a few milliseconds more, so that each
	// batch stays open long enough for writers to collide with it: a sweep
	// that did not lock what it claims, or did not re-check it, would
	// overwrite rows that changed meanwhile.
	slowSweep(t, rdb.admin, stormRowDelay)

	notes, waitNotes := listen(t, rdb.admin, fo != nil)
	mon := &terminalMonitor{conn: connect(t, rdb.admin), seen: map[string]string{}}
	if fo != nil {
		mon.dsn = rdb.admin
		t.Cleanup(mon.close)
	}

	daemonEnv := append([]string{
		"SWEEPER_DATABASE_URL=" + daemonURL,
		"SWEEPER_SWEEP_SCHEDULE=@every 1s",
		"SWEEPER_SWEEP_HEARTBEAT_TIMEOUT=" + stormTimeout.String(),
		fmt.Sprintf("SWEEPER_SWEEP_BATCH_SIZE=%d", stormBatchSize),
		"SWEEPER_SWEEP_NOTIFY_CHANNEL=" + stormChannel,
	}, poolerEnv...)
	if fo != nil {
		daemonEnv = append(daemonEnv, fo.daemonEnv()...)
	}
	var daemons []*proc
	for i := range stormDaemons {
		daemons = append(daemons, startDaemon(t, fmt.Sprintf("daemon-%d", i+1), daemonEnv))
	}

	// The writers.
	kinds := []struct {
		kind string
		n    int
		run  func(context.Context, *writer)
	}{
		{"ledger-diligent", 8, func(ctx context.Context, w *writer) {
			s.ledgerWorker(ctx, w, func(timeout time.Duration) time.Duration {
				return w.between(scaled(100*time.Millisecond, timeout), scaled(400*time.Millisecond, timeout))
			})
		}},
		{"ledger-flaky", 4, func(ctx context.Context, w *writer) {
			s.ledgerWorker(ctx, w, func(timeout time.Duration) time.Duration {
				return w.between(timeout-scaled(800*time.Millisecond, timeout), timeout+scaled(800*time.Millisecond, timeout))
			})
		}},
		{"fleet", 3, s.fleetWorker},
		{"abandoner", 2, s.abandoner},
		{"raw", 4, s.rawWorker},
		{"reviver", 3, s.reviver},
	}
	if o.mixed {
		// Writers that beat each row right at its own boundary.
		kinds = append(kinds, []struct {
			kind string
			n    int
			run  func(context.Context, *writer)
		}{{"edge", 3, s.edgeWorker}, {"raw-edge", 3, s.rawEdgeWorker}}...)
	}
	wctx, stopWriters := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var writers []*writer
	for _, k := range kinds {
		for i := range k.n {
			w := &writer{name: fmt.Sprintf("%s-%d", k.kind, i+1), kind: k.kind, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(len(writers))))}
			if k.kind == "raw" || k.kind == "reviver" || k.kind == "raw-edge" {
				w.conn = s.rawConn(t, w.name)
			}
			writers = append(writers, w)
			wg.Go(func() { k.run(wctx, w) })
		}
	}
	if fo != nil {
		wg.Go(func() { fo.probe.run(wctx, rdb.admin) })
	}
	t.Logf("storm: %d writers, %d daemons (as role %s), heartbeat timeout %s, batch %d, for %s, through pgbouncer: %v, rows' own timeouts: %v, failover: %v",
		len(writers), len(daemons), rdb.daemonRole, stormTimeout, stormBatchSize, duration, pooled, o.mixed, fo != nil)

	// Snapshot terminal rows while the storm runs; fail over in the middle.
	end := time.Now().Add(duration)
	failAt := time.Now().Add(duration / 2)
	for time.Now().Before(end) {
		if fo != nil && fo.promotedAt.IsZero() && time.Now().After(failAt) {
			fo.run(t, daemons, rdb.admin)
			fo.lossSnapshot = mon.snapshots + 1
		}
		if err := mon.snapshot(); err != nil {
			t.Fatalf("snapshot of terminal rows: %v", err)
		}
		time.Sleep(min(time.Second, time.Until(end)))
	}
	stopWriters()
	wg.Wait()
	for _, w := range writers {
		for _, c := range w.reconnects {
			_ = c.Close(ctx)
		}
	}
	for _, d := range daemons {
		if d.Exited() {
			t.Fatalf("%s exited during the storm: %v\n%s", d.Name, d.ExitErr(), d.Logs())
		}
	}

	// The finisher completes what is still in flight, racing the sweepers,
	// so that nothing can become eligible after it.
	fin := &writer{name: "finisher", kind: "finisher"}
	finConn := s.rawConn(t, fin.name)
	sent := time.Now()
	frows, err := finConn.Query(ctx, `UPDATE delegations SET status = 'completed', result_preview = 'finished after the storm'
		WHERE status IN ('queued', 'dispatched', 'in_progress') RETURNING delegation_id`)
	if err != nil {
		t.Fatal(err)
	}
	finished, err := pgx.CollectRows(frows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range finished {
		fin.log(op{kind: opFinish, id: id, what: "UPDATE completed", sent: sent, applied: true, to: ledger.StatusCompleted, status: ledger.StatusCompleted})
	}
	writers = append(writers, fin)

	// Each daemon completes two more runs: the second began after the
	// finisher, so no run can mark anything any more.
	before := make([]float64, len(daemons))
	for i, d := range daemons {
		m := d.MustMetrics(t)
		before[i] = m[runsOK] + m[runsError]
	}
	var sweptByMetrics [2]float64
	perDaemon := map[string]float64{}
	var runErrors float64
	for i, d := range daemons {
		eventually(t, time.Minute, d.Name+" to run twice after the storm", func() bool {
			m, _, err := d.Metrics()
			return err == nil && m[runsOK]+m[runsError] >= before[i]+2
		})
		m, body, _ := d.Metrics()
		sweptByMetrics[0] += m[sweptHB]
		sweptByMetrics[1] += m[sweptDL]
		perDaemon[d.Name] = m[sweptHB] + m[sweptDL]
		runErrors += m[runsError]
		assertNoSecret(t, d.Name+" /metrics", body)
		if code, body, err := d.Get("/readyz"); err != nil || code != 200 {
			t.Errorf("%s /readyz after the storm: %d %q %v", d.Name, code, body, err)
		}
	}
	if err := mon.snapshot(); err != nil {
		t.Fatal(err)
	}
	for _, d := range daemons {
		if code := d.Stop(t, syscall.SIGTERM, 60*time.Second); code != 0 {
			t.Errorf("%s exited %d after SIGTERM\n%s", d.Name, code, d.Logs())
		}
		assertNoSecret(t, d.Name+" logs", d.Logs())
	}
	if err := waitNotes(time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := mon.snapshot(); err != nil {
		t.Fatal(err)
	}

	// What the database says.
	rows := map[string]row{}
	rr, err := pool.Query(ctx, `SELECT delegation_id, status, COALESCE(stuck_reason, ''), last_heartbeat, deadline,
		EXTRACT(EPOCH FROM heartbeat_timeout)::float8 FROM delegations`)
	if err != nil {
		t.Fatal(err)
	}
	for rr.Next() {
		var id string
		var r row
		var own *float64
		if err := rr.Scan(&id, &r.status, &r.reason, &r.lastHeartbeat, &r.deadline, &own); err != nil {
			t.Fatal(err)
		}
		if own != nil {
			r.ownTimeout = time.Duration(*own * float64(time.Second))
		}
		rows[id] = r
	}
	if err := rr.Err(); err != nil {
		t.Fatal(err)
	}
	var events []event
	er, err := pool.Query(ctx, `SELECT id, delegation_id, COALESCE(from_status, ''), to_status, actor, COALESCE(reason, ''), at,
		xmin::text, (detail->>'heartbeat_timeout_seconds')::float8, COALESCE(detail->>'heartbeat_timeout' = 'own', false)
		FROM delegation_events ORDER BY delegation_id, id`)
	if err != nil {
		t.Fatal(err)
	}
	for er.Next() {
		var e event
		if err := er.Scan(&e.id, &e.delegationID, &e.from, &e.to, &e.actor, &e.reason, &e.at, &e.tx, &e.heartbeatTimeoutSecs, &e.heartbeatTimeoutOwn); err != nil {
			t.Fatal(err)
		}
		events = append(events, e)
	}
	if err := er.Err(); err != nil {
		t.Fatal(err)
	}

	for _, e := range events {
		if r, ok := rows[e.delegationID]; ok && e.to == "stuck" {
			r.markedAt = &e.at
			rows[e.delegationID] = r
		}
	}
	var all []op
	for _, w := range writers {
		all = append(all, w.ops...)
	}
	v := &violations{t: t}
	fig := checkStorm(t, v, all, rows, events, notes(), mon, stormTimeout, fo)
	if o.mixed {
		checkMixed(t, v, all, rows, fig)
	}

	// The replicas' own accounts: together they marked each stuck row once.
	switch {
	case fo == nil:
		v.check(int64(sweptByMetrics[0]) == fig[report.StuckHeartbeat] && int64(sweptByMetrics[1]) == fig[report.StuckDeadline],
			"the daemons' sweeper_swept_total sum to %v (heartbeat_timeout, deadline_exceeded); the database has %d and %d",
			sweptByMetrics, fig[report.StuckHeartbeat], fig[report.StuckDeadline])
		v.check(runErrors == 0, "%v sweep runs failed during the storm", runErrors)
		v.check(s.errors.Load() == 0, "%d writer errors outside the log", s.errors.Load())
	case fo.sync:
		// A batch counted was acknowledged, so it is on the new primary; a
		// batch whose commit was cut off by the kill may be there too.
		v.check(int64(sweptByMetrics[0]) <= fig[report.StuckHeartbeat] && int64(sweptByMetrics[1]) <= fig[report.StuckDeadline],
			"the daemons' sweeper_swept_total sum to %v (heartbeat_timeout, deadline_exceeded): more than the database has, %d and %d",
			sweptByMetrics, fig[report.StuckHeartbeat], fig[report.StuckDeadline])
	}
	if fo != nil {
		t.Logf("failover: the daemons counted %v rows swept (heartbeat_timeout, deadline_exceeded), the new primary has %d and %d; %v runs failed",
			sweptByMetrics, fig[report.StuckHeartbeat], fig[report.StuckDeadline], runErrors)
		fo.check(t, v, rdb, fig)
	}

	fig[report.Writers] = int64(len(writers) - 1) // the finisher ran after the storm
	fig[report.Daemons] = int64(len(daemons))
	fig[report.Checks] = v.checks
	fig[report.Violations] = v.n
	fig["duration_seconds"] = int64(duration.Seconds())
	fig["terminal_snapshots"] = int64(mon.snapshots)
	fig["finisher_completed"] = int64(len(finished))
	fig["daemon_run_errors"] = int64(runErrors)
	if pooled {
		fig["pgbouncer_server_conns_per_user"] = stormPgBouncerPoolSize
	}
	t.Logf("stuck rows by daemon (sweeper_swept_total): %v", perDaemon)
	record(t, fig)
	if v.n > 0 {
		t.Fatalf("%d of %d checks failed:\n%s", v.n, v.checks, v.summary())
	}
}

// checkStorm checks the writers' log, the rows, the events and the
// notifications against each other, and returns the storm's figures.
//
// With fo (a failover), operations that failed because of it are
// ambiguous: each may or may not have taken effect. Notifications may be
// missed (NOTIFY is delivered at most once). Under asynchronous
// replication, the checks of the writers' log against the outcome count
// the acknowledged writes lost instead of failing (fo.loss).
func checkStorm(t *testing.T, v *violations, ops []op, rows map[string]row, events []event, notes []notification,
	mon *terminalMonitor, global time.Duration, fo *failover) report.Figures {
	t.Helper()
	fig := report.Figures{}
	byKind := map[string]int{}

	// Per row: its events in order, and its stuck event.
	evByRow := map[string][]event{}
	for _, e := range events {
		evByRow[e.delegationID] = append(evByRow[e.delegationID], e)
	}
	stuckEvent := map[string]event{}

	// 1. Exactly one event per transition: the events of each row form a
	// chain from its insert to its status, each step a strictly higher rank.
	for id, r := range rows {
		evs := evByRow[id]
		ok := len(evs) > 0 && evs[0].from == ""
		for i := 1; ok && i < len(evs); i++ {
			prev, cur := evs[i-1], evs[i]
			ok = cur.from == prev.to && ledger.Status(cur.to).Rank() > ledger.Status(cur.from).Rank()
		}
		ok = ok && evs[len(evs)-1].to == r.status
		v.check(ok, "row %q (%s): events do not form a chain ending at its status: %v", id, r.status, evs)
		for _, e := range evs {
			if e.to == "stuck" {
				stuckEvent[id] = e
			}
		}
	}
	for id := range evByRow {
		_, ok := rows[id]
		v.check(ok, "events of %q, which is not a row", id)
	}
	var transitions int64
	for _, e := range events {
		if e.from != "" {
			transitions++
		}
	}
	fig[report.Transitions] = transitions
	fig[report.Inserts] = int64(len(rows))

	// 2. Every stuck row was marked by a sweeper, once, for a reason that
	// held by the database clock of the marking transaction (event.at is
	// that transaction's now(), the clock the sweep judged by), under the
	// row's own heartbeat timeout when it has one.
	stuck, stuckHB, stuckDL := 0, 0, 0
	for id, r := range rows {
		if r.status != "stuck" {
			continue
		}
		stuck++
		e, ok := stuckEvent[id]
		v.check(ok && e.actor == "sweeper" && e.reason == r.reason, "stuck row %q: event %+v, stuck_reason %q", id, e, r.reason)
		switch r.reason {
		case "heartbeat_timeout":
			stuckHB++
			timeout := r.timeout(global)
			v.check(r.lastHeartbeat != nil && e.at.Sub(*r.lastHeartbeat) > timeout,
				"row %q marked stuck at %s while its last heartbeat %v was fresh (timeout %s)", id, e.at, r.lastHeartbeat, timeout)
			// The detail records the timeout the row was judged by: the
			// daemons' global one, or "own" for a row with its own.
			if r.ownTimeout > 0 {
				v.check(e.heartbeatTimeoutOwn && e.heartbeatTimeoutSecs == nil,
					"row %q (own timeout %s): the event's detail records heartbeat timeout %v, own %v", id, r.ownTimeout, e.heartbeatTimeoutSecs, e.heartbeatTimeoutOwn)
			} else {
				v.check(!e.heartbeatTimeoutOwn && e.heartbeatTimeoutSecs != nil && *e.heartbeatTimeoutSecs == global.Seconds(),
					"row %q: the event's detail records heartbeat timeout %v, the daemons run with %s", id, e.heartbeatTimeoutSecs, global)
			}
		case "deadline_exceeded":
			stuckDL++
			v.check(e.at.After(r.deadline), "row %q marked deadline_exceeded at %s, before its deadline %s", id, e.at, r.deadline)
		default:
			v.check(false, "row %q stuck with reason %q", id, r.reason)
		}
	}
	stuckEvents := 0
	for _, e := range events {
		if e.to == "stuck" {
			stuckEvents++
		}
	}
	v.check(stuckEvents == stuck, "%d stuck events for %d stuck rows", stuckEvents, stuck)
	v.check(stuckHB > 0 && stuckDL > 0, "the storm swept %d rows by heartbeat and %d by deadline: want both", stuckHB, stuckDL)
	fig[report.Stuck], fig[report.StuckHeartbeat], fig[report.StuckDeadline] = int64(stuck), int64(stuckHB), int64(stuckDL)

	// 3. Whole batches: each sweep transaction's events are one batch.
	perTx := map[string]int{}
	for _, e := range events {
		if e.to == "stuck" {
			perTx[e.tx]++
		}
	}
	for tx, n := range perTx {
		v.check(n <= stormBatchSize, "sweep transaction %s marked %d rows, more than a batch (%d)", tx, n, stormBatchSize)
	}
	fig["sweep_transactions"] = int64(len(perTx))

	// 4. One notification per stuck transition, with its reason.
	lossy := fo.loss(v)
	seenNote := map[string]int{}
	for _, n := range notes {
		seenNote[n.DelegationID]++
		r, ok := rows[n.DelegationID]
		// Asynchronous failover: a stuck mark notified, then lost.
		lossy(ok && r.status == "stuck" && r.reason == n.Reason, "notification %+v for a row that is %+v", n, r)
	}
	missed, missedAfter := 0, 0
	for id, r := range rows {
		if r.status != "stuck" {
			continue
		}
		if fo != nil && seenNote[id] == 0 {
			// In flight at the kill, or sent before the listener was back.
			missed++
			if stuckEvent[id].at.After(fo.promotedAt) {
				missedAfter++
			}
			continue
		}
		// Asynchronous failover: a stuck mark lost is marked and notified again.
		lossy(seenNote[id] == 1, "stuck row %q notified %d times", id, seenNote[id])
	}
	if fo == nil {
		v.check(len(notes) == stuck, "%d notifications for %d stuck rows", len(notes), stuck)
	} else {
		fig["failover_notifications_missed"] = int64(missed)
		t.Logf("failover: %d of %d stuck rows were not notified to the listener (%d of them marked after the promotion)", missed, stuck, missedAfter)
	}
	fig[report.Notifications] = int64(len(notes))

	// 5. No terminal row changed while the storm ran.
	for i, c := range mon.changed {
		if fo != nil && !fo.sync && mon.changedAt[i] <= fo.lossSnapshot {
			lossy(false, "%s (the first snapshot after the failover)", c)
			continue
		}
		v.check(false, "%s", c)
	}
	v.check(mon.snapshots >= 3, "only %d snapshots of terminal rows", mon.snapshots)

	// 6. The writers' log against the outcome.
	wantEvents := map[string]int64{"sweeper": int64(stuck)}
	maybeEvents := map[string]int64{} // ambiguous operations that may have written one
	var live, lost, revives, ambiguous, unknown int64
	// After an ambiguous operation its writer does not know the state of
	// the row: its later operations on the row are not checked against the
	// outcome (the rows and events are, above).
	unsure := map[string]time.Time{}
	if fo != nil {
		for _, o := range ops {
			if fo.ambiguous(o) && o.id != "" {
				if first, ok := unsure[o.id]; !ok || o.sent.Before(first) {
					unsure[o.id] = o.sent
				}
			}
		}
	}
	for _, o := range ops {
		byKind[string(o.kind)]++
		if fo != nil && fo.ambiguous(o) {
			ambiguous++
			switch o.kind {
			case opInsert:
				maybeEvents["db:postgres"]++
			case opRawInsert, opStatus, opRawStatus:
				maybeEvents[o.writer]++
			}
			continue
		}
		lossy(o.err == "", "%s %s %q: unexpected error %s", o.writer, o.what, o.id, o.err)
		if o.err != "" {
			continue
		}
		if first, ok := unsure[o.id]; ok && !o.sent.Before(first) {
			unknown++
			if o.applied && o.kind != opRevive && o.kind != opRawRevive {
				wantEvents[o.writer]++
			}
			continue
		}
		r, exists := rows[o.id]
		final := ledger.Status(r.status)
		switch o.kind {
		case opInsert:
			lossy(o.applied && exists, "%s: insert of %q: %s", o.writer, o.id, o.outcome)
			wantEvents["db:postgres"]++
		case opRawInsert:
			lossy(o.applied && exists, "%s: raw insert of %q not applied", o.writer, o.id)
			wantEvents[o.writer]++
		case opStatus, opRawStatus, opFinish:
			if o.applied {
				wantEvents[o.writer]++
				// A finished row stays as its writer was told.
				if o.to.Terminal() {
					lossy(final == o.to, "%s was told %q moved to %s, the row ended %s", o.writer, o.id, o.to, final)
				}
				continue
			}
			if o.status.Terminal() {
				lost++
				lossy(final == o.status, "%s was told %q is %s, the row ended %s", o.writer, o.id, o.status, final)
			}
			// A move that did not apply to a row still in flight:
			// only a backward or replayed move may be refused.
			if o.status != "" && !o.status.Terminal() {
				lossy(o.to.Rank() <= o.status.Rank(), "%s: move of %q to %s refused (%s) while it was %s", o.writer, o.id, o.to, o.outcome, o.status)
			}
		case opHeartbeat, opRawBeat:
			if o.live {
				live++
				if r.reason == "heartbeat_timeout" {
					// The heartbeat committed before the row was marked
					// (after, it is refused): it wrote a last_heartbeat of
					// at least hb, or at least the time it was sent, and the
					// row may be marked only when that is older than the
					// timeout at the sweep's clock.
					lb := o.hb
					if lb.IsZero() {
						lb = o.sent.Truncate(time.Microsecond)
					}
					e := stuckEvent[o.id]
					timeout := r.timeout(global)
					lossy(e.at.Sub(lb) > timeout,
						"%s: heartbeat of %q (%s) acknowledged live, written at or after %s, yet the row was marked stuck at %s: %s later (timeout %s)",
						o.writer, o.id, o.what, lb.Format(time.RFC3339Nano), e.at.Format(time.RFC3339Nano), e.at.Sub(lb), timeout)
				}
				continue
			}
			lost++
			// Told the row is not live: it was terminal and stays so.
			lossy(final.Terminal(), "%s: heartbeat of %q told not live, row ended %s", o.writer, o.id, final)
			lossy(o.status == "" || o.status == final, "%s: heartbeat of %q told %s, row ended %s", o.writer, o.id, o.status, final)
		case opRevive, opRawRevive:
			if o.id == "" {
				continue
			}
			revives++
			refused := !o.applied && !o.live &&
				(o.kind == opRevive && (o.outcome == "" || o.outcome == ledger.OutcomeRejectedTerminal.String()) ||
					o.kind == opRawRevive && o.outcome == "refused:delegations_terminal_frozen")
			// Asynchronous failover: the terminal status may be what was lost.
			lossy(refused, "%s: revive of terminal %q (%s) was not refused: applied=%v live=%v outcome=%q",
				o.writer, o.id, o.what, o.applied, o.live, o.outcome)
			lossy(final.Terminal() && (o.status == "" || o.status == final), "%s: revive of %q: told %s, row ended %s", o.writer, o.id, o.status, final)
		}
	}
	// Every event has its writer: per actor, the events equal the changes
	// the writers were told they made (and the sweepers' stuck rows).
	gotEvents := map[string]int64{}
	for _, e := range events {
		gotEvents[e.actor]++
	}
	for _, actor := range slices.Sorted(maps.Keys(gotEvents)) {
		got, want, maybe := gotEvents[actor], wantEvents[actor], maybeEvents[actor]
		lossy(got >= want && got <= want+maybe, "actor %q: %d events, the writers' log accounts for %d (and %d ambiguous)", actor, got, want, maybe)
	}
	for actor, n := range wantEvents {
		if _, ok := gotEvents[actor]; !ok && n > 0 {
			lossy(false, "actor %q: no events, the writers' log accounts for %d", actor, n)
		}
	}
	if fo != nil {
		fig["failover_ambiguous_ops"] = ambiguous
		t.Logf("failover: %d operations ambiguous (failed by the failover), %d later operations on their rows not checked against the outcome", ambiguous, unknown)
	}
	fig[report.WriterOps] = int64(len(ops))
	fig[report.LiveHeartbeats] = live
	fig[report.LostRaces] = lost
	fig[report.ReviveAttempts] = revives
	var kinds []string
	for _, k := range slices.Sorted(maps.Keys(byKind)) {
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, byKind[k]))
	}
	t.Logf("writer operations: %s", strings.Join(kinds, " "))
	t.Logf("rows %d, transitions %d, stuck %d (heartbeat_timeout %d, deadline_exceeded %d), notifications %d, live heartbeats %d, lost races %d, revive attempts %d (all refused: %v)",
		len(rows), transitions, stuck, stuckHB, stuckDL, len(notes), live, lost, revives, v.n == 0)
	return fig
}

// viaPgBouncer returns dsn, a URL of the test server, through b.
func viaPgBouncer(t *testing.T, b *pgserver.PgBouncer, dsn string) string {
	t.Helper()
	u, err := b.URLFor(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
