// Package testkit holds what the project's tests share and no test should
// write again: waiting for a condition by polling, a settable clock, a test
// logger, a buffer that concurrent writers and a test share, the test
// binary re-run as a child process, one HTTP call with its JSON answer,
// and a free port. It imports
// nothing from the project, so every package's own tests (node's
// in-package tests included, which cannot import internal/nodetest) can
// use it. Production code never imports it.
package testkit

import (
	"errors"
	"time"
)

// TB is the part of testing.TB the helpers use.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// errNotYet stands for a false condition in the bool helpers.
var errNotYet = errors.New("condition not met")

// retry calls check every interval until it returns nil or start+timeout
// has passed, and returns how long after start the last call ended and
// check's last error (nil when it succeeded). check always runs at least
// once, and once more after the deadline passed, so a condition that
// became true while the poller slept is not reported as a failure.
func retry(start time.Time, timeout, interval time.Duration, check func() error) (time.Duration, error) {
	for {
		err := check()
		took := time.Since(start)
		if err == nil || took > timeout {
			return took, err
		}
		time.Sleep(interval)
	}
}

func holds(cond func() bool) func() error {
	return func() error {
		if cond() {
			return nil
		}
		return errNotYet
	}
}

// Retry calls check every interval for up to timeout, until it returns
// nil, and returns its last error.
func Retry(timeout, interval time.Duration, check func() error) error {
	_, err := retry(time.Now(), timeout, interval, check)
	return err
}

// Eventually polls cond every 20 ms for up to timeout and says whether it
// came to hold.
func Eventually(timeout time.Duration, cond func() bool) bool {
	_, err := retry(time.Now(), timeout, 20*time.Millisecond, holds(cond))
	return err == nil
}

// PollSince polls cond every interval until it holds and returns how long
// after start that was, or -1 when it did not hold by start+timeout. start
// is the event whose effect is awaited, so the figure includes what
// happened before the first poll.
func PollSince(start time.Time, timeout, interval time.Duration, cond func() bool) time.Duration {
	took, err := retry(start, timeout, interval, holds(cond))
	if err != nil {
		return -1
	}
	return took
}

// WaitFor polls cond every 20 ms until it holds and returns how long that
// took; it fails the test, naming what it waited for, after timeout.
func WaitFor(t TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	took, err := retry(time.Now(), timeout, 20*time.Millisecond, holds(cond))
	if err != nil {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
	return took
}

// WaitUntil polls cond every interval until it returns nil; it fails the
// test after timeout with what it waited for and cond's last complaint.
func WaitUntil(t TB, timeout, interval time.Duration, what string, cond func() error) {
	t.Helper()
	if _, err := retry(time.Now(), timeout, interval, cond); err != nil {
		t.Fatalf("%s: not within %s: %v", what, timeout, err)
	}
}
