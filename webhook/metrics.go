package webhook

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Deliverer's series. Labels carry subscription ids, never
// a URL or a secret.
type metrics struct {
	deliveries    *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	lag           *prometheus.GaugeVec
	subscriptions *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
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
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.deliveries, m.latency, m.lag, m.subscriptions} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) observe(sub string, r result) {
	m.deliveries.WithLabelValues(sub, string(r.outcome)).Inc()
	if r.status != 0 || r.outcome == OutcomeFailed {
		m.latency.WithLabelValues(sub).Observe(r.latency.Seconds())
	}
}
