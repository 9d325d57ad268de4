package ledger

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tasksweeper/sweeper/internal/startstop"
	"github.com/tasksweeper/sweeper/internal/testsignal"
)

// Defaults for CoalescerConfig's zero values.
const (
	CoalesceMaxBatchDefault     = 1000
	CoalesceMaxDelayDefault     = 5 * time.Millisecond
	CoalesceFlushersDefault     = 1
	CoalesceFlushTimeoutDefault = 10 * time.Second
)

// ErrCoalescerStopped is returned by Coalescer.Beat when the Coalescer is
// not running: before Start or after Stop.
var ErrCoalescerStopped = errors.New("ledger: heartbeat coalescer is not running")

// CoalescerConfig configures a Coalescer. Zero values take the defaults above.
type CoalescerConfig struct {
	// MaxBatch is the most distinct delegations one HeartbeatMany call
	// carries. A full batch is flushed at once; while every flusher is busy,
	// Beat waits for room (backpressure).
	MaxBatch int
	// MaxDelay is the longest a beat waits for its batch to fill before the
	// batch is flushed anyway (if a flusher is free).
	MaxDelay time.Duration
	// Flushers is the number of HeartbeatMany calls in flight at once (each
	// holds one connection while it runs).
	Flushers int
	// FlushTimeout bounds each HeartbeatMany call. Callers' contexts do not
	// cancel a flush: other callers share it.
	FlushTimeout time.Duration
}

// CoalescerStats counts what a Coalescer did.
type CoalescerStats struct {
	Beats   int64 // Beat calls that joined a batch
	Flushes int64 // HeartbeatMany calls
	IDs     int64 // distinct delegations sent, summed over flushes
	Errors  int64 // flushes that failed
}

// Coalescer records heartbeats from many goroutines with few statements: each
// Beat joins the batch being gathered, and a batch is sent as one
// HeartbeatMany call when it holds MaxBatch delegations or MaxDelay after its
// first beat, whichever comes first. Every caller gets the answer for its own
// delegation. It is safe for concurrent use. Start it before the first Beat
// and Stop it when done (Stop flushes what is being gathered).
//
// A beat costs its caller up to MaxDelay of waiting plus one statement; the
// database runs one statement per batch instead of one per beat (the figures
// are in docs/benchmarks.md).
type Coalescer struct {
	l         *Ledger
	cfg       CoalescerConfig
	ready     chan struct{} // a batch is full or due; buffered wake-up for flushers
	lifecycle startstop.Base

	mu      sync.Mutex
	cur     *beatBatch // the batch being gathered; nil when none
	running bool       // between Start and Stop: Beat accepts beats

	beats, flushes, ids, errs atomic.Int64

	// TestSignals are off unless a test turns them on (Init) before Start.
	TestSignals CoalescerTestSignals
}

// CoalescerTestSignals are the events of a Coalescer that tests wait on
// instead of sleeping or polling.
type CoalescerTestSignals struct {
	// Joined receives the id of every beat that joined a batch.
	Joined testsignal.Signal[string]
	// Flushed receives every batch's HeartbeatMany outcome once its
	// statement has committed or failed.
	Flushed testsignal.Signal[FlushOutcome]
}

// FlushOutcome is what one flush sent and how it ended.
type FlushOutcome struct {
	IDs int
	Err error
}

// Init turns every signal on for tb.
func (ts *CoalescerTestSignals) Init(tb testsignal.TB) {
	ts.Joined.Init(tb)
	ts.Flushed.Init(tb)
}

// beatBatch is one future HeartbeatMany call and its waiters.
type beatBatch struct {
	beats   []Beat
	callees []string       // each beat's guard (BeatFor), parallel to beats
	seen    map[string]int // index in beats
	due     bool           // MaxDelay has passed
	timer   *time.Timer    // makes the batch due
	taken   chan struct{}  // closed when a flusher takes the batch
	done    chan struct{}  // closed when the result below is set

	live map[string]Status // the live ids and their statuses
	err  error
}

// NewCoalescer returns a Coalescer over l (whose DB should be a pool:
// flushes run concurrently), with cfg's zero values filled in; Start starts
// it. It returns an error naming the field when l is nil or a value of cfg
// is negative.
func NewCoalescer(l *Ledger, cfg CoalescerConfig) (*Coalescer, error) {
	switch {
	case l == nil || l.db == nil:
		return nil, errors.New("ledger: coalescer: ledger is nil")
	case cfg.MaxBatch < 0:
		return nil, fmt.Errorf("ledger: coalescer: MaxBatch must be positive, got %d", cfg.MaxBatch)
	case cfg.MaxDelay < 0:
		return nil, fmt.Errorf("ledger: coalescer: MaxDelay must be positive, got %s", cfg.MaxDelay)
	case cfg.Flushers < 0:
		return nil, fmt.Errorf("ledger: coalescer: Flushers must be positive, got %d", cfg.Flushers)
	case cfg.FlushTimeout < 0:
		return nil, fmt.Errorf("ledger: coalescer: FlushTimeout must be positive, got %s", cfg.FlushTimeout)
	}
	cfg.MaxBatch = cmp.Or(cfg.MaxBatch, CoalesceMaxBatchDefault)
	cfg.MaxDelay = cmp.Or(cfg.MaxDelay, CoalesceMaxDelayDefault)
	cfg.Flushers = cmp.Or(cfg.Flushers, CoalesceFlushersDefault)
	cfg.FlushTimeout = cmp.Or(cfg.FlushTimeout, CoalesceFlushTimeoutDefault)
	return &Coalescer{l: l, cfg: cfg, ready: make(chan struct{}, 1)}, nil
}

// Start starts the flushers and returns at once; Beat accepts beats until
// Stop. The flushers stop when ctx is done too (after flushing what is
// being gathered), but only Stop waits for them. Start on a started
// Coalescer is an error; Start after Stop starts it again.
func (c *Coalescer) Start(ctx context.Context) error {
	runCtx, err := c.lifecycle.StartInit(ctx)
	if err != nil {
		return fmt.Errorf("ledger: coalescer: %w", err)
	}
	c.mu.Lock()
	c.running = true
	c.mu.Unlock()
	for range c.cfg.Flushers {
		c.lifecycle.Go(func() { c.flusher(runCtx) })
	}
	return nil
}

// Beat records a heartbeat of delegation id, together with the other beats
// of its batch, and reports whether the delegation is live: true when the
// heartbeat was recorded (the delegation exists and is not terminal), false
// when its worker should stop. It returns when the batch's statement has
// run, or when ctx is done (the beat may then still be recorded). An invalid
// id is refused at once with a *FieldError.
func (c *Coalescer) Beat(ctx context.Context, id string) (live bool, err error) {
	return c.BeatProgress(ctx, id, nil)
}

// BeatProgress is Beat with a progress report (see Ledger.HeartbeatProgress;
// nil leaves the stored progress as it is). Of several beats of one
// delegation in a batch, the last one's progress is recorded. An invalid
// progress is refused at once with a *FieldError, without joining a batch.
func (c *Coalescer) BeatProgress(ctx context.Context, id string, progress json.RawMessage) (live bool, err error) {
	res, err := c.BeatFor(ctx, "", id, progress)
	return res.Live, err
}

// BeatFor is BeatProgress limited to the delegations of callee calleeID
// (any when it is empty): a beat on another callee's delegation writes
// nothing and is not live, as HeartbeatBeatsFor. A live beat's result
// carries the delegation's status; a beat that is not live carries only
// Live == false (the delegation is terminal, missing or another callee's:
// the caller reads which when it needs to). The HTTP API sends a worker's
// single heartbeats through it, so the authorization costs no statement of
// its own.
func (c *Coalescer) BeatFor(ctx context.Context, calleeID, id string, progress json.RawMessage) (HeartbeatResult, error) {
	if err := checkID("delegation_id", id); err != nil {
		return HeartbeatResult{}, fmt.Errorf("heartbeat: %w", err)
	}
	if calleeID != "" {
		if err := checkID("callee_id", calleeID); err != nil {
			return HeartbeatResult{}, fmt.Errorf("heartbeat: %w", err)
		}
	}
	p, err := checkProgress("progress", progress)
	if err != nil {
		return HeartbeatResult{}, fmt.Errorf("heartbeat: %w", err)
	}
	if p != nil {
		progress = json.RawMessage(*p)
	} else {
		progress = nil
	}
	for {
		c.mu.Lock()
		if !c.running {
			c.mu.Unlock()
			return HeartbeatResult{}, ErrCoalescerStopped
		}
		b := c.cur
		if b == nil {
			b = c.newBatchLocked()
		}
		i, dup := b.seen[id]
		// A full batch, or one that has this id under another guard (one
		// id has one guard in a statement): wait until a flusher takes it
		// and join the next one.
		if (!dup && len(b.beats) >= c.cfg.MaxBatch) || (dup && b.callees[i] != calleeID) {
			taken := b.taken
			if dup {
				b.due = true // do not wait MaxDelay for it
				c.wake()
			}
			c.mu.Unlock()
			select {
			case <-taken:
				continue
			case <-ctx.Done():
				return HeartbeatResult{}, ctx.Err()
			}
		}
		if dup {
			if progress != nil {
				b.beats[i].Progress = progress
			}
		} else {
			b.seen[id] = len(b.beats)
			b.beats = append(b.beats, Beat{ID: id, Progress: progress})
			b.callees = append(b.callees, calleeID)
			if len(b.beats) == c.cfg.MaxBatch {
				c.wake()
			}
		}
		c.beats.Add(1)
		c.mu.Unlock()
		c.TestSignals.Joined.Signal(id)

		select {
		case <-b.done:
			if b.err != nil {
				return HeartbeatResult{}, b.err
			}
			st, live := b.live[id]
			return HeartbeatResult{Live: live, Status: st}, nil
		case <-ctx.Done():
			return HeartbeatResult{}, ctx.Err()
		}
	}
}

// newBatchLocked starts the batch being gathered; c.mu is held.
func (c *Coalescer) newBatchLocked() *beatBatch {
	b := &beatBatch{
		beats:   make([]Beat, 0, min(c.cfg.MaxBatch, 1024)),
		callees: make([]string, 0, min(c.cfg.MaxBatch, 1024)),
		seen:    make(map[string]int, min(c.cfg.MaxBatch, 1024)),
		taken:   make(chan struct{}),
		done:    make(chan struct{}),
	}
	b.timer = time.AfterFunc(c.cfg.MaxDelay, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		b.due = true
		if c.cur == b {
			c.wake()
		}
	})
	c.cur = b
	return b
}

// wake tells a flusher that the current batch is ready; c.mu is held.
func (c *Coalescer) wake() {
	select {
	case c.ready <- struct{}{}:
	default: // a wake-up is already pending; it will find this batch
	}
}

// takeLocked returns the current batch if it is full, due, or stopping; c.mu is held.
func (c *Coalescer) takeLocked(stopping bool) *beatBatch {
	b := c.cur
	if b == nil || !(b.due || stopping || len(b.beats) >= c.cfg.MaxBatch) {
		return nil
	}
	c.cur = nil
	b.timer.Stop()
	close(b.taken)
	return b
}

func (c *Coalescer) flusher(ctx context.Context) {
	for {
		select {
		case <-c.ready:
		case <-ctx.Done():
			c.mu.Lock()
			// No beat joins once the flushers stop: the last batch is final.
			c.running = false
			b := c.takeLocked(true)
			c.mu.Unlock()
			if b != nil {
				c.flush(b)
			}
			return
		}
		c.mu.Lock()
		b := c.takeLocked(false)
		c.mu.Unlock()
		if b != nil {
			c.flush(b)
		}
	}
}

func (c *Coalescer) flush(b *beatBatch) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.FlushTimeout)
	defer cancel()
	b.live, b.err = c.l.heartbeatGuarded(ctx, b.beats, func(i int) string { return b.callees[i] })
	c.flushes.Add(1)
	c.ids.Add(int64(len(b.beats)))
	if b.err != nil {
		c.errs.Add(1)
	}
	close(b.done)
	c.TestSignals.Flushed.Signal(FlushOutcome{IDs: len(b.beats), Err: b.err})
}

// Stop flushes the batch being gathered, waits for every flush to end and
// stops the Coalescer; Beat then returns ErrCoalescerStopped. Stop is safe
// to call twice and on a Coalescer never started.
func (c *Coalescer) Stop() {
	c.mu.Lock()
	c.running = false
	c.mu.Unlock()
	c.lifecycle.Stop()
}

// Stats returns what the Coalescer did so far.
func (c *Coalescer) Stats() CoalescerStats {
	return CoalescerStats{
		Beats:   c.beats.Load(),
		Flushes: c.flushes.Load(),
		IDs:     c.ids.Load(),
		Errors:  c.errs.Load(),
	}
}
