// Package startstop is the one lifecycle shape of sweeper's long-running
// parts (the sweeper, the heartbeat coalescer, the daemon's HTTP server),
// after River's rivershared/startstop: Start returns at once, having started
// the work in goroutines; Stop blocks until that work has ended, and is safe
// to call twice or on a service never started.
//
// A service embeds Base and starts its goroutines with Go; a Group starts
// services in order and stops them in reverse order within a grace period.
package startstop

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Service is a long-running part of the process.
type Service interface {
	// Start starts the service's work and returns at once. Work ends when
	// ctx is done or Stop is called. Start on a started service is an error;
	// Start after Stop starts it again.
	Start(ctx context.Context) error
	// Stop ends the service's work and blocks until it has ended. It is safe
	// to call twice and on a service that was never started.
	Stop()
}

// Failer is a Service that can fail on its own while it runs (a listener
// whose Serve returns); a Group stops everything when one does.
type Failer interface {
	Service
	// Failed receives the error that ended the service's work early.
	Failed() <-chan error
}

// ErrAlreadyStarted is returned by Start on a started service.
var ErrAlreadyStarted = errors.New("already started")

// Base implements Service's bookkeeping for a service that embeds it: the
// context of its goroutines, the wait for them in Stop, and Start twice.
type Base struct {
	mu      sync.Mutex
	started bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// StartInit begins a Start: it returns the context the service's work runs
// under (done on Stop or when ctx is), or ErrAlreadyStarted.
func (b *Base) StartInit(ctx context.Context) (context.Context, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started {
		return nil, ErrAlreadyStarted
	}
	runCtx, cancel := context.WithCancel(ctx)
	b.started, b.cancel = true, cancel
	return runCtx, nil
}

// StartFailed undoes StartInit when the service could not start.
func (b *Base) StartFailed() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cancel != nil {
		b.cancel()
	}
	b.started, b.cancel = false, nil
}

// Go runs f in a goroutine that Stop waits for.
func (b *Base) Go(f func()) { b.wg.Go(f) }

// Stop cancels the work's context and waits for every goroutine started
// with Go. Safe twice, and on a service never started.
func (b *Base) Stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.started {
		return
	}
	b.cancel()
	b.wg.Wait()
	b.started, b.cancel = false, nil
}

// Started reports whether the service is started (and not yet stopped).
func (b *Base) Started() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.started
}

// ErrGraceExceeded is returned by Group.Stop when the services did not all
// stop within the grace period.
var ErrGraceExceeded = errors.New("shutdown grace period exceeded")

// Group starts services in the order they were added and stops them in the
// reverse order.
type Group struct {
	services []named
	failed   chan error
	started  int
}

type named struct {
	name string
	svc  Service
}

// Add appends a service, named for errors and logs.
func (g *Group) Add(name string, s Service) {
	g.services = append(g.services, named{name, s})
}

// Start starts every service in order. When one fails to start, those
// already started are stopped, in reverse order, and its error is returned.
func (g *Group) Start(ctx context.Context) error {
	g.failed = make(chan error, len(g.services))
	for i, n := range g.services {
		if err := n.svc.Start(ctx); err != nil {
			g.started = i
			g.stopStarted()
			return fmt.Errorf("starting %s: %w", n.name, err)
		}
		g.started = i + 1
		if f, ok := n.svc.(Failer); ok {
			go func(name string, ch <-chan error) {
				if err, ok := <-ch; ok && err != nil {
					g.failed <- fmt.Errorf("%s: %w", name, err)
				}
			}(n.name, f.Failed())
		}
	}
	return nil
}

// Failed receives the first error of a service that failed on its own.
func (g *Group) Failed() <-chan error { return g.failed }

// Stop stops the started services in reverse order and waits at most grace
// for all of them; past it, it returns ErrGraceExceeded and leaves the rest
// stopping in the background.
func (g *Group) Stop(grace time.Duration) error {
	done := make(chan struct{})
	go func() {
		g.stopStarted()
		close(done)
	}()
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-done:
		return nil
	case <-timer.C:
		return ErrGraceExceeded
	}
}

func (g *Group) stopStarted() {
	for i := g.started - 1; i >= 0; i-- {
		g.services[i].svc.Stop()
	}
}
