package sweep_test

import (
	"context"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/sweep"
)

// The sweep marks rows stuck; those whose retry policy retries on stuck get
// their next attempt in the same batch transaction (the database's
// trigger), and the run counts them by reason, as it counts those that
// exhausted their policy. Rows without a policy are only marked.
func TestSweepSchedulesRetriesAndCountsThem(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	seed(t, db.Pool, "hb-retry", ledger.StatusInProgress, time.Hour, time.Hour)
	seed(t, db.Pool, "hb-last", ledger.StatusInProgress, time.Hour, time.Hour)
	seed(t, db.Pool, "dl-retry", ledger.StatusQueued, 0, -time.Minute)
	seed(t, db.Pool, "plain", ledger.StatusInProgress, time.Hour, time.Hour)
	seed(t, db.Pool, "failed-only", ledger.StatusInProgress, time.Hour, time.Hour)
	exec(t, db.Pool, `UPDATE delegations SET max_attempts = 3 WHERE delegation_id IN ('hb-retry', 'dl-retry')`)
	// dl-retry was given two hours: its next attempt gets two hours from
	// when it is due.
	exec(t, db.Pool, `UPDATE delegations SET created_at = now() - interval '2 hours 1 minute' WHERE delegation_id = 'dl-retry'`)
	exec(t, db.Pool, `UPDATE delegations SET max_attempts = 3, retry_on = '{failed}' WHERE delegation_id = 'failed-only'`)
	// hb-last is attempt 2 of 2.
	exec(t, db.Pool, `UPDATE delegations SET max_attempts = 2, attempt = 2, retry_of = 'gone' WHERE delegation_id = 'hb-last'`)

	s := newSweeper(t, db.Pool, sweep.Config{HeartbeatTimeout: 10 * time.Minute})
	res, err := s.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Swept != 5 || res.Retried["heartbeat_timeout"] != 1 || res.Retried["deadline_exceeded"] != 1 ||
		res.Exhausted["heartbeat_timeout"] != 1 || len(res.Exhausted) != 1 {
		t.Fatalf("run = %+v", res)
	}
	for _, id := range []string{"hb-retry#2", "dl-retry#2"} {
		if st, _ := statusOf(t, db.Pool, id); st != ledger.StatusQueued {
			t.Fatalf("%s is %s", id, st)
		}
	}
	if n := one[int](t, db.Pool, `SELECT count(*) FROM delegations`); n != 7 {
		t.Fatalf("%d rows, want the 5 and two next attempts", n)
	}
	// A second run marks nothing more: the next attempts are queued, and
	// the deadline of dl-retry#2 is two hours after its not_before.
	res, err = s.RunOnce(ctx)
	if err != nil || res.Swept != 0 {
		t.Fatalf("second run = %+v, %v", res, err)
	}
}
