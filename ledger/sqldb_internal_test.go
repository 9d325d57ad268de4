package ledger

import (
	"slices"
	"testing"
	"time"
)

func TestParseTextArray(t *testing.T) {
	for in, want := range map[string][]string{
		`{}`:                      {},
		`{failed,stuck}`:          {"failed", "stuck"},
		`{"a b","c,d","e\"f\\g"}`: {"a b", "c,d", `e"f\g`},
		`{x,""}`:                  {"x", ""},
	} {
		got, err := parseTextArray(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("parseTextArray(%s) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{``, `failed`, `{a,NULL}`, `{"a}`, `{{a},{b}}`} {
		if got, err := parseTextArray(bad); err == nil {
			t.Errorf("parseTextArray(%s) = %q, want an error", bad, got)
		}
	}
	// What textArray writes, parseTextArray reads back.
	in := []string{"plain", `quo"te`, `back\slash`, "com,ma", "{brace}", ""}
	got, err := parseTextArray(textArray(len(in), func(i int) *string { return &in[i] }))
	if err != nil || !slices.Equal(got, in) {
		t.Errorf("round trip = %q, %v", got, err)
	}
}

func TestParseInterval(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"00:00:01":          time.Second,
		"00:10:00":          10 * time.Minute,
		"00:00:01.5":        1500 * time.Millisecond,
		"00:00:00.000001":   time.Microsecond,
		"1 day":             24 * time.Hour,
		"7 days":            7 * 24 * time.Hour,
		"1 day 02:03:04.25": 26*time.Hour + 3*time.Minute + 4250*time.Millisecond,
		"168:00:00":         168 * time.Hour,
		"-00:00:05":         -5 * time.Second,
	} {
		if got, err := parseInterval(in); err != nil || got != want {
			t.Errorf("parseInterval(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "1 mon", "P1D", "1", "00:00", "1 day x"} {
		if got, err := parseInterval(bad); err == nil {
			t.Errorf("parseInterval(%q) = %s, want an error", bad, got)
		}
	}
	if got := intervalText(90*time.Second + time.Microsecond); got != "90000001 microseconds" {
		t.Errorf("intervalText = %q", got)
	}
}
