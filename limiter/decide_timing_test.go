package limiter

import "testing"

var sinkResult Result

// BenchmarkDecide runs each Go twin on one key at a steady state: a request
// every window/(2*limit) µs, so about half are denied.
func BenchmarkDecide(b *testing.B) {
	const window = 60_000_000
	for _, alg := range Algorithms {
		b.Run(string(alg), func(b *testing.B) {
			p := Params{Limit: 100, Window: window, Cost: 1}
			if alg == TokenBucket {
				p.Burst = 100
			}
			var s State
			now := int64(1_700_000_000_000_000)
			b.ReportAllocs()
			var r Result
			for b.Loop() {
				r = Decide(alg, &s, now, p)
				now += window / 200
			}
			sinkResult = r
		})
	}
}
