package pgserver

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestNoPostgres(t *testing.T) {
	t.Setenv(EnvDatabaseURL, "")

	_, err := Start(context.Background(), Options{Kinds: []Kind{KindEnv, KindDocker}, Logf: t.Logf})
	if !errors.Is(err, ErrNoPostgres) {
		t.Fatalf("Start without env and Docker: got %v, want ErrNoPostgres", err)
	}
	for _, want := range []string{EnvDatabaseURL, "docker: no Docker client in this program"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	// No hint to start a Docker engine when no client could use it.
	if strings.Contains(err.Error(), "start a Docker engine") {
		t.Errorf("error %q tells to start a Docker engine that this program cannot use", err)
	}
}

func TestUnknownKind(t *testing.T) {
	_, err := Start(context.Background(), Options{Kinds: []Kind{"podman"}})
	if err == nil || errors.Is(err, ErrNoPostgres) || !strings.Contains(err.Error(), "podman") {
		t.Fatalf("Start with an unknown kind: got %v", err)
	}
}

func TestSettings(t *testing.T) {
	opts := Options{Settings: map[string]string{"fsync": "on", "work_mem": "8MB"}}
	got := opts.settings(map[string]string{"listen_addresses": "127.0.0.1", "max_connections": "50"})
	want := []string{
		"fsync=on", // Options.Settings win over defaults
		"full_page_writes=off",
		"listen_addresses=127.0.0.1",
		"max_connections=50", // kind-specific settings win over defaults
		"synchronous_commit=off",
		"work_mem=8MB",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("settings:\n got %q\nwant %q", got, want)
	}
}

func TestTail(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		n    int
		want string
	}{
		{"short", "a\nb\n", 5, "a\nb"},
		{"cut", "a\nb\nc\nd\n", 2, "c\nd"},
		{"no final newline", "a\nb", 1, "b"},
		{"empty", "", 3, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tail([]byte(tc.in), tc.n); got != tc.want {
				t.Fatalf("tail(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
			}
		})
	}
}
