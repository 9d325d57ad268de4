package cronsched

import (
	"strings"
	"testing"

	"go.uber.org/zap"
)

func TestParse(t *testing.T) {
	t.Parallel()
	for _, spec := range []string{"@every 30s", "*/5 * * * *", "@hourly", "CRON_TZ=UTC 0 3 * * *"} {
		if _, err := Parse(spec); err != nil {
			t.Errorf("Parse(%q) = %v, want a schedule", spec, err)
		}
	}
	for spec, want := range map[string]string{
		"CRON_TZ=UTC":   "time zone must be followed by a space",
		"TZ=":           "time zone must be followed by a space",
		"@every 1500ms": "whole seconds",
		"@every 100ms":  "whole seconds",
		"* * *":         "not a valid cron spec",
		"@sometimes":    "not a valid cron spec",
	} {
		if _, err := Parse(spec); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error saying %q", spec, err, want)
		}
	}
}

func TestNewRunsInUTC(t *testing.T) {
	t.Parallel()
	if loc := New(zap.NewNop()).Location().String(); loc != "UTC" {
		t.Fatalf("cron location = %s, want UTC", loc)
	}
}
