package startstop_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/internal/startstop"
)

// service records its starts and stops in a shared log; block, when set,
// holds its Stop until closed.
type service struct {
	name     string
	log      *[]string
	mu       *sync.Mutex
	startErr error
	block    chan struct{}
	failed   chan error

	lifecycle startstop.Base
}

func (s *service) Start(ctx context.Context) error {
	if s.startErr != nil {
		return s.startErr
	}
	runCtx, err := s.lifecycle.StartInit(ctx)
	if err != nil {
		return err
	}
	s.record("start " + s.name)
	s.lifecycle.Go(func() {
		<-runCtx.Done()
		if s.block != nil {
			<-s.block
		}
	})
	return nil
}

func (s *service) Stop() {
	if s.lifecycle.Started() {
		s.record("stop " + s.name)
	}
	s.lifecycle.Stop()
}

func (s *service) record(e string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	*s.log = append(*s.log, e)
}

type failing struct {
	*service
}

func (f failing) Failed() <-chan error { return f.failed }

func TestGroupStartsInOrderStopsInReverse(t *testing.T) {
	t.Parallel()
	var log []string
	var mu sync.Mutex
	var g startstop.Group
	for _, n := range []string{"a", "b", "c"} {
		g.Add(n, &service{name: n, log: &log, mu: &mu})
	}
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := g.Stop(time.Minute); err != nil {
		t.Fatal(err)
	}
	want := []string{"start a", "start b", "start c", "stop c", "stop b", "stop a"}
	if !slices.Equal(log, want) {
		t.Fatalf("log = %v, want %v", log, want)
	}
}

func TestGroupStartFailureStopsWhatStarted(t *testing.T) {
	t.Parallel()
	var log []string
	var mu sync.Mutex
	var g startstop.Group
	boom := errors.New("boom")
	g.Add("a", &service{name: "a", log: &log, mu: &mu})
	g.Add("b", &service{name: "b", log: &log, mu: &mu, startErr: boom})
	g.Add("c", &service{name: "c", log: &log, mu: &mu})
	err := g.Start(context.Background())
	if !errors.Is(err, boom) || err.Error() != "starting b: boom" {
		t.Fatalf("Start = %v, want starting b: boom", err)
	}
	if want := []string{"start a", "stop a"}; !slices.Equal(log, want) {
		t.Fatalf("log = %v, want %v", log, want)
	}
}

func TestGroupStopWithinGrace(t *testing.T) {
	t.Parallel()
	var log []string
	var mu sync.Mutex
	var g startstop.Group
	block := make(chan struct{})
	s := &service{name: "slow", log: &log, mu: &mu, block: block}
	g.Add("slow", s)
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := g.Stop(10 * time.Millisecond); !errors.Is(err, startstop.ErrGraceExceeded) {
		t.Fatalf("Stop = %v, want ErrGraceExceeded", err)
	}
	close(block)
	s.Stop() // waits for the stop in the background to finish
}

func TestGroupReportsAFailedService(t *testing.T) {
	t.Parallel()
	var log []string
	var mu sync.Mutex
	var g startstop.Group
	f := failing{&service{name: "f", log: &log, mu: &mu, failed: make(chan error, 1)}}
	g.Add("listener", f)
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.failed <- errors.New("socket gone")
	close(f.failed)
	select {
	case err := <-g.Failed():
		if err.Error() != "listener: socket gone" {
			t.Fatalf("Failed = %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("no failure reported")
	}
	if err := g.Stop(time.Minute); err != nil {
		t.Fatal(err)
	}
}

func TestBaseStartTwiceStopTwice(t *testing.T) {
	t.Parallel()
	var log []string
	var mu sync.Mutex
	s := &service{name: "s", log: &log, mu: &mu}
	s.Stop() // never started: nothing
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); !errors.Is(err, startstop.ErrAlreadyStarted) {
		t.Fatalf("second Start = %v", err)
	}
	s.Stop()
	s.Stop()
	// Start after Stop starts again; a cancelled parent context ends the
	// work, and Stop still returns.
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	s.Stop()
	if want := []string{"start s", "stop s", "start s", "stop s"}; !slices.Equal(log, want) {
		t.Fatalf("log = %v, want %v", log, want)
	}
}
