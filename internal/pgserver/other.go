//go:build !unix

package pgserver

import (
	"context"
	"errors"
	"fmt"
	"runtime"
)

// Local servers and the watchdog need Unix process control.

func startLocal(context.Context, Options) (*Server, error) {
	return nil, unavailable("local servers are not supported on %s", runtime.GOOS)
}

type watchdog struct{}

func startWatchdog(...string) (*watchdog, error) {
	return nil, errors.New("no watchdog on " + runtime.GOOS)
}

func (*watchdog) disarm() error { return nil }
func (*watchdog) fire() error   { return nil }

// ErrNoPgBouncer means the pgbouncer binary was not found.
var ErrNoPgBouncer = errors.New("pgbouncer not found")

// PgBouncerOptions tunes StartPgBouncer (Unix only).
type PgBouncerOptions struct {
	PoolMode string
	PoolSize int
	Users    []string
	Logf     func(format string, args ...any)
}

// PgBouncer is a running pgbouncer (Unix only).
type PgBouncer struct {
	URL  string
	Port int
}

// StartPgBouncer is not supported here.
func StartPgBouncer(context.Context, *Server, PgBouncerOptions) (*PgBouncer, error) {
	return nil, fmt.Errorf("%w: pgbouncer is not supported on %s", ErrNoPgBouncer, runtime.GOOS)
}

// URLFor is not supported here.
func (*PgBouncer) URLFor(string) (string, error) { return "", ErrNoPgBouncer }

// Close does nothing.
func (*PgBouncer) Close() error { return nil }

// StartStandby is not supported here.
func StartStandby(context.Context, *Server, StandbyOptions) (*Server, error) {
	return nil, fmt.Errorf("starting a standby: %w (not supported on %s)", ErrNotLocal, runtime.GOOS)
}
