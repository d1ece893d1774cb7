//go:build !linux

package loadgen

import (
	"runtime"
	"time"
)

func lockPacerThread() { runtime.LockOSThread() }

// preciseSleep is Go's own sleep where the runtime is not held to Linux's
// millisecond epoll timeout (kqueue takes a timespec); the binary is built
// and measured for Linux.
func preciseSleep(d time.Duration) { time.Sleep(d) }
