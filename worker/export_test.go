package worker

import (
	"time"

	"github.com/tasksweeper/sweeper/ledger"
)

// Interval is how often w beats for d, for tests.
func Interval(w *Worker, d ledger.Delegation) time.Duration { return w.interval(d) }
