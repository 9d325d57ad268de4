package sweep

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
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
	sched, err := parseCron(spec)
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

// parseCron is cron.ParseStandard without its panics: cron v3.0.1 slices out
// of range on a time zone prefix with nothing after it ("CRON_TZ=UTC").
func parseCron(spec string) (sched cron.Schedule, err error) {
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
