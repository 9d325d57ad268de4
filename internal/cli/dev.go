package cli

import (
	"context"

	"github.com/tasksweeper/sweeper/internal/config"
	"github.com/tasksweeper/sweeper/internal/devmode"
)

func (e *env) runDev(ctx context.Context) error {
	cfg := config.Default()
	cfg.Log.Format = config.LogFormatConsole
	cfg.Log.Level = "warn"
	log := newLogger(cfg, e.stderr)
	defer func() { _ = log.Sync() }()
	return devmode.Run(ctx, e.stdout, log)
}
