package node

import (
	"context"
	"sync/atomic"
	"time"
)

// deadlines hands out shared timeout contexts: every decision that starts
// within the same slice of time shares one context, whose deadline is
// timeout+slice after the slice began. A store call is thus bounded by
// between timeout and timeout+slice, and the hot path creates one timer per
// slice instead of one per request.
type deadlines struct {
	timeout, slice time.Duration
	cur            atomic.Pointer[sharedDeadline]
}

type sharedDeadline struct {
	ctx context.Context
	// cancel is kept only to satisfy the context contract; the context
	// releases itself when its deadline passes.
	cancel context.CancelFunc
	until  time.Time // hand this context out to calls starting before until
}

func (d *deadlines) get(now time.Time) context.Context {
	cur := d.cur.Load()
	if cur != nil && now.Before(cur.until) {
		return cur.ctx
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.timeout+d.slice)
	next := &sharedDeadline{ctx: ctx, cancel: cancel, until: now.Add(d.slice)}
	if !d.cur.CompareAndSwap(cur, next) {
		cancel() // another request installed one first; use it
		return d.cur.Load().ctx
	}
	return ctx
}
