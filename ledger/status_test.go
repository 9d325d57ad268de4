package ledger_test

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tasksweeper/sweeper/ledger"
)

// The lifecycle written out by hand, so the table in status.go is checked
// against an independent statement of the rules, not against itself.
func TestTransitionAll36Pairs(t *testing.T) {
	t.Parallel()
	const (
		A = ledger.OutcomeApplied
		U = ledger.OutcomeUnchanged
		B = ledger.OutcomeRejectedBackward
		T = ledger.OutcomeRejectedTerminal
	)
	// rows: from; columns: to, in the order of ledger.Statuses.
	want := [6][6]ledger.Outcome{
		/* queued      */ {U, A, A, A, A, A},
		/* dispatched  */ {B, U, A, A, A, A},
		/* in_progress */ {B, B, U, A, A, A},
		/* completed   */ {T, T, T, U, T, T},
		/* failed      */ {T, T, T, T, U, T},
		/* stuck       */ {T, T, T, T, T, U},
	}
	n := 0
	for i, from := range ledger.Statuses {
		for j, to := range ledger.Statuses {
			n++
			if got := ledger.Transition(from, to); got != want[i][j] {
				t.Errorf("Transition(%s, %s) = %s, want %s", from, to, got, want[i][j])
			}
		}
	}
	if n != 36 {
		t.Fatalf("checked %d pairs, want 36", n)
	}
}

func TestRanksAndTerminal(t *testing.T) {
	t.Parallel()
	cases := []struct {
		s        ledger.Status
		rank     int
		terminal bool
	}{
		{ledger.StatusQueued, 0, false},
		{ledger.StatusDispatched, 1, false},
		{ledger.StatusInProgress, 2, false},
		{ledger.StatusCompleted, 3, true},
		{ledger.StatusFailed, 3, true},
		{ledger.StatusStuck, 3, true},
		{"bogus", -1, false},
	}
	for _, c := range cases {
		if c.s.Rank() != c.rank || c.s.Terminal() != c.terminal {
			t.Errorf("%q: rank %d terminal %v, want %d %v", c.s, c.s.Rank(), c.s.Terminal(), c.rank, c.terminal)
		}
	}
	if got := ledger.Sources(ledger.StatusStuck); len(got) != 3 || got[0] != ledger.StatusQueued || got[2] != ledger.StatusInProgress {
		t.Errorf("Sources(stuck) = %v, want the three non-terminal statuses", got)
	}
	if got := ledger.Sources(ledger.StatusQueued); len(got) != 0 {
		t.Errorf("Sources(queued) = %v, want none", got)
	}
}

func TestParseStatus(t *testing.T) {
	t.Parallel()
	for _, s := range ledger.Statuses {
		got, err := ledger.ParseStatus(string(s))
		if err != nil || got != s {
			t.Errorf("ParseStatus(%q) = %q, %v", s, got, err)
		}
	}
	for _, bad := range []string{"", "QUEUED", "in-progress", "done", " queued", "stuck\x00"} {
		_, err := ledger.ParseStatus(bad)
		var use *ledger.UnknownStatusError
		if !errors.As(err, &use) || use.Value != bad || !errors.Is(err, ledger.ErrInvalid) {
			t.Errorf("ParseStatus(%q) error = %v, want *UnknownStatusError naming it", bad, err)
		}
	}
}

func TestTruncate(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		in   string
		max  int
		want string
	}{
		{"short", "hello", 10, "hello"},
		{"exact", "hello", 5, "hello"},
		{"ascii cut", "hello world", 6, "hello…"},
		{"multibyte kept whole", "héllo wörld", 5, "héll…"},
		{"emoji", "🙂🙂🙂🙂", 3, "🙂🙂…"},
		{"cjk", "日本語のテキスト", 4, "日本語…"},
		{"zero", "abc", 0, ""},
		{"one", "abc", 1, "…"},
	}
	for _, c := range cases {
		got := ledger.Truncate(c.in, c.max)
		if got != c.want {
			t.Errorf("%s: Truncate(%q, %d) = %q, want %q", c.name, c.in, c.max, got, c.want)
		}
		if !utf8.ValidString(got) || utf8.RuneCountInString(got) > c.max {
			t.Errorf("%s: Truncate gave %q: invalid or too long", c.name, got)
		}
	}
}

func FuzzTruncate(f *testing.F) {
	for _, s := range []string{"", "abc", "héllo", "🙂🙂🙂", strings.Repeat("ü", 300)} {
		f.Add(s, 3)
	}
	f.Fuzz(func(t *testing.T, s string, max int) {
		if !utf8.ValidString(s) || max < 0 || max > 10000 {
			t.Skip()
		}
		got := ledger.Truncate(s, max)
		if !utf8.ValidString(got) {
			t.Fatalf("Truncate(%q, %d) = %q: invalid UTF-8", s, max, got)
		}
		if n := utf8.RuneCountInString(got); n > max {
			t.Fatalf("Truncate(%q, %d) = %q: %d runes", s, max, got, n)
		}
		if utf8.RuneCountInString(s) <= max && got != s {
			t.Fatalf("Truncate(%q, %d) = %q: changed a string that fits", s, max, got)
		}
		if got != s && !strings.HasPrefix(s, strings.TrimSuffix(got, "…")) {
			t.Fatalf("Truncate(%q, %d) = %q: not a prefix", s, max, got)
		}
	})
}

func FuzzParseStatus(f *testing.F) {
	for _, s := range ledger.Statuses {
		f.Add(string(s))
	}
	f.Add("")
	f.Add("in_progress\x00")
	f.Fuzz(func(t *testing.T, s string) {
		st, err := ledger.ParseStatus(s)
		if err == nil {
			if string(st) != s || !st.Valid() {
				t.Fatalf("ParseStatus(%q) = %q accepted", s, st)
			}
			return
		}
		if !errors.Is(err, ledger.ErrInvalid) {
			t.Fatalf("ParseStatus(%q): %v is not ErrInvalid", s, err)
		}
	})
}
