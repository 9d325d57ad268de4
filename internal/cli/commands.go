package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/tasksweeper/sweeper/internal/config"
	"github.com/tasksweeper/sweeper/internal/daemon"
	"github.com/tasksweeper/sweeper/migrations"
	"github.com/tasksweeper/sweeper/sweep"
)

// dbConfig loads the configuration of a command that needs the database.
func (inv *invocation) dbConfig() (config.Config, error) {
	cfg, err := inv.loadConfig()
	if err != nil {
		return cfg, err
	}
	if err := cfg.RequireDatabase(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

func (inv *invocation) runDaemon(ctx context.Context) error {
	cfg, err := inv.dbConfig()
	if err != nil {
		return err
	}
	log := newLogger(cfg, inv.stderr)
	defer func() { _ = log.Sync() }()
	log.Info("starting sweeper", zap.Object("config", cfg))
	if err := daemon.Run(ctx, cfg, daemon.Options{Logger: log}); err != nil {
		log.Error("sweeper failed", zap.Error(err))
		return err
	}
	return nil
}

// onceSummary is the --output json line of --once. Field names are a contract.
type onceSummary struct {
	Swept                     int      `json:"swept"`
	ByReason                  byReason `json:"by_reason"`
	Batches                   int      `json:"batches"`
	DurationMS                int64    `json:"duration_ms"`
	DryRun                    bool     `json:"dry_run"`
	More                      bool     `json:"more"`
	Notified                  int      `json:"notified"`
	InFlight                  int64    `json:"in_flight"`
	OldestHeartbeatAgeSeconds float64  `json:"oldest_heartbeat_age_seconds"`
	Interrupted               bool     `json:"interrupted,omitempty"`
}

// byReason is by_reason of the summary, in the documented key order.
type byReason struct {
	HeartbeatTimeout int `json:"heartbeat_timeout"`
	DeadlineExceeded int `json:"deadline_exceeded"`
	Stalled          int `json:"stalled"`
	QueueTimeout     int `json:"queue_timeout"`
	StartTimeout     int `json:"start_timeout"`
}

func summarize(res sweep.Result) onceSummary {
	return onceSummary{
		Swept: res.Swept,
		ByReason: byReason{HeartbeatTimeout: res.SweptHeartbeatTimeout, DeadlineExceeded: res.SweptDeadlineExceeded,
			Stalled: res.SweptStalled, QueueTimeout: res.SweptQueueTimeout, StartTimeout: res.SweptStartTimeout},
		Batches:                   res.Batches,
		DurationMS:                res.Duration.Milliseconds(),
		DryRun:                    res.DryRun,
		More:                      res.More,
		Notified:                  res.Notified,
		InFlight:                  res.InFlight,
		OldestHeartbeatAgeSeconds: res.OldestHeartbeatAge.Seconds(),
	}
}

// summaryLine renders a run for people.
func summaryLine(res sweep.Result) string {
	verb := "marked"
	if res.DryRun {
		verb = "would mark"
	}
	s := fmt.Sprintf("%s %d stuck (heartbeat_timeout %d, deadline_exceeded %d, stalled %d, queue_timeout %d, start_timeout %d) in %d batches, %s; %d in flight, oldest heartbeat %s",
		verb, res.Swept, res.SweptHeartbeatTimeout, res.SweptDeadlineExceeded,
		res.SweptStalled, res.SweptQueueTimeout, res.SweptStartTimeout, res.Batches,
		res.Duration.Round(time.Millisecond), res.InFlight, res.OldestHeartbeatAge.Round(time.Second))
	if res.More {
		s += "; more remain for the next run (max_batches_per_run reached)"
	}
	return s
}

// openLedger loads the configuration, makes the command's logger, connects
// and checks the schema (migrating it under migrate.auto), for the commands
// that read or write the ledger. close closes the pool and syncs the log.
func (inv *invocation) openLedger(ctx context.Context) (cfg config.Config, log *zap.Logger, pool *pgxpool.Pool, closeAll func(), err error) {
	cfg, err = inv.dbConfig()
	if err != nil {
		return cfg, nil, nil, nil, err
	}
	log = newLogger(cfg, inv.stderr)
	pool, err = daemon.OpenPool(ctx, cfg)
	if err != nil {
		_ = log.Sync()
		return cfg, nil, nil, nil, err
	}
	closeAll = func() {
		pool.Close()
		_ = log.Sync()
	}
	if err := daemon.EnsureSchema(ctx, pool, cfg, log); err != nil {
		closeAll()
		return cfg, nil, nil, nil, err
	}
	return cfg, log, pool, closeAll, nil
}

func (inv *invocation) runOnce(ctx context.Context) error {
	cfg, log, pool, closeAll, err := inv.openLedger(ctx)
	if err != nil {
		return err
	}
	defer closeAll()
	s, err := sweep.New(pool, daemon.SweepConfig(cfg, log))
	if err != nil {
		return err
	}
	res, err := s.RunOnce(ctx)
	interrupted := errors.Is(err, context.Canceled) && ctx.Err() != nil
	if err != nil && !interrupted {
		return daemon.ExplainPooler(err)
	}
	sum := summarize(res)
	sum.Interrupted = interrupted
	if inv.opts.output == "json" {
		b, _ := json.Marshal(sum)
		fmt.Fprintln(inv.stdout, string(b))
	} else {
		line := summaryLine(res)
		if interrupted {
			line += " (interrupted)"
		}
		fmt.Fprintln(inv.stdout, line)
	}
	if inv.opts.failOnStuck && res.Swept > 0 {
		return errStuck
	}
	return nil
}

func (inv *invocation) runMigrate(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usagef("usage: sweeper migrate up|down|version|force N")
	}
	sub := args[0]
	var forceTo int
	switch sub {
	case "up", "down", "version":
		if len(args) != 1 {
			return usagef("migrate %s takes no arguments", sub)
		}
	case "force":
		if len(args) != 2 {
			return usagef("usage: sweeper migrate force N (N: the version to record as clean; -1 for none)")
		}
		n, err := strconv.Atoi(args[1])
		if err != nil || n < -1 {
			return usagef("migrate force: version must be a whole number >= -1, got %q", args[1])
		}
		forceTo = n
	default:
		return usagef("unknown migrate command %q (want up, down, version or force N)", sub)
	}
	cfg, err := inv.dbConfig()
	if err != nil {
		return err
	}
	dsn, err := cfg.Database.MigrationURL() // never through a transaction pooler
	if err != nil {
		return err
	}
	mg, err := migrations.Open(dsn)
	if err != nil {
		return err
	}
	defer mg.Close()
	switch sub {
	case "up":
		err = mg.Up()
	case "down":
		err = mg.Down()
	case "force":
		err = mg.Force(forceTo)
	}
	if err != nil {
		return err
	}
	v, dirty, err := mg.Version()
	if err != nil {
		return err
	}
	st := migrations.State{Version: v, Dirty: dirty}
	if inv.opts.output == "json" {
		b, _ := json.Marshal(map[string]any{"version": v, "dirty": dirty, "latest": migrations.Latest, "current": st.Current()})
		fmt.Fprintln(inv.stdout, string(b))
		return nil
	}
	line := fmt.Sprintf("schema version %d (this build expects %d)", v, migrations.Latest)
	if p := st.Problem(); p != "" {
		line += ": " + p
	}
	fmt.Fprintln(inv.stdout, line)
	return nil
}

func (inv *invocation) runStatus(ctx context.Context) error {
	cfg, err := inv.dbConfig()
	if err != nil {
		return err
	}
	pool, err := daemon.OpenPool(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	st, err := migrations.ReadState(ctx, pool)
	if err != nil {
		return daemon.ExplainPooler(err)
	}
	if p := st.Problem(); p != "" {
		return errors.New(p)
	}
	snap, err := sweep.InspectConfig(ctx, pool, daemon.SweepConfig(cfg, nil))
	if err != nil {
		return daemon.ExplainPooler(err)
	}
	if inv.opts.output == "json" {
		b, _ := json.Marshal(snap)
		fmt.Fprintln(inv.stdout, string(b))
		return nil
	}
	tw := tabwriter.NewWriter(inv.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STATUS\tROWS")
	for _, c := range snap.ByStatus {
		fmt.Fprintf(tw, "%s\t%d\n", c.Status, c.Rows)
	}
	fmt.Fprintf(tw, "total\t%d\n", snap.Total)
	_ = tw.Flush()
	fmt.Fprintf(inv.stdout, "\noldest in_progress heartbeat: %s\n", formatAge(snap.OldestHeartbeatAgeSeconds))
	var total int64
	for _, n := range snap.EligibleByReason {
		total += n
	}
	fmt.Fprintf(inv.stdout, "eligible now (heartbeat timeout %s): %d (heartbeat_timeout %d, deadline_exceeded %d, stalled %d, queue_timeout %d, start_timeout %d)\n",
		cfg.Sweep.HeartbeatTimeout, total, snap.EligibleHeartbeat, snap.EligibleDeadline,
		snap.EligibleByReason[sweep.ReasonStalled], snap.EligibleByReason[sweep.ReasonQueueTimeout],
		snap.EligibleByReason[sweep.ReasonStartTimeout])
	return nil
}

func formatAge(seconds *float64) string {
	if seconds == nil {
		return "none in progress"
	}
	return (time.Duration(*seconds * float64(time.Second))).Round(time.Second).String() + " ago"
}

func (inv *invocation) runConfigValidate(_ context.Context, _ []string) error {
	cfg, err := inv.loadConfig()
	if err != nil {
		return err
	}
	if inv.opts.output == "json" {
		// Config.MarshalJSON writes the keys as the YAML file does.
		b, err := json.Marshal(struct {
			Valid  bool          `json:"valid"`
			Config config.Config `json:"config"`
		}{true, cfg})
		if err != nil {
			return err
		}
		fmt.Fprintln(inv.stdout, string(b))
		return nil
	}
	fmt.Fprintf(inv.stdout, "configuration is valid\n%s\n", cfg.String())
	if err := cfg.RequireDatabase(); err != nil {
		fmt.Fprintf(inv.stdout, "note: %s\n", err)
	}
	return nil
}
