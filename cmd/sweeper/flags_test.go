package main_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tasksweeper/sweeper/internal/config"
)

// unreachableURL names a database that refuses connections at once, so that
// a command which got past its flags fails with exit 1, not 2.
const unreachableURL = "postgres://sweeper:" + secret + "@127.0.0.1:1/nope?connect_timeout=2"

// TestFlagMatrix runs every command with every flag through the binary: a
// flag the command accepts gets past the usage check (the command then runs
// and, its database refusing connections, fails with exit 1, or succeeds);
// any other flag is a usage error, exit 2, naming the flag, before anything
// runs.
func TestFlagMatrix(t *testing.T) {
	t.Parallel()
	cfgFile := filepath.Join(t.TempDir(), "sweeper.yaml")
	if err := os.WriteFile(cfgFile, []byte("log:\n  level: warn\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Each flag with a valid value.
	flagArgs := map[string][]string{
		"config":        {"--config", cfgFile},
		"once":          {"--once"},
		"dry-run":       {"--dry-run"},
		"fail-on-stuck": {"--fail-on-stuck"},
		"output":        {"--output", "json"},
		"version":       {"--version"},
	}
	var keyFlags []string
	for _, k := range config.Keys() {
		keyFlags = append(keyFlags, k.Flag)
		value := k.Default
		switch k.Path {
		case "database.url":
			value = unreachableURL
		case "http.listen":
			value = "127.0.0.1:0"
		}
		flagArgs[k.Flag] = []string{"--" + k.Flag + "=" + value}
	}
	except := func(all []string, out ...string) []string {
		var keep []string
		for _, f := range all {
			if !slices.Contains(out, f) {
				keep = append(keep, f)
			}
		}
		return keep
	}
	prefixed := func(all []string, prefixes ...string) []string {
		var keep []string
		for _, f := range all {
			for _, p := range prefixes {
				if strings.HasPrefix(f, p) {
					keep = append(keep, f)
				}
			}
		}
		return keep
	}
	migrateFlags := []string{"config", "output", "database-url", "database-pooler", "database-migrate-url"}
	commands := []struct {
		args    []string // the command
		accepts []string // the flags it accepts
	}{
		{nil, append([]string{"config", "dry-run"}, keyFlags...)},
		{[]string{"--once"}, append([]string{"once", "config", "dry-run", "fail-on-stuck", "output"},
			except(keyFlags, append(prefixed(keyFlags, "api-", "retention-", "webhooks-"), "sweep-schedule", "http-listen", "shutdown-grace", "database-listen-url",
				"database-read-url", "database-read-max-lag")...)...)},
		{[]string{"migrate", "up"}, migrateFlags},
		{[]string{"migrate", "down"}, migrateFlags},
		{[]string{"migrate", "version"}, migrateFlags},
		{[]string{"migrate", "force", "1"}, migrateFlags},
		{[]string{"status"}, []string{"config", "output", "database-url", "database-max-conns", "database-pooler",
			"database-query-exec-mode", "sweep-heartbeat-timeout", "sweep-progress-timeout", "sweep-queue-timeout", "sweep-start-timeout"}},
		{[]string{"config", "validate"}, append([]string{"config", "dry-run", "output"}, keyFlags...)},
		{[]string{"token", "list"}, []string{"config", "output", "name", "role", "principal",
			"database-url", "database-max-conns", "database-pooler", "database-query-exec-mode", "log-level", "log-format"}},
		{[]string{"webhook", "list"}, []string{"config", "output", "url", "events", "caller-id", "callee-id",
			"database-url", "database-max-conns", "database-pooler", "database-query-exec-mode", "database-migrate-url",
			"migrate-auto", "webhooks-allow-http", "webhooks-allow-private-networks", "log-level", "log-format"}},
		{[]string{"prune"}, append([]string{"config", "dry-run", "output", "database-url", "database-max-conns",
			"database-pooler", "database-query-exec-mode", "database-migrate-url",
			"sweep-dry-run", "migrate-auto", "log-level", "log-format"},
			except(prefixed(keyFlags, "retention-"), "retention-schedule")...)},
		{[]string{"archive", "verify", "/nonexistent"}, []string{"output"}},
		{[]string{"dev"}, nil},
		{[]string{"help"}, nil},
		{[]string{"version"}, []string{"version"}},
		{[]string{"--version"}, []string{"version"}},
	}
	env := []string{"SWEEPER_DATABASE_URL=" + unreachableURL, "SWEEPER_HTTP_LISTEN=127.0.0.1:0"}
	for _, c := range commands {
		name := "sweeper " + strings.Join(c.args, " ")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for flagName, fa := range flagArgs {
				if slices.Contains(c.args, fa[0]) || len(c.args) == 0 && (flagName == "once" || flagName == "version") {
					continue // the flag that selects the command, or (alone) another
				}
				// Flags after the command, as `sweeper status --fail-on-stuck`.
				r := run(t, env, append(slices.Clone(c.args), fa...)...)
				assertNoSecret(t, name+" "+strings.Join(fa, " "), r)
				refusal := "--" + flagName + " does not apply to "
				if slices.Equal(c.args, []string{"--once"}) && flagName == "version" {
					// --once --version: either flag is refused, for the other.
					refusal = " does not apply to "
				}
				if slices.Contains(c.accepts, flagName) {
					if r.Code == 2 || strings.Contains(r.Stderr, "does not apply") {
						t.Errorf("%s refuses --%s, which it accepts: %s", name, flagName, r)
					}
					continue
				}
				if r.Code != 2 || !strings.Contains(r.Stderr, refusal) || r.Stdout != "" {
					t.Errorf("%s accepts --%s: want exit 2 and %q, got %s", name, flagName, refusal+"...", r)
				}
			}
		})
	}
	// Every flag a command accepts, at once, and before the command.
	t.Run("all accepted flags together", func(t *testing.T) {
		t.Parallel()
		args := []string{"--config", cfgFile, "--dry-run", "--output", "json"}
		for _, f := range keyFlags {
			args = append(args, flagArgs[f]...)
		}
		r := run(t, env, append(args, "config", "validate")...)
		if r.Code != 0 || !strings.Contains(r.Stdout, `"valid":true`) {
			t.Fatalf("config validate with every flag it accepts: %s", r)
		}
		r = run(t, env, "--once", "--config", cfgFile, "--dry-run", "--fail-on-stuck", "--output", "json",
			"--log-level", "warn", "--sweep-batch-size", "5", "--migrate-auto")
		if r.Code != 1 || strings.Contains(r.Stderr, "does not apply") {
			t.Fatalf("--once with every kind of flag it accepts: want the database's exit 1, got %s", r)
		}
	})
}

// TestConfigValidateJSON pins the shape of `config validate --output json`:
// the documented key names nested by section, values as YAML writes them
// (durations as text), the DSN as user@host:port/db without password.
func TestConfigValidateJSON(t *testing.T) {
	t.Parallel()
	env := []string{
		"SWEEPER_DATABASE_URL=postgres://sweeper:" + secret + "@db.internal:5433/app?sslmode=disable",
		"SWEEPER_SWEEP_HEARTBEAT_TIMEOUT=90s",
	}
	r := run(t, env, "config", "validate", "--output", "json", "--sweep-batch-size", "250")
	const want = `{"valid":true,"config":{"database":{"url":"sweeper@db.internal:5433/app","max_conns":4,"pooler":"none",` +
		`"query_exec_mode":"","migrate_url":"","listen_url":"","read_url":"","read_max_lag":"10s"},` +
		`"sweep":{"schedule":"@every 30s","heartbeat_timeout":"1m30s","progress_timeout":"0s","queue_timeout":"0s","start_timeout":"0s",` +
		`"batch_size":250,"max_batches_per_run":100,` +
		`"notify_channel":"delegation_stuck","dry_run":false},"migrate":{"auto":false},"http":{"listen":":9090"},` +
		`"api":{"listen":"","tls_cert_file":"","tls_key_file":"","client_ca_file":"","max_body_bytes":1048576,` +
		`"max_batch":10000,"rate_limit":0,"rate_burst":0,"max_wait":"1m","read_header_timeout":"5s","read_timeout":"30s",` +
		`"write_timeout":"1m30s","idle_timeout":"2m","max_header_bytes":16384},"log":{"level":"info","format":"json"},` +
		`"retention":{"completed":"30d","failed":"90d","stuck":"90d","schedule":"@every 1h","batch_size":1000,"archive_dir":""},` +
		`"webhooks":{"enabled":true,"timeout":"10s","max_retry_age":"3d","retry_min_backoff":"5s","retry_max_backoff":"1h",` +
		`"lease_ttl":"30s","poll_interval":"1s","max_in_flight":16,"allow_http":false,"allow_private_networks":false},` +
		`"shutdown_grace":"30s"}}` + "\n"
	if r.Code != 0 || r.Stdout != want {
		t.Fatalf("config validate --output json:\n%s\nwant stdout\n%s", r, want)
	}
	assertNoSecret(t, "config validate --output json", r)

	// The printed configuration reads back as YAML with the same meaning:
	// each section's keys are the file's keys.
	var out struct {
		Config map[string]any `json:"config"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &out); err != nil {
		t.Fatal(err)
	}
	for _, k := range config.Keys() {
		section, leaf, nested := strings.Cut(k.Path, ".")
		if !nested {
			if _, ok := out.Config[section]; !ok {
				t.Errorf("output lacks %s", k.Path)
			}
			continue
		}
		if m, _ := out.Config[section].(map[string]any); m == nil || m[leaf] == nil {
			t.Errorf("output lacks %s", k.Path)
		}
	}
}
