package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/migrations"
	"github.com/tasksweeper/sweeper/webhook"
)

// WebhookConfig sizes the webhook delivery measurement.
type WebhookConfig struct {
	// Subscriptions are the subscription counts measured, in turn.
	Subscriptions []int
	// Backlog is how many events one transaction commits for the
	// throughput measurement (each goes to every subscription).
	Backlog int
	// Rate and Duration drive the latency measurement: one event every
	// 1/Rate seconds, open loop, while healthy.
	Rate     int
	Duration time.Duration
}

// WebhookRound is one subscription count's figures.
type WebhookRound struct {
	Subscriptions     int     `json:"subscriptions"`
	Deliveries        int     `json:"deliveries"`
	DeliveriesPerSec  float64 `json:"deliveries_per_sec"`
	LatencyEvents     int     `json:"latency_events"`
	CommitToDeliverMS struct {
		P50 float64 `json:"p50"`
		P99 float64 `json:"p99"`
		Max float64 `json:"max"`
	} `json:"commit_to_delivery_ms"`
	PeakRSSMiB float64 `json:"peak_rss_mib"`
}

// hookReceiver is the local endpoint: it notes when each (path,
// delegation, status) first arrives and answers 204.
type hookReceiver struct {
	srv  *http.Server
	url  string
	mu   sync.Mutex
	seen map[string]time.Time
	n    int
}

func startHookReceiver() (*hookReceiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &hookReceiver{url: "http://" + ln.Addr().String(), seen: map[string]time.Time{}}
	r.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		at := time.Now()
		b, _ := io.ReadAll(req.Body)
		var p struct {
			Data struct {
				Event struct {
					DelegationID string `json:"delegation_id"`
					ToStatus     string `json:"to_status"`
				} `json:"event"`
			} `json:"data"`
		}
		_ = json.Unmarshal(b, &p)
		key := req.URL.Path + " " + p.Data.Event.DelegationID + " " + p.Data.Event.ToStatus
		r.mu.Lock()
		if _, ok := r.seen[key]; !ok {
			r.seen[key] = at
			r.n++
		}
		r.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

func (r *hookReceiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// RunWebhooks measures the daemon's webhook deliveries to a local receiver:
// for each subscription count, the deliveries per second of a committed
// backlog, the time from an event's commit to its delivery under an open
// loop of events, and the daemon's peak RSS.
func RunWebhooks(ctx context.Context, cfg Config, wc WebhookConfig) ([]WebhookRound, error) {
	srv, err := startServer(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer srv.close()
	rcv, err := startHookReceiver()
	if err != nil {
		return nil, err
	}
	defer rcv.srv.Close()
	var out []WebhookRound
	for _, n := range wc.Subscriptions {
		name := fmt.Sprintf("bench_webhooks_%d", n)
		if _, err := srv.admin.Exec(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{name}.Sanitize()); err != nil {
			return out, err
		}
		if _, err := srv.admin.Exec(ctx, `CREATE DATABASE `+pgx.Identifier{name}.Sanitize()); err != nil {
			return out, err
		}
		url := dbURL(srv.s.URL, name)
		if err := migrations.Up(ctx, url); err != nil {
			return out, err
		}
		round, err := webhookRound(ctx, cfg, wc, url, rcv, n)
		if err != nil {
			return out, fmt.Errorf("%d subscriptions: %w", n, err)
		}
		out = append(out, round)
	}
	return out, nil
}

func webhookRound(ctx context.Context, cfg Config, wc WebhookConfig, url string, rcv *hookReceiver, n int) (WebhookRound, error) {
	round := WebhookRound{Subscriptions: n}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return round, err
	}
	defer pool.Close()
	store := webhook.NewStore(pool)
	for i := range n {
		if _, err := store.Create(ctx, webhook.NewSubscription{URL: fmt.Sprintf("%s/n%d/s%d", rcv.url, n, i), AllowHTTP: true, AllowPrivate: true}); err != nil {
			return round, err
		}
	}
	d, err := startDaemon(cfg.Binary, url, "SWEEPER_SWEEP_SCHEDULE=@every 1h", "SWEEPER_LOG_LEVEL=info",
		"SWEEPER_WEBHOOKS_ALLOW_HTTP=true", "SWEEPER_WEBHOOKS_ALLOW_PRIVATE_NETWORKS=true", "SWEEPER_WEBHOOKS_POLL_INTERVAL=100ms")
	if err != nil {
		return round, err
	}
	defer func() { _ = d.stop() }()
	var peak int64
	sample := func() {
		if rss, err := d.rss(); err == nil {
			peak = max(peak, rss)
		}
	}
	waitFor := func(what string, timeout time.Duration, cond func() (bool, error)) error {
		deadline := time.Now().Add(timeout)
		for {
			ok, err := cond()
			if err != nil || ok {
				return err
			}
			sample()
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: not within %s; daemon log:\n%s", what, timeout, d.logTail())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if err := waitFor("leases", time.Minute, func() (bool, error) {
		var held int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM webhook_subscriptions WHERE lease_owner IS NOT NULL`).Scan(&held)
		return held == n, err
	}); err != nil {
		return round, err
	}

	// Throughput: one transaction commits Backlog events; every
	// subscription delivers them all.
	base := rcv.count()
	if _, err := pool.Exec(ctx, `INSERT INTO delegations (delegation_id, caller_id, callee_id)
		SELECT 'b' || $1::int || '-' || g, 'bench', 'w' FROM generate_series(1, $2::int) AS g`, n, wc.Backlog); err != nil {
		return round, err
	}
	began := time.Now()
	want := base + n*wc.Backlog
	if err := waitFor("the backlog delivered", 10*time.Minute, func() (bool, error) { return rcv.count() >= want, nil }); err != nil {
		return round, err
	}
	elapsed := time.Since(began)
	round.Deliveries = n * wc.Backlog
	round.DeliveriesPerSec = float64(round.Deliveries) / elapsed.Seconds()
	cfg.Logf("webhooks: %d subscriptions: %d deliveries in %s: %.0f/s", n, round.Deliveries, elapsed.Round(time.Millisecond), round.DeliveriesPerSec)

	// Latency while healthy: one event every 1/Rate s, its commit time
	// noted when the INSERT returns.
	commits := map[string]time.Time{}
	tick := time.NewTicker(time.Second / time.Duration(max(wc.Rate, 1)))
	stopAt := time.Now().Add(wc.Duration)
	for i := 0; time.Now().Before(stopAt); i++ {
		<-tick.C
		id := fmt.Sprintf("l%d-%d", n, i)
		if _, err := pool.Exec(ctx, `INSERT INTO delegations (delegation_id, caller_id, callee_id) VALUES ($1, 'bench', 'w')`, id); err != nil {
			tick.Stop()
			return round, err
		}
		commits[id] = time.Now()
		if i%10 == 0 {
			sample()
		}
	}
	tick.Stop()
	round.LatencyEvents = len(commits)
	if err := waitFor("the latency events delivered", time.Minute, func() (bool, error) {
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		for id := range commits {
			for i := range n {
				if _, ok := rcv.seen[fmt.Sprintf("/n%d/s%d %s queued", n, i, id)]; !ok {
					return false, nil
				}
			}
		}
		return true, nil
	}); err != nil {
		return round, err
	}
	var lat []float64
	rcv.mu.Lock()
	for id, at := range commits {
		for i := range n {
			lat = append(lat, float64(rcv.seen[fmt.Sprintf("/n%d/s%d %s queued", n, i, id)].Sub(at).Microseconds())/1000)
		}
	}
	rcv.mu.Unlock()
	slices.Sort(lat)
	pct := func(p float64) float64 { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	round.CommitToDeliverMS.P50, round.CommitToDeliverMS.P99, round.CommitToDeliverMS.Max = pct(0.5), pct(0.99), lat[len(lat)-1]
	sample()
	round.PeakRSSMiB = float64(peak) / (1 << 20)
	cfg.Logf("webhooks: %d subscriptions: commit to delivery p50 %.1f ms, p99 %.1f ms, max %.1f ms over %d deliveries; peak RSS %.1f MiB",
		n, round.CommitToDeliverMS.P50, round.CommitToDeliverMS.P99, round.CommitToDeliverMS.Max, len(lat), round.PeakRSSMiB)
	return round, nil
}
