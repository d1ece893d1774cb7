package limiter

import (
	"fmt"
	"testing"
)

// Reference numbers: go test -run XXX -bench . ./limiter on a 2-vCPU AMD EPYC
// cloud VM shared with other builds, Go 1.26 (so noisy; allocs/op is the
// number that must not move):
//
//	BenchmarkTableMatch/globs=1/key=user:42-2           42 ns/op   0 allocs/op
//	BenchmarkTableMatch/globs=10/key=no:such:key-2     145 ns/op   0 allocs/op
//	BenchmarkTableMatch/globs=100/key=no:such:key-2   2538 ns/op   0 allocs/op
//	BenchmarkDecide/sliding_log-2                       29 ns/op   0 allocs/op
//	BenchmarkDecide/sliding_window-2                    26 ns/op   0 allocs/op
//	BenchmarkDecide/token_bucket-2                      24 ns/op   0 allocs/op
//	BenchmarkDecide/fixed_window-2                      13 ns/op   0 allocs/op
//
// A key tries the globs one by one, most specific first: a table of hundreds
// of globs would want an index by prefix.

var sinkLimit *Limit

// BenchmarkTableMatch sweeps the number of glob patterns a key is tried
// against; exact patterns are one map lookup whatever their number.
func BenchmarkTableMatch(b *testing.B) {
	for _, globs := range []int{1, 10, 100} {
		patterns := []string{"user:42", "*"}
		for i := range globs - 1 {
			patterns = append(patterns, fmt.Sprintf("tenant%d:*:read", i))
		}
		tb := tableOf(patterns...)
		for _, key := range []string{"user:42", "tenant0:x:read", "no:such:key"} {
			k := []byte(key)
			b.Run(fmt.Sprintf("globs=%d/key=%s", globs, key), func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					var l *Limit
					for pb.Next() {
						l = tb.Match(k)
					}
					sinkLimit = l
				})
			})
		}
	}
}
