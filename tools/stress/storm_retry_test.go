package stress

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/internal/stress/report"
	"github.com/tasksweeper/sweeper/ledger"
)

// The retry storm (issue 21): 500 delegations (make stress; 200 in the
// short form of make test) with a retry policy of 4
// attempts, 200 ms backoff, retried on stuck, each with its own 1 s
// heartbeat timeout; pull workers claim them (ledger.ClaimBy, batches of 5),
// start them, beat with progress, and complete, die (stop beating) or wedge
// (stop beating, then, once the sweep marked the row stuck, come back as a
// zombie that beats and tries to complete); two sweeper daemons, as the
// least-privileged daemon role, sweep every second. The database's retry
// trigger inserts each next attempt when a sweep marks one stuck. At the end:
//   - every chain ends completed, or stuck and exhausted at attempt 4;
//   - every exhausted chain has exactly 4 attempts, numbered 1 to 4, each
//     attempt but the last stuck;
//   - a monitor never saw two live attempts of one chain;
//   - no attempt was claimed before its not_before (by the database clock);
//   - no zombie was told live or could complete a frozen attempt;
//   - every later attempt was claimed with the progress of the one it
//     retries;
//   - the ledger's invariants: one insert event and one terminal event per
//     row, events only forward, every heartbeat-timeout mark judged
//     correctly, every stuck event names its next attempt or says
//     exhausted, every later attempt's queued event names what it retries.
const (
	retryChainsFull  = 500
	retryChainsShort = 200
	retryMaxAttempts = 4
	retryBackoff     = 200 * time.Millisecond
	retryRowTimeout  = time.Second // each row's own heartbeat timeout
	retryWorkers     = 12
	retryClaimBatch  = 5
	retryDaemons     = 2
	retryStormLimit  = 3 * time.Minute // the whole storm must end within this
)

func TestRetryStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("the retry storm does not run with -short")
	}
	ctx := context.Background()
	rdb := newRoleDB(t)
	pcfg, err := pgxpool.ParseConfig(rdb.admin)
	if err != nil {
		t.Fatal(err)
	}
	pcfg.MaxConns = 24
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	l := ledger.New(pool)
	retryChains := retryChainsShort
	if full() {
		retryChains = retryChainsFull
	}

	policy := ledger.RetryPolicy{MaxAttempts: retryMaxAttempts, Backoff: retryBackoff, BackoffMax: 2 * time.Second}
	for i := range retryChains {
		if _, err := l.Insert(ctx, ledger.NewDelegation{
			DelegationID: fmt.Sprintf("chain-%03d", i), CallerID: "storm", CalleeID: "pull", TaskPreview: "retry storm",
			Timeout: 10 * time.Minute, HeartbeatTimeout: retryRowTimeout, Retry: policy,
		}); err != nil {
			t.Fatal(err)
		}
	}
	daemonEnv := []string{
		"SWEEPER_DATABASE_URL=" + rdb.daemon,
		"SWEEPER_SWEEP_SCHEDULE=@every 1s",
		"SWEEPER_SWEEP_HEARTBEAT_TIMEOUT=2s",
		"SWEEPER_SWEEP_BATCH_SIZE=50",
	}
	for i := range retryDaemons {
		startDaemon(t, fmt.Sprintf("retry-daemon-%d", i+1), daemonEnv)
	}

	var (
		claims, claimed, started, completions, zombies atomic.Int64
		inherited                                      atomic.Int64
		mu                                             sync.Mutex
		problems                                       []string
	)
	problem := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(problems) < 50 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	stormCtx, stop := context.WithTimeout(ctx, retryStormLimit)
	defer stop()

	// The monitor: never two live attempts of one chain.
	var monitorRuns atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for stormCtx.Err() == nil {
			rows, err := pool.Query(stormCtx, `
				SELECT split_part(delegation_id, '#', 1), count(*) FROM delegations
				WHERE status IN ('queued', 'dispatched', 'in_progress')
				GROUP BY 1 HAVING count(*) > 1`)
			if err != nil {
				if stormCtx.Err() == nil {
					problem("monitor: %v", err)
				}
				return
			}
			for rows.Next() {
				var root string
				var n int
				if err := rows.Scan(&root, &n); err == nil {
					problem("chain %s has %d live attempts at once", root, n)
				}
			}
			rows.Close()
			monitorRuns.Add(1)
			sleep(stormCtx, 20*time.Millisecond)
		}
	})

	// One claimed attempt's life under its fate.
	work := func(w *rand.Rand, d ledger.Delegation) {
		id := d.DelegationID
		if d.Attempt > 1 {
			// A later attempt starts from the progress of the one it
			// retries (frozen since it got stuck).
			var same bool
			if err := pool.QueryRow(stormCtx, `SELECT progress IS NOT DISTINCT FROM $2::jsonb FROM delegations WHERE delegation_id = $1`,
				d.RetryOf, []byte(d.Progress)).Scan(&same); err == nil {
				inherited.Add(1)
				if !same {
					problem("%s claimed with progress %s, not that of %s", id, d.Progress, d.RetryOf)
				}
			}
		}
		res, err := l.SetStatus(stormCtx, id, ledger.StatusInProgress, ledger.Change{Actor: "pull"})
		if err != nil || res.Outcome != ledger.OutcomeApplied {
			return // swept first (or the storm ends): the chain goes on without us
		}
		started.Add(1)
		// A heartbeat with progress: what a next attempt inherits.
		beat := func(step int) bool {
			hb, err := l.HeartbeatProgress(stormCtx, id, json.RawMessage(fmt.Sprintf(`{"step": %d}`, step)))
			return err == nil && hb.Live
		}
		switch fate := w.IntN(100); {
		case fate < 35: // completes
			for step := range 1 + w.IntN(3) {
				if !sleep(stormCtx, 250*time.Millisecond) || !beat(step) {
					return
				}
			}
			if res, err := l.SetStatus(stormCtx, id, ledger.StatusCompleted, ledger.Change{Actor: "pull", Result: "done"}); err == nil && res.Outcome == ledger.OutcomeApplied {
				completions.Add(1)
			}
		case fate < 70: // dies
			for step := range w.IntN(3) {
				if !sleep(stormCtx, 250*time.Millisecond) || !beat(step) {
					return
				}
			}
		default: // wedges, then comes back as a zombie
			beat(0)
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) && sleep(stormCtx, 200*time.Millisecond) {
				cur, err := l.Get(stormCtx, id)
				if err != nil || cur.Status.Terminal() {
					break
				}
			}
			if stormCtx.Err() != nil {
				return
			}
			zombies.Add(1)
			if hb, err := l.Heartbeat(stormCtx, id); err == nil && hb.Live {
				problem("zombie of %s was told live", id)
			}
			if res, err := l.SetStatus(stormCtx, id, ledger.StatusCompleted, ledger.Change{Actor: "zombie"}); err == nil && res.Outcome == ledger.OutcomeApplied {
				problem("zombie of %s completed a frozen attempt", id)
			}
		}
	}

	// The pull workers, until no attempt is left in flight.
	var handlers sync.WaitGroup
	var done atomic.Bool
	for i := range retryWorkers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(i)))
			actor := fmt.Sprintf("pull-%d", i)
			for stormCtx.Err() == nil && !done.Load() {
				claims.Add(1)
				got, err := l.ClaimBy(stormCtx, actor, "pull", retryClaimBatch)
				if err != nil {
					if stormCtx.Err() == nil {
						problem("claim: %v", err)
					}
					return
				}
				if len(got) == 0 {
					sleep(stormCtx, 50*time.Millisecond)
					continue
				}
				claimed.Add(int64(len(got)))
				for _, d := range got {
					seed := rng.Uint64()
					handlers.Go(func() { work(rand.New(rand.NewPCG(seed, 7)), d) })
				}
			}
		})
	}
	began := time.Now()
	for stormCtx.Err() == nil {
		var live int64
		if err := pool.QueryRow(stormCtx, `SELECT count(*) FROM delegations WHERE status IN ('queued', 'dispatched', 'in_progress')`).Scan(&live); err == nil && live == 0 {
			break
		}
		sleep(stormCtx, 200*time.Millisecond)
	}
	if err := stormCtx.Err(); err != nil {
		t.Fatalf("the storm did not end within %s", retryStormLimit)
	}
	elapsed := time.Since(began)
	done.Store(true)
	handlers.Wait()
	stop()
	wg.Wait()

	// The chains.
	type attempt struct {
		id        string
		n         int
		status    ledger.Status
		exhausted bool
		retryOf   string
	}
	chains := map[string][]attempt{}
	rows, err := pool.Query(ctx, `SELECT delegation_id, attempt, status, COALESCE(retry_of, ''),
		(status = ANY(retry_on) AND attempt >= max_attempts AND max_attempts > 1)
		FROM delegations ORDER BY delegation_id`)
	if err != nil {
		t.Fatal(err)
	}
	var total int
	for rows.Next() {
		var a attempt
		if err := rows.Scan(&a.id, &a.n, &a.status, &a.retryOf, &a.exhausted); err != nil {
			t.Fatal(err)
		}
		root, _, _ := strings.Cut(a.id, "#")
		chains[root] = append(chains[root], a)
		total++
	}
	rows.Close()
	var completedChains, exhaustedChains int64
	for root, as := range chains {
		for i, a := range as {
			if a.n != i+1 || (i > 0 && a.retryOf != as[i-1].id) || (i == 0 && a.retryOf != "") {
				problem("chain %s: attempt %d is %s (n %d, retry_of %q)", root, i+1, a.id, a.n, a.retryOf)
			}
			if i < len(as)-1 && a.status != ledger.StatusStuck {
				problem("chain %s: attempt %d is %s but has a next attempt", root, a.n, a.status)
			}
		}
		last := as[len(as)-1]
		switch {
		case last.status == ledger.StatusCompleted && len(as) <= retryMaxAttempts:
			completedChains++
		case last.status == ledger.StatusStuck && last.exhausted && len(as) == retryMaxAttempts:
			exhaustedChains++
		default:
			problem("chain %s ends %s at attempt %d of %d (exhausted %v)", root, last.status, last.n, len(as), last.exhausted)
		}
	}
	if len(chains) != retryChains {
		problem("%d chains, want %d", len(chains), retryChains)
	}

	// The database's record.
	checks := []struct {
		what string
		sql  string
	}{
		{"attempts claimed before their not_before", `
			SELECT count(*) FROM delegation_events AS e JOIN delegations AS d USING (delegation_id)
			WHERE e.to_status = 'dispatched' AND e.at < COALESCE(d.not_before, d.created_at)`},
		{"rows without exactly one insert event", `
			SELECT count(*) FROM delegations AS d
			WHERE (SELECT count(*) FROM delegation_events AS e WHERE e.delegation_id = d.delegation_id AND e.from_status IS NULL) <> 1`},
		{"terminal rows without exactly one terminal event", `
			SELECT count(*) FROM delegations AS d
			WHERE (SELECT count(*) FROM delegation_events AS e WHERE e.delegation_id = d.delegation_id
			       AND e.to_status IN ('completed', 'failed', 'stuck')) <> 1`},
		{"events that move backward", `
			SELECT count(*) FROM delegation_events
			WHERE from_status IS NOT NULL AND sweeper_status_rank(to_status) <= sweeper_status_rank(from_status)`},
		{"heartbeat-timeout marks of a row beaten within its timeout", `
			SELECT count(*) FROM delegation_events AS e JOIN delegations AS d USING (delegation_id)
			WHERE e.to_status = 'stuck' AND d.stuck_reason = 'heartbeat_timeout'
			  AND NOT (e.at - d.last_heartbeat > d.heartbeat_timeout)`},
		{"stuck events that name no next attempt and are not exhausted", `
			SELECT count(*) FROM delegation_events AS e JOIN delegations AS d USING (delegation_id)
			WHERE e.to_status = 'stuck'
			  AND NOT ((d.attempt < 4 AND e.detail->>'next_attempt' = (SELECT n.delegation_id FROM delegations AS n WHERE n.retry_of = d.delegation_id))
			        OR (d.attempt = 4 AND (e.detail->>'exhausted')::boolean))`},
		{"later attempts whose queued event does not name what they retry", `
			SELECT count(*) FROM delegations AS d
			WHERE d.attempt > 1 AND NOT EXISTS (
			    SELECT 1 FROM delegation_events AS e WHERE e.delegation_id = d.delegation_id AND e.from_status IS NULL
			      AND e.detail->>'retry_of' = d.retry_of AND e.detail ? 'not_before' AND e.reason = 'retry_policy')`},
		{"next attempts due before their backoff", `
			SELECT count(*) FROM delegations AS n JOIN delegations AS p ON p.delegation_id = n.retry_of
			WHERE n.not_before < p.finished_at + make_interval(secs => 0.9 * 0.2 * power(2, p.attempt - 1))`},
	}
	figures := report.Figures{"chains": int64(len(chains)), "attempts": int64(total), "completed_chains": completedChains,
		"exhausted_chains": exhaustedChains, "claims": claims.Load(), "claimed": claimed.Load(), "started": started.Load(),
		"completions": completions.Load(), "zombies_refused": zombies.Load(), "progress_inherited": inherited.Load(), "monitor_checks": monitorRuns.Load(),
		"seconds": int64(elapsed.Seconds())}
	for _, c := range checks {
		var n int64
		if err := pool.QueryRow(ctx, c.sql).Scan(&n); err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		if n != 0 {
			problem("%d %s", n, c.what)
		}
	}
	figures["violations"] = int64(len(problems))
	record(t, figures)
	for _, p := range problems {
		t.Error(p)
	}
	if completedChains == 0 || exhaustedChains == 0 || zombies.Load() == 0 || monitorRuns.Load() < 10 {
		t.Errorf("the storm did not exercise every path: %v", figures)
	}
}
