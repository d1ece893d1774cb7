package node

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/redistest"
	"github.com/ratelimiter/ratelimiter/internal/testkit"
	"github.com/ratelimiter/ratelimiter/node/store"
)

// mutedHeartbeats is a store whose heartbeats (and deregistration) fail
// while muted, as they do while the master holding a cluster's registry
// fails over.
type mutedHeartbeats struct {
	*store.RedisStore
	muted atomic.Bool
}

func (s *mutedHeartbeats) Heartbeat(ctx context.Context, id, record string) (int64, error) {
	if s.muted.Load() {
		return 0, errors.New("muted by the test")
	}
	return s.RedisStore.Heartbeat(ctx, id, record)
}

func (s *mutedHeartbeats) Forget(ctx context.Context, id string) error {
	if s.muted.Load() {
		return errors.New("muted by the test")
	}
	return s.RedisStore.Forget(ctx, id)
}

// TestStaleHeartbeatOfALiveNode mutes one node's heartbeats: the others
// ask it for its /health before calling it unhealthy, so it is reported
// healthy with redis_connected false (what the operator reads as
// redis_disconnected, not node_down). Once it has stopped (unable to
// deregister), it is unhealthy again.
func TestStaleHeartbeatOfALiveNode(t *testing.T) {
	srv := redistest.Start(t)
	a := startNode(t, testConfig("a", srv), nil, nil)
	rs, err := store.NewRedisStore(srv.URL(), "rl", store.TimeoutsFor(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	shared := &mutedHeartbeats{RedisStore: rs}
	b := startNode(t, testConfig("b", srv), shared, nil)
	expectConnected(t, []*testNode{a, b})

	shared.muted.Store(true)
	cfg := testConfig("b", srv)
	stale := time.Now().Add(cfg.UnhealthyAfter.Duration + 2*cfg.HeartbeatInterval.Duration)
	testkit.WaitFor(t, 5*time.Second, "b reported disconnected by a", func() bool {
		nodes, _, err := tryNodes(a.URL)
		return err == nil && !nodes["b"].RedisConnected
	})
	time.Sleep(time.Until(stale))
	// a asks b's /health with a 300 ms bound; on a stalled machine one ask
	// can miss, so the answer is polled rather than read once.
	var got apiNode
	var src string
	if !testkit.Eventually(3*time.Second, func() bool {
		nodes, s, err := tryNodes(a.URL)
		got, src = nodes["b"], s
		return err == nil && src == "store" && got.State == stateHealthy && !got.RedisConnected && got.HeartbeatAgeMs >= cfg.UnhealthyAfter.Milliseconds()
	}) {
		t.Fatalf("a's registry with b's heartbeats %v old = %+v (source %q); want b healthy by its own /health, redis_connected false",
			cfg.UnhealthyAfter, got, src)
	}

	b.stop()
	if !testkit.Eventually(3*time.Second, func() bool {
		nodes, _, err := tryNodes(a.URL)
		got = nodes["b"]
		return err == nil && got.State == stateUnhealthy
	}) {
		t.Fatalf("a's registry after b stopped without deregistering = %+v; want b unhealthy", got)
	}
}
