package store

import (
	"context"
	"sync/atomic"
	"time"
)

// Timeouts are every Redis timeout the node uses. All of them derive from
// one setting, redis_timeout, in TimeoutsFor, so that no connect, write or
// call can outlast what the operator configured by a hidden constant (a
// dial_timeout in the Redis URL, documented, overrides Dial).
type Timeouts struct {
	// Decision bounds a check's store call; Deadlines adds at most one
	// slice to it.
	Decision time.Duration
	// Dial bounds connecting to a data server or a sentinel, and is the
	// client's write timeout too: a connection that has not answered for
	// this long is closed and redialled.
	Dial time.Duration
	// Management bounds the calls on shared hashes (sync, heartbeats, the
	// management API).
	Management time.Duration
}

// TimeoutsFor derives every timeout from redis_timeout: a decision takes at
// most redis_timeout; connecting and the calls on shared hashes 20 times
// that, at least a second, so a short redis_timeout does not cut off a slow
// but live connection, or a connect on a loaded machine, between bursts of
// checks.
func TimeoutsFor(redisTimeout time.Duration) Timeouts {
	setup := max(20*redisTimeout, time.Second)
	return Timeouts{Decision: redisTimeout, Dial: setup, Management: setup}
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
