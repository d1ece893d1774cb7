package loadgen

import (
	"context"
	"slices"
	"testing"
	"time"
)

// BenchmarkWakeLag measures how late the pacer wakes for a due time 2 ms
// away (500/s): with sleepUntil (Go timer, then a kernel sleep for the last
// coarseMargin), and with a Go timer alone, the pacer before issue 15. It
// reports the median and p99 lag per wake-up.
//
// 2-core VM shared with four other builds, load average 8-9 (2026-12-04),
// -benchtime 500x -count 3, median of the three runs' p50:
//
//	sleepUntil  p50 66 µs    (kernel sleep with a 1 µs timer slack)
//	timer       p50 927 µs   (the runtime's netpoller waits in whole ms)
//
// The p99s (10-150 ms for both) are the host not running the thread at all.
func BenchmarkWakeLag(b *testing.B) {
	f := func(b *testing.B, wait func(start time.Time, due time.Duration, timer *time.Timer)) {
		done := make(chan []time.Duration)
		go func() {
			lockPacerThread() // as the pacer does; the thread exits with this goroutine
			timer := time.NewTimer(time.Hour)
			defer timer.Stop()
			lags := make([]time.Duration, 0, b.N)
			start := time.Now()
			for i := range b.N {
				due := time.Duration(i+1) * 2 * time.Millisecond
				wait(start, due, timer)
				lags = append(lags, time.Since(start)-due)
			}
			done <- lags
		}()
		lags := <-done
		slices.Sort(lags)
		b.ReportMetric(float64(lags[len(lags)/2].Microseconds()), "p50-lag-µs")
		b.ReportMetric(float64(lags[len(lags)*99/100].Microseconds()), "p99-lag-µs")
	}
	b.Run("sleepUntil", func(b *testing.B) {
		b.ReportAllocs()
		f(b, func(start time.Time, due time.Duration, timer *time.Timer) {
			sleepUntil(context.Background(), start, due, timer)
		})
	})
	b.Run("timer", func(b *testing.B) {
		b.ReportAllocs()
		f(b, func(start time.Time, due time.Duration, timer *time.Timer) {
			if w := due - time.Since(start); w > 0 {
				timer.Reset(w)
				<-timer.C
			}
		})
	})
}
