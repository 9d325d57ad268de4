package cli

import (
	"context"

	"github.com/tasksweeper/sweeper/internal/config"
	"github.com/tasksweeper/sweeper/internal/devmode"
)

func (inv *invocation) runDev(ctx context.Context) error {
	cfg := config.Default()
	cfg.Log.Format = config.LogFormatConsole
	cfg.Log.Level = "warn"
	log := newLogger(cfg, inv.stderr)
	defer func() { _ = log.Sync() }()
	return devmode.Run(ctx, inv.stdout, log)
}
