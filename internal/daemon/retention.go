package daemon

import (
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tasksweeper/sweeper/internal/config"
	"github.com/tasksweeper/sweeper/retention"
)

// RetentionConfig maps the daemon's configuration onto the pruner's: a
// retention of 0 keeps that status for ever. sweep.dry_run makes the daemon
// change nothing, so its pruner only counts too.
func RetentionConfig(cfg config.Config, log *zap.Logger) retention.Config {
	keep := func(d time.Duration) time.Duration {
		if d == 0 {
			return retention.KeepForever
		}
		return d
	}
	return retention.Config{
		Completed:  keep(cfg.Retention.Completed),
		Failed:     keep(cfg.Retention.Failed),
		Stuck:      keep(cfg.Retention.Stuck),
		Schedule:   cfg.Retention.Schedule,
		BatchSize:  cfg.Retention.BatchSize,
		ArchiveDir: cfg.Retention.ArchiveDir,
		DryRun:     cfg.Sweep.DryRun,
		Logger:     log,
	}
}

// newPruner returns the pruner of retention.schedule, its runs recorded in
// metrics; its Stop blocks until a running batch has committed or rolled
// back.
func newPruner(pool *pgxpool.Pool, cfg config.Config, metrics *Metrics, log *zap.Logger) (*retention.Pruner, error) {
	rcfg := RetentionConfig(cfg, log)
	rcfg.OnRun = metrics.ObservePrune
	p, err := retention.New(pool, rcfg)
	if err != nil {
		return nil, err
	}
	log.Info("pruner configured",
		zap.String("schedule", p.Config().Schedule),
		zap.Duration("completed", rcfg.Completed), zap.Duration("failed", rcfg.Failed), zap.Duration("stuck", rcfg.Stuck),
		zap.Bool("archive", rcfg.ArchiveDir != ""), zap.Bool("dry_run", rcfg.DryRun))
	return p, nil
}

// retentionMetrics are the pruner's series, documented in the README and
// docs/operations.md.
type retentionMetrics struct {
	runs           *prometheus.CounterVec
	pruned         *prometheus.CounterVec
	events         prometheus.Counter
	archiveBytes   prometheus.Counter
	lastSuccess    prometheus.Gauge
	overdueRows    *prometheus.GaugeVec
	overdueSeconds *prometheus.GaugeVec
}

func newRetentionMetrics(reg prometheus.Registerer) *retentionMetrics {
	m := &retentionMetrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sweeper_retention_runs_total",
			Help: "Prune passes, by result (ok or error).",
		}, []string{"result"}),
		pruned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sweeper_retention_pruned_total",
			Help: "Terminal delegations deleted by retention, by status (completed, failed, stuck). Dry runs do not count.",
		}, []string{"status"}),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sweeper_retention_events_pruned_total",
			Help: "Audit events deleted with their delegations.",
		}),
		archiveBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sweeper_retention_archive_bytes_total",
			Help: "Bytes of archive files written (gzip) before deleting their batches.",
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sweeper_retention_last_success_timestamp_seconds",
			Help: "Unix time of the last successful prune pass; 0 before the first.",
		}),
		overdueRows: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sweeper_retention_overdue_rows",
			Help: "Delegations past their retention left after the last successful pass, by status (counted up to 100000).",
		}, []string{"status"}),
		overdueSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sweeper_retention_overdue_seconds",
			Help: "How long the oldest delegation past its retention had been due at the end of the last successful pass, by status; 0 when none.",
		}, []string{"status"}),
	}
	reg.MustRegister(m.runs, m.pruned, m.events, m.archiveBytes, m.lastSuccess, m.overdueRows, m.overdueSeconds)
	m.runs.WithLabelValues(ResultOK)
	m.runs.WithLabelValues(ResultError)
	for _, s := range retention.Statuses {
		m.pruned.WithLabelValues(s)
		m.overdueRows.WithLabelValues(s)
		m.overdueSeconds.WithLabelValues(s)
	}
	return m
}

// ObservePrune records one prune pass.
func (m *Metrics) ObservePrune(res retention.Result, err error) {
	r := m.retention
	if !res.DryRun {
		for s, n := range res.ByStatus {
			r.pruned.WithLabelValues(s).Add(float64(n))
		}
		r.events.Add(float64(res.EventsPruned))
		r.archiveBytes.Add(float64(res.ArchiveBytes))
	}
	if err != nil {
		r.runs.WithLabelValues(ResultError).Inc()
		return
	}
	r.runs.WithLabelValues(ResultOK).Inc()
	r.lastSuccess.SetToCurrentTime()
	for _, s := range retention.Statuses {
		r.overdueRows.WithLabelValues(s).Set(float64(res.OverdueRows[s]))
		r.overdueSeconds.WithLabelValues(s).Set(res.OverdueSeconds[s])
	}
}
