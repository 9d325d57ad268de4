//go:build unix

package pgserver

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// A pg_auto_failover formation of a monitor and two nodes: settled as
// primary and secondary, its formation URI names both nodes with
// target_session_attrs=read-write and lands on the primary, and Close leaves
// neither process nor directory. (The failover under load is
// tools/stress/autofailover_test.go.)
func TestAutoFailoverFormation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f, err := StartAutoFailover(ctx, AutoFailoverOptions{Logf: t.Logf})
	if errors.Is(err, ErrNoAutoFailover) && os.Getenv("SWEEPER_REQUIRE_DB") != "1" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	states, err := f.States(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != 2 || !Settled(states) || states[0].Reported != "primary" {
		t.Fatalf("states %v: want node1 primary and node2 secondary", states)
	}
	if !strings.Contains(f.FormationURI, "target_session_attrs=read-write") {
		t.Errorf("formation URI %q lacks target_session_attrs=read-write", f.FormationURI)
	}
	for _, n := range f.Nodes {
		if !strings.Contains(f.FormationURI, "127.0.0.1:"+strconv.Itoa(n.Port)) {
			t.Errorf("formation URI %q does not name %s (port %d)", f.FormationURI, n.Name, n.Port)
		}
	}
	if port, standby := whereAmI(t, f.URL); port != f.Nodes[0].Port || standby {
		t.Errorf("the formation URI reached port %d (in recovery: %v); the primary is %s on %d", port, standby, f.Nodes[0].Name, f.Nodes[0].Port)
	}
	if _, standby := whereAmI(t, f.Nodes[1].URL); !standby {
		t.Errorf("%s is not in recovery", f.Nodes[1].Name)
	}

	root := f.root
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Errorf("%s still exists after Close (%v)", root, err)
	}
	if pids, ok := processesIn(root); ok && len(pids) > 0 {
		t.Errorf("processes %v still work in %s after Close", pids, root)
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// whereAmI connects to url and returns the server's port and whether it is
// a standby.
func whereAmI(t *testing.T, url string) (port int, standby bool) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, `SELECT inet_server_port(), pg_is_in_recovery()`).Scan(&port, &standby); err != nil {
		t.Fatal(err)
	}
	return port, standby
}
