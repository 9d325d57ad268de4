package daemon_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap/zaptest"

	"github.com/tasksweeper/sweeper/api"
	"github.com/tasksweeper/sweeper/internal/auth"
	"github.com/tasksweeper/sweeper/internal/config"
	"github.com/tasksweeper/sweeper/internal/daemon"
	"github.com/tasksweeper/sweeper/internal/pgserver"
	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/migrations"
	"github.com/tasksweeper/sweeper/sweep"
)

// fakeClock is the lag samples' clock, moved by the test.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// counter reads one series of a counter vector from the daemon's registry.
func counter(t *testing.T, m *daemon.Metrics, name, label, value string) float64 {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, s := range f.GetMetric() {
			for _, lp := range s.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return s.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no series %s{%s=%q}", name, label, value)
	return 0
}

// readCounts are the routing counters at one moment.
type readCounts struct{ replica, primary, lag, unreachable, notStandby, failed float64 }

func readCountsOf(t *testing.T, m *daemon.Metrics) readCounts {
	t.Helper()
	return readCounts{
		replica:     counter(t, m, "sweeper_read_queries_total", "target", daemon.TargetReplica),
		primary:     counter(t, m, "sweeper_read_queries_total", "target", daemon.TargetPrimary),
		lag:         counter(t, m, "sweeper_read_replica_fallbacks_total", "reason", daemon.FallbackLag),
		unreachable: counter(t, m, "sweeper_read_replica_fallbacks_total", "reason", daemon.FallbackUnreachable),
		notStandby:  counter(t, m, "sweeper_read_replica_fallbacks_total", "reason", daemon.FallbackNotStandby),
		failed:      counter(t, m, "sweeper_read_replica_fallbacks_total", "reason", daemon.FallbackError),
	}
}

func (a readCounts) minus(b readCounts) readCounts {
	return readCounts{a.replica - b.replica, a.primary - b.primary, a.lag - b.lag,
		a.unreachable - b.unreachable, a.notStandby - b.notStandby, a.failed - b.failed}
}

func newRouter(t *testing.T, primary *pgxpool.Pool, readURL string, m *daemon.Metrics, clock *fakeClock) *daemon.ReadRouter {
	t.Helper()
	cfg := config.Default()
	cfg.Database.ReadURL = readURL
	rc := daemon.ReadRouterConfig{MaxLag: 10 * time.Second, Metrics: m, Logger: zaptest.NewLogger(t)}
	if clock != nil {
		rc.Now = clock.Now
	}
	r, err := daemon.NewReadRouter(context.Background(), primary, cfg, rc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// callerIDs lists caller's delegation ids through l, sorted.
func callerIDs(t *testing.T, l *ledger.Ledger, caller string) []string {
	t.Helper()
	page, err := l.List(context.Background(), ledger.ListFilter{CallerID: caller})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	var ids []string
	for _, d := range page.Delegations {
		ids = append(ids, d.DelegationID)
	}
	slices.Sort(ids)
	return ids
}

func insert(t *testing.T, pool *pgxpool.Pool, id string) {
	t.Helper()
	if _, err := ledger.New(pool).Insert(context.Background(), ledger.NewDelegation{
		DelegationID: id, CallerID: "c", CalleeID: "w"}); err != nil {
		t.Fatal(err)
	}
}

// TestReadRouterWithoutStandby: a replica that cannot be reached, or a
// read_url that is not a standby, sends every read to the primary, counted
// by reason, and the reads succeed.
func TestReadRouterWithoutStandby(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	insert(t, db.Pool, "d1")
	for _, tc := range []struct {
		name, readURL, reason string
	}{
		{"unreachable", "postgres://sweeper:s3cret@127.0.0.1:1/nowhere?connect_timeout=1", daemon.FallbackUnreachable},
		{"not a standby", db.URL, daemon.FallbackNotStandby},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := daemon.NewMetrics()
			r := newRouter(t, db.Pool, tc.readURL, m, nil)
			if err := r.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			defer r.Stop()
			if st := r.State(); st.InUse || st.Reason != tc.reason {
				t.Fatalf("state after the first check = %+v, want reason %s", st, tc.reason)
			}
			if st := r.State(); st.Err != nil && strings.Contains(st.Err.Error(), "s3cret") {
				t.Fatalf("check error shows the password: %v", st.Err)
			}
			before := readCountsOf(t, m)
			if got := callerIDs(t, ledger.New(r), "c"); !slices.Equal(got, []string{"d1"}) {
				t.Fatalf("List through the router = %v", got)
			}
			d := readCountsOf(t, m).minus(before)
			want := readCounts{primary: 1}
			switch tc.reason {
			case daemon.FallbackUnreachable:
				want.unreachable = 1
			case daemon.FallbackNotStandby:
				want.notStandby = 1
			}
			if d != want {
				t.Fatalf("counters moved by %+v, want %+v", d, want)
			}
			if got := gauge(t, m, "sweeper_read_replica_in_use"); got != 0 {
				t.Fatalf("sweeper_read_replica_in_use = %v", got)
			}
		})
	}
}

// standbyPair is a primary with a migrated database and its streaming
// standby.
type standbyPair struct {
	primary, standby *pgserver.Server
	primaryURL       string // the ledger database on the primary
	standbyURL       string // the same on the standby
	pool             *pgxpool.Pool
	standbyConn      *pgx.Conn
}

func startStandbyPair(t *testing.T) *standbyPair {
	t.Helper()
	ctx := context.Background()
	// synchronous_commit on, as in production: an acknowledged commit is
	// then written, so the primary's pg_current_wal_lsn covers it (off, it
	// lags by up to wal_writer_delay; see docs/operations.md).
	primary := testdb.StartServer(t, pgserver.Options{Kinds: []pgserver.Kind{pgserver.KindLocal},
		Settings: map[string]string{"synchronous_commit": "on"}})
	p := &standbyPair{primary: primary, primaryURL: databaseOn(t, primary.URL, "ledger")}
	if err := migrations.Up(ctx, p.primaryURL); err != nil {
		t.Fatal(err)
	}
	standby, err := pgserver.StartStandby(ctx, primary, pgserver.StandbyOptions{Logf: t.Logf})
	if err != nil {
		t.Fatalf("StartStandby: %v", err)
	}
	t.Cleanup(func() {
		if err := standby.Close(); err != nil {
			t.Error(err)
		}
	})
	p.standby = standby
	u, err := url.Parse(standby.URL)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/ledger"
	p.standbyURL = u.String()
	if p.pool, err = pgxpool.New(ctx, p.primaryURL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.pool.Close)
	if p.standbyConn, err = pgx.Connect(ctx, p.standbyURL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.standbyConn.Close(context.Background()) })
	return p
}

// caughtUp waits until the standby has replayed the primary's WAL as of
// now. PostgreSQL 15 has no call that waits for a replay position, so this
// polls, bounded.
func (p *standbyPair) caughtUp(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	var lsn string
	if err := p.pool.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var ok bool
		if err := p.standbyConn.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", lsn).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("standby has not replayed %s within 20s", lsn)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pauseReplay stops the standby's replay and waits until it has stopped
// (pg_wal_replay_pause only asks).
func (p *standbyPair) pauseReplay(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	if _, err := p.standbyConn.Exec(ctx, "SELECT pg_wal_replay_pause()"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var state string
		if err := p.standbyConn.QueryRow(ctx, "SELECT pg_get_wal_replay_pause_state()").Scan(&state); err != nil {
			t.Fatal(err)
		}
		if state == "paused" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replay not paused within 20s: %s", state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *standbyPair) resumeReplay(t *testing.T) {
	t.Helper()
	if _, err := p.standbyConn.Exec(context.Background(), "SELECT pg_wal_replay_resume()"); err != nil {
		t.Fatal(err)
	}
}

// TestReadRouterOnStandby runs the router on a real streaming standby: a
// fresh standby serves the reads (a row written while its replay is paused
// is not in them); once the primary has written what the standby lacks for
// longer than the bound, reads go to the primary and the fallback counter
// moves; resumed, the standby serves again; an idle primary does not make
// a caught-up standby "lag"; a standby that dies between checks costs the
// clients nothing.
func TestReadRouterOnStandby(t *testing.T) {
	p := startStandbyPair(t)
	ctx := context.Background()
	insert(t, p.pool, "a")
	p.caughtUp(t)

	m := daemon.NewMetrics()
	clock := &fakeClock{t: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	r := newRouter(t, p.pool, p.standbyURL, m, clock)
	reads := ledger.New(r)
	if st := r.CheckOnce(ctx); !st.InUse || st.Lag != 0 {
		t.Fatalf("check of a caught-up standby = %+v, want in use with no lag", st)
	}
	if got := gauge(t, m, "sweeper_read_replica_in_use"); got != 1 {
		t.Fatalf("sweeper_read_replica_in_use = %v, want 1", got)
	}

	// Replay paused, "b" is on the primary only: reads still served by the
	// replica until a check finds it stale.
	p.pauseReplay(t)
	insert(t, p.pool, "b")
	before := readCountsOf(t, m)
	if got := callerIDs(t, reads, "c"); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("List on the paused standby = %v, want [a]", got)
	}
	if d := readCountsOf(t, m).minus(before); d != (readCounts{replica: 1}) {
		t.Fatalf("counters moved by %+v, want one replica read", d)
	}

	clock.Add(time.Minute)
	st := r.CheckOnce(ctx)
	if st.InUse || st.Reason != daemon.FallbackLag || st.Lag != time.Minute {
		t.Fatalf("check of a standby a minute behind = %+v, want reason lag, lag 1m", st)
	}
	if got := gauge(t, m, "sweeper_read_replica_lag_seconds"); got != 60 {
		t.Fatalf("sweeper_read_replica_lag_seconds = %v, want 60", got)
	}
	before = readCountsOf(t, m)
	if got := callerIDs(t, reads, "c"); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("List while the standby lags = %v, want [a b] from the primary", got)
	}
	if d := readCountsOf(t, m).minus(before); d != (readCounts{primary: 1, lag: 1}) {
		t.Fatalf("counters moved by %+v, want one primary read for lag", d)
	}

	p.resumeReplay(t)
	p.caughtUp(t)
	clock.Add(time.Second)
	if st := r.CheckOnce(ctx); !st.InUse || st.Lag != 0 {
		t.Fatalf("check after replay resumed = %+v, want in use", st)
	}

	// An idle primary: an hour later the standby is still fresh. The
	// primary's background work may write a record between the check's two
	// queries; the check after a catch-up sees it replayed.
	inUse := false
	for range 3 {
		p.caughtUp(t)
		clock.Add(time.Hour)
		if st := r.CheckOnce(ctx); st.InUse && st.Lag == 0 {
			inUse = true
			break
		}
	}
	if !inUse {
		t.Fatalf("a caught-up standby of an idle primary is not used an hour later: %+v", r.State())
	}

	// The standby dies between checks: the read runs again on the primary.
	if err := p.standby.Kill(); err != nil {
		t.Fatal(err)
	}
	insert(t, p.pool, "c")
	before = readCountsOf(t, m)
	if got := callerIDs(t, reads, "c"); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("List after the standby died = %v, want [a b c] from the primary", got)
	}
	d := readCountsOf(t, m).minus(before)
	if d.failed != 1 || d.primary != 1 || d.replica != 1 {
		t.Fatalf("counters moved by %+v, want the replica read failed and rerun on the primary", d)
	}
	if st := r.CheckOnce(ctx); st.InUse || st.Reason != daemon.FallbackUnreachable {
		t.Fatalf("check of a dead standby = %+v, want unreachable", st)
	}
	before = readCountsOf(t, m)
	if got := callerIDs(t, reads, "c"); len(got) != 3 {
		t.Fatalf("List with the standby down = %v", got)
	}
	if d := readCountsOf(t, m).minus(before); d != (readCounts{primary: 1, unreachable: 1}) {
		t.Fatalf("counters moved by %+v, want one primary read for unreachable", d)
	}
}

// TestAPIReadsOnStandby serves the API with the router on a standby whose
// replay is paused: the writes of the API and the sweep go to the primary
// (the router counts no read for them), a read by id sees a delegation
// just written (read-your-writes), and the list, served by the standby,
// does not yet.
func TestAPIReadsOnStandby(t *testing.T) {
	p := startStandbyPair(t)
	ctx := context.Background()
	tok, err := auth.NewStore(p.pool).Create(ctx, "admin", auth.RoleAdmin, "")
	if err != nil {
		t.Fatal(err)
	}
	p.caughtUp(t)
	m := daemon.NewMetrics()
	clock := &fakeClock{t: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	r := newRouter(t, p.pool, p.standbyURL, m, clock)
	if st := r.CheckOnce(ctx); !st.InUse {
		t.Fatalf("check = %+v, want in use", st)
	}
	h, err := api.NewHandler(api.Options{Pool: p.pool, Reads: r, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	base := srv.URL
	do := func(method, path, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		return res.StatusCode, string(b)
	}

	p.pauseReplay(t)
	before := readCountsOf(t, m)
	if code, body := do("POST", "/v1/delegations", `{"delegation_id":"x1","caller_id":"c","callee_id":"w"}`); code != http.StatusCreated {
		t.Fatalf("POST = %d %s", code, body)
	}
	if code, body := do("POST", "/v1/delegations/x1/transitions", `{"to":"in_progress"}`); code != http.StatusOK {
		t.Fatalf("POST transition = %d %s", code, body)
	}
	if d := readCountsOf(t, m).minus(before); d != (readCounts{}) {
		t.Fatalf("writes moved the read counters by %+v: they went through the router", d)
	}
	if code, body := do("GET", "/v1/delegations/x1", ""); code != http.StatusOK || !strings.Contains(body, `"in_progress"`) {
		t.Fatalf("GET by id just after the writes = %d %s, want 200 in_progress (read from the primary)", code, body)
	}
	if code, body := do("GET", "/v1/delegations?caller_id=c", ""); code != http.StatusOK || strings.Contains(body, "x1") {
		t.Fatalf("GET list = %d %s, want 200 without x1 (the paused standby has not replayed it)", code, body)
	}
	if d := readCountsOf(t, m).minus(before); d != (readCounts{replica: 1}) {
		t.Fatalf("counters moved by %+v, want the list alone on the replica", d)
	}

	// The sweep runs on the primary: it finds the delegation the standby
	// does not have.
	var conn *pgx.Conn
	if conn, err = pgx.Connect(ctx, p.primaryURL); err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "UPDATE delegations SET last_heartbeat = now() - interval '1 hour' WHERE delegation_id = 'x1'"); err != nil {
		t.Fatal(err)
	}
	sw, err := sweep.New(p.pool, daemon.SweepConfig(config.Default(), zaptest.NewLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	res, err := sw.RunOnce(ctx)
	if err != nil || res.SweptHeartbeatTimeout != 1 {
		t.Fatalf("sweep = %+v, %v; want x1 marked stuck", res, err)
	}
	if d := readCountsOf(t, m).minus(before); d != (readCounts{replica: 1}) {
		t.Fatalf("the sweep moved the read counters: %+v", d)
	}

	// daemon.Run wires the router: its lists go through it (counted on the
	// daemon's registry), its writes do not.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := config.Default()
	cfg.Database.URL, cfg.Database.ReadURL = p.primaryURL, p.standbyURL
	cfg.API.Listen, cfg.HTTP.Listen = addr, ""
	cfg.Sweep.Schedule = "@every 1h"
	dm := daemon.NewMetrics()
	ready := make(chan struct{})
	runCtx, stop := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() {
		runErr <- daemon.Run(runCtx, cfg, daemon.Options{Logger: zaptest.NewLogger(t), Ready: ready, Metrics: dm})
	}()
	select {
	case <-ready:
	case err := <-runErr:
		t.Fatalf("Run: %v", err)
	}
	base = "http://" + addr
	before = readCountsOf(t, dm)
	if code, body := do("POST", "/v1/delegations", `{"delegation_id":"x2","caller_id":"c","callee_id":"w"}`); code != http.StatusCreated {
		t.Fatalf("POST to the daemon = %d %s", code, body)
	}
	if code, body := do("GET", "/v1/delegations?caller_id=c", ""); code != http.StatusOK {
		t.Fatalf("GET list from the daemon = %d %s", code, body)
	}
	if d := readCountsOf(t, dm).minus(before); d.replica+d.primary != 1 {
		t.Fatalf("the daemon's counters moved by %+v, want the list alone through the router", d)
	}
	stop()
	if err := <-runErr; err != nil {
		t.Fatalf("Run = %v", err)
	}
}
