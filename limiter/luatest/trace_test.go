package luatest

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/ratelimiter/ratelimiter/limiter"
)

// maxNow bounds the traces' clock: the scripts are exact for now < 2^52 µs.
const maxNow = 1 << 52

// tracer draws random request sequences that dwell on the edges: zero steps,
// steps to a window boundary and to the last retry_after or reset_after (and
// one µs before), and gaps long past expiry.
type tracer struct {
	rng  *rand.Rand
	p    limiter.Params
	alg  limiter.Algorithm
	now  int64
	last map[string]limiter.Result
}

func newTracer(seed uint64, alg limiter.Algorithm, p limiter.Params) *tracer {
	return &tracer{rng: rand.New(rand.NewPCG(seed, 1)), p: p, alg: alg, now: base + 12345, last: map[string]limiter.Result{}}
}

func (tr *tracer) capacity() int64 {
	if tr.alg == limiter.TokenBucket {
		return tr.p.Burst
	}
	return tr.p.Limit
}

// next returns the key, time and parameters of the next request.
func (tr *tracer) next() (string, int64, limiter.Params) {
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
		dt = (tr.now/w+1)*w - tr.now + tr.rng.Int64N(3) - 1
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

func (tr *tracer) record(key string, r limiter.Result) { tr.last[key] = r }

func cloneState(s *limiter.State) *limiter.State {
	c := *s
	c.Log = slices.Clone(s.Log)
	return &c
}

// TestDecideExactness checks on the Go twin, over random traces, that peeks
// and denials leave the state alone and that every reported number is exact: remaining units are admitted at once and one
// more is not; the key is full exactly reset_after later and not a µs
// sooner; a denied request passes exactly retry_after later and not a µs
// sooner, when nothing else happens.
func TestDecideExactness(t *testing.T) {
	for _, alg := range limiter.Algorithms {
		for ci, p := range traceParams(alg) {
			tr := newTracer(uint64(ci)+7, alg, p)
			states := map[string]*limiter.State{}
			capa := tr.capacity()
			decideAt := func(s *limiter.State, now, cost int64) limiter.Result {
				q := p
				q.Cost = cost
				return limiter.Decide(alg, cloneState(s), now, q)
			}
			for i := range 20000 {
				key, now, q := tr.next()
				s := states[key]
				if s == nil {
					s = &limiter.State{}
					states[key] = s
				}
				before := cloneState(s)
				r := limiter.Decide(alg, s, now, q)
				tr.record(key, r)
				where := fmt.Sprintf("%s %+v step %d: Decide(now=%d, cost=%d) = %+v", alg, p, i, now, q.Cost, r)

				if !(r.Allowed && q.Cost > 0) && now < before.ExpiresAt && !reflect.DeepEqual(before, s) {
					t.Fatalf("%s: changed the state from %+v to %+v without admitting anything", where, before, s)
				}
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
func traceParams(alg limiter.Algorithm) []limiter.Params {
	const s = 1_000_000
	switch alg {
	case limiter.SlidingLog:
		return []limiter.Params{
			{Limit: 3, Window: 10 * s},
			{Limit: 1, Window: s},
			{Limit: 10, Window: s + 1},
			{Limit: 50, Window: 86_400 * s},
			// Costs up to the largest limit: one entry per request, so as
			// cheap as cost 1.
			{Limit: limiter.MaxRequestsLimit, Window: limiter.MaxWindowSeconds * s},
		}
	case limiter.TokenBucket:
		return []limiter.Params{
			{Limit: 3, Window: 10 * s, Burst: 3},
			{Limit: 1, Window: s, Burst: 1},
			{Limit: 10, Window: s + 1, Burst: 4},
			{Limit: 7, Window: 60 * s, Burst: 20},
			{Limit: limiter.MaxRequestsLimit, Window: limiter.MaxWindowSeconds * s, Burst: limiter.MaxRequestsLimit},
			{Limit: 1, Window: limiter.MaxWindowSeconds * s, Burst: 13_031}, // burst*T just below 2^50
		}
	}
	return []limiter.Params{
		{Limit: 3, Window: 10 * s},
		{Limit: 1, Window: s},
		{Limit: 10, Window: s + 1},
		{Limit: 1000, Window: 60 * s},
		{Limit: limiter.MaxRequestsLimit, Window: limiter.MaxWindowSeconds * s},
	}
}
