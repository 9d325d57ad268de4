package bench

import (
	"fmt"
	"strings"
	"time"
)

// NothingEligibleTarget14 is issue 14's bound on the nothing-eligible sweep
// at the largest size, with the live rows on mixed heartbeat timeouts.
const NothingEligibleTarget14 = time.Millisecond

// HotShareTarget is issue 14's bound on the share of heartbeats within the
// minute that are HOT updates.
const HotShareTarget = 0.95

// consoleTargets adds the targets of the console (issue 11) and of the
// attempts schema (issue 14).
func (r *Results) consoleTargets(add func(name, want string, known, met bool, figure string)) {
	if n := len(r.Sizes); n > 0 {
		big := r.Sizes[n-1]
		add(fmt.Sprintf("nothing-eligible sweep at %s rows, %s in flight on mixed heartbeat timeouts (p50, issue 14)", count(big.Rows), count(r.Config.InFlight)),
			"≤ 1 ms", big.Nothing.N > 0, big.Nothing.P50 <= NothingEligibleTarget14, ms(big.Nothing.P50))
		name := fmt.Sprintf("console pages p95 at %s rows, %s in flight (server time, each page, reader and caller)", count(big.Rows), count(r.Config.InFlight))
		if c := big.Console; c != nil {
			worst, ok := c.Max()
			add(name, "≤ 50 ms", ok, ok && worst.Time.P95 <= ConsoleP95Target,
				fmt.Sprintf("slowest: %s as %s, p95 %s (max %s)", worst.Page, worst.Role, ms(worst.Time.P95), ms(worst.Time.Max)))
		} else {
			add(name, "≤ 50 ms", false, false, "not measured")
		}
	}
	if p := r.ConsolePlan; p != nil {
		add(fmt.Sprintf("console statement plans at %s rows (EXPLAIN ANALYZE, custom and generic)", count(p.Rows)), "no sequential scan",
			true, p.Passed, passFail(p.Passed))
	}
	hot, ok := r.minHotShare()
	fig := "not measured"
	if ok {
		fig = fmt.Sprintf("lowest %.0f%% (%s, %d writers)", 100*hot.HotShare(), hot.Path, hot.Writers)
	}
	add("heartbeat HOT share within the minute (every ingest path but the new-minute one)", "≥ 95%", ok,
		ok && hot.HotShare() >= HotShareTarget, fig)
}

// minHotShare is the ingest row with the lowest HOT share among the beats
// within the minute.
func (r *Results) minHotShare() (IngestRow, bool) {
	var low IngestRow
	found := false
	for _, row := range r.Ingest {
		if row.Path == PathManyNewMinute || row.Updates == 0 {
			continue
		}
		if !found || row.HotShare() < low.HotShare() {
			low, found = row, true
		}
	}
	return low, found
}

// renderConsole writes the console section of the report.
func renderConsole(w func(string, ...any), r *Results) {
	var sizes []SizeResult
	for _, s := range r.Sizes {
		if s.Console != nil && len(s.Console.Pages) > 0 {
			sizes = append(sizes, s)
		}
	}
	if len(sizes) == 0 && r.ConsolePlan == nil {
		return
	}
	w("## Console pages\n\n")
	if len(sizes) > 0 {
		c0 := sizes[0].Console
		w("The console (`console.Handler`) served in process on a loopback listener over each loaded ledger, before the sweeps\n")
		w("run there (the ledger as loaded: history with %d audit events a row, live rows with %d; one history row in %d is a\n", eventsPerHistoryRow, eventsPerLiveRow, retryEvery)
		w("second attempt). Each page is requested %d times after %d unmeasured requests, one at a time, with a Bearer token:\n", consoleRequestsOf(sizes), consoleWarmup)
		w("*reader* sees every row, *caller* only `%s`'s rows (every statement then has a caller filter). The time is the\n", c0.Caller)
		w("handler's, as the server sees it: a wrapper around `ServeHTTP`, from the request's arrival to the page's last byte\n")
		w("written (token lookup, queries, rendering). The connection pool has 4 connections, like a small daemon's.\n\n")
		for _, s := range sizes {
			w("**%s rows** (%s audit events):\n\n", count(s.Rows), countEvents(s.Console.Events))
			w("| page | request | reader p50 / p95 / max | caller p50 / p95 / max |\n|---|---|---:|---:|\n")
			byPage := map[string]map[string]ConsolePage{}
			var order []string
			for _, p := range s.Console.Pages {
				if byPage[p.Page] == nil {
					byPage[p.Page] = map[string]ConsolePage{}
					order = append(order, p.Page)
				}
				byPage[p.Page][p.Role] = p
			}
			for _, name := range order {
				rd, cl := byPage[name]["reader"], byPage[name]["caller"]
				path := rd.Path
				if path == "" {
					path = cl.Path
				}
				w("| %s | `%s` | %s | %s |\n", name, shortPath(path), pageDist(rd), pageDist(cl))
			}
			w("\n")
		}
	}
	if p := r.ConsolePlan; p != nil {
		w("Plans: `SWEEPER_CONSOLE_PLAN_URL=<the %s-row ledger> go test -run TestQueryPlans ./console/`: **%s** in %s: every statement\n",
			count(p.Rows), passFail(p.Passed), p.Duration.Round(time.Second))
		w("of `console/queries.go` with this run's values, `EXPLAIN (ANALYZE, BUFFERS)`, custom and generic plans; a sequential scan fails it.\n\n")
		if p.Output != "" {
			w("```\n%s\n```\n\n", strings.TrimSpace(p.Output))
		}
	}
}

func consoleRequestsOf(sizes []SizeResult) int {
	for _, s := range sizes {
		for _, p := range s.Console.Pages {
			return p.Time.N
		}
	}
	return 0
}

func pageDist(p ConsolePage) string {
	if p.Time.N == 0 {
		return "-"
	}
	return fmt.Sprintf("%s / %s / %s", ms(p.Time.P50), ms(p.Time.P95), ms(p.Time.Max))
}

// shortPath shortens a long request (a cursor) for the table.
func shortPath(p string) string {
	const keep = len("cursor=") + 8
	if i := strings.Index(p, "cursor="); i >= 0 && len(p) > i+keep {
		return p[:i+keep] + "…"
	}
	return p
}

func countEvents(n int64) string {
	switch {
	case n >= 1_000_000:
		return fmt.Sprintf("%.1fM", float64(n)/1e6)
	case n >= 1000:
		return fmt.Sprintf("%.0fk", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}
