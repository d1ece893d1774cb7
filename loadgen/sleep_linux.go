package loadgen

import (
	"runtime"
	"syscall"
	"time"
)

// prSetTimerslack is prctl's PR_SET_TIMERSLACK: Linux lets a thread's
// sleeps run up to 50 µs past their end by default, a quarter of a fast
// node's whole answer time.
const prSetTimerslack = 29

// lockPacerThread dedicates the calling goroutine's thread to pacing, with
// a timer slack of one microsecond. The goroutine must exit without
// unlocking, so that the thread, slack and all, exits with it.
func lockPacerThread() {
	runtime.LockOSThread()
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerslack, 1000, 0)
}

// preciseSleep sleeps d in the kernel: Go's own timers wake whole
// milliseconds late, since the runtime waits for them in epoll with a
// millisecond timeout. d is always short (under coarseMargin), so the
// blocked thread is not missed.
func preciseSleep(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	for syscall.Nanosleep(&ts, &ts) == syscall.EINTR {
	}
}
