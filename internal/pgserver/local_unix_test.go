//go:build unix

package pgserver

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// envDie makes the test binary a helper that starts a local server, prints
// "READY <root> <postmaster pid>" and dies without Close, the way the env
// value says (see dieWithServer).
const envDie = "PGSERVER_TEST_DIE"

func TestMain(m *testing.M) {
	if mode := os.Getenv(envDie); mode != "" {
		dieWithServer(mode)
	}
	os.Exit(m.Run())
}

func dieWithServer(mode string) {
	s, err := Start(context.Background(), Options{Kinds: []Kind{KindLocal}})
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(3)
	}
	l := s.b.(*local)
	pid := l.proc.Pid
	if mode == "killed" {
		if err := s.Kill(); err != nil {
			fmt.Println("ERROR", err)
			os.Exit(3)
		}
	}
	fmt.Printf("READY %s %d\n", l.root, pid)
	switch mode {
	case "panic":
		panic("dying with a running server")
	case "sigkill":
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	default: // killed: Kill, then exit
		os.Exit(1)
	}
}

// startLocalT starts a local server for one test, or skips the test when this
// machine has no PostgreSQL binaries (fails when SWEEPER_REQUIRE_DB=1).
func startLocalT(t *testing.T, opts Options) (*Server, *local) {
	t.Helper()
	opts.Kinds = []Kind{KindLocal}
	opts.Logf = t.Logf
	s, err := Start(context.Background(), opts)
	if err != nil {
		skipOrFail(t, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s, s.b.(*local)
}

// skipOrFail skips on ErrNoPostgres, unless SWEEPER_REQUIRE_DB=1, and fails
// on other errors.
func skipOrFail(t *testing.T, err error) {
	t.Helper()
	if errors.Is(err, ErrNoPostgres) && os.Getenv("SWEEPER_REQUIRE_DB") != "1" {
		t.Skip(err)
	}
	t.Fatal(err)
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func queryString(t *testing.T, conn *pgx.Conn, sql string) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(context.Background(), sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

// gone polls until root no longer exists, postmaster pid has exited and no
// process works in root.
func gone(t *testing.T, root string, pid int) {
	t.Helper()
	began := time.Now()
	deadline := began.Add(10 * time.Second)
	for {
		_, statErr := os.Stat(root)
		dirGone := errors.Is(statErr, os.ErrNotExist)
		procs, _ := processesIn(root)
		procGone := len(procs) == 0 && !alive(pid)
		if dirGone && procGone {
			t.Logf("server and directory gone after %v", time.Since(began).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("10s on: directory %s removed: %v; postmaster %d and processes %v gone: %v",
				root, dirGone, pid, procs, procGone)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive reports whether pid runs and is not a zombie.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	return procState(strconv.Itoa(pid)) != "Z"
}

// TestLocalStartAndClose also tests the env kind, on the same server to save
// a start-up; it cannot be parallel since it uses t.Setenv.
func TestLocalStartAndClose(t *testing.T) {
	began := time.Now()
	s, l := startLocalT(t, Options{})
	t.Logf("local server started in %v", time.Since(began))

	if s.Kind != KindLocal {
		t.Errorf("Kind = %q, want %q", s.Kind, KindLocal)
	}
	want := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", l.port)
	if s.URL != want {
		t.Errorf("URL = %q, want %q", s.URL, want)
	}
	if _, err := os.Stat("/dev/shm"); err == nil && !strings.HasPrefix(l.root, "/dev/shm/") {
		t.Errorf("data in %s, want it on /dev/shm", l.root)
	}
	conn := connect(t, s.URL)
	for setting, want := range map[string]string{
		"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
		"server_encoding": "UTF8", "lc_collate": "C",
	} {
		if got := queryString(t, conn, "SHOW "+setting); got != want {
			t.Errorf("%s = %q, want %q", setting, got, want)
		}
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		if got := procUID(t, l.proc.Pid); got != u.Uid {
			t.Errorf("postmaster runs as uid %s, want postgres (%s)", got, u.Uid)
		}
	}

	t.Run("env kind uses the URL", func(t *testing.T) {
		t.Setenv(EnvDatabaseURL, s.URL)
		env, err := Start(context.Background(), Options{Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		if env.Kind != KindEnv || env.URL != s.URL {
			t.Fatalf("got kind %q url %q, want env %q", env.Kind, env.URL, s.URL)
		}
		if err := env.Kill(); !errors.Is(err, ErrNotLocal) {
			t.Errorf("Kill of env server: got %v, want ErrNotLocal", err)
		}
		if err := env.Restart(context.Background()); !errors.Is(err, ErrNotLocal) {
			t.Errorf("Restart of env server: got %v, want ErrNotLocal", err)
		}
		if err := env.Close(); err != nil {
			t.Fatal(err)
		}
		// Close left the server alone.
		connect(t, s.URL)
	})
	t.Run("env kind with an unreachable URL fails", func(t *testing.T) {
		t.Setenv(EnvDatabaseURL, "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=2")
		_, err := Start(context.Background(), Options{Kinds: []Kind{KindEnv}})
		if err == nil || errors.Is(err, ErrNoPostgres) {
			t.Fatalf("got %v, want a connection error that is not ErrNoPostgres", err)
		}
	})

	pid := l.proc.Pid
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	gone(t, l.root, pid)
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Kill(); !errors.Is(err, ErrClosed) {
		t.Errorf("Kill after Close: got %v, want ErrClosed", err)
	}
}

func procUID(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			return strings.Fields(rest)[0]
		}
	}
	t.Fatalf("no Uid line in /proc/%d/status", pid)
	return ""
}

func TestLocalKillAndRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// synchronous_commit=on: every acknowledged commit survives a kill.
	s, l := startLocalT(t, Options{Settings: map[string]string{"synchronous_commit": "on"}})
	url := s.URL

	conn := connect(t, url)
	if _, err := conn.Exec(ctx, "CREATE TABLE survivors (n int); INSERT INTO survivors SELECT generate_series(1, 1000)"); err != nil {
		t.Fatal(err)
	}
	pid := l.proc.Pid

	if err := s.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if procs, _ := processesIn(l.root); len(procs) > 0 || alive(pid) {
		t.Fatalf("server processes alive after Kill: postmaster %d, others %v", pid, procs)
	}
	if _, err := conn.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("query on a killed server succeeded")
	}
	if err := s.Kill(); err != nil {
		t.Fatalf("Kill of a killed server: %v", err)
	}

	began := time.Now()
	if err := s.Restart(ctx); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	t.Logf("restart with crash recovery took %v", time.Since(began))
	if s.URL != url {
		t.Fatalf("URL changed on restart: %q, was %q", s.URL, url)
	}
	conn2 := connect(t, url)
	if got := queryString(t, conn2, "SELECT count(*)::text FROM survivors"); got != "1000" {
		t.Fatalf("rows after kill and restart: %s, want 1000", got)
	}
	if log := l.logSince(0); !strings.Contains(log, "not properly shut down") {
		t.Errorf("no crash recovery in the log:\n%s", log)
	}

	// Restart of a running server stops it first.
	if err := s.Restart(ctx); err != nil {
		t.Fatalf("Restart of a running server: %v", err)
	}
	connect(t, url)

	// Kill, then Close without restarting: nothing stays behind.
	pid = l.proc.Pid
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close after Kill: %v", err)
	}
	gone(t, l.root, pid)
}

// TestNothingLeftWhenProcessDies starts a server in a child process that
// then dies without Close, and checks that the watchdog stops the server and
// removes its directory.
func TestNothingLeftWhenProcessDies(t *testing.T) {
	if _, err := findBinDir(); err != nil {
		skipOrFail(t, fmt.Errorf("%w (%v)", ErrNoPostgres, err))
	}
	for _, mode := range []string{"panic", "sigkill", "killed"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), envDie+"="+mode)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			var exitErr *exec.ExitError
			if !errors.As(err, &exitErr) {
				t.Fatalf("helper did not fail: %v", err)
			}
			var root string
			var pid int
			sc := bufio.NewScanner(bytes.NewReader(out))
			for sc.Scan() {
				if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "READY" {
					root = f[1]
					pid, _ = strconv.Atoi(f[2])
				}
			}
			if root == "" || pid == 0 {
				t.Fatalf("helper never got ready; stdout:\n%s\nstderr:\n%s", out, stderr.Bytes())
			}
			t.Logf("helper %s: %v; server root %s, postmaster %d", mode, exitErr, root, pid)
			gone(t, root, pid)
		})
	}
}

func TestNewestVersion(t *testing.T) {
	for _, tc := range []struct {
		dirs []string
		want string
	}{
		{[]string{"/usr/lib/postgresql/9.6/bin", "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/13/bin"}, "/usr/lib/postgresql/15/bin"},
		{[]string{"/usr/pgsql-16/bin", "/usr/pgsql-9.6/bin"}, "/usr/pgsql-16/bin"},
		{[]string{"/opt/homebrew/opt/postgresql@14/bin", "/opt/homebrew/opt/postgresql@17/bin"}, "/opt/homebrew/opt/postgresql@17/bin"},
		{[]string{"/usr/local/pgsql/bin"}, "/usr/local/pgsql/bin"},
	} {
		if got := newestVersion(tc.dirs); got != tc.want {
			t.Errorf("newestVersion(%q) = %q, want %q", tc.dirs, got, tc.want)
		}
	}
}
