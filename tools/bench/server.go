package bench

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/internal/pgserver"
	"github.com/tasksweeper/sweeper/migrations"
)

// benchTimeout is the heartbeat timeout of every sweep the bench runs. It is
// longer than the run, so the live rows stay live however long loading takes;
// the cost of a sweep does not depend on it (stale rows are made older).
const benchTimeout = time.Hour

// server is the throwaway PostgreSQL of a run.
type server struct {
	s        *pgserver.Server
	admin    *pgxpool.Pool
	kind     string
	version  string
	dataDir  string
	settings map[string]string
	logf     func(string, ...any)
}

func startServer(ctx context.Context, cfg Config) (*server, error) {
	settings := maps.Clone(ServerSettings)
	maps.Copy(settings, cfg.Settings)
	began := time.Now()
	s, err := pgserver.Start(ctx, pgserver.Options{
		Kinds:    []pgserver.Kind{pgserver.KindDocker, pgserver.KindLocal},
		Settings: settings,
		Logf:     cfg.Logf,
	})
	if err != nil {
		return nil, fmt.Errorf("starting PostgreSQL: %w", err)
	}
	srv := &server{s: s, kind: string(s.Kind), logf: cfg.Logf}
	srv.admin, err = pgxpool.New(ctx, s.URL)
	if err != nil {
		_ = s.Close()
		return nil, err
	}
	if err := srv.admin.QueryRow(ctx, `SELECT current_setting('server_version'), current_setting('data_directory')`).Scan(&srv.version, &srv.dataDir); err != nil {
		srv.close()
		return nil, fmt.Errorf("reading server version: %w", err)
	}
	// Record what the server runs with, defaults of the server package included.
	srv.settings = map[string]string{}
	names := append(sortedKeys(settings), "fsync", "full_page_writes", "autovacuum", "max_parallel_maintenance_workers")
	for _, name := range names {
		var v string
		if err := srv.admin.QueryRow(ctx, `SELECT current_setting($1)`, name).Scan(&v); err == nil {
			srv.settings[name] = v
		}
	}
	cfg.Logf("PostgreSQL %s (%s) ready in %s, data in %s", srv.version, srv.kind, time.Since(began).Round(time.Millisecond), srv.dataDir)
	return srv, nil
}

func (s *server) close() {
	if s.admin != nil {
		s.admin.Close()
	}
	_ = s.s.Close()
}

// ledgerDB is one loaded ledger: a database of its own.
type ledgerDB struct {
	srv      *server
	name     string
	url      string
	pool     *pgxpool.Pool // for the bench's own statements
	rows     int
	version  uint // the schema version it was migrated to; 0: the latest
	loadTime time.Duration
	seq      int       // numbers the batches of rows the bench adds
	lis      *listener // the stuck notifications of the hot path drains (hotpath.go)
}

func dbURL(serverURL, name string) string {
	i := strings.LastIndex(serverURL, "/")
	q := ""
	if j := strings.Index(serverURL[i:], "?"); j >= 0 {
		q = serverURL[i+j:]
	}
	return serverURL[:i+1] + name + q
}

// loadLedger creates a database migrated to the latest schema and fills it
// with n rows: n - InFlight rows of terminal history and InFlight live
// in_progress rows, and their audit events (console_load.go). Triggers are off for the load (it is not a change to
// audit), indexes are built after the rows are in, then VACUUM ANALYZE and a
// checkpoint leave the database as a long-running one would be.
func (s *server) loadLedger(ctx context.Context, cfg Config, n int) (*ledgerDB, error) {
	return s.loadLedgerAt(ctx, cfg, n, 0)
}

// loadLedgerAt is loadLedger on a database migrated to schema version
// (0: the latest), named bench_<n> for the latest and bench_<n>_v<version>
// otherwise: the previous schema, measured beside the latest in one run.
func (s *server) loadLedgerAt(ctx context.Context, cfg Config, n int, version uint) (*ledgerDB, error) {
	began := time.Now()
	name := fmt.Sprintf("bench_%d", n)
	if version != 0 {
		name = fmt.Sprintf("bench_%d_v%d", n, version)
	}
	if _, err := s.admin.Exec(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{name}.Sanitize()); err != nil {
		return nil, err
	}
	if _, err := s.admin.Exec(ctx, `CREATE DATABASE `+pgx.Identifier{name}.Sanitize()); err != nil {
		return nil, err
	}
	db := &ledgerDB{srv: s, name: name, url: dbURL(s.s.URL, name), rows: n, version: version}
	if err := migrateTo(ctx, db.url, version); err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(db.url)
	if err != nil {
		return nil, err
	}
	pcfg.MaxConns = 16
	if db.pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		return nil, err
	}
	s.logf("loading %d rows into %s", n, name)
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	history := n - cfg.InFlight

	// Keep the migration's index definitions, drop them, load, rebuild.
	rows, err := conn.Query(ctx, `
		SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisprimary, i.indrelid::regclass::text
		FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		WHERE i.indrelid IN ('delegations'::regclass, 'delegation_events'::regclass) ORDER BY c.relname`)
	if err != nil {
		return nil, err
	}
	type index struct {
		name, def, table string
		primary          bool
	}
	indexes, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (index, error) {
		var ix index
		err := r.Scan(&ix.name, &ix.def, &ix.primary, &ix.table)
		return ix, err
	})
	if err != nil {
		return nil, err
	}
	var pre, post []string
	for _, ix := range indexes {
		if ix.primary {
			pre = append(pre, `ALTER TABLE `+ix.table+` DROP CONSTRAINT `+ix.name)
			post = append(post, ix.def, `ALTER TABLE `+ix.table+` ADD CONSTRAINT `+ix.name+` PRIMARY KEY USING INDEX `+ix.name)
			continue
		}
		pre = append(pre, `DROP INDEX `+ix.name)
		post = append(post, ix.def)
	}
	// For the breakdown of a sweep run by statement; absent on servers
	// without the library preloaded, which only loses the breakdown.
	_, _ = conn.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`)
	// The audit log's transactions take ids below any handed out after
	// the load (see console_load.go).
	t0 := time.Now()
	maxTx, err := db.burnXIDs(ctx, max(loadEventCount(history, cfg.InFlight)/eventsPerTx, 1000))
	if err != nil {
		return nil, err
	}
	s.logf("  %d transaction ids used up in %s", maxTx, time.Since(t0).Round(time.Millisecond))
	type stmt struct {
		sql  string
		args []any
	}
	var stmts []stmt
	add := func(sqls ...string) {
		for _, q := range sqls {
			stmts = append(stmts, stmt{sql: q})
		}
	}
	add(`SET session_replication_role = replica`, `SET maintenance_work_mem = '1GB'`, `SET work_mem = '256MB'`)
	add(pre...)
	stmts = append(stmts,
		// History: terminal rows spread over the last weeks, some of them
		// second attempts; in flight: live rows of mixed heartbeat
		// timeouts; the audit log of both.
		stmt{historyInsertSQL, []any{history, retryEvery}},
		stmt{liveInsertSQL, []any{cfg.InFlight, shortTimeout.Seconds(), longTimeout.Seconds()}},
		stmt{eventsInsertSQL, []any{history, maxTx, loadEventCount(history, cfg.InFlight)}},
	)
	add(post...)
	add(`RESET work_mem`, `SET session_replication_role = DEFAULT`, `VACUUM (ANALYZE) delegations`, `VACUUM (ANALYZE) delegation_events`, `CHECKPOINT`)
	for _, st := range stmts {
		t0 := time.Now()
		if _, err := conn.Exec(ctx, st.sql, st.args...); err != nil {
			return nil, fmt.Errorf("%s: %w", firstLine(st.sql), err)
		}
		if d := time.Since(t0); d > 5*time.Second {
			s.logf("  %s: %s", firstLine(st.sql), d.Round(time.Second))
		}
	}
	db.loadTime = time.Since(began)
	s.logf("loaded %d rows in %s", n, db.loadTime.Round(time.Millisecond))
	return db, nil
}

// migrateTo migrates the empty database at url to version (0: the latest).
func migrateTo(ctx context.Context, url string, version uint) error {
	if version == 0 {
		return migrations.Up(ctx, url)
	}
	mg, err := migrations.Open(url)
	if err != nil {
		return err
	}
	defer mg.Close()
	return mg.Steps(int(version))
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

func (db *ledgerDB) drop(ctx context.Context) {
	db.pool.Close()
	if _, err := db.srv.admin.Exec(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{db.name}.Sanitize()+` WITH (FORCE)`); err != nil {
		db.srv.logf("dropping %s: %v", db.name, err)
	}
}

func (db *ledgerDB) sizes(ctx context.Context) (table, indexes int64) {
	_ = db.pool.QueryRow(ctx, `SELECT pg_table_size('delegations'), pg_indexes_size('delegations')`).Scan(&table, &indexes)
	return table, indexes
}

// addStale inserts n in_progress rows whose heartbeat is older than
// benchTimeout (eligible for the heartbeat rule), with triggers off, and
// returns their id prefix. With vacuum, VACUUM ANALYZE follows, as
// autovacuum would have run while such a backlog built up.
func (db *ledgerDB) addStale(ctx context.Context, n int, vacuum bool) (string, error) {
	db.seq++
	prefix := fmt.Sprintf("e%d-", db.seq)
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Release()
	stmts := []string{
		`SET session_replication_role = replica`,
		fmt.Sprintf(`
		INSERT INTO delegations (delegation_id, caller_id, callee_id, task_preview, status, last_heartbeat, deadline, created_at)
		SELECT '%s' || g, 'caller-' || (g %% 97), 'callee-' || (g %% 89), 'stale task number ' || g, 'in_progress',
		       now() - interval '2 hours' - make_interval(secs => g %% 600), now() + interval '6 hours',
		       now() - interval '3 hours'
		FROM generate_series(1, %d) g`, prefix, n),
		`SET session_replication_role = DEFAULT`,
	}
	if vacuum {
		stmts = append(stmts, `VACUUM (ANALYZE) delegations`)
	}
	for _, st := range stmts {
		if _, err := conn.Exec(ctx, st); err != nil {
			return "", fmt.Errorf("adding stale rows: %w", err)
		}
	}
	return prefix, nil
}

// vacuum vacuums the delegations before a measurement (why names it in
// the error): each configuration then starts from the same table state,
// not from the dead row versions the one before left, and no autovacuum
// falls due in the middle of it.
func (db *ledgerDB) vacuum(ctx context.Context, why string) error {
	if _, err := db.pool.Exec(ctx, `VACUUM delegations`); err != nil {
		return fmt.Errorf("vacuum before %s: %w", why, err)
	}
	return nil
}

func (db *ledgerDB) count(ctx context.Context, sql string, args ...any) (int, error) {
	var n int
	err := db.pool.QueryRow(ctx, sql, args...).Scan(&n)
	return n, err
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// describeMachine reads the CPU count and model, memory and kernel.
func describeMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				m.MemoryGiB = kb / (1 << 20)
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// loadAverage returns the 1, 5 and 15 minute load averages.
func loadAverage() []string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return nil
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return nil
	}
	return f[:3]
}
