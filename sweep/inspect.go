package sweep

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/ledger"
)

// StatusCount is the number of rows in one status.
type StatusCount struct {
	Status ledger.Status `json:"status"`
	Rows   int64         `json:"rows"`
}

// Snapshot is the ledger as `sweeper status` shows it.
type Snapshot struct {
	// ByStatus has every status, in lifecycle order, zero counts included.
	ByStatus []StatusCount `json:"by_status"`
	Total    int64         `json:"total"`
	// OldestHeartbeatAgeSeconds is of rows on the global heartbeat timeout;
	// nil when there are none.
	OldestHeartbeatAgeSeconds *float64 `json:"oldest_heartbeat_age_seconds"`
	// Rows a sweep would mark now, by reason (a row meeting both counts once,
	// under the deadline); the heartbeat count includes rows with their own
	// heartbeat timeout.
	EligibleHeartbeat int64 `json:"eligible_heartbeat_timeout"`
	EligibleDeadline  int64 `json:"eligible_deadline_exceeded"`
}

// Inspect reads the ledger's counts by status (a full count: it reads the
// whole table), the oldest heartbeat and the rows eligible now under
// heartbeatTimeout.
func Inspect(ctx context.Context, pool *pgxpool.Pool, heartbeatTimeout time.Duration) (Snapshot, error) {
	var snap Snapshot
	rows, err := pool.Query(ctx, countByStatusSQL)
	if err != nil {
		return snap, fmt.Errorf("counting delegations by status: %w", err)
	}
	counts := map[ledger.Status]int64{}
	for rows.Next() {
		var st ledger.Status
		var n int64
		if err := rows.Scan(&st, &n); err != nil {
			rows.Close()
			return snap, fmt.Errorf("counting delegations by status: %w", err)
		}
		counts[st] = n
	}
	if err := rows.Err(); err != nil {
		return snap, fmt.Errorf("counting delegations by status: %w", err)
	}
	for _, st := range ledger.Statuses {
		snap.ByStatus = append(snap.ByStatus, StatusCount{Status: st, Rows: counts[st]})
		snap.Total += counts[st]
	}
	if err := pool.QueryRow(ctx, oldestHeartbeatSQL).Scan(&snap.OldestHeartbeatAgeSeconds); err != nil {
		return snap, fmt.Errorf("reading oldest heartbeat: %w", err)
	}
	for _, r := range rules {
		var n int64
		if err := pool.QueryRow(ctx, r.count, r.args(heartbeatTimeout, int64(math.MaxInt64))...).Scan(&n); err != nil {
			return snap, fmt.Errorf("counting eligible delegations by %s: %w", r.name, err)
		}
		if r.reason == ReasonHeartbeatTimeout {
			snap.EligibleHeartbeat += n
		} else {
			snap.EligibleDeadline += n
		}
	}
	return snap, nil
}
