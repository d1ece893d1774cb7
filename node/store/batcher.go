package store

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// batcher gathers the checks that arrive while earlier ones are in flight.
// On a single Redis (or a Sentinel-managed primary) a batch is one call of
// limiter.BatchScript: under load this pays Redis' per-call cost and the
// client's per-command cost once per batch. On a Redis Cluster the keys of
// one script call must share a slot, so a batch is one script call per
// check, handed to the client at once, which writes each master's share in
// one go. When idle a check goes out alone, at once, so nothing waits for a
// batch to fill.
//
// The batcher knows nothing of Redis: it groups items and hands each batch
// to run, which the Redis store supplies.
type batcher struct {
	run  func(ctx context.Context, batch []*Item, sc *scratch)
	in   chan *waiter
	stop chan struct{}
	wg   sync.WaitGroup
	max  int
	last atomic.Pointer[batchCtx] // see ctxUntil
}

// batchCtx is a context that ends at deadline. Like the contexts of
// deadlines, it is never cancelled: it releases itself at its deadline.
type batchCtx struct {
	deadline time.Time
	ctx      context.Context
	cancel   context.CancelFunc // kept only to satisfy the context contract
}

// waiter is one check inside the batcher. It owns copies of everything the
// batch goroutine reads, so a caller that gives up on its deadline can
// return and reuse its request memory while the batch still runs.
type waiter struct {
	it Item // its Key is the data key, a view of buf
	// buf holds the data key. It is reused with the pooled waiter, which
	// saves an allocation per check, but only after a batch that got its
	// reply: a call that failed (a timeout above all) may leave the command
	// queued in the client, which would still read the key.
	buf      []byte
	deadline time.Time
	done     chan struct{}
}

// scratch is one worker's reusable buffers for building a batch call.
type scratch struct {
	keys, args []string
}

var waiters = sync.Pool{New: func() any { return &waiter{done: make(chan struct{}, 1)} }}

// batchWorkers bounds the batches in flight. Redis runs scripts one at a
// time, so more in flight only overlaps the network; fewer make bigger
// batches, which cost Redis and the node less per check. Node and Redis CPU
// per check behind wrk on the 2-vCPU test VM (scripts/bench-wrk.sh setup,
// 2026-11-27, medians of 3–4 interleaved rounds, µs): at -c16 86 with 4 in
// flight, 77-80 with 2, 77 with 1; at -c64 52, 50, 50. Two keep a second
// batch going while one crosses a slower network to a remote Redis.
const (
	batchWorkers = 2
	batchMax     = 128 // checks in one script call
)

func newBatcher(run func(ctx context.Context, batch []*Item, sc *scratch)) *batcher {
	b := &batcher{run: run, in: make(chan *waiter, 4*batchMax), stop: make(chan struct{}), max: batchMax}
	b.wg.Add(batchWorkers)
	for range batchWorkers {
		go b.work()
	}
	return b
}

func (b *batcher) close() {
	close(b.stop)
	b.wg.Wait()
}

// decide runs one item through a batch and waits for it, or for ctx. The
// batch sees the item under the key prefix+it.Key.
func (b *batcher) decide(ctx context.Context, it *Item, prefix string) error {
	w := waiters.Get().(*waiter)
	w.buf = append(append(w.buf[:0], prefix...), it.Key...)
	w.it = Item{Key: unsafe.String(unsafe.SliceData(w.buf), len(w.buf)), Cost: it.Cost, Limit: it.Limit}
	w.deadline, _ = ctx.Deadline()
	select {
	case b.in <- w:
	case <-ctx.Done():
		waiters.Put(w)
		it.Err = ctx.Err()
		return it.Err
	}
	select {
	case <-w.done:
		it.Result, it.Err = w.it.Result, w.it.Err
		*w = waiter{done: w.done, buf: w.buf}
		waiters.Put(w)
	case <-ctx.Done():
		// The batch still holds w; it is left to the garbage collector.
		it.Err = ctx.Err()
	}
	return it.Err
}

func (b *batcher) work() {
	defer b.wg.Done()
	batch := make([]*waiter, 0, b.max)
	items := make([]*Item, 0, b.max)
	var sc scratch
	for {
		select {
		case <-b.stop:
			return
		case w := <-b.in:
			batch = append(batch[:0], w)
		}
	fill:
		for len(batch) < b.max {
			select {
			case w := <-b.in:
				batch = append(batch, w)
			default:
				break fill
			}
		}
		b.send(batch, items[:0], &sc)
		for _, w := range batch {
			if w.it.Err != nil {
				w.buf = nil // see waiter.buf
			}
			w.done <- struct{}{}
		}
	}
}

// ctxUntil returns a context that ends at deadline, for one batch call. A
// batch ends at the latest deadline of its checks, and the checks of one
// slice of deadlines share theirs, so consecutive batches mostly end at the
// same instant: they share one context (and its timer) instead of making
// one each.
func (b *batcher) ctxUntil(deadline time.Time) context.Context {
	if deadline.IsZero() {
		return context.Background()
	}
	if c := b.last.Load(); c != nil && c.deadline.Equal(deadline) {
		return c.ctx
	}
	c := &batchCtx{deadline: deadline}
	c.ctx, c.cancel = context.WithDeadline(context.Background(), deadline)
	b.last.Store(c)
	return c.ctx
}

// send hands the live part of batch to run. A waiter whose deadline passed
// while it queued is not sent: its caller has already answered by the
// failure mode, and deciding it now would count a request against its key
// that the client never saw counted.
func (b *batcher) send(batch []*waiter, items []*Item, sc *scratch) {
	var deadline time.Time
	now := time.Now()
	for _, w := range batch {
		if !w.deadline.IsZero() && now.After(w.deadline) {
			w.it.Err = context.DeadlineExceeded
		} else {
			items = append(items, &w.it)
			if w.deadline.After(deadline) {
				deadline = w.deadline
			}
		}
	}
	if len(items) > 0 {
		b.run(b.ctxUntil(deadline), items, sc)
	}
}
