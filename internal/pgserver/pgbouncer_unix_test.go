//go:build unix

package pgserver

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
)

// pgbouncer in transaction mode with one server connection: two client
// connections run on the same backend, pgbouncer does not run as root, and
// Close leaves neither process nor directory.
func TestPgBouncerSharesServerConnections(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := Start(ctx, Options{Kinds: []Kind{KindLocal}, Logf: t.Logf})
	if errors.Is(err, ErrNoPostgres) && os.Getenv("SWEEPER_REQUIRE_DB") != "1" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b, err := StartPgBouncer(ctx, s, PgBouncerOptions{PoolSize: 1, Logf: t.Logf})
	if errors.Is(err, ErrNoPgBouncer) && os.Getenv("SWEEPER_REQUIRE_DB") != "1" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	pid := b.proc.Pid
	root := b.root
	if st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status"); err == nil {
		for _, line := range strings.Split(string(st), "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" && f[1] == "0" {
				t.Errorf("pgbouncer runs as root")
			}
		}
	}
	var backends []int32
	for range 2 {
		conn, err := pgx.Connect(ctx, b.URL)
		if err != nil {
			t.Fatal(err)
		}
		var backend int32
		if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()", pgx.QueryExecModeSimpleProtocol).Scan(&backend); err != nil {
			t.Fatal(err)
		}
		backends = append(backends, backend)
		defer conn.Close(ctx)
	}
	if backends[0] != backends[1] {
		t.Fatalf("two clients ran on backends %v; want one shared server connection", backends)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("pgbouncer (pid %d) alive after Close: %v", pid, err)
	}
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Errorf("%s left after Close: %v", root, err)
	}
}
