package node

import (
	"errors"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/config"
)

// TestStoreFailureWinsOverAConcurrentReconnect races storeOK (a check that
// just succeeded, the store disconnected long ago) against storeFailed (a
// failure at the same instant): whatever the order, the node must end
// disconnected, as the failure is the latest news. A storeOK that read the
// old lastFailure before the failure was recorded, and marked the store
// connected after, loses that failure: the node then reports itself
// connected until another failure comes, in the middle of an outage.
func TestStoreFailureWinsOverAConcurrentReconnect(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	n := &Node{id: "race", log: slog.New(slog.DiscardHandler), now: func() time.Time { return now }}
	n.cfg.SyncInterval = config.Duration{Duration: 100 * time.Millisecond}
	n.metrics = newPromMetrics(n)
	down := errors.New("store down")
	const rounds = 200_000
	lost := 0
	for range rounds {
		n.lastFailure.Store(now.Add(-time.Hour).UnixMicro())
		n.connected.Store(false)
		var start, done sync.WaitGroup
		start.Add(1)
		done.Add(2)
		go func() { defer done.Done(); start.Wait(); n.storeOK() }()
		go func() { defer done.Done(); start.Wait(); n.storeFailed("sync", down) }()
		runtime.Gosched()
		start.Done()
		done.Wait()
		if n.connected.Load() {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("in %d of %d races of a reconnect with a failure, the node ended connected: the failure was lost", lost, rounds)
	}
}
