// Package daemon wires sweeper's long-running process: the connection pool,
// the schema check, the scheduled sweeper, the HTTP server for /metrics,
// /healthz and /readyz, and the ordered shutdown on SIGINT/SIGTERM.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/tasksweeper/sweeper/console"
	"github.com/tasksweeper/sweeper/internal/config"
	"github.com/tasksweeper/sweeper/internal/startstop"
	"github.com/tasksweeper/sweeper/migrations"
	"github.com/tasksweeper/sweeper/sweep"
)

// ConnectTimeout bounds the first connection at start-up.
const ConnectTimeout = 10 * time.Second

// ErrGraceExceeded is returned when the running batch did not finish within
// the shutdown grace period.
var ErrGraceExceeded = errors.New("shutdown grace period exceeded; the running batch is left to PostgreSQL to roll back")

// OpenPool connects to the configured database and checks it answers. Errors
// name the database as config.DisplayDSN renders it, never the password.
//
// Its connections use database.query_exec_mode (config.DatabaseConfig.ExecMode):
// under database.pooler transaction, exec or simple_protocol, which leave no
// prepared statement on the server connection, so that the pooler may hand
// each transaction to another one. Nothing else of sweeper's relies on
// session state: the sweep's settings are transaction-local (SET LOCAL), and
// the two session uses, migrations and the API feed's LISTEN, take their own
// direct connections (database.migrate_url, database.listen_url).
func OpenPool(ctx context.Context, cfg config.Config) (*pgxpool.Pool, error) {
	pcfg, err := poolConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("database.url: invalid connection string (value not shown: it may contain a password)")
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("creating connection pool: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, ConnectTimeout)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to database %s: %w", config.DisplayDSN(cfg.Database.URL), ExplainPooler(err))
	}
	return pool, nil
}

// poolConfig is the pool configuration of cfg.Database.URL: its size, exec
// mode, connect timeout and application_name. Its error is pgx's, which
// may quote the password: callers replace it.
func poolConfig(cfg config.Config) (*pgxpool.Config, error) {
	pcfg, err := pgxpool.ParseConfig(cfg.Database.URL)
	if err != nil {
		return nil, err
	}
	pcfg.MaxConns = int32(cfg.Database.MaxConns)
	pcfg.ConnConfig.DefaultQueryExecMode = cfg.Database.ExecMode()
	if pcfg.ConnConfig.ConnectTimeout == 0 {
		pcfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	if pcfg.ConnConfig.RuntimeParams["application_name"] == "" {
		pcfg.ConnConfig.RuntimeParams["application_name"] = "sweeper"
	}
	return pcfg, nil
}

// EnsureSchema checks the schema is the version this build expects. With
// migrate.auto it migrates a schema that is behind; a dirty schema is always
// the operator's to repair.
func EnsureSchema(ctx context.Context, pool *pgxpool.Pool, cfg config.Config, log *zap.Logger) error {
	st, err := migrations.ReadState(ctx, pool)
	if err != nil {
		return ExplainPooler(err)
	}
	if st.Current() {
		return nil
	}
	if !cfg.Migrate.Auto || st.Dirty || st.Version > migrations.Latest {
		return fmt.Errorf("refusing to start: %s", st.Problem())
	}
	// Migrations hold a session advisory lock: never through a
	// transaction pooler (database.migrate_url or refuse).
	dsn, err := cfg.Database.MigrationURL()
	if err != nil {
		return fmt.Errorf("refusing to migrate (migrate.auto): %w", err)
	}
	log.Info("migrating schema", zap.Uint("from_version", st.Version), zap.Uint("to_version", migrations.Latest))
	if err := migrations.Up(ctx, dsn); err != nil {
		return err
	}
	return nil
}

// SweepConfig maps the daemon's configuration onto the sweeper's.
func SweepConfig(cfg config.Config, log *zap.Logger) sweep.Config {
	return sweep.Config{
		HeartbeatTimeout: cfg.Sweep.HeartbeatTimeout,
		ProgressTimeout:  cfg.Sweep.ProgressTimeout,
		QueueTimeout:     cfg.Sweep.QueueTimeout,
		StartTimeout:     cfg.Sweep.StartTimeout,
		BatchSize:        cfg.Sweep.BatchSize,
		MaxBatchesPerRun: cfg.Sweep.MaxBatchesPerRun,
		NotifyChannel:    cfg.Sweep.NotifyChannel,
		DryRun:           cfg.Sweep.DryRun,
		Schedule:         cfg.Sweep.Schedule,
		Logger:           log,
	}
}

// Options are the daemon's dependencies beyond its configuration.
type Options struct {
	Logger *zap.Logger
	// OnRun, when set, also receives every run's result (sweeper dev prints it).
	OnRun func(sweep.Result, error)
	// Ready, when set, is closed once the daemon is serving and sweeping.
	Ready chan<- struct{}
	// Metrics, when set, receives the daemon's series instead of a new
	// registry (tests read it).
	Metrics *Metrics
}

// Run runs the daemon until ctx is cancelled (the caller cancels it on SIGINT
// or SIGTERM) or a service fails, then shuts down in order: stop the services
// in reverse order of their start (the sweeper, whose running batch commits
// or rolls back, then the HTTP server), then close the pool. It returns nil
// after a clean shutdown within cfg.ShutdownGrace.
func Run(ctx context.Context, cfg config.Config, opts Options) error {
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	pool, err := OpenPool(ctx, cfg)
	if err != nil {
		return err
	}
	if err := EnsureSchema(ctx, pool, cfg, log); err != nil {
		pool.Close()
		return err
	}

	metrics := opts.Metrics
	if metrics == nil {
		metrics = NewMetrics()
	}
	health := NewHealth(pool, metrics)
	scfg := SweepConfig(cfg, log)
	runs := console.NewRunTracker()
	scfg.OnRun = func(res sweep.Result, err error) {
		if IsPoolerSymptom(err) {
			log.Error("sweep failed the way it does through a transaction pooler", zap.Error(ExplainPooler(err)))
		}
		metrics.ObserveRun(res, err)
		health.RunDone(ctx, err)
		runs.RunDone(err)
		if opts.OnRun != nil {
			opts.OnRun(res, err)
		}
	}
	sweeper, err := sweep.New(pool, scfg)
	if err != nil {
		pool.Close()
		return err
	}

	// The services, started in this order and stopped in the reverse one:
	// the pruner and the sweeper stop first, and /metrics shows their last
	// runs until the end; the API listens before /metrics does, so a
	// supervisor that waits for the metrics address finds the API up too.
	var services startstop.Group
	closePools := pool.Close
	if cfg.API.Listen != "" {
		api := &apiService{cfg: cfg, pool: pool, reg: metrics.Registry, log: log, runs: runs.Runs}
		// Replica reads: only the API's and console's lists and summaries;
		// the sweep, the pruner and every write keep to pool.
		if cfg.Database.ReadURL != "" {
			router, err := NewReadRouter(ctx, pool, cfg, ReadRouterConfig{
				MaxLag: cfg.Database.ReadMaxLag, Metrics: metrics, Logger: log.Named("replica"),
			})
			if err != nil {
				pool.Close()
				return err
			}
			closePools = func() { router.Close(); pool.Close() }
			api.reads = router
			services.Add("read router", router)
		}
		services.Add("api server", api)
	}
	if cfg.HTTP.Listen != "" {
		srv, err := NewHTTPServer(cfg.HTTP.Listen, health.Handler(), cfg.ShutdownGrace, log)
		if err != nil {
			closePools()
			return err
		}
		services.Add("http server", srv)
	}
	services.Add("sweeper", sweeper)
	pruner, err := newPruner(pool, cfg, metrics, log)
	if err != nil {
		closePools()
		return err
	}
	services.Add("pruner", pruner)
	if err := services.Start(ctx); err != nil {
		closePools()
		return err
	}
	log.Info("sweeper started",
		zap.String("schedule", scfg.Schedule),
		zap.Duration("heartbeat_timeout", scfg.HeartbeatTimeout),
		zap.Int("batch_size", scfg.BatchSize),
		zap.Bool("dry_run", scfg.DryRun))
	if opts.Ready != nil {
		close(opts.Ready)
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-services.Failed():
	}

	log.Info("shutting down", zap.Duration("grace", cfg.ShutdownGrace))
	if err := services.Stop(cfg.ShutdownGrace); err != nil {
		// Leave the pool open: closing it waits for the stuck batch's
		// connection. Exiting drops the connection; PostgreSQL rolls back.
		return errors.Join(runErr, ErrGraceExceeded)
	}
	closePools()
	log.Info("stopped")
	return runErr
}
