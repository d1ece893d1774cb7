package luatest

import (
	"fmt"
	"testing"

	"github.com/ratelimiter/ratelimiter/limiter"
)

// base is an injected "now" aligned to every window the edge tests use.
const base = int64(1_700_000_000_000_000)

type step struct {
	at, cost int64 // µs after base; units
	want     limiter.Result
}

func allow(remaining, reset int64) limiter.Result {
	return limiter.Result{Allowed: true, Remaining: remaining, ResetAfter: reset}
}

func deny(remaining, reset, retry int64) limiter.Result {
	return limiter.Result{Remaining: remaining, ResetAfter: reset, RetryAfter: retry}
}

// edgeTester returns a closure that runs steps on a fresh key, through the
// Go twin and the Lua script at once (twinHarness fails on any difference),
// and checks each Result.
func edgeTester(t *testing.T, alg limiter.Algorithm) func(p limiter.Params, steps ...step) {
	h := newTwinHarness(t)
	n := 0
	return func(p limiter.Params, steps ...step) {
		t.Helper()
		n++
		key := fmt.Sprintf("edge:%s:%d", alg, n)
		for i, st := range steps {
			q := p
			q.Cost = st.cost
			got := h.decide(alg, key, base+st.at, q)
			// NextAfter has its own test (TestNextAfter); the twins agree on it.
			got.NextAfter = 0
			if got != st.want {
				t.Errorf("%s %+v case %d step %d: Decide(now=base+%d, cost=%d) = %+v; want %+v", alg, p, n, i, st.at, st.cost, got, st.want)
				return
			}
		}
	}
}

func TestSlidingLogEdges(t *testing.T) {
	f := edgeTester(t, limiter.SlidingLog)
	const W = 10_000_000
	p := limiter.Params{Limit: 3, Window: W}

	// Exactly limit at once, the next denied; a unit frees exactly at the edge.
	f(p,
		step{0, 1, allow(2, W)}, step{0, 1, allow(1, W)}, step{0, 1, allow(0, W)},
		step{0, 1, deny(0, W, W)},
		step{W - 1, 1, deny(0, 1, 1)},
		step{W, 1, allow(2, W)},
	)
	// Staggered entries free one by one; a cost of 2 waits for two of them.
	f(p,
		step{0, 1, allow(2, W)}, step{100, 1, allow(1, W)}, step{200, 1, allow(0, W)},
		step{300, 1, deny(0, W-100, W-300)},
		step{W - 1, 1, deny(0, 201, 1)},
		step{W, 1, allow(0, W)},
		step{W + 1, 2, deny(0, W-1, 199)},
		step{W + 199, 2, deny(1, W-199, 1)},
		step{W + 200, 2, allow(0, W)},
	)
	// Peeks consume nothing and create no key (the harness checks the key).
	f(p,
		step{0, 0, allow(3, 0)},
		step{5, 1, allow(2, W)},
		step{5, 0, allow(2, W)},
		step{6, 2, allow(0, W)},
		step{7, 0, deny(0, W-1, W-2)},
		step{7, 0, deny(0, W-1, W-2)},
		step{W + 4, 0, deny(0, 2, 1)},
		step{W + 5, 0, allow(1, 1)},
	)
	// A cost above the limit is never admitted and changes nothing.
	f(p,
		step{0, 4, deny(3, 0, 0)},
		step{0, 1, allow(2, W)},
		step{1, 4, deny(2, W-1, W-1)},
		step{1, 2, allow(0, W)},
	)
	// Long idle gaps leave an empty key.
	f(limiter.Params{Limit: 1, Window: W},
		step{0, 1, allow(0, W)},
		step{50 * W, 1, allow(0, W)},
		step{50 * W, 1, deny(0, W, W)},
	)
}

func TestSlidingWindowEdges(t *testing.T) {
	f := edgeTester(t, limiter.SlidingWindow)
	const W = 10_000_000
	p := limiter.Params{Limit: 3, Window: W}

	// Exactly limit at once; the full previous window then decays: ceil(3*(W-e)/W)
	// is 2 from e = 3333334 on.
	f(p,
		step{0, 1, allow(2, 2*W)}, step{0, 1, allow(1, 2*W)}, step{0, 1, allow(0, 2*W)},
		step{0, 1, deny(0, 2*W, 2*W-6666666)},
		step{W - 1, 0, deny(0, W+1, 3333335)},
		step{W, 0, deny(0, W, 3333334)},
		step{W + 3333333, 1, deny(0, W-3333333, 1)},
		step{W + 3333334, 1, allow(0, 2*W-3333334)},
		step{4*W + 5, 1, allow(2, 2*W-5)},
	)
	// The retry lands later in the current window as the previous count decays.
	f(p,
		step{0, 3, allow(0, 2*W)},
		step{W + W/2, 2, deny(1, W/2, 1666667)},
		step{W + 6666666, 2, deny(1, 3333334, 1)},
		step{W + 6666667, 2, allow(0, 2*W-6666667)},
		// Full until the next window, where the previous count is 2.
		step{W + 6666667, 0, deny(0, 2*W-6666667, W-6666667)},
		step{2 * W, 0, allow(1, W)},
		// Only the previous count left: full again at the window's end.
		step{3*W - 1, 0, allow(2, 1)},
		step{3 * W, 0, allow(3, 0)},
	)
	// Peek on an empty key, cost above the limit, an unaligned start.
	f(p,
		step{0, 0, allow(3, 0)},
		step{0, 4, deny(3, 0, 0)},
		step{7, 1, allow(2, 2*W-7)},
	)
}

func TestTokenBucketEdges(t *testing.T) {
	f := edgeTester(t, limiter.TokenBucket)
	const T = 1_000_000 // 10 units per 10 s
	p := limiter.Params{Limit: 10, Window: 10 * T, Burst: 3}

	f(p,
		// The burst at once, the next denied.
		step{0, 1, allow(2, T)}, step{0, 1, allow(1, 2*T)}, step{0, 1, allow(0, 3*T)},
		step{0, 1, deny(0, 3*T, T)},
		// One unit per T.
		step{T - 1, 1, deny(0, 2*T+1, 1)},
		step{T, 1, allow(0, 3*T)},
		step{2 * T, 0, allow(1, 2*T)},
		step{4 * T, 0, allow(3, 0)},
		// A cost above 1 waits for as many periods.
		step{4 * T, 3, allow(0, 3*T)},
		step{4 * T, 2, deny(0, 3*T, 2*T)},
		step{6*T - 1, 2, deny(1, T+1, 1)},
		step{6 * T, 2, allow(0, 3*T)},
		// Above the burst: never.
		step{100 * T, 4, deny(3, 0, 0)},
	)
	// T is rounded up: 10 s / 3 = 3333333.3 µs becomes 3333334.
	f(limiter.Params{Limit: 3, Window: 10 * T, Burst: 1},
		step{0, 1, allow(0, 3333334)},
		step{3333333, 1, deny(0, 1, 1)},
		step{3333334, 1, allow(0, 3333334)},
	)
	// A burst above the rate.
	f(limiter.Params{Limit: 1, Window: T, Burst: 5},
		step{0, 0, allow(5, 0)},
		step{0, 5, allow(0, 5*T)},
		step{0, 1, deny(0, 5*T, T)},
		step{2 * T, 0, allow(2, 3*T)},
	)
}

func TestFixedWindowEdges(t *testing.T) {
	f := edgeTester(t, limiter.FixedWindow)
	const W = 10_000_000
	p := limiter.Params{Limit: 3, Window: W}

	f(p,
		step{0, 1, allow(2, W)}, step{0, 2, allow(0, W)},
		step{0, 1, deny(0, W, W)},
		step{W - 1, 1, deny(0, 1, 1)},
		step{W, 1, allow(2, W)},
		step{W + 5, 3, deny(2, W-5, W-5)},
		step{W + 5, 0, allow(2, W-5)},
		step{2*W + 1, 0, allow(3, 0)},
		step{2*W + 1, 4, deny(3, 0, 0)},
		step{2*W + 7, 3, allow(0, W-7)},
		step{3*W - 1, 0, deny(0, 1, 1)},
	)
}
