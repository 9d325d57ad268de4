package config

import (
	"strings"
	"testing"
	"time"
)

// Retentions are written in days, hours or both; 0 keeps for ever; anything
// shorter than an hour, negative, or not a duration is refused by name.
func TestRetentionKeys(t *testing.T) {
	t.Parallel()
	good := map[string]time.Duration{
		"30d": 30 * day, "1d12h": 36 * time.Hour, "36h": 36 * time.Hour, "0": 0, "0s": 0,
		"1h": time.Hour, "365d": 365 * day, "2d30m": 2*day + 30*time.Minute,
	}
	for text, want := range good {
		cfg, err := Load("", []string{"SWEEPER_RETENTION_COMPLETED=" + text}, nil)
		if err != nil || cfg.Retention.Completed != want {
			t.Errorf("%q: %s, %v; want %s", text, cfg.Retention.Completed, err, want)
		}
	}
	bad := map[string]string{
		"30":      "must be a duration such as 30d",
		"d":       "must be a duration such as 30d",
		"-1d":     "must be a duration such as 30d",
		"+1d":     "must be a duration such as 30d",
		"1d-1h":   "must be a duration such as 30d",
		"30m":     "must be 0 (keep for ever) or at least 1h",
		"-1h":     "must be 0 (keep for ever) or at least 1h",
		"1w":      "must be a duration such as 30d",
		"99999d":  "must be a duration such as 30d",
		"1.5d":    "must be a duration such as 30d",
		"forever": "must be a duration such as 30d",
	}
	for text, want := range bad {
		_, err := Load("", []string{"SWEEPER_RETENTION_STUCK=" + text}, nil)
		if err == nil || !strings.Contains(err.Error(), "retention.stuck") || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want one naming retention.stuck that says %q", text, err, want)
		}
	}
	for spec, want := range map[string]string{
		"@adaptive": "@adaptive is for sweep.schedule only",
		"":          "is empty",
		"hourly":    "is not a valid cron spec",
	} {
		_, err := Load("", []string{"SWEEPER_RETENTION_SCHEDULE=" + spec}, nil)
		if err == nil || !strings.Contains(err.Error(), "retention.schedule") || !strings.Contains(err.Error(), want) {
			t.Errorf("schedule %q: err = %v, want %q", spec, err, want)
		}
	}
	if formatAge(36*time.Hour) != "1d12h" || formatAge(0) != "0s" || formatAge(90*day) != "90d" || formatAge(90*time.Minute) != "1h30m" {
		t.Errorf("formatAge: %s %s %s %s", formatAge(36*time.Hour), formatAge(0), formatAge(90*day), formatAge(90*time.Minute))
	}
}
