package daemon

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tasksweeper/sweeper/internal/version"
	"github.com/tasksweeper/sweeper/sweep"
)

// Metrics are the daemon's Prometheus series, documented in the README. The
// in-flight gauges are set from each sweep's own reading, so a scrape costs
// the database nothing.
type Metrics struct {
	Registry *prometheus.Registry

	runs        *prometheus.CounterVec
	swept       *prometheus.CounterVec
	retries     *prometheus.CounterVec
	exhausted   *prometheus.CounterVec
	batches     prometheus.Counter
	duration    prometheus.Histogram
	lastSuccess prometheus.Gauge
	inFlight    prometheus.Gauge
	oldestAge   prometheus.Gauge
	ready       prometheus.Gauge
	retention   *retentionMetrics

	readQueries      *prometheus.CounterVec
	replicaFallbacks *prometheus.CounterVec
	replicaLag       prometheus.Gauge
	replicaInUse     prometheus.Gauge
}

// Run results, the values of sweeper_runs_total's result label.
const (
	ResultOK    = "ok"
	ResultError = "error"
)

// NewMetrics registers the daemon's series, Go and process collectors, and
// build info on a new registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sweeper_runs_total",
			Help: "Sweep runs, by result (ok or error).",
		}, []string{"result"}),
		swept: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sweeper_swept_total",
			Help: "Delegations marked stuck, by reason (heartbeat_timeout, deadline_exceeded, stalled, queue_timeout, start_timeout). Dry runs do not count.",
		}, []string{"reason"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sweeper_retries_scheduled_total",
			Help: "Delegations the sweep marked stuck whose retry policy scheduled the next attempt, by reason.",
		}, []string{"reason"}),
		exhausted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sweeper_retries_exhausted_total",
			Help: "Delegations the sweep marked stuck at the last attempt their retry policy allowed, by reason.",
		}, []string{"reason"}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sweeper_batches_total",
			Help: "Batch transactions run by sweeps.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sweeper_run_duration_seconds",
			Help:    "Duration of sweep runs, successful or not.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sweeper_last_success_timestamp_seconds",
			Help: "Unix time of the last successful sweep run; 0 before the first.",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sweeper_inflight_rows",
			Help: "Non-terminal delegations (queued, dispatched, in_progress), recounted by a run at most once a minute.",
		}),
		oldestAge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sweeper_oldest_heartbeat_age_seconds",
			Help: "Age of the oldest in_progress heartbeat after the last successful run; 0 when none is in progress.",
		}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sweeper_ready",
			Help: "1 when ready (database reachable, schema current, last run ok), else 0; set by every run and every /readyz request.",
		}),
		readQueries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sweeper_read_queries_total",
			Help: "Read-only queries of the API and the console that database.read_url may serve, by the server that ran them (replica or primary).",
		}, []string{"target"}),
		replicaFallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sweeper_read_replica_fallbacks_total",
			Help: "Reads meant for database.read_url that the primary served, by reason (lag, unreachable, not_standby, error).",
		}, []string{"reason"}),
		replicaLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sweeper_read_replica_lag_seconds",
			Help: "Staleness of database.read_url at the last check (to within the check interval); kept while it is unreachable.",
		}),
		replicaInUse: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sweeper_read_replica_in_use",
			Help: "1 while reads go to database.read_url, 0 while they go to the primary (or no replica is configured).",
		}),
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "sweeper_build_info",
		Help:        "Build of the running sweeper; always 1.",
		ConstLabels: prometheus.Labels{"version": version.Version, "commit": version.Commit, "go_version": version.GoVersion},
	})
	buildInfo.Set(1)
	m.Registry.MustRegister(m.runs, m.swept, m.retries, m.exhausted, m.batches, m.duration, m.lastSuccess,
		m.inFlight, m.oldestAge, m.ready, buildInfo,
		m.readQueries, m.replicaFallbacks, m.replicaLag, m.replicaInUse,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.retention = newRetentionMetrics(m.Registry)
	// Every labelled series exists from the start, at zero.
	m.runs.WithLabelValues(ResultOK)
	m.runs.WithLabelValues(ResultError)
	for _, r := range sweep.Reasons {
		m.swept.WithLabelValues(r)
		m.retries.WithLabelValues(r)
		m.exhausted.WithLabelValues(r)
	}
	m.readQueries.WithLabelValues(TargetReplica)
	m.readQueries.WithLabelValues(TargetPrimary)
	for _, r := range fallbackReasons {
		m.replicaFallbacks.WithLabelValues(r)
	}
	return m
}

// readQuery counts a routed read served by target. A nil Metrics records
// nothing (so do the other replica methods).
func (m *Metrics) readQuery(target string) {
	if m != nil {
		m.readQueries.WithLabelValues(target).Inc()
	}
}

// readFallback counts a read meant for the replica that the primary serves.
func (m *Metrics) readFallback(reason string) {
	if m != nil {
		m.replicaFallbacks.WithLabelValues(reason).Inc()
	}
}

// setReplicaLag records the replica's staleness at the last check.
func (m *Metrics) setReplicaLag(d time.Duration) {
	if m != nil {
		m.replicaLag.Set(d.Seconds())
	}
}

// setReplicaInUse records whether reads go to the replica.
func (m *Metrics) setReplicaInUse(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.replicaInUse.Set(1)
	} else {
		m.replicaInUse.Set(0)
	}
}

// ObserveRun records one sweep run.
func (m *Metrics) ObserveRun(res sweep.Result, err error) {
	m.duration.Observe(res.Duration.Seconds())
	m.batches.Add(float64(res.Batches))
	if !res.DryRun {
		for r, n := range res.ByReason() {
			m.swept.WithLabelValues(r).Add(float64(n))
		}
		for reason, n := range res.Retried {
			m.retries.WithLabelValues(reason).Add(float64(n))
		}
		for reason, n := range res.Exhausted {
			m.exhausted.WithLabelValues(reason).Add(float64(n))
		}
	}
	if err != nil {
		m.runs.WithLabelValues(ResultError).Inc()
		return
	}
	m.runs.WithLabelValues(ResultOK).Inc()
	m.lastSuccess.SetToCurrentTime()
	m.inFlight.Set(float64(res.InFlight))
	m.oldestAge.Set(res.OldestHeartbeatAge.Seconds())
}

// SetReady records the readiness last found, by a run or by /readyz.
func (m *Metrics) SetReady(ok bool) {
	if ok {
		m.ready.Set(1)
	} else {
		m.ready.Set(0)
	}
}
