package limiter

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// base is an injected "now" aligned to every window the edge tests use.
const base = int64(1_700_000_000_000_000)

type step struct {
	at, cost int64 // µs after base; units
	want     Result
}

func allow(remaining, reset int64) Result {
	return Result{Allowed: true, Remaining: remaining, ResetAfter: reset}
}

func deny(remaining, reset, retry int64) Result {
	return Result{Remaining: remaining, ResetAfter: reset, RetryAfter: retry}
}

// edgeTester returns a closure that runs steps on a fresh key, through the
// Go twin and the Lua script at once (twinHarness fails on any difference),
// and checks each Result.
func edgeTester(t *testing.T, alg Algorithm) func(p Params, steps ...step) {
	h := newTwinHarness(t)
	n := 0
	return func(p Params, steps ...step) {
		t.Helper()
		n++
		key := fmt.Sprintf("edge:%s:%d", alg, n)
		for i, st := range steps {
			q := p
			q.Cost = st.cost
			got := h.decide(alg, key, base+st.at, q)
			if got != st.want {
				t.Errorf("%s %+v case %d step %d: Decide(now=base+%d, cost=%d) = %+v; want %+v", alg, p, n, i, st.at, st.cost, got, st.want)
				return
			}
		}
	}
}

func TestSlidingLogEdges(t *testing.T) {
	f := edgeTester(t, SlidingLog)
	const W = 10_000_000
	p := Params{Limit: 3, Window: W}

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
	f(Params{Limit: 1, Window: W},
		step{0, 1, allow(0, W)},
		step{50 * W, 1, allow(0, W)},
		step{50 * W, 1, deny(0, W, W)},
	)
}

func TestSlidingWindowEdges(t *testing.T) {
	f := edgeTester(t, SlidingWindow)
	const W = 10_000_000
	p := Params{Limit: 3, Window: W}

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
	f := edgeTester(t, TokenBucket)
	const T = 1_000_000 // 10 units per 10 s
	p := Params{Limit: 10, Window: 10 * T, Burst: 3}

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
	f(Params{Limit: 3, Window: 10 * T, Burst: 1},
		step{0, 1, allow(0, 3333334)},
		step{3333333, 1, deny(0, 1, 1)},
		step{3333334, 1, allow(0, 3333334)},
	)
	// A burst above the rate.
	f(Params{Limit: 1, Window: T, Burst: 5},
		step{0, 0, allow(5, 0)},
		step{0, 5, allow(0, 5*T)},
		step{0, 1, deny(0, 5*T, T)},
		step{2 * T, 0, allow(2, 3*T)},
	)
}

func TestFixedWindowEdges(t *testing.T) {
	f := edgeTester(t, FixedWindow)
	const W = 10_000_000
	p := Params{Limit: 3, Window: W}

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

// maxNow bounds the traces' clock: the scripts are exact for now < 2^52 µs.
const maxNow = 1 << 52

// tracer draws random request sequences that dwell on the edges: zero steps,
// steps to a window boundary and to the last retry_after or reset_after (and
// one µs before), and gaps long past expiry.
type tracer struct {
	rng  *rand.Rand
	p    Params
	alg  Algorithm
	now  int64
	last map[string]Result
}

func newTracer(seed uint64, alg Algorithm, p Params) *tracer {
	return &tracer{rng: rand.New(rand.NewPCG(seed, 1)), p: p, alg: alg, now: base + 12345, last: map[string]Result{}}
}

func (tr *tracer) capacity() int64 {
	if tr.alg == TokenBucket {
		return tr.p.Burst
	}
	return tr.p.Limit
}

// next returns the key, time and parameters of the next request.
func (tr *tracer) next() (string, int64, Params) {
	key := fmt.Sprintf("k%d", tr.rng.IntN(3))
	last, seen := tr.last[key]
	w := tr.p.Window
	var dt int64
	switch x := tr.rng.IntN(100); {
	case x < 20:
		dt = 0
	case x < 35:
		dt = 1 + tr.rng.Int64N(1000)
	case x < 50:
		dt = tr.rng.Int64N(w/10 + 1)
	case x < 60:
		dt = tr.rng.Int64N(w + 1)
	case x < 70: // to the next window boundary, or one µs either side
		dt = (floorDiv(tr.now, w)+1)*w - tr.now + tr.rng.Int64N(3) - 1
	case x < 85 && seen && last.RetryAfter > 0:
		dt = last.RetryAfter - tr.rng.Int64N(2)
	case x < 92 && seen && last.ResetAfter > 0:
		dt = last.ResetAfter - tr.rng.Int64N(2)
	case x < 95:
		dt = 2*w + tr.rng.Int64N(3*w)
	default:
		dt = tr.rng.Int64N(2 * w)
	}
	if tr.now+dt >= maxNow {
		dt = min(tr.rng.Int64N(w+1), maxNow-1-tr.now)
	}
	tr.now += max(dt, 0)

	capa := tr.capacity()
	var cost int64
	switch x := tr.rng.IntN(100); {
	case x < 20:
		cost = 0
	case x < 55:
		cost = 1
	case x < 65:
		cost = 1 + tr.rng.Int64N(min(capa, 3))
	case x < 90:
		cost = tr.rng.Int64N(capa + 1)
	case x < 96:
		cost = capa
	default:
		cost = capa + 1
	}
	p := tr.p
	p.Cost = cost
	return key, tr.now, p
}

func (tr *tracer) record(key string, r Result) { tr.last[key] = r }

func (s *State) clone() *State {
	c := *s
	c.Log = slices.Clone(s.Log)
	return &c
}

// TestDecideExactness checks on the Go twin, over random traces, that every
// reported number is exact: remaining units are admitted at once and one
// more is not; the key is full exactly reset_after later and not a µs
// sooner; a denied request passes exactly retry_after later and not a µs
// sooner, when nothing else happens.
func TestDecideExactness(t *testing.T) {
	for _, alg := range Algorithms {
		for ci, p := range traceParams(alg) {
			tr := newTracer(uint64(ci)+7, alg, p)
			states := map[string]*State{}
			capa := tr.capacity()
			decideAt := func(s *State, now, cost int64) Result {
				q := p
				q.Cost = cost
				return Decide(alg, s.clone(), now, q)
			}
			steps := 20000
			if alg == SlidingLog && p.Limit > 100 {
				steps = 3000
			}
			for i := range steps {
				key, now, q := tr.next()
				s := states[key]
				if s == nil {
					s = &State{}
					states[key] = s
				}
				r := Decide(alg, s, now, q)
				tr.record(key, r)
				where := fmt.Sprintf("%s %+v step %d: Decide(now=%d, cost=%d) = %+v", alg, p, i, now, q.Cost, r)

				if r.Allowed != (r.RetryAfter == 0) && q.Cost <= capa {
					t.Fatalf("%s: allowed and retry_after disagree", where)
				}
				if r.Remaining > 0 && !decideAt(s, now, r.Remaining).Allowed {
					t.Fatalf("%s: a request for the %d remaining units is denied", where, r.Remaining)
				}
				if r.Remaining < capa && decideAt(s, now, r.Remaining+1).Allowed {
					t.Fatalf("%s: a request for %d units (remaining+1) is admitted", where, r.Remaining+1)
				}
				if got := decideAt(s, now+r.ResetAfter, 0).Remaining; got != capa {
					t.Fatalf("%s: remaining after reset_after = %d; want %d", where, got, capa)
				}
				if r.ResetAfter > 0 {
					if got := decideAt(s, now+r.ResetAfter-1, 0).Remaining; got == capa {
						t.Fatalf("%s: already full 1 µs before reset_after", where)
					}
				}
				if !r.Allowed && q.Cost <= capa {
					if r.RetryAfter <= 0 {
						t.Fatalf("%s: denied with retry_after %d", where, r.RetryAfter)
					}
					if decideAt(s, now+r.RetryAfter-1, q.Cost).Allowed {
						t.Fatalf("%s: admitted 1 µs before retry_after", where)
					}
					if !decideAt(s, now+r.RetryAfter, q.Cost).Allowed {
						t.Fatalf("%s: still denied at retry_after", where)
					}
				}
			}
		}
	}
}

// traceParams are the limits the random traces run under: small ones that
// fill often, an odd window that does not divide into ms or units, and the
// largest Limit.Validate accepts, where products pass 2^53.
func traceParams(alg Algorithm) []Params {
	const s = 1_000_000
	switch alg {
	case SlidingLog:
		return []Params{
			{Limit: 3, Window: 10 * s},
			{Limit: 1, Window: s},
			{Limit: 10, Window: s + 1},
			{Limit: 50, Window: 86_400 * s},
		}
	case TokenBucket:
		return []Params{
			{Limit: 3, Window: 10 * s, Burst: 3},
			{Limit: 1, Window: s, Burst: 1},
			{Limit: 10, Window: s + 1, Burst: 4},
			{Limit: 7, Window: 60 * s, Burst: 20},
			{Limit: MaxRequestsLimit, Window: MaxWindowSeconds * s, Burst: MaxRequestsLimit},
			{Limit: 1, Window: MaxWindowSeconds * s, Burst: 13_031}, // burst*T just below 2^50
		}
	}
	return []Params{
		{Limit: 3, Window: 10 * s},
		{Limit: 1, Window: s},
		{Limit: 10, Window: s + 1},
		{Limit: 1000, Window: 60 * s},
		{Limit: MaxRequestsLimit, Window: MaxWindowSeconds * s},
	}
}

func TestDecideExpiry(t *testing.T) {
	// An expired state is empty: it decides like the zero State, whatever it held.
	f := func(alg Algorithm, p Params, s State) {
		t.Helper()
		p.Cost = 0
		got := Decide(alg, &s, s.ExpiresAt, p)
		want := Decide(alg, &State{}, s.ExpiresAt, p)
		if got != want {
			t.Errorf("%s: Decide at ExpiresAt of %+v = %+v; want the empty key's %+v", alg, s, got, want)
		}
	}
	f(SlidingLog, Params{Limit: 2, Window: 10}, State{Log: []int64{5, 6}, ExpiresAt: 3})
	f(SlidingWindow, Params{Limit: 2, Window: 10}, State{Window: 0, Count: 2, Prev: 2, ExpiresAt: 3})
	f(TokenBucket, Params{Limit: 2, Window: 10, Burst: 2}, State{TAT: 100, ExpiresAt: 3})
	f(FixedWindow, Params{Limit: 2, Window: 10}, State{Window: 0, Count: 2, ExpiresAt: 3})
}

func TestTokenBucketValidation(t *testing.T) {
	f := func(maxRequests, windowSeconds, burst int64, ok bool) {
		t.Helper()
		l := Limit{KeyPattern: "k", MaxRequests: maxRequests, WindowSeconds: windowSeconds, Algorithm: TokenBucket, Burst: burst}
		l.Normalize()
		if err := l.Validate(); (err == nil) != ok {
			t.Errorf("Validate(%d/%ds, burst %d) = %v; want ok=%v", maxRequests, windowSeconds, burst, err, ok)
		}
	}
	f(1, MaxWindowSeconds, 13_031, true)
	f(1, MaxWindowSeconds, 13_032, false)
	f(MaxRequestsLimit, MaxWindowSeconds, MaxRequestsLimit, true)
	f(1, 1, MaxRequestsLimit, true)
	f(1, 60, MaxRequestsLimit, false)
}
