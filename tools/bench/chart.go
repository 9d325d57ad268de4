package bench

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Charts writes the report's PNG charts into dir.
func Charts(r *Results, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if len(r.Sizes) > 0 {
		if err := sweepChart(r, filepath.Join(dir, "sweep-vs-size.png")); err != nil {
			return err
		}
		if err := drainChart(r, filepath.Join(dir, "drain-vs-size.png")); err != nil {
			return err
		}
	}
	if len(r.Ingest) > 0 {
		if err := ingestChart(r, filepath.Join(dir, "ingest-vs-writers.png")); err != nil {
			return err
		}
	}
	return nil
}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	return p
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func sweepChart(r *Results, path string) error {
	p := newPlot(fmt.Sprintf("Sweep run time, %s rows in flight", count(r.Config.InFlight)), "ledger rows", "ms per run (log scale)")
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = sizeTicks(r)
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = logTicks{label: func(v float64) string { return fmt.Sprintf("%g", v) }}
	series := []struct {
		name string
		of   func(SizeResult) Dist
	}{
		{"nothing eligible, p50", func(s SizeResult) Dist { return s.Nothing }},
		{"nothing eligible, p95", func(s SizeResult) Dist { return s.Nothing }},
		{"nothing eligible, the once-a-minute run that recounts, p50", func(s SizeResult) Dist { return s.NothingRecount }},
		{fmt.Sprintf("%s eligible, p50", count(r.Config.Eligible)), func(s SizeResult) Dist { return s.FewEligible }},
	}
	// A log scale has no zero: a figure that was not measured (a
	// -progress-only run has no few-eligible runs) is left out.
	var args []any
	for i, sr := range series {
		var xy plotter.XYs
		for _, s := range r.Sizes {
			d := sr.of(s).P50
			if i == 1 {
				d = sr.of(s).P95
			}
			if d > 0 {
				xy = append(xy, plotter.XY{X: float64(s.Rows), Y: msOf(d)})
			}
		}
		if len(xy) > 0 {
			args = append(args, sr.name, xy)
		}
	}
	target := plotter.XYs{{X: float64(r.Sizes[0].Rows), Y: 5}, {X: float64(r.Sizes[len(r.Sizes)-1].Rows), Y: 5}}
	if err := plotutil.AddLinePoints(p, args...); err != nil {
		return err
	}
	if err := addTarget(p, "target for nothing eligible: 5 ms", target); err != nil {
		return err
	}
	p.Y.Max *= 30 // room for the legend (log scale)
	return p.Save(7*vg.Inch, 4.5*vg.Inch, path)
}

func drainChart(r *Results, path string) error {
	p := newPlot(fmt.Sprintf("Drain of a %s-row backlog", count(r.Config.Backlog)), "ledger rows", "rows marked stuck per second")
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = sizeTicks(r)
	var sweepXY, bareXY, trigXY plotter.XYs
	for _, s := range r.Sizes {
		x := float64(s.Rows)
		sweepXY = append(sweepXY, plotter.XY{X: x, Y: s.DrainRate()})
		bareXY = append(bareXY, plotter.XY{X: x, Y: s.BareRate()})
		trigXY = append(trigXY, plotter.XY{X: x, Y: s.TriggerRate()})
	}
	if err := plotutil.AddLinePoints(p,
		"sweep (audit events + notifications)", sweepXY,
		"bare UPDATE, triggers off (the limit)", bareXY,
		"bare UPDATE, table triggers on (audit events)", trigXY,
	); err != nil {
		return err
	}
	p.Y.Min = 0
	p.Y.Max *= 1.4 // room for the legend
	return p.Save(7*vg.Inch, 4.5*vg.Inch, path)
}

func ingestChart(r *Results, path string) error {
	p := newPlot("Heartbeat ingest", "writers", "heartbeats per second (log scale)")
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = logTicks{label: rateStr}
	p.X.Tick.Marker = plot.ConstantTicks(writerTicks())
	var args []any
	for _, path := range []string{PathSingle, PathMany, PathCoalesce, PathManyNewMinute} {
		var xy plotter.XYs
		for _, row := range r.Ingest {
			if row.Path == path && row.Note == "" && row.BeatsPerSec > 0 {
				xy = append(xy, plotter.XY{X: float64(row.Writers), Y: row.BeatsPerSec})
			}
		}
		if len(xy) > 0 {
			args = append(args, pathLabel[path], xy)
		}
	}
	if err := plotutil.AddLinePoints(p, args...); err != nil {
		return err
	}
	target := plotter.XYs{{X: 1, Y: 40_000}, {X: float64(IngestWriters[len(IngestWriters)-1]), Y: 40_000}}
	if err := addTarget(p, "target for batched, 4 writers: 40k/s", target); err != nil {
		return err
	}
	p.X.Min, p.X.Max = 0.5, float64(IngestWriters[len(IngestWriters)-1])+0.5
	p.Y.Max *= 8 // room for the legend (log scale)
	return p.Save(7*vg.Inch, 4.5*vg.Inch, path)
}

var pathLabel = map[string]string{
	PathSingle:        "Heartbeat (one row per statement)",
	PathMany:          "HeartbeatMany (1000 per statement)",
	PathCoalesce:      "Coalescer.Beat (many goroutines)",
	PathManyNewMinute: "HeartbeatMany, every beat into a new minute (no HOT)",
}

// addTarget draws a target as a dashed black line.
func addTarget(p *plot.Plot, name string, xys plotter.XYs) error {
	l, err := plotter.NewLine(xys)
	if err != nil {
		return err
	}
	l.LineStyle.Color = color.Black
	l.LineStyle.Dashes = []vg.Length{vg.Points(6), vg.Points(3)}
	p.Add(l)
	p.Legend.Add(name, l)
	return nil
}

// logTicks labels a log axis at 1, 2 and 5 times powers of ten.
type logTicks struct{ label func(float64) string }

// A range that does not start above zero (a zero figure on the axis: a
// measurement that did not run) gets no ticks below hi/1e6: from 0, the
// powers of ten would never grow (0 * 10 is 0) and the loop never end.
func (t logTicks) Ticks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	if !(hi > 0) || math.IsInf(hi, 0) {
		return nil
	}
	if !(lo > 0) {
		lo = hi / 1e6
	}
	for p := math.Pow(10, math.Floor(math.Log10(lo))); p > 0 && p <= hi; p *= 10 {
		for _, m := range []float64{1, 2, 5} {
			if v := p * m; v >= lo && v <= hi {
				ts = append(ts, plot.Tick{Value: v, Label: t.label(v)})
			}
		}
	}
	return ts
}

func writerTicks() []plot.Tick {
	var ts []plot.Tick
	for _, w := range IngestWriters {
		ts = append(ts, plot.Tick{Value: float64(w), Label: fmt.Sprint(w)})
	}
	return ts
}

func sizeTicks(r *Results) plot.Ticker {
	var ts []plot.Tick
	for _, s := range r.Sizes {
		ts = append(ts, plot.Tick{Value: float64(s.Rows), Label: count(s.Rows)})
	}
	return plot.ConstantTicks(ts)
}
