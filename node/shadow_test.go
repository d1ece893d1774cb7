package node

import (
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/testkit"
	"github.com/ratelimiter/ratelimiter/node/store"
)

// TestShadowNeverMakesHotKeysOrBlocks: a key that only exceeds a shadow
// (dry-run) limit is neither a hot key nor a denial in the block rate, so
// an operator can never hard-block a key for what a dry run would have
// done.
func TestShadowNeverMakesHotKeysOrBlocks(t *testing.T) {
	clock := testkit.NewClock()
	n := startNode(t, testConfig("shadow", nil), store.NewMemoryStore(clock.Now), clock.Now)
	for range 50 {
		check(t, n.URL, "shadow:flood", 1) // the shadow limit is 2 per 10 s
	}
	for range 5 {
		check(t, n.URL, "log:real", 1) // 10 per window: all allowed
	}
	clock.Add(time.Second)
	m := n.stats.snapshot(clock.Now())
	if m.ShadowDenials != 48 {
		t.Fatalf("shadow denials = %d; want 48 (the test proves nothing otherwise)", m.ShadowDenials)
	}
	if m.BlockedRate != 0 {
		t.Errorf("blocked rate = %v%% with only shadow denials; want 0", m.BlockedRate)
	}
	for _, h := range n.hot.list(clock.Now().UnixMicro(), 100) {
		if h.Key == "shadow:flood" {
			t.Errorf("hot keys list %+v: a shadow-only key", h)
		}
	}
}
