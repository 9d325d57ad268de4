package console

import (
	"strings"
	"testing"
	"time"
)

func TestVisible(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, in string
		max      int
		want     string
	}{
		{"plain", "hello", 10, "hello"},
		{"cut", "abcdef", 3, "abc…"},
		{"runes, not bytes", "ééééé", 4, "éééé…"},
		{"rtl override", "a\u202Eb", 10, "a⟨U+202E⟩b"},
		{"isolates", "\u2066x\u2069", 10, "⟨U+2066⟩x⟨U+2069⟩"},
		{"zero width", "a\u200Bb\u200Dc\uFEFF", 20, "a⟨U+200B⟩b⟨U+200D⟩c⟨U+FEFF⟩"},
		{"controls", "a\x00b\x1bc\u0085", 20, "a⟨U+0000⟩b⟨U+001B⟩c⟨U+0085⟩"},
		{"newline and tab kept", "a\nb\tc", 10, "a\nb\tc"},
		{"line separator", "a\u2028b", 10, "a⟨U+2028⟩b"},
		{"hangul filler", "a\u3164b", 10, "a⟨U+3164⟩b"},
		{"invalid UTF-8", "a\xffb", 10, "a\uFFFDb"},
		{"a real U+FFFD stays", "a\uFFFDb", 10, "a\uFFFDb"},
		{"html is left to html/template", "<b>", 10, "<b>"},
	} {
		if got := visible(c.in, c.max); got != c.want {
			t.Errorf("%s: visible(%q, %d) = %q, want %q", c.name, c.in, c.max, got, c.want)
		}
	}
}

func TestRelative(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for d, want := range map[time.Duration]string{
		0:                               "just now",
		4 * time.Minute:                 "4 min ago",
		59 * time.Second:                "59 s ago",
		-90 * time.Minute:               "in 1 h 30 min",
		3 * time.Hour:                   "3 h ago",
		50 * time.Hour:                  "2 d 2 h ago",
		48 * time.Hour:                  "2 d ago",
		-(5*time.Hour + 59*time.Minute): "in 5 h 59 min",
	} {
		if got := relative(now.Add(-d), now); got != want {
			t.Errorf("relative(-%s) = %q, want %q", d, got, want)
		}
	}
	if relative(time.Time{}, now) != "" || formatUTC(time.Time{}) != "—" {
		t.Error("the zero time is shown")
	}
	if got := formatUTC(time.Date(2026, 1, 1, 13, 4, 5, 0, time.FixedZone("CET", 3600))); got != "2026-01-01 12:04:05 UTC" {
		t.Errorf("formatUTC = %q", got)
	}
}

func TestChartGeometry(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	counts := make([]int64, 360)
	counts[0], counts[100], counts[359] = 1, 4, 2
	c := newChart(counts, start, 720, 120)
	if c.Max != 4 || c.Total != 7 || len(c.Bars) != 3 || len(c.Gridlines) != 7 {
		t.Fatalf("chart %+v", c)
	}
	for _, b := range c.Bars {
		if b.Y < 0 || b.Y+b.H != 120 || b.X < 0 || b.X+b.W > 720 {
			t.Errorf("bar %+v leaves the box", b)
		}
	}
	if c.Bars[1].H != 120 || c.Bars[0].H != 30 || !c.Bars[1].At.Equal(start.Add(100*time.Minute)) {
		t.Errorf("bars %+v", c.Bars)
	}
}

func TestSessionsExpireAndStayBounded(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := newSessions(time.Hour, func() time.Time { return now })
	s.max = 3
	var ids []string
	for i := range 5 {
		id, sess := s.create("tok")
		if len(id) != 43 || len(sess.csrf) != 43 || strings.Contains(id, sess.csrf) {
			t.Fatalf("session %d: id %q csrf %q", i, id, sess.csrf)
		}
		ids = append(ids, id)
		now = now.Add(time.Second)
	}
	if len(s.m) != 3 {
		t.Fatalf("%d sessions kept, want 3", len(s.m))
	}
	if _, ok := s.get(ids[0]); ok {
		t.Error("the oldest session survived eviction")
	}
	if _, ok := s.get(ids[4]); !ok {
		t.Error("the newest session was evicted")
	}
	now = now.Add(time.Hour)
	if _, ok := s.get(ids[4]); ok {
		t.Error("an expired session is still live")
	}
	if _, ok := s.get(""); ok {
		t.Error("the empty id is a session")
	}
}
