package testkit

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// fakeTB records a fatal failure instead of stopping the goroutine.
type fakeTB struct{ failed string }

func (f *fakeTB) Helper()                           {}
func (f *fakeTB) Fatalf(format string, args ...any) { f.failed = fmt.Sprintf(format, args...) }

func TestWaitFor(t *testing.T) {
	var calls int
	tb := &fakeTB{}
	took := WaitFor(tb, time.Second, "the third call", func() bool { calls++; return calls == 3 })
	if tb.failed != "" || calls != 3 || took < 40*time.Millisecond {
		t.Errorf("WaitFor = %s after %d calls, failure %q; want success on the third call after two 20 ms sleeps", took, calls, tb.failed)
	}
	tb = &fakeTB{}
	WaitFor(tb, 50*time.Millisecond, "a miracle", func() bool { return false })
	if !strings.Contains(tb.failed, "waiting for a miracle") {
		t.Errorf("WaitFor on a condition that never holds failed with %q; want it to name what it waited for", tb.failed)
	}
}

func TestWaitUntilSaysTheLastComplaint(t *testing.T) {
	tb := &fakeTB{}
	n := 0
	WaitUntil(tb, 50*time.Millisecond, 5*time.Millisecond, "the cluster", func() error { n++; return fmt.Errorf("try %d", n) })
	if want := fmt.Sprintf("the cluster: not within 50ms: try %d", n); tb.failed != want || n < 2 {
		t.Errorf("WaitUntil failed with %q after %d tries; want %q", tb.failed, n, want)
	}
}

func TestPollSince(t *testing.T) {
	start := time.Now().Add(-time.Second) // the event happened a second ago
	if took := PollSince(start, 3*time.Second, time.Millisecond, func() bool { return true }); took < time.Second {
		t.Errorf("PollSince = %s; want at least the second since start", took)
	}
	if took := PollSince(time.Now(), 20*time.Millisecond, time.Millisecond, func() bool { return false }); took != -1 {
		t.Errorf("PollSince on a condition that never holds = %s; want -1", took)
	}
	// A condition that comes true while the poller sleeps past the
	// deadline is seen: the last check runs after the deadline.
	deadline := time.Now().Add(30 * time.Millisecond)
	if took := PollSince(time.Now(), 30*time.Millisecond, 100*time.Millisecond, func() bool { return time.Now().After(deadline) }); took == -1 {
		t.Errorf("PollSince missed a condition that held at its last check")
	}
}

func TestRetryAndEventually(t *testing.T) {
	bad := errors.New("still down")
	if err := Retry(30*time.Millisecond, 5*time.Millisecond, func() error { return bad }); err != bad {
		t.Errorf("Retry = %v; want the last error", err)
	}
	if !Eventually(time.Second, func() bool { return true }) || Eventually(30*time.Millisecond, func() bool { return false }) {
		t.Errorf("Eventually does not say whether the condition held")
	}
}
