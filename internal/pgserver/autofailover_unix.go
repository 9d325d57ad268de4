//go:build unix

package pgserver

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// An HA engine for tests: pg_auto_failover (pg_autoctl) runs a monitor and
// Postgres nodes on free 127.0.0.1 ports, every process as the user postgres
// when we are root, everything in one temporary directory that Close (or the
// watchdog, when the Go process dies) removes.

// AutoFailoverStartTimeoutDefault bounds StartAutoFailover when
// AutoFailoverOptions.StartTimeout is zero: initdb of the monitor and the
// first node, and a base backup per standby.
const AutoFailoverStartTimeoutDefault = 3 * time.Minute

// AutoFailoverDBNameDefault is the database pg_autoctl creates on the nodes
// when AutoFailoverOptions.DBName is empty.
const AutoFailoverDBNameDefault = "sweeper"

// AutoFailoverFormation is the formation the harness creates: pg_autoctl's
// default one.
const AutoFailoverFormation = "default"

// ErrNoAutoFailover means pg_autoctl, or the pgautofailover extension for the
// server binaries found, is not installed. StartAutoFailover wraps it with
// how to install it.
var ErrNoAutoFailover = errors.New("pg_auto_failover (pg_autoctl) not found")

// AutoFailoverOptions tunes StartAutoFailover. The zero value is a monitor
// and two nodes serving the database AutoFailoverDBNameDefault.
type AutoFailoverOptions struct {
	// Nodes is the number of Postgres nodes: the first becomes the primary,
	// the others its standbys. Zero means 2; fewer than 2 is an error.
	Nodes int
	// DBName is the database of the nodes (pg_autoctl --dbname); empty
	// means AutoFailoverDBNameDefault.
	DBName string
	// Settings are server settings applied with ALTER SYSTEM on the first
	// node once it runs alone, before the standbys clone it (the base backup
	// copies them). Settings that need a restart do not take effect.
	Settings map[string]string
	// Logf receives progress messages; nil discards them.
	Logf func(format string, args ...any)
	// StartTimeout bounds start-up; zero means
	// AutoFailoverStartTimeoutDefault.
	StartTimeout time.Duration
}

// AutoFailoverNode is one Postgres node of the formation.
type AutoFailoverNode struct {
	// Name is the pg_auto_failover node name: node1, node2...
	Name string
	// Port is the node's 127.0.0.1 port.
	Port int
	// URL connects to this node only, to the formation's database, as the
	// user postgres (trust authentication).
	URL string
}

// NodeState is a node as the monitor sees it (pgautofailover.node).
type NodeState struct {
	Name string
	Port int
	// Reported is the state the node's keeper last reported; Goal the one
	// the monitor assigned (primary, secondary, wait_primary, draining...).
	Reported, Goal string
}

// Stable reports whether the node has reached the state it was assigned.
func (s NodeState) Stable() bool { return s.Reported == s.Goal }

// AutoFailover is a running pg_auto_failover formation, started by
// StartAutoFailover. Its methods are safe for concurrent use.
type AutoFailover struct {
	// FormationURI is the formation's multi-host URI as `pg_autoctl show
	// uri --formation default` prints it: every node, target_session_attrs=
	// read-write, so a client reaches whichever node is the primary. It
	// names no user.
	FormationURI string
	// URL is FormationURI with the user postgres (trust authentication).
	URL string
	// MonitorURL connects to the monitor's database (pg_auto_failover) as
	// autoctl_node.
	MonitorURL string
	// Nodes lists the Postgres nodes in their order of creation.
	Nodes []AutoFailoverNode

	opts     AutoFailoverOptions
	bin      string // pg_autoctl
	binDir   string // of pg_ctl
	root     string
	cred     *syscall.Credential
	watchdog *watchdog
	monitor  string // the monitor's data directory

	// dead is cancelled, with the cause, when a pg_autoctl process exits
	// before Close: waits end at once instead of at their timeout.
	dead     context.Context
	setDead  context.CancelCauseFunc
	mu       sync.Mutex
	closing  bool
	closed   bool
	services []*autoctlService
}

// autoctlService is one `pg_autoctl create ... --run` process: the monitor
// or a node, with the Postgres it supervises.
type autoctlService struct {
	name    string
	logPath string
	proc    *os.Process
	exited  chan struct{}
}

// StartAutoFailover starts a pg_auto_failover monitor and opts.Nodes
// Postgres nodes (pg_autoctl create monitor / create postgres --run, trust
// authentication, no TLS) on free 127.0.0.1 ports, and waits until the
// formation has one primary and its secondaries. The error wraps
// ErrNoAutoFailover when pg_autoctl is not installed. The caller must Close
// the formation; if the Go process dies first, the watchdog kills every
// process of the formation and removes its directory.
func StartAutoFailover(ctx context.Context, opts AutoFailoverOptions) (*AutoFailover, error) {
	nodes := cmp.Or(opts.Nodes, 2)
	if nodes < 2 {
		return nil, fmt.Errorf("pg_auto_failover: AutoFailoverOptions.Nodes is %d: a formation that can fail over needs at least 2", opts.Nodes)
	}
	bin, binDir, err := findAutoFailover()
	if err != nil {
		return nil, err
	}
	f := &AutoFailover{opts: opts, bin: bin, binDir: binDir}
	f.dead, f.setDead = context.WithCancelCause(context.Background())
	if os.Geteuid() == 0 {
		if f.cred, err = postgresCredential(); err != nil {
			return nil, err
		}
	}
	if err := f.makeRoot(); err != nil {
		return nil, err
	}
	// The watchdog's local mode kills whatever works in root and removes it.
	if f.watchdog, err = startWatchdog("local", f.root, filepath.Join(f.root, "monitor")); err != nil {
		_ = os.RemoveAll(f.root)
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cmp.Or(opts.StartTimeout, AutoFailoverStartTimeoutDefault))
	defer cancel()
	if err := f.start(ctx, nodes); err != nil {
		return nil, errors.Join(err, f.Close())
	}
	return f, nil
}

// findAutoFailover returns pg_autoctl and the bin directory of a PostgreSQL
// whose lib directory holds the pgautofailover extension (Debian installs
// it per major version: postgresql-15-auto-failover).
func findAutoFailover() (bin, binDir string, err error) {
	const hint = " (Debian/Ubuntu: apt-get install postgresql-15-auto-failover)"
	bin, err = exec.LookPath("pg_autoctl")
	if err != nil {
		return "", "", fmt.Errorf("%w in PATH%s", ErrNoAutoFailover, hint)
	}
	var dirs []string
	libs, _ := filepath.Glob("/usr/lib/postgresql/*/lib/pgautofailover.so")
	for _, lib := range libs {
		d := filepath.Join(filepath.Dir(filepath.Dir(lib)), "bin")
		if isExecutable(filepath.Join(d, "pg_ctl")) {
			dirs = append(dirs, d)
		}
	}
	if len(dirs) > 0 {
		return bin, newestVersion(dirs), nil
	}
	// Elsewhere: trust pg_autoctl and the server binaries to match.
	if binDir, err = findBinDir(); err != nil {
		return "", "", fmt.Errorf("%w: no PostgreSQL server binaries for pg_autoctl: %v%s", ErrNoAutoFailover, err, hint)
	}
	return bin, binDir, nil
}

// makeRoot creates the temporary directory, on /dev/shm when it has room,
// owned by the user the processes run as.
func (f *AutoFailover) makeRoot() error {
	l := &local{cred: f.cred}
	if err := l.makeRoot(); err != nil {
		return err
	}
	f.root = l.root
	// pg_autoctl keeps its configuration and state under XDG directories.
	for _, d := range []string{"config", "share", "run"} {
		p := filepath.Join(f.root, d)
		if err := os.Mkdir(p, 0o700); err != nil {
			return fmt.Errorf("pg_auto_failover: creating %s: %w", p, err)
		}
		if f.cred != nil {
			if err := os.Chown(p, int(f.cred.Uid), int(f.cred.Gid)); err != nil {
				return fmt.Errorf("pg_auto_failover: handing %s to user postgres: %w", p, err)
			}
		}
	}
	f.monitor = filepath.Join(f.root, "monitor")
	return nil
}

func (f *AutoFailover) logf(format string, args ...any) {
	if f.opts.Logf != nil {
		f.opts.Logf("pgserver: pg_auto_failover: "+format, args...)
	}
}

// command is pg_autoctl with args, as the server's user, in root, with
// pg_autoctl's directories in root and none of our PG* variables.
func (f *AutoFailover) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, f.bin, args...)
	cmd.Dir = f.root
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") && !strings.HasPrefix(kv, "XDG_") && !strings.HasPrefix(kv, "HOME=") &&
			!strings.HasPrefix(kv, "PATH=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "LC_ALL=C", "HOME="+f.root,
		"PATH="+f.binDir+":/usr/local/bin:/usr/bin:/bin",
		"XDG_CONFIG_HOME="+filepath.Join(f.root, "config"),
		"XDG_DATA_HOME="+filepath.Join(f.root, "share"),
		"XDG_RUNTIME_DIR="+filepath.Join(f.root, "run"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: f.cred}
	return cmd
}

// Autoctl runs `pg_autoctl args...` against the monitor's data directory
// (the --pgdata flag is added) and returns its combined output.
func (f *AutoFailover) Autoctl(ctx context.Context, args ...string) (string, error) {
	cmd := f.command(ctx, append(args, "--pgdata", f.monitor)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("pg_autoctl %s: %w\n%s", strings.Join(args, " "), err, tail(out, 20))
	}
	return string(out), nil
}

func (f *AutoFailover) start(ctx context.Context, nodes int) error {
	began := time.Now()
	ports := map[int]bool{}
	port := func() (int, error) {
		for {
			p, err := freePort()
			if err != nil || !ports[p] {
				ports[p] = true
				return p, err
			}
		}
	}
	mport, err := port()
	if err != nil {
		return err
	}
	common := []string{"--pgctl", filepath.Join(f.binDir, "pg_ctl"), "--hostname", "127.0.0.1", "--listen", "127.0.0.1",
		"--auth", "trust", "--no-ssl", "--ssl-mode", "disable"}
	if err := f.run("monitor", append([]string{"create", "monitor", "--pgdata", f.monitor,
		"--pgport", strconv.Itoa(mport), "--run"}, common...)); err != nil {
		return err
	}
	f.MonitorURL = fmt.Sprintf("postgres://autoctl_node@127.0.0.1:%d/pg_auto_failover?sslmode=disable", mport)
	// The monitor is ready when its extension answers.
	if err := f.waitQuery(ctx, f.MonitorURL, `SELECT count(*) FROM pgautofailover.formation`); err != nil {
		return fmt.Errorf("pg_auto_failover monitor: %w", err)
	}
	f.logf("monitor on port %d ready in %v", mport, time.Since(began).Round(time.Millisecond))

	db := cmp.Or(f.opts.DBName, AutoFailoverDBNameDefault)
	for i := range nodes {
		p, err := port()
		if err != nil {
			return err
		}
		n := AutoFailoverNode{Name: fmt.Sprintf("node%d", i+1), Port: p,
			URL: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p, db)}
		f.mu.Lock()
		f.Nodes = append(f.Nodes, n)
		f.mu.Unlock()
		nodeBegan := time.Now()
		if err := f.run(n.Name, append([]string{"create", "postgres", "--pgdata", filepath.Join(f.root, n.Name),
			"--pgport", strconv.Itoa(p), "--name", n.Name, "--dbname", db, "--username", "postgres",
			"--formation", AutoFailoverFormation, "--monitor", f.MonitorURL, "--run"}, common...)); err != nil {
			return err
		}
		if i == 0 {
			if _, err := f.WaitStates(ctx, func(s []NodeState) bool {
				return len(s) == 1 && s[0].Reported == "single" && s[0].Stable()
			}); err != nil {
				return fmt.Errorf("pg_auto_failover: waiting for %s to run as single: %w", n.Name, err)
			}
			if err := f.tune(ctx, n); err != nil {
				return err
			}
		} else {
			if _, err := f.WaitStates(ctx, func(s []NodeState) bool { return len(s) == i+1 && Settled(s) }); err != nil {
				return fmt.Errorf("pg_auto_failover: waiting for %s to join as a secondary: %w", n.Name, err)
			}
		}
		f.logf("%s on port %d ready in %v", n.Name, p, time.Since(nodeBegan).Round(time.Millisecond))
	}
	out, err := f.Autoctl(ctx, "show", "uri", "--formation", AutoFailoverFormation)
	if err != nil {
		return err
	}
	f.FormationURI = strings.TrimSpace(out)
	rest, ok := strings.CutPrefix(f.FormationURI, "postgres://")
	if !ok || strings.Contains(rest, "@") {
		return fmt.Errorf("pg_autoctl show uri --formation %s printed %q, not a postgres:// URI without a user", AutoFailoverFormation, out)
	}
	// net/url does not parse a list of hosts: add the user as text.
	f.URL = "postgres://postgres@" + rest
	f.logf("formation of %d nodes ready in %v: %s", nodes, time.Since(began).Round(time.Millisecond), f.FormationURI)
	return nil
}

// tune applies the settings on the first node, then checkpoints: the
// standbys' base backups start with a checkpoint, which is spread over
// minutes when many buffers are dirty.
func (f *AutoFailover) tune(ctx context.Context, n AutoFailoverNode) error {
	conn, err := pgx.Connect(ctx, n.URL)
	if err != nil {
		return fmt.Errorf("pg_auto_failover: connecting to %s: %w", n.Name, err)
	}
	defer conn.Close(context.Background())
	for _, k := range slices.Sorted(maps.Keys(f.opts.Settings)) {
		// ALTER SYSTEM takes no parameters: quote the name and the value.
		stmt := "ALTER SYSTEM SET " + pgx.Identifier{k}.Sanitize() + " = '" +
			strings.ReplaceAll(f.opts.Settings[k], "'", "''") + "'"
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("pg_auto_failover: setting %s on %s: %w", k, n.Name, err)
		}
	}
	if _, err := conn.Exec(ctx, `SELECT pg_reload_conf()`); err != nil {
		return fmt.Errorf("pg_auto_failover: reloading %s: %w", n.Name, err)
	}
	if _, err := conn.Exec(ctx, `CHECKPOINT`); err != nil {
		return fmt.Errorf("pg_auto_failover: checkpoint on %s: %w", n.Name, err)
	}
	return nil
}

// run starts a `pg_autoctl ... --run` process in the background, its
// output in root/<name>.log.
func (f *AutoFailover) run(name string, args []string) error {
	logPath := filepath.Join(f.root, name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pg_auto_failover: opening %s: %w", logPath, err)
	}
	defer logFile.Close()
	cmd := f.command(context.Background(), args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closing {
		return ErrClosed
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("running pg_autoctl for %s: %w", name, err)
	}
	s := &autoctlService{name: name, logPath: logPath, proc: cmd.Process, exited: make(chan struct{})}
	f.services = append(f.services, s)
	go func() {
		err := cmd.Wait()
		close(s.exited)
		f.mu.Lock()
		closing := f.closing
		f.mu.Unlock()
		if !closing {
			f.setDead(fmt.Errorf("pg_autoctl of %s exited (%v); its log %s ends with:\n%s", name, err, logPath, s.logTail()))
		}
	}()
	return nil
}

func (s *autoctlService) logTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", s.logPath, err)
	}
	// pg_autoctl looks for pg_ctl in every PATH entry; drop that noise.
	var keep [][]byte
	for _, line := range bytes.Split(b, []byte("\n")) {
		if !bytes.Contains(line, []byte("Permission denied")) {
			keep = append(keep, line)
		}
	}
	return tail(bytes.Join(keep, []byte("\n")), 30)
}

// alive returns ctx cancelled also when a pg_autoctl process dies.
func (f *AutoFailover) alive(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(f.dead, func() { cancel(context.Cause(f.dead)) })
	return ctx, func() { stop(); cancel(nil) }
}

// waitQuery polls until sql succeeds on url (start-up: nothing to listen to
// yet), ctx ends or a pg_autoctl process dies.
func (f *AutoFailover) waitQuery(ctx context.Context, url, sql string) error {
	ctx, cancel := f.alive(ctx)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		last = queryOnce(ctx, url, sql)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last attempt: %v)", context.Cause(ctx), last)
		case <-tick.C:
		}
	}
}

func queryOnce(ctx context.Context, url, sql string) error {
	attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(attempt, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(attempt, sql)
	return err
}

// statesSQL lists the formation's nodes as the monitor sees them.
const statesSQL = `SELECT nodename, nodeport, reportedstate::text, goalstate::text
FROM pgautofailover.node WHERE formationid = $1 ORDER BY nodeid`

func readStates(ctx context.Context, conn *pgx.Conn) ([]NodeState, error) {
	rows, err := conn.Query(ctx, statesSQL, AutoFailoverFormation)
	if err != nil {
		return nil, fmt.Errorf("pg_auto_failover: reading node states: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (NodeState, error) {
		var s NodeState
		err := r.Scan(&s.Name, &s.Port, &s.Reported, &s.Goal)
		return s, err
	})
}

// States returns the formation's nodes as the monitor sees them.
func (f *AutoFailover) States(ctx context.Context) ([]NodeState, error) {
	conn, err := pgx.Connect(ctx, f.MonitorURL)
	if err != nil {
		return nil, fmt.Errorf("pg_auto_failover: connecting to the monitor: %w", err)
	}
	defer conn.Close(context.Background())
	return readStates(ctx, conn)
}

// WaitStates waits until cond holds for the node states and returns them.
// It reads the states again on each of the monitor's notifications (channel
// "state", sent on every state change), so it waits on a signal, not a
// timer. It fails when ctx ends or a pg_autoctl process dies.
func (f *AutoFailover) WaitStates(ctx context.Context, cond func([]NodeState) bool) ([]NodeState, error) {
	ctx, cancel := f.alive(ctx)
	defer cancel()
	conn, err := pgx.Connect(ctx, f.MonitorURL)
	if err != nil {
		return nil, fmt.Errorf("pg_auto_failover: connecting to the monitor: %w", err)
	}
	defer conn.Close(context.Background())
	// LISTEN before reading: no change falls in between.
	if _, err := conn.Exec(ctx, `LISTEN state`); err != nil {
		return nil, fmt.Errorf("pg_auto_failover: listening to the monitor: %w", err)
	}
	var states []NodeState
	for {
		if states, err = readStates(ctx, conn); err != nil {
			return nil, err
		}
		if cond(states) {
			return states, nil
		}
		if _, err := conn.WaitForNotification(ctx); err != nil {
			if c := context.Cause(ctx); c != nil {
				err = c
			}
			return states, fmt.Errorf("pg_auto_failover: waiting for a state change (last states %v): %w", states, err)
		}
	}
}

// Settled reports whether states are one primary and secondaries, each as
// assigned.
func Settled(states []NodeState) bool {
	primaries := 0
	for _, s := range states {
		switch {
		case !s.Stable():
			return false
		case s.Reported == "primary":
			primaries++
		case s.Reported != "secondary":
			return false
		}
	}
	return primaries == 1
}

// Primary returns the node the monitor reports as primary (settled or
// not), or an error when there is none.
func (f *AutoFailover) Primary(ctx context.Context) (AutoFailoverNode, error) {
	states, err := f.States(ctx)
	if err != nil {
		return AutoFailoverNode{}, err
	}
	for _, s := range states {
		if s.Reported == "primary" && s.Goal == "primary" {
			return f.node(s.Name)
		}
	}
	return AutoFailoverNode{}, fmt.Errorf("pg_auto_failover: no primary among %v", states)
}

func (f *AutoFailover) node(name string) (AutoFailoverNode, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range f.Nodes {
		if n.Name == name {
			return n, nil
		}
	}
	return AutoFailoverNode{}, fmt.Errorf("pg_auto_failover: the monitor names node %q, which the harness did not create", name)
}

// PerformFailover runs `pg_autoctl perform failover` (a switchover: the
// primary is drained and demoted, a secondary promoted), then waits until the
// formation is settled again with another primary, which it returns.
func (f *AutoFailover) PerformFailover(ctx context.Context) (AutoFailoverNode, error) {
	old, err := f.Primary(ctx)
	if err != nil {
		return AutoFailoverNode{}, err
	}
	if out, err := f.Autoctl(ctx, "perform", "failover", "--formation", AutoFailoverFormation); err != nil {
		return AutoFailoverNode{}, fmt.Errorf("%w\n%s", err, tail([]byte(out), 30))
	}
	states, err := f.WaitStates(ctx, func(s []NodeState) bool {
		if !Settled(s) {
			return false
		}
		for _, n := range s {
			if n.Reported == "primary" {
				return n.Name != old.Name
			}
		}
		return false
	})
	if err != nil {
		return AutoFailoverNode{}, err
	}
	for _, s := range states {
		if s.Reported == "primary" {
			return f.node(s.Name)
		}
	}
	return AutoFailoverNode{}, errors.New("unreachable")
}

// Close stops every pg_autoctl process (nodes first, then the monitor;
// SIGTERM makes each stop its Postgres), kills what is left and removes the
// directory. It is idempotent.
func (f *AutoFailover) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed, f.closing = true, true
	services := slices.Clone(f.services)
	f.mu.Unlock()
	// The nodes at once, then the monitor (services[0]), which the nodes
	// report to while they stop.
	var wg sync.WaitGroup
	for i, s := range services {
		if i > 0 {
			wg.Go(s.stop)
		}
	}
	wg.Wait()
	if len(services) > 0 {
		services[0].stop()
	}
	var errs []error
	// Whatever still works in root (a Postgres whose supervisor was killed).
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids, ok := processesIn(f.root)
		if !ok || len(pids) == 0 {
			break
		}
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		if time.Now().After(deadline) {
			errs = append(errs, fmt.Errorf("pg_auto_failover: processes %v alive 10s after SIGKILL", pids))
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, d := range append([]string{"monitor"}, nodeNames(f.Nodes)...) {
		removeStaleShm(filepath.Join(f.root, d, "postmaster.pid"))
	}
	if err := os.RemoveAll(f.root); err != nil {
		errs = append(errs, fmt.Errorf("removing %s: %w", f.root, err))
	}
	f.setDead(ErrClosed)
	if len(errs) > 0 {
		errs = append(errs, f.watchdog.fire())
		return errors.Join(errs...)
	}
	return f.watchdog.disarm()
}

func nodeNames(nodes []AutoFailoverNode) []string {
	var names []string
	for _, n := range nodes {
		names = append(names, n.Name)
	}
	return names
}

// stop sends SIGTERM (pg_autoctl stops its Postgres with a fast shutdown),
// then SIGKILL to the process group.
func (s *autoctlService) stop() {
	_ = syscall.Kill(s.proc.Pid, syscall.SIGTERM)
	select {
	case <-s.exited:
		return
	case <-time.After(30 * time.Second):
	}
	_ = syscall.Kill(-s.proc.Pid, syscall.SIGKILL)
	<-s.exited
}
