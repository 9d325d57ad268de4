package pgdocker_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/tasksweeper/sweeper/internal/pgserver"
	"github.com/tasksweeper/sweeper/internal/pgserver/pgdocker"
)

// TestNoEngine: with no engine at DOCKER_HOST the docker kind is unavailable
// (Start says how to get a server), not a failure.
func TestNoEngine(t *testing.T) {
	t.Setenv(pgserver.EnvDatabaseURL, "")
	t.Setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")

	_, err := pgserver.Start(context.Background(), pgserver.Options{
		Kinds:  []pgserver.Kind{pgserver.KindEnv, pgserver.KindDocker},
		Docker: pgdocker.Client{},
		Logf:   t.Logf,
	})
	if !errors.Is(err, pgserver.ErrNoPostgres) {
		t.Fatalf("Start without env and Docker engine: got %v, want ErrNoPostgres", err)
	}
	for _, want := range []string{pgserver.EnvDatabaseURL, "start a Docker engine", "no Docker engine answers"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}
