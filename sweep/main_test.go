package sweep_test

import (
	"os"
	"testing"

	"github.com/tasksweeper/sweeper/internal/testdb"
)

// TestMain runs the tests against a real PostgreSQL and then checks that no
// goroutine the sweeper started (cron, runs) outlived them.
func TestMain(m *testing.M) { os.Exit(testdb.MainCheckingLeaks(m)) }
