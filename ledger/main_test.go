package ledger_test

import (
	"os"
	"testing"

	"github.com/tasksweeper/sweeper/internal/testdb"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }
