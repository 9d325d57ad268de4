// Package testdb gives each test its own PostgreSQL database, migrated to the
// latest schema, on one throwaway server per test binary (see pgserver for how
// the server is found; testdb gives it the Docker client, pgdocker).
//
// Use it from TestMain so the server is stopped when the tests end:
//
//	func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }
//
//	func TestSomething(t *testing.T) {
//		t.Parallel()
//		db := testdb.New(t) // db.Pool, db.URL; dropped when the test ends
//		...
//	}
//
// The server starts on the first New; a template database is then migrated
// once, and each New copies it (CREATE DATABASE ... TEMPLATE), which takes
// tens of milliseconds.
//
// When no PostgreSQL can be found, New skips the test with a message saying
// how to get one, unless SWEEPER_REQUIRE_DB=1 (set by `make test` and CI),
// where it fails the test. Any other error (a server that fails to start, a
// migration that fails) always fails the test.
package testdb

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/internal/pgserver"
	"github.com/tasksweeper/sweeper/internal/pgserver/pgdocker"
	"github.com/tasksweeper/sweeper/migrations"
)

// EnvRequireDB is the environment variable that, set to 1 (or true), makes
// tests fail instead of skip when no PostgreSQL is found.
const EnvRequireDB = "SWEEPER_REQUIRE_DB"

// namePrefix starts the name of every database this package creates. On a
// shared server (SWEEPER_TEST_DATABASE_URL) leftovers of killed runs older than
// staleAfter are dropped; the creation time is in the name.
const (
	namePrefix = "sweeper_t"
	staleAfter = 24 * time.Hour
)

// opTimeout bounds each database operation of this package.
const opTimeout = 2 * time.Minute

// DB is a database of one test.
type DB struct {
	// Name is the database name.
	Name string
	// URL connects to the database as a superuser, for a second pool or for
	// the sweeper binary under test.
	URL string
	// Pool is a pool on the database, closed when the test ends.
	Pool *pgxpool.Pool
}

// shared is the server of this test binary, set up by the first New.
var shared struct {
	mu       sync.Mutex
	done     bool
	err      error
	server   *pgserver.Server
	admin    *pgxpool.Pool // on the server's maintenance database
	template string        // migrated template database; "" until made
}

var dbCounter atomic.Int64

// Main runs the tests of a package and then stops the shared server, if a test
// started it. Use it as the body of TestMain: os.Exit(testdb.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	if err := shutdown(); err != nil {
		fmt.Fprintln(os.Stderr, "testdb:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// MainCheckingLeaks is Main for packages that start goroutines: after the
// tests pass it fails the run if any goroutine outlived them (goleak).
func MainCheckingLeaks(m *testing.M) int {
	code := Main(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left running:", err)
			code = 1
		}
	}
	return code
}

// New creates a database for t, migrated to the latest schema, and drops it
// when t ends.
func New(t testing.TB) *DB {
	t.Helper()
	return create(t, true)
}

// NewEmpty creates an empty database for t (no migration applied), for tests
// of the migrations themselves, and drops it when t ends.
func NewEmpty(t testing.TB) *DB {
	t.Helper()
	return create(t, false)
}

// Server returns the shared server of this test binary, starting it if
// needed, with the same skip-or-fail behaviour as New. Do not stop or kill it:
// other tests use it; for fault tests start a server of your own with
// StartServer.
func Server(t testing.TB) *pgserver.Server {
	t.Helper()
	if err := setup(false); err != nil {
		skipOrFail(t, err)
	}
	return shared.server
}

// StartServer starts a server for t alone, with the same skip-or-fail
// behaviour as New, and closes it when t ends. Fault tests use it with
// Kinds: []pgserver.Kind{pgserver.KindLocal} to Kill and Restart the server.
func StartServer(t testing.TB, opts pgserver.Options) *pgserver.Server {
	t.Helper()
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	if opts.Docker == nil {
		opts.Docker = pgdocker.Client{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	s, err := pgserver.Start(ctx, opts)
	if err != nil {
		skipOrFail(t, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("testdb: %v", err)
		}
	})
	return s
}

// StartPgBouncer starts a pgbouncer (transaction pooling unless opts say
// otherwise) in front of the shared server for t alone, and closes it when t
// ends. Connect through it with (*pgserver.PgBouncer).URLFor(db.URL). When
// pgbouncer is not installed the test skips, or fails under
// SWEEPER_REQUIRE_DB=1 (CI installs it: apt-get install pgbouncer).
func StartPgBouncer(t testing.TB, opts pgserver.PgBouncerOptions) *pgserver.PgBouncer {
	t.Helper()
	srv := Server(t)
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	b, err := pgserver.StartPgBouncer(ctx, srv, opts)
	if err != nil {
		if required, _ := strconv.ParseBool(os.Getenv(EnvRequireDB)); errors.Is(err, pgserver.ErrNoPgBouncer) && !required {
			t.Skipf("testdb: %v", err)
		}
		t.Fatalf("testdb: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("testdb: %v", err)
		}
	})
	return b
}

// ViaPgBouncer returns db.URL through b: the same database and user.
func (db *DB) ViaPgBouncer(t testing.TB, b *pgserver.PgBouncer) string {
	t.Helper()
	u, err := b.URLFor(db.URL)
	if err != nil {
		t.Fatalf("testdb: %v", err)
	}
	return u
}

func create(t testing.TB, migrated bool) *DB {
	t.Helper()
	if err := setup(migrated); err != nil {
		skipOrFail(t, err)
	}
	template := "template0"
	if migrated {
		template = shared.template
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()

	name := newName()
	if _, err := shared.admin.Exec(ctx, "CREATE DATABASE "+ident(name)+" TEMPLATE "+ident(template)); err != nil {
		t.Fatalf("testdb: creating database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		if _, err := shared.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(name)+" WITH (FORCE)"); err != nil {
			t.Errorf("testdb: dropping database %s: %v", name, err)
		}
	})

	dbURL, err := withDatabase(shared.server.URL, name)
	if err != nil {
		t.Fatalf("testdb: %v", err)
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatalf("testdb: opening pool on %s: %v", name, err)
	}
	t.Cleanup(pool.Close) // runs before the drop above
	if err := pool.Ping(ctx); err != nil {
		t.Fatalf("testdb: connecting to %s: %v", name, err)
	}
	return &DB{Name: name, URL: dbURL, Pool: pool}
}

// setup starts the shared server and, when migrated is set, its template
// database. A failure is remembered: every later call returns it.
func setup(migrated bool) error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.err != nil {
		return shared.err
	}
	if shared.done {
		return fmt.Errorf("testdb: used after Main ended")
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if shared.server == nil {
		if shared.err = startShared(ctx); shared.err != nil {
			return shared.err
		}
	}
	if migrated && shared.template == "" {
		shared.err = makeTemplate(ctx)
	}
	return shared.err
}

func startShared(ctx context.Context) error {
	opts := pgserver.Options{Docker: pgdocker.Client{}}
	if testing.Verbose() {
		opts.Logf = func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	}
	s, err := pgserver.Start(ctx, opts)
	if err != nil {
		return err
	}
	cfg, err := pgxpool.ParseConfig(s.URL)
	if err != nil {
		return errors.Join(fmt.Errorf("testdb: parsing server url: %w", err), s.Close())
	}
	cfg.MaxConns = 4
	admin, err := pgxpool.NewWithConfig(ctx, cfg)
	if err == nil {
		err = admin.Ping(ctx)
	}
	if err != nil {
		return errors.Join(fmt.Errorf("testdb: connecting to the server: %w", err), s.Close())
	}
	shared.server, shared.admin = s, admin
	if s.Kind == pgserver.KindEnv {
		dropStale(ctx, admin, time.Now())
	}
	return nil
}

// makeTemplate creates and migrates the template database. The template
// allows no connections afterwards: CREATE DATABASE ... TEMPLATE fails while
// anyone is connected to it.
func makeTemplate(ctx context.Context) error {
	name := newName() + "_tpl"
	if _, err := shared.admin.Exec(ctx, "CREATE DATABASE "+ident(name)+" TEMPLATE template0"); err != nil {
		return fmt.Errorf("testdb: creating template database: %w", err)
	}
	shared.template = name // dropped by shutdown from now on
	tplURL, err := withDatabase(shared.server.URL, name)
	if err != nil {
		return fmt.Errorf("testdb: %w", err)
	}
	if err := migrations.Up(ctx, tplURL); err != nil {
		return fmt.Errorf("testdb: migrating template database: %w", err)
	}
	_, err = shared.admin.Exec(ctx, "ALTER DATABASE "+ident(name)+" WITH ALLOW_CONNECTIONS false")
	if err == nil {
		_, err = shared.admin.Exec(ctx,
			"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
	}
	if err != nil {
		return fmt.Errorf("testdb: closing template database to connections: %w", err)
	}
	return nil
}

// shutdown drops the template and stops the shared server.
func shutdown() error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	shared.done = true
	if shared.server == nil {
		return nil
	}
	var errs []error
	if shared.template != "" && shared.server.Kind == pgserver.KindEnv {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		if _, err := shared.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(shared.template)+" WITH (FORCE)"); err != nil {
			errs = append(errs, fmt.Errorf("dropping template database: %w", err))
		}
	}
	shared.admin.Close()
	if err := shared.server.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// dropStale drops databases of this package left on a shared server by runs
// that were killed more than staleAfter ago. Failures are ignored: another
// run may be dropping them too.
func dropStale(ctx context.Context, admin *pgxpool.Pool, now time.Time) {
	rows, err := admin.Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE $1`,
		strings.ReplaceAll(namePrefix, "_", `\_`)+`\_%`)
	if err != nil {
		return
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return
	}
	for _, name := range names {
		if created, ok := createdAt(name); ok && now.Sub(created) > staleAfter {
			_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(name)+" WITH (FORCE)")
		}
	}
}

// newName returns a database name unique on the server:
// sweeper_t_<unix seconds>_<pid>_<counter>.
func newName() string {
	return fmt.Sprintf("%s_%d_%d_%d", namePrefix, time.Now().Unix(), os.Getpid(), dbCounter.Add(1))
}

// createdAt parses the creation time out of a name made by newName.
func createdAt(name string) (time.Time, bool) {
	rest, ok := strings.CutPrefix(name, namePrefix+"_")
	if !ok {
		return time.Time{}, false
	}
	secs, _, _ := strings.Cut(rest, "_")
	n, err := strconv.ParseInt(secs, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(n, 0), true
}

func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

// withDatabase returns dsn (URL or key=value form) pointing at database name.
func withDatabase(dsn, name string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", errors.New("parsing server url: invalid URL (not shown: it may contain a password)")
		}
		u.Path = "/" + name
		u.RawPath = ""
		return u.String(), nil
	}
	// key=value form: a later keyword wins.
	return dsn + " dbname=" + name, nil
}

// mustSkip reports whether a test that could not get a database skips (true)
// or fails: it skips only when no PostgreSQL was found and requireDB (the value
// of SWEEPER_REQUIRE_DB) is not true.
func mustSkip(err error, requireDB string) bool {
	required, _ := strconv.ParseBool(requireDB)
	return errors.Is(err, pgserver.ErrNoPostgres) && !required
}

func skipOrFail(t testing.TB, err error) {
	t.Helper()
	if mustSkip(err, os.Getenv(EnvRequireDB)) {
		t.Skipf("testdb: %v", err)
	}
	if errors.Is(err, pgserver.ErrNoPostgres) {
		t.Fatalf("testdb: %v (%s=%s: tests need a database here)", err, EnvRequireDB, os.Getenv(EnvRequireDB))
	}
	t.Fatalf("testdb: %v", err)
}
