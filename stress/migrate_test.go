package stress

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/internal/testbin"
	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/migrations"
	"github.com/tasksweeper/sweeper/stress/report"
)

// Three `sweeper migrate up` processes at once on an empty database, several
// rounds: all succeed, and the schema is there once, clean, at the latest
// version (a second application would fail on objects that exist).
func TestConcurrentMigrateUp(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	t.Parallel()
	const racers = 3
	rounds := 3
	if full() {
		rounds = 10
	}
	// The schema as one migration leaves it (testdb's template).
	want := schemaObjects(t, testdb.New(t).URL)
	for round := range rounds {
		db := testdb.NewEmpty(t)
		dsn := withUser(t, db.URL, "postgres", secret)
		type out struct {
			Code           int
			Stdout, Stderr bytes.Buffer
		}
		outs := make([]*out, racers)
		cmds := make([]*exec.Cmd, racers)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		for i := range racers {
			outs[i] = &out{}
			cmds[i] = exec.CommandContext(ctx, binary, "migrate", "up")
			cmds[i].Env = append(testbin.CleanEnv(), "SWEEPER_DATABASE_URL="+dsn)
			cmds[i].Stdout, cmds[i].Stderr = &outs[i].Stdout, &outs[i].Stderr
		}
		// Start them together, then wait for all.
		for _, c := range cmds {
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
		}
		for i, c := range cmds {
			err := c.Wait()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				outs[i].Code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
		}
		cancel()
		for i, o := range outs {
			if o.Code != 0 || !strings.Contains(o.Stdout.String(), fmt.Sprintf("schema version %d", migrations.Latest)) {
				t.Errorf("round %d, process %d: exit %d\nstdout: %s\nstderr: %s", round, i, o.Code, o.Stdout.String(), o.Stderr.String())
			}
			assertNoSecret(t, "migrate up", o.Stdout.String()+o.Stderr.String())
		}
		// Applied once: one version row, clean; each object once.
		if n := mustInt(t, db.URL, `SELECT count(*) FROM `+migrations.VersionTable+` WHERE version = $1 AND NOT dirty`, migrations.Latest); n != 1 {
			t.Errorf("round %d: %d clean version rows", round, n)
		}
		if n := mustInt(t, db.URL, `SELECT count(*) FROM `+migrations.VersionTable); n != 1 {
			t.Errorf("round %d: %d version rows", round, n)
		}
		if got := schemaObjects(t, db.URL); got != want {
			t.Errorf("round %d: the schema after three racing migrations differs from one migration:\n%s\nwant:\n%s", round, got, want)
		}
	}
	record(t, report.Figures{report.MigrationRacers: int64(racers * rounds)})
}

// schemaObjects lists the database's own objects: relations, indexes,
// triggers, functions and constraints, by name and kind, one per line.
func schemaObjects(t *testing.T, dsn string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn := connect(t, dsn)
	var s string
	err := conn.QueryRow(ctx, `SELECT string_agg(o, E'\n' ORDER BY o) FROM (
		SELECT 'relation ' || relkind::text || ' ' || relname AS o FROM pg_class
		    WHERE relnamespace = 'public'::regnamespace AND relname <> '`+migrations.VersionTable+`'
		UNION ALL SELECT 'trigger ' || tgrelid::regclass || ' ' || tgname FROM pg_trigger WHERE NOT tgisinternal
		UNION ALL SELECT 'function ' || proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace
		UNION ALL SELECT 'constraint ' || conrelid::regclass || ' ' || conname FROM pg_constraint
		    WHERE connamespace = 'public'::regnamespace AND conrelid <> '`+migrations.VersionTable+`'::regclass
	) AS objects`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The daemon refuses to start on a dirty, behind or newer schema, saying
// what to run, even with migrate.auto; after the operator's repair
// (`migrate force`) it starts.
func TestDaemonRefusesBadSchema(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	t.Parallel()
	db := testdb.New(t)
	dsn := withUser(t, db.URL, "postgres", secret)
	env := []string{"SWEEPER_DATABASE_URL=" + dsn, "SWEEPER_HTTP_LISTEN=127.0.0.1:0", "SWEEPER_SWEEP_SCHEDULE=@every 1s"}
	refuses := func(what string, extra []string, want ...string) {
		t.Helper()
		r := run(t, append(append([]string(nil), env...), extra...)) // the daemon: no command, no --once
		if r.Code != 1 {
			t.Errorf("daemon on a %s schema: want exit 1: %s", what, r)
			return
		}
		for _, w := range append([]string{"refusing to start"}, want...) {
			if !strings.Contains(r.Stderr, w) {
				t.Errorf("daemon on a %s schema: stderr lacks %q: %s", what, w, r)
			}
		}
		assertNoSecret(t, "daemon on a "+what+" schema", r.Stdout+r.Stderr)
	}

	mustExec(t, db.URL, `UPDATE `+migrations.VersionTable+` SET dirty = true`)
	refuses("dirty", nil, "dirty", "sweeper migrate force")
	refuses("dirty (with migrate.auto)", []string{"SWEEPER_MIGRATE_AUTO=true"}, "dirty", "sweeper migrate force")
	mustExec(t, db.URL, `UPDATE `+migrations.VersionTable+` SET version = 99, dirty = false`)
	refuses("newer", []string{"SWEEPER_MIGRATE_AUTO=true"}, "upgrade sweeper")
	empty := testdb.NewEmpty(t)
	r := run(t, []string{"SWEEPER_DATABASE_URL=" + empty.URL, "SWEEPER_HTTP_LISTEN=127.0.0.1:0"})
	if r.Code != 1 || !strings.Contains(r.Stderr, "sweeper migrate up") {
		t.Errorf("daemon on an empty database: want exit 1 saying to run `sweeper migrate up`: %s", r)
	}

	// The operator's repair, then the daemon starts.
	mustExec(t, db.URL, `UPDATE `+migrations.VersionTable+` SET version = $1, dirty = true`, migrations.Latest)
	if r := run(t, []string{"SWEEPER_DATABASE_URL=" + dsn}, "migrate", "force", fmt.Sprint(migrations.Latest)); r.Code != 0 {
		t.Fatalf("migrate force %d: %s", migrations.Latest, r)
	}
	d := startDaemon(t, "daemon", env)
	eventually(t, time.Minute, "/readyz 200 after the repair", func() bool { return readyz(d) == 200 })
	if code := d.Stop(t, syscall.SIGTERM, time.Minute); code != 0 {
		t.Errorf("exit %d after SIGTERM\n%s", code, d.Logs())
	}
}
