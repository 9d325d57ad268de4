package clienttest

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"testing"

	"github.com/tasksweeper/sweeper/internal/auth"
	"github.com/tasksweeper/sweeper/internal/testbin"
	"github.com/tasksweeper/sweeper/internal/testdb"
)

// Env is a running daemon's API and the tokens to call it with.
type Env struct {
	// API is the API's base URL, http://127.0.0.1:port.
	API string
	// Tokens by name: admin (admin), billing (caller billing), agent
	// (worker agent-a), agent-b (worker agent-b), reader (reader).
	Tokens map[string]string
	DB     *testdb.DB
	Daemon *testbin.Daemon
}

// Tokens is the token fixture: name, role, principal.
var Tokens = []struct{ Name, Role, Principal string }{
	{"admin", "admin", ""},
	{"billing", "caller", "billing"},
	{"agent", "worker", "agent-a"},
	{"agent-b", "worker", "agent-b"},
	{"reader", "reader", ""},
}

var apiAddrRE = regexp.MustCompile(`"api_address":"([^"]+)"`)

// Start creates a test database with the fixture's tokens and starts the
// daemon binary on it, sweeping every second, with env added (e.g.
// SWEEPER_API_RATE_LIMIT=1).
func Start(t *testing.T, binary string, env ...string) *Env {
	t.Helper()
	db := testdb.New(t)
	store := auth.NewStore(db.Pool)
	tokens := map[string]string{}
	for _, tk := range Tokens {
		tok, err := store.Create(context.Background(), tk.Name, auth.Role(tk.Role), tk.Principal)
		if err != nil {
			t.Fatal(err)
		}
		tokens[tk.Name] = tok
	}
	return StartOn(t, binary, db, tokens, env...)
}

// StartOn starts another daemon on db, whose tokens are known.
func StartOn(t *testing.T, binary string, db *testdb.DB, tokens map[string]string, env ...string) *Env {
	t.Helper()
	d := testbin.StartDaemon(t, binary, "sweeper", append([]string{"SWEEPER_DATABASE_URL=" + db.URL,
		"SWEEPER_API_LISTEN=127.0.0.1:0", "SWEEPER_SWEEP_SCHEDULE=@every 1s"}, env...))
	m := apiAddrRE.FindStringSubmatch(d.Logs())
	if m == nil {
		t.Fatalf("no api_address in the daemon's logs:\n%s", d.Logs())
	}
	return &Env{API: "http://" + m[1], Tokens: tokens, DB: db, Daemon: d}
}

// Required reports whether a missing tool fails the test instead of
// skipping it (SWEEPER_REQUIRE_DB=1, set by make test and CI).
func Required() bool {
	v, _ := strconv.ParseBool(os.Getenv(testdb.EnvRequireDB))
	return v
}

// LookPath finds a tool the test needs, or fails (under Required) or
// skips the test with how to install it.
func LookPath(t *testing.T, name, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if Required() {
			t.Fatalf("%s not found (%s): %v", name, install, err)
		}
		t.Skipf("%s not found (%s): %v", name, install, err)
	}
	return p
}
