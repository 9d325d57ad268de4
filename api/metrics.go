package api

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tasksweeper/sweeper/ledger"
)

// metrics are the API's Prometheus collectors.
type metrics struct {
	requests    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	authRejects prometheus.Counter
	rateLimited prometheus.Counter
	longPolls   prometheus.Gauge
	// retries and exhausted count the transitions made over the API that
	// scheduled the next attempt under the row's retry policy, or found
	// none left, by the status moved to.
	retries   *prometheus.CounterVec
	exhausted *prometheus.CounterVec
	claimed   prometheus.Counter
}

// countRetry counts what a transition did under the row's retry policy;
// reason is the status it moved to.
func (m *metrics) countRetry(res ledger.StatusResult, reason string) {
	switch {
	case res.Retried:
		m.retries.WithLabelValues(reason).Inc()
	case res.Exhausted:
		m.exhausted.WithLabelValues(reason).Inc()
	}
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sweeper_api_requests_total",
			Help: "HTTP API requests by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sweeper_api_request_duration_seconds",
			Help:    "HTTP API request latency by route pattern (long polls included).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route"}),
		authRejects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sweeper_api_auth_rejected_total",
			Help: "HTTP API requests refused for a missing, invalid or revoked token.",
		}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sweeper_api_rate_limited_total",
			Help: "HTTP API requests refused by the per-token rate limit.",
		}),
		longPolls: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sweeper_api_feed_waiting",
			Help: "Feed long polls waiting for an event.",
		}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sweeper_api_retries_scheduled_total",
			Help: "Transitions over the API that scheduled the next attempt under the delegation's retry policy, by the status moved to.",
		}, []string{"reason"}),
		exhausted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sweeper_api_retries_exhausted_total",
			Help: "Transitions over the API that ended the last attempt a retry policy allowed, by the status moved to.",
		}, []string{"reason"}),
		claimed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sweeper_api_claimed_total",
			Help: "Delegations moved to dispatched by POST /v1/claims.",
		}),
	}
	// Every reason's series exists from the start (at 0).
	for _, st := range ledger.RetryableStatuses() {
		m.retries.WithLabelValues(string(st))
		m.exhausted.WithLabelValues(string(st))
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.latency, m.authRejects, m.rateLimited, m.longPolls,
			m.retries, m.exhausted, m.claimed} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
