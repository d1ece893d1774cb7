package store

import (
	"context"
	"sync/atomic"
	"time"
)

// Deadlines hands out shared timeout contexts: every decision that starts
// within the same slice of time shares one context, whose deadline is
// timeout+slice after the slice began. A store call is thus bounded by
// between timeout and timeout+slice, and the hot path creates one timer per
// slice instead of one per request.
type Deadlines struct {
	Timeout, Slice time.Duration
	cur            atomic.Pointer[sharedDeadline]
}

type sharedDeadline struct {
	ctx context.Context
	// cancel is kept only to satisfy the context contract; the context
	// releases itself when its deadline passes.
	cancel context.CancelFunc
	until  time.Time // hand this context out to calls starting before until
}

// Get returns the shared context for a call starting at now.
func (d *Deadlines) Get(now time.Time) context.Context {
	cur := d.cur.Load()
	if cur != nil && now.Before(cur.until) {
		return cur.ctx
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.Timeout+d.Slice)
	next := &sharedDeadline{ctx: ctx, cancel: cancel, until: now.Add(d.Slice)}
	if !d.cur.CompareAndSwap(cur, next) {
		cancel() // another request installed one first; use it
		return d.cur.Load().ctx
	}
	return ctx
}
