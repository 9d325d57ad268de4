package bench

import (
	"fmt"
	"testing"
	"time"
)

// TestLogTicksEnd: a log axis whose range starts at zero (a figure that was
// not measured) gets a bounded set of ticks; before, the powers of ten
// started at 0 and the loop appended ticks until memory ran out (24 GB,
// killed, at the end of a -progress-only run).
func TestLogTicksEnd(t *testing.T) {
	lt := logTicks{label: func(v float64) string { return fmt.Sprint(v) }}
	for _, c := range []struct{ lo, hi float64 }{{0, 50}, {-1, 50}, {0, 0}, {0.5, 2000}} {
		ts := lt.Ticks(c.lo, c.hi)
		if len(ts) > 40 {
			t.Fatalf("Ticks(%v, %v): %d ticks", c.lo, c.hi, len(ts))
		}
		for _, tk := range ts {
			if tk.Value <= 0 || tk.Value > c.hi {
				t.Errorf("Ticks(%v, %v): tick %v outside (0, hi]", c.lo, c.hi, tk.Value)
			}
		}
	}
	if ts := lt.Ticks(0.5, 2000); len(ts) != 12 {
		t.Errorf("Ticks(0.5, 2000) = %d ticks, want 12 (1, 2, 5 times 1 to 1000, and 0.5)", len(ts))
	}
}

// TestChartsOfAPartialRun: the charts of a run that measured only some
// figures (a -progress-only run: no few-eligible runs, no drains) are
// written; before, a zero on the sweep chart's log scale panicked after
// the run's last measurement.
func TestChartsOfAPartialRun(t *testing.T) {
	r := &Results{Config: ConfigInfo{InFlight: 50_000, Eligible: 1000, Backlog: 100_000}}
	r.Sizes = []SizeResult{{Rows: 100_000, Nothing: Dist{N: 5, P50: 800 * time.Microsecond, P95: time.Millisecond}}}
	r.Ingest = []IngestRow{{Path: PathManyProgress, Writers: 4, BeatsPerSec: 50_000}}
	if err := Charts(r, t.TempDir()); err != nil {
		t.Fatal(err)
	}
}
