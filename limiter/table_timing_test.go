package limiter

import (
	"fmt"
	"testing"
)

// Reference numbers (go test -bench . -run XXX ./limiter, 2-vCPU cloud VM,
// Go 1.26, shared with other builds) are in the comments below each
// benchmark; allocs/op must stay 0 for Match and Decide.

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
