package ledger_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tasksweeper/sweeper/ledger"
)

// A heartbeat within the minute of the previous one changes no indexed
// column: it is a HOT update (no new index entries), through Heartbeat and
// HeartbeatMany alike, and calls no trigger function.
func TestHeartbeatIsHOTWithinTheMinute(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	moveTo(t, l, "a", ledger.StatusInProgress)
	moveTo(t, l, "b", ledger.StatusInProgress)

	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		// Same transaction, same now(): the first write puts the rows in
		// this minute, the heartbeats then stay in it.
		if _, err := tx.Exec(ctx, `UPDATE delegations SET last_heartbeat = now(), updated_at = now()`); err != nil {
			return err
		}
		counts := func() (upd, hot int64) {
			if err := tx.QueryRow(ctx, `
				SELECT pg_stat_get_xact_tuples_updated('delegations'::regclass),
				       pg_stat_get_xact_tuples_hot_updated('delegations'::regclass)`).Scan(&upd, &hot); err != nil {
				t.Fatal(err)
			}
			return upd, hot
		}
		upd0, hot0 := counts()
		lt := l.WithTx(tx)
		if hb, err := lt.Heartbeat(ctx, "a"); err != nil || !hb.Live {
			t.Fatalf("Heartbeat: %+v, %v", hb, err)
		}
		if notLive, err := lt.HeartbeatMany(ctx, []string{"a", "b"}); err != nil || len(notLive) != 0 {
			t.Fatalf("HeartbeatMany: %v, %v", notLive, err)
		}
		upd1, hot1 := counts()
		if upd1-upd0 != 3 || hot1-hot0 != 3 {
			t.Errorf("heartbeats: %d updates, %d HOT; want 3 and 3", upd1-upd0, hot1-hot0)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
