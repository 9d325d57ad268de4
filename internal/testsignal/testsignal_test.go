package testsignal_test

import (
	"fmt"
	"testing"

	"github.com/tasksweeper/sweeper/internal/testsignal"
)

// fakeTB records Fatalf instead of stopping the test.
type fakeTB struct{ failed string }

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
}

func TestSignal(t *testing.T) {
	t.Parallel()
	var off testsignal.Signal[int]
	off.Signal(1) // off: nothing happens

	var s testsignal.Signal[int]
	s.Init(t)
	s.RequireEmpty()
	s.Signal(1)
	s.Signal(2)
	s.Signal(3)
	if v := s.Wait(); v != 1 {
		t.Fatalf("Wait = %d, want 1", v)
	}
	if v := s.WaitFor("an odd value", func(v int) bool { return v%2 == 1 }); v != 3 {
		t.Fatalf("WaitFor = %d, want 3", v)
	}

	var f fakeTB
	var left testsignal.Signal[string]
	left.Init(&f)
	left.Signal("surprise")
	left.RequireEmpty()
	if f.failed == "" {
		t.Fatal("RequireEmpty with a value waiting did not fail")
	}
}
