package console

import (
	"sync"
	"time"
)

// RunTracker records the outcome of the sweeper's runs for the overview:
// pass its RunDone to the sweeper's OnRun and its Runs to Config.Runs.
type RunTracker struct {
	now func() time.Time

	mu   sync.Mutex
	runs Runs
}

// NewRunTracker returns an empty RunTracker.
func NewRunTracker() *RunTracker { return &RunTracker{now: time.Now} }

// RunDone records that a run ended with err (nil: it succeeded).
func (t *RunTracker) RunDone(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if err == nil {
		t.runs.LastSuccess = now
		return
	}
	t.runs.LastFailure = now
	t.runs.LastError = err.Error()
	t.runs.Failures++
}

// Runs returns what was recorded.
func (t *RunTracker) Runs() Runs {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.runs
}
