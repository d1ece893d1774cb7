package node

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/redistest"
	"github.com/ratelimiter/ratelimiter/limiter"
	"github.com/ratelimiter/ratelimiter/node/store"
)

// memoryCases are the keys whose Redis memory docs/redis.md's capacity
// arithmetic uses: per algorithm, and for sliding_log (whose memory grows
// with the requests admitted in its window, one entry each whatever its
// cost) at several counts of requests (units). bound is the most bytes
// MEMORY USAGE may report for one key (user:NNNNNN, on a cluster master,
// Redis 7.0) before this test fails: a change to a script or to a key's
// layout that grows it needs new figures in docs/redis.md.
var memoryCases = []struct {
	alg   limiter.Algorithm
	units int64
	bound int64
}{
	// Measured on 2026-11-27: 120, 104, 120, 136, 472, 3672 and 147592.
	{limiter.SlidingWindow, 1, 130},
	{limiter.TokenBucket, 1, 115},
	{limiter.FixedWindow, 1, 130},
	{limiter.SlidingLog, 1, 150},
	{limiter.SlidingLog, 10, 520},
	{limiter.SlidingLog, 100, 4_000},
	{limiter.SlidingLog, 1000, 165_000},
}

// testMemoryPerKey decides fresh keys with each algorithm and reads MEMORY
// USAGE of each on the master that holds it. (What a key costs a master in
// all, its expiry and the dictionaries included, is measured apart; see
// docs/redis.md.)
func testMemoryPerKey(t *testing.T, c *redistest.Cluster) {
	const keys = 20
	s, err := store.NewRedisStore(asNodeUser{c}.URL(), "rl", store.TimeoutsFor(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	var figures []string
	for _, m := range memoryCases {
		// A day's window keeps every key alive for the test (a token costs
		// 8.64 s of the bucket's time).
		l := limiter.Limit{KeyPattern: "*", MaxRequests: 10_000, WindowSeconds: 86_400, Algorithm: m.alg, Burst: 10_000}
		l.Normalize()
		p := compile(l, limiter.FailOpen)
		items := make([]store.Item, keys)
		// sliding_log keeps one entry per admitted request, whatever its
		// cost: its figures are for that many requests of cost 1.
		requests, cost := int64(1), m.units
		if m.alg == limiter.SlidingLog {
			requests, cost = m.units, 1
		}
		for range requests {
			for i := range items {
				items[i] = store.Item{Key: fmt.Sprintf("user:%06d", 100_000+i), Cost: cost, Limit: &p.Limit}
			}
			if err := s.Decide(ctx, items); err != nil || !items[0].Result.Allowed {
				t.Fatalf("%s: Decide(cost %d) = %+v, %v; want admitted", m.alg, cost, items[0].Result, err)
			}
		}
		most := int64(0)
		for _, it := range items {
			dk := s.DataKey(&p.Limit, it.Key)
			n, err := c.MasterFor(t, dk).DoInt("MEMORY", "USAGE", dk, "SAMPLES", "0")
			if err != nil {
				t.Fatalf("MEMORY USAGE %s: %v", dk, err)
			}
			most = max(most, n)
		}
		figures = append(figures, fmt.Sprintf("%s/%d: %d B", m.alg, m.units, most))
		if most > m.bound {
			t.Errorf("%s with %d units admitted: MEMORY USAGE %d bytes; want at most %d (docs/redis.md)", m.alg, m.units, most, m.bound)
		}
	}
	t.Logf("MEMORY USAGE per key, most of %d (units, or for sliding_log requests, admitted in the window after the algorithm): %s", keys, strings.Join(figures, "; "))
}
