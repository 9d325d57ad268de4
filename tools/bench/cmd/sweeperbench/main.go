// Command sweeperbench runs sweeper's benchmark suite (package bench) on a
// throwaway PostgreSQL server and writes docs/benchmarks.md, its charts and
// the raw results. `make bench` builds it from the tools module as
// bin/sweeperbench and runs it from the repository root (paths such as
// docs/benchmarks.md, bin/sweeper and ./sweep/ are relative to it); see -help
// for the knobs.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tasksweeper/sweeper/tools/bench"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sweeperbench:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		sizes      = flag.String("sizes", joinInts(bench.SizesDefault), "ledger sizes in rows, comma-separated, smallest first")
		inFlight   = flag.Int("inflight", bench.InFlightDefault, "live in_progress rows at every size")
		eligible   = flag.Int("eligible", bench.EligibleDefault, "eligible rows of the few-eligible sweep")
		backlog    = flag.Int("backlog", bench.BacklogDefault, "rows of the drained backlog")
		sweepRuns  = flag.Int("sweep-runs", bench.SweepRunsDefault, "timed nothing-eligible runs per size")
		drains     = flag.Int("drain-rounds", bench.DrainRoundsDefault, "(bare, sweep) drain pairs per size")
		ingest     = flag.Duration("ingest", bench.IngestDurationDefault, "measured duration of each heartbeat configuration")
		ingestRows = flag.Int("ingest-rows", bench.IngestRowsDefault, "rows the heartbeat ingest beats in turn")
		cronWin    = flag.Duration("cron-window", bench.CronDetectWindowDefault, "detection window with the default schedule")
		adaptWin   = flag.Duration("adaptive-window", bench.AdaptiveDetectWindowDefault, "detection window with @adaptive")
		apiRate    = flag.Int("api-rate", bench.APIRateDefault, "requests/s of the single heartbeats over HTTP (open loop)")
		apiDur     = flag.Duration("api-duration", bench.APIDurationDefault, "duration of the single heartbeats and of each insert measurement")
		feedEvents = flag.Int("feed-events", bench.FeedEventsDefault, "events of the feed latency measurement")
		apiOnly    = flag.Bool("api-only", false, "measure only the HTTP API, at the last size")
		binary     = flag.String("binary", "bin/sweeper", "the built daemon; empty skips the daemon measurements")
		planRows   = flag.Int("plan-rows", 1_000_000, "rows of the EXPLAIN plan test run after the bench; 0 skips it")
		consoleN   = flag.Int("console-requests", bench.ConsoleRequestsDefault, "timed requests of each console page, per role and size")
		consolePl  = flag.Bool("console-plans", true, "check the console's statement plans on the ledger of the last size")
		consoleOn  = flag.Bool("console-only", false, "load each size and measure only the console (and its plans)")
		progressOn = flag.Bool("progress-only", false, "load each size and measure only issue 20's figures (sweeps with the new rules on, heartbeats with progress)")
		recoveryOn = flag.Bool("recovery-only", false, "load each size and measure only issue 21's figures (claim throughput, stuck transitions with and without a retry) at the last")
		out        = flag.String("out", "docs/benchmarks.md", "the report")
		imgDir     = flag.String("img", "docs/benchmarks", "directory of the charts and results.json")
		renderOnly = flag.Bool("render", false, "only render the report and charts again from <img>/results.json")
		pruneBack  = flag.Int("prune-backlog", bench.PruneBacklogDefault, "old terminal rows (3 events each) of each prune pass")
		pruneRuns  = flag.Int("prune-rounds", bench.PruneRoundsDefault, "(archive off, archive on) prune pass pairs per size; 0 skips")
		stDays     = flag.Int("steady-days", bench.SteadyDaysDefault, "simulated days of the retention steady state (needs libfaketime); 0 skips it")
		stPerDay   = flag.Int("steady-per-day", bench.SteadyPerDayDefault, "delegations inserted per simulated day")
		stLong     = flag.Int("steady-long", bench.SteadyLongRunningDefault, "delegations in progress all the simulated month")
		stOnly     = flag.Bool("steady-only", false, "run only the retention steady state")
		hpOn       = flag.Bool("hotpath", true, "after the suite, run the hot path measurement (issue 19: against schema version 5) at the same sizes into the report")
		hpOnly     = flag.Bool("hotpath-only", false, "run only the hot path measurement (drain against schema version 5 and the same-work limit, status change costs, single HTTP heartbeats at -hotpath-rates) into -hotpath-out; docs untouched")
		hpRates    = flag.String("hotpath-rates", "1000,2000", "request rates of the hot path's single heartbeats over HTTP")
		hpOut      = flag.String("hotpath-out", "bin/hotpath.json", "the hot path measurement's results")
		whOnly     = flag.Bool("webhooks-only", false, "measure only webhook deliveries (1 and 20 subscriptions) and print them as JSON")
		whBacklog  = flag.Int("webhooks-backlog", 5000, "events of the webhook throughput measurement")
		whRate     = flag.Int("webhooks-rate", 50, "events/s of the webhook latency measurement (open loop)")
		whDur      = flag.Duration("webhooks-duration", 10*time.Second, "duration of the webhook latency measurement")
	)
	flag.Parse()
	jsonPath := filepath.Join(*imgDir, "results.json")
	relImg, err := filepath.Rel(filepath.Dir(*out), *imgDir)
	if err != nil {
		relImg = *imgDir
	}
	if *renderOnly {
		b, err := os.ReadFile(jsonPath)
		if err != nil {
			return err
		}
		var r bench.Results
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("%s: %w", jsonPath, err)
		}
		return write(&r, *out, *imgDir, relImg, jsonPath)
	}

	ss, err := parseInts(*sizes)
	if err != nil {
		return fmt.Errorf("-sizes: %w", err)
	}
	if *binary != "" {
		if _, err := os.Stat(*binary); err != nil {
			return fmt.Errorf("-binary: %w (run make build first)", err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
	}
	cfg := bench.Config{
		Sizes: ss, InFlight: *inFlight, Eligible: *eligible, Backlog: *backlog,
		SweepRuns: *sweepRuns, DrainRounds: *drains, IngestDuration: *ingest, IngestRows: *ingestRows,
		CronDetectWindow: *cronWin, AdaptiveDetectWindow: *adaptWin,
		APIRate: *apiRate, APIDuration: *apiDur, FeedEvents: *feedEvents, APIOnly: *apiOnly,
		Binary: *binary, Logf: logf, ConsoleRequests: *consoleN, ConsoleOnly: *consoleOn, ProgressOnly: *progressOn, RecoveryOnly: *recoveryOn,
		PruneBacklog: *pruneBack, PruneRounds: *pruneRuns,
		Steady: bench.SteadyConfig{Days: *stDays, PerDay: *stPerDay, LongRunning: *stLong},
	}
	if *consolePl {
		cfg.ConsolePlans = consolePlanTest
	}
	if *pruneRuns == 0 {
		cfg.PruneRounds = -1
	}
	hpRateList, err := parseInts(*hpRates)
	if err != nil {
		return fmt.Errorf("-hotpath-rates: %w", err)
	}
	if *hpOnly {
		return hotPath(ctx, cfg, bench.HotPathConfig{Rates: hpRateList}, *hpOut)
	}
	if *whOnly {
		rounds, err := bench.RunWebhooks(ctx, cfg, bench.WebhookConfig{Subscriptions: []int{1, 20}, Backlog: *whBacklog, Rate: *whRate, Duration: *whDur})
		b, _ := json.Marshal(rounds)
		fmt.Println(string(b))
		return err
	}
	began := time.Now()
	var r *bench.Results
	if *stOnly {
		r = &bench.Results{Started: began.UTC(), Machine: bench.DescribeMachine()}
		*planRows = 0
	} else if r, err = bench.Run(ctx, cfg); err != nil {
		if r == nil {
			return err
		}
		r.Problems = append(r.Problems, err.Error())
	}
	r.Command = os.Getenv("BENCH_COMMAND")
	if r.Command == "" {
		r.Command = "bin/sweeperbench " + strings.Join(os.Args[1:], " ")
	}
	if *planRows > 0 && ctx.Err() == nil {
		logf("plan test at %d rows", *planRows)
		r.Plan = planTest(ctx, *planRows)
		logf("plan test: passed=%v in %s", r.Plan.Passed, r.Plan.Duration.Round(time.Second))
	}
	// The hot path (issue 19) after the suite, on a server of its own and
	// ledgers of its own (the same rows on both schemas); not in the runs
	// that measure one thing only.
	if *hpOn && !*stOnly && !*apiOnly && !*consoleOn && !*progressOn && !*recoveryOn && ctx.Err() == nil {
		logf("hot path against schema version 5 at %v rows", ss)
		hp, err := bench.RunHotPath(ctx, cfg, bench.HotPathConfig{Rates: hpRateList})
		if err != nil {
			r.Problems = append(r.Problems, "hot path: "+err.Error())
		}
		if hp != nil {
			for _, p := range hp.Problems {
				r.Problems = append(r.Problems, "hot path: "+p)
			}
		}
		r.HotPath = hp
	}
	if *stDays > 0 && ctx.Err() == nil {
		logf("retention steady state: %d simulated days", *stDays)
		st, err := bench.RunSteady(ctx, cfg)
		if err != nil {
			r.Problems = append(r.Problems, "steady state: "+err.Error())
		}
		r.Steady = st
	}
	r.Elapsed = time.Since(began)
	return write(r, *out, *imgDir, relImg, jsonPath)
}

func write(r *bench.Results, out, imgDir, relImg, jsonPath string) error {
	// A -console-only run has no sweeps to chart.
	if len(r.Sizes) == 0 || r.Sizes[0].Nothing.N > 0 {
		if err := bench.Charts(r, imgDir); err != nil {
			return fmt.Errorf("charts: %w", err)
		}
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(jsonPath, append(b, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(out, []byte(bench.Render(r, filepath.ToSlash(relImg))), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %s, %s and charts in %s\n", out, jsonPath, imgDir)
	var missed []string
	for _, t := range r.Targets() {
		if t.Known && !t.Met {
			missed = append(missed, fmt.Sprintf("%s: %s (want %s)", t.Name, t.Figure, t.Want))
		}
	}
	for _, m := range missed {
		fmt.Fprintln(os.Stderr, "target missed:", m)
	}
	if len(r.Problems) > 0 {
		return errors.New(strings.Join(r.Problems, "; "))
	}
	return nil
}

// planTest runs the EXPLAIN plan regression test at rows rows.
func planTest(ctx context.Context, rows int) *bench.PlanResult {
	goBin := os.Getenv("GO")
	if goBin == "" {
		goBin = "go"
	}
	cmd := exec.CommandContext(ctx, goBin, "test", "-count=1", "-v", "-run", "^TestPlansUseIndexes$", "./sweep/")
	cmd.Env = append(os.Environ(), "SWEEPER_PLAN_ROWS="+strconv.Itoa(rows), "SWEEPER_REQUIRE_DB=1")
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	began := time.Now()
	err := cmd.Run()
	res := &bench.PlanResult{Rows: rows, Passed: err == nil, Duration: time.Since(began)}
	// Keep the plan lines (one per statement and mode) and the verdict.
	var keep []string
	for _, line := range strings.Split(buf.String(), "\n") {
		t := strings.TrimSpace(line)
		if strings.Contains(t, "plan:") || strings.HasPrefix(t, "--- ") || strings.HasPrefix(t, "ok ") ||
			strings.HasPrefix(t, "FAIL") || strings.Contains(t, "scans the whole table") {
			if i := strings.Index(t, "rows="); i >= 0 {
				t = t[i:]
			}
			keep = append(keep, t)
		}
	}
	res.Output = strings.Join(keep, "\n")
	if err != nil && len(keep) == 0 {
		res.Output = buf.String()
	}
	return res
}

// consolePlanTest runs console's TestQueryPlans against the loaded ledger
// at dbURL: EXPLAIN ANALYZE of every console statement with the bench's
// values, custom and generic plans.
func consolePlanTest(ctx context.Context, dbURL string) *bench.PlanResult {
	goBin := os.Getenv("GO")
	if goBin == "" {
		goBin = "go"
	}
	cmd := exec.CommandContext(ctx, goBin, "test", "-count=1", "-v", "-run", "^TestQueryPlans$", "./console/")
	cmd.Env = append(os.Environ(), "SWEEPER_CONSOLE_PLAN_URL="+dbURL, "SWEEPER_REQUIRE_DB=1")
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	began := time.Now()
	err := cmd.Run()
	res := &bench.PlanResult{Passed: err == nil, Duration: time.Since(began)}
	var keep []string
	for _, line := range strings.Split(buf.String(), "\n") {
		t := strings.TrimSpace(line)
		if i := strings.Index(t, "console plan:"); i >= 0 {
			keep = append(keep, t[i+len("console plan: "):])
		} else if strings.HasPrefix(t, "--- ") || strings.HasPrefix(t, "FAIL") || strings.Contains(t, "scans sequentially") ||
			strings.Contains(t, "reads none of") {
			keep = append(keep, t)
		}
		if i := strings.Index(t, "console plan rows: "); i >= 0 {
			res.Rows, _ = strconv.Atoi(t[i+len("console plan rows: "):])
		}
	}
	res.Output = strings.Join(keep, "\n")
	if err != nil && len(keep) == 0 {
		res.Output = buf.String()
	}
	return res
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(strings.ReplaceAll(f, "_", "")))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func joinInts(ns []int) string {
	var s []string
	for _, n := range ns {
		s = append(s, strconv.Itoa(n))
	}
	return strings.Join(s, ",")
}

// hotPath runs bench.RunHotPath and writes its results as JSON to out.
func hotPath(ctx context.Context, cfg bench.Config, hp bench.HotPathConfig, out string) error {
	r, err := bench.RunHotPath(ctx, cfg, hp)
	if r == nil {
		return err
	}
	if err != nil {
		r.Problems = append(r.Problems, err.Error())
	}
	b, merr := json.MarshalIndent(r, "", "  ")
	if merr != nil {
		return merr
	}
	if werr := os.MkdirAll(filepath.Dir(out), 0o755); werr != nil {
		return werr
	}
	if werr := os.WriteFile(out, append(b, '\n'), 0o644); werr != nil {
		return werr
	}
	cfg.Logf("hot path results in %s (%d problems)", out, len(r.Problems))
	return err
}
