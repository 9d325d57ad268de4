package main_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/internal/stress/report"
)

// More broken configurations and flag sets than TestBrokenConfigsExit2NamingTheKey
// covers, the hostile kind: files that are not configuration files at all,
// values at and past every bound, malformed DSNs carrying a password. Each
// exits 2, promptly, naming the key, variable, flag or file, and never
// shows the password.
func TestHostileConfigsExit2NamingTheKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := func(name string, body []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, body, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	url := "SWEEPER_DATABASE_URL=postgres://u:" + secret + "@127.0.0.1:1/db"
	cases := []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"a file larger than 1 MiB", nil, []string{"--once", "--config", file("big.yaml", []byte("# "+strings.Repeat("x", 2<<20)))}, "big.yaml"},
		{"a directory as the file", nil, []string{"--once", "--config", dir}, "is a directory"},
		{"NUL bytes as the file", nil, []string{"--once", "--config", file("nul.yaml", make([]byte, 1024))}, "nul.yaml"},
		{"invalid UTF-8 in the file", nil, []string{"--once", "--config", file("utf.yaml", []byte("sw\xffeep:\n  x: 1\n"))}, "utf.yaml"},
		{"a key set twice", nil, []string{"--once", "--config", file("dup.yaml", []byte("sweep:\n  batch_size: 5\nsweep:\n  batch_size: 6\n"))}, "set twice"},
		{"tab indentation", nil, []string{"--once", "--config", file("tab.yaml", []byte("sweep:\n\tbatch_size: 5\n"))}, "tab.yaml"},
		{"a list at the top", nil, []string{"--once", "--config", file("list.yaml", []byte("- a\n- b\n"))}, "list.yaml"},
		{"a scalar section", nil, []string{"--once", "--config", file("scalar.yaml", []byte("sweep: 5\n"))}, "sweep"},
		{"an integer past int64", nil, []string{"--once", "--config", file("huge.yaml", []byte("sweep:\n  batch_size: 99999999999999999999999\n"))}, "sweep.batch_size"},
		{"an alias bomb", nil, []string{"--once", "--config", file("bomb.yaml", []byte(
			"a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"+
				"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"))}, "bomb.yaml"},
		{"a schedule of 0s", []string{"SWEEPER_SWEEP_SCHEDULE=@every 0s"}, []string{"--once"}, "sweep.schedule"},
		{"a schedule under a second", []string{"SWEEPER_SWEEP_SCHEDULE=@every 500ms"}, []string{"--once"}, "sweep.schedule"},
		{"an unknown time zone", []string{"SWEEPER_SWEEP_SCHEDULE=CRON_TZ=Nowhere/Land * * * * *"}, []string{"--once"}, "sweep.schedule"},
		{"a port past 65535", []string{"SWEEPER_HTTP_LISTEN=:99999"}, nil, "http.listen"},
		{"a listen address with two ports", nil, []string{"--http-listen", "127.0.0.1:80:80"}, "http.listen"},
		{"max conns in exponent form", []string{"SWEEPER_DATABASE_MAX_CONNS=1e3"}, []string{"--once"}, "database.max_conns"},
		{"max conns past the bound", nil, []string{"--once", "--database-max-conns", "1001"}, "database.max_conns"},
		{"a grace of a year", nil, []string{"--shutdown-grace", "1y"}, "shutdown_grace"},
		{"a zero heartbeat timeout", nil, []string{"--once", "--sweep-heartbeat-timeout", "0s"}, "sweep.heartbeat_timeout"},
		{"a negative heartbeat timeout", []string{"SWEEPER_SWEEP_HEARTBEAT_TIMEOUT=-5m"}, []string{"--once"}, "sweep.heartbeat_timeout"},
		{"an empty log level", []string{"SWEEPER_LOG_LEVEL="}, []string{"--once"}, "log.level"},
		{"zero batches per run", []string{"SWEEPER_SWEEP_MAX_BATCHES_PER_RUN=0"}, []string{"--once"}, "sweep.max_batches_per_run"},
		{"yes for a bool", []string{"SWEEPER_SWEEP_DRY_RUN=yes"}, []string{"--once"}, "sweep.dry_run"},
		{"a negative batch", nil, []string{"--once", "--sweep-batch-size", "-1"}, "sweep.batch_size"},
		{"a hexadecimal batch", nil, []string{"--once", "--sweep-batch-size", "0x10"}, "sweep.batch_size"},
		{"a channel of 70 bytes", nil, []string{"--once", "--sweep-notify-channel", strings.Repeat("a", 70)}, "sweep.notify_channel"},
		{"a channel in upper case", nil, []string{"--once", "--sweep-notify-channel", "Upper"}, "sweep.notify_channel"},
		{"a channel with a quote", nil, []string{"--once", "--sweep-notify-channel", `x"; NOTIFY y; --`}, "sweep.notify_channel"},
		{"an unknown SWEEPER_ variable", []string{"SWEEPER_UNKNOWN=1"}, []string{"--once"}, "SWEEPER_UNKNOWN"},
		{"a keyword DSN with a bad port", []string{"SWEEPER_DATABASE_URL=host=x password=" + secret + " port=notaport"}, []string{"--once"}, "database.url"},
		{"a URL DSN with a bad sslmode", []string{"SWEEPER_DATABASE_URL=postgres://u:" + secret + "@h/db?sslmode=sometimes"}, []string{"--once"}, "database.url"},
		{"a URL DSN with a bad port", []string{"SWEEPER_DATABASE_URL=postgres://u:" + secret + "@h:notaport/db"}, []string{"--once"}, "database.url"},
		{"a malformed DATABASE_URL", []string{"SWEEPER_DATABASE_URL=", "DATABASE_URL=postgres://u:" + secret + "@h:x/db"}, []string{"--once"}, "database.url"},
		{"a malformed --database-url", nil, []string{"--once", "--database-url", "postgres://u:" + secret + "@[::1/db"}, "database.url"},
		{"migrate force below -1", nil, []string{"migrate", "force", "-2"}, "-2"},
		{"migrate up with an argument", nil, []string{"migrate", "up", "extra"}, "migrate up"},
		{"status with an argument", nil, []string{"status", "extra"}, "status"},
		{"config without validate", nil, []string{"config"}, "config validate"},
		{"--once with a command", nil, []string{"--once", "migrate", "up"}, "--once"},
	}
	for _, c := range cases {
		start := time.Now()
		r := run(t, append([]string{url}, c.env...), c.args...)
		if r.Code != 2 || !strings.Contains(r.Stderr, c.want) {
			t.Errorf("%s: want exit 2 naming %q, got %s", c.name, c.want, r)
		}
		if d := time.Since(start); d > 30*time.Second {
			t.Errorf("%s: took %s", c.name, d)
		}
		assertNoSecret(t, c.name, r)
	}
	line, err := report.Record(t.Name(), report.Figures{report.BrokenConfigs: int64(len(cases))})
	if err != nil {
		t.Error(err)
	}
	t.Log(line)
}
