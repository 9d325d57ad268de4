package webhook_test

import (
	"os"
	"testing"

	"github.com/tasksweeper/sweeper/internal/testdb"
)

func TestMain(m *testing.M) { os.Exit(testdb.MainCheckingLeaks(m)) }
