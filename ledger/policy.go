package ledger

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// A delegation carries its retry policy, copied to each of its attempts, so
// that the database enforces it for every writer: when a row moves to a
// status in its RetryOn and its attempt is below MaxAttempts, the audit
// trigger inserts the next attempt in the same transaction (queued, due at
// NotBefore after an exponential backoff with ±10% jitter). See migration
// 000008.

// Defaults of RetryPolicy, equal to the schema's column defaults: one
// attempt, so no automatic retry.
const (
	DefaultMaxAttempts     = 1
	DefaultRetryBackoff    = 30 * time.Second
	DefaultRetryBackoffMax = time.Hour
)

// Bounds of a retry policy; the schema's CHECKs hold the same bounds for
// writers that bypass this package.
const (
	MaxMaxAttempts     = 100
	MinRetryBackoff    = 10 * time.Millisecond
	MaxRetryBackoff    = 7 * 24 * time.Hour
	MaxRetryBackoffMax = 30 * 24 * time.Hour
)

// RetryPolicy says how a delegation retries itself. Zero fields take the
// defaults: MaxAttempts 1 (no retry), Backoff 30 s, BackoffMax 1 h, On
// {stuck}.
type RetryPolicy struct {
	// MaxAttempts bounds the attempts of the chain, the first included
	// (1 to MaxMaxAttempts).
	MaxAttempts int
	// Backoff is the delay before attempt 2; attempt n+1 waits
	// min(BackoffMax, Backoff × 2^(n-1)), ±10%.
	Backoff    time.Duration
	BackoffMax time.Duration
	// On lists the statuses that retry: a subset of stuck and failed.
	On []Status
}

// DefaultRetryOn is the statuses that retry when RetryPolicy.On is empty.
var DefaultRetryOn = []Status{StatusStuck}

// withDefaults returns p with its zero fields set to the defaults.
func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts == 0 {
		p.MaxAttempts = DefaultMaxAttempts
	}
	if p.Backoff == 0 {
		p.Backoff = DefaultRetryBackoff
	}
	if p.BackoffMax == 0 {
		p.BackoffMax = max(DefaultRetryBackoffMax, p.Backoff)
	}
	if len(p.On) == 0 {
		p.On = DefaultRetryOn
	}
	return p
}

// validate checks p after withDefaults.
func (p RetryPolicy) validate() error {
	switch {
	case p.MaxAttempts < 1 || p.MaxAttempts > MaxMaxAttempts:
		return &FieldError{Field: "retry.max_attempts", Reason: fmt.Sprintf("must be from 1 to %d, got %d", MaxMaxAttempts, p.MaxAttempts)}
	case p.Backoff < MinRetryBackoff || p.Backoff > MaxRetryBackoff:
		return &FieldError{Field: "retry.backoff", Reason: fmt.Sprintf("must be from %s to %s, got %s", MinRetryBackoff, MaxRetryBackoff, p.Backoff)}
	case p.BackoffMax < p.Backoff || p.BackoffMax > MaxRetryBackoffMax:
		return &FieldError{Field: "retry.backoff_max", Reason: fmt.Sprintf("must be from the backoff (%s) to %s, got %s", p.Backoff, MaxRetryBackoffMax, p.BackoffMax)}
	}
	for i, st := range p.On {
		if st != StatusStuck && st != StatusFailed {
			return &FieldError{Field: "retry.on", Reason: fmt.Sprintf("lists %q: only stuck and failed retry", st)}
		}
		if slices.Contains(p.On[:i], st) {
			return &FieldError{Field: "retry.on", Reason: fmt.Sprintf("lists %q twice", st)}
		}
	}
	return nil
}

// Policy is d's retry policy.
func (d Delegation) Policy() RetryPolicy {
	return RetryPolicy{MaxAttempts: d.MaxAttempts, Backoff: d.RetryBackoff, BackoffMax: d.RetryBackoffMax, On: d.RetryOn}
}

// BackoffAfter is the delay, without jitter, before the attempt that
// follows attempt n under p (zero fields read as the defaults): min(BackoffMax, Backoff × 2^(n-1)).
// The database adds ±10% jitter.
func (p RetryPolicy) BackoffAfter(n int) time.Duration {
	p = p.withDefaults()
	d := p.Backoff
	for i := 1; i < n && d < p.BackoffMax; i++ {
		d *= 2
	}
	return min(d, p.BackoffMax)
}

// MaxClaimLimit bounds the rows of one Claim.
const MaxClaimLimit = 1000

// Claim is ClaimBy with the database role as the actor of the audit events.
func (l *Ledger) Claim(ctx context.Context, calleeID string, limit int) ([]Delegation, error) {
	return l.ClaimBy(ctx, "", calleeID, limit)
}

// ClaimBy moves up to limit due queued delegations of callee calleeID to
// dispatched and returns them, the longest due first: queued rows whose
// NotBefore (or, without one, CreatedAt) is not in the future by the
// database clock. Rows are taken with FOR UPDATE SKIP LOCKED through the
// partial index of queued rows, so concurrent claimers never get the same
// row and never wait for one another; a row that another writer moved or
// holds is left out. The audit events name actor ("" for the database
// role) and the reason "claimed".
func (l *Ledger) ClaimBy(ctx context.Context, actor, calleeID string, limit int) ([]Delegation, error) {
	if err := checkID("callee_id", calleeID); err != nil {
		return nil, fmt.Errorf("claiming: %w", err)
	}
	if err := checkText("actor", actor, false); err != nil {
		return nil, fmt.Errorf("claiming: %w", err)
	}
	if limit < 1 || limit > MaxClaimLimit {
		return nil, fmt.Errorf("claiming: %w", &FieldError{Field: "limit", Reason: fmt.Sprintf("must be from 1 to %d, got %d", MaxClaimLimit, limit)})
	}
	batch := &pgx.Batch{}
	batch.Queue(setWriterSQL, actor, "claimed", "")
	batch.Queue(claimSQL, calleeID, limit)
	br := l.db.SendBatch(ctx, batch)
	_, err := br.Exec()
	var ds []Delegation
	if err == nil {
		var rows pgx.Rows
		if rows, err = br.Query(); err == nil {
			ds, err = pgx.CollectRows(rows, pgx.RowToStructByName[Delegation])
		}
	}
	if closeErr := br.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return nil, wrapDBError(fmt.Sprintf("claiming delegations of callee %q", calleeID), err)
	}
	return ds, nil
}
