package pgserver

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// EnvDatabaseURL is the environment variable naming an existing server for
// the "env" kind: a URL whose user may create and drop databases.
const EnvDatabaseURL = "SWEEPER_TEST_DATABASE_URL"

// Kind says where a Server comes from.
type Kind string

// The kinds of server, in the order Start tries them by default.
const (
	// KindEnv is the existing server named by EnvDatabaseURL.
	KindEnv Kind = "env"
	// KindDocker is a postgres container started through Options.Docker
	// (package pgdocker: dockertest).
	KindDocker Kind = "docker"
	// KindLocal is a server run from this machine's PostgreSQL binaries.
	KindLocal Kind = "local"
)

// StartTimeoutDefault bounds how long Start waits for a server to accept
// connections (initdb included) when Options.StartTimeout is zero.
const StartTimeoutDefault = 60 * time.Second

// DockerImageDefault is the image of the docker kind when Options.DockerImage
// is empty.
const DockerImageDefault = "postgres:15"

// ErrNoPostgres means no way to get a PostgreSQL server was found. Start wraps
// it, adding how to get one for each kind it tried and why each was not
// available.
var ErrNoPostgres = errors.New("no PostgreSQL server found")

// hints say how to make each kind available, for the error of Start.
var hints = map[Kind]string{
	KindEnv:    "set " + EnvDatabaseURL + " to the URL of a server where databases may be created",
	KindDocker: "start a Docker engine",
	KindLocal:  "install the PostgreSQL server binaries (Debian/Ubuntu: apt-get install postgresql)",
}

// ErrNotLocal is returned by Kill and Restart on a server that is not of the
// local kind.
var ErrNotLocal = errors.New("only a local server (kind \"local\") can be killed and restarted")

// ErrClosed is returned by Kill and Restart after Close.
var ErrClosed = errors.New("server is closed")

// Options tunes Start. The zero value is ready to use.
type Options struct {
	// Kinds lists the sources to try, in order. Empty means
	// KindEnv, KindDocker, KindLocal.
	Kinds []Kind

	// Settings are extra server settings (postgres -c name=value) for docker
	// and local servers; they override the defaults (fsync=off,
	// synchronous_commit=off, full_page_writes=off, max_connections=200, and
	// for local servers listen_addresses=127.0.0.1 and
	// dynamic_shared_memory_type=mmap, which keeps shared memory files in the
	// data directory).
	Settings map[string]string

	// Logf receives progress messages (what was tried, how long start-up
	// took). Nil discards them.
	Logf func(format string, args ...any)

	// StartTimeout bounds start-up; zero means StartTimeoutDefault.
	StartTimeout time.Duration

	// DockerImage is the image of the docker kind; empty means
	// DockerImageDefault.
	DockerImage string

	// Docker is the Docker client of the docker kind; nil makes that kind
	// unavailable. pgdocker.Client{} is one (dockertest); it lives in a
	// package of its own so that programs which never start containers do
	// not link a Docker client.
	Docker Docker

	// Env holds extra NAME=value variables for the processes of a local
	// server (initdb, postgres, pg_ctl), after ours; the docker kind ignores
	// it. It is how a caller runs one server under, say, LD_PRELOAD without
	// changing the environment of its own process (and of every server
	// another goroutine starts meanwhile).
	Env []string
}

func (o Options) logf(format string, args ...any) {
	if o.Logf != nil {
		o.Logf("pgserver: "+format, args...)
	}
}

func (o Options) startTimeout() time.Duration {
	return cmp.Or(o.StartTimeout, StartTimeoutDefault)
}

func (o Options) kinds() []Kind {
	if len(o.Kinds) == 0 {
		return []Kind{KindEnv, KindDocker, KindLocal}
	}
	return o.Kinds
}

// settings returns the server settings as sorted name=value pairs.
func (o Options) settings(extra map[string]string) []string {
	all := map[string]string{
		"fsync":              "off",
		"synchronous_commit": "off",
		"full_page_writes":   "off",
		"max_connections":    "200",
	}
	maps.Copy(all, extra)
	maps.Copy(all, o.Settings)
	out := make([]string, 0, len(all))
	for _, k := range slices.Sorted(maps.Keys(all)) {
		out = append(out, k+"="+all[k])
	}
	return out
}

// Server is a running PostgreSQL server. Its methods are safe for concurrent
// use.
type Server struct {
	// URL connects to the server's "postgres" database as a superuser, e.g.
	// postgres://postgres@127.0.0.1:41234/postgres?sslmode=disable. For the
	// env kind it is the value of EnvDatabaseURL.
	URL string

	// Kind says where the server comes from.
	Kind Kind

	mu     sync.Mutex
	closed bool
	b      backend
}

// backend is what differs between kinds.
type backend interface {
	close() error
	kill() error
	restart(ctx context.Context) error
}

// unavailableError means a kind cannot be used here (no binaries, no Docker
// engine, variable unset): Start tries the next kind.
type unavailableError struct{ reason string }

func (e *unavailableError) Error() string { return e.reason }

func unavailable(format string, args ...any) error {
	return &unavailableError{reason: fmt.Sprintf(format, args...)}
}

// Start returns a running server from the first kind of Options.Kinds that is
// available here. It returns an error wrapping ErrNoPostgres when no kind is
// available, and another error when one was available but failed (a docker
// failure is logged and the next kind is tried). The caller must Close the
// server.
func Start(ctx context.Context, opts Options) (*Server, error) {
	ctx, cancel := context.WithTimeout(ctx, opts.startTimeout())
	defer cancel()

	var reasons, todo []string
	var failures []error
	for _, kind := range opts.kinds() {
		began := time.Now()
		var s *Server
		var err error
		switch kind {
		case KindEnv:
			s, err = startEnv(ctx)
		case KindDocker:
			s, err = startDocker(ctx, opts)
		case KindLocal:
			s, err = startLocal(ctx, opts)
		default:
			return nil, fmt.Errorf("starting postgres: unknown kind %q", kind)
		}
		var unavail *unavailableError
		switch {
		case err == nil:
			opts.logf("%s server ready in %v", kind, time.Since(began).Round(time.Millisecond))
			return s, nil
		case errors.As(err, &unavail):
			opts.logf("%s: %v", kind, err)
			reasons = append(reasons, fmt.Sprintf("%s: %v", kind, err))
			if kind != KindDocker || opts.Docker != nil {
				todo = append(todo, hints[kind])
			}
		default:
			err = fmt.Errorf("starting %s postgres: %w", kind, err)
			opts.logf("%v", err)
			failures = append(failures, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	if len(failures) > 0 {
		return nil, errors.Join(failures...)
	}
	return nil, fmt.Errorf("%w: %s (%s)", ErrNoPostgres, strings.Join(todo, ", or "), strings.Join(reasons, "; "))
}

// Close stops the server and removes everything it created (data directory,
// container). For the env kind it does nothing to the server. Close is
// idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.b.close(); err != nil {
		return fmt.Errorf("closing %s postgres: %w", s.Kind, err)
	}
	return nil
}

// Kill stops a local server abruptly: every server process gets SIGKILL at
// once, as in a crash or an OOM kill. Clients see their connections break
// without a goodbye; the data directory stays, and Restart runs crash
// recovery. Transactions committed with synchronous_commit=off (the default
// here) in the last few hundred milliseconds may be lost, as in any crash with
// that setting; start the server with Settings{"synchronous_commit": "on"} when
// a test relies on every acknowledged commit surviving. Kill of a stopped
// server does nothing. Other kinds return ErrNotLocal.
func (s *Server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if err := s.b.kill(); err != nil {
		return fmt.Errorf("killing %s postgres: %w", s.Kind, err)
	}
	return nil
}

// Restart starts a local server again on the same port and data directory,
// after Kill or while it runs (then it is first stopped in fast mode), and
// waits until it accepts connections. Other kinds return ErrNotLocal.
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if err := s.b.restart(ctx); err != nil {
		return fmt.Errorf("restarting %s postgres: %w", s.Kind, err)
	}
	return nil
}

// envBackend is an existing server: nothing to stop.
type envBackend struct{}

func (envBackend) close() error                  { return nil }
func (envBackend) kill() error                   { return ErrNotLocal }
func (envBackend) restart(context.Context) error { return ErrNotLocal }

func startEnv(ctx context.Context) (*Server, error) {
	url := os.Getenv(EnvDatabaseURL)
	if url == "" {
		return nil, unavailable("%s is not set", EnvDatabaseURL)
	}
	conn, err := pgconn.Connect(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("connecting to the server named by %s: %w", EnvDatabaseURL, err)
	}
	_ = conn.Close(ctx)
	return &Server{URL: url, Kind: KindEnv, b: envBackend{}}, nil
}

// waitReady polls until url accepts a connection, ctx ends, or exited is
// closed (the server process is gone). describe adds context, such as the
// tail of the server log, to an error.
func waitReady(ctx context.Context, url string, exited <-chan struct{}, describe func(error) error) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgconn.Connect(attempt, url)
		cancel()
		if err == nil {
			_ = conn.Close(ctx)
			return nil
		}
		last = err
		select {
		case <-exited:
			return describe(errors.New("server exited during start-up"))
		case <-ctx.Done():
			return describe(fmt.Errorf("server not accepting connections: %w (last attempt: %v)", ctx.Err(), last))
		case <-tick.C:
		}
	}
}

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
