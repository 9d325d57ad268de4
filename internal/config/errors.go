package config

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// Error is one configuration mistake. Load, Validate and RequireDatabase
// return an *Error, or several joined with errors.Join, so a caller can tell
// a configuration error (errors.As) from a runtime failure.
type Error struct {
	// Key is the key's YAML path ("sweep.batch_size"), or the unknown key
	// or environment variable as it was written. It is empty for an error
	// about the file as a whole (unreadable, not YAML).
	Key string
	// Value is the offending value as written; for a connection string, as
	// DisplayDSN renders it (DSNNotShown when it does not parse). It is
	// empty when the value is not shown (unknown keys, whose values may be
	// secrets, are never echoed).
	Value string
	// Source says where the value came from: "file sweeper.yaml:12",
	// "env SWEEPER_SWEEP_BATCH_SIZE", "env DATABASE_URL",
	// "flag --sweep-batch-size" or "default". It is empty when unknown
	// (Validate on a Config built in code).
	Source string
	// Reason says what is wrong: "must be between 1 and 100000".
	Reason string
	// Err is the underlying error, if any (reading the file); Unwrap
	// returns it, so errors.Is(err, fs.ErrNotExist) works.
	Err error
}

// maxShownValue bounds how much of a value an error message repeats.
const maxShownValue = 120

// Error renders the error on one line, for example
//
//	config: sweep.batch_size: must be between 1 and 100000, got "0" (from env SWEEPER_SWEEP_BATCH_SIZE)
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("config: ")
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Reason)
	if e.Value == DSNNotShown {
		b.WriteString("; the value is not shown, as it may hold a password")
	} else if e.Value != "" {
		b.WriteString(", got ")
		b.WriteString(strconv.Quote(shorten(e.Value)))
	}
	if e.Source != "" {
		b.WriteString(" (from ")
		b.WriteString(e.Source)
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap returns the underlying error, or nil.
func (e *Error) Unwrap() error { return e.Err }

// shorten cuts s to at most maxShownValue bytes on a rune boundary.
func shorten(s string) string {
	if len(s) <= maxShownValue {
		return s
	}
	cut := maxShownValue
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
