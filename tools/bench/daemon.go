package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tasksweeper/sweeper/sweep"
)

// cronSchedule is the daemon's default schedule (sweep.ScheduleDefault).
const (
	cronSchedule = sweep.ScheduleDefault
	cronInterval = 30 * time.Second
)

// daemonProc is a running sweeper daemon.
type daemonProc struct {
	cmd     *exec.Cmd
	started time.Time
	done    chan error
	// firstSweep is closed when the first run's log line appears.
	firstSweep   chan struct{}
	firstSweepAt time.Time
	// apiReady is closed when the API's address (apiAddr) is logged.
	apiReady chan struct{}
	apiAddr  string
	// metricsReady is closed when the metrics listener's address
	// (metricsAddr) is logged.
	metricsReady chan struct{}
	metricsAddr  string
	runs         atomic.Int64 // sweep runs logged
	mu           sync.Mutex
	tail         []string // last log lines, for errors
}

// startDaemon runs the built binary against db with extra environment, in
// an environment of its own (no SWEEPER_* or DATABASE_URL inherited).
func startDaemon(binary, url string, env ...string) (*daemonProc, error) {
	d := &daemonProc{done: make(chan error, 1), firstSweep: make(chan struct{}), apiReady: make(chan struct{}),
		metricsReady: make(chan struct{})}
	d.cmd = exec.Command(binary)
	d.cmd.Env = append(cleanEnv(),
		"SWEEPER_DATABASE_URL="+url,
		"SWEEPER_HTTP_LISTEN=127.0.0.1:0",
		"SWEEPER_LOG_LEVEL=debug",
		"SWEEPER_LOG_FORMAT=json",
		"SWEEPER_SWEEP_HEARTBEAT_TIMEOUT="+benchTimeout.String())
	d.cmd.Env = append(d.cmd.Env, env...)
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	d.started = time.Now()
	if err := d.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			at := time.Now()
			if strings.Contains(line, `"msg":"sweep found nothing"`) || strings.Contains(line, `"msg":"sweep marked delegations stuck"`) {
				if d.runs.Add(1) == 1 {
					d.firstSweepAt = at
					close(d.firstSweep)
				}
			}
			if d.metricsAddr == "" && strings.Contains(line, `"msg":"serving metrics and health"`) {
				if m := addrRE.FindStringSubmatch(line); m != nil {
					d.metricsAddr = m[1]
					close(d.metricsReady)
				}
			}
			if d.apiAddr == "" {
				if m := apiAddrRE.FindStringSubmatch(line); m != nil {
					d.apiAddr = m[1]
					close(d.apiReady)
				}
			}
			d.mu.Lock()
			d.tail = append(d.tail, line)
			if len(d.tail) > 20 {
				d.tail = d.tail[1:]
			}
			d.mu.Unlock()
		}
		d.done <- d.cmd.Wait()
	}()
	return d, nil
}

// apiAddrRE finds the API's address in the daemon's start-up log line.
var apiAddrRE = regexp.MustCompile(`"api_address":"([^"]+)"`)

// addrRE finds the metrics listener's address in its log line.
var addrRE = regexp.MustCompile(`"address":"([^"]+)"`)

// cleanEnv is this process's environment without SWEEPER_* and
// DATABASE_URL, which would configure the daemon behind the bench's back.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SWEEPER_") && !strings.HasPrefix(kv, "DATABASE_URL=") {
			env = append(env, kv)
		}
	}
	return env
}

func (d *daemonProc) logTail() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.tail, "\n")
}

// waitFirstSweep returns the time from process start to the end of the
// first sweep.
func (d *daemonProc) waitFirstSweep(timeout time.Duration) (time.Duration, error) {
	select {
	case <-d.firstSweep:
		return d.firstSweepAt.Sub(d.started), nil
	case err := <-d.done:
		return 0, fmt.Errorf("daemon exited before its first sweep: %v\n%s", err, d.logTail())
	case <-time.After(timeout):
		return 0, fmt.Errorf("no sweep within %s\n%s", timeout, d.logTail())
	}
}

// rss reads the process's resident set size (VmRSS) in bytes.
func (d *daemonProc) rss() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// stop sends SIGTERM and waits for a clean exit.
func (d *daemonProc) stop() error {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		if err != nil {
			return fmt.Errorf("daemon exit: %v\n%s", err, d.logTail())
		}
		return nil
	case <-time.After(40 * time.Second):
		_ = d.cmd.Process.Kill()
		return errors.New("daemon did not stop within 40s of SIGTERM")
	}
}

// detector collects detection latencies from stuck notifications of rows
// with a given id prefix: arrival minus the moment the row became eligible
// (last_heartbeat + the heartbeat timeout, by the database's clock, which
// is this machine's clock).
type detector struct {
	mu     sync.Mutex
	prefix string
	lats   []time.Duration
	want   int
	all    chan struct{}
	// backlog counts notifications of rows with backlogPrefix.
	backlogPrefix string
	backlogN      int
	backlogFirst  time.Time
	backlogLast   time.Time
}

func (dt *detector) onNotify(payload string, at time.Time) {
	var p struct {
		ID            string    `json:"delegation_id"`
		LastHeartbeat time.Time `json:"last_heartbeat"`
	}
	if err := json.Unmarshal([]byte(payload), &p); err != nil {
		return
	}
	dt.mu.Lock()
	defer dt.mu.Unlock()
	switch {
	case dt.prefix != "" && strings.HasPrefix(p.ID, dt.prefix):
		eligible := p.LastHeartbeat.Add(eligibleAfter)
		dt.lats = append(dt.lats, at.Sub(eligible))
		if len(dt.lats) == dt.want {
			close(dt.all)
		}
	case dt.backlogPrefix != "" && strings.HasPrefix(p.ID, dt.backlogPrefix):
		if dt.backlogN == 0 {
			dt.backlogFirst = at
		}
		dt.backlogN++
		dt.backlogLast = at
	}
}

// expect starts a detection measurement of n rows with prefix.
func (dt *detector) expect(prefix string, n int) {
	dt.mu.Lock()
	defer dt.mu.Unlock()
	dt.prefix, dt.want, dt.lats, dt.all = prefix, n, nil, make(chan struct{})
}

func (dt *detector) result() []time.Duration {
	dt.mu.Lock()
	defer dt.mu.Unlock()
	return append([]time.Duration(nil), dt.lats...)
}

// addDetectionRows inserts n in_progress rows that become eligible one after
// another, evenly over window, starting lead from now.
func addDetectionRows(ctx context.Context, db *ledgerDB, prefix string, n int, lead, window time.Duration) error {
	step := window.Seconds() / float64(n)
	_, err := db.pool.Exec(ctx, fmt.Sprintf(`
		INSERT INTO delegations (delegation_id, caller_id, callee_id, task_preview, status, last_heartbeat, deadline)
		SELECT '%s' || g, 'caller-bench', 'callee-bench', 'detection probe', 'in_progress',
		       now() - make_interval(secs => $1::float8) + make_interval(secs => $2::float8 + g * $3::float8),
		       now() + interval '6 hours'
		FROM generate_series(0, %d) g`, prefix, n-1),
		(eligibleAfter).Seconds(), lead.Seconds(), step)
	return err
}

func measureDaemon(ctx context.Context, cfg Config, db *ledgerDB) (*DaemonResult, error) {
	res := &DaemonResult{LedgerRows: db.rows, CronSchedule: cronSchedule, CronInterval: cronInterval,
		AdaptiveWindow: cfg.AdaptiveDetectWindow}
	dt := &detector{}
	lis, err := listen(ctx, db.url, dt.onNotify)
	if err != nil {
		return res, err
	}
	defer lis.close()
	logf := db.srv.logf

	// The default schedule: start-up, idle memory, detection, drain memory.
	d, err := startDaemon(cfg.Binary, db.url)
	if err != nil {
		return res, err
	}
	defer func() { _ = d.cmd.Process.Kill() }()
	if res.StartToFirstSweep, err = d.waitFirstSweep(60 * time.Second); err != nil {
		return res, err
	}
	logf("daemon: first sweep %s after start", res.StartToFirstSweep.Round(time.Millisecond))
	time.Sleep(3 * time.Second)
	if res.RSSIdleBytes, err = d.rss(); err != nil {
		return res, err
	}
	logf("daemon: idle RSS %.1f MiB", float64(res.RSSIdleBytes)/(1<<20))

	probes := max(int(cfg.CronDetectWindow/(250*time.Millisecond)), 10)
	dt.expect("cron-", probes)
	if err := addDetectionRows(ctx, db, "cron-", probes, time.Second, cfg.CronDetectWindow); err != nil {
		return res, err
	}
	select {
	case <-dt.all:
	case <-time.After(cfg.CronDetectWindow + cronInterval + 15*time.Second):
		return res, fmt.Errorf("cron detection: %d of %d probes seen", len(dt.result()), probes)
	}
	res.CronDetect = dist(dt.result())
	logf("daemon: cron detection p50 %s p99 %s", res.CronDetect.P50, res.CronDetect.P99)

	// The drain: a backlog appears, the next run takes it.
	dt.mu.Lock()
	dt.backlogPrefix = fmt.Sprintf("e%d-", db.seq+1)
	dt.mu.Unlock()
	if _, err := db.addStale(ctx, cfg.Backlog, true); err != nil {
		return res, err
	}
	deadline := time.Now().Add(cronInterval + 3*time.Minute)
	for {
		rss, err := d.rss()
		if err != nil {
			return res, err
		}
		res.RSSDrainBytes = max(res.RSSDrainBytes, rss)
		dt.mu.Lock()
		n, first, last := dt.backlogN, dt.backlogFirst, dt.backlogLast
		dt.mu.Unlock()
		if n >= cfg.Backlog {
			res.DrainRows, res.DrainDuration = n, last.Sub(first)
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("daemon drained %d of %d rows", n, cfg.Backlog)
		}
		time.Sleep(20 * time.Millisecond)
	}
	logf("daemon: drained %d rows, peak RSS %.1f MiB", res.DrainRows, float64(res.RSSDrainBytes)/(1<<20))
	if err := d.stop(); err != nil {
		return res, err
	}

	// @adaptive: detection and how often it ran. The probes are in the
	// ledger before the daemon starts, as rows whose workers stopped beating
	// are: a row inserted with a heartbeat in the past would be one the
	// schedule could not have known about (it sleeps until the oldest
	// heartbeat it saw can become stale).
	probes = max(int(cfg.AdaptiveDetectWindow/(250*time.Millisecond)), 10)
	dt.expect("adaptive-", probes)
	if err := addDetectionRows(ctx, db, "adaptive-", probes, 3*time.Second, cfg.AdaptiveDetectWindow); err != nil {
		return res, err
	}
	a, err := startDaemon(cfg.Binary, db.url, "SWEEPER_SWEEP_SCHEDULE="+sweep.ScheduleAdaptive)
	if err != nil {
		return res, err
	}
	defer func() { _ = a.cmd.Process.Kill() }()
	if _, err := a.waitFirstSweep(60 * time.Second); err != nil {
		return res, err
	}
	runs0 := a.runs.Load()
	select {
	case <-dt.all:
	case <-time.After(cfg.AdaptiveDetectWindow + sweep.AdaptiveCeilingDefault + 15*time.Second):
		return res, fmt.Errorf("adaptive detection: %d of %d probes seen", len(dt.result()), probes)
	}
	res.AdaptiveRuns = int(a.runs.Load() - runs0)
	res.AdaptiveDetect = dist(dt.result())
	logf("daemon: adaptive detection p50 %s p99 %s in %d runs", res.AdaptiveDetect.P50, res.AdaptiveDetect.P99, res.AdaptiveRuns)
	if err := a.stop(); err != nil {
		return res, err
	}
	return res, nil
}

// eligibleAfter is how long after its recorded heartbeat a row becomes
// eligible under the bench's sweeps.
const eligibleAfter = benchTimeout
