package store

import (
	"context"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/testkit"
	"github.com/ratelimiter/ratelimiter/limiter"
)

// distinctKeys decides n distinct keys on a MemoryStore, perMs per
// millisecond of its clock on a 1 s window (so about 1,000 × perMs keys are
// live at any time when n is larger), spread over every algorithm, and
// returns the keys the store still holds and the live heap growth in bytes.
func distinctKeys(tb testing.TB, n, perMs int) (held int, heap uint64) {
	clock := testkit.NewClock()
	s := NewMemoryStore(clock.Now)
	var pols [limiter.NumAlgorithms]*Limit
	for i, alg := range limiter.Algorithms {
		l := limiter.Limit{KeyPattern: "*", MaxRequests: 100, WindowSeconds: 1, Algorithm: alg}
		l.Normalize()
		c := Compile(l)
		pols[i] = &c
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	items := make([]Item, 1)
	key := make([]byte, 0, 32)
	for i := range n {
		if i%perMs == 0 {
			clock.Add(time.Millisecond)
		}
		key = strconv.AppendInt(append(key[:0], "user:"...), int64(i), 10)
		items[0] = Item{Key: string(key), Cost: 1, Limit: pols[i%len(pols)]}
		if err := s.Decide(context.Background(), items); err != nil || !items[0].Result.Allowed {
			tb.Fatalf("key %d: %+v, %v", i, items[0].Result, err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	for i := range s.shards {
		held += s.shards[i].size()
	}
	runtime.KeepAlive(s)
	return held, after.HeapAlloc - min(before.HeapAlloc, after.HeapAlloc)
}

// TestMemoryStoreReclaimsExpiredKeys: after 780,000 distinct keys, of
// which about 100,000 are live at a time, the store holds at most twice
// the live keys plus 64 × sweepMin, whatever the count that went through.
// (The count ends each shard just before the sweep of the old fixed
// schedule, every 4,096 new keys per shard: that held about 350,000.)
// BenchmarkMemoryStoreDistinctKeys measures 5,000,000.
func TestMemoryStoreReclaimsExpiredKeys(t *testing.T) {
	const n, live = 780_000, 100_000
	held, heap := distinctKeys(t, n, 100)
	if bound := 2*live + 64*sweepMin; held > bound {
		t.Fatalf("store holds %d keys after %d distinct keys (%d live); want at most %d", held, n, live, bound)
	}
	t.Logf("%d distinct keys, ~%d live: %d held, heap +%d MB", n, live, held, heap>>20)
}
