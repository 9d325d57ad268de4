package sweep_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/tasksweeper/sweeper/internal/testdb"
)

// TestMain runs the tests against a real PostgreSQL and then checks that no
// goroutine the sweeper started (cron, runs) outlived them.
func TestMain(m *testing.M) {
	code := testdb.Main(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left running:", err)
			code = 1
		}
	}
	os.Exit(code)
}
