// Package bench measures sweeper on ledgers of several sizes, on a throwaway
// PostgreSQL server, and renders what it measured as docs/benchmarks.md with
// charts. `make bench` runs it through bench/cmd/sweeperbench; every figure
// of the report comes from one run of the command: Run, then RunHotPath
// (the hot path against schema version 5, issue 19, hotpath.go).
//
// What it measures, at each ledger size, with the same rows in flight:
//
//   - sweep.Sweeper.RunOnce with nothing eligible, with a few eligible rows,
//     and the drain of a backlog, against a bare UPDATE doing the same drain
//     (triggers off, no audit, no notifications): the machine's limit;
//   - heartbeat ingest through Ledger.Heartbeat, Ledger.HeartbeatMany and
//     ledger.Coalescer, with 1 and 4 writers (at the largest size);
//   - the built daemon (bin/sweeper): time from start to the first completed
//     sweep, resident memory idle and during a drain, and detection latency
//     (from the moment a row becomes eligible to the moment its stuck
//     notification arrives) with the default schedule and with @adaptive;
//   - the daemon's HTTP API (api.listen): batch heartbeats over POST
//     /v1/heartbeats against Ledger.HeartbeatMany in the same run, the
//     latency of single heartbeats sent open loop at a fixed rate, inserts,
//     and the durable feed's latency from an event's commit to the return of
//     the long polls waiting for it.
package bench

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Config says what to measure and how long. Zero values take the defaults
// below, except Binary ("" skips the daemon measurements).
type Config struct {
	// Sizes are the ledger sizes in rows, smallest first.
	Sizes []int
	// InFlight rows are in_progress and live at every size.
	InFlight int
	// Eligible is the number of eligible rows of the "few eligible" sweep.
	Eligible int
	// Backlog is the number of eligible rows drained by the drain runs.
	Backlog int
	// SweepRuns is the number of timed nothing-eligible runs per size;
	// EligibleRuns the number of few-eligible runs.
	SweepRuns    int
	EligibleRuns int
	// DrainRounds is the number of (bare, sweep) drain pairs per size, run in
	// ABBA order so drift over the run cancels out.
	DrainRounds int
	// IngestDuration is how long each heartbeat configuration is measured.
	IngestDuration time.Duration
	// IngestRows is the number of rows the heartbeat ingest beats in turn.
	IngestRows int
	// Binary is the built sweeper daemon; "" skips the daemon measurements.
	Binary string
	// CronDetectWindow and AdaptiveDetectWindow are how long rows keep
	// becoming eligible while the daemon runs with the default schedule and
	// with @adaptive.
	CronDetectWindow     time.Duration
	AdaptiveDetectWindow time.Duration
	// APIRate is the request rate (per second) of the single heartbeats
	// over HTTP; APIDuration how long they, and each insert measurement,
	// run; FeedEvents the events of the feed latency measurement.
	APIRate     int
	APIDuration time.Duration
	FeedEvents  int
	// APIOnly measures only the API, at the last size (with Binary).
	APIOnly bool
	// ConsoleRequests is the number of timed requests of each console
	// page, per role and size.
	ConsoleRequests int
	// ConsolePlans, when set, checks the plans of the console's statements
	// on the loaded ledger of the last size (its database URL); the
	// command runs console's TestQueryPlans against it.
	ConsolePlans func(ctx context.Context, dbURL string) *PlanResult
	// PruneBacklog is the number of old terminal rows (with their events)
	// each prune pass deletes; PruneRounds the (archive off, archive on)
	// pass pairs per size. Negative PruneRounds skips the prune passes.
	PruneBacklog int
	PruneRounds  int
	// Steady configures RunSteady, the simulated-month steady state
	// (steady.go), which runs on a server of its own; Run ignores it.
	Steady SteadyConfig
	// ConsoleOnly loads each size and measures only the console.
	ConsoleOnly bool
	// ProgressOnly loads each size and measures only issue 20's figures:
	// nothing-eligible runs with the new rules on and off, and, at the last
	// size, the heartbeat ingest with and without progress.
	ProgressOnly bool
	// RecoveryOnly loads each size and measures only issue 21's figures
	// (claim throughput, the cost of a stuck transition that schedules a
	// retry) on the ledger of the last size.
	RecoveryOnly bool
	// Settings are PostgreSQL settings on top of ServerSettings.
	Settings map[string]string
	// Logf receives progress; nil discards it.
	Logf func(format string, args ...any)
}

// Defaults of Config.
var (
	SizesDefault                = []int{100_000, 1_000_000, 5_000_000}
	InFlightDefault             = 50_000
	EligibleDefault             = 1_000
	BacklogDefault              = 100_000
	SweepRunsDefault            = 200
	EligibleRunsDefault         = 5
	DrainRoundsDefault          = 2
	IngestDurationDefault       = 5 * time.Second
	IngestRowsDefault           = 250_000
	CronDetectWindowDefault     = 90 * time.Second
	AdaptiveDetectWindowDefault = 45 * time.Second
	APIRateDefault              = 1000
	APIDurationDefault          = 10 * time.Second
	FeedEventsDefault           = 300
	ConsoleRequestsDefault      = 100
)

// ServerSettings tune the throwaway server for a 2-core, 24 GiB machine. The
// server package adds fsync=off and full_page_writes=off (its data directory
// is on tmpfs when /dev/shm has room).
var ServerSettings = map[string]string{
	"shared_buffers":           "1GB",
	"effective_cache_size":     "12GB",
	"maintenance_work_mem":     "1GB",
	"work_mem":                 "16MB",
	"max_wal_size":             "8GB",
	"min_wal_size":             "1GB",
	"checkpoint_timeout":       "30min",
	"wal_buffers":              "64MB",
	"random_page_cost":         "1.1",
	"synchronous_commit":       "on",
	"shared_preload_libraries": "pg_stat_statements",
	"max_connections":          "200",
}

func (c *Config) fill() {
	if len(c.Sizes) == 0 {
		c.Sizes = SizesDefault
	}
	c.InFlight = or(c.InFlight, InFlightDefault)
	c.Eligible = or(c.Eligible, EligibleDefault)
	c.Backlog = or(c.Backlog, BacklogDefault)
	c.SweepRuns = or(c.SweepRuns, SweepRunsDefault)
	c.EligibleRuns = or(c.EligibleRuns, EligibleRunsDefault)
	c.DrainRounds = or(c.DrainRounds, DrainRoundsDefault)
	c.IngestDuration = or(c.IngestDuration, IngestDurationDefault)
	c.IngestRows = or(c.IngestRows, IngestRowsDefault)
	c.CronDetectWindow = or(c.CronDetectWindow, CronDetectWindowDefault)
	c.AdaptiveDetectWindow = or(c.AdaptiveDetectWindow, AdaptiveDetectWindowDefault)
	c.APIRate = or(c.APIRate, APIRateDefault)
	c.APIDuration = or(c.APIDuration, APIDurationDefault)
	c.FeedEvents = or(c.FeedEvents, FeedEventsDefault)
	c.ConsoleRequests = or(c.ConsoleRequests, ConsoleRequestsDefault)
	c.PruneBacklog = or(c.PruneBacklog, PruneBacklogDefault)
	c.PruneRounds = or(c.PruneRounds, PruneRoundsDefault)
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
}

func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Results is everything one run measured; Render turns it into the report.
type Results struct {
	Started time.Time     `json:"started"`
	Elapsed time.Duration `json:"elapsed"`
	Command string        `json:"command"`
	Machine Machine       `json:"machine"`
	Config  ConfigInfo    `json:"config"`
	Sizes   []SizeResult  `json:"sizes"`
	Ingest  []IngestRow   `json:"ingest"`
	Daemon  *DaemonResult `json:"daemon,omitempty"`
	API     *APIResult    `json:"api,omitempty"`
	Plan    *PlanResult   `json:"plan,omitempty"`
	Steady  *SteadyResult `json:"steady,omitempty"`
	// Recovery is issue 21's figures, on the ledger of the last size.
	Recovery *RecoveryResult `json:"recovery,omitempty"`
	// HotPath is issue 19's figures (RunHotPath, run after Run by the
	// command, on a server of its own).
	HotPath  *HotPathResults `json:"hot_path,omitempty"`
	Problems []string        `json:"problems,omitempty"`

	// ConsolePlan is the console's plan test on the ledger of the last
	// size.
	ConsolePlan *PlanResult `json:"console_plan,omitempty"`
}

// ConfigInfo records the Config a run used.
type ConfigInfo struct {
	InFlight             int               `json:"in_flight"`
	Eligible             int               `json:"eligible"`
	Backlog              int               `json:"backlog"`
	SweepRuns            int               `json:"sweep_runs"`
	EligibleRuns         int               `json:"eligible_runs"`
	DrainRounds          int               `json:"drain_rounds"`
	IngestDuration       time.Duration     `json:"ingest_duration"`
	IngestRows           int               `json:"ingest_rows"`
	CronDetectWindow     time.Duration     `json:"cron_detect_window"`
	AdaptiveDetectWindow time.Duration     `json:"adaptive_detect_window"`
	HeartbeatTimeout     time.Duration     `json:"heartbeat_timeout"`
	Settings             map[string]string `json:"settings"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs       int      `json:"cpus"`
	CPUModel   string   `json:"cpu_model"`
	MemoryGiB  float64  `json:"memory_gib"`
	Kernel     string   `json:"kernel"`
	GoVersion  string   `json:"go_version"`
	PGVersion  string   `json:"pg_version"`
	ServerKind string   `json:"server_kind"`
	DataDir    string   `json:"data_dir"`
	LoadStart  []string `json:"load_start"` // 1, 5, 15 minute load averages
	LoadEnd    []string `json:"load_end"`
}

// Dist summarises durations.
type Dist struct {
	N   int           `json:"n"`
	P50 time.Duration `json:"p50"`
	P95 time.Duration `json:"p95"`
	P99 time.Duration `json:"p99"`
	Max time.Duration `json:"max"`
}

// StatementTime is the server-side mean time of one statement of a sweep
// run (pg_stat_statements).
type StatementTime struct {
	Query string        `json:"query"`
	Calls int64         `json:"calls"`
	Mean  time.Duration `json:"mean"`
}

// DrainResult is one drain of the backlog.
type DrainResult struct {
	Rows     int           `json:"rows"`
	Duration time.Duration `json:"duration"`
	Batches  int           `json:"batches"`
	Notified int           `json:"notified"`
	Events   int           `json:"events"`
	// ServerCPU is the CPU time the database's server processes spent
	// during the drain (hot path measurement only): on a loaded machine a
	// steadier figure than the wall time.
	ServerCPU time.Duration `json:"server_cpu,omitempty"`
}

// Rate is rows per second.
func (d DrainResult) Rate() float64 { return float64(d.Rows) / d.Duration.Seconds() }

// SizeResult is what was measured at one ledger size.
type SizeResult struct {
	Rows       int           `json:"rows"`
	LoadTime   time.Duration `json:"load_time"`
	TableBytes int64         `json:"table_bytes"`
	IndexBytes int64         `json:"index_bytes"`
	Nothing    Dist          `json:"nothing_eligible"`
	// NothingRecount is a nothing-eligible run that also counts the rows in
	// flight, as one run a minute does.
	NothingRecount Dist            `json:"nothing_eligible_recount"`
	Breakdown      []StatementTime `json:"nothing_eligible_breakdown,omitempty"`
	FewEligible    Dist            `json:"few_eligible"`
	// NothingRules is Nothing with the progress, queue and start rules on
	// (RulesOn), every live row having reported a progress.
	NothingRules Dist          `json:"nothing_eligible_rules_on"`
	Drains       []DrainResult `json:"drains"`
	BareDrains   []DrainResult `json:"bare_drains"`
	// TriggerDrains are bare UPDATE drains with the table's triggers on.
	TriggerDrains []DrainResult `json:"trigger_drains"`
	// Console is the console's page times on the ledger as loaded.
	Console *ConsoleResult `json:"console,omitempty"`
	// Prunes are the retention passes over a backlog (retention.go).
	Prunes []PruneResult `json:"prunes,omitempty"`
}

// TriggerRate is the rows per second of the bare drains with triggers on.
func (s SizeResult) TriggerRate() float64 { return rate(s.TriggerDrains) }

// DrainRate is the rows per second of all sweep drains together.
func (s SizeResult) DrainRate() float64 { return rate(s.Drains) }

// BareRate is the rows per second of all bare drains together.
func (s SizeResult) BareRate() float64 { return rate(s.BareDrains) }

func rate(ds []DrainResult) float64 {
	var rows int
	var d time.Duration
	for _, x := range ds {
		rows += x.Rows
		d += x.Duration
	}
	if d == 0 {
		return 0
	}
	return float64(rows) / d.Seconds()
}

// IngestRow is one heartbeat configuration.
type IngestRow struct {
	Path    string `json:"path"` // single, many, coalesce, many-write-always, ...
	Writers int    `json:"writers"`
	// Beats answered per second; each beat is one delegation's heartbeat.
	BeatsPerSec float64 `json:"beats_per_sec"`
	// Latency is per call: one beat for single and coalesce, one batch for many.
	Latency Dist `json:"latency"`
	// Updates and HotUpdates are the table's n_tup_upd and n_tup_hot_upd
	// deltas; Beats the beats answered.
	Beats      int64   `json:"beats"`
	Updates    int64   `json:"updates"`
	HotUpdates int64   `json:"hot_updates"`
	BatchAvg   float64 `json:"batch_avg,omitempty"` // delegations per statement
	Note       string  `json:"note,omitempty"`
	// ServerCPU is the CPU time of the database's server processes during
	// the measured part (a local server only; zero otherwise).
	ServerCPU time.Duration `json:"server_cpu,omitempty"`
}

// CPUPerBeat is the server's CPU time per beat, in microseconds (0 when
// not measured).
func (r IngestRow) CPUPerBeat() float64 {
	if r.Beats == 0 {
		return 0
	}
	return float64(r.ServerCPU.Microseconds()) / float64(r.Beats)
}

// HotShare is the share of row updates that were HOT.
func (r IngestRow) HotShare() float64 {
	if r.Updates == 0 {
		return 0
	}
	return float64(r.HotUpdates) / float64(r.Updates)
}

// DaemonResult is what was measured on the built daemon.
type DaemonResult struct {
	LedgerRows        int           `json:"ledger_rows"`
	StartToFirstSweep time.Duration `json:"start_to_first_sweep"`
	RSSIdleBytes      int64         `json:"rss_idle_bytes"`
	RSSDrainBytes     int64         `json:"rss_drain_bytes"` // peak while draining
	DrainRows         int           `json:"drain_rows"`
	DrainDuration     time.Duration `json:"drain_duration"`
	CronSchedule      string        `json:"cron_schedule"`
	CronInterval      time.Duration `json:"cron_interval"`
	CronDetect        Dist          `json:"cron_detect"`
	AdaptiveDetect    Dist          `json:"adaptive_detect"`
	AdaptiveRuns      int           `json:"adaptive_runs"` // sweep runs during the adaptive window
	AdaptiveWindow    time.Duration `json:"adaptive_window"`
}

// PlanResult is the EXPLAIN plan regression test's outcome.
type PlanResult struct {
	Rows     int           `json:"rows"`
	Passed   bool          `json:"passed"`
	Duration time.Duration `json:"duration"`
	Output   string        `json:"output"`
}

// Run measures everything Config asks for and returns the results. A
// measurement that fails is recorded in Results.Problems and the run goes on
// with the next one; an error means the run could not start.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	cfg.fill()
	for i, n := range cfg.Sizes {
		if n < cfg.InFlight {
			return nil, fmt.Errorf("size %d is smaller than the %d rows in flight", n, cfg.InFlight)
		}
		if i > 0 && n <= cfg.Sizes[i-1] {
			return nil, fmt.Errorf("sizes must grow: %v", cfg.Sizes)
		}
	}
	r := &Results{Started: time.Now().UTC()}
	r.Machine = describeMachine()
	r.Machine.LoadStart = loadAverage()
	srv, err := startServer(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer srv.close()
	r.Machine.PGVersion = srv.version
	r.Machine.ServerKind = srv.kind
	r.Machine.DataDir = srv.dataDir
	r.Config = ConfigInfo{
		InFlight: cfg.InFlight, Eligible: cfg.Eligible, Backlog: cfg.Backlog,
		SweepRuns: cfg.SweepRuns, EligibleRuns: cfg.EligibleRuns, DrainRounds: cfg.DrainRounds,
		IngestDuration: cfg.IngestDuration, IngestRows: cfg.IngestRows, CronDetectWindow: cfg.CronDetectWindow,
		AdaptiveDetectWindow: cfg.AdaptiveDetectWindow, HeartbeatTimeout: benchTimeout,
		Settings: srv.settings,
	}

	for i, n := range cfg.Sizes {
		last := i == len(cfg.Sizes)-1
		if err := measureSize(ctx, cfg, srv, n, last, r); err != nil {
			return r, err
		}
	}
	r.Machine.LoadEnd = loadAverage()
	r.Elapsed = time.Since(r.Started)
	return r, nil
}

// problem records a failed measurement and logs it.
func (r *Results) problem(cfg Config, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	cfg.Logf("PROBLEM: %s", msg)
	r.Problems = append(r.Problems, msg)
}

func measureSize(ctx context.Context, cfg Config, srv *server, n int, last bool, r *Results) error {
	db, err := srv.loadLedger(ctx, cfg, n)
	if err != nil {
		return fmt.Errorf("loading %d rows: %w", n, err)
	}
	defer db.drop(ctx)
	sr := SizeResult{Rows: n, LoadTime: db.loadTime}
	sr.TableBytes, sr.IndexBytes = db.sizes(ctx)
	// The live rows with a heartbeat timeout of their own stay live.
	keep, err := startKeeper(ctx, db, cfg.InFlight)
	if err != nil {
		return fmt.Errorf("beating the live rows at %d rows: %w", n, err)
	}
	defer keep.Stop()

	if cfg.ProgressOnly {
		return measureProgressOnly(ctx, cfg, db, keep, &sr, last, r)
	}
	if cfg.RecoveryOnly {
		if last {
			rec, err := measureRecovery(ctx, db)
			if err != nil {
				r.problem(cfg, "claims and retries at %d rows: %v", n, err)
			}
			r.Recovery = rec
		}
		return nil
	}
	if cfg.APIOnly {
		if !last {
			return nil
		}
		if cfg.Binary == "" {
			return errors.New("measuring the API needs the built daemon (Config.Binary)")
		}
		a, err := measureAPI(ctx, cfg, db)
		if err != nil {
			r.problem(cfg, "API at %d rows: %v", n, err)
		}
		r.API = a
		return nil
	}
	// The console first, on the ledger as loaded (the drains below add
	// hundreds of thousands of stuck events within minutes).
	c, err := measureConsole(ctx, cfg, db)
	if err != nil {
		r.problem(cfg, "console at %d rows: %v", n, err)
	}
	sr.Console = c
	if last && cfg.ConsolePlans != nil {
		cfg.Logf("console plan test at %d rows", n)
		r.ConsolePlan = cfg.ConsolePlans(ctx, db.url)
		cfg.Logf("console plan test: passed=%v in %s", r.ConsolePlan.Passed, r.ConsolePlan.Duration.Round(time.Second))
	}
	if cfg.ConsoleOnly {
		r.Sizes = append(r.Sizes, sr)
		return nil
	}
	if err := measureSweeps(ctx, cfg, db, &sr); err != nil {
		r.problem(cfg, "sweeps at %d rows: %v", n, err)
	}
	if err := measureNothingRules(ctx, cfg, db, &sr); err != nil {
		r.problem(cfg, "sweeps with the new rules on at %d rows: %v", n, err)
	}
	prune := func() {
		if cfg.PruneRounds > 0 {
			if err := measurePrune(ctx, cfg, db, &sr); err != nil {
				r.problem(cfg, "prune at %d rows: %v", n, err)
			}
		}
	}
	if !last {
		prune()
		r.Sizes = append(r.Sizes, sr)
		return nil
	}
	keep.Pause() // the ingest measures the table's updates
	if rows, err := measureIngest(ctx, cfg, db); err != nil {
		r.problem(cfg, "heartbeat ingest at %d rows: %v", n, err)
	} else {
		r.Ingest = rows
	}
	if err := keep.Resume(ctx); err != nil {
		return fmt.Errorf("beating the live rows at %d rows: %w", n, err)
	}
	// At the last size the prune passes come after the ingest: their
	// deletes leave the table to autovacuum, and an ingest right after them
	// measured 88% HOT on the coalescer with 4 writers, 100% without them.
	prune()
	r.Sizes = append(r.Sizes, sr)
	rec, err := measureRecovery(ctx, db)
	if err != nil {
		r.problem(cfg, "claims and retries at %d rows: %v", n, err)
	}
	r.Recovery = rec
	if cfg.Binary != "" {
		d, err := measureDaemon(ctx, cfg, db)
		if err != nil {
			r.problem(cfg, "daemon at %d rows: %v", n, err)
		}
		r.Daemon = d
		a, err := measureAPI(ctx, cfg, db)
		if err != nil {
			r.problem(cfg, "API at %d rows: %v", n, err)
		}
		r.API = a
	}
	return nil
}
