package ledger

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Retries are new rows: a terminal delegation never changes, so the next
// attempt of a failed or stuck one is a delegation of its own, attempt n+1,
// whose RetryOf is the attempt it retries. The attempts of one task form a
// chain, listed by Attempts.

// RetryOptions is what Retry records beyond what the next attempt copies
// from the previous one. Zero values keep the previous attempt's value,
// except the deadline, which starts again.
type RetryOptions struct {
	// DelegationID of the next attempt; "" derives it from the previous
	// attempt's: "<id>#<n>" for attempt n (an id that ends in "#<n-1>"
	// drops that suffix first, so a chain reads task#2, task#3, ...).
	DelegationID string
	// CalleeID, TaskPreview and IdempotencyKey override the previous
	// attempt's; ClearIdempotencyKey records the next attempt without one.
	CalleeID            string
	TaskPreview         string
	IdempotencyKey      string
	ClearIdempotencyKey bool
	// Status is the initial status, queued when empty. It must not be terminal.
	Status Status
	// Deadline, or else Timeout from now by the database clock, or else
	// DefaultTimeout.
	Deadline time.Time
	Timeout  time.Duration
	// HeartbeatTimeout overrides the previous attempt's own heartbeat timeout
	// (zero keeps it, including "none": the global one).
	HeartbeatTimeout time.Duration
	// Actor and Reason are recorded in the audit event of the new attempt.
	Actor  string
	Reason string
}

// RetryOutcome says what Retry did.
type RetryOutcome int

// The outcomes of Retry. Only RetryCreated wrote a row; the others are
// answers, not errors.
const (
	// RetryCreated: the next attempt was written (RetryResult.DelegationID).
	RetryCreated RetryOutcome = iota + 1
	// RetryAlreadyRetried: the delegation already has a next attempt
	// (RetryResult.DelegationID is it); nothing was written. Concurrent
	// retries of one delegation get one RetryCreated and this.
	RetryAlreadyRetried
	// RetryNotRetryable: the delegation is live or completed
	// (RetryResult.Status says which); nothing was written.
	RetryNotRetryable
	// RetryNotFound: no delegation has that id.
	RetryNotFound
)

func (o RetryOutcome) String() string {
	switch o {
	case RetryCreated:
		return "created"
	case RetryAlreadyRetried:
		return "already_retried"
	case RetryNotRetryable:
		return "not_retryable"
	case RetryNotFound:
		return "not_found"
	}
	return fmt.Sprintf("RetryOutcome(%d)", int(o))
}

// RetryResult is the answer of Retry.
type RetryResult struct {
	Outcome RetryOutcome
	// DelegationID and Attempt are the next attempt's, when it exists
	// (RetryCreated, RetryAlreadyRetried).
	DelegationID string
	Attempt      int
	// Status is the retried delegation's status; empty when not found.
	Status Status
}

func (o *RetryOptions) validate() error {
	if o.DelegationID != "" {
		if err := checkID("delegation_id", o.DelegationID); err != nil {
			return err
		}
	}
	if o.CalleeID != "" {
		if err := checkID("callee_id", o.CalleeID); err != nil {
			return err
		}
	}
	if o.IdempotencyKey != "" {
		if o.ClearIdempotencyKey {
			return &FieldError{Field: "idempotency_key", Reason: "is set and cleared; do one"}
		}
		if err := checkID("idempotency_key", o.IdempotencyKey); err != nil {
			return err
		}
	}
	for _, f := range []struct{ name, v string }{
		{"task_preview", o.TaskPreview}, {"actor", o.Actor}, {"reason", o.Reason},
	} {
		if err := checkText(f.name, f.v, false); err != nil {
			return err
		}
	}
	if o.Status != "" && (!o.Status.Valid() || o.Status.Terminal()) {
		return &FieldError{Field: "status", Reason: fmt.Sprintf("must be queued, dispatched or in_progress, got %q", o.Status)}
	}
	if !o.Deadline.IsZero() && o.Timeout != 0 {
		return &FieldError{Field: "deadline", Reason: "and timeout are both set; set one"}
	}
	if o.Timeout < 0 {
		return &FieldError{Field: "timeout", Reason: "is negative"}
	}
	return checkHeartbeatTimeout(o.HeartbeatTimeout)
}

// NextAttemptID is the id Retry gives attempt n (n >= 2) of a chain whose
// attempt n-1 is id, when RetryOptions.DelegationID is empty: "<id>#<n>",
// after dropping a "#<n-1>" suffix from id.
func NextAttemptID(id string, n int) string {
	if n > 2 {
		id = strings.TrimSuffix(id, "#"+strconv.Itoa(n-1))
	}
	return id + "#" + strconv.Itoa(n)
}

// Retry records the next attempt of delegation id, which must have failed or
// got stuck: a new delegation with the same caller, and the callee, task
// preview, idempotency key and heartbeat timeout of id unless opts overrides
// them, attempt n+1 and RetryOf id. A delegation that is live or completed,
// or already has a next attempt, or does not exist, is an outcome, not an
// error. Concurrent retries of one delegation create exactly one next
// attempt. A new id that another delegation already has, or an idempotency
// key another live attempt holds, is a *ConflictError.
func (l *Ledger) Retry(ctx context.Context, id string, opts RetryOptions) (RetryResult, error) {
	if err := checkID("delegation_id", id); err != nil {
		return RetryResult{}, fmt.Errorf("retrying delegation: %w", err)
	}
	if err := opts.validate(); err != nil {
		return RetryResult{}, fmt.Errorf("retrying delegation %q: %w", id, err)
	}
	status := opts.Status
	if status == "" {
		status = StatusQueued
	}
	var deadline *time.Time
	if !opts.Deadline.IsZero() {
		deadline = &opts.Deadline
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	preview := Truncate(opts.TaskPreview, MaxTaskPreviewRunes)

	// The previous attempt: what to explain an insert that did not happen
	// with, and its number for a derived id. A terminal row never changes,
	// so what is read here still holds when the insert runs; only its next
	// attempt may appear in between, and the insert then meets it.
	cur, attempt, next, err := l.readAttempt(ctx, id)
	if err != nil {
		return RetryResult{}, err
	}
	switch {
	case cur == "":
		return RetryResult{Outcome: RetryNotFound}, nil
	case next != "":
		return l.alreadyRetried(ctx, cur, next)
	case !cur.Retryable():
		return RetryResult{Outcome: RetryNotRetryable, Status: cur}, nil
	}
	newID := opts.DelegationID
	if newID == "" {
		newID = NextAttemptID(id, attempt+1)
		if len(newID) > MaxIDBytes {
			return RetryResult{}, fmt.Errorf("retrying delegation %q: %w", id,
				&FieldError{Field: "delegation_id", Reason: "derived for the next attempt is longer than 255 bytes; give one"})
		}
	}

	// One round trip: name the writer for the audit trigger, then insert.
	batch := &pgx.Batch{}
	batch.Queue(setWriterSQL, opts.Actor, opts.Reason, "")
	batch.Queue(retrySQL, id, retryableNames, newID, opts.CalleeID, preview, opts.IdempotencyKey,
		opts.ClearIdempotencyKey, deadline, timeout.Seconds(), heartbeatTimeoutArg(opts.HeartbeatTimeout), status)
	br := l.db.SendBatch(ctx, batch)
	_, err = br.Exec()
	var gotID string
	var gotAttempt int
	if err == nil {
		err = br.QueryRow().Scan(&gotID, &gotAttempt)
	}
	if closeErr := br.Close(); err == nil {
		err = closeErr
	}
	switch {
	case err == nil:
		return RetryResult{Outcome: RetryCreated, DelegationID: gotID, Attempt: gotAttempt, Status: cur}, nil
	case !errors.Is(err, pgx.ErrNoRows):
		return RetryResult{}, wrapDBError(fmt.Sprintf("retrying delegation %q", id), err)
	}

	// Nothing inserted: a concurrent retry won, or the new id or key is taken.
	if _, _, next, err = l.readAttempt(ctx, id); err != nil {
		return RetryResult{}, err
	}
	if next != "" {
		return l.alreadyRetried(ctx, cur, next)
	}
	var caller string
	err = l.db.QueryRow(ctx, selectCallerSQL, newID).Scan(&caller)
	if err == nil {
		return RetryResult{}, fmt.Errorf("retrying delegation %q: %w", id,
			&ConflictError{DelegationID: newID, Reason: "exists already (give another delegation_id for the next attempt)"})
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return RetryResult{}, wrapDBError(fmt.Sprintf("looking up delegation %q", newID), err)
	}
	return RetryResult{}, fmt.Errorf("retrying delegation %q: %w", id,
		&ConflictError{DelegationID: newID, Reason: "its idempotency key is held by another live or completed attempt"})
}

// readAttempt reads delegation id's status ("" when it does not exist), its
// attempt number and the id of its next attempt ("" when none).
func (l *Ledger) readAttempt(ctx context.Context, id string) (Status, int, string, error) {
	var st Status
	var attempt int
	var next string
	err := l.db.QueryRow(ctx, selectAttemptSQL, id).Scan(&st, &attempt, &next)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", 0, "", nil
	}
	if err != nil {
		return "", 0, "", wrapDBError(fmt.Sprintf("reading attempt of delegation %q", id), err)
	}
	return st, attempt, next, nil
}

// alreadyRetried is the RetryAlreadyRetried answer for next attempt next.
func (l *Ledger) alreadyRetried(ctx context.Context, cur Status, next string) (RetryResult, error) {
	_, attempt, _, err := l.readAttempt(ctx, next)
	if err != nil {
		return RetryResult{}, err
	}
	return RetryResult{Outcome: RetryAlreadyRetried, DelegationID: next, Attempt: attempt, Status: cur}, nil
}

// Attempts lists the attempt chain that delegation id belongs to, first
// attempt first (from the earliest still in the ledger), or an error
// wrapping ErrNotFound.
func (l *Ledger) Attempts(ctx context.Context, id string) ([]Delegation, error) {
	if err := checkID("delegation_id", id); err != nil {
		return nil, fmt.Errorf("listing attempts: %w", err)
	}
	rows, err := l.db.Query(ctx, attemptsSQL, id)
	if err != nil {
		return nil, wrapDBError(fmt.Sprintf("listing attempts of delegation %q", id), err)
	}
	ds, err := pgx.CollectRows(rows, pgx.RowToStructByName[Delegation])
	if err != nil {
		return nil, wrapDBError(fmt.Sprintf("listing attempts of delegation %q", id), err)
	}
	if len(ds) == 0 {
		return nil, fmt.Errorf("listing attempts of delegation %q: %w", id, ErrNotFound)
	}
	return ds, nil
}
