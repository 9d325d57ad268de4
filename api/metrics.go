package api

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the API's Prometheus collectors.
type metrics struct {
	requests    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	authRejects prometheus.Counter
	rateLimited prometheus.Counter
	longPolls   prometheus.Gauge
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
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.latency, m.authRejects, m.rateLimited, m.longPolls} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
