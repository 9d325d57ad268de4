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
	// Rows a sweep would mark now, by reason (a row meeting several rules
	// counts once, under the first); the heartbeat count includes rows with
	// their own heartbeat timeout.
	EligibleHeartbeat int64 `json:"eligible_heartbeat_timeout"`
	EligibleDeadline  int64 `json:"eligible_deadline_exceeded"`
	// EligibleByReason has every reason, the two above included.
	EligibleByReason map[string]int64 `json:"eligible_by_reason"`
}

// Inspect reads the ledger's counts by status (a full count: it reads the
// whole table), the oldest heartbeat and the rows eligible now under
// heartbeatTimeout, the other global rules off (InspectConfig judges by
// them too).
func Inspect(ctx context.Context, pool *pgxpool.Pool, heartbeatTimeout time.Duration) (Snapshot, error) {
	return InspectConfig(ctx, pool, Config{HeartbeatTimeout: heartbeatTimeout})
}

// InspectConfig is Inspect under every global timeout of cfg (the others
// of its fields do not matter).
func InspectConfig(ctx context.Context, pool *pgxpool.Pool, cfg Config) (Snapshot, error) {
	snap := Snapshot{EligibleByReason: map[string]int64{}}
	for _, r := range Reasons {
		snap.EligibleByReason[r] = 0
	}
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
		if !r.on(&cfg) {
			continue
		}
		var n int64
		if err := pool.QueryRow(ctx, r.count, r.countArgs(&cfg, math.MaxInt64)...).Scan(&n); err != nil {
			return snap, fmt.Errorf("counting eligible delegations by %s: %w", r.name, err)
		}
		snap.EligibleByReason[r.reason] += n
	}
	snap.EligibleHeartbeat = snap.EligibleByReason[ReasonHeartbeatTimeout]
	snap.EligibleDeadline = snap.EligibleByReason[ReasonDeadlineExceeded]
	return snap, nil
}
