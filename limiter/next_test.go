package limiter

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestNextAfter checks what NextAfter promises over random traces of every
// algorithm, limits lowered mid-trace included: Remaining does not grow
// before it and does at it; it is 0 exactly at full quota; it equals
// RetryAfter when a single unit is denied; and it is at most the window
// (two windows for sliding_window, whose estimate counts a unit into the
// next window) unless the limit changed.
func TestNextAfter(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 15))
	peek := func(alg Algorithm, s *State, now int64, p Params) Result {
		c := *s
		c.Log = slices.Clone(s.Log)
		p.Cost = 0
		return Decide(alg, &c, now, p)
	}
	for _, alg := range Algorithms {
		for trace := range 300 {
			const sec = int64(1e6)
			p := Params{Limit: 1 + rng.Int64N(12), Window: sec * (1 + rng.Int64N(10))}
			if alg == TokenBucket {
				p.Burst = 1 + rng.Int64N(20)
			}
			s := &State{}
			changed := false // after a limit change the debt of a token bucket may exceed the window
			now := int64(1_700_000_000) * sec
			for step := range 80 {
				switch rng.IntN(6) {
				case 0:
				case 1:
					now += rng.Int64N(1000)
				case 2:
					now += rng.Int64N(p.Window / 4)
				default:
					now += rng.Int64N(p.Window / 20)
				}
				if rng.IntN(40) == 0 { // a lowered (or raised) limit
					changed = true
					p.Limit = 1 + rng.Int64N(12)
					if alg == TokenBucket {
						p.Burst = 1 + rng.Int64N(20)
					}
				}
				q := p
				q.Cost = rng.Int64N(4)
				r := Decide(alg, s, now, q)
				capacity := p.Limit
				if alg == TokenBucket {
					capacity = p.Burst
				}
				bound := p.Window
				if alg == SlidingWindow {
					bound = 2 * p.Window
				}
				where := func() string {
					return string(alg) + " trace " + formatInt(int64(trace)) + " step " + formatInt(int64(step))
				}
				switch {
				case r.NextAfter < 0 || (r.NextAfter > bound && !changed):
					t.Fatalf("%s: %+v with %+v: NextAfter out of [0, %d]", where(), r, q, bound)
				case (r.NextAfter == 0) != (r.Remaining == capacity):
					t.Fatalf("%s: %+v with %+v: NextAfter is 0 iff the quota (%d) is full", where(), r, q, capacity)
				case !r.Allowed && max(q.Cost, 1) == 1 && r.NextAfter != r.RetryAfter:
					t.Fatalf("%s: %+v with %+v: a single unit denied, NextAfter != RetryAfter", where(), r, q)
				}
				if r.NextAfter > 0 {
					before, at := peek(alg, s, now+r.NextAfter-1, p), peek(alg, s, now+r.NextAfter, p)
					if before.Remaining > r.Remaining || at.Remaining <= r.Remaining {
						t.Fatalf("%s: %+v with %+v: Remaining %d just before NextAfter and %d at it; want at most %d, then more",
							where(), r, q, before.Remaining, at.Remaining, r.Remaining)
					}
				}
			}
		}
	}
}

func formatInt(v int64) string {
	b := make([]byte, 0, 20)
	if v == 0 {
		return "0"
	}
	for v > 0 {
		b = append([]byte{byte('0' + v%10)}, b...)
		v /= 10
	}
	return string(b)
}
