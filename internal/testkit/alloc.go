package testkit

import "runtime"

// Allocated runs f and returns the bytes it allocated and the change of
// the live heap it left (both whole-process figures: run it where nothing
// else in the test binary allocates meanwhile, so not in a parallel test).
func Allocated(f func()) (total, live int64) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	total = int64(after.TotalAlloc - before.TotalAlloc)
	runtime.GC()
	runtime.ReadMemStats(&after)
	return total, int64(after.HeapAlloc) - int64(before.HeapAlloc)
}
