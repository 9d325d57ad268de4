package retention

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/robfig/cron/v3"
	"go.uber.org/zap"

	"github.com/tasksweeper/sweeper/internal/cronsched"
	"github.com/tasksweeper/sweeper/internal/telemetry"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
)

// Day is 24 hours, the unit retentions are usually written in ("30d").
const Day = 24 * time.Hour

// Defaults for Config's zero values.
const (
	CompletedDefault    = 30 * Day
	FailedDefault       = 90 * Day
	StuckDefault        = 90 * Day
	ScheduleDefault     = "@every 1h"
	BatchSizeDefault    = 1000
	BatchTimeoutDefault = time.Minute
)

// KeepForever, as a retention, keeps the delegations of that status for
// ever. Any negative retention means the same.
const KeepForever time.Duration = -1

// MinRetention is the shortest retention accepted (the database function
// refuses shorter ones too): a terminal delegation stays readable for at
// least this long, so a caller that polls for its result finds it.
const MinRetention = time.Hour

// OverdueCountCap bounds the count of Result.OverdueRows: beyond it the
// count reads this figure (the pass is far behind either way).
const OverdueCountCap = 100000

// Statuses are the terminal statuses, the only ones pruned, in the order a
// pass prunes them.
var Statuses = []string{"completed", "failed", "stuck"}

// Config configures a Pruner. Zero values take the defaults above.
type Config struct {
	// Completed, Failed and Stuck are the retentions: a delegation with that
	// status is deleted once its finished_at is older than this (by the
	// database clock). KeepForever (or any negative value) keeps them.
	Completed, Failed, Stuck time.Duration
	// Schedule is the robfig/cron spec of Start, in UTC.
	Schedule string
	// BatchSize bounds the delegations deleted per transaction (their events
	// go with them, in the same transaction).
	BatchSize int
	// ArchiveDir, when set, is where each batch is written as gzip JSON
	// Lines, fsynced, before its delete commits. It is created if missing.
	ArchiveDir string
	// DryRun counts what a pass would delete and deletes nothing.
	DryRun bool
	// BatchTimeout bounds one batch's transaction. A batch that has started
	// commits or rolls back within it, even when the context is cancelled.
	BatchTimeout time.Duration
	// Logger receives the pruner's logs; zap.NewNop() when nil.
	Logger *zap.Logger
	// OnRun, when set, is called after every scheduled run with its result
	// (for metrics). It must not block.
	OnRun func(Result, error)
}

// retention returns the retention of a terminal status, negative to keep.
func (c Config) retention(status string) time.Duration {
	switch status {
	case "completed":
		return c.Completed
	case "failed":
		return c.Failed
	case "stuck":
		return c.Stuck
	}
	return KeepForever
}

// Result is what one pass did (or, in a dry run, would do).
type Result struct {
	// Pruned is the number of delegations deleted, by status in ByStatus
	// (every terminal status is a key).
	Pruned   int
	ByStatus map[string]int
	// EventsPruned is the number of their events deleted with them.
	EventsPruned int
	// Batches is the number of batch transactions that deleted rows.
	Batches int
	// ArchiveFiles and ArchiveBytes are the archive files written and their
	// compressed size.
	ArchiveFiles int
	ArchiveBytes int64
	DryRun       bool
	Duration     time.Duration
	// OverdueRows and OverdueSeconds, read after the pass for each status
	// that has a retention: the rows still eligible (up to OverdueCountCap)
	// and how long the oldest of them has been eligible. Both near 0 after a
	// pass that kept up.
	OverdueRows    map[string]int64
	OverdueSeconds map[string]float64
}

func newResult(dryRun bool) Result {
	r := Result{DryRun: dryRun, ByStatus: map[string]int{},
		OverdueRows: map[string]int64{}, OverdueSeconds: map[string]float64{}}
	for _, s := range Statuses {
		r.ByStatus[s] = 0
	}
	return r
}

// Pruner deletes terminal delegations past their retention. Call RunOnce
// for one pass, or Start/Stop to prune on a schedule.
type Pruner struct {
	pool  *pgxpool.Pool
	cfg   Config
	log   *zap.Logger
	sched cron.Schedule // cfg.Schedule, parsed by New

	mu      sync.Mutex
	started bool
	cron    *cron.Cron
	cancel  context.CancelFunc
	running sync.WaitGroup
}

// New returns a Pruner over pool with cfg's zero values filled in, or an
// error naming what is wrong with cfg.
func New(pool *pgxpool.Pool, cfg Config) (*Pruner, error) {
	cfg.Completed = cmp.Or(cfg.Completed, CompletedDefault)
	cfg.Failed = cmp.Or(cfg.Failed, FailedDefault)
	cfg.Stuck = cmp.Or(cfg.Stuck, StuckDefault)
	cfg.Schedule = cmp.Or(cfg.Schedule, ScheduleDefault)
	cfg.BatchSize = cmp.Or(cfg.BatchSize, BatchSizeDefault)
	cfg.BatchTimeout = cmp.Or(cfg.BatchTimeout, BatchTimeoutDefault)
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	for _, s := range Statuses {
		if r := cfg.retention(s); r >= 0 && r < MinRetention {
			return nil, fmt.Errorf("retention: the %s retention must be at least %s, or negative to keep for ever; got %s",
				s, MinRetention, r)
		}
	}
	switch {
	case cfg.BatchSize < 0:
		return nil, fmt.Errorf("retention: batch size must be positive, got %d", cfg.BatchSize)
	case cfg.BatchTimeout < 0:
		return nil, fmt.Errorf("retention: batch timeout must be positive, got %s", cfg.BatchTimeout)
	}
	sched, err := cronsched.Parse(cfg.Schedule)
	if err != nil {
		return nil, fmt.Errorf("retention: schedule %q %w", cfg.Schedule, err)
	}
	return &Pruner{pool: pool, cfg: cfg, log: cfg.Logger, sched: sched}, nil
}

// Config returns the pruner's configuration with defaults filled in.
func (p *Pruner) Config() Config { return p.cfg }

// seconds is a retention as the statements take it: seconds, nil to keep.
func seconds(d time.Duration) *float64 {
	if d < 0 {
		return nil
	}
	s := d.Seconds()
	return &s
}

// policy is the three retentions as sweeper_prune takes them.
func (p *Pruner) policy() []any {
	return []any{seconds(p.cfg.Completed), seconds(p.cfg.Failed), seconds(p.cfg.Stuck)}
}

// RunOnce runs one full pass: for each terminal status with a retention,
// batches until none is left. Cancelling ctx stops it between batches; a
// batch already started commits or rolls back first.
func (p *Pruner) RunOnce(ctx context.Context) (res Result, err error) {
	ctx, span := telemetry.Tracer().Start(ctx, "prune pass")
	defer func() {
		span.SetAttributes(attribute.Bool("sweeper.dry_run", res.DryRun))
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, "prune failed")
		}
		span.End()
	}()
	start := time.Now()
	res = newResult(p.cfg.DryRun)
	if p.cfg.DryRun {
		err = p.dryRun(ctx, &res)
	} else {
		err = p.prune(ctx, &res)
	}
	if err == nil {
		err = p.readOverdue(ctx, &res)
	}
	res.Duration = time.Since(start)
	return res, err
}

func (p *Pruner) prune(ctx context.Context, res *Result) error {
	for _, status := range Statuses {
		keep := p.cfg.retention(status)
		if keep < 0 {
			continue
		}
		for {
			if err := ctx.Err(); err != nil {
				return err
			}
			n, err := p.runBatch(ctx, status, keep, res)
			if err != nil {
				return err
			}
			if n < p.cfg.BatchSize {
				break
			}
		}
	}
	return nil
}

// runBatch deletes up to BatchSize eligible delegations of status, with
// their events, in one transaction (archived first when ArchiveDir is set),
// and returns how many it claimed.
func (p *Pruner) runBatch(ctx context.Context, status string, keep time.Duration, res *Result) (int, error) {
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.BatchTimeout)
	defer cancel()
	var claimed, events int
	var file ArchiveFile
	err := pgx.BeginFunc(bctx, p.pool, func(tx pgx.Tx) error {
		claimed, events, file = 0, 0, ArchiveFile{}
		if _, err := tx.Exec(bctx, jitOffSQL); err != nil {
			return err
		}
		var rows pgx.Rows
		var err error
		if p.cfg.ArchiveDir == "" {
			rows, err = tx.Query(bctx, pruneBatchSQL, append([]any{status, keep.Seconds(), p.cfg.BatchSize}, p.policy()...)...)
		} else {
			var ids []string
			ids, file, err = p.archive(bctx, tx, status, keep)
			if err != nil || len(ids) == 0 {
				return err
			}
			rows, err = tx.Query(bctx, pruneIDsSQL, append([]any{ids}, p.policy()...)...)
		}
		if err != nil {
			return err
		}
		for rows.Next() {
			var st string
			var n, ev int
			if err := rows.Scan(&st, &n, &ev); err != nil {
				return err
			}
			claimed += n
			events += ev
		}
		return rows.Err()
	})
	if err != nil {
		return 0, fmt.Errorf("pruning %s delegations: %w", status, err)
	}
	if file.Path != "" {
		res.ArchiveFiles++
		res.ArchiveBytes += file.Bytes
	}
	if claimed > 0 {
		res.Batches++
		res.Pruned += claimed
		res.ByStatus[status] += claimed
		res.EventsPruned += events
	}
	return claimed, nil
}

// archive claims a batch of status in tx and writes it to a new archive
// file, synced, returning the claimed ids. No file is written for an empty
// batch.
func (p *Pruner) archive(ctx context.Context, tx pgx.Tx, status string, keep time.Duration) ([]string, ArchiveFile, error) {
	rows, err := tx.Query(ctx, claimArchiveSQL, status, keep.Seconds(), p.cfg.BatchSize)
	if err != nil {
		return nil, ArchiveFile{}, err
	}
	var ids, lines []string
	for rows.Next() {
		var id, line string
		if err := rows.Scan(&id, &line); err != nil {
			rows.Close()
			return nil, ArchiveFile{}, err
		}
		ids = append(ids, id)
		lines = append(lines, line)
	}
	if err := rows.Err(); err != nil {
		return nil, ArchiveFile{}, err
	}
	if len(ids) == 0 {
		return nil, ArchiveFile{}, nil
	}
	f, err := WriteArchive(p.cfg.ArchiveDir, status, lines)
	if err != nil {
		return nil, ArchiveFile{}, err
	}
	return ids, f, nil
}

func (p *Pruner) dryRun(ctx context.Context, res *Result) error {
	for _, status := range Statuses {
		keep := p.cfg.retention(status)
		if keep < 0 {
			continue
		}
		var n, ev int
		if err := p.pool.QueryRow(ctx, countEligibleSQL, status, keep.Seconds()).Scan(&n, &ev); err != nil {
			return fmt.Errorf("counting %s delegations to prune: %w", status, err)
		}
		res.Pruned += n
		res.ByStatus[status] += n
		res.EventsPruned += ev
	}
	return nil
}

func (p *Pruner) readOverdue(ctx context.Context, res *Result) error {
	for _, status := range Statuses {
		keep := p.cfg.retention(status)
		if keep < 0 {
			continue
		}
		var n int64
		var secs float64
		if err := p.pool.QueryRow(ctx, overdueSQL, status, keep.Seconds(), OverdueCountCap).Scan(&n, &secs); err != nil {
			return fmt.Errorf("reading overdue %s delegations: %w", status, err)
		}
		res.OverdueRows[status] = n
		res.OverdueSeconds[status] = secs
	}
	return nil
}

// Start prunes once at once, then on the configured schedule, and returns
// without waiting. Runs never overlap (a run still going when the next is
// due skips it), and a panic in a run is logged and recovered. Start on a
// started pruner is an error; Start after Stop starts again.
func (p *Pruner) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started {
		return errors.New("retention: already started")
	}
	runCtx, cancel := context.WithCancel(ctx)
	c := cronsched.New(p.log)
	id := c.Schedule(p.sched, cron.FuncJob(func() { p.scheduledRun(runCtx) }))
	c.Start()
	// The first run goes through the same chain, so a scheduled run due
	// while it is still going is skipped.
	p.running.Go(c.Entry(id).WrappedJob.Run)
	p.started, p.cron, p.cancel = true, c, cancel
	return nil
}

// Stop stops the schedule and blocks until a run in progress has ended,
// after its current batch commits or rolls back. Stop on a pruner that is
// not started does nothing, so it is safe to call twice.
func (p *Pruner) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.started {
		return
	}
	p.cancel()
	<-p.cron.Stop().Done()
	p.running.Wait()
	p.started, p.cron, p.cancel = false, nil, nil
}

// scheduledRun is one run of Start's schedule: logged, and reported to OnRun.
func (p *Pruner) scheduledRun(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	res, err := p.RunOnce(ctx)
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		err = nil // stopped between batches: not a failure
	}
	p.logRun(res, err)
	if p.cfg.OnRun != nil {
		p.cfg.OnRun(res, err)
	}
}

// logRun logs at Info only when the run deleted (or would delete) something.
func (p *Pruner) logRun(res Result, err error) {
	fields := []zap.Field{
		zap.Int("pruned", res.Pruned),
		zap.Int("completed", res.ByStatus["completed"]),
		zap.Int("failed", res.ByStatus["failed"]),
		zap.Int("stuck", res.ByStatus["stuck"]),
		zap.Int("events_pruned", res.EventsPruned),
		zap.Int("batches", res.Batches),
		zap.Int("archive_files", res.ArchiveFiles),
		zap.Int64("archive_bytes", res.ArchiveBytes),
		zap.Bool("dry_run", res.DryRun),
		zap.Duration("duration", res.Duration),
	}
	switch {
	case err != nil:
		p.log.Error("prune failed", append(fields, zap.Error(err))...)
	case res.Pruned > 0:
		p.log.Info("pruned delegations", fields...)
	default:
		p.log.Debug("prune found nothing", fields...)
	}
}
