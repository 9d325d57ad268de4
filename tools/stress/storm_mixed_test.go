package stress

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasksweeper/sweeper/internal/stress/report"
	"github.com/tasksweeper/sweeper/ledger"
)

// The storm with mixed heartbeat timeouts (issue 14): every writer gives
// each new row one of three timeouts, the 30 s / 10 min / NULL
// scaled down: 1 s (the CHECK's minimum), 3 s, and NULL (the daemons'
// global 2 s). Rows are inserted through the library (Insert with
// HeartbeatTimeout) and in raw SQL (the heartbeat_timeout column), and each
// writer's rhythm (heartbeat periods, pauses, lifetimes) is scaled to the
// row's own timeout, so flaky writers and paused fleets beat rows right
// around their own boundary, not the global one. The invariants are the
// storm's, judged per row: a row marked stuck by heartbeat had, at the
// marking transaction's now(), a last_heartbeat older than its own timeout
// (the row is frozen once stuck, so its last_heartbeat and heartbeat_timeout
// are those the sweep judged), and no heartbeat acknowledged live was
// overtaken by a marking within the row's timeout.

const (
	mixedShort  = time.Second     // the shortest own timeout the schema allows
	mixedMedium = 3 * time.Second // longer than the global one
)

// mixedClasses are the timeouts a row may get: own short, global (0: NULL),
// own medium.
var mixedClasses = []time.Duration{mixedShort, 0, mixedMedium}

func TestRaceStormMixedTimeouts(t *testing.T) {
	if testing.Short() {
		t.Skip("the race storm does not run with -short")
	}
	raceStorm(t, stormOptions{mixed: true})
}

// className names a row's timeout class in logs and figures.
func className(own time.Duration) string {
	if own == 0 {
		return "global_" + stormTimeout.String()
	}
	return "own_" + own.String()
}

// classFigures are the counts of one timeout class.
type classFigures struct {
	rows, stuckHB, stuckDL, completed, failed int64
	live                                      int64 // heartbeats acknowledged live
	boundary                                  int64 // of which sent between 3/4 and 5/4 of the row's timeout after it was last known live
	lost                                      int64 // heartbeats told not live after such a gap
	lags                                      []time.Duration
}

// checkMixed checks that the storm ran with the three classes and raced
// each one's boundary, adds the per-class figures to fig and logs them.
func checkMixed(t *testing.T, v *violations, ops []op, rows map[string]row, fig report.Figures) {
	t.Helper()
	per := map[time.Duration]*classFigures{}
	for _, c := range mixedClasses {
		per[c] = &classFigures{}
	}
	for id, r := range rows {
		c, ok := per[r.ownTimeout]
		v.check(ok, "row %q has heartbeat_timeout %s, not one the storm gives", id, r.ownTimeout)
		if !ok {
			continue
		}
		c.rows++
		switch {
		case r.status == "stuck" && r.reason == "heartbeat_timeout":
			c.stuckHB++
		case r.status == "stuck":
			c.stuckDL++
		case r.status == "completed":
			c.completed++
		case r.status == "failed":
			c.failed++
		}
	}

	// Gaps between a row's heartbeats: from the acknowledgement of the
	// last operation that left it live (an insert or move to in_progress, a
	// live heartbeat) to the sending of the next heartbeat.
	liveSince := map[string]time.Time{}
	for _, o := range slices.SortedFunc(slices.Values(ops), func(a, b op) int { return a.sent.Compare(b.sent) }) {
		r, ok := rows[o.id]
		if !ok || o.err != "" {
			continue
		}
		c := per[r.ownTimeout]
		if c == nil {
			continue
		}
		timeout := r.timeout(stormTimeout)
		switch o.kind {
		case opInsert, opStatus, opRawStatus:
			if o.applied && o.to == ledger.StatusInProgress {
				liveSince[o.id] = o.acked
			}
		case opHeartbeat, opRawBeat:
			since, known := liveSince[o.id]
			near := known && o.sent.Sub(since) >= timeout*3/4 && o.sent.Sub(since) <= timeout*5/4
			if o.live {
				c.live++
				if near {
					c.boundary++
				}
				liveSince[o.id] = o.acked
			} else {
				if near {
					c.lost++
				}
				delete(liveSince, o.id)
			}
		}
	}
	// How late each heartbeat-stuck row was marked after it expired, by the
	// database clock (the expiry is last_heartbeat + its timeout).
	for _, r := range rows {
		if r.status == "stuck" && r.reason == "heartbeat_timeout" && r.lastHeartbeat != nil && r.markedAt != nil {
			per[r.ownTimeout].lags = append(per[r.ownTimeout].lags, r.markedAt.Sub(r.lastHeartbeat.Add(r.timeout(stormTimeout))))
		}
	}

	for _, own := range mixedClasses {
		c, name := per[own], className(own)
		v.check(c.rows > 0 && c.stuckHB > 0 && c.boundary > 0,
			"timeout class %s: %d rows, %d stuck by heartbeat, %d live heartbeats near its boundary: want each > 0", name, c.rows, c.stuckHB, c.boundary)
		slices.Sort(c.lags)
		var p50, maxLag time.Duration
		if n := len(c.lags); n > 0 {
			p50, maxLag = c.lags[n/2], c.lags[n-1]
		}
		for k, n := range map[string]int64{
			"rows": c.rows, "stuck_heartbeat": c.stuckHB, "stuck_deadline": c.stuckDL, "completed": c.completed, "failed": c.failed,
			"live_heartbeats": c.live, "boundary_live": c.boundary, "boundary_lost": c.lost,
			"mark_lag_p50_ms": p50.Milliseconds(), "mark_lag_max_ms": maxLag.Milliseconds(),
		} {
			fig[fmt.Sprintf("mixed_%s_%s", name, k)] = n
		}
		t.Logf("timeout class %-10s rows %5d, stuck by heartbeat %4d, by deadline %4d, completed %5d, failed %4d; "+
			"live heartbeats %5d, of which %4d sent at 3/4..5/4 of its timeout, %3d told not live after such a gap; "+
			"marked after expiry: p50 %s, max %s",
			name, c.rows, c.stuckHB, c.stuckDL, c.completed, c.failed, c.live, c.boundary, c.lost,
			p50.Round(time.Millisecond), maxLag.Round(time.Millisecond))
	}
}

// edgeGap is how long an edge writer waits after a heartbeat was
// acknowledged before it sends the next one: between 85% and 105% of the
// row's timeout, so most beats land just inside the boundary, racing the
// sweepers' re-check, and some just past it.
func edgeGap(w *writer, timeout time.Duration) time.Duration {
	return w.between(timeout*85/100, timeout*105/100)
}

// edgeBeats is how many heartbeats an edge writer gives a row at most
// before it completes it.
const edgeBeats = 6

// edgeWorker inserts an in_progress row with one of the timeout classes
// through the library and beats it at its boundary (edgeGap) until it is
// told the row is no longer live or edgeBeats have been sent; then it
// completes it (which loses to a sweeper that got there first).
func (s *storm) edgeWorker(ctx context.Context, w *writer) {
	for ctx.Err() == nil {
		id := w.newID()
		own, timeout := s.rowTimeout(w)
		c, cancel := opCtx()
		sent := time.Now()
		res, err := s.l.Insert(c, ledger.NewDelegation{DelegationID: id, CallerID: w.name, CalleeID: "edge",
			Status: ledger.StatusInProgress, Timeout: time.Minute, HeartbeatTimeout: own})
		cancel()
		w.log(op{kind: opInsert, id: id, what: "Insert in_progress", sent: sent, applied: err == nil && res.Outcome == ledger.Inserted,
			to: ledger.StatusInProgress, status: ledger.StatusInProgress, outcome: res.Outcome.String(), err: errText(err)})
		if err != nil {
			continue
		}
		live := true
		for i := 0; live && i < edgeBeats && sleep(ctx, edgeGap(w, timeout)); i++ {
			live = s.heartbeat(w, opHeartbeat, id)
		}
		s.setStatus(w, opStatus, id, ledger.StatusCompleted)
	}
}

// rawEdgeWorker is edgeWorker in SQL on its own connection: the row's
// heartbeat_timeout set by the INSERT (NULL for the global class), entering
// in_progress as its first heartbeat, then raw heartbeats at its boundary
// (some inside a transaction that holds the row lock a while).
func (s *storm) rawEdgeWorker(ctx context.Context, w *writer) {
	conn := w.conn
	for ctx.Err() == nil {
		id := w.newID()
		own, timeout := s.rowTimeout(w)
		var ownSecs *float64
		if own > 0 {
			ownSecs = new(own.Seconds())
		}
		var hb time.Time
		c, cancel := opCtx()
		sent := time.Now()
		err := conn.QueryRow(c, `INSERT INTO delegations (delegation_id, caller_id, callee_id, status, deadline, heartbeat_timeout)
			VALUES ($1, $2, 'raw-edge', 'in_progress', now() + interval '1 minute', $3::float8 * interval '1 second')
			RETURNING last_heartbeat`, id, w.name, ownSecs).Scan(&hb)
		cancel()
		w.log(op{kind: opRawInsert, id: id, what: "INSERT in_progress", sent: sent, applied: err == nil,
			to: ledger.StatusInProgress, status: ledger.StatusInProgress, err: errText(err)})
		if err != nil {
			continue
		}
		w.log(op{kind: opRawBeat, id: id, what: "INSERT in_progress (first heartbeat)", sent: sent, live: true, hb: hb})
		live := true
		for i := 0; live && i < edgeBeats && sleep(ctx, edgeGap(w, timeout)); i++ {
			live = s.rawHeartbeat(w, conn, id)
		}
		var got string
		c, cancel = opCtx()
		sent = time.Now()
		err = conn.QueryRow(c, `UPDATE delegations SET status = 'completed', result_preview = 'edge result'
			WHERE delegation_id = $1 AND status = 'in_progress' RETURNING status`, id).Scan(&got)
		applied := err == nil
		if errors.Is(err, pgx.ErrNoRows) {
			err = conn.QueryRow(c, `SELECT status FROM delegations WHERE delegation_id = $1`, id).Scan(&got)
		}
		cancel()
		w.log(op{kind: opRawStatus, id: id, what: "UPDATE completed", sent: sent, applied: applied, to: ledger.StatusCompleted,
			status: ledger.Status(got), err: errText(err)})
	}
}
