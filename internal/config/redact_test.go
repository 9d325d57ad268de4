package config

import (
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestRedactDSN(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		dsn  string
		want string
	}{
		{"empty", "", ""},
		{"url", "postgres://sweeper:secret@db:5432/sweeper", "postgres://sweeper:xxxxx@db:5432/sweeper"},
		{"postgresql scheme", "postgresql://u:secret@db/x?sslmode=require", "postgresql://u:xxxxx@db/x?sslmode=require"},
		{"url without password", "postgres://sweeper@db/sweeper", "postgres://sweeper@db/sweeper"},
		{"url without userinfo", "postgres://db:5432/sweeper", "postgres://db:5432/sweeper"},
		{"url empty password", "postgres://u:@db/x", "postgres://u:xxxxx@db/x"},
		{"percent-encoded password", "postgres://u:p%40ss%2Fw@db/x", "postgres://u:xxxxx@db/x"},
		{"password query param", "postgres://u@db/x?sslmode=disable&password=secret", "postgres://u@db/x?sslmode=disable&password=xxxxx"},
		{"sslpassword query param", "postgres://u@db/x?sslpassword=secret&application_name=a", "postgres://u@db/x?sslpassword=xxxxx&application_name=a"},
		{"encoded password param name", "postgres://db/x?pass%77ord=secret", "postgres://db/x?pass%77ord=xxxxx"},
		{"both passwords", "postgres://u:one@db/x?password=two", "postgres://u:xxxxx@db/x?password=xxxxx"},
		{"multi-host", "postgres://u:secret@h1:5432,h2:5433/x", "postgres://u:xxxxx@h1:5432,h2:5433/x"},
		{"ipv6 host", "postgres://u:secret@[::1]:5432/x", "postgres://u:xxxxx@[::1]:5432/x"},
		{"at sign in query kept", "postgres://u:secret@db/x?application_name=a@b", "postgres://u:xxxxx@db/x?application_name=a@b"},
		{"query without path", "postgres://u:secret@db?application_name=a@b", "postgres://u:xxxxx@db?application_name=a@b"},
		{"at sign in the database name masks more", "postgres://db:5432/x@y", "postgres://db:xxxxx@y"},
		{"unescaped at sign in password", "postgres://u:p@ss@db/x", "postgres://u:xxxxx@db/x"},
		{"unescaped slash in password", "postgres://u:p/ss@db/x", "postgres://u:xxxxx@db/x"},
		{"unescaped at and slash in password", "postgres://u:p@ss/w0rd@db:5432/x?password=a&b", "postgres://u:xxxxx@db:5432/x?password=xxxxx&xxxxx"},
		{"question mark in password", "postgres://u:p?ss@db/x", "postgres://u:xxxxx@db/x"},
		{"unescaped ampersand in query password", "postgres://db/x?password=a&b&sslmode=disable", "postgres://db/x?password=xxxxx&xxxxx&sslmode=disable"},
		{"other scheme", "pgx5://u:secret@db/x", "pgx5://u:xxxxx@db/x"},
		{"leading space", "  postgres://u:secret@db/x", "  postgres://u:xxxxx@db/x"},
		{"keyword/value", "host=db user=sweeper password=secret dbname=sweeper", "host=db user=sweeper password=xxxxx dbname=sweeper"},
		{"quoted password", "host=db password='se cret\\'s' dbname=x", "host=db password='xxxxx' dbname=x"},
		{"spaces around =", "host = db password = secret port=5432", "host = db password = xxxxx port=5432"},
		{"escaped space", `password=se\ cret host=db`, "password=xxxxx host=db"},
		{"sslpassword keyword", "host=db sslpassword=secret", "host=db sslpassword=xxxxx"},
		{"upper-case keyword", "host=db PASSWORD=secret", "host=db PASSWORD=xxxxx"},
		{"empty password value takes the next word, as in pgx", "host=db password= user=u", "host=db password= xxxxx"},
		{"empty quoted password", "host=db password='' user=u", "host=db password='xxxxx' user=u"},
		{"password last, trailing space", "host=db password=secret  ", "host=db password=xxxxx  "},
		{"unterminated quote", "host=db password='secret", "host=db password=xxxxx"},
		{"unterminated quote elsewhere", "host='db password=secret", "host=xxxxx"},
		{"password with a space", "host=db password=sec ret", "host=db password=xxxxx xxxxx"},
		{"missing keyword", "host=db user=u secret", "host=db user=u xxxxx"},
		{"bare password", "secret", "xxxxx"},
		{"space in keyword", "host=db pass word=secret", "host=db xxxxx"},
		{"only spaces", "   ", "   "},
		{"keyword/value without password", "host=db port=5432", "host=db port=5432"},
		{"value looks like a url", "host=db password=a://b@c", "host=db password=xxxxx"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := RedactDSN(tt.dsn)
			if got != tt.want {
				t.Fatalf("RedactDSN(%q) = %q, want %q", tt.dsn, got, tt.want)
			}
			for _, secret := range []string{"secret", "sec ret", "p@ss", "p/ss", "two", "one"} {
				if strings.Contains(got, secret) {
					t.Fatalf("RedactDSN(%q) = %q shows %q", tt.dsn, got, secret)
				}
			}
		})
	}
}

// TestRedactDSNMatchesPgx checks that for DSNs pgx parses, the text masked
// is the password pgx reads: the redacted DSN parses to the same settings
// with the password "xxxxx".
func TestRedactDSNMatchesPgx(t *testing.T) {
	t.Parallel()
	for _, dsn := range []string{
		"postgres://sweeper:s3cret@db:5432/sweeper?sslmode=disable",
		"postgres://u:p%40ss@h1:5432,h2:5433/x?application_name=a@b",
		"postgres://u:secret@db?application_name=a",
		"host=db user=u password='a b\\'c' dbname=x sslmode=disable",
		"host=db password=abc port=5433",
	} {
		orig, err := pgconn.ParseConfig(dsn)
		if err != nil {
			t.Fatalf("pgconn.ParseConfig(%q): %v", dsn, err)
		}
		red, err := pgconn.ParseConfig(RedactDSN(dsn))
		if err != nil {
			t.Fatalf("pgconn.ParseConfig(RedactDSN(%q)) = %v", dsn, err)
		}
		if red.Password != redactedPassword || red.Host != orig.Host || red.Port != orig.Port ||
			red.User != orig.User || red.Database != orig.Database || len(red.Fallbacks) != len(orig.Fallbacks) {
			t.Errorf("%q: redacted parses to %+v, original to %+v", dsn, red, orig)
		}
	}
}

// FuzzRedactDSN builds DSNs in every form around a generated password and
// checks that RedactDSN never shows it.
func FuzzRedactDSN(f *testing.F) {
	f.Add("sweeper", "s3cret", "db:5432", "sweeper")
	f.Add("u", "p@ss/w?rd&x=y", "h1,h2:5433", "d b")
	f.Add("", "pass word'\\", "[::1]:5432", "")
	f.Add("user:name", "%41%", "db", "a@b?c")
	f.Fuzz(func(t *testing.T, user, password, host, db string) {
		if len(password) < 4 {
			t.Skip("too short to be told from the rest of the DSN")
		}
		// Each form escapes the password as a careful user would.
		kvQuote := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
		forms := []func(pw string) string{
			func(pw string) string {
				return (&url.URL{Scheme: "postgres", User: url.UserPassword(user, pw), Host: host, Path: "/" + db}).String()
			},
			func(pw string) string {
				q := url.Values{"sslmode": {"disable"}, "password": {pw}}.Encode()
				return (&url.URL{Scheme: "postgresql", User: url.User(user), Host: host, Path: "/" + db, RawQuery: q}).String()
			},
			func(pw string) string {
				return "host='" + kvQuote.Replace(host) + "' user='" + kvQuote.Replace(user) +
					"' password='" + kvQuote.Replace(pw) + "' dbname='" + kvQuote.Replace(db) + "'"
			},
		}
		shapes := []string{
			password,
			url.UserPassword("", password).String()[1:], // userinfo escaping, after the ":"
			url.Values{"": {password}}.Encode()[1:],     // query escaping, after the "="
			kvQuote.Replace(password),                   // keyword/value escaping
		}
		for _, form := range forms {
			dsn, masked := form(password), form(redactedPassword)
			got := RedactDSN(dsn)
			for _, p := range shapes {
				if strings.Contains(masked, p) {
					continue // the password also appears outside the password
				}
				if strings.Contains(got, p) {
					t.Fatalf("RedactDSN(%q) = %q shows the password %q", dsn, got, p)
				}
			}
			if got != masked {
				// Exact for DSNs pgx reads, but for an '@' in the database
				// name, where masking more is intended (see redactURL).
				if _, err := pgconn.ParseConfig(dsn); err == nil && !strings.Contains(dsn, "%") && !strings.Contains(db, "@") {
					t.Fatalf("RedactDSN(%q) = %q, want %q", dsn, got, masked)
				}
			}
		}
	})
}

// FuzzRedactDSNParsed checks, for any string pgx accepts as a connection
// string, that the password written in it is gone from the redacted string;
// and, unless RedactDSN deliberately masks more (see redactURL), that the
// redacted string parses to "xxxxx" (or no password) with host, port, user
// and database unchanged.
func FuzzRedactDSNParsed(f *testing.F) {
	f.Add("postgres://u:secret@db:5432/x?sslmode=disable&password=two")
	f.Add("host=db user=u password='a b' dbname=x")
	f.Add("postgres://u:p%40ss@h1,h2:5433/x?application_name=a@b")
	f.Add("postgres://db/x?sslpassword=s&sslmode=disable")
	f.Fuzz(func(t *testing.T, dsn string) {
		got := RedactDSN(dsn)
		if strings.ContainsAny(dsn, "\x00") || strings.Contains(dsn, "service") || strings.Contains(dsn, "file") ||
			strings.Contains(dsn, "sslrootcert") || strings.Contains(dsn, "sslcert") || strings.Contains(dsn, "sslkey") {
			return // keep pgx away from the file system
		}
		if body := strings.TrimLeft(dsn, kvSpace); schemeLen(body) > 0 &&
			!strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
			// pgx reads "other://u:p@h/?a=b" as a keyword/value pair;
			// RedactDSN masks it as the URL it was meant to be.
			return
		}
		orig, err := pgconn.ParseConfig(dsn)
		if err != nil {
			return
		}
		// Where the password is written as is, that copy is gone (it may
		// also appear elsewhere: in the host, the user, ...).
		if pw := orig.Password; len(pw) >= 4 && strings.Contains(dsn, pw) && strings.Count(got, pw) >= strings.Count(dsn, pw) {
			t.Fatalf("RedactDSN(%q) = %q shows the password %q", dsn, got, pw)
		}
		if _, rest, ok := strings.Cut(dsn, "://"); ok {
			// pgx ends the userinfo at an '@' before any '/'; RedactDSN at
			// the last '@' before the query, masking more when they differ.
			pgxEnd := strings.IndexAny(rest, "@/")
			if pgxEnd >= 0 && rest[pgxEnd] == '/' {
				pgxEnd = -1
			}
			if userinfoEnd(rest) != pgxEnd {
				return
			}
		}
		red, err := pgconn.ParseConfig(got)
		if err != nil {
			t.Fatalf("RedactDSN(%q) = %q, which pgx refuses: %v", dsn, got, err)
		}
		if red.Password != redactedPassword && !(orig.Password == "" && red.Password == "") {
			t.Fatalf("RedactDSN(%q) = %q: pgx reads password %q from it", dsn, got, red.Password)
		}
		if red.Host != orig.Host || red.Port != orig.Port || red.User != orig.User || red.Database != orig.Database {
			t.Fatalf("RedactDSN(%q) = %q changed more than the password: %+v vs %+v", dsn, got, red, orig)
		}
	})
}
