package stress

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasksweeper/sweeper/internal/pgserver"
	"github.com/tasksweeper/sweeper/internal/stress/report"
	"github.com/tasksweeper/sweeper/internal/testdb"
)

// Failover: the race storm against a primary with a streaming standby
// (pg_basebackup), everyone connected through one multi-host DSN with
// target_session_attrs=read-write. In the middle of the storm the primary is
// killed (SIGKILL to every server process) and the standby promoted. The
// writers' operations in flight, and those tried until the standby is
// promoted, fail: their effect is unknown (ambiguous), as after any lost
// connection. Everything else is checked as in the storm:
//
//   - synchronous replication: every write acknowledged to a writer is on
//     the new primary, and the storm's invariants hold with no exception
//     (notifications aside: NOTIFY is delivered at most once, to sessions
//     listening when it commits, so those in flight at the kill and those
//     the new primary sent before the test's listener was back are missed;
//     they are counted, and none is received twice);
//   - asynchronous replication: acknowledged writes of the last moments may
//     be lost. The test makes sure some are: the primary's WAL sender is
//     stopped for half a second before the kill, so the standby lags as
//     over a slow link. It counts the losses (a probe that tracks each
//     acknowledged commit, and the writers' log checks that fail, by rule)
//     while the invariants
//     that hold on any consistent copy must still hold: one event per
//     transition, every stuck row marked for a reason that held by the
//     database's own clock, whole batches, no terminal row revised after
//     the failover.
//
// Either way every daemon begins a run that succeeds within two schedule
// intervals of the promotion, /readyz answers 503 during the outage and 200 after, and the
// API answers again.

const (
	// failoverSchedule is the daemons' schedule interval. A run that
	// began while no server accepted writes fails and, when its connection
	// attempts took longer than the interval, the next run is skipped, as
	// runs never overlap: on a loaded machine, resuming can take nearly
	// two intervals of a second.
	failoverSchedule = 2 * time.Second
	// failoverGrace is how long after the promotion a writer's error still
	// counts as caused by the failover (its connection broke, or it
	// connected while no server accepted writes).
	failoverGrace = 5 * time.Second
	// failoverAsyncLag is how far the asynchronous standby falls behind
	// before the primary is killed.
	failoverAsyncLag = 500 * time.Millisecond
)

// TestRaceStormFailoverSync is the failover with a synchronous standby: no
// acknowledged write may be lost.
func TestRaceStormFailoverSync(t *testing.T) {
	if testing.Short() {
		t.Skip("the race storm does not run with -short")
	}
	raceStorm(t, stormOptions{fo: &failover{sync: true}})
}

// TestRaceStormFailoverAsync is the failover with an asynchronous standby:
// what is lost is counted, the invariants that hold on any consistent copy
// are checked.
func TestRaceStormFailoverAsync(t *testing.T) {
	if testing.Short() {
		t.Skip("the race storm does not run with -short")
	}
	raceStorm(t, stormOptions{fo: &failover{sync: false}})
}

// failover is the plan and the record of one failover storm.
type failover struct {
	sync bool

	primary, standby *pgserver.Server
	hosts            string // "host=... port=..." for messages
	token            string // a reader token of the API

	killedAt, promotedAt time.Time
	lagFrom              time.Time                // asynchronous: when the standby stopped receiving
	resume               map[string]time.Duration // daemon -> promotion to the start of its first successful run (0: it began before)
	resumeEnd            map[string]time.Duration // daemon -> promotion to that run's end (the backlog swept)
	readyz               map[string]string        // daemon -> what /readyz said: "503 200" when as expected
	api                  map[string]int           // daemon -> status of GET /v1/delegations/{id} after the failover
	lossSnapshot         int                      // terminal snapshots up to this one may see the failover's losses

	probe probe

	mu   sync.Mutex
	lost map[string]int64 // async: writer log checks that failed, by rule
}

// multiHost returns u (a URL of the primary) naming both servers, the
// primary first, with target_session_attrs=read-write.
func (fo *failover) multiHost(t *testing.T, u string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	s, err := url.Parse(fo.standby.URL)
	if err != nil {
		t.Fatal(err)
	}
	p.Host = p.Host + "," + s.Host
	return withQuery(t, p.String(), "target_session_attrs", "read-write")
}

// start starts the primary, deploys the roles and the schema in its
// database "stress", makes the standby, and returns the role database with
// multi-host URLs.
func (fo *failover) start(t *testing.T) *roleDB {
	t.Helper()
	// synchronous_commit on: a commit is acknowledged once durable here
	// and, with a synchronous standby, there.
	fo.primary = testdb.StartServer(t, pgserver.Options{
		Kinds:    []pgserver.Kind{pgserver.KindLocal},
		Settings: map[string]string{"synchronous_commit": "on"},
	})
	mustExec(t, fo.primary.URL, `CREATE DATABASE stress`)
	u, err := url.Parse(fo.primary.URL)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/stress"
	r := &roleDB{admin: u.String(), ownerRole: "stress_owner", daemonRole: "stress_daemon"}
	r.deploy(t, false)
	mustExec(t, r.admin, `CREATE TABLE failover_acks (n bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())`)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fo.standby, err = pgserver.StartStandby(ctx, fo.primary, pgserver.StandbyOptions{Synchronous: fo.sync, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := fo.standby.Close(); err != nil {
			t.Error(err)
		}
	})
	r.admin, r.owner, r.daemon = fo.multiHost(t, r.admin), fo.multiHost(t, r.owner), fo.multiHost(t, r.daemon)
	pu, _ := url.Parse(fo.primary.URL)
	su, _ := url.Parse(fo.standby.URL)
	fo.hosts = pu.Host + "," + su.Host

	// A reader token: the API must answer again after the failover.
	res := run(t, []string{"SWEEPER_DATABASE_URL=" + r.owner}, "token", "create", "--name", "failover-reader", "--role", "reader", "--output", "json")
	var line struct{ Token string }
	if res.Code != 0 || json.Unmarshal([]byte(res.Stdout), &line) != nil || line.Token == "" {
		t.Fatalf("token create: %s", res)
	}
	fo.token = line.Token
	fo.lost = map[string]int64{}
	return r
}

// daemonEnv is what the failover adds to the daemons' environment.
func (fo *failover) daemonEnv() []string {
	// Debug: every run is logged, with its end and duration.
	return []string{"SWEEPER_API_LISTEN=127.0.0.1:0", fmt.Sprintf("SWEEPER_SWEEP_SCHEDULE=@every %s", failoverSchedule),
		"SWEEPER_LOG_LEVEL=debug"}
}

// ambiguous reports whether o failed because of the failover: it failed
// after the kill, and was sent before the promotion's grace ended.
func (fo *failover) ambiguous(o op) bool {
	return o.err != "" && !fo.killedAt.IsZero() && !o.acked.Before(fo.killedAt) && o.sent.Before(fo.promotedAt.Add(failoverGrace))
}

// loss is v.check for the writers' log under asynchronous replication: an
// acknowledged write lost in the failover makes such a check fail; it is
// counted by rule, not as a violation.
func (fo *failover) loss(v *violations) func(bool, string, ...any) {
	if fo == nil || fo.sync {
		return v.check
	}
	return func(ok bool, format string, args ...any) {
		v.t.Helper()
		v.checks++
		if ok {
			return
		}
		fo.mu.Lock()
		fo.lost[format]++
		n := fo.lost[format]
		fo.mu.Unlock()
		if n <= 2 {
			v.t.Logf("lost in the asynchronous failover: "+format, args...)
		}
	}
}

// lostTotal is the number of writer log checks that failed by loss.
func (fo *failover) lostTotal() int64 {
	var n int64
	for _, c := range fo.lost {
		n += c
	}
	return n
}

// probe is a writer of its own that inserts numbered rows into
// failover_acks, one commit each, and keeps the numbers acknowledged.
type probe struct {
	mu     sync.Mutex
	acked  []ackedRow
	errors int
}

type ackedRow struct {
	n  int64
	at time.Time
}

// run inserts until ctx ends, connecting again when the connection breaks.
func (p *probe) run(ctx context.Context, dsn string) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()
	for n := int64(1); sleep(ctx, 5*time.Millisecond); n++ {
		if conn == nil || conn.IsClosed() {
			c, cancel := opCtx()
			next, err := pgx.Connect(c, dsn)
			cancel()
			if err != nil {
				p.mu.Lock()
				p.errors++
				p.mu.Unlock()
				continue
			}
			if conn != nil {
				_ = conn.Close(context.Background())
			}
			conn = next
		}
		c, cancel := opCtx()
		_, err := conn.Exec(c, `INSERT INTO failover_acks (n) VALUES ($1)`, n)
		cancel()
		p.mu.Lock()
		if err == nil {
			p.acked = append(p.acked, ackedRow{n: n, at: time.Now()})
		} else {
			p.errors++
		}
		p.mu.Unlock()
	}
}

// missing counts the numbers acknowledged before cutoff, and those of them
// not on the server of dsn.
func (p *probe) missing(t *testing.T, dsn string, cutoff time.Time) (lost, acked int64) {
	t.Helper()
	p.mu.Lock()
	var ns []int64
	for _, a := range p.acked {
		if a.at.Before(cutoff) {
			ns = append(ns, a.n)
		}
	}
	p.mu.Unlock()
	acked = int64(len(ns))
	lost = mustInt(t, dsn, `SELECT count(*) FROM unnest($1::bigint[]) AS a(n) WHERE NOT EXISTS (SELECT FROM failover_acks f WHERE f.n = a.n)`, ns)
	return lost, acked
}

// firstRunAfter finds, in a daemon's JSON log, the first successful run
// that ended after t, and returns its start and end (the log's time stamps
// have milliseconds).
func firstRunAfter(logs string, t time.Time) (start, end time.Time, err error) {
	for _, line := range strings.Split(logs, "\n") {
		var l struct{ Ts, Msg, Duration string }
		if json.Unmarshal([]byte(line), &l) != nil || l.Msg != "sweep marked delegations stuck" && l.Msg != "sweep found nothing" {
			continue
		}
		end, err := time.Parse(time.RFC3339Nano, l.Ts)
		if err != nil {
			return start, end, fmt.Errorf("log time stamp %q: %w", l.Ts, err)
		}
		d, err := time.ParseDuration(l.Duration)
		if err != nil {
			return start, end, fmt.Errorf("run duration %q: %w", l.Duration, err)
		}
		// The log has milliseconds: a run that ended in the promotion's
		// millisecond is not after it.
		if end.After(t.Truncate(time.Millisecond)) {
			return end.Add(-d), end, nil
		}
	}
	return start, end, errors.New("no successful run after the promotion in the log")
}

var apiAddrRE = regexp.MustCompile(`"api_address":"([^"]+)"`)

// apiGet fetches path from d's API with the reader token.
func (fo *failover) apiGet(d *proc, path string) (int, string, error) {
	m := apiAddrRE.FindStringSubmatch(d.Logs())
	if m == nil {
		return 0, "", fmt.Errorf("%s logged no api_address", d.Name)
	}
	req, err := http.NewRequest("GET", "http://"+m[1]+path, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+fo.token)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// run kills the primary, promotes the standby, and waits until every daemon
// has run successfully on it, watching /readyz throughout; then it asks each
// daemon's API for a row committed before the kill.
func (fo *failover) run(t *testing.T, daemons []*proc, dsn string) {
	t.Helper()
	ctx := context.Background()
	var id string
	{
		c, cancel := opCtx()
		conn, err := pgx.Connect(c, dsn)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		err = conn.QueryRow(c, `SELECT delegation_id FROM delegations ORDER BY created_at LIMIT 1`).Scan(&id)
		_ = conn.Close(c)
		cancel()
		if err != nil {
			t.Fatalf("a row for the API to read: %v", err)
		}
	}

	// /readyz watchers: each records what it saw, in order, without
	// repeats, until it has seen 200 after the promotion.
	fo.readyz = map[string]string{}
	var watchers sync.WaitGroup
	promoted := make(chan struct{})
	var mu sync.Mutex
	// firstRead: every watcher has its first answer before the kill (under
	// load a goroutine's first request could otherwise come after it).
	var firstRead sync.WaitGroup
	firstRead.Add(len(daemons))
	for _, d := range daemons {
		watchers.Go(func() {
			var seen []string
			after := false
			first := true
			deadline := time.Now().Add(2 * time.Minute)
			for time.Now().Before(deadline) {
				select {
				case <-promoted:
					after = true
				default:
				}
				code := readyz(d)
				s := fmt.Sprint(code)
				if len(seen) == 0 || seen[len(seen)-1] != s {
					seen = append(seen, s)
				}
				if first {
					first = false
					firstRead.Done()
				}
				if after && code == 200 {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			mu.Lock()
			fo.readyz[d.Name] = strings.Join(seen, " ")
			mu.Unlock()
		})
	}
	// The watchers have read /readyz once (200: the storm runs) before the
	// kill.
	firstRead.Wait()
	for _, d := range daemons {
		if code := readyz(d); code != 200 {
			t.Errorf("%s /readyz before the failover: %d", d.Name, code)
		}
	}

	// Asynchronous: the standby falls behind first, as over a slow or
	// broken link. The primary's WAL sender is stopped (SIGSTOP) for
	// failoverAsyncLag while the primary goes on acknowledging commits that
	// it never sends; the kill ends it with the rest.
	if !fo.sync {
		sender := int(mustInt(t, fo.primary.URL, `SELECT pid FROM pg_stat_replication`))
		if err := syscall.Kill(sender, syscall.SIGSTOP); err != nil {
			t.Fatalf("stopping the primary's WAL sender: %v", err)
		}
		fo.lagFrom = time.Now()
		time.Sleep(failoverAsyncLag) // the writers' commits go on meanwhile
	}
	// The kill's time is before it begins: an operation that failed while
	// the server processes died failed because of it.
	fo.killedAt = time.Now()
	if err := fo.primary.Kill(); err != nil {
		t.Fatal(err)
	}
	t.Logf("failover: every primary process gone %s after the kill began", time.Since(fo.killedAt).Round(time.Millisecond))
	// Down: each daemon says it is not ready before the standby takes
	// over (the watchers record it; a failover tool takes seconds too).
	eventually(t, 30*time.Second, "every /readyz to answer 503 with no primary", func() bool {
		for _, d := range daemons {
			if readyz(d) != 503 {
				return false
			}
		}
		return true
	})
	t.Logf("failover: every /readyz 503 %s after the kill", time.Since(fo.killedAt).Round(time.Millisecond))
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := fo.standby.Promote(pctx); err != nil {
		t.Fatal(err)
	}
	fo.promotedAt = time.Now()
	close(promoted)
	t.Logf("failover: primary killed, standby promoted %s later (%s, synchronous: %v)",
		fo.promotedAt.Sub(fo.killedAt).Round(time.Millisecond), fo.hosts, fo.sync)

	// Resumed: sweeper_last_success_timestamp_seconds of each daemon is
	// after the promotion. The run's start, from its log line (its end and
	// duration), is when the daemon resumed; its end, when the backlog of
	// the outage was swept.
	fo.resume, fo.resumeEnd = map[string]time.Duration{}, map[string]time.Duration{}
	promotedSecs := float64(fo.promotedAt.UnixNano()) / 1e9
	for _, d := range daemons {
		eventually(t, time.Minute, d.Name+" to sweep successfully after the promotion", func() bool {
			m, _, err := d.Metrics()
			return err == nil && m[lastSuccess] > promotedSecs
		})
		start, end, err := firstRunAfter(d.Logs(), fo.promotedAt)
		if err != nil {
			t.Fatalf("%s: %v", d.Name, err)
		}
		// A run already trying to connect at the promotion resumed at it.
		fo.resume[d.Name], fo.resumeEnd[d.Name] = max(0, start.Sub(fo.promotedAt)), end.Sub(fo.promotedAt)
	}
	watchers.Wait()

	fo.api = map[string]int{}
	for _, d := range daemons {
		code, body, err := fo.apiGet(d, "/v1/delegations/"+url.PathEscape(id))
		if err != nil || code != 200 || !strings.Contains(body, id) {
			t.Errorf("%s: GET /v1/delegations/%s after the failover: %d %v %.200s", d.Name, id, code, err, body)
		}
		fo.api[d.Name] = code
	}
}

// check adds the failover's own checks and figures.
func (fo *failover) check(t *testing.T, v *violations, rdb *roleDB, fig report.Figures) {
	t.Helper()
	v.check(!fo.promotedAt.IsZero(), "the storm ended before the failover")
	if fo.promotedAt.IsZero() {
		return
	}
	names := sortedKeys(fo.resume)
	var worst, worstEnd time.Duration
	var resumes []string
	for _, n := range names {
		r := fo.resume[n]
		worst = max(worst, r)
		worstEnd = max(worstEnd, fo.resumeEnd[n])
		resumes = append(resumes, fmt.Sprintf("%s %.2fs (backlog swept %.2fs)", n, r.Seconds(), fo.resumeEnd[n].Seconds()))
		v.check(r <= 2*failoverSchedule, "%s began its first successful run %s after the promotion: more than two schedule intervals (%s)", n, r, 2*failoverSchedule)
		v.check(fo.readyz[n] == "200 503 200", "%s /readyz across the failover answered %q, want \"200 503 200\"", n, fo.readyz[n])
		v.check(fo.api[n] == 200, "%s API after the failover: %d", n, fo.api[n])
	}
	lost, before := fo.probe.missing(t, rdb.admin, fo.killedAt)
	if fo.sync {
		v.check(lost == 0, "synchronous replication: %d of %d commits acknowledged before the kill are missing on the new primary", lost, before)
	} else {
		// Lost: what was acknowledged while the standby lagged (and what
		// it had not received yet when it began to lag).
		lostBeforeLag, beforeLag := fo.probe.missing(t, rdb.admin, fo.lagFrom)
		t.Logf("failover: the standby lagged %s before the kill: the probe had %d commits acknowledged meanwhile; %d of the %d acknowledged before the lag are missing",
			fo.killedAt.Sub(fo.lagFrom).Round(time.Millisecond), before-beforeLag, lostBeforeLag, beforeLag)
		fig["failover_probe_acked_while_lagging"] = before - beforeLag
		fig["failover_probe_lost_before_lag"] = lostBeforeLag
	}
	t.Logf("failover (synchronous: %v): promoted %.2fs after the kill; resumed: %s; /readyz: %v; probe: %d commits acknowledged before the kill, %d missing; writer log checks failed by loss: %d %v",
		fo.sync, fo.promotedAt.Sub(fo.killedAt).Seconds(), strings.Join(resumes, ", "), fo.readyz, before, lost, fo.lostTotal(), fo.lost)
	fig["failover_promote_ms"] = fo.promotedAt.Sub(fo.killedAt).Milliseconds()
	fig["failover_resume_max_ms"] = worst.Milliseconds()
	fig["failover_backlog_swept_max_ms"] = worstEnd.Milliseconds()
	fig["failover_probe_acked"] = before
	fig["failover_probe_lost"] = lost
	fig["failover_log_lost"] = fo.lostTotal()
	fig[report.FaultsSurvived] = 1
}

// sortedKeys is for messages.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
