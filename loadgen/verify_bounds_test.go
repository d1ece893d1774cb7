package loadgen

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/nodetest"
	"github.com/ratelimiter/ratelimiter/limiter"
)

// TestFetchPoliciesBounded: --verify reads a node's limits whole, so the
// read is bounded: the largest list a node serves (max_limits of 1,000
// limits at their longest) is read, an endless answer is refused once it
// passes maxLimitsAnswer. Before, io.ReadAll took a hostile target's
// 64 MiB answer whole.
func TestFetchPoliciesBounded(t *testing.T) {
	cfg := nodetest.Config("lgbig", nil)
	cfg.Limits = nil
	for i := range cfg.MaxLimits {
		prefix := fmt.Sprintf("p%04d:", i)
		pattern := prefix + strings.Repeat("x", limiter.MaxPatternBytes-len(prefix)-1) + "*"
		cfg.Limits = append(cfg.Limits, limiter.Limit{Name: strings.Replace(pattern, "*", "n", 1), KeyPattern: pattern, MaxRequests: 100_000_000, WindowSeconds: 86400, Algorithm: limiter.TokenBucket, Burst: 100_000_000, FailureMode: "closed", MaxCost: 100_000_000})
	}
	n := nodetest.Start(t, cfg)
	resp, err := http.Get(n.URL + "/api/v1/limits")
	if err != nil {
		t.Fatal(err)
	}
	size := resp.ContentLength
	resp.Body.Close()
	t.Logf("%d limits at their longest: %d bytes", len(cfg.Limits), size)
	if size <= 0 || 2*size > maxLimitsAnswer { // 2: with each limit's previous version
		t.Fatalf("the largest list is %d bytes, twice that over maxLimitsAnswer (%d)", size, maxLimitsAnswer)
	}
	p, err := fetchPolicies([]string{n.URL}, 5*time.Second)
	if err != nil || p.table.Match([]byte(strings.TrimSuffix(cfg.Limits[999].KeyPattern, "*"))) == nil {
		t.Fatalf("fetchPolicies(largest list) = %v; want every limit", err)
	}

	// A hostile target streams 64 MiB of limits.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var sent atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := []byte(strings.Repeat(`{"key_pattern":"a:*","max_requests":1,"window_seconds":1},`, 1000))
		n, _ := w.Write([]byte(`{"limits":[`))
		sent.Add(int64(n))
		for sent.Load() < 64<<20 {
			n, err := w.Write(chunk)
			sent.Add(int64(n))
			if err != nil {
				return
			}
		}
		w.Write([]byte(`{"key_pattern":"a:*","max_requests":1,"window_seconds":1}]}`))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	_, err = fetchPolicies([]string{"http://" + ln.Addr().String()}, 5*time.Second)
	t.Logf("hostile target: %v after %d bytes sent", err, sent.Load())
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("fetchPolicies(64 MiB answer) = %v; want an error naming the bound", err)
	}
}
