package migrations_test

import (
	"context"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/migrations"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// objects lists every sweeper object in the database: tables, indexes,
// functions, triggers, so that down can be shown to remove all of them.
func objects(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `
		SELECT 'table ' || tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> $1
		UNION ALL SELECT 'index ' || indexname FROM pg_indexes WHERE schemaname = 'public' AND tablename <> $1
		UNION ALL SELECT 'function ' || proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace
		UNION ALL SELECT 'trigger ' || tgname FROM pg_trigger WHERE NOT tgisinternal
		ORDER BY 1`, migrations.VersionTable)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func TestUpDownUpRoundTrip(t *testing.T) {
	t.Parallel()
	db := testdb.NewEmpty(t)
	if got := objects(t, db.Pool); len(got) != 0 {
		t.Fatalf("empty database has %v", got)
	}
	mg, err := migrations.Open(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer mg.Close()

	if v, dirty, err := mg.Version(); err != nil || v != 0 || dirty {
		t.Fatalf("fresh version = %d dirty %v, %v", v, dirty, err)
	}
	if err := mg.Up(); err != nil {
		t.Fatal(err)
	}
	first := objects(t, db.Pool)
	if len(first) < 15 {
		t.Fatalf("after up only %d objects: %v", len(first), first)
	}
	if v, dirty, err := mg.Version(); err != nil || v != migrations.Latest || dirty {
		t.Fatalf("version after up = %d dirty %v, %v", v, dirty, err)
	}
	if err := mg.Up(); err != nil {
		t.Fatalf("second up (no change) = %v", err)
	}
	if err := mg.Down(); err != nil {
		t.Fatal(err)
	}
	if got := objects(t, db.Pool); len(got) != 0 {
		t.Fatalf("down left %v", got)
	}
	if err := mg.Up(); err != nil {
		t.Fatal(err)
	}
	if again := objects(t, db.Pool); !slices.Equal(first, again) {
		t.Fatalf("up/down/up differs:\n%v\n%v", first, again)
	}
	st, err := migrations.ReadState(context.Background(), db.Pool)
	if err != nil || !st.Current() || st.Problem() != "" {
		t.Fatalf("state = %+v (%q), %v", st, st.Problem(), err)
	}
}

func TestStateProblems(t *testing.T) {
	t.Parallel()
	db := testdb.NewEmpty(t)
	ctx := context.Background()
	st, err := migrations.ReadState(ctx, db.Pool)
	if err != nil || st.Version != 0 || st.Current() || !strings.Contains(st.Problem(), "sweeper migrate up") {
		t.Fatalf("no schema: %+v %q %v", st, st.Problem(), err)
	}
	mg, err := migrations.Open(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer mg.Close()
	if err := mg.Force(int(migrations.Latest)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE `+migrations.VersionTable+` SET dirty = true`); err != nil {
		t.Fatal(err)
	}
	st, err = migrations.ReadState(ctx, db.Pool)
	if err != nil || !st.Dirty || st.Current() || !strings.Contains(st.Problem(), "sweeper migrate force") {
		t.Fatalf("dirty: %+v %q %v", st, st.Problem(), err)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE `+migrations.VersionTable+` SET dirty = false, version = 99`); err != nil {
		t.Fatal(err)
	}
	st, _ = migrations.ReadState(ctx, db.Pool)
	if st.Current() || !strings.Contains(st.Problem(), "newer") {
		t.Fatalf("newer schema: %+v %q", st, st.Problem())
	}
}

// Several processes' worth of migrators at once: all succeed, applied once.
func TestConcurrentUp(t *testing.T) {
	t.Parallel()
	db := testdb.NewEmpty(t)
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for range 3 {
		wg.Go(func() { errs <- migrations.Up(context.Background(), db.URL) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var n int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM `+migrations.VersionTable).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d version rows, %v", n, err)
	}
}

func TestOpenDoesNotLeakPassword(t *testing.T) {
	t.Parallel()
	for _, dsn := range []string{
		"postgres://u:hunter2@127.0.0.1:1/db?connect_timeout=1&sslmode=disable",
		"host=127.0.0.1 port=1 user=u password=hunter2 connect_timeout=1 sslmode=disable",
		"postgres://u:hunter2@[::1:bad/db",
		"password=hunter2 port=notanumber",
	} {
		_, err := migrations.Open(dsn)
		if err == nil {
			t.Fatalf("%q: want error", dsn)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Fatalf("error leaks the password: %v", err)
		}
	}
}

// The shape of the schema the sweep's plans and the ledger's guards rely on.
func TestSchemaShape(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	q := func(sql string, args ...any) map[string]string {
		rows, err := db.Pool.Query(ctx, sql, args...)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := map[string]string{}
		for rows.Next() {
			var k, v string
			if err := rows.Scan(&k, &v); err != nil {
				t.Fatal(err)
			}
			out[k] = v
		}
		return out
	}

	cols := q(`SELECT column_name, data_type || ' ' || is_nullable FROM information_schema.columns WHERE table_name = 'delegations'`)
	wantCols := map[string]string{
		"delegation_id": "text NO", "caller_id": "text NO", "callee_id": "text NO",
		"task_preview": "text NO", "result_preview": "text YES", "error_detail": "text YES",
		"status": "text NO", "idempotency_key": "text YES",
		"last_heartbeat": "timestamp with time zone YES", "heartbeat_minute": "timestamp with time zone YES",
		"deadline": "timestamp with time zone NO", "stuck_reason": "text YES",
		"created_at": "timestamp with time zone NO", "updated_at": "timestamp with time zone NO",
		"finished_at": "timestamp with time zone YES",
		// version 4 (attempts)
		"heartbeat_timeout": "interval YES", "heartbeat_expires_at": "timestamp with time zone YES",
		"attempt": "integer NO", "retry_of": "text YES",
		// version 7 (progress and waiting states)
		"progress": "jsonb YES", "progress_at": "timestamp with time zone YES",
		"progress_timeout": "interval YES", "queue_timeout": "interval YES", "start_timeout": "interval YES",
		"not_before": "timestamp with time zone YES", "dispatched_at": "timestamp with time zone YES",
		"progress_minute": "timestamp with time zone YES", "progress_expires_at": "timestamp with time zone YES",
		"queue_expires_at": "timestamp with time zone YES", "start_expires_at": "timestamp with time zone YES",
		// version 8 (retry policies and claims)
		"max_attempts":  "integer NO",
		"retry_backoff": "interval NO", "retry_backoff_max": "interval NO", "retry_on": "ARRAY NO",
	}
	if len(cols) != len(wantCols) {
		t.Errorf("delegations has %d columns, want %d: %v", len(cols), len(wantCols), cols)
	}
	for c, w := range wantCols {
		if cols[c] != w {
			t.Errorf("column %s = %q, want %q", c, cols[c], w)
		}
	}
	evCols := q(`SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'delegation_events'`)
	for _, c := range []string{"id", "delegation_id", "from_status", "to_status", "reason", "actor", "at", "detail"} {
		if evCols[c] == "" {
			t.Errorf("delegation_events lacks %s", c)
		}
	}
	if evCols["detail"] != "jsonb" {
		t.Errorf("detail is %q, want jsonb", evCols["detail"])
	}

	indexes := q(`SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN ('delegations', 'delegation_events')`)
	wantIdx := map[string][]string{
		"idx_delegations_inflight_heartbeat":     {"(heartbeat_minute)", "WHERE ((status = 'in_progress'::text) AND (heartbeat_timeout IS NULL))"},
		"idx_delegations_inflight_heartbeat_own": {"(heartbeat_expires_at)", "WHERE ((status = 'in_progress'::text) AND (heartbeat_timeout IS NOT NULL))"},
		"idx_delegations_idempotency_attempt":    {"UNIQUE INDEX", "(caller_id, idempotency_key, attempt DESC)", "WHERE (idempotency_key IS NOT NULL)"},
		"idx_delegations_retry_of":               {"UNIQUE INDEX", "(retry_of)", "WHERE (retry_of IS NOT NULL)"},
		"idx_delegations_inflight_deadline":      {"(deadline)", "WHERE (status = ANY (ARRAY['queued'::text, 'dispatched'::text, 'in_progress'::text]))"},
		"idx_delegations_caller_idempotency_key": {"UNIQUE INDEX", "(caller_id, idempotency_key)", "WHERE ((idempotency_key IS NOT NULL) AND (status <> ALL (ARRAY['failed'::text, 'stuck'::text])))"},
		"idx_delegations_caller":                 {"(caller_id, created_at DESC, delegation_id DESC)"},
		"idx_delegations_callee":                 {"(callee_id, created_at DESC, delegation_id DESC)"},
		"idx_delegations_status":                 {"(status, created_at DESC, delegation_id DESC)"},
		"idx_delegation_events_delegation":       {"(delegation_id, id)"},
		"idx_delegations_finished":               {"(status, finished_at)", "WHERE (finished_at IS NOT NULL)"},
		"delegations_pkey":                       {"UNIQUE INDEX", "(delegation_id)"},
		// version 5 (console indexes)
		"idx_delegation_events_stuck": {"(tx_id, id) INCLUDE (at, reason, caller_id, callee_id)", "WHERE (to_status = 'stuck'::text)"},
		// version 7: one partial index per new rule and kind of timeout
		"idx_delegations_inflight_progress":     {"(progress_minute)", "WHERE ((status = 'in_progress'::text) AND (progress_timeout IS NULL))"},
		"idx_delegations_inflight_progress_own": {"(progress_expires_at)", "WHERE ((status = 'in_progress'::text) AND (progress_timeout IS NOT NULL))"},
		"idx_delegations_queued":                {"(COALESCE(not_before, created_at))", "WHERE ((status = 'queued'::text) AND (queue_timeout IS NULL))"},
		"idx_delegations_queued_own":            {"(queue_expires_at)", "WHERE ((status = 'queued'::text) AND (queue_timeout IS NOT NULL))"},
		"idx_delegations_dispatched":            {"(dispatched_at)", "WHERE ((status = 'dispatched'::text) AND (start_timeout IS NULL))"},
		"idx_delegations_dispatched_own":        {"(start_expires_at)", "WHERE ((status = 'dispatched'::text) AND (start_timeout IS NOT NULL))"},
	}
	for name, parts := range wantIdx {
		def, ok := indexes[name]
		if !ok {
			t.Errorf("index %s missing", name)
			continue
		}
		for _, p := range parts {
			if !strings.Contains(def, p) {
				t.Errorf("index %s = %q, lacks %q", name, def, p)
			}
		}
	}

	// Room on each page for the row versions of heartbeats (HOT updates),
	// and autovacuum for their churn (docs/design.md, "Autovacuum").
	opts := q(`SELECT relname, array_to_string(reloptions, ',') FROM pg_class WHERE relname IN ('delegations', 'delegation_events')`)
	if want := "fillfactor=90,autovacuum_vacuum_scale_factor=0.01,autovacuum_vacuum_threshold=10000,autovacuum_analyze_scale_factor=0.02"; opts["delegations"] != want {
		t.Errorf("delegations reloptions = %q, want %s", opts["delegations"], want)
	}
	if want := "autovacuum_vacuum_scale_factor=0.02,autovacuum_vacuum_insert_scale_factor=0.02,autovacuum_analyze_scale_factor=0.02"; opts["delegation_events"] != want {
		t.Errorf("delegation_events reloptions = %q, want %s", opts["delegation_events"], want)
	}

	checks := q(`SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'delegations'::regclass AND contype = 'c'`)
	for _, name := range []string{
		"delegations_status_check", "delegations_delegation_id_check", "delegations_caller_id_check",
		"delegations_callee_id_check", "delegations_idempotency_key_check", "delegations_task_preview_check",
		"delegations_result_preview_check", "delegations_error_detail_check", "delegations_stuck_reason_check",
		"delegations_in_progress_heartbeat_check",
		"delegations_heartbeat_timeout_check", "delegations_attempt_check", "delegations_retry_of_check",
		"delegations_progress_check", "delegations_progress_timeout_check", "delegations_queue_timeout_check",
		"delegations_start_timeout_check",
	} {
		if checks[name] == "" {
			t.Errorf("CHECK %s missing", name)
		}
	}
	for _, s := range []string{"queued", "dispatched", "in_progress", "completed", "failed", "stuck"} {
		if !strings.Contains(checks["delegations_status_check"], "'"+s+"'") {
			t.Errorf("status CHECK lacks %s: %s", s, checks["delegations_status_check"])
		}
	}
	triggers := q(`SELECT tgname, tgrelid::regclass::text FROM pg_trigger WHERE NOT tgisinternal`)
	for _, tg := range []string{"delegations_guard", "delegations_touch", "delegations_touch_insert", "delegations_audit_insert", "delegations_audit_update", "delegation_events_append_only",
		"delegations_delete_guard", "delegations_delete_events", "delegations_no_truncate", "delegation_events_no_truncate",
		"delegations_touch_expiry", "delegations_touch_insert_expiry",
		"delegations_touch_progress", "delegations_touch_insert_progress"} {
		if triggers[tg] == "" {
			t.Errorf("trigger %s missing", tg)
		}
	}
}
