package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tasksweeper/sweeper/migrations"
)

// Health tracks what /readyz answers, and sweeper_ready shows: the database
// is reachable, the schema is current, and the last run did not fail. Both
// each run (RunDone) and each /readyz request set the gauge.
type Health struct {
	q       migrations.Querier
	metrics *Metrics

	mu      sync.Mutex
	lastErr error
}

// NewHealth returns a Health that checks the database through q.
func NewHealth(q migrations.Querier, m *Metrics) *Health {
	return &Health{q: q, metrics: m}
}

// RunDone records the outcome of a sweep run and sets sweeper_ready from
// it, so the gauge follows the runs whether or not anything probes /readyz
// (under systemd nothing does). A failed run is not ready at once; after a
// run that succeeded, the schema is checked (one query, at most two
// seconds), as /readyz does.
func (h *Health) RunDone(ctx context.Context, err error) {
	h.mu.Lock()
	h.lastErr = err
	h.mu.Unlock()
	if err != nil {
		h.metrics.SetReady(false)
		return
	}
	_ = h.Check(context.WithoutCancel(ctx))
}

// Check answers readiness: nil when ready, else the reason. One query both
// reaches the database and reads the schema version.
func (h *Health) Check(ctx context.Context) error {
	err := h.check(ctx)
	h.metrics.SetReady(err == nil)
	return err
}

func (h *Health) check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := migrations.ReadState(ctx, h.q)
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	if p := st.Problem(); p != "" {
		return errors.New(p)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.lastErr != nil {
		return fmt.Errorf("last sweep failed: %w", h.lastErr)
	}
	return nil
}

// Handler serves /metrics, /healthz and /readyz.
func (h *Health) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(h.metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("OK\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := h.Check(r.Context()); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("OK\n"))
	})
	return mux
}
