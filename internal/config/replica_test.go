package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestReadURLKeys: database.read_url is checked and shown like database.url
// (the error names the key and its source, never the password), and
// database.read_max_lag has a floor of two check intervals.
func TestReadURLKeys(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		env     []string
		wantKey string // "" for no error
		check   func(t *testing.T, c Config)
	}{
		{name: "set from the environment", env: []string{"SWEEPER_DATABASE_READ_URL=postgres://ro:s3cret@replica:5432/app",
			"SWEEPER_DATABASE_READ_MAX_LAG=30s"},
			check: func(t *testing.T, c Config) {
				if c.Database.ReadURL != "postgres://ro:s3cret@replica:5432/app" || c.Database.ReadMaxLag != 30*time.Second {
					t.Fatalf("Database = %+v", c.Database)
				}
				for _, s := range []string{c.String(), c.Database.String(), string(mustJSON(t, c))} {
					if strings.Contains(s, "s3cret") || !strings.Contains(s, "ro@replica:5432/app") {
						t.Fatalf("printed config shows the password or not the replica: %s", s)
					}
				}
			}},
		{name: "bad connection string", env: []string{"SWEEPER_DATABASE_READ_URL=postgres://ro:s3cret@replica:port/app"},
			wantKey: "database.read_url"},
		{name: "lag below the floor", env: []string{"SWEEPER_DATABASE_READ_MAX_LAG=1500ms"}, wantKey: "database.read_max_lag"},
		{name: "lag not a duration", env: []string{"SWEEPER_DATABASE_READ_MAX_LAG=ten"}, wantKey: "database.read_max_lag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := Load("", tc.env, nil)
			if tc.wantKey == "" {
				if err != nil {
					t.Fatalf("Load = %v", err)
				}
				tc.check(t, c)
				return
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.Key != tc.wantKey || !strings.Contains(ce.Source, "SWEEPER_") {
				t.Fatalf("Load = %v, want an *Error naming %s and its variable", err, tc.wantKey)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error shows the password: %v", err)
			}
		})
	}
}
