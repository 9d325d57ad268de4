package worker

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/tasksweeper/sweeper/internal/testsignal"
	"github.com/tasksweeper/sweeper/ledger"
)

// Defaults for Config's zero values.
const (
	// ActorDefault is the audit actor of the worker's status changes.
	ActorDefault = "worker"
	// GlobalHeartbeatTimeoutDefault is the sweeper's default heartbeat
	// timeout (sweep.heartbeat_timeout): what a delegation without its own
	// heartbeat timeout is judged by.
	GlobalHeartbeatTimeoutDefault = 10 * time.Minute
	// RecordTimeoutDefault bounds the writes of a task's start and outcome.
	RecordTimeoutDefault = 10 * time.Second
)

// ErrNotLive is what a *NotLiveError matches with errors.Is: the delegation
// is terminal or gone, so its work must stop and its outcome is not the
// worker's to record.
var ErrNotLive = errors.New("delegation is no longer live")

// NotLiveError says why a delegation's work was stopped, or not started:
// the ledger answered that it is not live. It is the cause of the work's
// context (context.Cause) and what Run returns.
type NotLiveError struct {
	DelegationID string
	// Status is the delegation's status when the worker learnt it ("" when
	// the delegation no longer exists or could not be read).
	Status ledger.Status
	// StuckReason is why the sweeper marked it stuck (heartbeat_timeout,
	// deadline_exceeded, ...) when Status is stuck.
	StuckReason string
}

func (e *NotLiveError) Error() string {
	switch e.Status {
	case ledger.StatusStuck:
		return fmt.Sprintf("delegation %q was marked stuck (%s)", e.DelegationID, cmp.Or(e.StuckReason, "no reason recorded"))
	case ledger.StatusFailed:
		return fmt.Sprintf("delegation %q was failed elsewhere (by its caller or an operator)", e.DelegationID)
	case ledger.StatusCompleted:
		return fmt.Sprintf("delegation %q was completed elsewhere", e.DelegationID)
	case "":
		return fmt.Sprintf("delegation %q no longer exists", e.DelegationID)
	}
	return fmt.Sprintf("delegation %q is %s", e.DelegationID, e.Status)
}

// Is makes errors.Is(err, ErrNotLive) true.
func (e *NotLiveError) Is(target error) bool { return target == ErrNotLive }

// Config configures a Worker. Zero values take the defaults above.
type Config struct {
	// Coalescer sends the heartbeats; it must be started, over the same
	// ledger. Nil: each Run starts one of its own for its task. Share one
	// between the tasks of a process (Pool does).
	Coalescer *ledger.Coalescer
	// Actor is recorded as the actor of the worker's status changes.
	Actor string
	// GlobalHeartbeatTimeout is the sweeper's heartbeat timeout, for
	// delegations without their own: the worker beats at a third of it.
	GlobalHeartbeatTimeout time.Duration
	// HeartbeatInterval, when not 0, overrides a third of the heartbeat
	// timeout (for tests and for tuning; it should stay well under it).
	HeartbeatInterval time.Duration
	// RecordTimeout bounds the writes of a task's start and outcome; the
	// outcome is recorded even after the caller's context is done.
	RecordTimeout time.Duration
	// Logger is told of heartbeats that failed (the worker keeps beating).
	Logger *zap.Logger
}

// Worker runs tasks. It is safe for concurrent use.
type Worker struct {
	l   *ledger.Ledger
	cfg Config
	log *zap.Logger

	// TestSignals are off unless a test turns them on (Init) before Run.
	TestSignals TestSignals
}

// TestSignals are the events of a Worker that tests wait on.
type TestSignals struct {
	// Started receives a delegation's id when its work begins.
	Started testsignal.Signal[string]
	// Beat receives each heartbeat's answer.
	Beat testsignal.Signal[Beat]
}

// Init turns every signal on for tb.
func (ts *TestSignals) Init(tb testsignal.TB) {
	ts.Started.Init(tb)
	ts.Beat.Init(tb)
}

// Beat is one heartbeat's answer.
type Beat struct {
	DelegationID string
	Live         bool
	Err          error
}

// New returns a Worker over l with cfg's zero values filled in, or an error
// naming what is wrong.
func New(l *ledger.Ledger, cfg Config) (*Worker, error) {
	switch {
	case l == nil:
		return nil, errors.New("worker: ledger is nil")
	case cfg.GlobalHeartbeatTimeout < 0:
		return nil, fmt.Errorf("worker: GlobalHeartbeatTimeout must be positive, got %s", cfg.GlobalHeartbeatTimeout)
	case cfg.HeartbeatInterval < 0:
		return nil, fmt.Errorf("worker: HeartbeatInterval must be positive, got %s", cfg.HeartbeatInterval)
	case cfg.RecordTimeout < 0:
		return nil, fmt.Errorf("worker: RecordTimeout must be positive, got %s", cfg.RecordTimeout)
	}
	cfg.Actor = cmp.Or(cfg.Actor, ActorDefault)
	cfg.GlobalHeartbeatTimeout = cmp.Or(cfg.GlobalHeartbeatTimeout, GlobalHeartbeatTimeoutDefault)
	cfg.RecordTimeout = cmp.Or(cfg.RecordTimeout, RecordTimeoutDefault)
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &Worker{l: l, cfg: cfg, log: log}, nil
}

// Run runs fn for delegation id with a Worker of default Config over l: see
// Worker.Run.
func Run(ctx context.Context, l *ledger.Ledger, id string, fn func(ctx context.Context, t *Task) error) error {
	w, err := New(l, Config{})
	if err != nil {
		return err
	}
	return w.Run(ctx, id, fn)
}

// Task is the delegation a Run works on.
type Task struct {
	// Delegation is the row as it was when the work started (in_progress).
	Delegation ledger.Delegation

	mu       sync.Mutex
	result   string
	progress json.RawMessage // to send with the next beat; nil when sent
}

// ID is the delegation's id.
func (t *Task) ID() string { return t.Delegation.DelegationID }

// SetResult sets the result preview recorded when the work completes
// (truncated to ledger.MaxResultPreviewRunes).
func (t *Task) SetResult(s string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.result = s
}

// Progress sets the progress that the next heartbeat reports: v encodes as
// a JSON object (a json.RawMessage is taken as is) of at most
// ledger.MaxProgressBytes. It replaces the delegation's progress; a
// delegation whose progress stops changing for its progress timeout is
// marked stuck (stalled) however often it heartbeats. A value that is not
// a JSON object is refused here; one the ledger refuses (too large) is
// logged by the heartbeat and not recorded.
func (t *Task) Progress(v any) error {
	raw, ok := v.(json.RawMessage)
	if !ok {
		var err error
		if raw, err = json.Marshal(v); err != nil {
			return fmt.Errorf("worker: progress: %w", err)
		}
	}
	if trimmed := bytes.TrimSpace(raw); len(trimmed) == 0 || trimmed[0] != '{' || !json.Valid(trimmed) {
		return fmt.Errorf("worker: progress must be a JSON object, got %.40q", raw)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.progress = raw
	return nil
}

// takeProgress returns the progress not sent yet (nil when none).
func (t *Task) takeProgress() json.RawMessage {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.progress
	t.progress = nil
	return p
}

func (t *Task) resultText() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return text(t.result)
}

// Run works on delegation id: it moves it to in_progress (a delegation
// already in_progress is taken over), calls fn, and heartbeats until fn
// returns, at a third of the delegation's heartbeat timeout. When a
// heartbeat answers that the delegation is no longer live, fn's context is
// cancelled with a *NotLiveError cause saying why. Then it records fn's
// outcome: nil as completed (with Task.SetResult's preview), an error as
// failed (its text as error_detail), a panic as failed, after which it
// panics again. The outcome is recorded even when ctx is done by then (a
// worker shutting down records that its work was stopped).
//
// Run returns nil when it recorded completed; fn's error when it recorded
// failed; a *NotLiveError when the delegation was, or became, terminal or
// gone, so its outcome was not the worker's to record; and an error when
// the ledger could not be reached to start or record the work.
func (w *Worker) Run(ctx context.Context, id string, fn func(ctx context.Context, t *Task) error) error {
	d, err := w.start(ctx, id)
	if err != nil {
		return err
	}
	c := w.cfg.Coalescer
	if c == nil {
		own, err := ledger.NewCoalescer(w.l, ledger.CoalescerConfig{})
		if err != nil {
			return fmt.Errorf("worker: %w", err)
		}
		if err := own.Start(context.WithoutCancel(ctx)); err != nil {
			return fmt.Errorf("worker: %w", err)
		}
		defer own.Stop()
		c = own
	}

	workCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Heartbeats go on until the work has returned, even while a shutdown
	// (ctx done) waits for it: a worker finishing its task is alive.
	beatCtx, stopBeats := context.WithCancel(context.WithoutCancel(ctx))
	var beats sync.WaitGroup
	t := &Task{Delegation: d}
	beats.Go(func() { w.heartbeat(beatCtx, c, t, w.interval(d), cancel) })
	stop := func() {
		stopBeats()
		beats.Wait()
	}

	w.TestSignals.Started.Signal(id)
	panicked, pv, fnErr := call(workCtx, t, fn)
	stop()
	var nle *NotLiveError
	switch {
	case errors.As(context.Cause(workCtx), &nle) && !panicked:
		// Terminal or gone elsewhere: the outcome is not the worker's.
		return nle
	case panicked:
		_, _ = w.record(ctx, id, ledger.StatusFailed, text(fmt.Sprintf("panic: %v", pv)), "work panicked")
		panic(pv)
	case fnErr == nil:
		return w.finish(ctx, id, nil, ledger.StatusCompleted, t.resultText(), "work done")
	}
	detail := fnErr.Error()
	if ctx.Err() != nil && errors.Is(fnErr, ctx.Err()) {
		detail = "worker stopped before the work ended: " + context.Cause(ctx).Error()
	}
	return w.finish(ctx, id, fnErr, ledger.StatusFailed, text(detail), "work failed")
}

// call runs fn, catching a panic.
func call(ctx context.Context, t *Task, fn func(context.Context, *Task) error) (panicked bool, v any, err error) {
	defer func() {
		if p := recover(); p != nil {
			panicked, v = true, p
		}
	}()
	return false, nil, fn(ctx, t)
}

// start moves id to in_progress and reads it.
func (w *Worker) start(ctx context.Context, id string) (ledger.Delegation, error) {
	rctx, cancel := context.WithTimeout(ctx, w.cfg.RecordTimeout)
	defer cancel()
	res, err := w.l.SetStatus(rctx, id, ledger.StatusInProgress, ledger.Change{Actor: w.cfg.Actor, Reason: "worker started"})
	if err != nil {
		return ledger.Delegation{}, fmt.Errorf("worker: starting delegation %q: %w", id, err)
	}
	switch res.Outcome {
	case ledger.OutcomeApplied, ledger.OutcomeUnchanged:
	case ledger.OutcomeNotFound:
		return ledger.Delegation{}, fmt.Errorf("worker: starting delegation %q: %w", id, ledger.ErrNotFound)
	default:
		return ledger.Delegation{}, w.notLive(rctx, id)
	}
	d, err := w.l.Get(rctx, id)
	if errors.Is(err, ledger.ErrNotFound) {
		return ledger.Delegation{}, &NotLiveError{DelegationID: id}
	}
	if err != nil {
		return ledger.Delegation{}, fmt.Errorf("worker: reading delegation %q: %w", id, err)
	}
	if d.Status.Terminal() {
		return ledger.Delegation{}, &NotLiveError{DelegationID: id, Status: d.Status, StuckReason: d.StuckReason}
	}
	return d, nil
}

// interval is how often d's worker beats: a third of its heartbeat timeout.
func (w *Worker) interval(d ledger.Delegation) time.Duration {
	if w.cfg.HeartbeatInterval > 0 {
		return w.cfg.HeartbeatInterval
	}
	timeout := w.cfg.GlobalHeartbeatTimeout
	if d.HeartbeatTimeout != nil {
		timeout = *d.HeartbeatTimeout
	}
	return max(timeout/3, time.Millisecond)
}

// heartbeat beats every interval, with the task's progress when it set one
// since the last beat, until ctx ends; when the ledger answers not live, it
// cancels the work with the reason and stops.
func (w *Worker) heartbeat(ctx context.Context, c *ledger.Coalescer, t *Task, interval time.Duration, cancel context.CancelCauseFunc) {
	id := t.ID()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		live, err := c.BeatProgress(ctx, id, t.takeProgress())
		if ctx.Err() != nil {
			return
		}
		w.TestSignals.Beat.Signal(Beat{DelegationID: id, Live: live, Err: err})
		if err != nil {
			// The next beat tries again; if the ledger stays out of reach
			// past the timeout, the sweeper marks the task stuck and the
			// first beat that gets through says so.
			w.log.Warn("heartbeat failed", zap.String("delegation_id", id), zap.Error(err))
			continue
		}
		if !live {
			cancel(w.notLive(ctx, id))
			return
		}
	}
}

// notLive reads why id is not live.
func (w *Worker) notLive(ctx context.Context, id string) *NotLiveError {
	d, err := w.l.Get(ctx, id)
	if err != nil {
		return &NotLiveError{DelegationID: id}
	}
	return &NotLiveError{DelegationID: id, Status: d.Status, StuckReason: d.StuckReason}
}

// finish records the work's outcome and says what Run returns.
func (w *Worker) finish(ctx context.Context, id string, fnErr error, to ledger.Status, detail, reason string) error {
	res, err := w.record(ctx, id, to, detail, reason)
	switch {
	case err != nil && fnErr != nil:
		return fmt.Errorf("worker: recording that delegation %q failed (%w): %w", id, fnErr, err)
	case err != nil:
		return fmt.Errorf("worker: recording that delegation %q completed: %w", id, err)
	case res.Outcome == ledger.OutcomeApplied || res.Outcome == ledger.OutcomeUnchanged:
		return fnErr
	case res.Outcome == ledger.OutcomeNotFound:
		return &NotLiveError{DelegationID: id}
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.RecordTimeout)
	defer cancel()
	return w.notLive(rctx, id)
}

// record moves id to a terminal status with its result or error; it runs
// even when ctx is done.
func (w *Worker) record(ctx context.Context, id string, to ledger.Status, detail, reason string) (ledger.StatusResult, error) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.RecordTimeout)
	defer cancel()
	ch := ledger.Change{Actor: w.cfg.Actor, Reason: reason}
	if to == ledger.StatusCompleted {
		ch.Result = detail
	} else {
		ch.Error = detail
	}
	return w.l.SetStatus(rctx, id, to, ch)
}

// text makes s storable: valid UTF-8 without NUL bytes.
func text(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}
