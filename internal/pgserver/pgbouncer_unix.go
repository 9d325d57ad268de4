//go:build unix

package pgserver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// PgBouncerPoolSizeDefault is the server connections per database and user
// when PgBouncerOptions.PoolSize is zero: few, so that clients share them
// as they do in production.
const PgBouncerPoolSizeDefault = 4

// ErrNoPgBouncer means the pgbouncer binary was not found. StartPgBouncer
// wraps it with how to install it.
var ErrNoPgBouncer = errors.New("pgbouncer not found")

// pgbouncerPaths are where pgbouncer is looked for besides PATH (Debian puts
// it in /usr/sbin, which an unprivileged user's PATH may lack).
var pgbouncerPaths = []string{"/usr/sbin/pgbouncer", "/usr/bin/pgbouncer", "/usr/local/bin/pgbouncer"}

// PgBouncerOptions tunes StartPgBouncer. The zero value is transaction
// pooling with PgBouncerPoolSizeDefault server connections.
type PgBouncerOptions struct {
	// PoolMode is pgbouncer's pool_mode: "transaction" when empty,
	// "session" or "statement".
	PoolMode string
	// PoolSize is default_pool_size; zero means PgBouncerPoolSizeDefault.
	PoolSize int
	// Users may connect besides the target URL's user (auth_type trust:
	// pgbouncer still wants each name in its auth_file).
	Users []string
	// Logf receives progress messages; nil discards them.
	Logf func(format string, args ...any)
}

// PgBouncer is a running pgbouncer in front of a Server, started by
// StartPgBouncer. Its methods are safe for concurrent use.
type PgBouncer struct {
	// URL connects through pgbouncer to the target's database of Server.URL,
	// as the same user.
	URL string
	// Port is the 127.0.0.1 port pgbouncer listens on.
	Port int

	mu       sync.Mutex
	closed   bool
	root     string
	logPath  string
	proc     *os.Process
	exited   chan struct{}
	watchdog *watchdog
}

// StartPgBouncer starts pgbouncer (PgBouncer 1.x, Debian's package) in front
// of target, on a free 127.0.0.1 port, with auth_type trust: the target must
// accept its user without a password (the local kind does). As root it runs
// as the user postgres, since pgbouncer refuses to run as root. Its
// directory and process are removed by Close, or by the watchdog when the
// Go process dies. The error wraps ErrNoPgBouncer when pgbouncer is not
// installed.
func StartPgBouncer(ctx context.Context, target *Server, opts PgBouncerOptions) (*PgBouncer, error) {
	bin, err := findPgBouncer()
	if err != nil {
		return nil, err
	}
	tc, err := pgconn.ParseConfig(target.URL)
	if err != nil {
		return nil, fmt.Errorf("pgbouncer: parsing the target's URL: %w", err)
	}
	if tc.Password != "" {
		return nil, errors.New("pgbouncer: the target server needs a password; this harness supports trust " +
			"authentication only (a local server)")
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		if cred, err = postgresCredential(); err != nil {
			return nil, err
		}
	}
	root, err := os.MkdirTemp("", "sweeper-pgbouncer-")
	if err != nil {
		return nil, fmt.Errorf("pgbouncer: creating temporary directory: %w", err)
	}
	if resolved, err := filepath.EvalSymlinks(root); err == nil {
		root = resolved
	}
	b := &PgBouncer{root: root, logPath: filepath.Join(root, "pgbouncer.log")}
	// The watchdog's local mode kills whatever works in root and removes it.
	if b.watchdog, err = startWatchdog("local", root, filepath.Join(root, "no-data")); err != nil {
		_ = os.RemoveAll(root)
		return nil, err
	}
	if err := b.start(ctx, bin, tc, cred, opts); err != nil {
		return nil, errors.Join(err, b.Close())
	}
	return b, nil
}

func findPgBouncer() (string, error) {
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p, nil
	}
	for _, p := range pgbouncerPaths {
		if isExecutable(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w (Debian/Ubuntu: apt-get install pgbouncer)", ErrNoPgBouncer)
}

// pgbouncerIni is pgbouncer's configuration: every database of the target,
// transaction pooling, no Unix socket, everything in the temporary directory.
func pgbouncerIni(root string, port int, tc *pgconn.Config, opts PgBouncerOptions) string {
	return fmt.Sprintf(`[databases]
* = host=%s port=%d

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
admin_users = %s
pool_mode = %s
default_pool_size = %d
max_client_conn = 1000
ignore_startup_parameters = extra_float_digits
logfile = %s
pidfile = %s
log_connections = 0
log_disconnections = 0
`, tc.Host, tc.Port, port, filepath.Join(root, "users.txt"), tc.User,
		cmp.Or(opts.PoolMode, "transaction"), cmp.Or(opts.PoolSize, PgBouncerPoolSizeDefault),
		filepath.Join(root, "pgbouncer.log"), filepath.Join(root, "pgbouncer.pid"))
}

func (b *PgBouncer) start(ctx context.Context, bin string, tc *pgconn.Config, cred *syscall.Credential, opts PgBouncerOptions) error {
	var users strings.Builder
	for _, u := range append([]string{tc.User}, opts.Users...) {
		fmt.Fprintf(&users, "%q \"\"\n", u)
	}
	var err error
	for range 5 { // another process may take the free port in between
		if b.Port, err = freePort(); err != nil {
			return err
		}
		files := map[string]string{
			"pgbouncer.ini": pgbouncerIni(b.root, b.Port, tc, opts),
			"users.txt":     users.String(),
		}
		for name, text := range files {
			if err := os.WriteFile(filepath.Join(b.root, name), []byte(text), 0o644); err != nil {
				return fmt.Errorf("pgbouncer: writing %s: %w", name, err)
			}
		}
		if cred != nil {
			for _, p := range []string{b.root, filepath.Join(b.root, "pgbouncer.ini"), filepath.Join(b.root, "users.txt")} {
				if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
					return fmt.Errorf("pgbouncer: handing %s to user postgres: %w", p, err)
				}
			}
		}
		u := url.URL{Scheme: "postgres", User: url.User(tc.User), Host: "127.0.0.1:" + strconv.Itoa(b.Port),
			Path: "/" + tc.Database, RawQuery: "sslmode=disable"}
		b.URL = u.String()
		began := time.Now()
		if err = b.run(ctx, bin, cred); err == nil {
			if opts.Logf != nil {
				opts.Logf("pgserver: pgbouncer (%s pooling) on port %d ready in %v",
					cmp.Or(opts.PoolMode, "transaction"), b.Port, time.Since(began).Round(time.Millisecond))
			}
			return nil
		}
		if !strings.Contains(err.Error(), "Address already in use") {
			return err
		}
	}
	return err
}

// run starts the pgbouncer process and waits until it accepts a connection
// (which also reaches the target).
func (b *PgBouncer) run(ctx context.Context, bin string, cred *syscall.Credential) error {
	cmd := exec.Command(bin, filepath.Join(b.root, "pgbouncer.ini"))
	cmd.Dir = b.root
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("running pgbouncer: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	b.proc, b.exited = cmd.Process, exited
	err := waitReady(ctx, b.URL, exited, func(err error) error {
		return fmt.Errorf("pgbouncer: %w; its log %s ends with:\n%s", err, b.logPath, b.logTail())
	})
	if err != nil {
		b.stop()
		return err
	}
	return nil
}

func (b *PgBouncer) logTail() string {
	out, err := os.ReadFile(b.logPath)
	if err != nil {
		return fmt.Sprintf("(reading pgbouncer log: %v)", err)
	}
	return tail(out, 20)
}

// stop ends the process: SIGTERM (pgbouncer's immediate shutdown), then
// SIGKILL.
func (b *PgBouncer) stop() {
	if b.proc == nil {
		return
	}
	defer func() { b.proc = nil }()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		_ = b.proc.Signal(sig)
		select {
		case <-b.exited:
			return
		case <-time.After(5 * time.Second):
		}
	}
}

// URLFor returns dsn, a URL of the target server, with its host and port
// replaced by pgbouncer's: the same database and user, through the pooler.
func (b *PgBouncer) URLFor(dsn string) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", errors.New("pgbouncer: URLFor needs a postgres:// URL")
	}
	u.Host = "127.0.0.1:" + strconv.Itoa(b.Port)
	return u.String(), nil
}

// Close stops pgbouncer and removes its directory. It is idempotent.
func (b *PgBouncer) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	b.stop()
	if err := os.RemoveAll(b.root); err != nil {
		return errors.Join(fmt.Errorf("removing %s: %w", b.root, err), b.watchdog.fire())
	}
	return b.watchdog.disarm()
}
