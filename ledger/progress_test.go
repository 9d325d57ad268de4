package ledger_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/ledger"
)

// progressStep runs sql (with args) in its own transaction and reports
// whether progress_at of row id is that transaction's now() afterwards: it
// moved in this write.
func progressStep(t *testing.T, pool *pgxpool.Pool, id, sql string, args ...any) (moved bool) {
	t.Helper()
	ctx := context.Background()
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, sql, args...); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT progress_at IS NOT DISTINCT FROM now() FROM delegations WHERE delegation_id = $1`, id).Scan(&moved)
	})
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return moved
}

// progress_at is the database's: it moves when the row enters in_progress
// and when progress takes a different value, for any writer (raw SQL, the
// ledger), never when the value is the same (whatever its key order or
// spacing) and never because a writer set it; the columns the rules' indexes
// hold follow it.
func TestProgressAtMovesOnlyWhenProgressChanges(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`INSERT INTO delegations (delegation_id, caller_id, callee_id) VALUES ('plain', 'c', 'w')`)
	exec(`INSERT INTO delegations (delegation_id, caller_id, callee_id, progress) VALUES ('reported', 'c', 'w', '{"step": 0}')`)
	var plainAt, reportedAt *time.Time
	if err := pool.QueryRow(ctx, `SELECT (SELECT progress_at FROM delegations WHERE delegation_id = 'plain'),
		(SELECT progress_at FROM delegations WHERE delegation_id = 'reported')`).Scan(&plainAt, &reportedAt); err != nil {
		t.Fatal(err)
	}
	if plainAt != nil || reportedAt == nil {
		t.Fatalf("after insert: progress_at %v without progress, %v with; want none and set", plainAt, reportedAt)
	}
	// A writer cannot forge the bookkeeping columns at insert either; own
	// timeouts get their expiries.
	exec(`INSERT INTO delegations (delegation_id, caller_id, callee_id, progress_at, dispatched_at, queue_timeout)
		VALUES ('forged', 'c', 'w', '2001-01-01', '2001-01-01', interval '1 minute')`)
	exec(`INSERT INTO delegations (delegation_id, caller_id, callee_id, status, start_timeout)
		VALUES ('started', 'c', 'w', 'dispatched', interval '30 seconds')`)
	var forgedOK bool
	if err := pool.QueryRow(ctx, `SELECT
		(SELECT progress_at IS NULL AND dispatched_at IS NULL AND queue_expires_at = created_at + interval '1 minute'
		 FROM delegations WHERE delegation_id = 'forged')
		AND (SELECT dispatched_at = created_at AND start_expires_at = created_at + interval '30 seconds' AND progress_at IS NULL
		     FROM delegations WHERE delegation_id = 'started')`).Scan(&forgedOK); err != nil || !forgedOK {
		t.Fatalf("bookkeeping columns at insert: %v, %v", forgedOK, err)
	}

	steps := []struct {
		name  string
		sql   string
		moved bool
	}{
		{"a heartbeat of a queued row", `UPDATE delegations SET last_heartbeat = now() WHERE delegation_id = 'plain'`, false},
		{"entering dispatched", `UPDATE delegations SET status = 'dispatched' WHERE delegation_id = 'plain'`, false},
		{"entering in_progress", `UPDATE delegations SET status = 'in_progress' WHERE delegation_id = 'plain'`, true},
		{"a heartbeat", `UPDATE delegations SET last_heartbeat = now() WHERE delegation_id = 'plain'`, false},
		{"a first progress", `UPDATE delegations SET progress = '{"a": 1, "b": [1, 2]}' WHERE delegation_id = 'plain'`, true},
		{"the same progress, keys reordered, spacing changed", `UPDATE delegations SET progress = '{"b":[1,2],"a":1}' WHERE delegation_id = 'plain'`, false},
		{"a writer setting progress_at", `UPDATE delegations SET progress_at = '2001-01-01' WHERE delegation_id = 'plain'`, false},
		{"a writer setting the index keys", `UPDATE delegations SET progress_minute = '2001-01-01', progress_expires_at = now() WHERE delegation_id = 'plain'`, false},
		{"a different progress", `UPDATE delegations SET progress = '{"a": 2, "b": [1, 2]}' WHERE delegation_id = 'plain'`, true},
		{"progress cleared", `UPDATE delegations SET progress = NULL WHERE delegation_id = 'plain'`, true},
	}
	for _, s := range steps {
		if got := progressStep(t, pool, "plain", s.sql); got != s.moved {
			t.Errorf("%s: progress_at moved %v, want %v", s.name, got, s.moved)
		}
	}
	// What a writer set is put back: progress_at is older than this
	// transaction, the index keys follow it.
	var ok bool
	if err := pool.QueryRow(ctx, `SELECT progress_at > '2001-01-02'
		AND progress_minute = date_bin('1 minute', progress_at, TIMESTAMPTZ '2000-01-01 00:00:00+00')
		AND progress_expires_at IS NULL AND dispatched_at IS NOT NULL
		FROM delegations WHERE delegation_id = 'plain'`).Scan(&ok); err != nil || !ok {
		t.Fatalf("bookkeeping columns after the writers: %v, %v", ok, err)
	}

	// The ledger's heartbeats: the same value does not move it, another does,
	// none keeps the stored progress.
	moveTo(t, l, "beat", ledger.StatusInProgress)
	beat := func(p string) bool {
		t.Helper()
		var moved bool
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			var raw json.RawMessage
			if p != "" {
				raw = json.RawMessage(p)
			}
			if res, err := l.WithTx(tx).HeartbeatProgress(ctx, "beat", raw); err != nil || !res.Live {
				t.Fatalf("HeartbeatProgress(%s): %+v, %v", p, res, err)
			}
			return tx.QueryRow(ctx, `SELECT progress_at = now() FROM delegations WHERE delegation_id = 'beat'`).Scan(&moved)
		})
		if err != nil {
			t.Fatal(err)
		}
		return moved
	}
	for _, c := range []struct {
		progress string
		moved    bool
	}{{`{"step": 1}`, true}, {`{ "step" : 1 }`, false}, {"", false}, {"null", false}, {`{"step": 2}`, true}} {
		if got := beat(c.progress); got != c.moved {
			t.Errorf("heartbeat with progress %q: progress_at moved %v, want %v", c.progress, got, c.moved)
		}
	}
	d, err := l.Get(ctx, "beat")
	if err != nil || string(d.Progress) != `{"step": 2}` || d.ProgressAt == nil {
		t.Fatalf("Get: progress %s at %v, %v", d.Progress, d.ProgressAt, err)
	}
}

// Heartbeats with an unchanged progress, or with a changed one within the
// minute, change no indexed column: HOT updates, one statement or many.
func TestProgressHeartbeatIsHOT(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	moveTo(t, l, "a", ledger.StatusInProgress)
	moveTo(t, l, "b", ledger.StatusInProgress)
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		// Same transaction, same now(): the rows' bins do not move.
		if _, err := tx.Exec(ctx, `UPDATE delegations SET last_heartbeat = now(), updated_at = now(), progress = '{"n": 0}'`); err != nil {
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
		for _, p := range []string{`{"n": 0}`, `{"n": 1}`, `{"n": 2, "note": "` + strings.Repeat("x", 180) + `"}`} {
			if hb, err := lt.HeartbeatProgress(ctx, "a", json.RawMessage(p)); err != nil || !hb.Live {
				t.Fatalf("HeartbeatProgress: %+v, %v", hb, err)
			}
			if notLive, err := lt.HeartbeatBeats(ctx, []ledger.Beat{{ID: "a", Progress: json.RawMessage(p)}, {ID: "b"}}); err != nil || len(notLive) != 0 {
				t.Fatalf("HeartbeatBeats: %v, %v", notLive, err)
			}
		}
		upd1, hot1 := counts()
		if upd1-upd0 != 9 || hot1-hot0 != 9 {
			t.Errorf("heartbeats: %d updates, %d HOT; want 9 and 9", upd1-upd0, hot1-hot0)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A progress that is not a JSON object of at most 8 KiB is refused with a
// *FieldError naming it, before anything is written; the database refuses
// it from any writer.
func TestProgressIsBounded(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	moveTo(t, l, "a", ledger.StatusInProgress)
	moveTo(t, l, "b", ledger.StatusInProgress)
	big := func(n int) string { return `{"s":"` + strings.Repeat("x", n-8) + `"}` }
	if len(big(ledger.MaxProgressBytes)) != ledger.MaxProgressBytes {
		t.Fatal("big() miscounts")
	}
	for _, c := range []struct{ name, progress, reason string }{
		{"an array", `[1, 2]`, "must be a JSON object"},
		{"a string", `"step 3"`, "must be a JSON object"},
		{"a number", `3`, "must be a JSON object"},
		{"invalid JSON", `{"a": }`, "is not valid JSON"},
		{"one byte too many", big(ledger.MaxProgressBytes + 1), "is larger than 8192 bytes"},
		{"spaces jsonb adds", manyKeys(750), "as stored"},
		{"a huge exponent", `{"n": 1e9000}`, "as stored"},
		{"a NUL", `{"s": "a\u0000b"}`, "NUL"},
	} {
		_, err := l.HeartbeatProgress(ctx, "a", json.RawMessage(c.progress))
		var fe *ledger.FieldError
		if !errors.As(err, &fe) || fe.Field != "progress" || !strings.Contains(fe.Reason, c.reason) {
			t.Errorf("%s: %v, want a FieldError on progress saying %q", c.name, err, c.reason)
		}
		_, err = l.HeartbeatBeats(ctx, []ledger.Beat{{ID: "b", Progress: json.RawMessage(`{"ok": 1}`)}, {ID: "a", Progress: json.RawMessage(c.progress)}})
		if !errors.As(err, &fe) || fe.Field != "beats[1].progress" {
			t.Errorf("%s in a batch: %v, want a FieldError on beats[1].progress", c.name, err)
		}
	}
	var untouched bool
	if err := pool.QueryRow(ctx, `SELECT bool_and(progress IS NULL) FROM delegations`).Scan(&untouched); err != nil || !untouched {
		t.Fatalf("a refused progress was written: %v, %v", untouched, err)
	}
	// Exactly 8 KiB as PostgreSQL prints it ({"s": "xx…"}, one byte more
	// than the compact form) is taken, compacted.
	if res, err := l.HeartbeatProgress(ctx, "a", json.RawMessage(" "+big(ledger.MaxProgressBytes-1)+"\n")); err != nil || !res.Live {
		t.Fatalf("8 KiB progress: %+v, %v", res, err)
	}
	var stored int
	if err := pool.QueryRow(ctx, `SELECT octet_length(progress::text) FROM delegations WHERE delegation_id = 'a'`).Scan(&stored); err != nil || stored != ledger.MaxProgressBytes {
		t.Fatalf("stored %d bytes, %v; want %d", stored, err, ledger.MaxProgressBytes)
	}
	// The database's CHECK, for writers that bypass the ledger.
	for _, sql := range []string{
		`UPDATE delegations SET progress = '[1]' WHERE delegation_id = 'b'`,
		`UPDATE delegations SET progress = jsonb_build_object('s', repeat('x', 8200)) WHERE delegation_id = 'b'`,
	} {
		if _, err := pool.Exec(ctx, sql); err == nil || !strings.Contains(err.Error(), "delegations_progress_check") {
			t.Errorf("%s: %v, want the CHECK to refuse it", sql, err)
		}
	}
}

// A heartbeat on a stuck row says why it was marked; the next attempt of a
// stuck delegation inherits its last progress and its timeouts.
func TestHeartbeatSaysWhyAndRetryInheritsProgress(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: "job", CallerID: "c", CalleeID: "w",
		Status: ledger.StatusInProgress, ProgressTimeout: time.Minute, QueueTimeout: 2 * time.Minute,
		StartTimeout: 3 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	if res, err := l.HeartbeatProgress(ctx, "job", json.RawMessage(`{"cursor": "page-7"}`)); err != nil || !res.Live || res.Reason != "" {
		t.Fatalf("live heartbeat: %+v, %v", res, err)
	}
	if _, err := pool.Exec(ctx, `UPDATE delegations SET status = 'stuck', stuck_reason = 'stalled' WHERE delegation_id = 'job'`); err != nil {
		t.Fatal(err)
	}
	res, err := l.Heartbeat(ctx, "job")
	if err != nil || res.Live || res.Status != ledger.StatusStuck || res.Reason != "stalled" {
		t.Fatalf("heartbeat on the stuck row: %+v, %v; want not live, stuck, stalled", res, err)
	}
	// The raw writer's stuck event has the last progress too.
	var detail map[string]any
	if err := pool.QueryRow(ctx, `SELECT detail FROM delegation_events WHERE delegation_id = 'job' AND to_status = 'stuck'`).Scan(&detail); err != nil {
		t.Fatal(err)
	}
	if p, _ := detail["progress"].(map[string]any); p["cursor"] != "page-7" || detail["progress_age_seconds"] == nil || detail["heartbeat_age_seconds"] == nil {
		t.Fatalf("stuck event detail %v: want the last progress and its age, and the heartbeat's", detail)
	}
	rr, err := l.Retry(ctx, "job", ledger.RetryOptions{})
	if err != nil || rr.Outcome != ledger.RetryCreated {
		t.Fatalf("retry: %+v, %v", rr, err)
	}
	next, err := l.Get(ctx, rr.DelegationID)
	if err != nil {
		t.Fatal(err)
	}
	if string(next.Progress) != `{"cursor": "page-7"}` || next.ProgressTimeout == nil || *next.ProgressTimeout != time.Minute ||
		next.QueueTimeout == nil || *next.QueueTimeout != 2*time.Minute || next.StartTimeout == nil || *next.StartTimeout != 3*time.Minute {
		t.Fatalf("next attempt: progress %s, timeouts %v %v %v", next.Progress, next.ProgressTimeout, next.QueueTimeout, next.StartTimeout)
	}
	// Own timeouts out of bounds are refused, naming the field.
	for _, n := range []ledger.NewDelegation{{ProgressTimeout: time.Millisecond}, {QueueTimeout: 8 * 24 * time.Hour}, {StartTimeout: -time.Second}} {
		n.DelegationID, n.CallerID, n.CalleeID = "bad", "c", "w"
		var fe *ledger.FieldError
		if _, err := l.Insert(ctx, n); !errors.As(err, &fe) || !strings.HasSuffix(fe.Field, "_timeout") {
			t.Errorf("insert %+v: %v, want a FieldError on the timeout", n, err)
		}
	}
}

// The Coalescer carries progress: of one delegation's beats in a batch the
// last progress is recorded; a bad progress is refused at once and does
// not join (or fail) the batch.
func TestCoalescerCarriesProgress(t *testing.T) {
	t.Parallel()
	l, _ := newLedger(t)
	ctx := context.Background()
	moveTo(t, l, "a", ledger.StatusInProgress)
	c, err := ledger.NewCoalescer(l, ledger.CoalescerConfig{MaxDelay: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c.TestSignals.Init(t)
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	var fe *ledger.FieldError
	if _, err := c.BeatProgress(ctx, "a", json.RawMessage(`[1]`)); !errors.As(err, &fe) || fe.Field != "progress" {
		t.Fatalf("bad progress: %v", err)
	}
	done := make(chan error, 2)
	go func() {
		live, err := c.BeatProgress(ctx, "a", json.RawMessage(`{"step": 1}`))
		if err == nil && !live {
			err = errors.New("not live")
		}
		done <- err
	}()
	c.TestSignals.Joined.Wait()
	go func() {
		live, err := c.BeatProgress(ctx, "a", json.RawMessage(`{"step": 2}`))
		if err == nil && !live {
			err = errors.New("not live")
		}
		done <- err
	}()
	c.TestSignals.Joined.Wait()
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if f := c.TestSignals.Flushed.Wait(); f.IDs != 1 || f.Err != nil {
		t.Fatalf("flush: %+v, want one delegation", f)
	}
	d, err := l.Get(ctx, "a")
	if err != nil || string(d.Progress) != `{"step": 2}` {
		t.Fatalf("progress %s, %v; want the last beat's", d.Progress, err)
	}
}

// manyKeys is a JSON object of n distinct keys, under 8 KiB compact and
// over it as jsonb prints it (a space after each ':' and ',').
func manyKeys(n int) string {
	var b strings.Builder
	b.WriteString("{")
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"k%04d":1`, i)
	}
	b.WriteString("}")
	return b.String()
}
