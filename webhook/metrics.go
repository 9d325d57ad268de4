package webhook

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the Deliverer's series. Labels carry subscription ids, never
// a URL or a secret.
type Metrics struct {
	deliveries    *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	lag           *prometheus.GaugeVec
	subscriptions *prometheus.GaugeVec
}

// NewMetrics returns the Deliverer's series, registered nowhere: register
// Collectors, or give Config.Registerer instead.
func NewMetrics() *Metrics {
	return &Metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sweeper_webhook_deliveries_total",
			Help: "Webhook delivery attempts by subscription and outcome (delivered, failed, gone, refused).",
		}, []string{"subscription", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sweeper_webhook_delivery_duration_seconds",
			Help:    "Time from sending a webhook delivery to its response (or failure), by subscription.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"subscription"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sweeper_webhook_lag_events",
			Help: "Event ids between a subscription's cursor and the feed's head: what it has yet to deliver or pass over.",
		}, []string{"subscription"}),
		subscriptions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sweeper_webhook_subscriptions",
			Help: "Webhook subscriptions by state (active, paused, disabled).",
		}, []string{"state"}),
	}
}

// Collectors are the series to register.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.deliveries, m.latency, m.lag, m.subscriptions}
}

func (m *Metrics) observe(sub string, r result) {
	m.deliveries.WithLabelValues(sub, string(r.outcome)).Inc()
	if r.status != 0 || r.outcome == OutcomeFailed {
		m.latency.WithLabelValues(sub).Observe(r.latency.Seconds())
	}
}

// Init makes the subscriptions-by-state series exist, at zero, before the
// first count.
func (m *Metrics) Init() {
	for _, s := range []State{Active, Paused, Disabled} {
		m.subscriptions.WithLabelValues(string(s))
	}
}
