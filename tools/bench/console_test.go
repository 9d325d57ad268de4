package bench_test

import (
	"strings"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/tools/bench"
)

// consolePages is the number of pages timed per role.
const consolePages = 11

// checkConsole checks a run's console measurement: every page timed for
// both roles at every size, over a ledger with its audit log loaded.
func checkConsole(t *testing.T, r *bench.Results) {
	t.Helper()
	for _, s := range r.Sizes {
		c := s.Console
		if c == nil || len(c.Pages) != 2*consolePages {
			t.Fatalf("console at %d rows: %+v", s.Rows, c)
		}
		// 2 events per row.
		if want := int64(2 * s.Rows); c.Events != want {
			t.Errorf("console at %d rows read %d events, want %d", s.Rows, c.Events, want)
		}
		for _, p := range c.Pages {
			if p.Time.N != 3 || p.Time.P50 <= 0 || p.Bytes == 0 {
				t.Errorf("console page %s as %s at %d rows: %+v", p.Page, p.Role, s.Rows, p)
			}
		}
	}
}

// withConsole adds console figures to the sample: every page p50 5 ms, p95
// p95 (the detail pages faster).
func withConsole(r *bench.Results, p95 time.Duration) *bench.Results {
	for i := range r.Sizes {
		c := &bench.ConsoleResult{Caller: "caller-39", Events: int64(3 * r.Sizes[i].Rows)}
		for _, role := range []string{"reader", "caller"} {
			for _, page := range []string{"overview", "list", "next page", "detail"} {
				d := bench.Dist{N: 100, P50: 5 * time.Millisecond, P95: p95, Max: 2 * p95}
				if page == "detail" {
					d.P95 = time.Millisecond
				}
				path := "/delegations"
				if page == "next page" {
					path = "/delegations?cursor=dDE3NjQ2MTI0MDAwMDAwMDAwMDpoMTIzNDU2"
				}
				c.Pages = append(c.Pages, bench.ConsolePage{Page: page, Role: role, Path: path, Time: d, Bytes: 1000})
			}
		}
		r.Sizes[i].Console = c
	}
	r.ConsolePlan = &bench.PlanResult{Rows: 5_000_000, Passed: true, Duration: 3 * time.Second,
		Output: "list all custom 0.10 ms, buffers hit 12 read 0: Index Scan on delegations using idx_delegations_status"}
	return r
}

func TestConsoleTargets(t *testing.T) {
	t.Parallel()
	const pages = "console pages p95 at 5M rows, 50k in flight (server time, each page, reader and caller)"
	const plans = "console statement plans at 5M rows (EXPLAIN ANALYZE, custom and generic)"
	const nothing = "nothing-eligible sweep at 5M rows, 50k in flight on mixed heartbeat timeouts (p50, issue 14)"
	const hot = "heartbeat HOT share within the minute (every ingest path but the new-minute one)"
	targets := func(r *bench.Results) map[string]bench.Target {
		got := map[string]bench.Target{}
		for _, tg := range r.Targets() {
			got[tg.Name] = tg
		}
		return got
	}
	// Without a console measurement the page target is there, not measured.
	got := targets(sample())
	if tg, ok := got[pages]; !ok || tg.Known {
		t.Errorf("%s without a measurement: %+v (present %v)", pages, tg, ok)
	}
	got = targets(withConsole(sample(), 40*time.Millisecond))
	for name, met := range map[string]bool{pages: true, plans: true, nothing: true, hot: true} {
		tg, ok := got[name]
		if !ok || !tg.Known || tg.Met != met {
			t.Errorf("%s: %+v (present %v), want met %v", name, tg, ok, met)
		}
	}
	if f := got[pages].Figure; !strings.Contains(f, "40.0 ms") {
		t.Errorf("%s: figure %q names not the slowest p95", pages, f)
	}
	r := withConsole(sample(), 60*time.Millisecond)
	r.ConsolePlan.Passed = false
	r.Sizes[1].Nothing.P50 = 1500 * time.Microsecond
	r.Ingest[0].HotUpdates = 18_000 // 90%
	got = targets(r)
	for _, name := range []string{pages, plans, nothing, hot} {
		if tg := got[name]; !tg.Known || tg.Met {
			t.Errorf("%s met (or not measured) with %+v", name, tg)
		}
	}
	if f := got[hot].Figure; !strings.Contains(f, "90% (single, 1 writers)") {
		t.Errorf("%s: figure %q", hot, f)
	}
}

func TestRenderConsole(t *testing.T) {
	t.Parallel()
	md := bench.Render(withConsole(sample(), 40*time.Millisecond), "benchmarks")
	for _, s := range []string{
		"## Console pages", "**5M rows** (15.0M audit events):",
		"| page | request | reader p50 / p95 / max | caller p50 / p95 / max |",
		"| overview | `/delegations` | 5.00 ms / 40.0 ms / 80.0 ms | 5.00 ms / 40.0 ms / 80.0 ms |",
		"| next page | `/delegations?cursor=dDE3NjQ2…` |",
		"go test -run TestQueryPlans ./console/`: **pass**",
		"Index Scan on delegations using idx_delegations_status",
	} {
		if !strings.Contains(md, s) {
			t.Errorf("report lacks %q", s)
		}
	}
	if strings.Contains(bench.Render(sample(), "benchmarks"), "## Console pages") {
		t.Error("a run without console figures has a console section")
	}
}
