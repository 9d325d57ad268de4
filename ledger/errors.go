package ledger

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Sentinel errors. Errors returned by the ledger wrap one of these where it
// applies, so callers test with errors.Is.
var (
	// ErrNotFound: no delegation has the given id.
	ErrNotFound = errors.New("delegation not found")
	// ErrInvalid: an argument (or a row the database refused) is invalid.
	ErrInvalid = errors.New("invalid delegation input")
	// ErrConflict: the write collides with an existing, different row.
	ErrConflict = errors.New("delegation conflict")
)

// FieldError names the argument that is invalid and why. It matches
// errors.Is(err, ErrInvalid).
type FieldError struct {
	Field  string // e.g. "delegation_id"
	Reason string // e.g. "is empty"
}

func (e *FieldError) Error() string { return fmt.Sprintf("%s %s", e.Field, e.Reason) }

// Is makes errors.Is(err, ErrInvalid) true.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

// named gives err the field name format(i) when it is a *FieldError (the
// checks of a batch run with an empty name, formatted only on failure).
func named(err error, format string, i int) error {
	if fe, ok := err.(*FieldError); ok {
		return &FieldError{Field: fmt.Sprintf(format, i), Reason: fe.Reason}
	}
	return err
}

// ConflictError is returned when a write collides with an existing row that is
// not a retry of the same write. It matches errors.Is(err, ErrConflict).
type ConflictError struct {
	DelegationID string
	Reason       string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("delegation %q: %s", e.DelegationID, e.Reason)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// wrapDBError wraps an error of the database driver with the action that
// failed, mapped to the ledger's sentinel errors where one applies (no row:
// ErrNotFound; unique violation: ErrConflict; bad data or a refused CHECK:
// ErrInvalid), e.g. wrapDBError("inserting delegation", err).
func wrapDBError(action string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%s: %w", action, ErrNotFound)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", action, err)
	}
	// Any driver's error with a SQLSTATE: pgx's *pgconn.PgError, lib/pq's
	// *pq.Error (through NewSQL).
	var stateErr interface{ SQLState() string }
	if errors.As(err, &stateErr) {
		msg, constraint := err.Error(), ""
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			msg, constraint = pgErr.Message, pgErr.ConstraintName
		} else if strings.Contains(msg, `"delegations_progress_check"`) {
			constraint = "delegations_progress_check"
		}
		switch code := stateErr.SQLState(); {
		case constraint == "delegations_progress_check":
			return fmt.Errorf("%s: %w", action, &FieldError{Field: "progress",
				Reason: fmt.Sprintf("must be a JSON object of at most %d bytes as stored (refused by the database)", MaxProgressBytes)})
		case code == pgerrcode.UniqueViolation:
			return fmt.Errorf("%s: %w: %s", action, ErrConflict, msg)
		case pgerrcode.IsDataException(code),
			code == pgerrcode.CheckViolation,
			code == pgerrcode.NotNullViolation:
			return fmt.Errorf("%s: %w: %s (%w)", action, ErrInvalid, msg, err)
		}
	}
	return fmt.Errorf("%s: %w", action, err)
}
