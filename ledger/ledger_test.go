package ledger_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/ledger"
)

// newLedger returns a ledger on a fresh database, and a pool on it for the
// test's own checks. The ledger is over pgx, or over database/sql with the
// driver named by envLedgerDriver (TestLedgerOverDatabaseSQL runs this
// package's tests again with each).
func newLedger(t *testing.T) (*ledger.Ledger, *pgxpool.Pool) {
	t.Helper()
	db := testdb.New(t)
	driver := os.Getenv(envLedgerDriver)
	if driver == "" {
		return ledger.New(db.Pool), db.Pool
	}
	sqlDB, err := sql.Open(driver, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sqlDB.Close() })
	return ledger.NewSQL(sqlDB), db.Pool
}

func insert(t *testing.T, l *ledger.Ledger, id string, st ledger.Status) {
	t.Helper()
	res, err := l.Insert(context.Background(), ledger.NewDelegation{
		DelegationID: id, CallerID: "caller", CalleeID: "callee", TaskPreview: "task " + id, Status: st,
	})
	if err != nil || res.Outcome != ledger.Inserted {
		t.Fatalf("insert %s: %+v, %v", id, res, err)
	}
}

// moveTo walks a fresh row to st through the ledger.
func moveTo(t *testing.T, l *ledger.Ledger, id string, st ledger.Status) {
	t.Helper()
	insert(t, l, id, "")
	if st == ledger.StatusQueued {
		return
	}
	res, err := l.SetStatus(context.Background(), id, st, ledger.Change{Actor: "test"})
	if err != nil || res.Outcome != ledger.OutcomeApplied {
		t.Fatalf("move %s to %s: %+v, %v", id, st, res, err)
	}
}

func countRows(t *testing.T, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := q.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func TestInsertHappyPath(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	res, err := l.Insert(ctx, ledger.NewDelegation{
		DelegationID: "d-1", CallerID: "billing", CalleeID: "invoicer", TaskPreview: "render invoice",
		IdempotencyKey: "k-1",
	})
	if err != nil || res.Outcome != ledger.Inserted || res.DelegationID != "d-1" {
		t.Fatalf("Insert = %+v, %v", res, err)
	}
	d, err := l.Get(ctx, "d-1")
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != ledger.StatusQueued || d.CallerID != "billing" || d.CalleeID != "invoicer" ||
		d.TaskPreview != "render invoice" || d.IdempotencyKey != "k-1" || d.LastHeartbeat != nil || d.StuckReason != "" {
		t.Fatalf("Get = %+v", d)
	}
	// Default deadline: DefaultTimeout after insert, by the database clock.
	if got := d.Deadline.Sub(d.CreatedAt); got != ledger.DefaultTimeout {
		t.Errorf("deadline - created_at = %s, want %s", got, ledger.DefaultTimeout)
	}
	// The Go default equals the schema default used by raw-SQL writers.
	if _, err := pool.Exec(ctx, `INSERT INTO delegations (delegation_id, caller_id, callee_id) VALUES ('raw','c','w')`); err != nil {
		t.Fatal(err)
	}
	raw, err := l.Get(ctx, "raw")
	if err != nil {
		t.Fatal(err)
	}
	if got := raw.Deadline.Sub(raw.CreatedAt); got != ledger.DefaultTimeout {
		t.Errorf("schema default deadline = %s after insert, ledger.DefaultTimeout = %s", got, ledger.DefaultTimeout)
	}
	evs, err := l.Events(ctx, "d-1")
	if err != nil || len(evs) != 1 || evs[0].FromStatus != "" || evs[0].ToStatus != ledger.StatusQueued {
		t.Fatalf("events after insert = %+v, %v", evs, err)
	}
}

func TestInsertDeadlineAndTimeout(t *testing.T) {
	t.Parallel()
	l, _ := newLedger(t)
	ctx := context.Background()
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: "a", CallerID: "c", CalleeID: "w", Deadline: at}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: "b", CallerID: "c", CalleeID: "w", Timeout: 90 * time.Second}); err != nil {
		t.Fatal(err)
	}
	a, _ := l.Get(ctx, "a")
	b, _ := l.Get(ctx, "b")
	if !a.Deadline.Equal(at) {
		t.Errorf("deadline = %s, want %s", a.Deadline, at)
	}
	if got := b.Deadline.Sub(b.CreatedAt); got != 90*time.Second {
		t.Errorf("timeout deadline = created_at + %s, want 90s", got)
	}
	_, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: "c", CallerID: "c", CalleeID: "w", Deadline: at, Timeout: time.Second})
	assertFieldError(t, err, "deadline")
}

func assertFieldError(t *testing.T, err error, field string) {
	t.Helper()
	var fe *ledger.FieldError
	if !errors.As(err, &fe) || fe.Field != field || !errors.Is(err, ledger.ErrInvalid) {
		t.Fatalf("error = %v, want a *FieldError for %s", err, field)
	}
}

func TestInsertRejectsBadInputAndWritesNothing(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ok := ledger.NewDelegation{DelegationID: "id", CallerID: "caller", CalleeID: "callee"}
	cases := []struct {
		name  string
		edit  func(*ledger.NewDelegation)
		field string
	}{
		{"missing delegation_id", func(n *ledger.NewDelegation) { n.DelegationID = "" }, "delegation_id"},
		{"missing caller_id", func(n *ledger.NewDelegation) { n.CallerID = "" }, "caller_id"},
		{"missing callee_id", func(n *ledger.NewDelegation) { n.CalleeID = "" }, "callee_id"},
		{"blank delegation_id", func(n *ledger.NewDelegation) { n.DelegationID = "  \t" }, "delegation_id"},
		{"over-long delegation_id", func(n *ledger.NewDelegation) { n.DelegationID = strings.Repeat("x", 256) }, "delegation_id"},
		{"over-long caller_id", func(n *ledger.NewDelegation) { n.CallerID = strings.Repeat("é", 128) }, "caller_id"},
		{"NUL in delegation_id", func(n *ledger.NewDelegation) { n.DelegationID = "a\x00b" }, "delegation_id"},
		{"invalid UTF-8 callee_id", func(n *ledger.NewDelegation) { n.CalleeID = "w\xff" }, "callee_id"},
		{"control char in id", func(n *ledger.NewDelegation) { n.DelegationID = "a\nb" }, "delegation_id"},
		{"NUL in task_preview", func(n *ledger.NewDelegation) { n.TaskPreview = "x\x00" }, "task_preview"},
		{"invalid UTF-8 task_preview", func(n *ledger.NewDelegation) { n.TaskPreview = "\xc3\x28" }, "task_preview"},
		{"blank idempotency_key", func(n *ledger.NewDelegation) { n.IdempotencyKey = " " }, "idempotency_key"},
		{"terminal initial status", func(n *ledger.NewDelegation) { n.Status = ledger.StatusCompleted }, "status"},
		{"unknown initial status", func(n *ledger.NewDelegation) { n.Status = "done" }, "status"},
		{"negative timeout", func(n *ledger.NewDelegation) { n.Timeout = -time.Second }, "timeout"},
	}
	for _, c := range cases {
		n := ok
		c.edit(&n)
		_, err := l.Insert(context.Background(), n)
		assertFieldError(t, err, c.field)
	}
	if n := countRows(t, pool, `SELECT count(*) FROM delegations`); n != 0 {
		t.Fatalf("%d rows written by refused inserts", n)
	}
	if n := countRows(t, pool, `SELECT count(*) FROM delegation_events`); n != 0 {
		t.Fatalf("%d events written by refused inserts", n)
	}
}

func TestInsertTruncatesOnRuneBoundary(t *testing.T) {
	t.Parallel()
	l, _ := newLedger(t)
	ctx := context.Background()
	long := strings.Repeat("日本", ledger.MaxTaskPreviewRunes) // 3 bytes a rune, twice the limit
	if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: "t", CallerID: "c", CalleeID: "w", TaskPreview: long}); err != nil {
		t.Fatal(err)
	}
	d, err := l.Get(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	if got := len([]rune(d.TaskPreview)); got != ledger.MaxTaskPreviewRunes {
		t.Fatalf("stored %d runes, want %d", got, ledger.MaxTaskPreviewRunes)
	}
	if !strings.HasSuffix(d.TaskPreview, "…") || !strings.HasPrefix(long, strings.TrimSuffix(d.TaskPreview, "…")) {
		t.Fatalf("stored preview is not a rune-aligned prefix plus …")
	}
	res, err := l.SetStatus(ctx, "t", ledger.StatusFailed, ledger.Change{Error: strings.Repeat("ü", 9000), Result: strings.Repeat("r", 3000)})
	if err != nil || res.Outcome != ledger.OutcomeApplied {
		t.Fatal(res, err)
	}
	d, _ = l.Get(ctx, "t")
	if len([]rune(d.ErrorDetail)) != ledger.MaxErrorDetailRunes || len([]rune(d.ResultPreview)) != ledger.MaxResultPreviewRunes {
		t.Fatalf("error_detail %d runes, result_preview %d runes", len([]rune(d.ErrorDetail)), len([]rune(d.ResultPreview)))
	}
}

func TestInsertIdempotency(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	first := ledger.NewDelegation{DelegationID: "d-1", CallerID: "alpha", CalleeID: "w", IdempotencyKey: "order-7"}

	if res, err := l.Insert(ctx, first); err != nil || res.Outcome != ledger.Inserted {
		t.Fatal(res, err)
	}
	// The same call again (a retry): a no-op that says so.
	if res, err := l.Insert(ctx, first); err != nil || res.Outcome != ledger.DuplicateKey || res.DelegationID != "d-1" {
		t.Fatalf("retry = %+v, %v", res, err)
	}
	// Same id without a key: AlreadyExists.
	noKey := ledger.NewDelegation{DelegationID: "d-2", CallerID: "alpha", CalleeID: "w"}
	if _, err := l.Insert(ctx, noKey); err != nil {
		t.Fatal(err)
	}
	if res, err := l.Insert(ctx, noKey); err != nil || res.Outcome != ledger.AlreadyExists || res.DelegationID != "d-2" {
		t.Fatalf("retry by id = %+v, %v", res, err)
	}
	// Same key, new delegation id, same caller: the existing id comes back.
	again := first
	again.DelegationID = "d-9"
	if res, err := l.Insert(ctx, again); err != nil || res.Outcome != ledger.DuplicateKey || res.DelegationID != "d-1" {
		t.Fatalf("same key = %+v, %v", res, err)
	}
	// Same key under another caller: no collision.
	other := ledger.NewDelegation{DelegationID: "d-3", CallerID: "beta", CalleeID: "w", IdempotencyKey: "order-7"}
	if res, err := l.Insert(ctx, other); err != nil || res.Outcome != ledger.Inserted || res.DelegationID != "d-3" {
		t.Fatalf("other caller = %+v, %v", res, err)
	}
	// Same delegation id under another caller: a conflict, not a retry.
	_, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: "d-1", CallerID: "beta", CalleeID: "w"})
	var ce *ledger.ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, ledger.ErrConflict) {
		t.Fatalf("foreign id reuse: %v, want *ConflictError", err)
	}
	if n := countRows(t, pool, `SELECT count(*) FROM delegations`); n != 3 {
		t.Fatalf("%d rows, want 3", n)
	}
	if n := countRows(t, pool, `SELECT count(*) FROM delegation_events`); n != 3 {
		t.Fatalf("%d events, want 3 (one per insert)", n)
	}
}

func TestSetStatusOutcomes(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	insert(t, l, "d", "")

	steps := []struct {
		to      ledger.Status
		outcome ledger.Outcome
		status  ledger.Status
	}{
		{ledger.StatusDispatched, ledger.OutcomeApplied, ledger.StatusDispatched},
		{ledger.StatusDispatched, ledger.OutcomeUnchanged, ledger.StatusDispatched},
		{ledger.StatusQueued, ledger.OutcomeRejectedBackward, ledger.StatusDispatched},
		{ledger.StatusInProgress, ledger.OutcomeApplied, ledger.StatusInProgress},
		{ledger.StatusDispatched, ledger.OutcomeRejectedBackward, ledger.StatusInProgress},
		{ledger.StatusCompleted, ledger.OutcomeApplied, ledger.StatusCompleted},
		{ledger.StatusCompleted, ledger.OutcomeUnchanged, ledger.StatusCompleted},
		{ledger.StatusFailed, ledger.OutcomeRejectedTerminal, ledger.StatusCompleted},
		{ledger.StatusQueued, ledger.OutcomeRejectedTerminal, ledger.StatusCompleted},
	}
	for i, s := range steps {
		res, err := l.SetStatus(ctx, "d", s.to, ledger.Change{Actor: "worker-1", Reason: "step", Detail: map[string]int{"step": i}})
		if err != nil {
			t.Fatalf("step %d (%s): %v", i, s.to, err)
		}
		if res.Outcome != s.outcome || res.Status != s.status {
			t.Fatalf("step %d (-> %s) = %s/%s, want %s/%s", i, s.to, res.Outcome, res.Status, s.outcome, s.status)
		}
	}
	res, err := l.SetStatus(ctx, "missing", ledger.StatusCompleted, ledger.Change{})
	if err != nil || res.Outcome != ledger.OutcomeNotFound || res.Status != "" {
		t.Fatalf("missing row = %+v, %v", res, err)
	}
	if _, err := l.SetStatus(ctx, "d", "done", ledger.Change{}); !errors.Is(err, ledger.ErrInvalid) {
		t.Fatalf("unknown status: %v", err)
	}
	if _, err := l.SetStatus(ctx, "", ledger.StatusFailed, ledger.Change{}); !errors.Is(err, ledger.ErrInvalid) {
		t.Fatalf("empty id: %v", err)
	}
	if _, err := l.SetStatus(ctx, "d", ledger.StatusFailed, ledger.Change{Detail: func() {}}); !errors.Is(err, ledger.ErrInvalid) {
		t.Fatalf("unencodable detail: %v", err)
	}

	// Entering in_progress counted as the first heartbeat.
	d, _ := l.Get(ctx, "d")
	if d.LastHeartbeat == nil {
		t.Fatal("in_progress entered without a heartbeat")
	}
	evs, err := l.Events(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	want := [][2]ledger.Status{{"", "queued"}, {"queued", "dispatched"}, {"dispatched", "in_progress"}, {"in_progress", "completed"}}
	if len(evs) != len(want) {
		t.Fatalf("%d events, want %d: %+v", len(evs), len(want), evs)
	}
	for i, w := range want {
		if evs[i].FromStatus != w[0] || evs[i].ToStatus != w[1] {
			t.Errorf("event %d = %s->%s, want %s->%s", i, evs[i].FromStatus, evs[i].ToStatus, w[0], w[1])
		}
	}
	last := evs[len(evs)-1]
	if last.Actor != "worker-1" || last.Reason != "step" || string(last.Detail) != `{"step": 5}` {
		t.Errorf("last event actor %q reason %q detail %s", last.Actor, last.Reason, last.Detail)
	}
	_ = pool
}

// Two writers race to different terminal states: exactly one wins, and the
// audit log holds exactly one terminal event.
func TestSetStatusRaceToTerminal(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	for round := range 20 {
		id := "race-" + string(rune('a'+round))
		moveTo(t, l, id, ledger.StatusInProgress)
		var wg sync.WaitGroup
		results := make([]ledger.StatusResult, 2)
		errs := make([]error, 2)
		start := make(chan struct{})
		for i, to := range []ledger.Status{ledger.StatusCompleted, ledger.StatusFailed} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				results[i], errs[i] = l.SetStatus(ctx, id, to, ledger.Change{Actor: string(to)})
			}()
		}
		close(start)
		wg.Wait()
		applied := 0
		for i := range results {
			if errs[i] != nil {
				t.Fatalf("round %d writer %d: %v", round, i, errs[i])
			}
			switch results[i].Outcome {
			case ledger.OutcomeApplied:
				applied++
			case ledger.OutcomeRejectedTerminal:
			default:
				t.Fatalf("round %d writer %d: outcome %s", round, i, results[i].Outcome)
			}
		}
		if applied != 1 {
			t.Fatalf("round %d: %d writers applied, want exactly 1", round, applied)
		}
		if n := countRows(t, pool, `SELECT count(*) FROM delegation_events WHERE delegation_id = $1 AND to_status IN ('completed','failed')`, id); n != 1 {
			t.Fatalf("round %d: %d terminal events, want 1", round, n)
		}
	}
}

func TestHeartbeat(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	moveTo(t, l, "live", ledger.StatusInProgress)
	moveTo(t, l, "queued", ledger.StatusQueued)
	moveTo(t, l, "done", ledger.StatusCompleted)
	moveTo(t, l, "stuck", ledger.StatusStuck)
	if _, err := pool.Exec(ctx, `UPDATE delegations SET last_heartbeat = now() - interval '1 hour' WHERE delegation_id = 'live'`); err != nil {
		t.Fatal(err)
	}

	hb, err := l.Heartbeat(ctx, "live")
	if err != nil || !hb.Live || hb.Status != ledger.StatusInProgress {
		t.Fatalf("live = %+v, %v", hb, err)
	}
	if age := countRows(t, pool, `SELECT extract(epoch FROM now() - last_heartbeat)::int FROM delegations WHERE delegation_id = 'live'`); age > 5 {
		t.Fatalf("heartbeat not recorded: age %ds", age)
	}
	if hb, err := l.Heartbeat(ctx, "queued"); err != nil || !hb.Live || hb.Status != ledger.StatusQueued {
		t.Fatalf("queued = %+v, %v", hb, err)
	}
	before := countRows(t, pool, `SELECT count(*) FROM delegations WHERE updated_at = created_at`)
	for _, id := range []string{"done", "stuck"} {
		hb, err := l.Heartbeat(ctx, id)
		if err != nil || hb.Live || hb.Status != ledger.Status(id) && !(id == "done" && hb.Status == ledger.StatusCompleted) {
			t.Fatalf("%s = %+v, %v", id, hb, err)
		}
	}
	if hb, err := l.Heartbeat(ctx, "missing"); err != nil || hb.Live || hb.Status != "" {
		t.Fatalf("missing = %+v, %v", hb, err)
	}
	if after := countRows(t, pool, `SELECT count(*) FROM delegations WHERE updated_at = created_at`); after != before {
		t.Fatalf("heartbeat on terminal rows changed them")
	}

	notLive, err := l.HeartbeatMany(ctx, []string{"live", "done", "missing", "queued", "live", "stuck"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(notLive, ",") != "done,missing,stuck" {
		t.Fatalf("HeartbeatMany not live = %v, want done,missing,stuck", notLive)
	}
	if _, err := l.HeartbeatMany(ctx, []string{"ok", ""}); !errors.Is(err, ledger.ErrInvalid) {
		t.Fatalf("HeartbeatMany with empty id: %v", err)
	}
	if _, err := l.Heartbeat(ctx, "a\x00"); !errors.Is(err, ledger.ErrInvalid) {
		t.Fatalf("Heartbeat with NUL: %v", err)
	}
}

// The database refuses what the ledger refuses, for a writer that bypasses
// the ledger: raw SQL on a second connection.
func TestDatabaseGuardRefusesRawSQL(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	l := ledger.New(db.Pool)
	ctx := context.Background()
	moveTo(t, l, "ip", ledger.StatusInProgress)
	moveTo(t, l, "done", ledger.StatusCompleted)

	conn, err := pgx.Connect(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	cases := []struct {
		name, sql, constraint string
	}{
		{"backward move", `UPDATE delegations SET status = 'queued' WHERE delegation_id = 'ip'`, "delegations_forward_only"},
		{"terminal to another terminal", `UPDATE delegations SET status = 'failed' WHERE delegation_id = 'done'`, "delegations_terminal_frozen"},
		{"terminal revived", `UPDATE delegations SET status = 'in_progress' WHERE delegation_id = 'done'`, "delegations_terminal_frozen"},
		{"terminal row edited", `UPDATE delegations SET task_preview = 'rewritten' WHERE delegation_id = 'done'`, "delegations_terminal_frozen"},
		{"terminal row heartbeat", `UPDATE delegations SET last_heartbeat = now() WHERE delegation_id = 'done'`, "delegations_terminal_frozen"},
		{"unknown status", `UPDATE delegations SET status = 'paused' WHERE delegation_id = 'ip'`, "delegations_status_check"},
		{"blank id", `INSERT INTO delegations (delegation_id, caller_id, callee_id) VALUES (' ', 'c', 'w')`, "delegations_delegation_id_check"},
		{"stuck_reason on live row", `UPDATE delegations SET stuck_reason = 'heartbeat_timeout' WHERE delegation_id = 'ip'`, "delegations_stuck_reason_check"},
		{"event rewritten", `UPDATE delegation_events SET actor = 'someone else'`, "delegation_events_append_only"},
		{"event deleted", `DELETE FROM delegation_events`, "delegation_events_append_only"},
	}
	for _, c := range cases {
		_, err := conn.Exec(ctx, c.sql)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.ConstraintName != c.constraint {
			t.Errorf("%s: error %v, want violation of %s", c.name, err, c.constraint)
			continue
		}
		if c.constraint == "delegations_forward_only" && !strings.Contains(pgErr.Message, "ip") ||
			c.name == "terminal revived" && !(strings.Contains(pgErr.Message, "done") && strings.Contains(pgErr.Message, "completed") && strings.Contains(pgErr.Message, "in_progress")) {
			t.Errorf("%s: message %q does not name the row and both states", c.name, pgErr.Message)
		}
	}
	d, _ := l.Get(ctx, "done")
	if d.Status != ledger.StatusCompleted || d.TaskPreview != "task done" {
		t.Fatalf("terminal row changed: %+v", d)
	}
}

// The trigger and the Go table agree on all 36 pairs, and each raw-SQL status
// change that the database accepts writes exactly one event.
func TestGuardMatchesTransitionTable(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	for _, from := range ledger.Statuses {
		for _, to := range ledger.Statuses {
			id := string(from) + "->" + string(to)
			if _, err := conn.Exec(ctx, `INSERT INTO delegations (delegation_id, caller_id, callee_id, status) VALUES ($1, 'c', 'w', $2)`, id, from); err != nil {
				t.Fatal(err)
			}
			before := countRows(t, conn, `SELECT count(*) FROM delegation_events WHERE delegation_id = $1`, id)
			_, err := conn.Exec(ctx, `UPDATE delegations SET status = $2 WHERE delegation_id = $1`, id, to)
			after := countRows(t, conn, `SELECT count(*) FROM delegation_events WHERE delegation_id = $1`, id)
			var got ledger.Status
			_ = conn.QueryRow(ctx, `SELECT status FROM delegations WHERE delegation_id = $1`, id).Scan(&got)

			switch ledger.Transition(from, to) {
			case ledger.OutcomeApplied:
				if err != nil || got != to || after-before != 1 {
					t.Errorf("%s: err %v, status %s, %d events; want applied with one event", id, err, got, after-before)
				}
			case ledger.OutcomeUnchanged:
				// A same-status UPDATE of a live row is allowed and changes
				// nothing; of a terminal row it is refused (frozen). Either
				// way: no event.
				if got != from || after != before || (from.Terminal() != (err != nil)) {
					t.Errorf("%s: err %v, status %s, %d events; want unchanged, no event", id, err, got, after-before)
				}
			default:
				if err == nil || got != from || after != before {
					t.Errorf("%s: err %v, status %s, %d events; want refused", id, err, got, after-before)
				}
			}
		}
	}
	// Raw SQL names its actor and reason the documented way.
	if _, err := conn.Exec(ctx, `INSERT INTO delegations (delegation_id, caller_id, callee_id) VALUES ('named', 'c', 'w')`); err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT set_config('sweeper.actor', 'ops-alice', true), set_config('sweeper.reason', 'customer cancelled', true)`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `UPDATE delegations SET status = 'failed' WHERE delegation_id = 'named'`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	var actor, reason string
	if err := conn.QueryRow(ctx, `SELECT actor, reason FROM delegation_events WHERE delegation_id = 'named' AND to_status = 'failed'`).Scan(&actor, &reason); err != nil {
		t.Fatal(err)
	}
	if actor != "ops-alice" || reason != "customer cancelled" {
		t.Fatalf("actor %q reason %q", actor, reason)
	}
	// Without them, the actor is the database role.
	if _, err := conn.Exec(ctx, `UPDATE delegations SET status = 'dispatched' WHERE delegation_id = 'queued->queued'`); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, `SELECT actor FROM delegation_events WHERE delegation_id = 'queued->queued' AND to_status = 'dispatched'`).Scan(&actor); err != nil || !strings.HasPrefix(actor, "db:") {
		t.Fatalf("default actor %q, %v", actor, err)
	}
}

func TestWritesInCallersTransaction(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	insert(t, l, "existing", ledger.StatusInProgress)

	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ltx := l.WithTx(tx)
	if _, err := ltx.Insert(ctx, ledger.NewDelegation{DelegationID: "in-tx", CallerID: "c", CalleeID: "w"}); err != nil {
		t.Fatal(err)
	}
	if res, err := ltx.SetStatus(ctx, "existing", ledger.StatusCompleted, ledger.Change{}); err != nil || res.Outcome != ledger.OutcomeApplied {
		t.Fatal(res, err)
	}
	if _, err := ltx.Heartbeat(ctx, "in-tx"); err != nil {
		t.Fatal(err)
	}
	// Visible inside the transaction, not outside.
	if _, err := ltx.Get(ctx, "in-tx"); err != nil {
		t.Fatalf("inside tx: %v", err)
	}
	if _, err := l.Get(ctx, "in-tx"); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("outside tx before commit: %v", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Get(ctx, "in-tx"); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("after rollback: %v, want ErrNotFound", err)
	}
	d, _ := l.Get(ctx, "existing")
	if d.Status != ledger.StatusInProgress {
		t.Fatalf("rolled-back status change kept: %s", d.Status)
	}
	if n := countRows(t, pool, `SELECT count(*) FROM delegation_events`); n != 1 {
		t.Fatalf("%d events after rollback, want 1 (the committed insert)", n)
	}
}

func TestInjectionLookingStringsStoredVerbatim(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	evil := []string{
		`'; DROP TABLE delegations; --`,
		`" OR 1=1 --`,
		`$1 $$ $body$ \x00`,
		`Robert'); DELETE FROM delegation_events;--`,
	}
	for i, s := range evil {
		id := s + string(rune('A'+i))
		if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: id, CallerID: s, CalleeID: s, TaskPreview: s}); err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		d, err := l.Get(ctx, id)
		if err != nil || d.DelegationID != id || d.CallerID != s || d.TaskPreview != s {
			t.Fatalf("%q stored as %+v, %v", s, d, err)
		}
	}
	if n := countRows(t, pool, `SELECT count(*) FROM delegations`); n != len(evil) {
		t.Fatalf("%d rows", n)
	}
}

// GetMany reads the delegations that exist, once each, as Get reads them;
// a missing id is absent, even one Insert would refuse (a blank one, one
// with a control character: a writer that bypassed the ledger may have
// stored it); text PostgreSQL cannot hold, or too many ids, is refused.
func TestGetMany(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	for _, id := range []string{"m-1", "m-2", "m-3"} {
		if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: id, CallerID: "c", CalleeID: "w", TaskPreview: "task " + id}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.SetStatus(ctx, "m-2", ledger.StatusInProgress, ledger.Change{}); err != nil {
		t.Fatal(err)
	}
	got, err := l.GetMany(ctx, []string{"m-2", "nope", "m-1", "m-2"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("GetMany: %d delegations, want m-1 and m-2", len(got))
	}
	for _, id := range []string{"m-1", "m-2"} {
		one, err := l.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got[id], one) {
			t.Fatalf("GetMany[%s] = %+v\nGet = %+v", id, got[id], one)
		}
	}
	if none, err := l.GetMany(ctx, nil); err != nil || len(none) != 0 {
		t.Fatalf("GetMany(nil) = %v, %v", none, err)
	}
	if got, err := l.GetMany(ctx, []string{"m-1", " ", "tab\there"}); err != nil || len(got) != 1 {
		t.Fatalf("GetMany with ids Insert refuses = %v, %v; want m-1 alone", got, err)
	}
	// A row a writer stored past the ledger, under an id Insert refuses,
	// is read back.
	if _, err := pool.Exec(ctx, `INSERT INTO delegations (delegation_id, caller_id, callee_id) VALUES (E'raw\tid', 'c', 'w')`); err != nil {
		t.Fatal(err)
	}
	if got, err := l.GetMany(ctx, []string{"m-1", "raw\tid"}); err != nil || len(got) != 2 || got["raw\tid"].DelegationID != "raw\tid" {
		t.Fatalf("GetMany with a row stored past the ledger = %v, %v; want m-1 and the row whose id has a tab", got, err)
	}
	for _, bad := range []string{"nul\x00", "\xff"} {
		if _, err := l.GetMany(ctx, []string{"m-1", bad}); !errors.Is(err, ledger.ErrInvalid) {
			t.Fatalf("id %q: %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := l.GetMany(ctx, make([]string, ledger.MaxGetMany+1)); !errors.Is(err, ledger.ErrInvalid) {
		t.Fatalf("too many ids: %v, want ErrInvalid", err)
	}
}

func TestGetAndList(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	if _, err := l.Get(ctx, "nope"); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("Get missing: %v", err)
	}
	// 25 rows for caller a (alternating callees), 5 for caller b; distinct created_at.
	for i := range 30 {
		caller, callee := "a", []string{"x", "y"}[i%2]
		if i >= 25 {
			caller = "b"
		}
		if _, err := pool.Exec(ctx, `INSERT INTO delegations (delegation_id, caller_id, callee_id, created_at) VALUES ($1, $2, $3, now() - make_interval(secs => $4))`,
			"id-"+string(rune('A'+i)), caller, callee, 100-i); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.SetStatus(ctx, "id-A", ledger.StatusFailed, ledger.Change{}); err != nil {
		t.Fatal(err)
	}

	var seen []string
	cursor := ""
	pages := 0
	for {
		p, err := l.List(ctx, ledger.ListFilter{CallerID: "a", Limit: 10, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, d := range p.Delegations {
			seen = append(seen, d.DelegationID)
		}
		if p.Next == "" {
			break
		}
		cursor = p.Next
	}
	if pages != 3 || len(seen) != 25 || seen[0] != "id-Y" || seen[24] != "id-A" {
		t.Fatalf("%d pages, %d rows, first %s last %s", pages, len(seen), seen[0], seen[len(seen)-1])
	}
	p, err := l.List(ctx, ledger.ListFilter{CalleeID: "y", Limit: 100})
	if err != nil || len(p.Delegations) != 15 || p.Next != "" {
		t.Fatalf("by callee: %d rows, next %q, %v", len(p.Delegations), p.Next, err)
	}
	p, err = l.List(ctx, ledger.ListFilter{CallerID: "a", CalleeID: "x"})
	if err != nil || len(p.Delegations) != 13 {
		t.Fatalf("by caller and callee: %d rows, %v", len(p.Delegations), err)
	}
	p, err = l.List(ctx, ledger.ListFilter{Status: ledger.StatusFailed})
	if err != nil || len(p.Delegations) != 1 || p.Delegations[0].DelegationID != "id-A" {
		t.Fatalf("by status: %+v, %v", p, err)
	}
	p, err = l.List(ctx, ledger.ListFilter{CallerID: "a", Status: ledger.StatusQueued})
	if err != nil || len(p.Delegations) != 24 {
		t.Fatalf("by caller and status: %d, %v", len(p.Delegations), err)
	}
	for name, f := range map[string]ledger.ListFilter{
		"no filter":      {},
		"bad limit":      {CallerID: "a", Limit: 5000},
		"negative limit": {CallerID: "a", Limit: -1},
		"bad cursor":     {CallerID: "a", Cursor: "not-a-cursor"},
		"bad status":     {Status: "later"},
	} {
		if _, err := l.List(ctx, f); !errors.Is(err, ledger.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

// Entering in_progress counts as a heartbeat even when the row was
// heartbeated earlier, while queued or dispatched: it does not start stale.
func TestEnteringInProgressIsAHeartbeat(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	moveTo(t, l, "d", ledger.StatusDispatched)
	if _, err := pool.Exec(ctx, `UPDATE delegations SET last_heartbeat = now() - interval '1 hour' WHERE delegation_id = 'd'`); err != nil {
		t.Fatal(err)
	}
	if res, err := l.SetStatus(ctx, "d", ledger.StatusInProgress, ledger.Change{}); err != nil || res.Outcome != ledger.OutcomeApplied {
		t.Fatal(res, err)
	}
	if age := countRows(t, pool, `SELECT extract(epoch FROM now() - last_heartbeat)::int FROM delegations WHERE delegation_id = 'd'`); age > 60 {
		t.Fatalf("entered in_progress with a heartbeat %ds old", age)
	}
	// A writer that sets the heartbeat explicitly keeps its value.
	moveTo(t, l, "e", ledger.StatusQueued)
	if _, err := pool.Exec(ctx, `UPDATE delegations SET status = 'in_progress', last_heartbeat = now() - interval '1 hour' WHERE delegation_id = 'e'`); err != nil {
		t.Fatal(err)
	}
	if age := countRows(t, pool, `SELECT extract(epoch FROM now() - last_heartbeat)::int FROM delegations WHERE delegation_id = 'e'`); age < 3500 {
		t.Fatalf("explicit heartbeat overwritten: age %ds", age)
	}
}

func TestEventsRejectsBadID(t *testing.T) {
	t.Parallel()
	l, _ := newLedger(t)
	for _, id := range []string{"", " ", "a\x00b", "\xff"} {
		if _, err := l.Events(context.Background(), id); !errors.Is(err, ledger.ErrInvalid) {
			t.Errorf("Events(%q): %v, want ErrInvalid", id, err)
		}
	}
}
