package ledger_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/internal/stress/report"
	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/ledger"
)

// Hostile input to every call that takes an id or text: each is refused
// with a typed error naming the argument, before any statement runs, and
// the database is left exactly as it was. Injection-looking and exotic
// Unicode strings that are valid are stored and read back verbatim.

// hostileIDs are ids every call must refuse, with the reason's gist.
var hostileIDs = []struct {
	name, id, reason string
}{
	{"empty", "", "is empty"},
	{"blank", " \t ", "is blank"},
	{"over-long ascii", strings.Repeat("x", ledger.MaxIDBytes+1), "longer than 255 bytes"},
	{"over-long multibyte", strings.Repeat("日", 86), "longer than 255 bytes"}, // 258 bytes, 86 runes
	{"NUL", "a\x00b", "NUL"},
	{"only NUL", "\x00", "NUL"},
	{"invalid UTF-8", "w\xff", "not valid UTF-8"},
	{"truncated UTF-8", "\xe6\x97", "not valid UTF-8"},
	{"overlong encoding of /", "\xc0\xaf", "not valid UTF-8"},
	{"UTF-16 surrogate", "\xed\xa0\x80", "not valid UTF-8"},
	{"newline", "a\nb", "control character"},
	{"carriage return", "a\rb", "control character"},
	{"escape", "\x1b[2J", "control character"},
	{"DEL", "a\x7f", "control character"},
}

// fingerprint is the whole ledger as text: any write changes it.
func fingerprint(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var rows, events string
	err := pool.QueryRow(context.Background(), `SELECT
		COALESCE((SELECT md5(string_agg(d::text, '|' ORDER BY delegation_id)) FROM delegations AS d), ''),
		COALESCE((SELECT md5(string_agg(e::text, '|' ORDER BY id)) FROM delegation_events AS e), '')`).Scan(&rows, &events)
	if err != nil {
		t.Fatal(err)
	}
	return rows + "/" + events
}

func wantFieldError(t *testing.T, call string, err error, field, reason string) {
	t.Helper()
	var fe *ledger.FieldError
	switch {
	case !errors.As(err, &fe):
		t.Errorf("%s: error %v, want a *ledger.FieldError", call, err)
	case fe.Field != field || !strings.Contains(fe.Reason, reason):
		t.Errorf("%s: FieldError{%q, %q}, want field %q, reason with %q", call, fe.Field, fe.Reason, field, reason)
	case !errors.Is(err, ledger.ErrInvalid):
		t.Errorf("%s: %v does not match ErrInvalid", call, err)
	}
}

func TestHostileIDsRefusedEverywhere(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	moveTo(t, l, "live", ledger.StatusInProgress)
	moveTo(t, l, "done", ledger.StatusCompleted)
	before := fingerprint(t, pool)
	tried := 0
	for _, h := range hostileIDs {
		calls := []struct {
			call, field string
			do          func() error
		}{
			{"SetStatus", "delegation_id", func() error {
				_, err := l.SetStatus(ctx, h.id, ledger.StatusCompleted, ledger.Change{Actor: "hostile"})
				return err
			}},
			{"Heartbeat", "delegation_id", func() error { _, err := l.Heartbeat(ctx, h.id); return err }},
			{"HeartbeatMany", "delegation_ids[1]", func() error {
				_, err := l.HeartbeatMany(ctx, []string{"live", h.id, "done"})
				return err
			}},
			{"Get", "delegation_id", func() error { _, err := l.Get(ctx, h.id); return err }},
			{"Insert", "delegation_id", func() error {
				_, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: h.id, CallerID: "c", CalleeID: "w"})
				return err
			}},
			{"Insert caller", "caller_id", func() error {
				_, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: "new", CallerID: h.id, CalleeID: "w"})
				return err
			}},
			{"Insert idempotency key", "idempotency_key", func() error {
				_, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: "new", CallerID: "c", CalleeID: "w", IdempotencyKey: h.id})
				return err
			}},
			{"List by caller", "caller_id", func() error { _, err := l.List(ctx, ledger.ListFilter{CallerID: h.id}); return err }},
			{"List by callee", "callee_id", func() error {
				_, err := l.List(ctx, ledger.ListFilter{CalleeID: h.id, Status: ledger.StatusQueued})
				return err
			}},
		}
		for _, c := range calls {
			if h.id == "" && (c.field == "caller_id" && strings.HasPrefix(c.call, "List") || c.field == "callee_id" ||
				c.field == "idempotency_key") {
				continue // "" means "no filter" or "no key" there
			}
			tried++
			wantFieldError(t, fmt.Sprintf("%s with %s id %q", c.call, h.name, h.id), c.do(), c.field, h.reason)
		}
	}
	if after := fingerprint(t, pool); after != before {
		t.Fatal("refused calls changed the ledger")
	}
	// The edge: 255 bytes is an id, 256 is not, counted in bytes.
	for _, id := range []string{strings.Repeat("x", ledger.MaxIDBytes), strings.Repeat("日", 85)} {
		insert(t, l, id, ledger.StatusInProgress)
		if hb, err := l.Heartbeat(ctx, id); err != nil || !hb.Live {
			t.Fatalf("heartbeat of a %d-byte id: %+v, %v", len(id), hb, err)
		}
		if res, err := l.SetStatus(ctx, id, ledger.StatusCompleted, ledger.Change{}); err != nil || res.Outcome != ledger.OutcomeApplied {
			t.Fatalf("SetStatus of a %d-byte id: %+v, %v", len(id), res, err)
		}
		tried += 3
	}
	record(t, tried)
}

func TestHostileChangesRefused(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	moveTo(t, l, "ip", ledger.StatusInProgress)
	before := fingerprint(t, pool)
	cases := []struct {
		name   string
		change ledger.Change
		to     ledger.Status
		field  string
	}{
		{"NUL in actor", ledger.Change{Actor: "me\x00"}, ledger.StatusCompleted, "actor"},
		{"invalid UTF-8 actor", ledger.Change{Actor: "\xff"}, ledger.StatusCompleted, "actor"},
		{"NUL in reason", ledger.Change{Reason: "\x00"}, ledger.StatusFailed, "reason"},
		{"invalid UTF-8 reason", ledger.Change{Reason: "r\xc3"}, ledger.StatusFailed, "reason"},
		{"NUL in result", ledger.Change{Result: "ok\x00"}, ledger.StatusCompleted, "result"},
		{"invalid UTF-8 result", ledger.Change{Result: "\xed\xa0\x80"}, ledger.StatusCompleted, "result"},
		{"NUL in error", ledger.Change{Error: "boom\x00"}, ledger.StatusFailed, "error"},
		{"invalid UTF-8 error", ledger.Change{Error: "\xc0\xaf"}, ledger.StatusFailed, "error"},
		{"channel detail", ledger.Change{Detail: make(chan int)}, ledger.StatusCompleted, "detail"},
		{"func detail", ledger.Change{Detail: func() {}}, ledger.StatusCompleted, "detail"},
		{"NaN detail", ledger.Change{Detail: math.NaN()}, ledger.StatusCompleted, "detail"},
		{"infinite detail", ledger.Change{Detail: map[string]float64{"x": math.Inf(1)}}, ledger.StatusCompleted, "detail"},
	}
	for _, c := range cases {
		_, err := l.SetStatus(ctx, "ip", c.to, c.change)
		wantFieldError(t, c.name, err, c.field, "")
	}
	for _, to := range []ledger.Status{"", "paused", "COMPLETED", "completed ", "stuck\x00"} {
		_, err := l.SetStatus(ctx, "ip", to, ledger.Change{})
		var use *ledger.UnknownStatusError
		if !errors.As(err, &use) || !errors.Is(err, ledger.ErrInvalid) {
			t.Errorf("SetStatus to %q: %v, want *UnknownStatusError", to, err)
		}
	}
	// A detail whose JSON holds \u0000, which jsonb cannot store: the
	// database refuses the whole change, typed as ErrInvalid.
	if _, err := l.SetStatus(ctx, "ip", ledger.StatusCompleted, ledger.Change{Detail: map[string]string{"x": "a\x00b"}}); !errors.Is(err, ledger.ErrInvalid) {
		t.Errorf("detail with a NUL: %v, want ErrInvalid", err)
	}
	// Bad list requests.
	lists := map[string]ledger.ListFilter{
		"status in the wrong case": {Status: "Stuck"},
		"limit too large":          {CallerID: "caller", Limit: ledger.MaxListLimit + 1},
		"negative limit":           {CallerID: "caller", Limit: -5},
		"cursor not base64":        {CallerID: "caller", Cursor: "%%%"},
		"cursor without a colon":   {CallerID: "caller", Cursor: base64.RawURLEncoding.EncodeToString([]byte("123"))},
		"cursor not a number":      {CallerID: "caller", Cursor: base64.RawURLEncoding.EncodeToString([]byte("x:id"))},
		"cursor out of range":      {CallerID: "caller", Cursor: base64.RawURLEncoding.EncodeToString([]byte("99999999999999999999:id"))},
		"cursor id with a NUL":     {CallerID: "caller", Cursor: base64.RawURLEncoding.EncodeToString([]byte("1:a\x00"))},
		"cursor id not UTF-8":      {CallerID: "caller", Cursor: base64.RawURLEncoding.EncodeToString([]byte("1:\xff"))},
	}
	for name, f := range lists {
		if _, err := l.List(ctx, f); !errors.Is(err, ledger.ErrInvalid) {
			t.Errorf("List, %s: %v, want ErrInvalid", name, err)
		}
	}
	if after := fingerprint(t, pool); after != before {
		t.Fatal("refused calls changed the ledger")
	}
	record(t, len(cases)+5+1+len(lists))
}

// hostileText is valid text that looks like an attack or is exotic Unicode.
var hostileText = []string{
	`'; DROP TABLE delegations; --`,
	`' OR '1'='1`,
	`"; DELETE FROM delegation_events WHERE ''='`,
	`$1 $2 $$ $body$ $$; SELECT pg_sleep(10); $$`,
	`\x00 \u0000 \0 %00`,
	`E'\\x41' || chr(0) || '`,
	`%s %d %v %!(EXTRA) {{.Password}} ${HOME} $(id) ` + "`id`",
	`<script>alert(1)</script>`,
	`{"status":"completed"}`,
	`NULL`,
	"\u202egnp.exe",                     // right-to-left override
	"e\u0301\u0301\u0301",               // combining accents
	"👩‍👩‍👧‍👦🏳️‍🌈",                       // ZWJ sequences
	"\U0001F600\U0010FFFF",              // 4-byte runes, the last code point
	"\ufeffBOM and \u00a0nbsp\u2028sep", // invisible characters
	`\\server\share\..\..\etc\passwd`,
	strings.Repeat("'", 255),
}

func TestHostileTextStoredVerbatim(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	objects := schemaObjects(t, pool)
	tried := 0
	for i, s := range hostileText {
		id := s
		if len(id) > ledger.MaxIDBytes-4 {
			id = id[:ledger.MaxIDBytes-4]
		}
		id = fmt.Sprintf("%s#%02d", id, i)
		caller := fmt.Sprintf("%02d%s", i, s)
		if len(caller) > ledger.MaxIDBytes {
			caller = caller[:ledger.MaxIDBytes]
		}
		if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: id, CallerID: caller, CalleeID: caller,
			TaskPreview: s, IdempotencyKey: caller, Status: ledger.StatusInProgress, Timeout: time.Hour}); err != nil {
			t.Fatalf("insert %q: %v", s, err)
		}
		if hb, err := l.Heartbeat(ctx, id); err != nil || !hb.Live {
			t.Fatalf("heartbeat %q: %+v %v", id, hb, err)
		}
		if notLive, err := l.HeartbeatMany(ctx, []string{id}); err != nil || len(notLive) != 0 {
			t.Fatalf("heartbeat many %q: %v %v", id, notLive, err)
		}
		to := ledger.StatusCompleted
		if i%2 == 1 {
			to = ledger.StatusFailed
		}
		res, err := l.SetStatus(ctx, id, to, ledger.Change{Actor: s, Reason: s, Result: s, Error: s, Detail: map[string]string{"text": s}})
		if err != nil || res.Outcome != ledger.OutcomeApplied {
			t.Fatalf("SetStatus %q: %+v %v", id, res, err)
		}
		d, err := l.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if d.DelegationID != id || d.CallerID != caller || d.CalleeID != caller || d.TaskPreview != s ||
			d.IdempotencyKey != caller || d.ResultPreview != s || d.ErrorDetail != s || d.Status != to {
			t.Errorf("%q stored as %+v", s, d)
		}
		evs, err := l.Events(ctx, id)
		if err != nil || len(evs) != 2 {
			t.Fatalf("events of %q: %v %v", id, evs, err)
		}
		last := evs[1]
		if last.Actor != s || last.Reason != s || !strings.Contains(string(last.Detail), "text") {
			t.Errorf("event of %q: actor %q reason %q detail %s", id, last.Actor, last.Reason, last.Detail)
		}
		page, err := l.List(ctx, ledger.ListFilter{CallerID: caller, CalleeID: caller, Status: to})
		if err != nil || len(page.Delegations) != 1 || page.Delegations[0].DelegationID != id {
			t.Errorf("List by caller %q: %+v %v", caller, page, err)
		}
		tried += 7
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM delegations`).Scan(&n); err != nil || n != len(hostileText) {
		t.Fatalf("%d rows, %v: want %d", n, err, len(hostileText))
	}
	// The schema's own objects are all still there.
	if got := schemaObjects(t, pool); got != objects {
		t.Fatalf("the schema changed:\n%s\nwas:\n%s", got, objects)
	}
	record(t, tried)
}

// schemaObjects names the tables, triggers and functions of the database.
func schemaObjects(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var s string
	err := pool.QueryRow(context.Background(), `SELECT string_agg(o, ',' ORDER BY o) FROM (
		SELECT relname::text AS o FROM pg_class WHERE relnamespace = 'public'::regnamespace
		UNION ALL SELECT tgname::text FROM pg_trigger WHERE NOT tgisinternal
		UNION ALL SELECT proname::text FROM pg_proc WHERE pronamespace = 'public'::regnamespace) AS objects`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// record hands the number of hostile inputs tried to `make stress`.
func record(t *testing.T, tried int) {
	t.Helper()
	line, err := report.Record(t.Name(), report.Figures{report.HostileInputs: int64(tried)})
	if err != nil {
		t.Error(err)
	}
	t.Log(line)
}

// A traceparent is stored as given when it is a W3C traceparent, and
// refused, naming the field, when it is not (the schema's CHECK refuses the
// same for other writers).
func TestInsertTraceParent(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	l := ledger.New(db.Pool)
	ctx := context.Background()
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: "tp-1", CallerID: "c", CalleeID: "w", TraceParent: tp}); err != nil {
		t.Fatal(err)
	}
	var got string
	if err := db.Pool.QueryRow(ctx, `SELECT traceparent FROM delegations WHERE delegation_id = 'tp-1'`).Scan(&got); err != nil || got != tp {
		t.Fatalf("stored %q, %v", got, err)
	}
	for _, bad := range []string{
		"nope", strings.ToUpper(tp), "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
		tp + "-extra",
	} {
		_, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: "tp-2", CallerID: "c", CalleeID: "w", TraceParent: bad})
		var fe *ledger.FieldError
		if !errors.As(err, &fe) || fe.Field != "traceparent" {
			t.Errorf("traceparent %q: %v", bad, err)
		}
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE delegations SET traceparent = 'nope' WHERE delegation_id = 'tp-1'`); err == nil {
		t.Fatal("the schema took a bad traceparent")
	}
}
