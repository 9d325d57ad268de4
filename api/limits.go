package api

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/tasksweeper/sweeper/ledger"
)

// The bounds the API enforces on what it reads and what it writes, beside
// the ledger's own (ledger.MaxIDBytes and the preview lengths). Each one is
// stated in openapi.json (maxLength, maxItems, maximum, pattern), and
// TestDocumentedBounds sends a value at every bound the document states and
// one past it.
const (
	// MaxInputTextRunes bounds the free text of a request that the ledger
	// stores truncated (task_preview, a transition's result and error): a
	// longer value is refused rather than read, cut and mostly thrown away.
	MaxInputTextRunes = 65536
	// MaxReasonRunes bounds a transition's or a retry's reason, which the
	// audit log keeps whole; an event's reason or actor longer than that
	// (written by another client) is rendered cut.
	MaxReasonRunes = 2000
	// MaxActorRunes bounds an event's actor as rendered.
	MaxActorRunes = 255
	// MaxDateTimeBytes bounds an RFC 3339 time of a request:
	// 2006-01-02T15:04:05.999999999+07:00 is 35 bytes.
	MaxDateTimeBytes = 35
	// MaxCursorBytes bounds a list cursor: base64url of
	// "<unix nanoseconds>:<delegation_id>", at most 20+1+255 bytes.
	MaxCursorBytes = 368
	// MaxWaitBytes bounds the wait query parameter of the feed.
	MaxWaitBytes = 32
	// MaxResponseItems bounds the arrays of the answers that have no page
	// size of their own: a delegation's events and attempts (the lifecycle
	// writes a handful of each).
	MaxResponseItems = 1000
	// MaxSummaryCallers bounds the callers of GET /v1/summary; more are left
	// out (ask for one with caller_id).
	MaxSummaryCallers = 10000
)

// Bounds of a problem's members: what the API echoes of a request (a field
// name, the path) is cut to them.
const (
	maxProblemTitle    = 200
	maxProblemDetail   = 2000
	maxProblemInstance = 2048
	maxProblemField    = 255
)

// waitPattern is the wait query parameter: whole seconds, or a Go duration
// of at most six parts (30s, 1m30s, 1.5m).
var waitPattern = regexp.MustCompile(`^([0-9]{1,10}|([0-9]{1,10}(\.[0-9]{0,9})?(ns|us|µs|μs|ms|s|m|h)){1,6})$`)

// cursorPattern is a list cursor: base64url without padding.
var cursorPattern = regexp.MustCompile(`^[A-Za-z0-9_-]*$`)

// checkRunes refuses a body field of more than max runes (422).
func checkRunes(field, v string, max int) error {
	if len(v) > max && utf8.RuneCountInString(v) > max {
		return errInvalidField(field, fmt.Sprintf("is longer than %d characters", max))
	}
	return nil
}

// checkTexts applies checkRunes to several fields.
func checkTexts(fields ...textField) error {
	for _, f := range fields {
		if err := checkRunes(f.name, f.v, f.max); err != nil {
			return err
		}
	}
	return nil
}

type textField struct {
	name, v string
	max     int
}

// idParam reads an optional identifier query parameter (caller_id,
// callee_id): at most ledger.MaxIDBytes, no control characters; empty is
// absent. Out of bounds is a 400 naming it, before any query runs.
func idParam(q url.Values, name string) (string, error) {
	v := q.Get(name)
	if len(v) > ledger.MaxIDBytes {
		return "", errInvalidParam(name, fmt.Sprintf("is longer than %d bytes", ledger.MaxIDBytes))
	}
	if !utf8.ValidString(v) {
		return "", errInvalidParam(name, "is not valid UTF-8")
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return "", errInvalidParam(name, "contains a control character")
		}
	}
	return v, nil
}

// checkID refuses a body identifier that the ledger would (empty, blank,
// longer than ledger.MaxIDBytes, not UTF-8, a control character) with 422
// naming field, for a handler that must judge it before calling the ledger.
func checkID(field, v string) error {
	switch {
	case strings.TrimSpace(v) == "":
		return errInvalidField(field, "is empty or blank")
	case len(v) > ledger.MaxIDBytes:
		return errInvalidField(field, fmt.Sprintf("is longer than %d bytes", ledger.MaxIDBytes))
	case !utf8.ValidString(v):
		return errInvalidField(field, "is not valid UTF-8")
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return errInvalidField(field, "contains a control character")
		}
	}
	return nil
}

// apiEvents renders events with their free text cut to the documented
// bounds (rows written by other clients may hold longer ones) and at most
// max of them; never nil.
func apiEvents(evs []ledger.Event, max int) []ledger.Event {
	if len(evs) > max {
		evs = evs[:max]
	}
	out := make([]ledger.Event, len(evs))
	for i, e := range evs {
		e.Reason = ledger.Truncate(e.Reason, MaxReasonRunes)
		e.Actor = ledger.Truncate(e.Actor, MaxActorRunes)
		out[i] = e
	}
	return out
}
