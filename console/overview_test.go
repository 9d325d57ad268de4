package console_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/console"
	"github.com/tasksweeper/sweeper/internal/auth"
	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/sweep"
)

// backdateStuck marks ids stuck with reason, as the sweep does, and dates
// their stuck events ago into the past (the append-only log's one
// sanctioned rewrite, with its trigger disabled, as in a migration).
func backdateStuck(t *testing.T, e *env, reason string, ago time.Duration, ids ...string) {
	t.Helper()
	ctx := context.Background()
	tx, err := e.db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`SELECT set_config('sweeper.actor', 'sweeper', true)`, nil},
		{`UPDATE delegations SET status = 'stuck', stuck_reason = $2 WHERE delegation_id = ANY($1)`, []any{ids, reason}},
		{`ALTER TABLE delegation_events DISABLE TRIGGER delegation_events_append_only`, nil},
		{`UPDATE delegation_events SET at = now() - make_interval(secs => $2) WHERE delegation_id = ANY($1) AND to_status = 'stuck'`, []any{ids, ago.Seconds()}},
		{`ALTER TABLE delegation_events ENABLE TRIGGER delegation_events_append_only`, nil},
	} {
		if _, err := tx.Exec(ctx, q.sql, q.args...); err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestOverviewNumbers(t *testing.T) {
	t.Parallel()
	runs := console.NewRunTracker()
	e := newEnv(t, false, func(c *console.Config) { c.Runs = runs.Runs; c.HeartbeatTimeout = 10 * time.Minute })
	for i := range 5 {
		e.insert(fmt.Sprintf("q%d", i), "billing", "mailer", ledger.StatusQueued, "")
	}
	for i := range 3 {
		e.insert(fmt.Sprintf("p%d", i), "search", "indexer", ledger.StatusInProgress, "")
	}
	e.insert("x0", "search", "indexer", ledger.StatusDispatched, "")
	for i := range 9 {
		caller := "billing"
		if i >= 3 {
			caller = "search"
		}
		e.insert(fmt.Sprintf("s%d", i), caller, "mailer", ledger.StatusInProgress, "")
	}
	e.insert("done", "billing", "mailer", ledger.StatusQueued, "")
	if _, err := e.ledger.SetStatus(context.Background(), "done", ledger.StatusCompleted, ledger.Change{}); err != nil {
		t.Fatal(err)
	}
	// Stuck 10 min ago (hour and day), 3 h ago (day, and in the chart) and
	// 30 h ago (neither).
	backdateStuck(t, e, "heartbeat_timeout", 10*time.Minute, "s0", "s1")
	backdateStuck(t, e, "deadline_exceeded", 10*time.Minute, "s2")
	backdateStuck(t, e, "heartbeat_timeout", 3*time.Hour, "s3", "s4", "s5")
	backdateStuck(t, e, "deadline_exceeded", 30*time.Hour, "s6", "s7", "s8")
	runs.RunDone(nil)
	runs.RunDone(fmt.Errorf("connection refused"))

	c := e.client()
	body := c.get("/", bearer(e.tokens[auth.RoleReader])...).body
	for id, want := range map[string]string{
		"in-flight-total": "9", "in-flight-queued": "5", "in-flight-dispatched": "1", "in-flight-in_progress": "3",
		"stuck-hour-heartbeat_timeout": "2", "stuck-hour-deadline_exceeded": "1",
		"stuck-day-heartbeat_timeout": "5", "stuck-day-deadline_exceeded": "1",
		"failures": "1",
	} {
		if got := testid(t, body, id); got != want {
			t.Errorf("%s = %s, want %s", id, got, want)
		}
	}
	// The chart: two bars (10 min and 3 h ago) totalling 6.
	if n := strings.Count(body, "<rect "); n != 2 {
		t.Errorf("chart has %d bars, want 2", n)
	}
	if !strings.Contains(body, "6 in 6 hours, peak 3 a minute") {
		t.Error("chart caption does not say 6 in 6 hours, peak 3")
	}
	for _, want := range []string{"heartbeat_timeout", ">search</bdi>", ">billing</bdi>", "connection refused"} {
		if !strings.Contains(body, want) {
			t.Errorf("overview lacks %q", want)
		}
	}
	// Next row due: in_progress rows heartbeat now, so the heartbeat rule is
	// due in about 10 minutes, before any 6-hour deadline.
	if m := regexp.MustCompile(`data-testid="next-due"><time [^>]*>in (\d+) min</time>`).FindStringSubmatch(body); m == nil || (m[1] != "9" && m[1] != "10") {
		t.Errorf("next row due not in about 10 min: %v", m)
	}
	// A caller's overview counts its own rows only.
	body = c.get("/", bearer(e.tokens[auth.RoleCaller])...).body
	if got := testid(t, body, "in-flight-total"); got != "5" {
		t.Errorf("caller's in flight = %s, want 5", got)
	}
	if got := testid(t, body, "stuck-day-heartbeat_timeout"); got != "2" {
		t.Errorf("caller's stuck in a day = %s, want 2", got)
	}
}

// sse reads server-sent events from a stream.
type sse struct {
	id, event, data string
}

func readEvents(t *testing.T, r *bufio.Reader, out chan<- sse) {
	var ev sse
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			close(out)
			return
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "":
			if ev.event != "" {
				out <- ev
			}
			ev = sse{}
		case strings.HasPrefix(line, "id: "):
			ev.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			ev.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			ev.data = line[6:]
		}
	}
}

func openStream(t *testing.T, e *env, ctx context.Context, token, lastID string) <-chan sse {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/live/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	br := bufio.NewReader(resp.Body)
	// The stream says it is open once its cursor is taken: what commits
	// from then on is streamed.
	if line, err := br.ReadString('\n'); err != nil || line != "retry: 2000\n" {
		t.Fatalf("stream start %q, %v", line, err)
	}
	if line, err := br.ReadString('\n'); err != nil || line != ": open\n" {
		t.Fatalf("stream start %q, %v", line, err)
	}
	out := make(chan sse, 16)
	go readEvents(t, br, out)
	return out
}

func next(t *testing.T, ctx context.Context, ch <-chan sse) sse {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("stream ended")
		}
		return ev
	case <-ctx.Done():
		t.Fatal("no event before the deadline")
	}
	return sse{}
}

func TestLiveStreamsStuckTransitionsFromTheFeed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e.insert("live-own", "billing", "indexer", ledger.StatusInProgress, "")
	e.insert("live-other", "search", "crawler", ledger.StatusInProgress, "")
	e.insert("live-late", "billing", "indexer", ledger.StatusInProgress, "")

	reader := openStream(t, e, ctx, e.tokens[auth.RoleReader], "")
	caller := openStream(t, e, ctx, e.tokens[auth.RoleCaller], "")

	// The real sweep marks them: deadline passed.
	if _, err := e.db.Pool.Exec(ctx, `UPDATE delegations SET deadline = now() - interval '1 second' WHERE delegation_id IN ('live-own', 'live-other')`); err != nil {
		t.Fatal(err)
	}
	sw, err := sweep.New(e.db.Pool, sweep.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := sw.RunOnce(ctx); err != nil || res.Swept != 2 {
		t.Fatalf("sweep = %+v, %v", res, err)
	}
	got := map[string]string{}
	var lastID string
	for range 2 {
		ev := next(t, ctx, reader)
		var le struct {
			DelegationID string `json:"delegation_id"`
			Reason       string `json:"reason"`
			Actor        string `json:"actor"`
			Href         string `json:"href"`
		}
		if err := json.Unmarshal([]byte(ev.data), &le); err != nil || ev.event != "stuck" || ev.id == "" {
			t.Fatalf("event %+v: %v", ev, err)
		}
		got[le.DelegationID] = le.Reason + " " + le.Actor + " " + le.Href
		lastID = ev.id
	}
	if got["live-own"] != "deadline_exceeded sweeper /delegations/live-own" || got["live-other"] == "" {
		t.Fatalf("reader's events %v", got)
	}
	// The caller sees its own row only.
	if ev := next(t, ctx, caller); !strings.Contains(ev.data, `"live-own"`) {
		t.Fatalf("caller's first event %+v", ev)
	}

	// A browser that reconnects with Last-Event-ID misses nothing: mark a
	// third row while no stream is open, then resume.
	if _, err := e.ledger.SetStatus(ctx, "live-late", ledger.StatusStuck, ledger.Change{Actor: "db:ops"}); err != nil {
		t.Fatal(err)
	}
	resumed := openStream(t, e, ctx, e.tokens[auth.RoleReader], lastID)
	if ev := next(t, ctx, resumed); !strings.Contains(ev.data, `"live-late"`) {
		t.Fatalf("resumed stream's first event %+v", ev)
	}
	// And the caller's stream sees it too, live.
	if ev := next(t, ctx, caller); !strings.Contains(ev.data, `"live-late"`) {
		t.Fatalf("caller's second event %+v", ev)
	}
	// The live page lists the recent ones.
	if body := e.client().get("/live", bearer(e.tokens[auth.RoleCaller])...).body; !strings.Contains(body, "live-late") || strings.Contains(body, "live-other") {
		t.Error("the caller's live page does not list its own stuck rows only")
	}
	// A bad Last-Event-ID is a 400.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/live/events", nil)
	req.Header.Set("Authorization", "Bearer "+e.tokens[auth.RoleReader])
	req.Header.Set("Last-Event-ID", "abc")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad Last-Event-ID = %d", resp.StatusCode)
	}
}

func TestCloseEndsStreams(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ch := openStream(t, e, ctx, e.tokens[auth.RoleReader], "")
	e.h.Close()
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("an event after Close")
		}
	case <-ctx.Done():
		t.Fatal("Close did not end the stream")
	}
}

func TestNoSecretInLogsOrPages(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	c := e.client()
	c.signIn(e.tokens[auth.RoleAdmin])
	c.get("/delegations?status=nope")
	c.get("/", "Authorization", "Bearer "+e.tokens[auth.RoleReader]+"x")
	// A database failure: the page says nothing of it, the log has it.
	e.db.Pool.Close()
	r := c.get("/")
	if r.code != http.StatusInternalServerError || strings.Contains(r.body, "pool") || strings.Contains(r.body, "postgres") {
		t.Fatalf("database failure page = %d:\n%s", r.code, r.body)
	}
	if e.logs.Len() == 0 {
		t.Fatal("the failure was not logged")
	}
	for _, entry := range e.logs.All() {
		line := fmt.Sprint(entry.Message, entry.ContextMap())
		for _, tok := range e.tokens {
			if strings.Contains(line, tok) || strings.Contains(line, tok[4:20]) {
				t.Fatalf("a token in the log: %s", line)
			}
		}
	}
}

// TestStreamOutlivesServerTimeouts: a server with short read and write
// timeouts (as the API listener has) does not cut a live stream. The wait
// is the point of the test: the timeouts must pass.
func TestStreamOutlivesServerTimeouts(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	srv := httptest.NewUnstartedServer(e.h)
	srv.Config.ReadTimeout, srv.Config.WriteTimeout = 200*time.Millisecond, 200*time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close)
	e.insert("slow", "billing", "indexer", ledger.StatusInProgress, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	local := *e
	local.srv = srv
	ch := openStream(t, &local, ctx, e.tokens[auth.RoleReader], "")
	<-time.After(600 * time.Millisecond) // three times both timeouts
	if _, err := e.ledger.SetStatus(ctx, "slow", ledger.StatusStuck, ledger.Change{}); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, ctx, ch); !strings.Contains(ev.data, `"slow"`) {
		t.Fatalf("event %+v", ev)
	}
}

// The new reasons of issue 20 are counted on the overview; a delegation's
// progress and its age are on its detail page and in the list.
func TestProgressAndWaitingReasonsShown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	ctx := context.Background()
	for i := range 6 {
		e.insert(fmt.Sprintf("w%d", i), "billing", "mailer", ledger.StatusInProgress, "")
	}
	if res, err := e.ledger.HeartbeatProgress(ctx, "w0", json.RawMessage(`{"step": "3 of 7", "cursor": "page-42"}`)); err != nil || !res.Live {
		t.Fatalf("heartbeat: %+v, %v", res, err)
	}
	backdateStuck(t, e, sweep.ReasonStalled, 10*time.Minute, "w1", "w2")
	backdateStuck(t, e, sweep.ReasonQueueTimeout, 10*time.Minute, "w3")
	backdateStuck(t, e, sweep.ReasonStartTimeout, 3*time.Hour, "w4")

	c := e.client()
	body := c.get("/", bearer(e.tokens[auth.RoleReader])...).body
	for id, want := range map[string]string{
		"stuck-hour-stalled": "2", "stuck-hour-queue_timeout": "1", "stuck-hour-start_timeout": "0",
		"stuck-day-stalled": "2", "stuck-day-queue_timeout": "1", "stuck-day-start_timeout": "1",
	} {
		if got := testid(t, body, id); got != want {
			t.Errorf("%s = %s, want %s", id, got, want)
		}
	}
	detail := c.get("/delegations/w0", bearer(e.tokens[auth.RoleReader])...).body
	if got := testid(t, detail, "progress-age"); got != "just now" && !strings.HasSuffix(got, "s ago") {
		t.Errorf("progress age %q", got)
	}
	if !strings.Contains(detail, `&#34;cursor&#34;: &#34;page-42&#34;`) || !strings.Contains(detail, "changed") {
		t.Errorf("detail page lacks the progress: %s", detail)
	}
	list := c.get("/delegations?caller_id=billing", bearer(e.tokens[auth.RoleReader])...).body
	if !strings.Contains(list, `&#34;step&#34;: &#34;3 of 7&#34;`) || !strings.Contains(list, ">Progress</th>") {
		t.Errorf("list lacks the progress column")
	}
	if !strings.Contains(list, ">stalled</span>") {
		t.Errorf("list lacks the stalled reason")
	}
}
