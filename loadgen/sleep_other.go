//go:build !linux

package loadgen

import (
	"runtime"
	"time"
)

func lockPacerThread() { runtime.LockOSThread() }

// preciseSleep spins where there is no kernel sleep to call: d is short
// (under coarseMargin), and Go's own timers would wake up to a millisecond
// late.
func preciseSleep(d time.Duration) {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		runtime.Gosched()
	}
}
