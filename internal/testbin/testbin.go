// Package testbin builds the sweeper binary once per test binary and runs it
// as users do: to its end (Run) or as a daemon (StartDaemon). The end-to-end,
// deployment and stress tests share it.
package testbin

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/internal/testdb"
)

// Package is the import path of the command under test.
const Package = "github.com/tasksweeper/sweeper/cmd/sweeper"

// Build compiles the sweeper command into a new temporary directory and
// returns the binary's path and a function that removes the directory.
// Extra go build flags (e.g. "-race") go in flags.
func Build(flags ...string) (path string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "sweeper-bin-")
	if err != nil {
		return "", nil, err
	}
	cleanup = func() { _ = os.RemoveAll(dir) }
	path = filepath.Join(dir, "sweeper")
	args := append(append([]string{"build", "-o", path}, flags...), Package)
	cmd := exec.Command("go", args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("building sweeper: %w", err)
	}
	return path, cleanup, nil
}

// CleanEnv is the test process's environment without anything that would
// configure sweeper behind the test's back: SWEEPER_*, DATABASE_URL, PG*.
func CleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "SWEEPER_") || strings.HasPrefix(kv, "DATABASE_URL=") || strings.HasPrefix(kv, "PG") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// Result is one finished run of the binary.
type Result struct {
	Args           []string
	Code           int
	Stdout, Stderr string
}

func (r Result) String() string {
	return fmt.Sprintf("sweeper %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(r.Args, " "), r.Code, r.Stdout, r.Stderr)
}

// Run runs binary with args to its end (at most two minutes), with env added
// to CleanEnv.
func Run(t testing.TB, binary string, env []string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(CleanEnv(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running sweeper %v: %v", args, err)
	}
	return Result{args, code, out.String(), errb.String()}
}

// Daemon is a running `sweeper` daemon.
type Daemon struct {
	Name string
	Cmd  *exec.Cmd
	Addr string // of /metrics, /healthz, /readyz

	mu   sync.Mutex
	logs bytes.Buffer

	done     chan struct{} // closed when the process has exited
	exitErr  error
	scanDone chan struct{}
}

var addrRE = regexp.MustCompile(`"address":"([^"]+)"`)

// StartDaemon starts binary in daemon mode, serving HTTP on a free loopback
// port with JSON logs, with env added to CleanEnv, and waits until it serves.
// The test's cleanup kills it if it still runs.
func StartDaemon(t testing.TB, binary, name string, env []string, args ...string) *Daemon {
	t.Helper()
	d := &Daemon{Name: name, done: make(chan struct{}), scanDone: make(chan struct{})}
	d.Cmd = exec.Command(binary, args...)
	d.Cmd.Env = append(CleanEnv(), append([]string{"SWEEPER_HTTP_LISTEN=127.0.0.1:0", "SWEEPER_LOG_FORMAT=json"}, env...)...)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	d.Cmd.Stderr, d.Cmd.Stdout = pw, pw
	if err := d.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_ = pw.Close()
	addr := make(chan string, 1)
	// With the API on, its listener starts after the metrics server: wait
	// for its line too, so that callers find api_address in Logs.
	apiUp := make(chan struct{})
	apiOn := false
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "SWEEPER_API_LISTEN="); ok {
			apiOn = v != ""
		}
	}
	if !apiOn {
		close(apiUp)
	}
	go func() {
		defer close(d.scanDone)
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
		for sc.Scan() {
			line := sc.Text()
			d.mu.Lock()
			d.logs.WriteString(line + "\n")
			d.mu.Unlock()
			if m := addrRE.FindStringSubmatch(line); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
			if apiOn && strings.Contains(line, `"api_address":`) {
				apiOn = false
				close(apiUp)
			}
		}
	}()
	go func() {
		d.exitErr = d.Cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		if !d.Exited() {
			_ = d.Cmd.Process.Kill()
		}
		<-d.done
		<-d.scanDone
	})
	timeout := time.After(60 * time.Second)
	select {
	case d.Addr = <-addr:
	case <-d.done:
		<-d.scanDone
		t.Fatalf("%s exited before serving: %v\n%s", name, d.exitErr, d.Logs())
	case <-timeout:
		t.Fatalf("%s did not serve within 60s\n%s", name, d.Logs())
	}
	select {
	case <-apiUp:
	case <-d.done:
		<-d.scanDone
		t.Fatalf("%s exited before serving the API: %v\n%s", name, d.exitErr, d.Logs())
	case <-timeout:
		t.Fatalf("%s did not serve the API within 60s\n%s", name, d.Logs())
	}
	return d
}

// Exited reports whether the process has ended.
func (d *Daemon) Exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// ExitErr is the process's exit error once Exited.
func (d *Daemon) ExitErr() error {
	<-d.done
	return d.exitErr
}

// Logs returns what the daemon wrote so far.
func (d *Daemon) Logs() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.logs.String()
}

// Stop sends sig and waits up to timeout for the exit; it returns the exit
// code (-1 when killed by a signal).
func (d *Daemon) Stop(t testing.TB, sig syscall.Signal, timeout time.Duration) int {
	t.Helper()
	if err := d.Cmd.Process.Signal(sig); err != nil && !d.Exited() {
		t.Fatalf("signalling %s: %v", d.Name, err)
	}
	select {
	case <-d.done:
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %s of %v\n%s", d.Name, timeout, sig, d.Logs())
	}
	<-d.scanDone
	return d.Cmd.ProcessState.ExitCode()
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

// Get fetches a path of the daemon's HTTP server.
func (d *Daemon) Get(path string) (int, string, error) {
	resp, err := httpClient.Get("http://" + d.Addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// Metrics scrapes /metrics into series -> value ("name{labels}" as written),
// and returns the body too.
func (d *Daemon) Metrics() (map[string]float64, string, error) {
	code, body, err := d.Get("/metrics")
	if err != nil {
		return nil, "", err
	}
	if code != http.StatusOK {
		return nil, body, fmt.Errorf("/metrics: %d", code)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, body, nil
}

// MustMetrics is Metrics failing the test on error.
func (d *Daemon) MustMetrics(t testing.TB) map[string]float64 {
	t.Helper()
	m, _, err := d.Metrics()
	if err != nil {
		t.Fatalf("%s: %v", d.Name, err)
	}
	return m
}

// Eventually polls cond every 50ms until it holds, or fails the test after
// timeout.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// MainWithDB is a TestMain for tests that run the binary against a real
// PostgreSQL: it builds the sweeper command into *binary, runs the tests
// with testdb.Main, removes the binary and exits with the tests' code.
func MainWithDB(m *testing.M, binary *string) {
	bin, cleanup, err := Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*binary = bin
	code := testdb.Main(m)
	cleanup()
	os.Exit(code)
}
