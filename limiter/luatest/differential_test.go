package luatest

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"testing"

	"github.com/ratelimiter/ratelimiter/internal/redistest"
	"github.com/ratelimiter/ratelimiter/limiter"
	"github.com/redis/rueidis"
)

// TestLuaMatchesGo runs random traces through the Go twins and the Lua
// scripts on a real redis-server: every Result, and every expiry the scripts
// set, must be identical (twinHarness.decide fails on the first difference).
func TestLuaMatchesGo(t *testing.T) {
	for _, alg := range limiter.Algorithms {
		t.Run(string(alg), func(t *testing.T) {
			t.Parallel()
			h := newTwinHarness(t)
			for ci, p := range traceParams(alg) {
				tr := newTracer(uint64(ci)+1000, alg, p)
				for range 3000 {
					key, now, q := tr.next()
					tr.record(key, h.decide(alg, fmt.Sprintf("diff:%d:%s", ci, key), now, q))
				}
			}
		})
	}
}

// TestSlidingLogLimitChangesMatchGo runs random sliding_log traces whose
// limit changes between requests through the Go twin and the script: a
// lowered limit leaves more live units than the limit, and NextAfter then
// looks for the member that brings the count below it (past the oldest
// member when costs are above 1), a path the fixed-limit traces never take.
func TestSlidingLogLimitChangesMatchGo(t *testing.T) {
	h := newTwinHarness(t)
	rng := rand.New(rand.NewPCG(12, 34))
	for ci, p := range []limiter.Params{{Limit: 12, Window: 10_000_000}, {Limit: 40, Window: 1_000_000}} {
		tr := newTracer(uint64(ci)+2000, limiter.SlidingLog, p)
		limit := p.Limit
		for range 3000 {
			key, now, q := tr.next()
			if rng.IntN(10) == 0 {
				limit = 1 + rng.Int64N(p.Limit)
			}
			q.Limit = limit
			tr.record(key, h.decide(limiter.SlidingLog, fmt.Sprintf("limits:%d:%s", ci, key), now, q))
		}
	}
}

// TestScriptsUseRedisTime calls each script without now_us and checks that
// the time it decided on lies between two TIME readings taken around it.
func TestScriptsUseRedisTime(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	ctx := context.Background()
	redisTime := func() int64 {
		t.Helper()
		v, err := c.Do(ctx, c.B().Time().Build()).AsIntSlice()
		if err != nil || len(v) != 2 {
			t.Fatalf("TIME = %v, %v", v, err)
		}
		return v[0]*1_000_000 + v[1]
	}
	// packed reads the first double of a value: a counter's window index w,
	// a token bucket's TAT.
	packed := func(key string) int64 {
		t.Helper()
		v, err := c.Do(ctx, c.B().Get().Key(key).Build()).AsBytes()
		if err != nil || len(v) < 8 {
			t.Fatalf("GET %s = %q, %v; want little-endian doubles", key, v, err)
		}
		return int64(math.Float64frombits(binary.LittleEndian.Uint64(v)))
	}

	const W = 3_600_000_000 // long enough that no test run crosses two windows
	for i, alg := range limiter.Algorithms {
		p := limiter.Params{Limit: 5, Window: W, Cost: 2}
		if alg == limiter.TokenBucket {
			p.Burst = 5
		}
		key := "time:" + string(alg)
		args := scriptArgs(p, -1)
		if i%2 == 1 {
			args = args[:4] // an absent ARGV[5] is as good as an empty one
		}
		before := redisTime()
		r, _, err := parseReply(rueidis.NewLuaScript(limiter.Script(alg)).Exec(ctx, c, []string{key}, args))
		after := redisTime()
		if err != nil {
			t.Fatalf("%s script without now: %v", alg, err)
		}

		// Recover the time the script decided on from what it stored.
		var now int64
		switch alg {
		case limiter.SlidingLog:
			v, err := c.Do(ctx, c.B().Zrange().Key(key).Min("0").Max("0").Withscores().Build()).AsZScores()
			if err != nil || len(v) != 1 {
				t.Fatalf("ZRANGE %s = %v, %v", key, v, err)
			}
			now = int64(v[0].Score)
		case limiter.SlidingWindow:
			now = packed(key)*W + 2*W - r.ResetAfter
		case limiter.TokenBucket:
			now = packed(key) - r.ResetAfter
		case limiter.FixedWindow:
			now = (packed(key)+1)*W - r.ResetAfter
		}
		if now < before || now > after {
			t.Errorf("%s without now decided at %d; want Redis TIME, between %d and %d", alg, now, before, after)
		}
		if want := limiter.Decide(alg, &limiter.State{}, now, p); r != want {
			t.Errorf("%s without now = %+v; the Go twin at the same time gives %+v", alg, r, want)
		}
		pttl, err := c.Do(ctx, c.B().Pttl().Key(key).Build()).AsInt64()
		if err != nil {
			t.Fatalf("PTTL %s: %v", key, err)
		}
		if want := (r.ResetAfter+999)/1000 + 1; pttl <= 0 || pttl > want {
			t.Errorf("%s: PTTL = %d ms; want at most %d and positive", alg, pttl, want)
		}
	}
}

// TestSlidingLogSameMicrosecond checks that requests admitted in one µs are
// separate members, one per request whatever its cost, and that their units
// all count.
func TestSlidingLogSameMicrosecond(t *testing.T) {
	h := newTwinHarness(t)
	p := limiter.Params{Limit: 2000, Window: 1_000_000}
	for _, cost := range []int64{1, 3, 1500, 1} {
		p.Cost = cost
		h.decide(limiter.SlidingLog, "same", base, p)
	}
	n, err := h.client.Do(context.Background(), h.client.B().Zcard().Key("same").Build()).AsInt64()
	if err != nil {
		t.Fatalf("ZCARD: %v", err)
	}
	if n != 4 {
		t.Fatalf("ZCARD after 4 requests (1505 units) in one µs = %d; want 4", n)
	}
	p.Cost = 0
	if r := h.decide(limiter.SlidingLog, "same", base, p); r.Remaining != 2000-1505 {
		t.Fatalf("remaining = %d; want %d", r.Remaining, 2000-1505)
	}
}

// TestSlidingWindowExactAtBounds aims at the products that pass 2^53 at the
// largest valid limit and window, placing requests where prev*(W-e) is a
// multiple of W give or take 1, and where the retry's R*W is a multiple of
// prev give or take 1: a double product rounds exactly there. Lua must still
// agree with Go, and the test checks that the points are adversarial: naive
// float64 arithmetic gets some of them wrong.
func TestSlidingWindowExactAtBounds(t *testing.T) {
	h := newTwinHarness(t)
	const W = limiter.MaxWindowSeconds * 1_000_000
	p := limiter.Params{Limit: limiter.MaxRequestsLimit, Window: W}
	start := (base/W + 1) * W
	naiveWrong := 0
	n := 0
	// decide runs one request on a fresh key whose previous window admitted prev units.
	decide := func(prev, e, cost int64) limiter.Result {
		t.Helper()
		n++
		key := fmt.Sprintf("bounds:%d", n)
		q := p
		q.Cost = prev
		h.decide(limiter.SlidingWindow, key, start-W, q)
		q.Cost = cost
		return h.decide(limiter.SlidingWindow, key, start+e, q)
	}
	// solve returns x in [0, m) with a*x = b (mod m), for a coprime with m.
	solve := func(a, b, m int64) int64 {
		bm := big.NewInt(m)
		x := new(big.Int).ModInverse(big.NewInt(a), bm)
		x.Mul(x, big.NewInt(b))
		return x.Mod(x, bm).Int64()
	}
	// prev values coprime with W = 2^13 * 3^3 * 5^8.
	for _, prev := range []int64{7, 12_345_677, 99_999_989, 99_999_997} {
		// The estimate: prev*(W-e) = k*W + rem.
		for _, rem := range []int64{1, 2, W - 1, W - 2} {
			e := solve(prev, W-rem, W) // prev*(W-e) = -prev*e = rem (mod W)
			r := decide(prev, e, 0)
			used := ceilMulDiv(prev, W-e, W)
			if r.Remaining != max(p.Limit-used, 0) {
				t.Errorf("prev %d, e %d: remaining = %d; want %d", prev, e, r.Remaining, p.Limit-used)
			}
			if int64(math.Ceil(float64(prev)*float64(W-e)/float64(W))) != used {
				naiveWrong++
			}
		}
		// The retry: R*W = m*prev + 1 or m*prev - 1, for R = limit - want.
		for _, sign := range []int64{1, -1} {
			rr := solve(W%prev, mod(sign, prev), prev) // R*W = sign (mod prev)
			q1, _ := floorMulDiv(rr+1, W, prev)
			e := W - q1 // where ceil(prev*(W-e)/W) = R+1: one unit short
			r := decide(prev, e, p.Limit-rr)
			q, _ := floorMulDiv(rr, W, prev)
			if want := W - q - e; r.Allowed || r.RetryAfter != want {
				t.Errorf("prev %d, R %d, e %d: %+v; want denied with retry_after %d", prev, rr, e, r, want)
			}
			if int64(math.Floor(float64(rr)*float64(W)/float64(prev))) != q {
				naiveWrong++
			}
		}
	}
	if naiveWrong == 0 {
		t.Errorf("float64 arithmetic got every point right: the points are not adversarial")
	}
	t.Logf("naive float64 arithmetic is wrong at %d of the points", naiveWrong)
}

// floorMulDiv returns floor(a*x/m) and a*x mod m in exact big arithmetic.
func floorMulDiv(a, x, m int64) (int64, int64) {
	q, r := new(big.Int).QuoRem(new(big.Int).Mul(big.NewInt(a), big.NewInt(x)), big.NewInt(m), new(big.Int))
	return q.Int64(), r.Int64()
}

func ceilMulDiv(a, x, m int64) int64 {
	q, r := floorMulDiv(a, x, m)
	if r > 0 {
		q++
	}
	return q
}

func mod(a, m int64) int64 { return (a%m + m) % m }
