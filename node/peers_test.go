package node

import (
	"bytes"
	"net"
	"net/http"
	"strconv"
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

// A peer's /health is read up to maxPeerBody: the address comes from the
// registry, and whatever answers there could send without end. Before, an
// answer of 2 GiB kept askHealth 9 s and allocated 2 GiB.
func TestAskHealthBoundsTheAnswer(t *testing.T) {
	chunk := bytes.Repeat([]byte(" "), 1<<20)
	for _, length := range []bool{true, false} { // Content-Length, chunked
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if length {
				w.Header().Set("Content-Length", strconv.Itoa(1<<30))
			}
			for range 1 << 10 {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		})}
		go srv.Serve(ln)
		n := startNode(t, testConfig("a", nil), nil, nil)
		var ok bool
		start := time.Now()
		alloc, _ := testkit.Allocated(func() { _, ok = n.askHealth(&Info{ID: "b", Address: ln.Addr().String()}) })
		took := time.Since(start)
		srv.Close()
		if ok || alloc > 16<<20 || took > 2*time.Second {
			t.Errorf("Content-Length %v: a 1 GiB /health answer: ok=%v after %v, %d MiB allocated; want refused, within 2 s and 16 MiB",
				length, ok, took, alloc>>20)
		}
	}
}
