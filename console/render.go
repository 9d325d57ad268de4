package console

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"math"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// staticFiles is the static directory, served under /static/.
var staticFiles, _ = fs.Sub(staticFS, "static")

// Display bounds of hostile or merely long text.
const (
	cellRunes   = 80   // a table cell
	detailRunes = 8000 // the detail page (the ledger's largest column)
)

// funcs are the template functions. Every string from the ledger goes
// through text (or id) before it is shown.
var funcs = template.FuncMap{
	"text":  visible,
	"short": func(s string) string { return visible(s, cellRunes) },
	"ts":    formatUTC,
	"iso":   func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"ago":   relative,
	"tsp":   func(t *time.Time) string { return formatUTC(deref(t)) },
	"isop":  func(t *time.Time) string { return deref(t).UTC().Format(time.RFC3339) },
	"agop":  func(t *time.Time, now time.Time) string { return relative(deref(t), now) },
	"terminal": func(s fmt.Stringer) bool {
		switch s.String() {
		case "completed", "failed", "stuck":
			return true
		}
		return false
	},
	"dpath": detailHref,
	"inc":   func(n int) int { return n + 1 },
	"dur":   func(d time.Duration) string { return d.String() },
	// progress is a delegation's progress report in a table cell.
	"progress": func(b []byte) string { return visible(string(b), cellRunes) },
	"json": func(b []byte) string {
		if len(b) == 0 {
			return ""
		}
		return visible(string(b), detailRunes)
	},
}

func deref(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

// visible makes s safe to read as plain text, beyond the HTML escaping the
// templates do: control characters, bidirectional controls, zero-width and
// other invisible format characters are shown as ⟨U+XXXX⟩ (so a
// right-to-left override cannot reorder what follows and an id with a
// zero-width space cannot pass for another), invalid UTF-8 as U+FFFD, and
// the result is cut to max runes with "…".
func visible(s string, max int) string {
	var b strings.Builder
	n := 0
	for i, r := range s {
		if n >= max {
			b.WriteString("…")
			break
		}
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD"):
			b.WriteRune(utf8.RuneError)
		case r == '\n' || r == '\t':
			b.WriteRune(r)
		case unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || unicode.Is(unicode.Zl, r) ||
			unicode.Is(unicode.Zp, r) || r == '\u115F' || r == '\u1160' || r == '\u3164' || r == '\uFFA0':
			fmt.Fprintf(&b, "⟨U+%04X⟩", r)
		default:
			b.WriteRune(r)
		}
		n++
	}
	return b.String()
}

// formatUTC shows t in UTC to the second; "—" for the zero time.
func formatUTC(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// relative says how far t is from now: "4 min ago", "in 2 h 5 min".
func relative(t, now time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now.Sub(t)
	if d < 0 {
		return "in " + span(-d)
	}
	if d < time.Second {
		return "just now"
	}
	return span(d) + " ago"
}

// span writes d coarsely, two units at most.
func span(d time.Duration) string {
	s := int64(math.Round(d.Seconds()))
	switch {
	case s < 60:
		return fmt.Sprintf("%d s", s)
	case s < 3600:
		return fmt.Sprintf("%d min", s/60)
	case s < 86400:
		if m := s % 3600 / 60; m != 0 {
			return fmt.Sprintf("%d h %d min", s/3600, m)
		}
		return fmt.Sprintf("%d h", s/3600)
	default:
		if h := s % 86400 / 3600; h != 0 {
			return fmt.Sprintf("%d d %d h", s/86400, h)
		}
		return fmt.Sprintf("%d d", s/86400)
	}
}

// pages are the parsed templates: each page is the layout plus its own
// template.
type pages map[string]*template.Template

func parsePages() (pages, error) {
	layout, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return nil, fmt.Errorf("parsing the layout: %w", err)
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	ps := pages{}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.Must(layout.Clone()).ParseFS(templateFS, n)
		if err != nil {
			return nil, fmt.Errorf("parsing template %s: %w", n, err)
		}
		ps[base] = t
	}
	return ps, nil
}

// render executes page into a buffer first, so that a template error is a
// clean 500, not half a page.
func (ps pages) render(page string, data any) ([]byte, error) {
	t, ok := ps[page]
	if !ok {
		return nil, fmt.Errorf("no template %q", page)
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout.html", data); err != nil {
		return nil, fmt.Errorf("rendering %s: %w", page, err)
	}
	return buf.Bytes(), nil
}

// bar is one column of the overview's chart.
type bar struct {
	X, Y, W, H float64
	N          int64
	At         time.Time
}

// chart is the per-minute stuck chart as SVG geometry.
type chart struct {
	Bars      []bar
	Max       int64
	Total     int64
	W, H      float64
	Start     time.Time
	End       time.Time
	Gridlines []gridline
}

type gridline struct {
	X     float64
	Label string
}

// newChart lays out counts (one a minute from start) in a w×h box.
func newChart(counts []int64, start time.Time, w, h float64) chart {
	c := chart{W: w, H: h, Start: start, End: start.Add(time.Duration(len(counts)) * time.Minute)}
	for _, n := range counts {
		c.Max = max(c.Max, n)
		c.Total += n
	}
	if len(counts) == 0 {
		return c
	}
	bw := w / float64(len(counts))
	for i, n := range counts {
		if n == 0 {
			continue
		}
		bh := math.Max(1, h*float64(n)/float64(c.Max))
		c.Bars = append(c.Bars, bar{X: float64(i) * bw, Y: h - bh, W: math.Max(bw, 1), H: bh, N: n, At: start.Add(time.Duration(i) * time.Minute)})
	}
	for i := 0; i <= len(counts); i += 60 {
		c.Gridlines = append(c.Gridlines, gridline{X: float64(i) * bw, Label: start.Add(time.Duration(i) * time.Minute).UTC().Format("15:04")})
	}
	return c
}
