// Package cronsched is the one way sweeper's services parse a robfig/cron
// schedule and build the cron that runs it: parsing never panics, every
// schedule runs in UTC with panics recovered and overlapping runs skipped,
// and cron's own logs go to zap.
package cronsched

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"go.uber.org/zap"
)

// Parse parses a standard cron spec (five fields, or a descriptor such as
// "@every 30s", optionally after CRON_TZ=). It never panics, whatever spec
// holds, and refuses an @every interval that cron would silently round
// (below 1s, or not whole seconds).
func Parse(spec string) (cron.Schedule, error) {
	sched, err := parse(spec)
	if err != nil {
		return nil, fmt.Errorf("is not a valid cron spec (%w)", err)
	}
	if every, ok := sched.(cron.ConstantDelaySchedule); ok {
		_, text, _ := strings.Cut(spec, "@every ")
		if d, err := time.ParseDuration(text); err == nil && d != every.Delay {
			return nil, fmt.Errorf("must use an @every interval of whole seconds, at least 1s (cron would run it every %s)",
				every.Delay)
		}
	}
	return sched, nil
}

// parse is cron.ParseStandard without its panics: cron v3.0.1 slices out
// of range on a time zone prefix with nothing after it ("CRON_TZ=UTC").
func parse(spec string) (sched cron.Schedule, err error) {
	if strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=") {
		if !strings.Contains(spec, " ") {
			return nil, errors.New("a time zone must be followed by a space and a schedule")
		}
	}
	defer func() {
		if r := recover(); r != nil {
			sched, err = nil, fmt.Errorf("cannot parse: %v", r)
		}
	}()
	return cron.ParseStandard(spec)
}

// New returns a cron in UTC whose jobs recover from panics and skip a run
// that comes due while the previous one is still going, logging to log:
// its routine chatter at Debug, its errors (recovered panics included) at
// Error.
func New(log *zap.Logger) *cron.Cron {
	logger := cronLogger{log.Sugar()}
	return cron.New(
		cron.WithLocation(time.UTC),
		cron.WithLogger(logger),
		cron.WithChain(cron.Recover(logger), cron.SkipIfStillRunning(logger)),
	)
}

// cronLogger is cron.Logger over zap.
type cronLogger struct{ l *zap.SugaredLogger }

func (c cronLogger) Info(msg string, keysAndValues ...any) {
	c.l.Debugw("cron: "+msg, keysAndValues...)
}

func (c cronLogger) Error(err error, msg string, keysAndValues ...any) {
	c.l.Errorw("cron: "+msg, append(keysAndValues, "error", err)...)
}
