package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/tasksweeper/sweeper/internal/startstop"
	"github.com/tasksweeper/sweeper/internal/testsignal"
	"github.com/tasksweeper/sweeper/ledger"
)

// Defaults for PoolConfig's zero values.
const (
	PoolConcurrencyDefault  = 10
	PoolPollIntervalDefault = time.Second
	PoolStopGraceDefault    = 30 * time.Second
)

// PoolConfig configures a Pool. Zero values take the defaults above.
type PoolConfig struct {
	// CalleeID is the callee whose due work the pool claims. Required.
	CalleeID string
	// Concurrency bounds the tasks running at once.
	Concurrency int
	// PollInterval is how long the pool waits before claiming again when
	// nothing was due (a task that ends frees a slot and claims at once).
	PollInterval time.Duration
	// StopGrace is how long Stop lets running tasks finish; then their
	// contexts are cancelled (cause: ErrPoolStopped) and what they return
	// is recorded as failed. A task that ignores its context is recorded
	// failed by the pool RecordTimeout later, and Stop returns.
	StopGrace time.Duration
	// Worker configures the tasks' Worker (actor, heartbeats). The pool
	// starts a Coalescer for its tasks when Worker.Coalescer is nil.
	Worker Config
}

// ErrPoolStopped is the cause of a task's cancelled context when its Pool
// stopped and the task did not finish within PoolConfig.StopGrace.
var ErrPoolStopped = errors.New("worker pool stopped and the grace period is over")

// Pool claims due work for one callee and runs fn on each delegation with
// Run's semantics, at most Concurrency at once. Start it and Stop it like
// every service of the daemon (internal/startstop).
type Pool struct {
	l   *ledger.Ledger
	cfg PoolConfig
	fn  func(ctx context.Context, t *Task) error
	w   *Worker
	log *zap.Logger

	lifecycle startstop.Base

	// TestSignals are off unless a test turns them on (Init) before Start.
	TestSignals PoolTestSignals
}

// PoolTestSignals are the events of a Pool that tests wait on.
type PoolTestSignals struct {
	// Claimed receives the ids of each claim that took work.
	Claimed testsignal.Signal[[]string]
	// Done receives each task's id and Run's error once its outcome is
	// recorded.
	Done testsignal.Signal[TaskDone]
	// Stopping receives the number of running tasks when the pool stops
	// claiming.
	Stopping testsignal.Signal[int]
}

// TaskDone is one ended task of a Pool.
type TaskDone struct {
	DelegationID string
	Err          error
}

// Init turns every signal on for tb.
func (ts *PoolTestSignals) Init(tb testsignal.TB) {
	ts.Claimed.Init(tb)
	ts.Done.Init(tb)
	ts.Stopping.Init(tb)
}

// NewPool returns a Pool over l that runs fn for each claimed delegation,
// or an error naming what is wrong in cfg.
func NewPool(l *ledger.Ledger, cfg PoolConfig, fn func(ctx context.Context, t *Task) error) (*Pool, error) {
	switch {
	case cfg.CalleeID == "":
		return nil, errors.New("worker: pool: CalleeID is required")
	case fn == nil:
		return nil, errors.New("worker: pool: the task function is nil")
	case cfg.Concurrency < 0 || cfg.Concurrency > ledger.MaxClaimLimit:
		return nil, fmt.Errorf("worker: pool: Concurrency must be from 1 to %d, got %d", ledger.MaxClaimLimit, cfg.Concurrency)
	case cfg.PollInterval < 0:
		return nil, fmt.Errorf("worker: pool: PollInterval must be positive, got %s", cfg.PollInterval)
	case cfg.StopGrace < 0:
		return nil, fmt.Errorf("worker: pool: StopGrace must be positive, got %s", cfg.StopGrace)
	}
	cfg.Concurrency = cmp.Or(cfg.Concurrency, PoolConcurrencyDefault)
	cfg.PollInterval = cmp.Or(cfg.PollInterval, PoolPollIntervalDefault)
	cfg.StopGrace = cmp.Or(cfg.StopGrace, PoolStopGraceDefault)
	w, err := New(l, cfg.Worker)
	if err != nil {
		return nil, err
	}
	return &Pool{l: l, cfg: cfg, fn: fn, w: w, log: w.log}, nil
}

// Start starts claiming and returns at once.
func (p *Pool) Start(ctx context.Context) error {
	runCtx, err := p.lifecycle.StartInit(ctx)
	if err != nil {
		return fmt.Errorf("worker: pool: %w", err)
	}
	w := p.w
	if p.cfg.Worker.Coalescer == nil {
		c, err := ledger.NewCoalescer(p.l, ledger.CoalescerConfig{})
		if err == nil {
			err = c.Start(context.WithoutCancel(ctx))
		}
		if err != nil {
			p.lifecycle.StartFailed()
			return fmt.Errorf("worker: pool: %w", err)
		}
		cfg := p.w.cfg
		cfg.Coalescer = c
		w = &Worker{l: p.l, cfg: cfg, log: p.log}
		p.lifecycle.Go(func() {
			defer c.Stop()
			p.run(runCtx, w)
		})
		return nil
	}
	p.lifecycle.Go(func() { p.run(runCtx, w) })
	return nil
}

// Stop stops claiming, lets running tasks finish within StopGrace, then
// cancels them and waits for their outcomes to be recorded. It is safe to
// call twice and on a pool never started.
func (p *Pool) Stop() { p.lifecycle.Stop() }

// run is the claim loop: it claims while slots are free, and on stop
// winds the running tasks down.
func (p *Pool) run(ctx context.Context, w *Worker) {
	// Tasks run under a context that the pool's stop does not cancel until
	// the grace is over.
	workCtx, cancelWork := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelWork(nil)
	var (
		mu      sync.Mutex
		running = map[string]bool{}
		tasks   sync.WaitGroup
	)
	// ended wakes the loop when a task ends; one pending wake-up is enough
	// (the loop then reads how many slots are free).
	ended := make(chan struct{}, 1)
	for {
		mu.Lock()
		free := p.cfg.Concurrency - len(running)
		mu.Unlock()
		claimed := 0
		if free > 0 && ctx.Err() == nil {
			ds, err := p.l.ClaimBy(ctx, w.cfg.Actor, p.cfg.CalleeID, free)
			if err != nil && ctx.Err() == nil {
				p.log.Warn("claiming work failed", zap.String("callee_id", p.cfg.CalleeID), zap.Error(err))
			}
			claimed = len(ds)
			if claimed > 0 {
				ids := make([]string, len(ds))
				for i, d := range ds {
					ids[i] = d.DelegationID
				}
				p.TestSignals.Claimed.Signal(ids)
			}
			for _, d := range ds {
				id := d.DelegationID
				mu.Lock()
				running[id] = true
				mu.Unlock()
				tasks.Go(func() {
					err := w.Run(workCtx, id, p.fn)
					mu.Lock()
					delete(running, id)
					mu.Unlock()
					p.TestSignals.Done.Signal(TaskDone{DelegationID: id, Err: err})
					select {
					case ended <- struct{}{}:
					default:
					}
				})
			}
		}
		if claimed > 0 && claimed == free {
			continue // maybe more is due; the slots decide
		}
		var poll <-chan time.Time
		var timer *time.Timer
		if free-claimed > 0 {
			timer = time.NewTimer(p.cfg.PollInterval)
			poll = timer.C
		}
		select {
		case <-ended:
		case <-poll:
		case <-ctx.Done():
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			p.drain(ctx, &mu, running, &tasks, cancelWork, w)
			return
		}
	}
}

// drain waits for the running tasks within the grace, then cancels them
// and waits for their outcomes; a task still running after RecordTimeout
// more is recorded failed here.
func (p *Pool) drain(ctx context.Context, mu *sync.Mutex, running map[string]bool, tasks *sync.WaitGroup,
	cancelWork context.CancelCauseFunc, w *Worker) {
	mu.Lock()
	n := len(running)
	mu.Unlock()
	p.TestSignals.Stopping.Signal(n)
	all := make(chan struct{})
	go func() {
		tasks.Wait()
		close(all)
	}()
	grace := time.NewTimer(p.cfg.StopGrace)
	defer grace.Stop()
	select {
	case <-all:
		return
	case <-grace.C:
	}
	mu.Lock()
	p.log.Warn("stopping: tasks still running after the grace period; cancelling them",
		zap.Int("tasks", len(running)), zap.Duration("stop_grace", p.cfg.StopGrace))
	mu.Unlock()
	cancelWork(fmt.Errorf("%w (%s)", ErrPoolStopped, p.cfg.StopGrace))
	late := time.NewTimer(w.cfg.RecordTimeout)
	defer late.Stop()
	select {
	case <-all:
		return
	case <-late.C:
	}
	mu.Lock()
	defer mu.Unlock()
	for id := range running {
		p.log.Error("task ignored its cancelled context; recording it failed", zap.String("delegation_id", id))
		_, _ = w.record(context.WithoutCancel(ctx), id, ledger.StatusFailed,
			"worker stopped: the task did not return after its context was cancelled", "worker stopped")
	}
}
