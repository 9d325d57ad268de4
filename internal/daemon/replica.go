package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/tasksweeper/sweeper/internal/config"
	"github.com/tasksweeper/sweeper/internal/startstop"
	"github.com/tasksweeper/sweeper/internal/testsignal"
)

// Targets of a read, the values of sweeper_read_queries_total's target label.
const (
	TargetReplica = "replica"
	TargetPrimary = "primary"
)

// Reasons a read meant for the replica went to the primary, the values of
// sweeper_read_replica_fallbacks_total's reason label.
const (
	// FallbackLag: the replica is staler than database.read_max_lag (or its
	// staleness is not known yet).
	FallbackLag = "lag"
	// FallbackUnreachable: the last check could not query the replica.
	FallbackUnreachable = "unreachable"
	// FallbackNotStandby: database.read_url is not in recovery (a promoted
	// former standby, or not a replica at all), so its data may have
	// diverged from the primary's.
	FallbackNotStandby = "not_standby"
	// FallbackError: the query failed on the replica and was run again on
	// the primary.
	FallbackError = "error"
)

// fallbackReasons lists every reason, for the metric's zero series.
var fallbackReasons = []string{FallbackLag, FallbackUnreachable, FallbackNotStandby, FallbackError}

// ReplicaCheckTimeout bounds one lag check's two queries.
const ReplicaCheckTimeout = 2 * time.Second

// ReadRouterConfig configures a ReadRouter.
type ReadRouterConfig struct {
	// MaxLag is the staleness beyond which reads go to the primary
	// (database.read_max_lag). Required.
	MaxLag time.Duration
	// Interval is how often the lag is measured;
	// config.ReplicaCheckInterval when 0.
	Interval time.Duration
	// Metrics receives the routing series; nil records none.
	Metrics *Metrics
	// Logger receives the changes of target (never per query); zap.NewNop()
	// when nil.
	Logger *zap.Logger
	// Now is the clock of the lag samples; time.Now when nil (tests set it).
	Now func() time.Time
}

// ReplicaCheck is the result of one lag check.
type ReplicaCheck struct {
	// InUse reports whether reads go to the replica until the next check.
	InUse bool
	// Reason is why they do not (one of the Fallback constants), "" when
	// InUse.
	Reason string
	// Lag is the replica's staleness: how long ago the primary had written
	// everything the replica has replayed, to within one check interval; a
	// lower bound when the replica has replayed none of the samples kept.
	// Zero when the replica could not be asked.
	Lag time.Duration
	// Err is the replica's error, for FallbackUnreachable.
	Err error
}

// lsnSample is the primary's WAL write position at a moment: every commit
// acknowledged before at lies at or before lsn.
type lsnSample struct {
	at  time.Time
	lsn int64
}

// ReadRouter sends the read-only queries given to it to a streaming replica
// while the replica is fresh, and to the primary otherwise. It is a
// ledger.DB: the API's and the console's list and summary reads run on it.
// Exec and SendBatch, what writes use, always run on the primary; Query and
// QueryRow must only be given read-only statements.
//
// Its staleness check runs every Interval, not per query: it reads the
// primary's WAL write position (pg_current_wal_lsn) and keeps the samples
// of the last MaxLag, then the replica's replay position
// (pg_last_wal_replay_lsn). The replica holds every commit the primary had
// acknowledged at the newest sample at or below its replay position, so
// its staleness is the age of that sample. An idle primary's position does
// not move, so a caught-up replica of an idle primary is never "lagging".
//
// Start runs the check; Stop ends it; Close closes the replica's pool.
type ReadRouter struct {
	startstop.Base

	primary *pgxpool.Pool
	replica *pgxpool.Pool
	cfg     ReadRouterConfig
	log     *zap.Logger

	state atomic.Pointer[ReplicaCheck]

	checkMu sync.Mutex  // one check at a time
	samples []lsnSample // oldest first; under checkMu

	// TestSignals are signals tests wait on.
	TestSignals struct {
		// Checked receives every check's result.
		Checked testsignal.Signal[ReplicaCheck]
	}
}

// NewReadRouter returns a router over primary and a pool on replicaURL
// (database.read_url), which connects lazily: a replica that is down at
// start-up only sends the reads to the primary. cfg's pooler settings
// apply to the replica too. Reads go to the primary until the first check.
func NewReadRouter(ctx context.Context, primary *pgxpool.Pool, cfg config.Config, rc ReadRouterConfig) (*ReadRouter, error) {
	if primary == nil {
		return nil, errors.New("read router: primary pool is required")
	}
	if rc.MaxLag <= 0 {
		return nil, errors.New("read router: MaxLag must be more than 0")
	}
	if rc.Interval <= 0 {
		rc.Interval = config.ReplicaCheckInterval
	}
	if rc.Logger == nil {
		rc.Logger = zap.NewNop()
	}
	if rc.Now == nil {
		rc.Now = time.Now
	}
	rcfg := cfg
	rcfg.Database.URL = cfg.Database.ReadURL
	pcfg, err := poolConfig(rcfg)
	if err != nil {
		return nil, fmt.Errorf("database.read_url: invalid connection string (value not shown: it may contain a password)")
	}
	replica, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("database.read_url: creating connection pool: %w", err)
	}
	r := &ReadRouter{primary: primary, replica: replica, cfg: rc, log: rc.Logger}
	r.state.Store(&ReplicaCheck{Reason: FallbackLag})
	rc.Metrics.setReplicaInUse(false)
	return r, nil
}

// Start checks the replica once, then every Interval until Stop or until
// ctx ends. It returns after the first check.
func (r *ReadRouter) Start(ctx context.Context) error {
	runCtx, err := r.StartInit(ctx)
	if err != nil {
		return err
	}
	r.CheckOnce(runCtx)
	r.Go(func() {
		t := time.NewTicker(r.cfg.Interval)
		defer t.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
				r.CheckOnce(runCtx)
			}
		}
	})
	return nil
}

// Close closes the replica's pool. Call it after Stop.
func (r *ReadRouter) Close() { r.replica.Close() }

// State is the last check's result.
func (r *ReadRouter) State() ReplicaCheck { return *r.state.Load() }

// CheckOnce measures the replica's staleness, decides where reads go until
// the next check, and returns the result.
func (r *ReadRouter) CheckOnce(ctx context.Context) ReplicaCheck {
	r.checkMu.Lock()
	defer r.checkMu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, ReplicaCheckTimeout)
	defer cancel()
	// The moment is taken before the query: commits acknowledged before
	// it are at or before the position read.
	at := r.cfg.Now()
	var lsn int64
	if err := r.primary.QueryRow(cctx, primaryLSNSQL).Scan(&lsn); err == nil {
		r.addSample(at, lsn)
	}
	c := r.measure(cctx)
	r.setState(c)
	r.TestSignals.Checked.Signal(c)
	return c
}

// addSample records the primary's position, forgetting the samples that
// no staleness within MaxLag could need. A position that has not moved
// only refreshes the newest sample's moment.
func (r *ReadRouter) addSample(at time.Time, lsn int64) {
	if n := len(r.samples); n > 0 && r.samples[n-1].lsn >= lsn {
		r.samples[n-1].at = at
	} else {
		r.samples = append(r.samples, lsnSample{at: at, lsn: lsn})
	}
	// Keep one sample from before the horizon: a replica that has
	// replayed none of the newer ones is then known to be at least that
	// stale.
	horizon := at.Add(-r.cfg.MaxLag - 2*r.cfg.Interval)
	drop := 0
	for drop < len(r.samples)-1 && r.samples[drop+1].at.Before(horizon) {
		drop++
	}
	r.samples = append(r.samples[:0], r.samples[drop:]...)
}

// measure asks the replica how far it has replayed and judges it.
func (r *ReadRouter) measure(ctx context.Context) ReplicaCheck {
	var standby bool
	var replayed *int64
	if err := r.replica.QueryRow(ctx, replicaLSNSQL).Scan(&standby, &replayed); err != nil {
		return ReplicaCheck{Reason: FallbackUnreachable, Err: err}
	}
	if !standby || replayed == nil {
		return ReplicaCheck{Reason: FallbackNotStandby}
	}
	now := r.cfg.Now()
	for i := len(r.samples) - 1; i >= 0; i-- {
		if s := r.samples[i]; s.lsn <= *replayed {
			lag := max(now.Sub(s.at), 0)
			if lag > r.cfg.MaxLag {
				return ReplicaCheck{Reason: FallbackLag, Lag: lag}
			}
			return ReplicaCheck{InUse: true, Lag: lag}
		}
	}
	// Not even the oldest sample is replayed (or the primary has not
	// answered yet): at least that old.
	var lag time.Duration
	if len(r.samples) > 0 {
		lag = max(now.Sub(r.samples[0].at), 0)
	}
	return ReplicaCheck{Reason: FallbackLag, Lag: lag}
}

// setState publishes c, logging a change of target.
func (r *ReadRouter) setState(c ReplicaCheck) {
	prev := r.state.Swap(&c)
	m := r.cfg.Metrics
	m.setReplicaInUse(c.InUse)
	if c.Reason != FallbackUnreachable {
		m.setReplicaLag(c.Lag)
	}
	switch {
	case c.InUse && !prev.InUse:
		r.log.Info("reads go to the replica", zap.Duration("replica_lag", c.Lag))
	case !c.InUse && (prev.InUse || prev.Reason != c.Reason):
		fields := []zap.Field{zap.String("reason", c.Reason), zap.Duration("replica_lag", c.Lag),
			zap.Duration("max_lag", r.cfg.MaxLag)}
		if c.Err != nil {
			fields = append(fields, zap.Error(c.Err))
		}
		r.log.Warn("reads go to the primary instead of the replica", fields...)
	}
}

// pick returns where the next read goes, counting it.
func (r *ReadRouter) pick() (*pgxpool.Pool, bool) {
	st := r.state.Load()
	m := r.cfg.Metrics
	if st.InUse {
		m.readQuery(TargetReplica)
		return r.replica, true
	}
	m.readFallback(st.Reason)
	m.readQuery(TargetPrimary)
	return r.primary, false
}

// replicaFailed records that a read failed on the replica and is run again
// on the primary. A failure to reach it (no PostgreSQL error) sends the
// reads to the primary until the next check says otherwise.
func (r *ReadRouter) replicaFailed(err error) {
	m := r.cfg.Metrics
	m.readFallback(FallbackError)
	m.readQuery(TargetPrimary)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		r.log.Debug("a read failed on the replica; run again on the primary", zap.Error(err))
		return
	}
	c := ReplicaCheck{Reason: FallbackUnreachable, Err: err}
	if prev := r.state.Load(); prev.InUse && r.state.CompareAndSwap(prev, &c) {
		m.setReplicaInUse(false)
		r.log.Warn("reads go to the primary instead of the replica", zap.String("reason", c.Reason), zap.Error(err))
	}
}

// Query runs a read-only query on the replica when it is fresh, else on the
// primary; one that fails on the replica before returning a row runs again
// on the primary.
func (r *ReadRouter) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	p, onReplica := r.pick()
	rows, err := p.Query(ctx, sql, args...)
	if !onReplica {
		return rows, err
	}
	if err != nil {
		if ctx.Err() != nil {
			return rows, err
		}
		r.replicaFailed(err)
		return r.primary.Query(ctx, sql, args...)
	}
	return &fallbackRows{Rows: rows, r: r, ctx: ctx, sql: sql, args: args}, nil
}

// QueryRow is Query for one row: a Scan that fails on the replica (other
// than pgx.ErrNoRows) runs the query again on the primary.
func (r *ReadRouter) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	p, onReplica := r.pick()
	row := p.QueryRow(ctx, sql, args...)
	if !onReplica {
		return row
	}
	return &fallbackRow{r: r, ctx: ctx, sql: sql, args: args, row: row}
}

// Exec runs on the primary: whatever is executed rather than queried is
// taken for a write.
func (r *ReadRouter) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return r.primary.Exec(ctx, sql, args...)
}

// SendBatch runs on the primary, like Exec: the ledger's writes are batches.
func (r *ReadRouter) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	return r.primary.SendBatch(ctx, b)
}

// fallbackRow is a replica's row whose failed Scan is retried on the primary.
type fallbackRow struct {
	r    *ReadRouter
	ctx  context.Context
	sql  string
	args []any
	row  pgx.Row
}

func (f *fallbackRow) Scan(dest ...any) error {
	err := f.row.Scan(dest...)
	if err == nil || errors.Is(err, pgx.ErrNoRows) || f.ctx.Err() != nil {
		return err
	}
	f.r.replicaFailed(err)
	return f.r.primary.QueryRow(f.ctx, f.sql, f.args...).Scan(dest...)
}

// fallbackRows are a replica's rows whose failure before the first row
// (the replica went away since the last check, a query cancelled by a
// conflict with recovery) runs the query again on the primary: nothing has
// reached the caller yet.
type fallbackRows struct {
	pgx.Rows
	r       *ReadRouter
	ctx     context.Context
	sql     string
	args    []any
	started bool
	err     error // the primary's, when the query failed to start there too
}

func (f *fallbackRows) Err() error {
	if f.err != nil {
		return f.err
	}
	return f.Rows.Err()
}

func (f *fallbackRows) Next() bool {
	if f.started {
		return f.Rows.Next()
	}
	f.started = true
	if f.Rows.Next() {
		return true
	}
	err := f.Rows.Err()
	if err == nil || f.ctx.Err() != nil {
		return false
	}
	f.Rows.Close()
	f.r.replicaFailed(err)
	rows, err := f.r.primary.Query(f.ctx, f.sql, f.args...)
	if err != nil {
		f.err = err
		return false
	}
	f.Rows = rows
	return f.Rows.Next()
}
