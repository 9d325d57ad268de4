package bench_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/internal/pgserver"
	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/tools/bench"
)

// steadySample is a steady state as the report sees it: flat, the size of
// the last third 5% over the first's.
func steadySample() *bench.SteadyResult {
	ms := time.Millisecond
	third := func(day int, bytes int64, sweep, page time.Duration, scans int64) bench.SteadyThird {
		return bench.SteadyThird{LastDay: day, SteadyMeasures: bench.SteadyMeasures{Rows: 80_000, Events: 240_000, Bytes: bytes,
			Sweep: bench.Dist{N: 200, P50: sweep}, Overview: bench.Dist{N: 100, P50: page}, List: bench.Dist{N: 100, P50: page / 2},
			SweepBuffers: 40, OverviewBuffers: 300, ListBuffers: 60, SeqScans: scans}}
	}
	return &bench.SteadyResult{Days: 30, PerDay: 20_000, LongRunning: 2000,
		Completed: 3 * 24 * time.Hour, Failed: 9 * 24 * time.Hour, Stuck: 9 * 24 * time.Hour,
		Rounds: []bench.SteadyRound{{Day: 1, Swept: 0, SteadyMeasures: bench.SteadyMeasures{Rows: 22_000, Bytes: 10 << 20, Sweep: bench.Dist{N: 20, P50: ms}}}},
		Thirds: []bench.SteadyThird{
			third(10, 100<<20, ms, 10*ms, 12), third(20, 104<<20, ms, 11*ms, 0), third(30, 105<<20, 1200*time.Microsecond, 12*ms, 0),
		},
		Autovacuums: 40, Autoanalyzes: 30, Elapsed: 4 * time.Minute, Load: []string{"2.00", "2.00", "2.00"}}
}

func TestRetentionTargets(t *testing.T) {
	t.Parallel()
	r := sample()
	r.Sizes[1].Prunes = []bench.PruneResult{
		{Rows: 100_000, Events: 300_000, Duration: 4 * time.Second},                 // 25k/s
		{Archive: true, Rows: 100_000, Events: 300_000, Duration: 10 * time.Second}, // 10k/s
	}
	r.Steady = steadySample()
	got := map[string]bench.Target{}
	for _, tg := range r.Targets() {
		got[tg.Name] = tg
	}
	want := map[string]bool{
		"prune rate at 5M rows, archive off (delegations/s, 3 events each)":                    true,
		"steady state: table + index size at day 30 vs day 10":                                 true,
		"steady state: nothing-eligible sweep p50, last third vs first":                        true,
		"steady state: console overview page p50, last third vs first":                         true,
		"steady state: console delegation list page p50, last third vs first":                  true,
		"steady state: sequential scans of delegations and delegation_events, last two thirds": true,
	}
	for name, met := range want {
		tg, ok := got[name]
		if !ok {
			t.Errorf("no target %q; have %v", name, got)
			continue
		}
		if !tg.Known || tg.Met != met {
			t.Errorf("%s: known %v met %v (%s), want met %v", name, tg.Known, tg.Met, tg.Figure, met)
		}
	}
	// Slower, bigger, scanning: every target missed.
	r.Sizes[1].Prunes[0].Duration = 10 * time.Second
	r.Steady.Thirds[2].Bytes = 111 << 20
	r.Steady.Thirds[2].Sweep.P50 = 2 * time.Millisecond
	r.Steady.Thirds[2].Overview.P50 = 16 * time.Millisecond
	r.Steady.Thirds[2].List.P50 = 8 * time.Millisecond
	r.Steady.Thirds[1].SeqScans = 1
	r.Steady.Thirds[2].SweepBuffers = 61
	r.Steady.Thirds[2].OverviewBuffers = 451
	r.Steady.Thirds[2].ListBuffers = 91
	for _, tg := range r.Targets() {
		if _, ok := want[tg.Name]; ok && tg.Met {
			t.Errorf("%s met with %s", tg.Name, tg.Figure)
		}
	}
}

func TestRenderRetention(t *testing.T) {
	t.Parallel()
	r := sample()
	r.Sizes[0].Prunes = []bench.PruneResult{{Rows: 100_000, Events: 300_000, Batches: 100, Duration: 5 * time.Second}}
	r.Steady = steadySample()
	md := bench.Render(r, "benchmarks")
	for _, s := range []string{
		"## Retention", "| 100k | off | 100k | 300k | 100 | 5.00 s | 20.0k |",
		"### Steady state over a simulated month", "libfaketime", "completed kept 3 days, failed 9 days, stuck 9 days",
		"| 3 | 30 | 80k | 240k | 105 MiB | 1.20 ms (40) | 12.0 ms (300) | 6.00 ms (60) | 0 |",
	} {
		if !strings.Contains(md, s) {
			t.Errorf("report lacks %q", s)
		}
	}
}

// TestRunSteadySmall runs three simulated days on a server under
// libfaketime: the clock moves, the sweeper marks exactly the rows left
// the day before (RunSteady checks), the pruner deletes the first day's
// completed rows on the last day.
func TestRunSteadySmall(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a server of its own")
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r, err := bench.RunSteady(ctx, bench.Config{Logf: t.Logf, Steady: bench.SteadyConfig{
		Days: 4, PerDay: 500, LongRunning: 20, SweepRuns: 2, ConsoleRuns: 2,
		Completed: 2 * 24 * time.Hour, Failed: 3 * 24 * time.Hour, Stuck: 3 * 24 * time.Hour}})
	switch {
	case errors.Is(err, pgserver.ErrNoPostgres) && os.Getenv(testdb.EnvRequireDB) == "":
		t.Skip(err)
	case err != nil && strings.Contains(err.Error(), "libfaketime, which is not installed") && os.Getenv(testdb.EnvRequireDB) == "":
		t.Skip(err) // make test and CI set SWEEPER_REQUIRE_DB and install it: there it fails
	case err != nil:
		t.Fatal(err)
	}
	if len(r.Rounds) != 4 || len(r.Thirds) != 3 {
		t.Fatalf("rounds %d, thirds %d", len(r.Rounds), len(r.Thirds))
	}
	// The sweeper marks the rows left the day before; the pruner deletes
	// what finished more than the retention ago by the moved clock: on day
	// 3 the completed rows of day 1, on day 4 those of day 2 and the failed
	// of day 1 (the stuck of day 1 became stuck on day 2).
	rd := r.Rounds
	if rd[0].Swept != 0 || rd[1].Swept != rd[0].Left || rd[3].Swept != rd[2].Left || rd[0].Left == 0 {
		t.Errorf("swept by day: %+v", rd)
	}
	if rd[1].Pruned != 0 || rd[2].Pruned != rd[0].Completed || rd[3].Pruned != rd[1].Completed+rd[0].Failed || rd[0].Failed == 0 {
		t.Errorf("pruned by day: %+v", rd)
	}
	for _, d := range r.Rounds {
		if d.Sweep.N != 2 || d.Overview.N != 2 || d.List.N != 2 || d.Bytes == 0 || d.SweepBuffers == 0 || d.OverviewBuffers == 0 || d.ListBuffers == 0 {
			t.Errorf("day %d: %+v", d.Day, d)
		}
	}
}
