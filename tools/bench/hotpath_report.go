package bench

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Issue 19's targets, judged by hotPathTargets.
const (
	// HotPathDrainSpeedup is the latest schema's drain over version 5's,
	// at each size.
	HotPathDrainSpeedup = 1.4
	// HotPathDrainVsLimit is the latest schema's drain against the
	// same-work limit, at each size.
	HotPathDrainVsLimit = 0.9
	// HotPathNothingEligible bounds the nothing-eligible sweep (p50) at
	// the largest size.
	HotPathNothingEligible = time.Millisecond
)

// HotPathSingleP99 bounds the p99 of single heartbeats over HTTP at each
// request rate (open loop), at the largest size.
var HotPathSingleP99 = map[int]time.Duration{1000: 10 * time.Millisecond, 2000: 25 * time.Millisecond}

// DrainSpeedup is how much faster the latest schema drains than version 5:
// version 5's server CPU per marked row over the latest's (byCPU), or, when
// the server's CPU could not be read, the latest's rows/s over version 5's.
// ok is false when either drain is missing.
func (s HotPathSize) DrainSpeedup() (x float64, byCPU, ok bool) {
	if len(s.Drain) == 0 || len(s.DrainPrev) == 0 {
		return 0, false, false
	}
	if cur, prev := cpuPerRow(s.Drain), cpuPerRow(s.DrainPrev); cur > 0 && prev > 0 {
		return prev / cur, true, true
	}
	return ratio(rate(s.Drain), rate(s.DrainPrev)), false, true
}

// DrainVsLimit is the latest schema's drain against the same-work limit:
// the limit's server CPU per row over the drain's (byCPU), or, when the
// server's CPU could not be read, the drain's rows/s over the limit's. ok is
// false when either is missing.
func (s HotPathSize) DrainVsLimit() (x float64, byCPU, ok bool) {
	if len(s.Drain) == 0 || len(s.Limit) == 0 {
		return 0, false, false
	}
	if cur, lim := cpuPerRow(s.Drain), cpuPerRow(s.Limit); cur > 0 && lim > 0 {
		return lim / cur, true, true
	}
	return ratio(rate(s.Drain), rate(s.Limit)), false, true
}

// Change is the status change of kind ("ledger" or "sql") on schema
// version (0 when that was not measured).
func (s HotPathSize) Change(kind string, version uint) (ChangeCost, bool) {
	for _, c := range s.Changes {
		if c.Kind == kind && c.Version == version {
			return c, true
		}
	}
	return ChangeCost{}, false
}

// Single is the single heartbeats at rate, if measured.
func (r *HotPathResults) Single(rate int) (SingleBeats, bool) {
	for _, s := range r.Singles {
		if s.Rate == rate {
			return s, true
		}
	}
	return SingleBeats{}, false
}

// hotPathBatchPaths are the batch heartbeat paths of issue 19's HOT target.
var hotPathBatchPaths = map[string]bool{PathMany: true, PathCoalesce: true, PathHTTPMany: true}

// hotPathTargets adds issue 19's targets, from the hot path measurement.
func (r *Results) hotPathTargets(add func(name, want string, known, met bool, figure string)) {
	hp := r.HotPath
	if hp == nil {
		add("hot path against version 5 (issue 19)", "", false, false, "not measured")
		return
	}
	latest, prev := hp.Latest, hp.Previous
	for _, s := range hp.Sizes {
		x, byCPU, ok := s.DrainSpeedup()
		fig := fmt.Sprintf("%.2f× (wall %s vs %s rows/s)", x, rateStr(rate(s.Drain)), rateStr(rate(s.DrainPrev)))
		if byCPU {
			fig = fmt.Sprintf("%.2f× (server CPU %.1f vs %.1f µs per row; wall %s vs %s rows/s)", x,
				cpuPerRow(s.Drain), cpuPerRow(s.DrainPrev), rateStr(rate(s.Drain)), rateStr(rate(s.DrainPrev)))
		}
		add(fmt.Sprintf("sweep drain, version %d vs version %d at %s rows (issue 19)", latest, prev, count(s.Rows)),
			fmt.Sprintf("≥ %.1f×", HotPathDrainSpeedup), ok, x >= HotPathDrainSpeedup, fig)
		y, byCPU, ok := s.DrainVsLimit()
		fig = fmt.Sprintf("%.2f (wall %s vs %s rows/s)", y, rateStr(rate(s.Drain)), rateStr(rate(s.Limit)))
		if byCPU {
			fig = fmt.Sprintf("%.2f (server CPU %.1f vs %.1f µs per row; wall %s vs %s rows/s)", y,
				cpuPerRow(s.Drain), cpuPerRow(s.Limit), rateStr(rate(s.Drain)), rateStr(rate(s.Limit)))
		}
		add(fmt.Sprintf("sweep drain, version %d, vs the same-work limit at %s rows (issue 19)", latest, count(s.Rows)),
			fmt.Sprintf("≥ %.1f", HotPathDrainVsLimit), ok, y >= HotPathDrainVsLimit, fig)
	}
	if n := len(hp.Sizes); n > 0 {
		big := hp.Sizes[n-1]
		add(fmt.Sprintf("nothing-eligible sweep at %s rows, version %d (p50, issue 19)", count(big.Rows), latest),
			"≤ 1 ms", big.Nothing.N > 0, big.Nothing.P50 <= HotPathNothingEligible,
			fmt.Sprintf("%s (p95 %s; version %d: %s)", ms(big.Nothing.P50), ms(big.Nothing.P95), prev, ms(big.NothingPre.P50)))
		for _, k := range []struct{ kind, what string }{
			{"ledger", "status change through the ledger (an API transition)"},
			{"sql", "status change as a raw UPDATE"},
		} {
			before, okB := big.Change(k.kind, prev)
			after, okA := big.Change(k.kind, latest)
			fig := "not measured"
			if okB && okA {
				fig = fmt.Sprintf("server CPU %s → %s per change; wall p50 %s → %s", us(before.ServerCPU), us(after.ServerCPU),
					us(before.Latency.P50), us(after.Latency.P50))
			}
			add(fmt.Sprintf("%s at %s rows, version %d → %d (issue 19)", k.what, count(big.Rows), prev, latest), "before / after",
				okB && okA, true, fig)
		}
	}
	for _, rt := range slices.Sorted(maps.Keys(HotPathSingleP99)) {
		want := HotPathSingleP99[rt]
		name := fmt.Sprintf("single heartbeat over HTTP at %d requests/s, open loop (p99, hot path, issue 19)", rt)
		s, ok := hp.Single(rt)
		if !ok {
			add(name, "≤ "+ms(want), false, false, "not measured")
			continue
		}
		fig := fmt.Sprintf("%s (p50 %s; sent at %.0f/s", ms(s.Latency.P99), ms(s.Latency.P50), s.Achieved)
		if len(s.LoadAvg) > 0 {
			fig += "; load " + strings.Join(s.LoadAvg, " ")
		}
		add(name, "≤ "+ms(want), s.Latency.N > 0, s.Latency.P99 <= want, fig+")")
	}
	var shares []string
	low, known := 1.0, false
	for _, row := range hp.Ingest {
		if !hotPathBatchPaths[row.Path] || row.Updates == 0 {
			continue
		}
		known = true
		low = min(low, row.HotShare())
		shares = append(shares, fmt.Sprintf("%s/%d %.0f%%", row.Path, row.Writers, 100*row.HotShare()))
	}
	fig := "not measured"
	if known {
		fig = strings.Join(shares, ", ")
	}
	add("HOT share of batch heartbeats (HeartbeatMany, Coalescer, POST /v1/heartbeats; issue 19)",
		fmt.Sprintf("≥ %.0f%%", 100*HotShareTarget), known, low >= HotShareTarget, fig)
}

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)) }

// renderHotPath writes the hot path measurement's section of the report.
func renderHotPath(w func(string, ...any), r *Results) {
	hp := r.HotPath
	if hp == nil {
		return
	}
	w("## The hot path against version %d (issue 19)\n\n", hp.Previous)
	w("`RunHotPath`, in the same run after the suite above, on a server of its own (%s, load average %s at its start, %s at its end),\n",
		orDash(hp.Machine.ServerKind), strings.Join(hp.Machine.LoadStart, " "), strings.Join(hp.Machine.LoadEnd, " "))
	w("in %s. At each size the same rows are loaded twice: a ledger on the latest schema (version %d) and one migrated only to\n",
		hp.Elapsed.Round(time.Second), hp.Latest)
	w("version %d (the schema before migration 000006, none of the columns of 7 to 9), on the same server. The latest is driven by\n", hp.Previous)
	w("this build's `sweep` and `ledger`; version %d by version %d's own statements (tools/bench/hotpath_v5.go, from commit 7ae4fde)\n", hp.Previous, hp.Previous)
	w("through version %d's triggers (a row audit trigger, a notification trigger per event statement).\n\n", hp.Previous)
	w("%s rows in flight at every size. *Drain*: %s stale rows (added, then `VACUUM ANALYZE`) marked by one sweep run, batches of 1000, notifications to\n",
		count(hp.InFlight), count(hp.Backlog))
	w("`delegation_stuck` with a listener attached, on each schema, and the *same-work limit* on the latest: the sweep's claim and\n")
	w("UPDATE, one audit event per row and the notifications as one statement per batch, triggers off. Version %d, latest, limit, then\n", hp.Previous)
	w("the reverse order (ABBA). *Server CPU* is the CPU time of every server process of the ledger's database during the drain\n")
	w("(from /proc; a local server only): on a loaded machine steadier than the wall time. The targets judge by it when it was read.\n\n")
	w("| ledger rows | drain rows/s: version %d / latest / limit | server CPU µs per row: version %d / latest / limit | latest over version %d | latest against the limit | nothing eligible p50: version %d / latest | load at the end |\n",
		hp.Previous, hp.Previous, hp.Previous, hp.Previous)
	w("|---:|---:|---:|---:|---:|---:|---|\n")
	for _, s := range hp.Sizes {
		x, _, _ := s.DrainSpeedup()
		y, _, _ := s.DrainVsLimit()
		w("| %s | %s / %s / %s | %.1f / %.1f / %.1f | %.2f× | %.2f | %s / %s | %s |\n", count(s.Rows),
			rateStr(rate(s.DrainPrev)), rateStr(rate(s.Drain)), rateStr(rate(s.Limit)),
			cpuPerRow(s.DrainPrev), cpuPerRow(s.Drain), cpuPerRow(s.Limit), x, y,
			ms(s.NothingPre.P50), ms(s.Nothing.P50), strings.Join(s.LoadAvg, " "))
	}
	w("\n*Status change*: %d rows per kind and schema moved from in_progress to completed, each in its own transaction, in rounds of\n", hp.Config.Changes)
	w("100 alternating between the schemas: *ledger* is what `POST /v1/delegations/{id}/transitions` runs (the writer's name and\n")
	w("the UPDATE in one round trip), *raw UPDATE* an `UPDATE ... SET status = 'completed'` by id. Latency is the client's.\n\n")
	w("| ledger rows | kind | version | mean | p50 | p99 | server CPU per change |\n|---:|---|---:|---:|---:|---:|---:|\n")
	for _, s := range hp.Sizes {
		for _, c := range s.Changes {
			w("| %s | %s | %d | %s | %s | %s | %s |\n", count(s.Rows), c.Kind, c.Version, us(c.Mean), us(c.Latency.P50),
				us(c.Latency.P99), us(c.ServerCPU))
		}
	}
	if len(hp.Singles) > 0 || len(hp.Ingest) > 0 {
		last := hp.Sizes[len(hp.Sizes)-1].Rows
		w("\nAt %s rows, on the latest: single heartbeats `POST /v1/delegations/{id}/heartbeat` to the built daemon, open loop at each\n", count(last))
		w("rate (as in *The HTTP API* above), and the heartbeat ingest's HOT shares (as in *Heartbeat ingest* above; *http-many* and the\n")
		w("second *many* with 4 writers are `POST /v1/heartbeats` and `HeartbeatMany` beside it).\n\n")
	}
	if len(hp.Singles) > 0 {
		w("| rate | sent at | p50 | p95 | p99 | max | the daemon's own mean | load |\n|---:|---:|---:|---:|---:|---:|---:|---|\n")
		for _, s := range hp.Singles {
			w("| %d/s | %.0f/s | %s | %s | %s | %s | %s | %s |\n", s.Rate, s.Achieved, ms(s.Latency.P50), ms(s.Latency.P95),
				ms(s.Latency.P99), ms(s.Latency.Max), ms(s.Server.Mean), strings.Join(s.LoadAvg, " "))
		}
		w("\n")
	}
	if len(hp.Ingest) > 0 {
		w("| path | writers | rows/s | HOT updates |\n|---|---:|---:|---:|\n")
		for _, row := range hp.Ingest {
			w("| %s | %d | %s | %.0f%% |\n", row.Path, row.Writers, rateStr(row.BeatsPerSec), 100*row.HotShare())
		}
		w("\n")
	}
	if len(hp.Problems) > 0 {
		w("Problems of the hot path measurement: %s.\n\n", strings.Join(hp.Problems, "; "))
	}
}
