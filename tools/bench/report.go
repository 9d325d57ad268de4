package bench

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Target is one of issue 6's targets and whether the run met it.
type Target struct {
	Name   string
	Want   string
	Figure string
	Met    bool
	Known  bool // false when the run did not measure it
}

// Targets judges the results against the targets of the issue.
func (r *Results) Targets() []Target {
	var out []Target
	add := func(name, want string, known, met bool, figure string) {
		out = append(out, Target{Name: name, Want: want, Figure: figure, Met: known && met, Known: known})
	}
	if n := len(r.Sizes); n > 0 {
		big, small := r.Sizes[n-1], r.Sizes[0]
		fig := ms(big.Nothing.P50)
		if big.NothingRecount.N > 0 {
			fig += fmt.Sprintf(" (the once-a-minute run that also recounts the rows in flight: %s)", ms(big.NothingRecount.P50))
		}
		add(fmt.Sprintf("nothing-eligible sweep at %s rows, %s in flight (p50)", count(big.Rows), count(r.Config.InFlight)),
			"≤ 5 ms", big.Nothing.N > 0, big.Nothing.P50 <= 5*time.Millisecond, fig)
		if n > 1 {
			ratio := float64(big.Nothing.P50) / float64(small.Nothing.P50)
			add(fmt.Sprintf("T(%s) / T(%s), nothing eligible (p50)", count(big.Rows), count(small.Rows)),
				"≤ 1.5", big.Nothing.N > 0 && small.Nothing.N > 0, ratio <= 1.5, fmt.Sprintf("%.2f", ratio))
		}
		for _, s := range r.Sizes {
			ratio := s.DrainRate() / s.BareRate()
			add(fmt.Sprintf("drain with audit + notify vs bare UPDATE (triggers off) at %s rows", count(s.Rows)),
				"≥ 80%", len(s.Drains) > 0 && len(s.BareDrains) > 0, ratio >= 0.8,
				fmt.Sprintf("%.0f%% (%s vs %s rows/s)", 100*ratio, rateStr(s.DrainRate()), rateStr(s.BareRate())))
		}
	}
	single4, many4 := r.ingest(PathSingle, 4), r.ingest(PathMany, 4)
	ss, ssOK := r.SteadyState(SteadyInterval)
	add(fmt.Sprintf("batched heartbeats (HeartbeatMany), 4 writers, tasks beating every %s", SteadyInterval), "≥ 40k rows/s", ssOK,
		ss >= 40_000, fmt.Sprintf("%s rows/s (%s within the minute, %s into a new minute)", rateStr(ss), ingestFig(many4), ingestFig(r.ingest(PathManyNewMinute, 4))))
	if single4 != nil && many4 != nil {
		x := many4.BeatsPerSec / single4.BeatsPerSec
		add("batched vs single-row heartbeats, 4 writers", "≥ 8×", true, x >= 8,
			fmt.Sprintf("%.1f× (%s vs %s rows/s)", x, rateStr(many4.BeatsPerSec), rateStr(single4.BeatsPerSec)))
	} else {
		add("batched vs single-row heartbeats, 4 writers", "≥ 8×", false, false, "not measured")
	}
	if d := r.Daemon; d != nil {
		add("daemon RSS idle", "≤ 30 MB", d.RSSIdleBytes > 0, d.RSSIdleBytes <= 30e6, mb(d.RSSIdleBytes))
		add(fmt.Sprintf("daemon RSS during a %s drain (peak)", count(d.DrainRows)), "≤ 60 MB", d.RSSDrainBytes > 0,
			d.RSSDrainBytes <= 60e6, mb(d.RSSDrainBytes))
		add(fmt.Sprintf("detection p99, schedule %s", d.CronSchedule), fmt.Sprintf("≤ %s", d.CronInterval+time.Second),
			d.CronDetect.N > 0, d.CronDetect.P99 <= d.CronInterval+time.Second, secs(d.CronDetect.P99))
		add("detection p99, @adaptive", "≤ 1 s", d.AdaptiveDetect.N > 0, d.AdaptiveDetect.P99 <= time.Second,
			secs(d.AdaptiveDetect.P99))
	} else {
		add("daemon measurements", "", false, false, "not measured")
	}
	if a := r.API; a != nil {
		lib, web := a.BatchRate(PathMany), a.BatchRate(PathHTTPMany)
		add(fmt.Sprintf("HTTP batch heartbeats (POST /v1/heartbeats, 1000 ids, %d clients) vs HeartbeatMany", apiClients), "≥ 0.6",
			lib > 0 && web > 0, lib > 0 && web/lib >= 0.6, fmt.Sprintf("%.2f (%s vs %s rows/s)", ratio(web, lib), rateStr(web), rateStr(lib)))
		add(fmt.Sprintf("single heartbeat over HTTP at %.0f requests/s, open loop (p99)", a.SingleRate), "≤ 10 ms",
			a.Single.N > 0, a.Single.P99 <= 10*time.Millisecond, fmt.Sprintf("%s (p50 %s)", ms(a.Single.P99), ms(a.Single.P50)))
		add("feed latency, event commit to long-poll return (p99)", "≤ 100 ms", a.Feed.N > 0, a.Feed.P99 <= 100*time.Millisecond,
			fmt.Sprintf("%s (p50 %s)", ms(a.Feed.P99), ms(a.Feed.P50)))
	} else {
		add("API measurements", "", false, false, "not measured")
	}
	if p := r.Plan; p != nil {
		add(fmt.Sprintf("EXPLAIN plan test at %s rows", count(p.Rows)), "no sequential scan", true, p.Passed, passFail(p.Passed))
	}
	r.consoleTargets(add)
	r.progressTargets(add)
	r.recoveryTargets(add)
	r.hotPathTargets(add)
	return append(out, r.retentionTargets()...)
}

// SteadyInterval is the heartbeat interval of the steady-state figure: tasks
// beating every 10 s, one beat in six moves its row into a new minute.
const SteadyInterval = 10 * time.Second

// SteadyState is the HeartbeatMany rate with 4 writers for tasks beating
// every interval: the measured rates within the minute and into a new minute,
// mixed in the proportion interval/1m of beats that move into a new minute.
func (r *Results) SteadyState(interval time.Duration) (float64, bool) {
	hot, cold := r.ingest(PathMany, 4), r.ingest(PathManyNewMinute, 4)
	if hot == nil || cold == nil || hot.BeatsPerSec == 0 || cold.BeatsPerSec == 0 {
		return 0, false
	}
	f := min(interval.Seconds()/60, 1)
	return 1 / ((1-f)/hot.BeatsPerSec + f/cold.BeatsPerSec), true
}

func (r *Results) ingest(path string, writers int) *IngestRow {
	for i := range r.Ingest {
		if r.Ingest[i].Path == path && r.Ingest[i].Writers == writers {
			return &r.Ingest[i]
		}
	}
	return nil
}

func ingestFig(row *IngestRow) string {
	if row == nil {
		return "not measured"
	}
	return rateStr(row.BeatsPerSec) + " rows/s"
}

func bucketStr(d time.Duration) string {
	if d == 0 {
		return "beyond the last bucket"
	}
	return ms(d)
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func passFail(ok bool) string {
	if ok {
		return "pass"
	}
	return "FAIL"
}

// Render returns docs/benchmarks.md for the results; charts are linked from
// imgDir (relative to the report).
func Render(r *Results, imgDir string) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# Benchmarks\n\n")
	w("Generated by `%s` on %s in %s. Every figure below comes from this one run;\n",
		r.Command, r.Started.Format("2006-01-02 15:04 MST"), r.Elapsed.Round(time.Second))
	w("run `make bench` to regenerate this page and its charts (`make bench BENCH_SIZES=100000,1000000` for a shorter run).\n")
	w("The machine is shared: absolute figures move with its load (noted below); the targets that are ratios\n")
	w("compare figures taken minutes apart in the same run. What these figures led to, with before-and-after numbers, is in\n")
	w("docs/design.md (*Heartbeat fast path*, *Performance*).\n\n")

	m := r.Machine
	w("## Machine and settings\n\n")
	w("| | |\n|---|---|\n")
	w("| CPUs | %d × %s |\n", m.CPUs, orDash(m.CPUModel))
	w("| memory | %.1f GiB |\n", m.MemoryGiB)
	w("| kernel | %s |\n", orDash(m.Kernel))
	w("| Go | %s |\n", m.GoVersion)
	w("| PostgreSQL | %s (%s server, same machine, data directory %s) |\n", m.PGVersion, m.ServerKind, m.DataDir)
	w("| load average (1, 5, 15 min) | at start %s; at end %s |\n", strings.Join(m.LoadStart, " "), strings.Join(m.LoadEnd, " "))
	keys := make([]string, 0, len(r.Config.Settings))
	for k := range r.Config.Settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var set []string
	for _, k := range keys {
		set = append(set, fmt.Sprintf("`%s=%s`", k, r.Config.Settings[k]))
	}
	w("| server settings | %s |\n", strings.Join(set, " "))
	c := r.Config
	w("| ledger | history rows (completed 80%%, failed 10%%, stuck 10%%; one in %d a second attempt) + %s live `in_progress` rows (heartbeat timeout: a third the global one, a third %s, a third %s of their own, beaten every %s and %s to stay live), %d audit events per history row and %d per live row, loaded with triggers off, indexes built after, `VACUUM ANALYZE` |\n",
		retryEvery, count(c.InFlight), shortDur(shortTimeout), shortDur(longTimeout), shortDur(keepShortEvery), shortDur(keepLongEvery), eventsPerHistoryRow, eventsPerLiveRow)
	w("| sweeps | `sweep.Sweeper.RunOnce`, batch size %d, notifications to `%s` with a listener attached, heartbeat timeout %s (stale rows are older; the live rows stay live however long the run) |\n",
		1000, "delegation_stuck", shortDur(c.HeartbeatTimeout))
	w("\n")

	w("## Targets\n\n")
	w("| target | wanted | measured | met |\n|---|---|---|---|\n")
	for _, t := range r.Targets() {
		met := "no"
		switch {
		case !t.Known:
			met = "not measured"
		case t.Met:
			met = "**yes**"
		}
		w("| %s | %s | %s | %s |\n", t.Name, t.Want, t.Figure, met)
	}
	w("\n")

	if len(r.Sizes) > 0 {
		w("## The sweep against ledger size\n\n")
		w("Same %s rows in flight at every size. *Nothing eligible*: %d runs after every live row was just beaten\n", count(c.InFlight), c.SweepRuns)
		w("(its heap pages are then not all-visible, as in a running ledger); the in-flight count, which reads every in-flight row, is\n")
		w("refreshed once a minute (`sweep.Config.InFlightRecount`), so these runs reuse it; *with the in-flight recount*: %d runs that\n", recountRuns)
		w("count (the first run of a new sweeper), as one run a minute does. *%s eligible*: %d runs, each after adding %s stale rows.\n",
			count(c.Eligible), c.EligibleRuns, count(c.Eligible))
		w("*Drain*: %s stale rows (added, then `VACUUM ANALYZE`, as autovacuum would while a backlog builds up) marked in one run of\n", count(c.Backlog))
		w("batches of 1000, each batch one transaction with its audit events and notifications. *Bare UPDATE*: the same claim and change,\n")
		w("batches of 1000, one statement per batch, no notification, no RETURNING; *triggers off* (`session_replication_role = replica`:\n")
		w("no guard, no bookkeeping, no audit event) is the machine's limit for the row change, *triggers on* is what any writer's UPDATE\n")
		w("of those rows costs, one audit event per row included. Durations are the client's, round trips included.\n\n")
		w("| ledger rows | table + indexes | load | nothing eligible p50 / p95 | with the in-flight recount p50 | %s eligible p50 / max | drain rows/s | bare UPDATE, triggers off | bare UPDATE, triggers on | drain / triggers off | drain / triggers on |\n", count(c.Eligible))
		w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, s := range r.Sizes {
			w("| %s | %s + %s | %s | %s / %s | %s | %s / %s | %s | %s | %s | %.0f%% | %s |\n",
				count(s.Rows), mib(s.TableBytes), mib(s.IndexBytes), s.LoadTime.Round(time.Second),
				ms(s.Nothing.P50), ms(s.Nothing.P95), ms(s.NothingRecount.P50), ms(s.FewEligible.P50), ms(s.FewEligible.Max),
				rateStr(s.DrainRate()), rateStr(s.BareRate()), rateStr(s.TriggerRate()), 100*s.DrainRate()/s.BareRate(),
				pct(s.DrainRate(), s.TriggerRate()))
		}
		w("\n![sweep time against ledger size](%s/sweep-vs-size.png)\n\n", imgDir)
		w("![drain rate against ledger size](%s/drain-vs-size.png)\n\n", imgDir)
		if bd := r.Sizes[len(r.Sizes)-1].Breakdown; len(bd) > 0 {
			w("Where the nothing-eligible runs above spend their time at %s rows (server side, mean per call, `pg_stat_statements`;\n", count(r.Sizes[len(r.Sizes)-1].Rows))
			w("the rest of a run's time is the client and the round trips, one per statement):\n\n")
			w("| statement | calls | mean |\n|---|---:|---:|\n")
			for _, st := range bd {
				w("| %s | %d | %s |\n", strings.ReplaceAll(st.Query, "|", "\\|"), st.Calls, ms(st.Mean))
			}
			w("\n")
		}
	}

	if len(r.Ingest) > 0 {
		w("## Heartbeat ingest\n\n")
		w("At %s rows, with %s extra `in_progress` rows added for the ingest (removed after). Each writer beats its own share of them\n",
			count(r.Sizes[len(r.Sizes)-1].Rows), count(c.IngestRows))
		w("(each service instance its own tasks) in turn, as tasks that heartbeat periodically; *single* cycles through %s of them so that, at\n", count(min(singleRows, c.IngestRows)))
		w("its rate, a row also comes round every several seconds. Each configuration first runs one full cycle unmeasured, so every row's previous\n")
		w("beat is one cycle old (the steady state), then is measured for %s s. Every beat writes a row version; it is a HOT update (no new\n", fmt.Sprint(c.IngestDuration.Seconds()))
		w("index entries) unless it moves the row into a new minute (`heartbeat_minute`, see docs/design.md) or its page is full.\n")
		w("*single*: `Ledger.Heartbeat`, one row per statement. *many*: `Ledger.HeartbeatMany`, 1000 rows per call.\n")
		w("*coalesce*: `ledger.Coalescer` with one flusher per writer (`MaxBatch` 1000, `MaxDelay` 5 ms), fed by %d goroutines per flusher calling `Beat`.\n", coalesceCallers)
		w("*%s*: `HeartbeatMany` on rows last beaten minutes before, so that every beat moves its row into a new minute and\n", PathManyNewMinute)
		w("none is HOT; it runs first, without warm-up. The other configurations measure beats within the minute of the previous one\n")
		w("(warm-up and measurement start early enough in a minute to end in it). Tasks beating every *I* seconds see a fraction *I*/60\n")
		w("of beats move into a new minute (see docs/design.md, *Heartbeat fast path*).\n")
		w("Latency is per call (a batch for *many*, one beat for the others). *HOT updates* is `n_tup_hot_upd` / `n_tup_upd`\n")
		w("of `pg_stat_user_tables` over the measured part.\n\n")
		w("| path | writers | rows/s | p50 | p99 | rows per statement | HOT updates |\n|---|---:|---:|---:|---:|---:|---:|\n")
		for _, row := range r.Ingest {
			batch := "1"
			if row.BatchAvg > 0 {
				batch = fmt.Sprintf("%.0f", row.BatchAvg)
			}
			name := row.Path
			if row.Note != "" {
				name += " (" + row.Note + ")"
			}
			w("| %s | %d | %s | %s | %s | %s | %.0f%% |\n", name, row.Writers, rateStr(row.BeatsPerSec),
				ms(row.Latency.P50), ms(row.Latency.P99), batch, 100*row.HotShare())
		}
		if ss, ok := r.SteadyState(SteadyInterval); ok {
			w("\n**Steady state** for tasks beating every %s (one beat in %.0f moves into a new minute), `HeartbeatMany` with 4 writers:\n", SteadyInterval, 60/SteadyInterval.Seconds())
			w("**%s rows/s**, from the two measured rates above (1 / (%.2f / within-the-minute + %.2f / new-minute)).\n",
				rateStr(ss), 1-SteadyInterval.Seconds()/60, SteadyInterval.Seconds()/60)
		}
		w("\n![heartbeat ingest against writers](%s/ingest-vs-writers.png)\n\n", imgDir)
	}

	if d := r.Daemon; d != nil {
		w("## The daemon (`bin/sweeper`)\n\n")
		w("Run as built, against the %s-row ledger, with `SWEEPER_SWEEP_HEARTBEAT_TIMEOUT=%s` and debug logs. Detection latency: probe rows\n", count(d.LedgerRows), shortDur(c.HeartbeatTimeout))
		w("become eligible one after another, evenly over a window; each one's latency is the arrival of its `delegation_stuck`\n")
		w("notification minus the moment it became eligible (`last_heartbeat` + timeout, by the database clock, which is this machine's).\n\n")
		w("| figure | value |\n|---|---:|\n")
		w("| start to first completed sweep | %s |\n", ms(d.StartToFirstSweep))
		w("| RSS idle (VmRSS, 3 s after the first sweep) | %s |\n", mb(d.RSSIdleBytes))
		w("| RSS during a %s-row drain (peak VmRSS, sampled every 20 ms) | %s |\n", count(d.DrainRows), mb(d.RSSDrainBytes))
		if d.DrainDuration > 0 {
			w("| daemon drain, first to last notification (a run takes at most `max_batches_per_run` = 100 batches, the deadline rule's included, so the last rows of a 100k backlog wait for the next run) | %s |\n",
				d.DrainDuration.Round(time.Millisecond))
		}
		w("| detection, `%s`: p50 / p99 / max (%d probes over %s) | %s / %s / %s |\n", d.CronSchedule, d.CronDetect.N, c.CronDetectWindow,
			secs(d.CronDetect.P50), secs(d.CronDetect.P99), secs(d.CronDetect.Max))
		w("| detection, `@adaptive`: p50 / p99 / max (%d probes over %s) | %s / %s / %s |\n", d.AdaptiveDetect.N, d.AdaptiveWindow,
			ms(d.AdaptiveDetect.P50), ms(d.AdaptiveDetect.P99), ms(d.AdaptiveDetect.Max))
		w("| sweep runs during the @adaptive window (one probe due every %s) | %d |\n",
			(d.AdaptiveWindow / time.Duration(max(d.AdaptiveDetect.N, 1))).Round(time.Millisecond), d.AdaptiveRuns)
		w("\nWith a fixed schedule a row waits for the next run: detection is spread evenly between 0 and the interval,\n")
		w("so p99 sits just under the interval plus one sweep. `@adaptive` sleeps until the next row can become eligible.\n\n")
	}

	if a := r.API; a != nil {
		renderAPI(w, a, r.Config)
	}

	renderConsole(w, r)

	renderHotPath(w, r)

	if p := r.Plan; p != nil {
		w("## Plan regression\n\n")
		w("`SWEEPER_PLAN_ROWS=%d go test -run TestPlansUseIndexes ./sweep/`: **%s** in %s (every statement the sweep and\n", p.Rows, passFail(p.Passed), p.Duration.Round(time.Second))
		w("`sweeper status` run, batch sizes 1000 and 10000, custom and generic plans: no sequential scan of `delegations`).\n\n")
		if p.Output != "" {
			w("```\n%s\n```\n\n", strings.TrimSpace(p.Output))
		}
	}

	renderRetention(w, r)

	if len(r.Problems) > 0 {
		w("## Problems during the run\n\n")
		for _, p := range r.Problems {
			w("- %s\n", p)
		}
		w("\n")
	}
	return b.String()
}

func pct(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*a/b)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// count renders 100000 as 100k and 5000000 as 5M.
func count(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1_000_000 && n%100_000 == 0:
		return fmt.Sprintf("%.1fM", float64(n)/1e6)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

func rateStr(v float64) string {
	switch {
	case v >= 10_000:
		return fmt.Sprintf("%.1fk", v/1000)
	case v >= 1000:
		return fmt.Sprintf("%.2fk", v/1000)
	}
	return fmt.Sprintf("%.0f", v)
}

func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 10:
		return fmt.Sprintf("%.1f ms", v)
	}
	return fmt.Sprintf("%.2f ms", v)
}

// shortDur renders 1h0m0s as 1h.
func shortDur(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s") // 5m0s: 5m (but 10s stays)
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m") // 1h0m0s: 1h
	}
	return s
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

func mb(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/1e6) }

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

func renderAPI(w func(string, ...any), a *APIResult, c ConfigInfo) {
	w("## The HTTP API (`bin/sweeper` with `api.listen`)\n\n")
	w("The built daemon, run against the %s-row ledger with `SWEEPER_API_LISTEN=127.0.0.1:0`, `SWEEPER_DATABASE_MAX_CONNS=%d`\n", count(a.LedgerRows), apiDBConns)
	w("(the library writers have one connection each; the daemon also holds the sweeper's and the feed listener's), info logs\n")
	w("(debug logs one line per request) and no rate limit (`api.rate_limit` 0, the default). Tokens come from `sweeper token create`:\n")
	w("a worker token (principal `%s`, the callee of the %s `in_progress` rows beaten), a caller token for the inserts, a reader\n", apiWorker, count(a.Rows))
	w("token for the feed. The clients are Go `net/http` with keep-alive, on the same 2 cores as the daemon and PostgreSQL.\n\n")
	w("*Batch heartbeats*: %d clients, each beating its own share of the rows in turn, 1000 ids per call, measured as the\n", apiClients)
	w("heartbeat ingest above (a warm-up cycle, then %s s within the minute): `Ledger.HeartbeatMany` from this process and\n", fmt.Sprint(c.IngestDuration.Seconds()))
	w("`POST /v1/heartbeats` to the daemon (which runs `Ledger.HeartbeatManyFor`, the worker's own rows only), in ABBA order.\n")
	w("Latency is per call.\n\n")
	w("| path | clients | rows/s | p50 | p99 | HOT updates |\n|---|---:|---:|---:|---:|---:|\n")
	for _, row := range a.Batch {
		name := "`Ledger.HeartbeatMany`"
		if row.Path == PathHTTPMany {
			name = "`POST /v1/heartbeats`"
		}
		w("| %s | %d | %s | %s | %s | %.0f%% |\n", name, row.Writers, rateStr(row.BeatsPerSec), ms(row.Latency.P50), ms(row.Latency.P99), 100*row.HotShare())
	}
	lib, web := a.BatchRate(PathMany), a.BatchRate(PathHTTPMany)
	w("\nTogether: HTTP %s rows/s, library %s rows/s, ratio **%.2f**.", rateStr(web), rateStr(lib), ratio(web, lib))
	if web > lib {
		w(" HTTP ahead of the library is not a property of the API: both run one UPDATE per batch, and the HTTP\n")
		w("path spreads its work over two processes (the bench's clients and the daemon), which on a busy machine get a larger share\n")
		w("of the cores than the library path's one process; judge the ratio from a run on a quiet machine.")
	}
	w("\n\n")
	w("*Single heartbeats*: `POST /v1/delegations/{id}/heartbeat`, one request every %s (%.0f/s) for %s after 1 s of warm-up,\n",
		(time.Second / time.Duration(max(a.SingleRate, 1))).String(), a.SingleRate, a.SingleDuration)
	w("each sent at its scheduled time on a goroutine of its own, whatever the answers before it (open loop); a latency runs from\n")
	w("the scheduled time, so a request the loaded client sent late counts as slow. Each request beats another row and costs the\n")
	w("daemon three statements: the token's lookup (every request, so a revoked token is refused at once), the row's read for the\n")
	w("worker's scope, the heartbeat. When the rate is above what the machine serves, requests queue and the latency grows with the run.\n\n")
	w("| figure | value |\n|---|---:|\n")
	w("| requests measured (sent at) | %d (%.0f/s) |\n", a.SingleSent, a.SingleAchieved)
	w("| latency p50 / p95 / p99 / max | %s / %s / %s / %s |\n", ms(a.Single.P50), ms(a.Single.P95), ms(a.Single.P99), ms(a.Single.Max))
	if st := a.SingleServer; st.Count > 0 {
		w("| the daemon's own time for them (`sweeper_api_request_duration_seconds`, %d requests, from the end of the warm-up): mean; bucket bounds of p50 / p99 | %s; ≤ %s / ≤ %s |\n",
			st.Count, ms(st.Mean), bucketStr(st.P50), bucketStr(st.P99))
	}
	w("| inserts, `POST /v1/delegations`, %d clients, closed loop, %s: rows/s (p50 / p99) | %s (%s / %s) |\n", a.InsertHTTP.Clients, a.SingleDuration,
		rateStr(a.InsertHTTP.PerSec), ms(a.InsertHTTP.Latency.P50), ms(a.InsertHTTP.Latency.P99))
	w("| inserts, `Ledger.Insert`, %d clients, same: rows/s (p50 / p99) | %s (%s / %s) |\n", a.InsertLibrary.Clients,
		rateStr(a.InsertLibrary.PerSec), ms(a.InsertLibrary.Latency.P50), ms(a.InsertLibrary.Latency.P99))
	w("| feed latency p50 / p95 / p99 / max (%d events × %d consumers) | %s / %s / %s / %s |\n", a.FeedEvents, a.FeedConsumers,
		ms(a.Feed.P50), ms(a.Feed.P95), ms(a.Feed.P99), ms(a.Feed.Max))
	w("\n*Feed latency*: %d consumers long-poll `GET /v1/events?after=…&caller_id=%s&wait=30s`, each from the feed's head. The bench\n", a.FeedConsumers, feedCaller)
	w("inserts one delegation at a time (its insert event) in a transaction of its own; a latency runs from just before that\n")
	w("transaction's `COMMIT` to the return, at each consumer, of the long poll that carries the event. The next event commits\n")
	w("once every consumer has it and a random 5 to 25 ms have passed, so the consumers are waiting when it commits (the case\n")
	w("the long poll exists for; an event committed while a consumer is between polls is answered by its next poll at once).\n\n")
}
