package node

import (
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/redistest"
	"github.com/ratelimiter/ratelimiter/internal/testkit"
)

// TestNodesWithoutStore checks that any node still answers for the whole
// cluster while Redis is down, by asking the last known peers directly.
func TestNodesWithoutStore(t *testing.T) {
	srv := redistest.Start(t)
	a := startNode(t, testConfig("a", srv), nil, nil)
	b := startNode(t, testConfig("b", srv), nil, nil)
	type view struct {
		Nodes  []Info `json:"nodes"`
		Source string `json:"source"`
	}
	var v view
	testkit.WaitFor(t, 3*time.Second, "both nodes registered", func() bool {
		testkit.Call(t, "GET", a.URL+"/api/v1/nodes", "", &v)
		return len(v.Nodes) == 2
	})
	srv.Kill()
	testkit.WaitFor(t, 3*time.Second, "a view pieced together from the peers", func() bool {
		testkit.Call(t, "GET", a.URL+"/api/v1/nodes", "", &v)
		if v.Source != "peers" || len(v.Nodes) != 2 {
			return false
		}
		for _, n := range v.Nodes {
			if n.RedisConnected || n.State != stateHealthy {
				return false
			}
		}
		return true
	})
	// A peer that is gone as well is reported unhealthy, not dropped.
	b.stop()
	testkit.Call(t, "GET", a.URL+"/api/v1/nodes", "", &v)
	if len(v.Nodes) != 2 || v.Nodes[1].ID != "b" || v.Nodes[1].State != stateUnhealthy {
		t.Fatalf("after b stopped, with Redis down: %+v; want b listed as unhealthy", v.Nodes)
	}
}
