package bench

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/sweep"
)

// The measurements of issue 21 (retry policies and claims), on the ledger of
// the last size:
//   - claim throughput: RecoveryClaimers claimers take RecoveryClaimRows due
//     queued rows of one callee, RecoveryClaimBatch at a time
//     (ledger.ClaimBy), until none is left: rows moved to dispatched per
//     second;
//   - the cost of a stuck transition that schedules a retry: the sweep marks
//     RecoveryStuckRows stale rows without a retry policy, then as many
//     whose policy retries on stuck (the database inserts each next attempt
//     in the same transaction); rows marked per second, the ratio of the
//     two per row.
//
// Rounds alternate, each on fresh rows, after a VACUUM ANALYZE; within a
// round the plain and the retried rows take turns going first.

// Defaults of issue 21's measurements.
const (
	RecoveryClaimRows  = 20000
	RecoveryClaimers   = 4
	RecoveryClaimBatch = 100
	RecoveryStuckRows  = 20000
	RecoveryRounds     = 3
)

// RecoveryResult is issue 21's figures.
type RecoveryResult struct {
	// Rows is the ledger's size around the measurements.
	Rows int `json:"rows"`
	// ClaimRates are rows claimed per second, one per round.
	ClaimRates []float64 `json:"claim_rates"`
	// PlainRates and RetryRates are rows the sweep marked stuck per
	// second, one per round: rows without a retry policy, and rows whose
	// policy scheduled their next attempt.
	PlainRates []float64 `json:"plain_rates"`
	RetryRates []float64 `json:"retry_rates"`
	// LoadStart and LoadEnd are the machine's load averages around them.
	LoadStart []string `json:"load_start"`
	LoadEnd   []string `json:"load_end"`
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// ClaimRate is the median claim throughput, rows/s.
func (r RecoveryResult) ClaimRate() float64 { return median(r.ClaimRates) }

// RetryCost is the cost per row of a stuck transition that schedules a
// retry relative to one that does not: the median plain rate over the
// median retry rate.
func (r RecoveryResult) RetryCost() float64 {
	if median(r.RetryRates) == 0 {
		return 0
	}
	return median(r.PlainRates) / median(r.RetryRates)
}

// measureRecovery measures claims and stuck transitions with and without a
// retry policy on db.
func measureRecovery(ctx context.Context, db *ledgerDB) (*RecoveryResult, error) {
	res := &RecoveryResult{Rows: db.rows, LoadStart: loadAverage()}
	pool, err := db.newPool(ctx, RecoveryClaimers+1)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	l := ledger.New(pool)
	for round := range RecoveryRounds {
		callee := fmt.Sprintf("bench-claim-%d", round)
		if _, err := db.pool.Exec(ctx, `
			INSERT INTO delegations (delegation_id, caller_id, callee_id, task_preview, created_at)
			SELECT $1 || '-' || g, 'bench', $1, 'claim me', now() - make_interval(secs => g)
			FROM generate_series(1, $2) g`, callee, RecoveryClaimRows); err != nil {
			return res, fmt.Errorf("adding queued rows: %w", err)
		}
		if _, err := db.pool.Exec(ctx, `VACUUM (ANALYZE) delegations`); err != nil {
			return res, err
		}
		var claimed int64
		var mu sync.Mutex
		var wg sync.WaitGroup
		errs := make(chan error, RecoveryClaimers)
		began := time.Now()
		for c := range RecoveryClaimers {
			wg.Go(func() {
				for {
					got, err := l.ClaimBy(ctx, fmt.Sprintf("claimer-%d", c), callee, RecoveryClaimBatch)
					if err != nil {
						errs <- err
						return
					}
					if len(got) == 0 {
						return
					}
					mu.Lock()
					claimed += int64(len(got))
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(began)
		close(errs)
		if err := <-errs; err != nil {
			return res, fmt.Errorf("claiming: %w", err)
		}
		if claimed != RecoveryClaimRows {
			return res, fmt.Errorf("claimed %d of %d rows", claimed, RecoveryClaimRows)
		}
		res.ClaimRates = append(res.ClaimRates, float64(claimed)/elapsed.Seconds())
		db.srv.logf("%d rows: %d claimers, batch %d: %d rows claimed in %s (%.0f rows/s)", db.rows,
			RecoveryClaimers, RecoveryClaimBatch, claimed, elapsed.Round(time.Millisecond), float64(claimed)/elapsed.Seconds())

		// Which of the two goes first alternates by round: each adds rows
		// (and the retried one next attempts) that the second one then
		// sweeps beside, so neither is always measured on the larger table.
		for _, retry := range []bool{round%2 == 1, round%2 == 0} {
			rate, err := measureStuck(ctx, db, pool, round, retry)
			if err != nil {
				return res, err
			}
			if retry {
				res.RetryRates = append(res.RetryRates, rate)
			} else {
				res.PlainRates = append(res.PlainRates, rate)
			}
		}
	}
	res.LoadEnd = loadAverage()
	db.srv.logf("%d rows: claims %.0f rows/s; stuck transitions %.0f rows/s without a retry, %.0f with one: %.2fx per row (load %v -> %v)",
		db.rows, res.ClaimRate(), median(res.PlainRates), median(res.RetryRates), res.RetryCost(), res.LoadStart, res.LoadEnd)
	return res, nil
}

// measureStuck adds RecoveryStuckRows stale in_progress rows (with a retry
// policy that retries on stuck when retry) and returns the rate at which a
// sweep marks them.
func measureStuck(ctx context.Context, db *ledgerDB, pool *pgxpool.Pool, round int, retry bool) (float64, error) {
	prefix := fmt.Sprintf("stale-%d-%v-", round, retry)
	maxAttempts := 1
	if retry {
		maxAttempts = 3
	}
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return 0, err
	}
	for _, st := range []string{
		`SET session_replication_role = replica`,
		fmt.Sprintf(`
		INSERT INTO delegations (delegation_id, caller_id, callee_id, task_preview, status, last_heartbeat, deadline,
		                         created_at, max_attempts)
		SELECT '%s' || g, 'caller-' || (g %% 97), 'callee-' || (g %% 89), 'stale task number ' || g, 'in_progress',
		       now() - interval '2 hours' - make_interval(secs => g %% 600), now() + interval '6 hours',
		       now() - interval '3 hours', %d
		FROM generate_series(1, %d) g`, prefix, maxAttempts, RecoveryStuckRows),
		`SET session_replication_role = DEFAULT`,
		`VACUUM (ANALYZE) delegations`,
	} {
		if _, err := conn.Exec(ctx, st); err != nil {
			conn.Release()
			return 0, fmt.Errorf("adding stale rows: %w", err)
		}
	}
	conn.Release()
	sw, err := sweep.New(pool, sweep.Config{HeartbeatTimeout: benchTimeout, BatchSize: 1000, MaxBatchesPerRun: 1000,
		NotifyChannel: sweep.NotifyChannelDefault})
	if err != nil {
		return 0, err
	}
	began := time.Now()
	swept := 0
	for swept < RecoveryStuckRows {
		r, err := sw.RunOnce(ctx)
		if err != nil {
			return 0, err
		}
		if r.Swept == 0 {
			return 0, fmt.Errorf("the sweep stopped at %d of %d stale rows", swept, RecoveryStuckRows)
		}
		swept += r.Swept
	}
	elapsed := time.Since(began)
	if retry {
		n, err := db.count(ctx, `SELECT count(*) FROM delegations WHERE retry_of LIKE $1`, prefix+"%")
		if err != nil {
			return 0, err
		}
		if n != RecoveryStuckRows {
			return 0, fmt.Errorf("%d next attempts for %d rows marked stuck", n, RecoveryStuckRows)
		}
	}
	rate := float64(swept) / elapsed.Seconds()
	db.srv.logf("%d rows: %d stale rows marked stuck (retry policy %v) in %s (%.0f rows/s)", db.rows, swept, retry,
		elapsed.Round(time.Millisecond), rate)
	return rate, nil
}

// recoveryTargets are issue 21's targets.
func (r *Results) recoveryTargets(add func(name, want string, known, met bool, figure string)) {
	rec := r.Recovery
	if rec == nil {
		add("claim throughput and retry cost (issue 21)", "", false, false, "not measured")
		return
	}
	add(fmt.Sprintf("claims at %s rows: %d claimers, batch %d (rows/s moved to dispatched)", count(rec.Rows), RecoveryClaimers, RecoveryClaimBatch),
		"", len(rec.ClaimRates) > 0, true, rateStr(rec.ClaimRate()))
	add("stuck transition that schedules a retry vs one that does not, per row", "≤ 1.6×", len(rec.RetryRates) > 0,
		rec.RetryCost() > 0 && rec.RetryCost() <= 1.6,
		fmt.Sprintf("%.2f× (%s vs %s rows/s)", rec.RetryCost(), rateStr(median(rec.RetryRates)), rateStr(median(rec.PlainRates))))
}
