package sweep

import (
	"errors"
	"strings"

	"github.com/robfig/cron/v3"

	"github.com/tasksweeper/sweeper/internal/cronsched"
)

// ValidateSchedule reports why spec cannot be a Config.Schedule, or nil. It
// accepts ScheduleAdaptive and what cron.ParseStandard accepts (five fields
// or a descriptor such as "@every 30s", optionally after CRON_TZ=), except an
// @every interval that cron would silently round (below 1s, or not whole
// seconds). It never panics, whatever spec holds.
func ValidateSchedule(spec string) error {
	_, err := parseSchedule(spec)
	return err
}

// parseSchedule is ValidateSchedule returning the parsed cron schedule (nil
// for ScheduleAdaptive).
func parseSchedule(spec string) (cron.Schedule, error) {
	if strings.TrimSpace(spec) == "" {
		return nil, errors.New(`is empty; it must be a cron spec such as "@every 30s" or "*/5 * * * *", or ` + ScheduleAdaptive)
	}
	if spec == ScheduleAdaptive {
		return nil, nil
	}
	return cronsched.Parse(spec)
}
