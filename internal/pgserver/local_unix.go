//go:build unix

package pgserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// shmMinFree is the free space /dev/shm must have to hold a data directory.
const shmMinFree = 1 << 30

// binDirGlobs are where PostgreSQL server binaries live when not in PATH.
var binDirGlobs = []string{
	"/usr/lib/postgresql/*/bin",          // Debian, Ubuntu
	"/usr/pgsql-*/bin",                   // PGDG RPMs
	"/usr/local/pgsql/bin",               // source builds
	"/opt/homebrew/opt/postgresql@*/bin", // Homebrew, Apple silicon
	"/usr/local/opt/postgresql@*/bin",    // Homebrew, Intel
	"/Applications/Postgres.app/Contents/Versions/*/bin",
}

// local is a server run from this machine's binaries.
type local struct {
	opts     Options
	binDir   string
	root     string // temporary directory, removed by close
	data     string
	logPath  string
	port     int
	cred     *syscall.Credential // nil: run as ourselves
	watchdog *watchdog

	// primaryConninfo is the primary_conninfo of a standby (StartStandby);
	// empty for a primary.
	primaryConninfo string

	proc   *os.Process   // nil when stopped
	exited chan struct{} // closed when proc has been reaped
}

func startLocal(ctx context.Context, opts Options) (*Server, error) {
	binDir, err := findBinDir()
	if err != nil {
		return nil, err
	}
	l := &local{opts: opts, binDir: binDir}
	if os.Geteuid() == 0 {
		if l.cred, err = postgresCredential(); err != nil {
			return nil, err
		}
	}
	if err := l.makeRoot(); err != nil {
		return nil, err
	}
	if l.watchdog, err = startWatchdog("local", l.root, l.data); err != nil {
		_ = os.RemoveAll(l.root)
		return nil, err
	}
	if err := l.initdb(ctx); err != nil {
		return nil, errors.Join(err, l.close())
	}
	if err := l.startFreshPort(ctx); err != nil {
		return nil, errors.Join(err, l.close())
	}
	return &Server{URL: l.url(), Kind: KindLocal, b: l}, nil
}

// findBinDir returns the directory holding initdb and postgres: the one of
// initdb in PATH, else the newest version under binDirGlobs.
func findBinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		dir := filepath.Dir(p)
		if isExecutable(filepath.Join(dir, "postgres")) {
			return dir, nil
		}
	}
	var dirs []string
	for _, g := range binDirGlobs {
		matches, _ := filepath.Glob(g)
		for _, d := range matches {
			if isExecutable(filepath.Join(d, "initdb")) && isExecutable(filepath.Join(d, "postgres")) {
				dirs = append(dirs, d)
			}
		}
	}
	if len(dirs) == 0 {
		return "", unavailable("no initdb in PATH or in %s", strings.Join(binDirGlobs, ", "))
	}
	return newestVersion(dirs), nil
}

// newestVersion picks the directory whose path holds the highest version
// number (/usr/lib/postgresql/16/bin beats .../9.6/bin).
func newestVersion(dirs []string) string {
	return slices.MaxFunc(dirs, func(a, b string) int {
		return slices.Compare(versionOf(a), versionOf(b))
	})
}

// versionOf extracts the numbers of the first path element that starts with a
// digit, after an optional "postgresql@" or "pgsql-" prefix.
func versionOf(dir string) []int {
	for _, part := range strings.Split(dir, "/") {
		part = strings.TrimPrefix(strings.TrimPrefix(part, "postgresql@"), "pgsql-")
		if part == "" || part[0] < '0' || part[0] > '9' {
			continue
		}
		var v []int
		for _, f := range strings.Split(part, ".") {
			n, err := strconv.Atoi(f)
			if err != nil {
				break
			}
			v = append(v, n)
		}
		return v
	}
	return nil
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// postgresCredential is the user a root process runs the server as.
func postgresCredential() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL refuses to run as root and there is no user postgres to run it as"+
			" (create one: useradd --system --user-group postgres): %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parsing uid of user postgres: %w", err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parsing gid of user postgres: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

// makeRoot creates the temporary directory, on /dev/shm when it has room.
func (l *local) makeRoot() error {
	var root string
	var st syscall.Statfs_t
	if syscall.Statfs("/dev/shm", &st) == nil && uint64(st.Bavail)*uint64(st.Bsize) >= shmMinFree {
		root, _ = os.MkdirTemp("/dev/shm", "sweeper-pg-") // else fall back to the temp dir
	}
	if root == "" {
		var err error
		if root, err = os.MkdirTemp("", "sweeper-pg-"); err != nil {
			return fmt.Errorf("creating temporary directory: %w", err)
		}
	}
	// The watchdog compares /proc/PID/cwd with the data directory: use the
	// path without symbolic links.
	if resolved, err := filepath.EvalSymlinks(root); err == nil {
		root = resolved
	}
	l.root = root
	l.data = filepath.Join(root, "data")
	l.logPath = filepath.Join(root, "postgres.log")
	if l.cred != nil {
		if err := os.Chown(root, int(l.cred.Uid), int(l.cred.Gid)); err != nil {
			_ = os.RemoveAll(root)
			return fmt.Errorf("handing temporary directory to user postgres: %w", err)
		}
	}
	return nil
}

// prepare makes cmd run as the server's user, in its own process group,
// without the PG* variables of our environment (PGDATA, PGPORT...) that would
// change its behaviour.
func (l *local) prepare(cmd *exec.Cmd) *exec.Cmd {
	cmd.Dir = l.root
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "LC_ALL=C")
	cmd.Env = append(cmd.Env, l.opts.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: l.cred}
	return cmd
}

func (l *local) initdb(ctx context.Context) error {
	cmd := l.prepare(exec.CommandContext(ctx, filepath.Join(l.binDir, "initdb"), "-D", l.data, "-A", "trust", "-U", "postgres",
		"--no-sync", "-E", "UTF8", "--locale=C"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("running initdb: %w\n%s", err, tail(out, 20))
	}
	return nil
}

// startFreshPort starts the server on a free port, trying another port when
// someone took the chosen one in between.
func (l *local) startFreshPort(ctx context.Context) error {
	var err error
	for range 5 {
		if l.port, err = freePort(); err != nil {
			return err
		}
		logged := l.logSize()
		err = l.start(ctx)
		if err == nil || !strings.Contains(l.logSince(logged), "could not bind") {
			return err
		}
		l.opts.logf("port %d was taken, trying another", l.port)
	}
	return err
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (l *local) url() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", l.port)
}

// start runs postgres on l.port and waits until it accepts connections.
func (l *local) start(ctx context.Context) error {
	args := []string{"-D", l.data, "-p", strconv.Itoa(l.port), "-k", l.root}
	// Dynamic shared memory in the data directory (on tmpfs when /dev/shm
	// has room): a killed server leaves no segment outside it.
	settings := l.opts.settings(map[string]string{
		"listen_addresses":           "127.0.0.1",
		"dynamic_shared_memory_type": "mmap",
	})
	if l.primaryConninfo != "" {
		settings = append(settings, "primary_conninfo="+l.primaryConninfo)
	}
	for _, s := range settings {
		args = append(args, "-c", s)
	}
	logFile, err := os.OpenFile(l.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("opening server log: %w", err)
	}
	defer logFile.Close()
	cmd := l.prepare(exec.Command(filepath.Join(l.binDir, "postgres"), args...))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("running postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	l.proc, l.exited = cmd.Process, exited

	err = waitReady(ctx, l.url(), exited, func(err error) error {
		return fmt.Errorf("%w; server log %s ends with:\n%s", err, l.logPath, l.logTail())
	})
	if err != nil {
		_ = l.stop()
		return err
	}
	return nil
}

// stop ends a running server: fast shutdown, then immediate shutdown, then
// SIGKILL to every server process.
func (l *local) stop() error {
	if l.proc == nil {
		return nil
	}
	defer func() { l.proc = nil }()
	pid := l.proc.Pid
	for _, step := range []struct {
		signal func() error
		wait   time.Duration
	}{
		{func() error { return syscall.Kill(pid, syscall.SIGINT) }, 10 * time.Second},
		{func() error { return syscall.Kill(pid, syscall.SIGQUIT) }, 5 * time.Second},
		{func() error { l.sigkillAll(pid); return nil }, 5 * time.Second},
	} {
		if err := step.signal(); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("signalling postgres: %w", err)
		}
		select {
		case <-l.exited:
			return nil
		case <-time.After(step.wait):
		}
	}
	return errors.New("postgres did not exit after SIGKILL")
}

// sigkillAll kills the postmaster pid and every process working in our
// directory: the postmaster's children, which each lead a process group of
// their own, so a signal to the postmaster's group misses them.
func (l *local) sigkillAll(pid int) {
	// A stopped postmaster starts no new child while we kill.
	_ = syscall.Kill(pid, syscall.SIGSTOP)
	pids, _ := processesIn(l.root)
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	_ = syscall.Kill(-pid, syscall.SIGKILL) // where /proc cannot tell
}

func (l *local) kill() error {
	if l.proc == nil {
		return nil
	}
	l.sigkillAll(l.proc.Pid)
	<-l.exited
	l.proc = nil
	// Wait until every server process is gone, so that a restart finds the
	// port free and the shared memory unused.
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids, ok := processesIn(l.root)
		if !ok || len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server processes %v alive 5s after SIGKILL", pids)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (l *local) restart(ctx context.Context) error {
	if err := l.stop(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, l.opts.startTimeout())
	defer cancel()
	return l.start(ctx)
}

func (l *local) close() error {
	var errs []error
	wasKilled := l.proc == nil
	if err := l.stop(); err != nil {
		errs = append(errs, err)
	}
	if wasKilled {
		// A killed server leaves its System V shared memory segment.
		removeStaleShm(filepath.Join(l.data, "postmaster.pid"))
	}
	if err := os.RemoveAll(l.root); err != nil {
		errs = append(errs, fmt.Errorf("removing %s: %w", l.root, err))
	}
	if len(errs) > 0 {
		// Let the watchdog try too.
		errs = append(errs, l.watchdog.fire())
		return errors.Join(errs...)
	}
	return l.watchdog.disarm()
}

func (l *local) logSize() int64 {
	fi, err := os.Stat(l.logPath)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logSince returns the server log from byte offset off on.
func (l *local) logSince(off int64) string {
	b, err := os.ReadFile(l.logPath)
	if err != nil || off > int64(len(b)) {
		return ""
	}
	return string(b[off:])
}

func (l *local) logTail() string {
	b, err := os.ReadFile(l.logPath)
	if err != nil {
		return fmt.Sprintf("(reading server log: %v)", err)
	}
	return tail(b, 20)
}

// processesIn lists the live processes whose working directory is root or
// below it: the postmaster and all its children work in the data directory.
// Zombies, which some other parent must reap, do not count. ok is false where
// /proc cannot tell.
func processesIn(root string) (pids []int, ok bool) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, false
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cwd, err := os.Readlink("/proc/" + e.Name() + "/cwd")
		if err != nil {
			continue
		}
		cwd = strings.TrimSuffix(cwd, " (deleted)")
		if cwd != root && !strings.HasPrefix(cwd, root+"/") {
			continue
		}
		if procState(e.Name()) == "Z" {
			continue
		}
		pids = append(pids, pid)
	}
	return pids, true
}

// procState reads the state letter (R, S, Z...) of /proc/PID/stat; "" when
// the process is gone.
func procState(pid string) string {
	f, err := os.Open("/proc/" + pid + "/stat")
	if err != nil {
		return ""
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return ""
	}
	// pid (comm) state ...; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return ""
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) == 0 {
		return ""
	}
	return fields[0]
}

// removeStaleShm removes the System V shared memory segment named in a
// postmaster.pid left by a killed server.
func removeStaleShm(pidFile string) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 7 {
		return
	}
	fields := strings.Fields(lines[6])
	if len(fields) != 2 {
		return
	}
	if _, err := strconv.Atoi(fields[1]); err == nil {
		_ = exec.Command("ipcrm", "-m", fields[1]).Run()
	}
}
