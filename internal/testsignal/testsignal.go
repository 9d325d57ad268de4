// Package testsignal gives services typed signals that tests wait on instead
// of sleeping or polling the database (after River's rivershared/testsignal).
//
// A Signal is off in its zero value: Signal does nothing and costs a nil
// check. A test turns it on with Init before the service starts, then waits
// for each value with Wait.
package testsignal

import (
	"fmt"
	"time"
)

// WaitTimeout bounds Wait: a signal that does not come within it fails the
// test instead of hanging it.
const WaitTimeout = time.Minute

// capacity is how many values a signal holds before the service blocks on
// it; tests that do not read every value should Init with a larger one.
const capacity = 1000

// TB is the part of testing.TB a Signal uses (so that non-test code need not
// import testing).
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Signal carries values of T from a service to a test.
type Signal[T any] struct {
	ch chan T
	tb TB
}

// Init turns the signal on for tb. Call it before the service that sends on
// it starts.
func (s *Signal[T]) Init(tb TB) {
	s.ch = make(chan T, capacity)
	s.tb = tb
}

// Signal sends v to the test, when the signal is on. It never blocks: a
// signal whose buffer is full (a test that stopped reading) drops the value.
func (s *Signal[T]) Signal(v T) {
	if s.ch == nil {
		return
	}
	select {
	case s.ch <- v:
	default:
	}
}

// Wait returns the next value, failing the test if none comes within
// WaitTimeout.
func (s *Signal[T]) Wait() T {
	s.tb.Helper()
	if s.ch == nil {
		s.tb.Fatalf("testsignal: Wait on a signal that was not Init")
	}
	select {
	case v := <-s.ch:
		return v
	case <-time.After(WaitTimeout):
		var zero T
		s.tb.Fatalf("testsignal: no %T signal within %s", zero, WaitTimeout)
		return zero
	}
}

// WaitFor returns the first value for which ok is true, discarding the
// others, failing the test if none comes within WaitTimeout.
func (s *Signal[T]) WaitFor(what string, ok func(T) bool) T {
	s.tb.Helper()
	deadline := time.After(WaitTimeout)
	for {
		select {
		case v := <-s.ch:
			if ok(v) {
				return v
			}
		case <-deadline:
			var zero T
			s.tb.Fatalf("testsignal: %s: no such %T signal within %s", what, zero, WaitTimeout)
			return zero
		}
	}
}

// C returns the channel the values arrive on, for a select; nil when the
// signal is off.
func (s *Signal[T]) C() <-chan T { return s.ch }

// RequireEmpty fails the test when a value is waiting: the service did
// something the test said it would not.
func (s *Signal[T]) RequireEmpty() {
	s.tb.Helper()
	select {
	case v := <-s.ch:
		s.tb.Fatalf("testsignal: unexpected signal %s", fmt.Sprint(v))
	default:
	}
}
