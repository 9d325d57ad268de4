package ledger

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DefaultTimeout is the time a delegation has, from insert, before the sweep's
// deadline rule marks it stuck, when Insert is given no Deadline or Timeout.
// It equals the schema's default for writers that bypass this package.
const DefaultTimeout = 6 * time.Hour

// DB is what the ledger runs its statements on: a *pgxpool.Pool, a *pgx.Conn,
// or a pgx.Tx of the caller's.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// Ledger records delegations. It is safe for concurrent use when its DB is a
// pool. Bind it to a transaction with WithTx to make its writes part of the
// caller's own work.
type Ledger struct {
	db DB
}

// New returns a ledger over db (usually a *pgxpool.Pool).
func New(db DB) *Ledger { return &Ledger{db: db} }

// WithTx returns a ledger whose reads and writes run inside tx; they commit
// or roll back with it.
func (l *Ledger) WithTx(tx pgx.Tx) *Ledger { return &Ledger{db: tx} }

// Delegation is one row of the ledger. Optional text columns that are NULL in
// the database read as "".
type Delegation struct {
	DelegationID   string     `db:"delegation_id" json:"delegation_id"`
	CallerID       string     `db:"caller_id" json:"caller_id"`
	CalleeID       string     `db:"callee_id" json:"callee_id"`
	TaskPreview    string     `db:"task_preview" json:"task_preview"`
	ResultPreview  string     `db:"result_preview" json:"result_preview,omitempty"`
	ErrorDetail    string     `db:"error_detail" json:"error_detail,omitempty"`
	Status         Status     `db:"status" json:"status"`
	IdempotencyKey string     `db:"idempotency_key" json:"idempotency_key,omitempty"`
	LastHeartbeat  *time.Time `db:"last_heartbeat" json:"last_heartbeat,omitempty"`
	Deadline       time.Time  `db:"deadline" json:"deadline"`
	StuckReason    string     `db:"stuck_reason" json:"stuck_reason,omitempty"`
	CreatedAt      time.Time  `db:"created_at" json:"created_at"`
	UpdatedAt      time.Time  `db:"updated_at" json:"updated_at"`
	// HeartbeatTimeout is the delegation's own heartbeat timeout; nil means
	// the sweeper's global one (sweep.heartbeat_timeout). Not in the JSON
	// form: a time.Duration would read as nanoseconds there; the HTTP API
	// renders it in its own units.
	HeartbeatTimeout *time.Duration `db:"heartbeat_timeout" json:"-"`
	// Attempt numbers the delegation in its attempt chain, from 1; RetryOf is
	// the id of the attempt it retries ("" for the first).
	Attempt int    `db:"attempt" json:"attempt"`
	RetryOf string `db:"retry_of" json:"retry_of,omitempty"`
	// Progress is the worker's latest progress report (a JSON object, nil
	// when none), ProgressAt when it last changed (set too when the row
	// entered in_progress), by the database clock.
	Progress   json.RawMessage `db:"progress" json:"progress,omitempty"`
	ProgressAt *time.Time      `db:"progress_at" json:"progress_at,omitempty"`
	// ProgressTimeout, QueueTimeout and StartTimeout are the delegation's
	// own timeouts of the stalled, queue_timeout and start_timeout rules;
	// nil means the sweeper's global ones. Not in the JSON form, like
	// HeartbeatTimeout.
	ProgressTimeout *time.Duration `db:"progress_timeout" json:"-"`
	QueueTimeout    *time.Duration `db:"queue_timeout" json:"-"`
	StartTimeout    *time.Duration `db:"start_timeout" json:"-"`
	// NotBefore, when set, is when a queued delegation becomes due (a
	// retry's backoff): its queue wait counts from then. DispatchedAt is
	// when it entered dispatched, by the database clock.
	NotBefore    *time.Time `db:"not_before" json:"not_before,omitempty"`
	DispatchedAt *time.Time `db:"dispatched_at" json:"dispatched_at,omitempty"`
	// MaxAttempts, RetryBackoff, RetryBackoffMax and RetryOn are the retry
	// policy (Policy). Not in the JSON form: the HTTP API renders them as
	// one object in its own units.
	MaxAttempts     int           `db:"max_attempts" json:"-"`
	RetryBackoff    time.Duration `db:"retry_backoff" json:"-"`
	RetryBackoffMax time.Duration `db:"retry_backoff_max" json:"-"`
	RetryOn         []Status      `db:"retry_on" json:"-"`
	// Exhausted is true on an attempt whose policy had retries
	// (MaxAttempts > 1) and used them all: it ended in a status of RetryOn
	// at attempt MaxAttempts or later.
	Exhausted bool `db:"exhausted" json:"exhausted,omitempty"`
}

// Bounds of a delegation's own heartbeat timeout (NewDelegation.HeartbeatTimeout);
// the schema's CHECK holds the same bounds for writers that bypass this package.
const (
	MinHeartbeatTimeout = time.Second
	MaxHeartbeatTimeout = 7 * 24 * time.Hour
)

// NewDelegation is what Insert records.
type NewDelegation struct {
	DelegationID string // required; chosen by the caller, so a retry can reuse it
	CallerID     string // required
	CalleeID     string // required
	// TaskPreview is a human-readable summary, truncated to MaxTaskPreviewRunes.
	TaskPreview string
	// IdempotencyKey, when set, makes the insert idempotent per caller: while
	// the key's latest attempt is live or completed, another insert with the
	// same (CallerID, IdempotencyKey) returns that attempt's id, whatever its
	// DelegationID (DuplicateKey). When the latest attempt failed or got
	// stuck, the insert records the next attempt of it (Retried).
	IdempotencyKey string
	// Status is the initial status, queued when empty. It must not be terminal.
	Status Status
	// Deadline, or else Timeout from now by the database clock, or else
	// DefaultTimeout: past it, the sweep marks the delegation stuck.
	Deadline time.Time
	Timeout  time.Duration
	// Actor is recorded as the actor of the insert's audit event; the
	// database role when empty (Change.Actor for status changes).
	Actor string
	// HeartbeatTimeout, when not zero, is this delegation's own heartbeat
	// timeout, between MinHeartbeatTimeout and MaxHeartbeatTimeout: the
	// sweep marks it stuck when its last heartbeat is older than this, by
	// the database clock. Zero means the sweeper's global timeout.
	HeartbeatTimeout time.Duration
	// ProgressTimeout, QueueTimeout and StartTimeout, when not zero, are
	// this delegation's own timeouts (between MinWaitTimeout and
	// MaxWaitTimeout) of the sweep's rules: in_progress without a change of
	// progress for longer (reason stalled), queued longer (queue_timeout),
	// dispatched longer without entering in_progress (start_timeout). Zero
	// means the sweeper's global ones (sweep.progress_timeout, ...; off by
	// default).
	ProgressTimeout time.Duration
	QueueTimeout    time.Duration
	StartTimeout    time.Duration
	// Retry is the retry policy, copied to every later attempt; the zero
	// value retries nothing (MaxAttempts 1).
	Retry RetryPolicy
	// TraceParent, when set, is the W3C trace context of the request that
	// asks for the delegation (a traceparent header:
	// 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>), stored so
	// that what happens to the delegation later (its webhook deliveries)
	// is traced as part of that request's trace. CheckTraceParent says
	// what is accepted.
	TraceParent string
}

// traceParentRE is the W3C trace context's traceparent, lower-case hex, as
// the schema's CHECK (version 9) accepts it.
var traceParentRE = regexp.MustCompile(`^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$`)

// CheckTraceParent reports whether tp is a traceparent the ledger stores:
// version-traceid-parentid-flags in lower-case hex, not version ff, and
// neither id all zeros (the W3C Trace Context rules).
func CheckTraceParent(tp string) error {
	if !traceParentRE.MatchString(tp) || strings.HasPrefix(tp, "ff-") ||
		tp[3:35] == strings.Repeat("0", 32) || tp[36:52] == strings.Repeat("0", 16) {
		return &FieldError{Field: "traceparent", Reason: "is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>, ids not all zeros)"}
	}
	return nil
}

// InsertOutcome says what Insert did.
type InsertOutcome int

// The outcomes of Insert.
const (
	// Inserted: a new row was written.
	Inserted InsertOutcome = iota + 1
	// AlreadyExists: a row with this DelegationID and caller exists (a retry); nothing was written.
	AlreadyExists
	// DuplicateKey: the caller already used this IdempotencyKey and its latest
	// attempt is live or completed; InsertResult.DelegationID is that row's.
	DuplicateKey
	// Retried: the caller's IdempotencyKey belonged to attempts that failed
	// or got stuck; a new row was written as the next attempt
	// (InsertResult.Attempt, InsertResult.RetryOf).
	Retried
)

func (o InsertOutcome) String() string {
	switch o {
	case Inserted:
		return "inserted"
	case AlreadyExists:
		return "already_exists"
	case DuplicateKey:
		return "duplicate_key"
	case Retried:
		return "retried"
	}
	return fmt.Sprintf("InsertOutcome(%d)", int(o))
}

// InsertResult is the answer of Insert.
type InsertResult struct {
	DelegationID string // the id of the row that records this delegation
	Outcome      InsertOutcome
	// Attempt and RetryOf are the new row's attempt number and the attempt
	// it retries, when Outcome is Inserted (attempt 1) or Retried.
	Attempt int
	RetryOf string
}

// checkHeartbeatTimeout validates an own heartbeat timeout (zero: none).
func checkHeartbeatTimeout(d time.Duration) error {
	if d != 0 && (d < MinHeartbeatTimeout || d > MaxHeartbeatTimeout) {
		return &FieldError{Field: "heartbeat_timeout",
			Reason: fmt.Sprintf("must be between %s and %s, got %s", MinHeartbeatTimeout, MaxHeartbeatTimeout, d)}
	}
	return nil
}

// heartbeatTimeoutArg is d as the interval parameter of a statement: NULL
// when zero.
func heartbeatTimeoutArg(d time.Duration) *time.Duration {
	if d == 0 {
		return nil
	}
	return &d
}

func (n *NewDelegation) validate() error {
	if n.TraceParent != "" {
		if err := CheckTraceParent(n.TraceParent); err != nil {
			return err
		}
	}
	if err := checkID("delegation_id", n.DelegationID); err != nil {
		return err
	}
	if err := checkID("caller_id", n.CallerID); err != nil {
		return err
	}
	if err := checkID("callee_id", n.CalleeID); err != nil {
		return err
	}
	if n.IdempotencyKey != "" {
		if err := checkID("idempotency_key", n.IdempotencyKey); err != nil {
			return err
		}
	}
	if err := checkText("task_preview", n.TaskPreview, false); err != nil {
		return err
	}
	if err := checkText("actor", n.Actor, false); err != nil {
		return err
	}
	if n.Status != "" && (!n.Status.Valid() || n.Status.Terminal()) {
		return &FieldError{Field: "status", Reason: fmt.Sprintf("must be queued, dispatched or in_progress, got %q", n.Status)}
	}
	if !n.Deadline.IsZero() && n.Timeout != 0 {
		return &FieldError{Field: "deadline", Reason: "and timeout are both set; set one"}
	}
	if n.Timeout < 0 {
		return &FieldError{Field: "timeout", Reason: "is negative"}
	}
	if err := n.Retry.withDefaults().validate(); err != nil {
		return err
	}
	for _, t := range []struct {
		field string
		d     time.Duration
	}{{"progress_timeout", n.ProgressTimeout}, {"queue_timeout", n.QueueTimeout}, {"start_timeout", n.StartTimeout}} {
		if err := checkWaitTimeout(t.field, t.d); err != nil {
			return err
		}
	}
	return checkHeartbeatTimeout(n.HeartbeatTimeout)
}

// Insert records a new delegation. Retrying with the same DelegationID is a
// no-op reported as AlreadyExists; reusing a caller's IdempotencyKey returns
// the id of the key's latest attempt as DuplicateKey while that attempt is
// live or completed, and records the next attempt (Retried) when it failed
// or got stuck. Concurrent inserts with one key write one row. The same
// DelegationID under another caller is a *ConflictError. Invalid input is a
// *FieldError and writes nothing.
func (l *Ledger) Insert(ctx context.Context, n NewDelegation) (InsertResult, error) {
	if err := n.validate(); err != nil {
		return InsertResult{}, fmt.Errorf("inserting delegation: %w", err)
	}
	status := n.Status
	if status == "" {
		status = StatusQueued
	}
	var deadline *time.Time
	if !n.Deadline.IsZero() {
		deadline = &n.Deadline
	}
	timeout := n.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	preview := Truncate(n.TaskPreview, MaxTaskPreviewRunes)
	policy := n.Retry.withDefaults()

	// A conflicting insert inserts nothing; look up which row it met. If that
	// row is gone by then (its writer rolled back), try again.
	for range 3 {
		args := []any{n.DelegationID, n.CallerID, n.CalleeID, preview,
			status, n.IdempotencyKey, deadline, timeout.Seconds(), heartbeatTimeoutArg(n.HeartbeatTimeout),
			retryableNames, heartbeatTimeoutArg(n.ProgressTimeout), heartbeatTimeoutArg(n.QueueTimeout),
			heartbeatTimeoutArg(n.StartTimeout), policy.MaxAttempts, policy.Backoff, policy.BackoffMax, StatusStrings(policy.On)}
		sql := insertSQL
		if n.TraceParent != "" {
			sql, args = insertTracedSQL, append(args, n.TraceParent)
		}
		id, attempt, retryOf, err := l.insertRow(ctx, n.Actor, sql, args...)
		if err == nil {
			outcome := Inserted
			if retryOf != "" {
				outcome = Retried
			}
			return InsertResult{DelegationID: id, Outcome: outcome, Attempt: attempt, RetryOf: retryOf}, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return InsertResult{}, wrapDBError("inserting delegation", err)
		}
		if n.IdempotencyKey != "" {
			var st Status
			err := l.db.QueryRow(ctx, selectLatestAttemptSQL, n.CallerID, n.IdempotencyKey).Scan(&id, &st)
			if err == nil && !st.Retryable() {
				return InsertResult{DelegationID: id, Outcome: DuplicateKey}, nil
			}
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return InsertResult{}, wrapDBError("looking up idempotency key", err)
			}
			// No live attempt under the key: the id is what conflicted, or
			// the attempt that did was rolled back, or failed since.
		}
		var caller string
		err = l.db.QueryRow(ctx, selectCallerSQL, n.DelegationID).Scan(&caller)
		if err == nil {
			if caller != n.CallerID {
				return InsertResult{}, fmt.Errorf("inserting delegation: %w",
					&ConflictError{DelegationID: n.DelegationID, Reason: "exists with another caller_id"})
			}
			return InsertResult{DelegationID: n.DelegationID, Outcome: AlreadyExists}, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return InsertResult{}, wrapDBError("looking up delegation", err)
		}
	}
	return InsertResult{}, fmt.Errorf("inserting delegation %q: %w",
		n.DelegationID, &ConflictError{DelegationID: n.DelegationID, Reason: "conflicting row kept appearing and disappearing"})
}

// insertRow runs sql (insertSQL or insertTracedSQL); with an actor, in one
// round trip after naming the writer for the audit trigger (the same
// implicit transaction).
func (l *Ledger) insertRow(ctx context.Context, actor, sql string, args ...any) (id string, attempt int, retryOf string, err error) {
	if actor == "" {
		err = l.db.QueryRow(ctx, sql, args...).Scan(&id, &attempt, &retryOf)
		return id, attempt, retryOf, err
	}
	batch := &pgx.Batch{}
	batch.Queue(setWriterSQL, actor, "", "")
	batch.Queue(sql, args...)
	br := l.db.SendBatch(ctx, batch)
	_, err = br.Exec()
	if err == nil {
		err = br.QueryRow().Scan(&id, &attempt, &retryOf)
	}
	if closeErr := br.Close(); err == nil {
		err = closeErr
	}
	return id, attempt, retryOf, err
}

// Change describes a status change beyond the new status: who made it and
// why (recorded in the audit event), and the result or error it carries.
type Change struct {
	Actor  string // recorded as the event's actor; the database role when empty
	Reason string // recorded as the event's reason
	// Detail, when not nil, is stored as the event's JSON detail.
	Detail any
	// Result is stored as result_preview (truncated), typically on completed.
	Result string
	// Error is stored as error_detail (truncated), typically on failed.
	Error string
}

// StatusResult is the answer of SetStatus.
type StatusResult struct {
	Outcome Outcome
	// Status is the row's status after the call; empty when not found.
	Status Status
	// Retried is true when the change (applied) moved the row to a status
	// in its retry policy's RetryOn with attempts left: the database
	// inserted the next attempt in the same transaction. Exhausted is true
	// when it did so with no attempt left.
	Retried   bool
	Exhausted bool
}

func (c *Change) validate() error {
	for _, f := range []struct{ name, v string }{
		{"actor", c.Actor}, {"reason", c.Reason}, {"result", c.Result}, {"error", c.Error},
	} {
		if err := checkText(f.name, f.v, false); err != nil {
			return err
		}
	}
	return nil
}

// SetStatus moves a delegation to status to, if the lifecycle allows it. The
// outcome says what happened: applied, unchanged (a replay), rejected because
// the row is terminal or the move is backward, or not found. Those are not
// errors; an error means the ledger could not answer.
func (l *Ledger) SetStatus(ctx context.Context, id string, to Status, c Change) (StatusResult, error) {
	if err := checkID("delegation_id", id); err != nil {
		return StatusResult{}, fmt.Errorf("setting status: %w", err)
	}
	if !to.Valid() {
		return StatusResult{}, fmt.Errorf("setting status: %w", &UnknownStatusError{Value: string(to)})
	}
	if err := c.validate(); err != nil {
		return StatusResult{}, fmt.Errorf("setting status: %w", err)
	}
	detail := ""
	if c.Detail != nil {
		b, err := json.Marshal(c.Detail)
		if err != nil {
			return StatusResult{}, fmt.Errorf("setting status: %w", &FieldError{Field: "detail", Reason: "is not JSON-encodable: " + err.Error()})
		}
		detail = string(b)
	}

	// One round trip: name the writer for the audit trigger, then move the
	// row if its current status is one the transition table moves from.
	batch := &pgx.Batch{}
	batch.Queue(setWriterSQL, c.Actor, c.Reason, detail)
	batch.Queue(setStatusSQL, id, to, StatusStrings(Sources(to)),
		Truncate(c.Result, MaxResultPreviewRunes), Truncate(c.Error, MaxErrorDetailRunes))
	br := l.db.SendBatch(ctx, batch)
	_, err := br.Exec()
	var got Status
	var retried, exhausted bool
	if err == nil {
		err = br.QueryRow().Scan(&got, &retried, &exhausted)
	}
	if closeErr := br.Close(); err == nil {
		err = closeErr
	}
	switch {
	case err == nil:
		return StatusResult{Outcome: OutcomeApplied, Status: got, Retried: retried, Exhausted: exhausted}, nil
	case !errors.Is(err, pgx.ErrNoRows):
		return StatusResult{}, wrapDBError(fmt.Sprintf("setting delegation %q to %s", id, to), err)
	}

	// Nothing moved: say why from the row as it is now. Statuses only move
	// forward, so what blocked the update still blocks it.
	var cur Status
	err = l.db.QueryRow(ctx, selectStatusSQL, id).Scan(&cur)
	if errors.Is(err, pgx.ErrNoRows) {
		return StatusResult{Outcome: OutcomeNotFound}, nil
	}
	if err != nil {
		return StatusResult{}, wrapDBError(fmt.Sprintf("reading status of delegation %q", id), err)
	}
	return StatusResult{Outcome: Transition(cur, to), Status: cur}, nil
}

// HeartbeatResult is the answer of Heartbeat.
type HeartbeatResult struct {
	// Live is true when the heartbeat was recorded: the delegation exists and
	// is not terminal. A worker that gets Live == false should stop.
	Live bool
	// Status is the delegation's status; empty when it does not exist.
	Status Status
	// Reason is the delegation's stuck_reason when Status is stuck
	// (heartbeat_timeout, deadline_exceeded, stalled, queue_timeout,
	// start_timeout): why its worker should stop.
	Reason string
}

// Heartbeat records that the delegation's worker is alive. Only non-terminal
// rows are touched: on a terminal row it changes nothing and reports
// Live == false with the final status (and, when stuck, the reason), so a
// worker whose task was marked stuck learns it here. A missing row is
// Live == false with an empty Status. HeartbeatProgress also reports
// progress.
func (l *Ledger) Heartbeat(ctx context.Context, id string) (HeartbeatResult, error) {
	return l.HeartbeatProgress(ctx, id, nil)
}

// HeartbeatMany records a heartbeat for many delegations in one statement and
// returns the ids among them that are not live (terminal or missing), sorted;
// their workers should stop. HeartbeatBeats also reports progress.
func (l *Ledger) HeartbeatMany(ctx context.Context, ids []string) (notLive []string, err error) {
	return l.heartbeatBeats(ctx, "", beatsOf(ids))
}

// Get returns one delegation, or an error wrapping ErrNotFound.
func (l *Ledger) Get(ctx context.Context, id string) (Delegation, error) {
	if err := checkID("delegation_id", id); err != nil {
		return Delegation{}, fmt.Errorf("getting delegation: %w", err)
	}
	rows, err := l.db.Query(ctx, getSQL, id)
	if err != nil {
		return Delegation{}, wrapDBError(fmt.Sprintf("getting delegation %q", id), err)
	}
	d, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Delegation])
	if err != nil {
		return Delegation{}, wrapDBError(fmt.Sprintf("getting delegation %q", id), err)
	}
	return d, nil
}

// MaxGetMany is the most ids GetMany reads at once.
const MaxGetMany = MaxListLimit

// GetMany returns the delegations of ids that exist, by id, in one statement;
// an id with no delegation (never inserted, deleted by the retention prune,
// or one Insert would refuse) is absent from the map. Repeated ids are read
// once. At most MaxGetMany ids, each valid UTF-8 without NUL. Unlike Get it
// does not apply Insert's identifier rules: the ids of events (a webhook
// page) are read back whatever a writer that bypassed this package stored.
func (l *Ledger) GetMany(ctx context.Context, ids []string) (map[string]Delegation, error) {
	if len(ids) > MaxGetMany {
		return nil, fmt.Errorf("getting delegations: %w",
			&FieldError{Field: "delegation_id", Reason: fmt.Sprintf("at most %d ids at once, got %d", MaxGetMany, len(ids))})
	}
	for _, id := range ids {
		if err := checkText("delegation_id", id, false); err != nil {
			return nil, fmt.Errorf("getting delegations: %w", err)
		}
	}
	out := make(map[string]Delegation, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := l.db.Query(ctx, getManySQL, ids)
	if err != nil {
		return nil, wrapDBError("getting delegations", err)
	}
	ds, err := pgx.CollectRows(rows, pgx.RowToStructByName[Delegation])
	if err != nil {
		return nil, wrapDBError("getting delegations", err)
	}
	for _, d := range ds {
		out[d.DelegationID] = d
	}
	return out, nil
}

// ListFilter selects delegations for List. At least one of CallerID, CalleeID
// and Status is required (each is served by its own index).
type ListFilter struct {
	CallerID string
	CalleeID string
	Status   Status // "" for any
	// Limit is the page size: DefaultListLimit when 0, at most MaxListLimit.
	Limit int
	// Cursor continues a previous page (Page.Next); "" starts at the newest.
	Cursor string
	// InFlight keeps only non-terminal rows; it needs CallerID (it reads
	// the in-flight rows of one caller, idx_delegations_inflight_caller).
	InFlight bool
	// Exhausted keeps only attempts that exhausted their retry policy
	// (idx_delegations_exhausted); it needs no other filter.
	Exhausted bool
}

// Page sizes for List.
const (
	DefaultListLimit = 50
	MaxListLimit     = 1000
)

// Page is one page of List, newest first.
type Page struct {
	Delegations []Delegation
	// Next is the cursor of the following page; "" when this is the last.
	Next string
}

// List returns delegations matching f, newest first, one page at a time.
func (l *Ledger) List(ctx context.Context, f ListFilter) (Page, error) {
	if f.Status != "" && !f.Status.Valid() {
		return Page{}, fmt.Errorf("listing delegations: %w", &UnknownStatusError{Value: string(f.Status)})
	}
	limit := f.Limit
	switch {
	case limit == 0:
		limit = DefaultListLimit
	case limit < 0 || limit > MaxListLimit:
		return Page{}, fmt.Errorf("listing delegations: %w",
			&FieldError{Field: "limit", Reason: fmt.Sprintf("must be between 1 and %d, got %d", MaxListLimit, limit)})
	}
	afterAt, afterID, err := decodeCursor(f.Cursor)
	if err != nil {
		return Page{}, fmt.Errorf("listing delegations: %w", err)
	}
	for _, v := range []struct{ name, v string }{{"caller_id", f.CallerID}, {"callee_id", f.CalleeID}} {
		if v.v != "" {
			if err := checkID(v.name, v.v); err != nil {
				return Page{}, fmt.Errorf("listing delegations: %w", err)
			}
		}
	}

	var rows pgx.Rows
	switch {
	case f.Exhausted && f.InFlight:
		return Page{}, nil // an exhausted attempt is terminal
	case f.Exhausted:
		rows, err = l.db.Query(ctx, listExhaustedSQL, f.CallerID, f.CalleeID, f.Status, afterAt, afterID, limit+1)
	case f.InFlight && f.Status.Terminal():
		return Page{}, nil
	case f.InFlight && f.CallerID != "":
		rows, err = l.db.Query(ctx, listInFlightByCallerSQL, f.CallerID, f.Status, afterAt, afterID, limit+1, f.CalleeID)
	case f.InFlight:
		return Page{}, fmt.Errorf("listing delegations: %w",
			&FieldError{Field: "in_flight", Reason: "needs a caller_id"})
	case f.CallerID != "":
		rows, err = l.db.Query(ctx, listByCallerSQL, f.CallerID, f.Status, afterAt, afterID, limit+1, f.CalleeID)
	case f.CalleeID != "":
		rows, err = l.db.Query(ctx, listByCalleeSQL, f.CalleeID, f.Status, afterAt, afterID, limit+1)
	case f.Status != "":
		rows, err = l.db.Query(ctx, listByStatusSQL, f.Status, afterAt, afterID, limit+1)
	default:
		return Page{}, fmt.Errorf("listing delegations: %w",
			&FieldError{Field: "filter", Reason: "needs a caller_id, callee_id or status"})
	}
	if err != nil {
		return Page{}, wrapDBError("listing delegations", err)
	}
	ds, err := pgx.CollectRows(rows, pgx.RowToStructByName[Delegation])
	if err != nil {
		return Page{}, wrapDBError("listing delegations", err)
	}
	page := Page{Delegations: ds}
	if len(ds) > limit {
		page.Delegations = ds[:limit]
		last := ds[limit-1]
		page.Next = encodeCursor(last.CreatedAt, last.DelegationID)
	}
	return page, nil
}

// The cursor is opaque to callers: base64 of "<created_at unix ns>:<id>".
func encodeCursor(at time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(at.UnixNano(), 10) + ":" + id))
}

func decodeCursor(c string) (time.Time, string, error) {
	if c == "" {
		// Before everything: row comparison against +infinity is always true.
		return time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC), "", nil
	}
	bad := &FieldError{Field: "cursor", Reason: "is not a cursor returned by List"}
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, "", bad
	}
	ns, id, ok := strings.Cut(string(raw), ":")
	if !ok {
		return time.Time{}, "", bad
	}
	n, err := strconv.ParseInt(ns, 10, 64)
	if err != nil {
		return time.Time{}, "", bad
	}
	return time.Unix(0, n).UTC(), id, nil
}

// Event is one row of the audit log: a status change of a delegation.
type Event struct {
	ID           int64           `db:"id" json:"id"`
	DelegationID string          `db:"delegation_id" json:"delegation_id"`
	FromStatus   Status          `db:"from_status" json:"from_status,omitempty"` // "" for the insert
	ToStatus     Status          `db:"to_status" json:"to_status"`
	Reason       string          `db:"reason" json:"reason,omitempty"`
	Actor        string          `db:"actor" json:"actor"`
	At           time.Time       `db:"at" json:"at"`
	Detail       json.RawMessage `db:"detail" json:"detail,omitempty"`
	// CallerID and CalleeID are the delegation's, copied into the event by
	// the audit trigger (schema version 2) so the feed can filter on them.
	CallerID string `db:"caller_id" json:"caller_id"`
	CalleeID string `db:"callee_id" json:"callee_id"`
}

// Events returns the audit log of one delegation, oldest first.
func (l *Ledger) Events(ctx context.Context, id string) ([]Event, error) {
	if err := checkID("delegation_id", id); err != nil {
		return nil, fmt.Errorf("listing events: %w", err)
	}
	rows, err := l.db.Query(ctx, listEventsSQL, id)
	if err != nil {
		return nil, wrapDBError(fmt.Sprintf("listing events of delegation %q", id), err)
	}
	evs, err := pgx.CollectRows(rows, pgx.RowToStructByName[Event])
	if err != nil {
		return nil, wrapDBError(fmt.Sprintf("listing events of delegation %q", id), err)
	}
	return evs, nil
}

// nonTerminalNames is NonTerminal as the text[] parameter of the heartbeat statements.
var nonTerminalNames = StatusStrings(NonTerminal())

// retryableNames is RetryableStatuses as the text[] parameter of the
// statements that create a next attempt.
var retryableNames = StatusStrings(RetryableStatuses())
