package node

import (
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/ratelimiter/ratelimiter/internal/redistest"
)

// sentinelBound is how long after a primary's SIGKILL (or SENTINEL
// FAILOVER) checks may be answered by failure mode: the sentinels call the
// primary down after down-after-milliseconds (1 s in the tests), elect a
// leader and promote the replica (1-2 s), and rueidis follows the
// +switch-master they publish.
const sentinelBound = 3*redistest.SentinelDownAfter + 3*time.Second

// TestSentinelFailover runs three nodes on a Sentinel-managed primary and
// replica, under traffic: a SENTINEL FAILOVER, then a SIGKILL of the new
// primary. Each time the nodes follow the new primary by themselves: they
// decide by Redis again, exactly, and their counts land on the new primary.
func TestSentinelFailover(t *testing.T) {
	s := redistest.StartSentinel(t)
	addNodeUser(t, s.Primary, s.Replica)
	url := asNodeUser{sentinelURL{s}}
	nodes := []*testNode{
		startNode(t, testConfig("a", url), nil, nil),
		startNode(t, testConfig("b", url), nil, nil),
		startNode(t, testConfig("c", url), nil, nil),
	}
	closeConnsFirst(t)
	expectConnected(t, nodes)

	step := func(what string, key string, act func()) {
		t.Helper()
		load := startFailoverLoad(nodes)
		t.Cleanup(func() { load.finish() })
		time.Sleep(500 * time.Millisecond)
		at := time.Now()
		act()
		back := waitDecidingAgain(t, nodes, at, sentinelBound)
		time.Sleep(500 * time.Millisecond)
		r := reportFailover(t, load.finish(), at)
		t.Logf("%s: %s; every node deciding by Redis again (stable 1 s) %v after it", what, r, back.Round(time.Millisecond))
		checkFailover(t, r, sentinelBound)
		primary := s.PrimaryNow(t)
		expectExact(t, nodes, key, 10)
		if n, err := primary.DoInt("EXISTS", "rl:sl:"+key); err != nil || n != 1 {
			t.Errorf("after %s: EXISTS rl:sl:%s on the new primary %s = %d, %v; want the nodes writing there", what, key, primary.Addr, n, err)
		}
		expectConnected(t, nodes)
	}
	step("SENTINEL FAILOVER", "log:sentinel-1", func() { s.Failover(t) })
	if s.PrimaryNow(t) != s.Replica {
		t.Fatalf("after SENTINEL FAILOVER the primary is not the old replica")
	}
	s.WaitReady(t, 30*time.Second)
	step("SIGKILL of the primary", "log:sentinel-2", func() { s.Replica.Kill() })
	if s.PrimaryNow(t) != s.Primary {
		t.Fatalf("after the SIGKILL the primary is not the first one")
	}
}

// sentinelURL is a Sentinel setup as a backend (Client is not needed by
// the tests that use it).
type sentinelURL struct{ s *redistest.Sentinel }

func (b sentinelURL) URL() string { return b.s.URL() }

func (b sentinelURL) Client(t testing.TB) rueidis.Client {
	t.Fatalf("BUG: sentinelURL.Client is not implemented")
	return nil
}
