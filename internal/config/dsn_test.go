package config

import (
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// The secrets that the DSNs of TestDisplayDSN hold.
var testDSNSecrets = []string{"secret", "sec ret", "p@ss", "p/ss", "two", "one"}

func TestDisplayDSN(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		dsn  string
		want string
	}{
		{"empty", "", ""},
		{"url", "postgres://sweeper:secret@db:5432/sweeper", "sweeper@db:5432/sweeper"},
		{"postgresql scheme", "postgresql://u:secret@db/x?sslmode=require", "u@db:5432/x"},
		{"default port", "postgres://u:secret@db/x?sslmode=disable", "u@db:5432/x"},
		{"url without password", "postgres://sweeper@db:5433/sweeper", "sweeper@db:5433/sweeper"},
		{"empty password", "postgres://u:@db/x", "u@db:5432/x"},
		{"percent-encoded password", "postgres://u:p%40ss%2Fw@db/x", "u@db:5432/x"},
		{"password query parameter", "postgres://u@db/x?sslmode=disable&password=secret", "u@db:5432/x"},
		{"sslpassword query parameter", "postgres://u@db/x?sslpassword=secret&application_name=a", "u@db:5432/x"},
		{"both passwords", "postgres://u:one@db/x?password=two", "u@db:5432/x"},
		{"multi-host, each once", "postgres://u:secret@h1:5432,h2:5433/x", "u@h1:5432,h2:5433/x"},
		{"ipv6 host", "postgres://u:secret@[::1]:5432/x", "u@[::1]:5432/x"},
		{"unescaped at sign in password", "postgres://u:p@ss@db/x", DSNNotShown},
		{"unescaped slash and at sign in password", "postgres://u:123/p@ss@db/x", DSNNotShown},
		{"at sign in the database name is not shown either", "postgres://u@db/x@y", DSNNotShown},
		{"keyword/value", "host=db port=5433 user=sweeper password=secret dbname=sweeper", "sweeper@db:5433/sweeper"},
		{"quoted password", `host=db user=u password='sec ret\'s' dbname=x`, "u@db:5432/x"},
		{"upper-case keyword", "host=db user=u dbname=x PASSWORD=secret", "u@db:5432/x"},
		{"unix socket", "host=/var/run/postgresql user=u password=secret dbname=x", "u@/var/run/postgresql:5432/x"},
		{"bad port", "postgres://u:secret@db:port/x", DSNNotShown},
		{"unescaped slash in password", "postgres://u:p/ss@db/x", DSNNotShown},
		{"unterminated bracket", "postgres://u:secret@[::1/x", DSNNotShown},
		{"bad sslmode", "postgres://u:secret@db/x?sslmode=sometimes", DSNNotShown},
		{"unterminated quote", "host=db password='secret", DSNNotShown},
		{"password with a space", "host=db password=sec ret", DSNNotShown},
		{"bare password", "secret", DSNNotShown},
		{"keyword/value with a bad port", "host=db password=secret port=x", DSNNotShown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := DisplayDSN(tt.dsn)
			if got != tt.want {
				t.Fatalf("DisplayDSN(%q) = %q, want %q", tt.dsn, got, tt.want)
			}
			for _, secret := range testDSNSecrets {
				if strings.Contains(got, secret) {
					t.Fatalf("DisplayDSN(%q) = %q shows %q", tt.dsn, got, secret)
				}
			}
		})
	}
}

// fileParams are connection parameters that make pgx read a file; the fuzz
// targets keep pgx away from the file system.
var fileParams = []string{"\x00", "service", "file", "sslrootcert", "sslcert", "sslkey"}

// FuzzDisplayDSN builds DSNs in every form around a generated password and
// checks that DisplayDSN never shows it, and that it shows what pgx reads.
func FuzzDisplayDSN(f *testing.F) {
	f.Add("sweeper", "s3cret", "db:5432", "sweeper")
	f.Add("u", "p@ss/w?rd&x=y", "h1,h2:5433", "d b")
	f.Add("", "pass word'\\", "[::1]:5432", "")
	f.Add("user:name", "%41%", "db", "a@b?c")
	f.Fuzz(func(t *testing.T, user, password, host, db string) {
		if len(password) < 4 {
			t.Skip("too short to be told from the rest of the DSN")
		}
		for _, p := range fileParams {
			if strings.Contains(user+password+host+db, p) {
				t.Skip("would make pgx read a file")
			}
		}
		// Each form escapes the password as a careful user would.
		kvQuote := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
		forms := func(password string) []string {
			return []string{
				(&url.URL{Scheme: "postgres", User: url.UserPassword(user, password), Host: host, Path: "/" + db}).String(),
				(&url.URL{Scheme: "postgresql", User: url.User(user), Host: host, Path: "/" + db,
					RawQuery: url.Values{"sslmode": {"disable"}, "password": {password}}.Encode()}).String(),
				"host='" + kvQuote.Replace(host) + "' user='" + kvQuote.Replace(user) +
					"' password='" + kvQuote.Replace(password) + "' dbname='" + kvQuote.Replace(db) + "'",
			}
		}
		// The same DSNs with another password: what is displayed must not
		// depend on the password. (The password may still be a substring of
		// the display by chance: user 0000, password 000@ and "0000@host".)
		others := forms("pw-" + strconv.Itoa(len(password)) + "-other")
		for i, dsn := range forms(password) {
			checkDisplayDSN(t, dsn)
			got := DisplayDSN(dsn)
			if strings.Contains(got, password) && got != DisplayDSN(others[i]) {
				t.Fatalf("DisplayDSN(%q) = %q shows the password %q", dsn, got, password)
			}
		}
	})
}

// FuzzDisplayDSNParsed checks DisplayDSN on any string: "" for "",
// DSNNotShown for what pgx refuses, else the user, hosts, ports and
// database pgx reads, and never a password that is not one of those.
//
// The seed corpus is in testdata/fuzz/FuzzDisplayDSNParsed.
func FuzzDisplayDSNParsed(f *testing.F) {
	f.Add("postgres://u:secret@db:5432/x?sslmode=disable&password=two")
	f.Add("host=db user=u password='a b' dbname=x")
	f.Add("postgres://u:p%40ss@h1,h2:5433/x?application_name=a@b")
	f.Add("postgres://db/x?sslpassword=s&sslmode=disable")
	f.Fuzz(func(t *testing.T, dsn string) {
		for _, p := range fileParams {
			if strings.Contains(dsn, p) {
				return
			}
		}
		checkDisplayDSN(t, dsn)
	})
}

// checkDisplayDSN checks DisplayDSN(dsn) against what pgx parses.
func checkDisplayDSN(t *testing.T, dsn string) {
	t.Helper()
	got := DisplayDSN(dsn)
	if dsn == "" {
		if got != "" {
			t.Fatalf(`DisplayDSN("") = %q, want ""`, got)
		}
		return
	}
	pc, err := pgconn.ParseConfig(dsn)
	if err != nil || !plausibleDSN(pc) {
		if got != DSNNotShown {
			t.Fatalf("DisplayDSN(%q) = %q for a string pgx refuses or that holds an '@' where none can be, want %q",
				dsn, got, DSNNotShown)
		}
		return
	}
	wantStart := pc.User + "@" + joinHostPort(pc.Host, pc.Port)
	if !strings.HasPrefix(got, wantStart) || !strings.HasSuffix(got, "/"+pc.Database) {
		t.Fatalf("DisplayDSN(%q) = %q, want %s.../%s", dsn, got, wantStart, pc.Database)
	}
	// What the display is made of, separators included: a password may be
	// a substring of it by chance (user 0000, password 000@: "0000@db").
	shown := wantStart + "/" + pc.Database
	for _, fb := range pc.Fallbacks {
		shown += "," + joinHostPort(fb.Host, fb.Port)
	}
	if pw := pc.Password; len(pw) >= 4 && strings.Contains(got, pw) && !strings.Contains(shown, pw) {
		t.Fatalf("DisplayDSN(%q) = %q shows the password %q", dsn, got, pw)
	}
}
