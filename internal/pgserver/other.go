//go:build !unix

package pgserver

import (
	"context"
	"errors"
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
