package ledger

import (
	"strings"
	"unicode/utf8"
)

// Limits on what the ledger stores. Ids and keys longer than MaxIDBytes are
// refused; previews and error details longer than their limit are truncated
// on a rune boundary, ending with "…". The schema's CHECKs hold the same
// limits for writers that bypass this package.
const (
	MaxIDBytes            = 255
	MaxTaskPreviewRunes   = 2000
	MaxResultPreviewRunes = 2000
	MaxErrorDetailRunes   = 8000
)

// Truncate shortens s to at most max runes, cutting on a rune boundary and
// ending with "…" when it cut anything. It expects valid UTF-8.
func Truncate(s string, max int) string {
	if max <= 0 {
		return ""
	}
	if len(s) <= max || utf8.RuneCountInString(s) <= max {
		return s
	}
	var b strings.Builder
	n := 0
	for _, r := range s {
		if n == max-1 {
			break
		}
		b.WriteRune(r)
		n++
	}
	b.WriteString("…")
	return b.String()
}

// checkID validates a required identifier: present, not blank, at most
// MaxIDBytes, valid UTF-8, no NUL or other control characters.
func checkID(field, v string) error {
	if strings.TrimSpace(v) == "" {
		if v == "" {
			return &FieldError{Field: field, Reason: "is empty"}
		}
		return &FieldError{Field: field, Reason: "is blank"}
	}
	if len(v) > MaxIDBytes {
		return &FieldError{Field: field, Reason: "is longer than 255 bytes"}
	}
	return checkText(field, v, true)
}

// checkText validates free text: valid UTF-8 and no NUL (PostgreSQL text
// cannot hold it). Identifiers also refuse other control characters.
func checkText(field, v string, identifier bool) error {
	if !utf8.ValidString(v) {
		return &FieldError{Field: field, Reason: "is not valid UTF-8"}
	}
	for _, r := range v {
		if r == 0 {
			return &FieldError{Field: field, Reason: "contains a NUL byte"}
		}
		if identifier && (r < 0x20 || r == 0x7f) {
			return &FieldError{Field: field, Reason: "contains a control character"}
		}
	}
	return nil
}
