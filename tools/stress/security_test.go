package stress

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tasksweeper/sweeper/internal/pgserver"
	"github.com/tasksweeper/sweeper/internal/stress/report"
	"github.com/tasksweeper/sweeper/internal/testdb"
)

// pki is a CA made for the test and a server certificate it signed for
// localhost and 127.0.0.1, written where the server (user postgres) can read
// them.
type pki struct {
	dir                      string
	caFile, otherCAFile      string // the server's CA, and a CA that did not sign it
	serverCert, serverKeyPEM string
}

func newCA(t *testing.T, name string) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// postgresOwner returns the uid and gid the local server runs as when this
// process is root (pgserver runs it as user postgres), else ok is false.
func postgresOwner(t *testing.T) (uid, gid int, ok bool) {
	t.Helper()
	if os.Geteuid() != 0 {
		return 0, 0, false
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("running as root without a postgres user: %v", err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid, true
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir, err := os.MkdirTemp("", "sweeper-tls-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ca, caKey, caPEM := newCA(t, "sweeper stress test CA")
	_, _, otherPEM := newCA(t, "some other CA")

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano() + 1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{
		dir:          dir,
		caFile:       filepath.Join(dir, "ca.pem"),
		otherCAFile:  filepath.Join(dir, "other-ca.pem"),
		serverCert:   filepath.Join(dir, "server.crt"),
		serverKeyPEM: filepath.Join(dir, "server.key"),
	}
	files := []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{p.caFile, caPEM, 0o644},
		{p.otherCAFile, otherPEM, 0o644},
		{p.serverCert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644},
		{p.serverKeyPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600},
	}
	uid, gid, chown := postgresOwner(t)
	for _, f := range files {
		if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
			t.Fatal(err)
		}
		// PostgreSQL reads the key only when its user owns it, mode 0600.
		if chown {
			if err := os.Chown(f.path, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
	}
	return p
}

// secureServer is a dedicated local server with TLS on, where the role app
// (password secret) may log in only over TLS with SCRAM, and the superuser
// postgres, which the harness uses, over plain TCP without a password.
func secureServer(t *testing.T, p *pki) (admin string, app func(db string, query ...string) string) {
	t.Helper()
	hba := filepath.Join(p.dir, "pg_hba.conf")
	err := os.WriteFile(hba, []byte(`# written by the stress tests
local   all  all                 trust
host    all  postgres 127.0.0.1/32 trust
hostssl all  app      127.0.0.1/32 scram-sha-256
host    all  app      127.0.0.1/32 reject
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	srv := testdb.StartServer(t, pgserver.Options{
		Kinds: []pgserver.Kind{pgserver.KindLocal},
		Settings: map[string]string{
			"ssl":                 "on",
			"ssl_cert_file":       p.serverCert,
			"ssl_key_file":        p.serverKeyPEM,
			"hba_file":            hba,
			"password_encryption": "scram-sha-256",
		},
	})
	mustExec(t, srv.URL, fmt.Sprintf(`CREATE ROLE app LOGIN PASSWORD '%s'`, secret))
	mustExec(t, srv.URL, `CREATE DATABASE app OWNER app`)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	admin = strings.Replace(srv.URL, "/postgres?", "/app?", 1)
	app = func(db string, query ...string) string {
		v := url.Values{}
		for i := 0; i+1 < len(query); i += 2 {
			v.Set(query[i], query[i+1])
		}
		return (&url.URL{Scheme: "postgres", User: url.UserPassword("app", secret), Host: u.Host, Path: "/" + db, RawQuery: v.Encode()}).String()
	}
	return admin, app
}

// TestTLSAndSecrets: sweeper connects with sslmode=verify-full to a server
// whose certificate a CA made here signed, refuses a server its CA did not
// sign, and never shows the DSN password: the output of every command, with
// a working database and with failing ones, is searched for it.
func TestTLSAndSecrets(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a dedicated server")
	}
	t.Parallel()
	p := newPKI(t)
	admin, app := secureServer(t, p)
	good := app("app", "sslmode", "verify-full", "sslrootcert", p.caFile)
	checks := int64(0)
	grep := func(what string, texts ...string) {
		t.Helper()
		for _, s := range texts {
			checks++
			assertNoSecret(t, what, s)
			// And the password as percent-encoded or as pgx quotes it.
			for _, form := range []string{url.QueryEscape(secret), strconv.Quote(secret)} {
				if strings.Contains(s, form) {
					t.Errorf("%s shows the DSN password (as %s):\n%s", what, form, s)
				}
			}
		}
	}

	// Migrations and sweeping over verify-full, as the owner of the database.
	if r := run(t, []string{"SWEEPER_DATABASE_URL=" + good}, "migrate", "up"); r.Code != 0 {
		t.Fatalf("migrate up over verify-full: %s", r)
	}
	mustExec(t, admin, `INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat)
		VALUES ('stale', 'c', 'w', 'in_progress', now() - interval '1 hour')`)
	once := run(t, []string{"SWEEPER_DATABASE_URL=" + good}, "--once", "--output", "json")
	if once.Code != 0 || !strings.Contains(once.Stdout, `"swept":1`) {
		t.Fatalf("--once with sslmode=verify-full: %s", once)
	}
	grep("--once over TLS", once.Stdout, once.Stderr)
	byName := app("app", "sslmode", "verify-full", "sslrootcert", p.caFile)
	byName = strings.Replace(byName, "@127.0.0.1:", "@localhost:", 1)
	if r := run(t, []string{"SWEEPER_DATABASE_URL=" + byName}, "--once"); r.Code != 0 {
		t.Fatalf("--once with verify-full to localhost: %s", r)
	}

	// Refused: a CA that did not sign the server's certificate, a client
	// that does not encrypt.
	wrongCA := run(t, []string{"SWEEPER_DATABASE_URL=" + app("app", "sslmode", "verify-full", "sslrootcert", p.otherCAFile)}, "--once")
	if wrongCA.Code != 1 || !strings.Contains(wrongCA.Stderr, "certificate") {
		t.Fatalf("--once with the wrong CA: want exit 1 naming the certificate: %s", wrongCA)
	}
	grep("--once with the wrong CA", wrongCA.Stdout, wrongCA.Stderr)
	plain := run(t, []string{"SWEEPER_DATABASE_URL=" + app("app", "sslmode", "disable")}, "--once")
	if plain.Code != 1 || !strings.Contains(plain.Stderr, "pg_hba.conf") {
		t.Fatalf("--once without TLS: want exit 1, refused by pg_hba.conf: %s", plain)
	}
	grep("--once without TLS", plain.Stdout, plain.Stderr)

	// The daemon over verify-full: ready, and every connection it holds is
	// encrypted.
	d := startDaemon(t, "daemon", []string{"SWEEPER_DATABASE_URL=" + good, "SWEEPER_SWEEP_SCHEDULE=@every 1s", "SWEEPER_LOG_LEVEL=debug"})
	eventually(t, time.Minute, "/readyz 200 over TLS", func() bool { return readyz(d) == 200 })
	if n := mustInt(t, admin, `SELECT count(*) FROM pg_stat_activity AS a JOIN pg_stat_ssl AS s USING (pid)
		WHERE a.application_name = 'sweeper' AND NOT s.ssl`); n != 0 {
		t.Errorf("%d of the daemon's connections are not encrypted", n)
	}
	for _, path := range []string{"/metrics", "/readyz", "/healthz"} {
		_, body, err := d.Get(path)
		if err != nil {
			t.Fatal(err)
		}
		grep("daemon "+path, body)
	}
	if code := d.Stop(t, syscall.SIGTERM, time.Minute); code != 0 {
		t.Errorf("exit %d after SIGTERM\n%s", code, d.Logs())
	}
	grep("daemon logs", d.Logs())

	// Every command, with the working database and with failing ones: the
	// password never shows. DSNs in URL and keyword/value form, from the
	// environment, DATABASE_URL, a flag and a config file.
	u, _ := url.Parse(good)
	port := u.Port()
	dsns := map[string]string{
		"working":        good,
		"wrong password": strings.Replace(good, url.QueryEscape(secret), url.QueryEscape(secret+"-nope"), 1),
		"no such db":     app("nope", "sslmode", "verify-full", "sslrootcert", p.caFile),
		"wrong CA":       app("app", "sslmode", "verify-full", "sslrootcert", p.otherCAFile),
		"unreachable":    app("app", "sslmode", "require", "connect_timeout", "2"),
		"keyword/value":  fmt.Sprintf("host=127.0.0.1 port=%s user=app password=%s dbname=app sslmode=verify-full sslrootcert=%s", port, secret, p.caFile),
		"keyword/value, wrong password": fmt.Sprintf("host=127.0.0.1 port=%s user=app password='%s-x' dbname=app sslmode=verify-full sslrootcert=%s",
			port, secret, p.caFile),
		"malformed":               "postgres://app:" + secret + "@[::1/app",
		"malformed keyword/value": fmt.Sprintf("host=127.0.0.1 password=%s port=notaport", secret),
		"password as a query parameter": fmt.Sprintf("postgres://app@127.0.0.1:%s/app?password=%s&sslmode=verify-full&sslrootcert=%s",
			port, secret, url.QueryEscape(p.caFile)),
	}
	dsns["unreachable"] = strings.Replace(dsns["unreachable"], "@"+u.Host, "@127.0.0.1:1", 1)
	working := map[string]bool{"working": true, "keyword/value": true, "password as a query parameter": true}
	commands := [][]string{
		{"--once"}, {"--once", "--output", "json"}, {"--once", "--dry-run"},
		{"status"}, {"status", "--output", "json"},
		{"migrate", "up"}, {"migrate", "version"}, {"migrate", "version", "--output", "json"},
		{"config", "validate"}, {"config", "validate", "--output", "json"},
		{"--log-level", "debug", "--once"},
		{"--sweep-batch-size", "0"}, // a configuration error next to the DSN
	}
	cfgFile := filepath.Join(t.TempDir(), "sweeper.yaml")
	failures := 0
	vias := []string{"env", "DATABASE_URL", "flag", "file"}
	pair := 0
	for name, dsn := range dsns {
		for _, args := range commands {
			pair++
			for i, via := range vias {
				// The short form gives each DSN and command one way in, in turn.
				if !full() && i != pair%len(vias) {
					continue
				}
				var env []string
				a := append([]string(nil), args...)
				switch via {
				case "env":
					env = []string{"SWEEPER_DATABASE_URL=" + dsn}
				case "DATABASE_URL":
					env = []string{"DATABASE_URL=" + dsn}
				case "flag":
					a = append(a, "--database-url", dsn)
				case "file":
					if err := os.WriteFile(cfgFile, []byte("database:\n  url: "+strconv.Quote(dsn)+"\n"), 0o600); err != nil {
						t.Fatal(err)
					}
					a = append(a, "--config", cfgFile)
				}
				r := run(t, append(env, "SWEEPER_LOG_LEVEL=debug", "SWEEPER_HTTP_LISTEN="), a...)
				if r.Code != 0 {
					failures++
				}
				if wantOK := working[name] && args[0] != "--sweep-batch-size"; wantOK && r.Code != 0 {
					t.Errorf("with the %s DSN via %s: %s", name, via, r)
				}
				grep(fmt.Sprintf("%s DSN via %s: sweeper %s (exit %d)", name, via, strings.Join(a, " "), r.Code), r.Stdout, r.Stderr)
			}
		}
		// The daemon itself: it fails at start-up on a failing database;
		// on a working one it serves until SIGTERM.
		if !working[name] {
			r := run(t, []string{"SWEEPER_DATABASE_URL=" + dsn, "SWEEPER_LOG_LEVEL=debug", "SWEEPER_HTTP_LISTEN=127.0.0.1:0"})
			if r.Code == 0 {
				t.Errorf("the daemon with the %s DSN exited 0: %s", name, r)
			}
			grep("daemon with the "+name+" DSN", r.Stdout, r.Stderr)
			continue
		}
		d := startDaemon(t, name, []string{"SWEEPER_DATABASE_URL=" + dsn, "SWEEPER_LOG_LEVEL=debug"})
		eventually(t, time.Minute, "/readyz 200 with the "+name+" DSN", func() bool { return readyz(d) == 200 })
		_, body, err := d.Get("/metrics")
		if err != nil {
			t.Fatal(err)
		}
		grep("daemon /metrics with the "+name+" DSN", body)
		if code := d.Stop(t, syscall.SIGTERM, time.Minute); code != 0 {
			t.Errorf("%s: exit %d after SIGTERM\n%s", name, code, d.Logs())
		}
		grep("daemon logs with the "+name+" DSN", d.Logs())
	}
	if failures == 0 {
		t.Error("no command failed: the failing DSNs did not fail")
	}
	t.Logf("searched %d outputs for the password (%d runs failed, as the failing DSNs should)", checks, failures)
	record(t, report.Figures{report.SecretChecks: checks})
}

// TestDaemonRoleCannot complements deploy/postgres/roles_test.go: the
// least-privilege role, which the storm's daemons sweep as, cannot do what
// it does not need.
func TestDaemonRoleCannot(t *testing.T) {
	if testing.Short() {
		t.Skip("needs roles")
	}
	t.Parallel()
	r := newRoleDB(t)
	mustExec(t, r.owner, `INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat) VALUES
		('stale', 'c', 'w', 'in_progress', now() - interval '1 hour'),
		('done', 'c', 'w', 'completed', now())`)
	if res := run(t, []string{"SWEEPER_DATABASE_URL=" + r.daemon}, "--once", "--output", "json"); res.Code != 0 || !strings.Contains(res.Stdout, `"swept":1`) {
		t.Fatalf("--once as the daemon role: %s", res)
	}
	refused := []string{
		`DROP TABLE delegations`,
		`ALTER TABLE delegations DISABLE TRIGGER delegations_before_update`,
		`ALTER TABLE delegations DISABLE TRIGGER ALL`,
		`TRUNCATE delegation_events`,
		`DELETE FROM delegations`,
		`UPDATE delegations SET task_preview = 'x'`,
		// Heartbeats and inserts of the API's columns are the daemon's since
		// it serves the API (deploy/postgres/grants.sql); other columns are not.
		`UPDATE delegations SET deadline = now()`,
		`INSERT INTO delegations (delegation_id, caller_id, callee_id, created_at) VALUES ('new', 'c', 'w', now())`,
		`UPDATE sweeper_schema_migrations SET dirty = true`,
		`CREATE TABLE x (id int)`,
		`CREATE OR REPLACE FUNCTION sweeper_delegations_before() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$`,
		`ALTER FUNCTION sweeper_status_rank(text) RENAME TO r`,
		`DROP TRIGGER delegations_before_update ON delegations`,
		`SET session_replication_role = replica`,
	}
	for _, sql := range refused {
		err := execErr(t, r.daemon, sql)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != pgerrcode.InsufficientPrivilege {
			t.Errorf("as the daemon role, %s: err = %v, want insufficient_privilege", sql, err)
		}
	}
	// The guard holds for the daemon role as for everyone: marking a
	// finished row stuck is refused even with the column privilege.
	err := execErr(t, r.daemon, `UPDATE delegations SET status = 'stuck', stuck_reason = 'heartbeat_timeout' WHERE delegation_id = 'done'`)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.ConstraintName != "delegations_terminal_frozen" {
		t.Errorf("as the daemon role, marking a completed row stuck: %v", err)
	}
	record(t, report.Figures{report.PrivilegeRefusal: int64(len(refused)) + 1})
}
