package testkit

import (
	"sync/atomic"
	"time"
)

// Clock is a settable clock for code that takes now func() time.Time. It
// is microsecond-exact, like the times the operator's store keeps, and
// safe for concurrent use.
type Clock struct{ us atomic.Int64 }

// NewClock is a Clock at 2026-01-01 00:00 UTC.
func NewClock() *Clock {
	c := &Clock{}
	c.us.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro())
	return c
}

func (c *Clock) Now() time.Time      { return time.UnixMicro(c.us.Load()).UTC() }
func (c *Clock) Add(d time.Duration) { c.us.Add(d.Microseconds()) }
func (c *Clock) Set(t time.Time)     { c.us.Store(t.UnixMicro()) }
