package store

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/redis/rueidis"

	"github.com/ratelimiter/ratelimiter/limiter"
)

// batcher gathers the checks that arrive while earlier ones are in flight.
// On a single Redis (or a Sentinel-managed primary) a batch is one call of
// limiter.BatchScript: under load this pays Redis' per-call cost and the
// client's per-command cost once per batch. On a Redis Cluster the keys of
// one script call must share a slot, so a batch is one script call per
// check, handed to the client at once, which writes each master's share in
// one go. When idle a check goes out alone, at once, so nothing waits for a
// batch to fill.
type batcher struct {
	s    *RedisStore
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
	key string // the data key, a view of buf
	// buf holds the data key. It is reused with the pooled waiter, which
	// saves an allocation per check, but only after a batch that got its
	// reply: a call that failed (a timeout above all) may leave the command
	// queued in the client, which would still read the key.
	buf      []byte
	limit    *Limit
	cost     int64
	deadline time.Time
	res      limiter.Result
	err      error
	done     chan struct{}
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

func newBatcher(s *RedisStore) *batcher {
	b := &batcher{s: s, in: make(chan *waiter, 4*batchMax), stop: make(chan struct{}), max: batchMax}
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

// decide runs one item through a batch and waits for it, or for ctx.
func (b *batcher) decide(ctx context.Context, it *Item) error {
	w := waiters.Get().(*waiter)
	w.buf = append(append(w.buf[:0], b.s.algKey[it.Limit.alg]...), it.Key...)
	w.key, w.limit, w.cost = unsafe.String(unsafe.SliceData(w.buf), len(w.buf)), it.Limit, it.Cost
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
		it.Result, it.Err = w.res, w.err
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
	var keys, args []string
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
		keys, args = b.run(batch, keys[:0], args[:0])
		for _, w := range batch {
			if w.err != nil {
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

// run decides batch with one script call, setting every waiter's result.
// A waiter whose deadline passed while it queued is not sent: its caller
// has already answered by the failure mode, and deciding it now would count
// a request against its key that the client never saw counted.
func (b *batcher) run(batch []*waiter, keys, args []string) ([]string, []string) {
	var deadline time.Time
	now, expired := time.Now(), 0
	for _, w := range batch {
		if !w.deadline.IsZero() && now.After(w.deadline) {
			w.err = context.DeadlineExceeded
			expired++
		} else if w.deadline.After(deadline) {
			deadline = w.deadline
		}
	}
	if expired > 0 { // rare: only after Redis stalled
		live := make([]*waiter, 0, len(batch)-expired)
		for _, w := range batch {
			if w.err == nil {
				live = append(live, w)
			}
		}
		if batch = live; len(batch) == 0 {
			return keys, args
		}
	}
	ctx := b.ctxUntil(deadline)
	c := b.s.get()
	if c == nil {
		for _, w := range batch {
			w.err = ErrUnavailable
		}
		return keys, args
	}
	nowArg := b.s.nowArg()
	if len(batch) == 1 {
		w := batch[0]
		p := w.limit
		k := [1]string{w.key}
		a := [5]string{p.args[0], p.args[1], p.args[2], formatInt(w.cost), nowArg}
		w.res, w.err = parseResult(b.s.algos[p.alg].lua.Exec(ctx, c, k[:], a[:]))
		return keys, args
	}
	if c.Mode() == rueidis.ClientModeCluster {
		b.runEach(ctx, c, batch, nowArg)
		return keys, args
	}
	args = append(args, nowArg)
	for _, w := range batch {
		p := w.limit
		keys = append(keys, w.key)
		args = append(args, algIndex[p.alg], p.args[0], p.args[1], p.args[2], formatInt(w.cost))
	}
	res := b.s.batch.lua.Exec(ctx, c, keys, args)
	arr, err := res.ToArray()
	if err == nil && len(arr) != len(batch) {
		err = fmt.Errorf("batch script returned %d results for %d keys", len(arr), len(batch))
	}
	for i, w := range batch {
		if err != nil {
			w.err = err
			continue
		}
		var reply []rueidis.RedisMessage
		if reply, w.err = arr[i].ToArray(); w.err == nil {
			w.res, w.err = parseReply(reply)
		}
	}
	return keys, args
}

// runEach decides batch on a Redis Cluster, where the keys of one script
// call must share a slot: one script call per check, all handed to the
// client at once, which pipelines them to each master in one write.
func (b *batcher) runEach(ctx context.Context, c rueidis.Client, batch []*waiter, now string) {
	items := make([]Item, len(batch))
	for i, w := range batch {
		items[i] = Item{Key: w.key, Cost: w.cost, Limit: w.limit}
	}
	b.s.decideEach(ctx, c, items, now, true)
	for i, w := range batch {
		w.res, w.err = items[i].Result, items[i].Err
	}
}

// algIndex is each algorithm's 1-based index, as BatchScript wants it.
var algIndex = [4]string{"1", "2", "3", "4"}
