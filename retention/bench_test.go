package retention_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/retention"
)

// BenchmarkPrune measures a full pass over a backlog of old completed
// delegations with three events each (inserted, in_progress, completed),
// next to as many live rows; it reports delegations deleted per second, with
// their events. `go test -run '^$' -bench Prune ./retention/`.
func BenchmarkPrune(b *testing.B) {
	for _, archive := range []bool{false, true} {
		name := "delete"
		if archive {
			name = "archive+delete"
		}
		b.Run(name, func(b *testing.B) {
			const n = 100000
			db := testdb.New(b)
			ctx := context.Background()
			var total time.Duration
			for range b.N {
				b.StopTimer()
				err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
					_, err := tx.Exec(ctx, `
						INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat)
						SELECT 'd' || g || '-' || clock_timestamp(), 'c', 'w', 'in_progress', now() FROM generate_series(1, $1) g`, n)
					if err != nil {
						return err
					}
					if _, err := tx.Exec(ctx, `UPDATE delegations SET status = 'completed' WHERE status = 'in_progress'`); err != nil {
						return err
					}
					if _, err := tx.Exec(ctx, `SET LOCAL session_replication_role = replica`); err != nil {
						return err
					}
					_, err = tx.Exec(ctx, `
						INSERT INTO delegation_events (delegation_id, from_status, to_status, actor)
						SELECT delegation_id, 'queued', 'dispatched', 'bench' FROM delegations;
						UPDATE delegations SET updated_at = now() - interval '40 days'`)
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := db.Pool.Exec(ctx, `VACUUM ANALYZE delegations, delegation_events`); err != nil {
					b.Fatal(err)
				}
				cfg := retention.Config{}
				if archive {
					cfg.ArchiveDir = b.TempDir()
				}
				p, err := retention.New(db.Pool, cfg)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				start := time.Now()
				res, err := p.RunOnce(ctx)
				total += time.Since(start)
				if err != nil || res.Pruned != n || res.EventsPruned != 3*n {
					b.Fatalf("pass: %+v, %v", res, err)
				}
			}
			b.ReportMetric(float64(n*b.N)/total.Seconds(), "rows/s")
		})
	}
}
