package daemon

import (
	"context"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/tasksweeper/sweeper/api"
	"github.com/tasksweeper/sweeper/internal/config"
	"github.com/tasksweeper/sweeper/internal/telemetry"
	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/webhook"
)

// WebhookConfig maps the daemon's configuration onto the deliverer's.
// Deliveries render delegations as the API's GET does.
func WebhookConfig(cfg config.Config, pool *pgxpool.Pool, log *zap.Logger) webhook.Config {
	w := cfg.Webhooks
	return webhook.Config{
		Pool: pool, Logger: log,
		Timeout: w.Timeout, MaxRetryAge: w.MaxRetryAge,
		RetryMinBackoff: w.RetryMinBackoff, RetryMaxBackoff: w.RetryMaxBackoff,
		LeaseTTL: w.LeaseTTL, PollInterval: w.PollInterval, MaxInFlight: w.MaxInFlight,
		AllowHTTP: w.AllowHTTP, AllowPrivateNetworks: w.AllowPrivateNetworks,
		Render:  func(d ledger.Delegation) any { return api.RenderDelegation(d) },
		Tracing: telemetry.Enabled(os.Getenv),
	}
}

// webhookService is the deliverer as one of the daemon's services, with the
// LISTEN pool of database.listen_url when it has one.
type webhookService struct {
	*webhook.Deliverer
	closeListen func()
}

// newWebhookService builds the deliverer: woken by LISTEN on the pool, on
// database.listen_url behind a transaction pooler, or else by polling the
// feed every config.FeedPollInterval.
func newWebhookService(ctx context.Context, cfg config.Config, pool *pgxpool.Pool, metrics *Metrics, log *zap.Logger) (*webhookService, error) {
	wcfg := WebhookConfig(cfg, pool, log)
	wcfg.Metrics = metrics.Webhooks
	listenPool, err := openListenPool(ctx, cfg)
	if err != nil {
		return nil, err
	}
	closeListen := func() {
		if listenPool != nil {
			listenPool.Close()
		}
	}
	wcfg.ListenPool = listenPool
	if listenPool == nil && cfg.Database.TransactionPooler() {
		wcfg.FeedPoll = config.FeedPollInterval
	}
	d, err := webhook.New(wcfg)
	if err != nil {
		closeListen()
		return nil, err
	}
	return &webhookService{Deliverer: d, closeListen: closeListen}, nil
}

// Stop stops the deliverer, then closes its LISTEN pool.
func (s *webhookService) Stop() {
	s.Deliverer.Stop()
	s.closeListen()
}
