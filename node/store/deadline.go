package store

import (
	"context"
	"sync/atomic"
	"time"
)

// Timeouts are every Redis timeout the node uses. All of them derive from
// one setting, redis_timeout, in TimeoutsFor, so that no connect, write or
// call can outlast what the operator configured by a hidden constant.
type Timeouts struct {
	// Decision bounds a check's store call; Deadlines adds at most one
	// slice to it.
	Decision time.Duration
	// Dial bounds connecting to a data server or a sentinel: a check that
	// finds its Redis away waits no longer than its own timeout.
	Dial time.Duration
	// Management bounds the calls on shared hashes (sync, heartbeats, the
	// management API) and is rueidis' write timeout: a connection that has
	// not answered for this long is closed and redialled. It stays at least
	// a second, so a short redis_timeout does not cut off a slow but live
	// connection between bursts of checks.
	Management time.Duration
}

// TimeoutsFor derives every timeout from redis_timeout.
func TimeoutsFor(redisTimeout time.Duration) Timeouts {
	return Timeouts{Decision: redisTimeout, Dial: redisTimeout, Management: max(20*redisTimeout, time.Second)}
}

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
