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

// BenchmarkTableMatchHostile matches patterns that make backtracking
// matchers exponential against 512-byte keys. Matching here is greedy (one
// left-to-right pass per glob, bytes.Index per segment), so each costs
// about as much as a scan of the key: a microsecond or less (issue 12).
func BenchmarkTableMatchHostile(b *testing.B) {
	long := func(fill string, n int, tail string) []byte {
		k := make([]byte, 0, n)
		for len(k) < n-len(tail) {
			k = append(k, fill...)
		}
		return append(k[:n-len(tail)], tail...)
	}
	cases := []struct {
		pattern string
		key     []byte
	}{
		{"a*a*a*a*a*a*b", long("a", 512, "")},                // no final b: a backtracker tries every split
		{"a*a*a*a*a*a*b", long("a", 512, "b")},               // matches
		{"a*a*a*a*a*a*b", long("a", 512, "ba")},              // b, but not last
		{"*aaaaaaaaab*aaaaaaaaab*", long("a", 512, "aaaab")}, // long segments, near misses
		{"*" + string(long("ab", 256, "")) + "*", long("a", 512, "")},
	}
	for i, c := range cases {
		tb := tableOf(c.pattern)
		b.Run(fmt.Sprintf("case=%d", i), func(b *testing.B) {
			b.ReportAllocs()
			var l *Limit
			for b.Loop() {
				l = tb.Match(c.key)
			}
			sinkLimit = l
		})
	}
}
