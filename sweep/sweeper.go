package sweep

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/robfig/cron/v3"
	"go.uber.org/zap"

	"github.com/tasksweeper/sweeper/internal/cronsched"
	"github.com/tasksweeper/sweeper/internal/startstop"
	"github.com/tasksweeper/sweeper/internal/telemetry"
	"github.com/tasksweeper/sweeper/internal/testsignal"
	"github.com/tasksweeper/sweeper/ledger"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Defaults for Config's zero values.
const (
	HeartbeatTimeoutDefault = 10 * time.Minute
	BatchSizeDefault        = 1000
	MaxBatchesPerRunDefault = 100
	ScheduleDefault         = "@every 30s"
	NotifyChannelDefault    = "delegation_stuck"
	BatchTimeoutDefault     = time.Minute
	AdaptiveFloorDefault    = 200 * time.Millisecond
	AdaptiveCeilingDefault  = 30 * time.Second
	InFlightRecountDefault  = time.Minute
)

// ScheduleAdaptive, as Config.Schedule, replaces the cron schedule with one
// that sleeps until the earliest moment a row can become eligible (the
// oldest in_progress heartbeat plus the timeout, the earliest expiry of a
// delegation with its own heartbeat timeout, or the nearest deadline),
// bounded by AdaptiveFloor and AdaptiveCeiling. Stuck delegations are then
// found within about a second, without polling more often than needed. A row
// inserted with a deadline nearer than any other is seen within the ceiling.
const ScheduleAdaptive = "@adaptive"

// Reasons a delegation is marked stuck, stored in delegations.stuck_reason.
const (
	ReasonHeartbeatTimeout = "heartbeat_timeout"
	ReasonDeadlineExceeded = "deadline_exceeded"
	// ReasonStalled: in_progress and heartbeating, but its progress has not
	// changed for longer than its progress timeout.
	ReasonStalled = "stalled"
	// ReasonQueueTimeout: queued (since created, or since its not_before)
	// for longer than its queue timeout.
	ReasonQueueTimeout = "queue_timeout"
	// ReasonStartTimeout: dispatched for longer than its start timeout
	// without entering in_progress.
	ReasonStartTimeout = "start_timeout"
)

// Reasons lists every reason, in the order the rules run (a row that meets
// several is marked under the first).
var Reasons = []string{ReasonDeadlineExceeded, ReasonHeartbeatTimeout, ReasonStalled,
	ReasonStartTimeout, ReasonQueueTimeout}

// Config configures a Sweeper. Zero values take the defaults above, except
// NotifyChannel, where "" means no notifications.
type Config struct {
	// HeartbeatTimeout: an in_progress delegation whose last heartbeat is older
	// than this (by the database clock) is stuck, unless the delegation has
	// a heartbeat_timeout of its own, which then applies instead.
	HeartbeatTimeout time.Duration
	// ProgressTimeout: an in_progress delegation whose progress has not
	// changed for longer than this (progress_at, by the database clock) is
	// stuck with reason stalled, however often it heartbeats, unless it has
	// a progress_timeout of its own. Zero turns the global rule off (rows
	// with their own timeout are still judged by it).
	ProgressTimeout time.Duration
	// QueueTimeout: a queued delegation waiting longer than this (since
	// created, or since its not_before) is stuck with reason queue_timeout,
	// unless it has its own queue_timeout. Zero: off.
	QueueTimeout time.Duration
	// StartTimeout: a dispatched delegation that has not entered
	// in_progress this long after it was dispatched is stuck with reason
	// start_timeout, unless it has its own start_timeout. Zero: off.
	StartTimeout time.Duration
	// BatchSize bounds the rows claimed, updated and committed per transaction.
	BatchSize int
	// MaxBatchesPerRun bounds one run's work; what remains waits for the next run.
	MaxBatchesPerRun int
	// NotifyChannel receives one pg_notify per stuck delegation, in the same
	// transaction as the change; "" sends none.
	NotifyChannel string
	// DryRun counts what a run would mark and writes nothing.
	DryRun bool
	// Schedule is the robfig/cron spec used by Start, in UTC, or
	// ScheduleAdaptive.
	Schedule string
	// AdaptiveFloor and AdaptiveCeiling bound the sleep between runs of the
	// adaptive schedule.
	AdaptiveFloor   time.Duration
	AdaptiveCeiling time.Duration
	// InFlightRecount is how often a run recounts the rows in flight
	// (Result.InFlight). The count reads every in-flight row, which costs more
	// than the rest of a run that finds nothing, so runs in between reuse the
	// last count, unless they marked rows. A negative value recounts every run.
	InFlightRecount time.Duration
	// BatchTimeout bounds one batch's transaction. A batch that has started
	// is not interrupted by Stop or by RunOnce's context: it commits or rolls
	// back, within this bound.
	BatchTimeout time.Duration
	// Logger receives the sweeper's logs; zap.NewNop() when nil.
	Logger *zap.Logger
	// OnRun, when set, is called after every scheduled run with its result
	// (for metrics and health). It must not block.
	OnRun func(Result, error)
}

// Result is what one run did.
type Result struct {
	// Swept is the number of delegations marked stuck (or, in a dry run,
	// that would have been marked).
	Swept int
	// SweptHeartbeatTimeout and SweptDeadlineExceeded split Swept by reason
	// (ReasonHeartbeatTimeout, ReasonDeadlineExceeded).
	SweptHeartbeatTimeout int
	SweptDeadlineExceeded int
	// SweptStalled, SweptQueueTimeout and SweptStartTimeout count the rules
	// of ReasonStalled, ReasonQueueTimeout and ReasonStartTimeout.
	SweptStalled      int
	SweptQueueTimeout int
	SweptStartTimeout int
	// Retried counts, by reason, the rows marked whose retry policy
	// scheduled their next attempt (the database inserted it in the same
	// transaction); Exhausted those whose policy had no attempt left. Nil
	// when none.
	Retried   map[string]int
	Exhausted map[string]int
	// Batches is the number of batch transactions run.
	Batches int
	// More is true when the run stopped at MaxBatchesPerRun with rows left.
	More bool
	// Notified counts the notifications sent.
	Notified int
	DryRun   bool
	Duration time.Duration
	// InFlight and OldestHeartbeatAge describe the ledger after the run:
	// non-terminal rows (counted by this run, or by an earlier one at most
	// Config.InFlightRecount ago), and the age of the oldest in_progress
	// heartbeat among rows on the global timeout (exact when it is within
	// two minutes of the timeout, else to the minute, never less than the
	// truth). Rows with their own timeout are not in it: a long timeout
	// makes an old heartbeat normal; NextEligibleIn covers them.
	InFlight           int64
	OldestHeartbeatAge time.Duration
	// NextEligibleIn is how long until the next row can become eligible (0
	// when one already is); nil when nothing is in flight.
	NextEligibleIn *time.Duration
}

// add counts n delegations swept (or, in a dry run, found) under reason.
func (res *Result) add(reason string, n int) {
	res.Swept += n
	switch reason {
	case ReasonDeadlineExceeded:
		res.SweptDeadlineExceeded += n
	case ReasonHeartbeatTimeout:
		res.SweptHeartbeatTimeout += n
	case ReasonStalled:
		res.SweptStalled += n
	case ReasonQueueTimeout:
		res.SweptQueueTimeout += n
	case ReasonStartTimeout:
		res.SweptStartTimeout += n
	}
}

// ByReason is Swept split by reason, every reason present (zeros too).
func (res *Result) ByReason() map[string]int {
	return map[string]int{
		ReasonHeartbeatTimeout: res.SweptHeartbeatTimeout,
		ReasonDeadlineExceeded: res.SweptDeadlineExceeded,
		ReasonStalled:          res.SweptStalled,
		ReasonQueueTimeout:     res.SweptQueueTimeout,
		ReasonStartTimeout:     res.SweptStartTimeout,
	}
}

// Sweeper finds delegations that stopped making progress and marks them stuck.
// Call RunOnce for one sweep, or Start/Stop to sweep on a schedule. Several
// sweepers, in one process or many, may run against the same database at
// once: each row is transitioned once.
type Sweeper struct {
	pool  *pgxpool.Pool
	cfg   Config
	log   *zap.Logger
	sched cron.Schedule // nil for ScheduleAdaptive

	countMu   sync.Mutex
	countedAt time.Time // zero until the first count
	inFlight  int64

	lifecycle startstop.Base

	// TestSignals are off unless a test turns them on (Init) before Start.
	TestSignals TestSignals
}

// TestSignals are the events of a Sweeper that tests wait on instead of
// sleeping or polling the database. They are off (and cost nothing) unless
// a test calls Init.
type TestSignals struct {
	// RunDone receives the outcome of every scheduled run, after OnRun.
	RunDone testsignal.Signal[RunOutcome]
	// BatchDone receives the rows of every batch transaction, once it has
	// committed or rolled back.
	BatchDone testsignal.Signal[BatchOutcome]
}

// RunOutcome is what one scheduled run returned.
type RunOutcome struct {
	Result Result
	Err    error
}

// BatchOutcome is what one batch transaction did.
type BatchOutcome struct {
	Reason string
	Swept  int
	Err    error
}

// Init turns every signal on for tb.
func (ts *TestSignals) Init(tb testsignal.TB) {
	ts.RunDone.Init(tb)
	ts.BatchDone.Init(tb)
}

// New returns a Sweeper over pool with cfg's zero values filled in. It returns
// an error when cfg is invalid (a bad schedule, a negative value).
func New(pool *pgxpool.Pool, cfg Config) (*Sweeper, error) {
	cfg.HeartbeatTimeout = cmp.Or(cfg.HeartbeatTimeout, HeartbeatTimeoutDefault)
	cfg.BatchSize = cmp.Or(cfg.BatchSize, BatchSizeDefault)
	cfg.MaxBatchesPerRun = cmp.Or(cfg.MaxBatchesPerRun, MaxBatchesPerRunDefault)
	cfg.Schedule = cmp.Or(cfg.Schedule, ScheduleDefault)
	cfg.BatchTimeout = cmp.Or(cfg.BatchTimeout, BatchTimeoutDefault)
	cfg.AdaptiveFloor = cmp.Or(cfg.AdaptiveFloor, AdaptiveFloorDefault)
	cfg.AdaptiveCeiling = cmp.Or(cfg.AdaptiveCeiling, AdaptiveCeilingDefault)
	cfg.InFlightRecount = cmp.Or(cfg.InFlightRecount, InFlightRecountDefault)
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	switch {
	case cfg.HeartbeatTimeout < 0:
		return nil, fmt.Errorf("sweep: heartbeat timeout must be positive, got %s", cfg.HeartbeatTimeout)
	case cfg.ProgressTimeout < 0 || cfg.QueueTimeout < 0 || cfg.StartTimeout < 0:
		return nil, fmt.Errorf("sweep: progress, queue and start timeouts must be positive or zero (off), got %s, %s, %s",
			cfg.ProgressTimeout, cfg.QueueTimeout, cfg.StartTimeout)
	case cfg.BatchSize < 0:
		return nil, fmt.Errorf("sweep: batch size must be positive, got %d", cfg.BatchSize)
	case cfg.MaxBatchesPerRun < 0:
		return nil, fmt.Errorf("sweep: max batches per run must be positive, got %d", cfg.MaxBatchesPerRun)
	case cfg.BatchTimeout < 0:
		return nil, fmt.Errorf("sweep: batch timeout must be positive, got %s", cfg.BatchTimeout)
	case cfg.AdaptiveFloor < 0 || cfg.AdaptiveCeiling < cfg.AdaptiveFloor:
		return nil, fmt.Errorf("sweep: adaptive floor %s and ceiling %s: want 0 < floor <= ceiling",
			cfg.AdaptiveFloor, cfg.AdaptiveCeiling)
	}
	if pool == nil {
		return nil, errors.New("sweep: pool is nil")
	}
	sched, err := parseSchedule(cfg.Schedule)
	if err != nil {
		return nil, fmt.Errorf("sweep: schedule %q %w", cfg.Schedule, err)
	}
	return &Sweeper{pool: pool, cfg: cfg, log: cfg.Logger, sched: sched}, nil
}

// Config returns the sweeper's configuration with defaults filled in.
func (s *Sweeper) Config() Config { return s.cfg }

// rule is one of the sweep's rules and the statements that apply it. Each
// rule but the deadline is two: rows on the sweeper's global timeout and
// rows with their own, each an index condition on its own partial index.
type rule struct {
	name   string // names the rule in errors and tests
	reason string
	sweep  string // the batch statement
	count  string // its dry-run twin
	// setting names the rule's timeout in the audit detail
	// (heartbeat_timeout, progress_timeout, ...); "" for the deadline.
	setting string
	// global, when set, is the rule's global timeout: the statements take
	// it as their last parameter ($4 of sweep, $2 of count), and the rule is
	// off while it is zero. Nil for rules judged by each row's own timeout.
	global func(*Config) time.Duration
	// countHeartbeat: the count statement also takes the global heartbeat
	// timeout, after the rest (it leaves rows the heartbeat rule marks).
	countHeartbeat bool
}

func heartbeatTimeout(c *Config) time.Duration { return c.HeartbeatTimeout }
func progressTimeout(c *Config) time.Duration  { return c.ProgressTimeout }
func queueTimeout(c *Config) time.Duration     { return c.QueueTimeout }
func startTimeout(c *Config) time.Duration     { return c.StartTimeout }

// rules run in this order; a row that meets several is marked by the first:
// the deadline, then dead (no heartbeat), then stalled (no progress), then
// never started.
var rules = []rule{
	{name: "deadline", reason: ReasonDeadlineExceeded, sweep: sweepDeadlineSQL, count: countDeadlineSQL},
	{name: "global heartbeat timeout", reason: ReasonHeartbeatTimeout, sweep: sweepHeartbeatSQL, count: countHeartbeatSQL,
		setting: "heartbeat_timeout", global: heartbeatTimeout},
	{name: "own heartbeat timeout", reason: ReasonHeartbeatTimeout, sweep: sweepOwnTimeoutSQL, count: countOwnTimeoutSQL,
		setting: "heartbeat_timeout"},
	{name: "global progress timeout", reason: ReasonStalled, sweep: sweepStalledSQL, count: countStalledSQL,
		setting: "progress_timeout", global: progressTimeout, countHeartbeat: true},
	{name: "own progress timeout", reason: ReasonStalled, sweep: sweepStalledOwnSQL, count: countStalledOwnSQL,
		setting: "progress_timeout", countHeartbeat: true},
	{name: "global start timeout", reason: ReasonStartTimeout, sweep: sweepDispatchedSQL, count: countDispatchedSQL,
		setting: "start_timeout", global: startTimeout},
	{name: "own start timeout", reason: ReasonStartTimeout, sweep: sweepDispatchedOwnSQL, count: countDispatchedOwnSQL,
		setting: "start_timeout"},
	{name: "global queue timeout", reason: ReasonQueueTimeout, sweep: sweepQueuedSQL, count: countQueuedSQL,
		setting: "queue_timeout", global: queueTimeout},
	{name: "own queue timeout", reason: ReasonQueueTimeout, sweep: sweepQueuedOwnSQL, count: countQueuedOwnSQL,
		setting: "queue_timeout"},
}

// on reports whether the rule runs under cfg: a global rule whose timeout
// is zero is off.
func (r rule) on(cfg *Config) bool { return r.global == nil || r.global(cfg) > 0 }

// detail is the audit detail of the stuck events the rule writes: the
// global timeout the daemon runs with ({"progress_timeout_seconds":600}),
// or, for rows judged by their own timeout, {"progress_timeout":"own"} (the
// row's column holds it; one detail serves a whole batch, so it cannot name
// each row's). The database adds each row's last progress and the ages of
// its progress and heartbeat (see migration 7).
func (r rule) detail(cfg *Config) string {
	switch {
	case r.setting == "":
		// The deadline: the heartbeat timeout the daemon runs with, as
		// before there were other rules.
		b, _ := json.Marshal(map[string]any{"heartbeat_timeout_seconds": cfg.HeartbeatTimeout.Seconds()})
		return string(b)
	case r.global == nil:
		return `{"` + r.setting + `":"own"}`
	}
	b, _ := json.Marshal(map[string]any{r.setting + "_seconds": r.global(cfg).Seconds()})
	return string(b)
}

// sweepArgs are the batch statement's arguments.
func (r rule) sweepArgs(cfg *Config) []any {
	args := []any{cfg.BatchSize, stuckSources, cfg.NotifyChannel}
	if r.global != nil {
		args = append(args, r.global(cfg).Seconds())
	}
	return args
}

// countArgs are the count statement's arguments, counting up to limit rows.
func (r rule) countArgs(cfg *Config, limit int64) []any {
	args := []any{limit}
	if r.global != nil {
		args = append(args, r.global(cfg).Seconds())
	}
	if r.countHeartbeat {
		args = append(args, cfg.HeartbeatTimeout.Seconds())
	}
	return args
}

// stuckSources is the lifecycle's answer to "which statuses may move to
// stuck", passed to every sweep statement as its guard.
var stuckSources = ledger.StatusStrings(ledger.Sources(ledger.StatusStuck))

// RunOnce runs one full sweep: each rule in batches until nothing is
// eligible or MaxBatchesPerRun is reached. Cancelling ctx stops it between
// batches; a batch already started commits or rolls back first.
func (s *Sweeper) RunOnce(ctx context.Context) (res Result, err error) {
	ctx, span := telemetry.Tracer().Start(ctx, "sweep run")
	defer func() {
		span.SetAttributes(attribute.Int("sweeper.swept", res.Swept), attribute.Int("sweeper.batches", res.Batches),
			attribute.Bool("sweeper.dry_run", res.DryRun))
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, "sweep failed")
		}
		span.End()
	}()
	start := time.Now()
	res = Result{DryRun: s.cfg.DryRun}
	gaugesRead := false
	if s.cfg.DryRun {
		err = s.dryRun(ctx, &res)
	} else {
		gaugesRead, err = s.sweep(ctx, &res)
	}
	if err == nil && !gaugesRead {
		err = s.readGauges(ctx, &res)
	}
	res.Duration = time.Since(start)
	return res, err
}

// sweep first asks, in one round trip, which rules have a row eligible now
// (each rule's count statement, limited to one row, all in one batch, with
// the gauges), then runs batches of only those rules. A run that finds
// nothing, the usual one, is then one round trip of index probes however
// many rules there are; a row that becomes eligible after the probe is found
// by the next run. When nothing was marked, the gauges read with the probe
// are the run's.
func (s *Sweeper) sweep(ctx context.Context, res *Result) (gaugesRead bool, err error) {
	active := make([]rule, 0, len(rules))
	for _, r := range rules {
		if r.on(&s.cfg) {
			active = append(active, r)
		}
	}
	batch := &pgx.Batch{}
	batch.Queue(genericPlansSQL)
	for _, r := range active {
		batch.Queue(r.count, r.countArgs(&s.cfg, 1)...)
	}
	batch.Queue(gaugesSQL, s.gaugeArgs()...)
	br := s.pool.SendBatch(ctx, batch)
	if _, err := br.Exec(); err != nil {
		_ = br.Close()
		return false, fmt.Errorf("probing eligible rows: %w", err)
	}
	eligible := make([]bool, len(active))
	for i, r := range active {
		var n int
		if err := br.QueryRow().Scan(&n); err != nil {
			_ = br.Close()
			return false, fmt.Errorf("probing eligible rows by %s: %w", r.name, err)
		}
		eligible[i] = n > 0
	}
	var ageSeconds float64
	var nextSeconds *float64
	if err := br.QueryRow().Scan(&ageSeconds, &nextSeconds); err != nil {
		_ = br.Close()
		return false, fmt.Errorf("reading in-flight figures: %w", err)
	}
	if err := br.Close(); err != nil {
		return false, fmt.Errorf("probing eligible rows: %w", err)
	}

	for i, r := range active {
		if !eligible[i] {
			continue
		}
		detail := r.detail(&s.cfg)
		for {
			if res.Batches >= s.cfg.MaxBatchesPerRun {
				res.More = true
				return false, nil
			}
			if err := ctx.Err(); err != nil {
				return false, err
			}
			out, err := s.runBatch(ctx, r, detail)
			if err != nil {
				return false, err
			}
			n := out.swept
			res.Batches++
			res.Notified += out.notified
			res.add(r.reason, n)
			res.Retried = addCount(res.Retried, r.reason, out.retried)
			res.Exhausted = addCount(res.Exhausted, r.reason, out.exhausted)
			if n < s.cfg.BatchSize {
				break
			}
		}
	}
	if res.Swept > 0 {
		return false, nil
	}
	return true, s.setGauges(ctx, res, ageSeconds, nextSeconds)
}

// gaugeArgs are gaugesSQL's arguments: the global timeouts in seconds, nil
// for a rule that is off.
func (s *Sweeper) gaugeArgs() []any {
	opt := func(d time.Duration) any {
		if d <= 0 {
			return nil
		}
		return d.Seconds()
	}
	return []any{s.cfg.HeartbeatTimeout.Seconds(), opt(s.cfg.ProgressTimeout), opt(s.cfg.QueueTimeout), opt(s.cfg.StartTimeout)}
}

// addCount adds n to m[key], making m when needed; n == 0 leaves m as is.
func addCount(m map[string]int, key string, n int) map[string]int {
	if n == 0 {
		return m
	}
	if m == nil {
		m = map[string]int{}
	}
	m[key] += n
	return m
}

// batchCounts is what one batch did.
type batchCounts struct {
	swept, retried, exhausted, notified int
}

// runBatch claims, marks and audits up to BatchSize rows under one rule in one
// transaction. It runs to its end even when ctx is cancelled, within
// BatchTimeout, so a shutdown never leaves a batch half done.
func (s *Sweeper) runBatch(ctx context.Context, r rule, detail string) (out batchCounts, err error) {
	ctx, span := telemetry.Tracer().Start(ctx, "sweep batch", trace.WithAttributes(attribute.String("sweeper.reason", r.reason)))
	defer func() {
		span.SetAttributes(attribute.Int("sweeper.swept", out.swept))
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, "batch failed")
		}
		span.End()
	}()
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.BatchTimeout)
	defer cancel()
	// One round trip: the statements of a batch run in one implicit
	// transaction, committed at its end or rolled back on any error.
	batch := &pgx.Batch{}
	batch.Queue(setActorSQL, detail)
	batch.Queue(r.sweep, r.sweepArgs(&s.cfg)...)
	br := s.pool.SendBatch(bctx, batch)
	_, err = br.Exec()
	if err == nil {
		err = br.QueryRow().Scan(&out.swept, &out.retried, &out.exhausted, &out.notified)
	}
	if closeErr := br.Close(); err == nil {
		err = closeErr
	}
	s.TestSignals.BatchDone.Signal(BatchOutcome{Reason: r.reason, Swept: out.swept, Err: err})
	if err != nil {
		return batchCounts{}, fmt.Errorf("sweeping by %s: %w", r.name, err)
	}
	return out, nil
}

func (s *Sweeper) dryRun(ctx context.Context, res *Result) error {
	limit := int64(s.cfg.BatchSize) * int64(s.cfg.MaxBatchesPerRun)
	for _, r := range rules {
		if !r.on(&s.cfg) {
			continue
		}
		var n int
		if err := s.pool.QueryRow(ctx, r.count, r.countArgs(&s.cfg, limit)...).Scan(&n); err != nil {
			return fmt.Errorf("counting eligible rows by %s: %w", r.name, err)
		}
		res.add(r.reason, n)
	}
	return nil
}

func (s *Sweeper) readGauges(ctx context.Context, res *Result) error {
	var ageSeconds float64
	var nextSeconds *float64
	if err := s.pool.QueryRow(ctx, gaugesSQL, s.gaugeArgs()...).Scan(
		&ageSeconds, &nextSeconds); err != nil {
		return fmt.Errorf("reading in-flight figures: %w", err)
	}
	return s.setGauges(ctx, res, ageSeconds, nextSeconds)
}

// setGauges sets res's figures from gaugesSQL's answer, and the rows in
// flight, recounted when due.
func (s *Sweeper) setGauges(ctx context.Context, res *Result, ageSeconds float64, nextSeconds *float64) error {
	s.countMu.Lock()
	defer s.countMu.Unlock()
	if s.countedAt.IsZero() || res.Swept > 0 || time.Since(s.countedAt) >= s.cfg.InFlightRecount {
		at := time.Now()
		if err := s.pool.QueryRow(ctx, countInFlightSQL).Scan(&s.inFlight); err != nil {
			return fmt.Errorf("counting rows in flight: %w", err)
		}
		s.countedAt = at
	}
	res.InFlight = s.inFlight
	res.OldestHeartbeatAge = seconds(ageSeconds)
	if nextSeconds != nil {
		next := max(seconds(*nextSeconds), 0)
		res.NextEligibleIn = &next
	}
	return nil
}

func seconds(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

// Start sweeps once at once, then on the configured schedule, and returns
// without waiting. Runs never overlap (a run still going when the next is due
// skips it), and a panic in a run is logged and recovered. Start on a started
// sweeper is an error; Start after Stop starts again.
func (s *Sweeper) Start(ctx context.Context) error {
	runCtx, err := s.lifecycle.StartInit(ctx)
	if err != nil {
		return fmt.Errorf("sweep: %w", err)
	}
	if s.cfg.Schedule == ScheduleAdaptive {
		s.lifecycle.Go(func() { s.adaptiveLoop(runCtx) })
		return nil
	}
	c := cronsched.New(s.log)
	id := c.Schedule(s.sched, cron.FuncJob(func() { _, _ = s.scheduledRun(runCtx) }))
	c.Start()
	// The first run goes through the same chain, so a scheduled run due
	// while it is still going is skipped.
	s.lifecycle.Go(c.Entry(id).WrappedJob.Run)
	s.lifecycle.Go(func() {
		<-runCtx.Done()
		<-c.Stop().Done()
	})
	return nil
}

// Stop stops the schedule and blocks until a run in progress has ended: the
// run stops after its current batch commits or rolls back. Stop on a sweeper
// that is not started does nothing, so it is safe to call twice.
func (s *Sweeper) Stop() { s.lifecycle.Stop() }

// adaptiveLoop runs the sweep, then sleeps until the next row can become
// eligible, until ctx is done.
func (s *Sweeper) adaptiveLoop(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		res, err := s.safeRun(ctx)
		timer.Reset(s.adaptiveWait(res, err))
	}
}

// safeRun is scheduledRun with a panic turned into a logged error, as cron's
// Recover does for the cron schedule.
func (s *Sweeper) safeRun(ctx context.Context) (res Result, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("sweep panicked: %v", r)
			s.log.Error("sweep panicked", zap.Any("panic", r), zap.Stack("stack"))
		}
	}()
	return s.scheduledRun(ctx)
}

// adaptiveWait is the sleep before the next adaptive run: until the next row
// can become eligible (plus a little, so it is past the boundary by the
// database clock), within the floor and the ceiling. A run that left rows
// behind, or failed, goes again after the floor.
func (s *Sweeper) adaptiveWait(res Result, err error) time.Duration {
	const slack = 20 * time.Millisecond
	switch {
	case err != nil || res.More:
		return s.cfg.AdaptiveFloor
	case res.NextEligibleIn == nil:
		return s.cfg.AdaptiveCeiling
	}
	return min(max(*res.NextEligibleIn+slack, s.cfg.AdaptiveFloor), s.cfg.AdaptiveCeiling)
}

// scheduledRun is one run of Start's schedule: logged, and reported to OnRun.
func (s *Sweeper) scheduledRun(ctx context.Context) (Result, error) {
	if ctx.Err() != nil {
		return Result{}, nil
	}
	res, err := s.RunOnce(ctx)
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		// Stopped between batches: not a failure.
		err = nil
	}
	s.logRun(res, err)
	if s.cfg.OnRun != nil {
		s.cfg.OnRun(res, err)
	}
	s.TestSignals.RunDone.Signal(RunOutcome{res, err})
	return res, err
}

// logRun logs at Info only when the run changed something (or would have).
func (s *Sweeper) logRun(res Result, err error) {
	fields := []zap.Field{
		zap.Int("swept", res.Swept),
		zap.Int("heartbeat_timeout", res.SweptHeartbeatTimeout),
		zap.Int("deadline_exceeded", res.SweptDeadlineExceeded),
		zap.Int("stalled", res.SweptStalled),
		zap.Int("queue_timeout", res.SweptQueueTimeout),
		zap.Int("start_timeout", res.SweptStartTimeout),
		zap.Int("batches", res.Batches),
		zap.Bool("more", res.More),
		zap.Bool("dry_run", res.DryRun),
		zap.Int64("in_flight", res.InFlight),
		zap.Duration("oldest_heartbeat_age", res.OldestHeartbeatAge),
		zap.Duration("duration", res.Duration),
	}
	switch {
	case err != nil:
		s.log.Error("sweep failed", append(fields, zap.Error(err))...)
	case res.Swept > 0:
		s.log.Info("sweep marked delegations stuck", fields...)
	default:
		s.log.Debug("sweep found nothing", fields...)
	}
}
