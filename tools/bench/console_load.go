package bench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// What the loaded ledger holds besides the rows themselves, so that the
// console's pages read what they would read on a real ledger of that size:
//
//   - the audit log: eventsPerHistoryRow events for every history row
//     (inserted in_progress at created_at, then its terminal status at
//     updated_at, with the sweep's reason for the stuck ones) and
//     eventsPerLiveRow for every live row (inserted queued, then
//     in_progress a minute later). A ledger whose writers also record
//     queued and dispatched has more: two is the least a terminal row has. The events are grouped
//     into transactions of about eventsPerTx events, in time order, with
//     transaction ids below any the server hands out afterwards: the
//     loader first uses up that many transaction ids (burnXIDs);
//   - attempt chains: one history row in retryEvery is the second attempt
//     of the row before it (attempt 2, retry_of);
//   - the live rows' heartbeat timeouts (issue 14): a third on the sweep's
//     global timeout (NULL), a third with a short timeout of their own
//     (shortTimeout) and a third with a long one (longTimeout). keeper
//     beats the rows with a timeout of their own often enough that every
//     live row stays live for the whole run.
const (
	eventsPerHistoryRow = 2
	eventsPerLiveRow    = 2
	eventsPerTx         = 100
	retryEvery          = 1000
	shortTimeout        = 5 * time.Minute
	longTimeout         = 30 * time.Minute
)

// historyInsertSQL inserts the history rows h1..h$1: terminal rows spread
// over the weeks before two hours ago, half a second apart, callers and
// callees by g % 97 and g % 89. Row g with g % $2 = 10 is the second
// attempt of row g - 1, with its caller and callee.
const historyInsertSQL = `
INSERT INTO delegations (delegation_id, caller_id, callee_id, task_preview, result_preview, error_detail,
                         status, last_heartbeat, deadline, stuck_reason, created_at, updated_at, attempt, retry_of)
SELECT 'h' || g, 'caller-' || (c % 97), 'callee-' || (c % 89), 'history task number ' || g,
       CASE WHEN g % 10 < 8 THEN 'stored result ' || g END,
       CASE WHEN g % 10 = 8 THEN 'worker reported an error' END,
       CASE WHEN g % 10 < 8 THEN 'completed' WHEN g % 10 = 8 THEN 'failed' ELSE 'stuck' END,
       ts - interval '1 minute', ts + interval '6 hours',
       CASE WHEN g % 10 = 9 THEN 'heartbeat_timeout' END,
       ts - interval '5 minutes', ts,
       CASE WHEN g % $2 = 10 THEN 2 ELSE 1 END,
       CASE WHEN g % $2 = 10 THEN 'h' || (g - 1) END
FROM generate_series(1, $1::int) g,
     LATERAL (SELECT now() - interval '2 hours' - make_interval(secs => ($1 - g) * 0.5),
                     CASE WHEN g % $2 = 10 THEN g - 1 ELSE g END) AS t(ts, c)`

// liveInsertSQL inserts the live rows f1..f$1: in_progress, created within
// the last hour; by g % 3 on the global timeout, on $2 seconds (heartbeat
// within the last ten seconds) or on $3 seconds (within the last minute).
// Triggers are off during the load, so heartbeat_expires_at is computed
// here as the trigger would.
const liveInsertSQL = `
INSERT INTO delegations (delegation_id, caller_id, callee_id, task_preview, status, last_heartbeat,
                         heartbeat_timeout, heartbeat_expires_at, deadline, created_at)
SELECT 'f' || g, 'caller-' || (g % 97), 'callee-' || (g % 89), 'live task number ' || g, 'in_progress',
       hb, tmo, sweeper_heartbeat_expiry(hb, tmo), now() + interval '6 hours',
       now() - make_interval(secs => g % 3600)
FROM generate_series(1, $1::int) g,
     LATERAL (SELECT CASE g % 3 WHEN 1 THEN make_interval(secs => $2) WHEN 2 THEN make_interval(secs => $3) END,
                     now() - make_interval(secs => CASE WHEN g % 3 = 1 THEN g % 10 ELSE g % 60 END)) AS t(tmo, hb)`

// eventsInsertSQL writes the audit log of the rows above ($1 history rows,
// $3 events in all) with transaction ids from 3 (the first normal one) to
// $2: events are numbered e = 0.. in time order (history rows by number,
// then the live rows; each row's events by step) and event e is in
// transaction 3 + e * ($2 - 3) / $3 (two events a row). It reads the table in its physical
// order, the order of the load, so that ids follow the numbering too.
const eventsInsertSQL = `
INSERT INTO delegation_events (delegation_id, from_status, to_status, reason, actor, at, caller_id, callee_id, tx_id)
SELECT d.delegation_id, v.from_status, v.to_status, v.reason, v.actor, v.at, d.caller_id, d.callee_id,
       (3 + (o.base + v.step) * ($2::bigint - 3) / $3::bigint)::text::xid8
FROM delegations d
CROSS JOIN LATERAL (SELECT substr(d.delegation_id, 2)::bigint AS g, left(d.delegation_id, 1) = 'h' AS hist) AS k
CROSS JOIN LATERAL (SELECT CASE WHEN k.hist THEN (k.g - 1) * 2 ELSE $1::bigint * 2 + (k.g - 1) * 2 END AS base,
                           CASE WHEN k.hist THEN 'in_progress' ELSE 'queued' END AS first) AS o
CROSS JOIN LATERAL (
    VALUES (0, NULL, o.first, NULL, 'api:bench-caller', d.created_at),
           (1, o.first, CASE WHEN k.hist THEN d.status ELSE 'in_progress' END, d.stuck_reason,
            CASE WHEN d.status = 'stuck' THEN 'sweeper' ELSE 'api:bench-worker' END,
            CASE WHEN k.hist THEN d.updated_at ELSE LEAST(d.created_at + interval '1 minute', now()) END)
) AS v(step, from_status, to_status, reason, actor, at)`

// loadEventCount is the number of audit events the loader writes.
func loadEventCount(history, live int) int64 {
	return int64(history)*eventsPerHistoryRow + int64(live)*eventsPerLiveRow
}

// burnXIDsSQL uses up one transaction id per BEGIN ... COMMIT: a simple
// query of several transactions.
var burnXIDsSQL = strings.Repeat("BEGIN; SELECT pg_current_xact_id(); COMMIT; ", 1000)

// burnXIDs uses up transaction ids until the next one handed out is at
// least n past the current one, and returns the last one used: the log's
// loaded events take the ids below it, so every later transaction's events
// follow them in the feed's order.
func (db *ledgerDB) burnXIDs(ctx context.Context, n int64) (int64, error) {
	var start, cur int64
	if err := db.pool.QueryRow(ctx, `SELECT pg_current_xact_id()::text::bigint`).Scan(&start); err != nil {
		return 0, fmt.Errorf("reading the transaction id: %w", err)
	}
	for cur = start; cur < start+n; {
		if _, err := db.pool.Exec(ctx, burnXIDsSQL); err != nil {
			return 0, fmt.Errorf("using up transaction ids: %w", err)
		}
		if err := db.pool.QueryRow(ctx, `SELECT pg_current_xact_id()::text::bigint`).Scan(&cur); err != nil {
			return 0, fmt.Errorf("reading the transaction id: %w", err)
		}
	}
	return cur, nil
}

// keeper heartbeats the live rows that have a timeout of their own, the
// short ones every keepShortEvery and the long ones every keepLongEvery
// (a batch at a time, spread over the interval), so that no live row ever
// becomes eligible. Pause stops it (the heartbeat
// ingest measures the table's updates); Resume beats every kept row before
// it returns, so none is stale when a sweep runs again.
type keeper struct {
	db    *ledgerDB
	short []string
	long  []string
	mu    sync.Mutex // held while paused and during a round
	stop  chan struct{}
	done  chan struct{}
}

// Intervals of keeper.
const (
	keepShortEvery = 10 * time.Second
	keepLongEvery  = 5 * time.Minute
)

// startKeeper beats every kept row once, then keeps them live until stop.
func startKeeper(ctx context.Context, db *ledgerDB, inFlight int) (*keeper, error) {
	k := &keeper{db: db, stop: make(chan struct{}), done: make(chan struct{})}
	for g := 1; g <= inFlight; g++ {
		switch g % 3 {
		case 1:
			k.short = append(k.short, fmt.Sprintf("f%d", g))
		case 2:
			k.long = append(k.long, fmt.Sprintf("f%d", g))
		}
	}
	if err := k.beat(ctx, k.short, k.long); err != nil {
		return nil, err
	}
	go k.run(ctx)
	return k, nil
}

func (k *keeper) run(ctx context.Context) {
	defer close(k.done)
	// One batch of keepBatch rows at a time, spread over each interval, as
	// the beats of many workers are: every kept row at once would be a
	// burst of a few hundred milliseconds every keepShortEvery, and the
	// requests a measurement sends during it would be its slowest.
	shortN, longN := batches(len(k.short)), batches(len(k.long))
	tick := time.NewTicker(keepShortEvery / time.Duration(max(shortN, 1)))
	defer tick.Stop()
	longEvery := keepLongEvery / time.Duration(max(longN, 1))
	lastLong := time.Now()
	next, nextLong := 0, 0
	for {
		select {
		case <-k.stop:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		k.mu.Lock()
		var sets [][]string
		if shortN > 0 {
			sets = append(sets, k.short[next*keepBatch:min((next+1)*keepBatch, len(k.short))])
			next = (next + 1) % shortN
		}
		if longN > 0 && time.Since(lastLong) >= longEvery {
			sets = append(sets, k.long[nextLong*keepBatch:min((nextLong+1)*keepBatch, len(k.long))])
			nextLong = (nextLong + 1) % longN
			lastLong = time.Now()
		}
		if err := k.beat(ctx, sets...); err != nil && ctx.Err() == nil {
			k.db.srv.logf("keeping the live rows live: %v", err)
		}
		k.mu.Unlock()
	}
}

// keepBatch is the rows of one keeper statement.
const keepBatch = 1000

// batches is the number of keepBatch batches of n rows.
func batches(n int) int { return (n + keepBatch - 1) / keepBatch }

// beat heartbeats the given rows in batches of 1000; a row reported not
// live is an error (the bench's live rows must stay live).
func (k *keeper) beat(ctx context.Context, sets ...[]string) error {
	for _, ids := range sets {
		for i := 0; i < len(ids); i += keepBatch {
			notLive, err := k.db.heartbeatMany(ctx, ids[i:min(i+keepBatch, len(ids))])
			if err != nil {
				return err
			}
			if len(notLive) > 0 {
				return fmt.Errorf("%d live rows with a timeout of their own were no longer live, e.g. %s", len(notLive), notLive[0])
			}
		}
	}
	return nil
}

// Pause stops the beats until Resume.
func (k *keeper) Pause() { k.mu.Lock() }

// Resume beats every kept row, then lets the beats go on.
func (k *keeper) Resume(ctx context.Context) error {
	defer k.mu.Unlock()
	return k.beat(ctx, k.short, k.long)
}

// Stop ends the beats.
func (k *keeper) Stop() {
	close(k.stop)
	<-k.done
}
