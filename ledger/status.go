package ledger

import (
	"fmt"
)

// Status is where a delegation is in its lifecycle:
//
//	queued -> dispatched -> in_progress -> completed | failed | stuck
//
// A status may only move to a higher rank; skipping ranks is allowed
// (queued -> completed is legal). The three terminal statuses share the top
// rank and are final. This file is the only place the rules live in Go; the
// migration's guard trigger enforces the same ranks for every other writer.
type Status string

// The six statuses.
const (
	StatusQueued     Status = "queued"
	StatusDispatched Status = "dispatched"
	StatusInProgress Status = "in_progress"
	StatusCompleted  Status = "completed"
	StatusFailed     Status = "failed"
	StatusStuck      Status = "stuck"
)

// Statuses lists every status in rank order.
var Statuses = []Status{
	StatusQueued, StatusDispatched, StatusInProgress,
	StatusCompleted, StatusFailed, StatusStuck,
}

// terminalRank is the rank shared by completed, failed and stuck.
const terminalRank = 3

// Rank orders statuses: queued 0, dispatched 1, in_progress 2, terminal 3.
// An unknown status has rank -1.
func (s Status) Rank() int {
	switch s {
	case StatusQueued:
		return 0
	case StatusDispatched:
		return 1
	case StatusInProgress:
		return 2
	case StatusCompleted, StatusFailed, StatusStuck:
		return terminalRank
	}
	return -1
}

// Valid reports whether s is one of the six statuses.
func (s Status) Valid() bool { return s.Rank() >= 0 }

// Terminal reports whether s is final: completed, failed or stuck.
func (s Status) Terminal() bool { return s.Rank() == terminalRank }

// String returns the status as stored in the database.
func (s Status) String() string { return string(s) }

// UnknownStatusError is returned by ParseStatus for a string that is not a status.
type UnknownStatusError struct {
	Value string
}

func (e *UnknownStatusError) Error() string {
	return fmt.Sprintf("unknown status %q (want one of queued, dispatched, in_progress, completed, failed, stuck)", e.Value)
}

// Is makes errors.Is(err, ErrInvalid) true for an unknown status.
func (e *UnknownStatusError) Is(target error) bool { return target == ErrInvalid }

// ParseStatus returns the Status named by s, or an *UnknownStatusError.
func ParseStatus(s string) (Status, error) {
	st := Status(s)
	if !st.Valid() {
		return "", &UnknownStatusError{Value: s}
	}
	return st, nil
}

// Outcome is what a status change did. Only OutcomeApplied changed the row;
// the others are answers, not errors.
type Outcome int

// The outcomes of a status change.
const (
	// OutcomeApplied: the row moved to the new status.
	OutcomeApplied Outcome = iota + 1
	// OutcomeUnchanged: the row already had that status (a replay).
	OutcomeUnchanged
	// OutcomeRejectedTerminal: the row is terminal and can no longer change.
	OutcomeRejectedTerminal
	// OutcomeRejectedBackward: the new status ranks at or below the current one.
	OutcomeRejectedBackward
	// OutcomeNotFound: no delegation has that id.
	OutcomeNotFound
)

func (o Outcome) String() string {
	switch o {
	case OutcomeApplied:
		return "applied"
	case OutcomeUnchanged:
		return "unchanged"
	case OutcomeRejectedTerminal:
		return "rejected_terminal"
	case OutcomeRejectedBackward:
		return "rejected_backward"
	case OutcomeNotFound:
		return "not_found"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Transition is the lifecycle's transition table: what moving a row from
// status from to status to does. Both must be valid statuses.
//
//   - same status: unchanged (a replay is a no-op);
//   - from a terminal status: rejected, terminal rows are frozen;
//   - to a rank at or below from's: rejected as backward;
//   - otherwise: applied.
func Transition(from, to Status) Outcome {
	switch {
	case from == to:
		return OutcomeUnchanged
	case from.Terminal():
		return OutcomeRejectedTerminal
	case to.Rank() <= from.Rank():
		return OutcomeRejectedBackward
	}
	return OutcomeApplied
}

// Sources lists the statuses from which a move to `to` is applied, derived
// from Transition. Writers that move many rows at once (the sweep) use it as
// the guard of their UPDATE, so they cannot drift from the table.
func Sources(to Status) []Status {
	var from []Status
	for _, s := range Statuses {
		if Transition(s, to) == OutcomeApplied {
			from = append(from, s)
		}
	}
	return from
}

// NonTerminal lists the statuses of delegations still in flight.
func NonTerminal() []Status {
	var out []Status
	for _, s := range Statuses {
		if !s.Terminal() {
			out = append(out, s)
		}
	}
	return out
}

// StatusStrings returns statuses as the strings stored in the database, for
// a statement's text[] parameter.
func StatusStrings(statuses []Status) []string {
	out := make([]string, len(statuses))
	for i, s := range statuses {
		out[i] = string(s)
	}
	return out
}

// Retryable reports whether a delegation in status s may have a next
// attempt: it failed or got stuck. A live delegation is still being worked
// on, and a completed one is done; neither is retried. An idempotency key
// whose latest attempt is retryable is free for the next attempt.
func (s Status) Retryable() bool { return s == StatusFailed || s == StatusStuck }

// RetryableStatuses lists the statuses for which Retryable is true.
func RetryableStatuses() []Status {
	var out []Status
	for _, s := range Statuses {
		if s.Retryable() {
			out = append(out, s)
		}
	}
	return out
}
