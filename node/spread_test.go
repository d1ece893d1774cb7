package node

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/redistest"
	"github.com/ratelimiter/ratelimiter/internal/testkit"
)

// testKeysSpreadOverMasters decides 10,000 fresh keys (under "*", whose
// keys outlive the test) through the batch endpoint (one request per 1,000 keys, each
// split by slot across the masters), and counts the keys each master holds:
// every key is one Redis key on the master of its own slot, so the load
// spreads evenly over all three.
func testKeysSpreadOverMasters(t *testing.T, c *redistest.Cluster) {
	const (
		keys     = 10_000
		perBatch = 1000
	)
	// This test is about where keys go, not about latency: a generous
	// redis_timeout keeps a busy machine's slow batch (a thousand scripts
	// on three masters sharing two cores) from being answered by failure
	// mode.
	cfg := testConfig("spread", asNodeUser{c})
	cfg.RedisTimeout.Duration = 5 * time.Second
	n := startNode(t, cfg, nil, nil)
	// A fresh cluster has no scripts loaded: the first batch that meets a
	// NOSCRIPT loads them on every server. Warm up with a small one, so the
	// large ones show the steady state within the 50 ms Redis timeout.
	var warm struct{ Results []checkResult }
	testkit.Call(t, "POST", n.URL+"/api/v1/check/batch", `{"checks":[{"key":"w:1"},{"key":"w:2"},{"key":"w:3"},{"key":"w:4"}]}`, &warm)
	const warmKeys = 4
	for b := 0; b < keys/perBatch; b++ {
		var body strings.Builder
		body.WriteString(`{"checks":[`)
		for i := range perBatch {
			if i > 0 {
				body.WriteByte(',')
			}
			fmt.Fprintf(&body, `{"key":"spread:%d"}`, b*perBatch+i)
		}
		body.WriteString(`]}`)
		var out struct{ Results []checkResult }
		if resp := testkit.Call(t, "POST", n.URL+"/api/v1/check/batch", body.String(), &out); resp.StatusCode != http.StatusOK || len(out.Results) != perBatch {
			t.Fatalf("batch %d = %d with %d results; want 200 with %d", b, resp.StatusCode, len(out.Results), perBatch)
		}
		for i, r := range out.Results {
			if !r.Allowed || r.Reason != reasonWithin || r.Policy != "*" || r.Remaining != r.Limit-1 {
				t.Fatalf("batch %d, check %d (%s) = %+v; want the first admission of a fresh key under \"*\"", b, i, r.Key, r)
			}
		}
	}

	// The registry's keys share the slot of {rl}; the rest are data keys.
	registry := c.MasterFor(t, "{rl}")
	slot, err := registry.DoInt("CLUSTER", "KEYSLOT", "{rl}")
	if err != nil {
		t.Fatal(err)
	}
	total := int64(0)
	var figures []string
	for _, m := range c.Masters(t) {
		size, err := m.DoInt("DBSIZE")
		if err != nil {
			t.Fatalf("DBSIZE on %s: %v", m.Addr, err)
		}
		if m == registry {
			mgmt, err := m.DoInt("CLUSTER", "COUNTKEYSINSLOT", strconv.FormatInt(slot, 10))
			if err != nil {
				t.Fatal(err)
			}
			size -= mgmt
		}
		total += size
		figures = append(figures, fmt.Sprintf("%s %d (%.1f %%)", m.Addr, size, 100*float64(size)/keys))
		// Each master serves a third of the slots: far from a third of the
		// keys means the keys are not spread by their own hash. (For
		// 10,000 keys one standard deviation is 0.5 %.)
		if size < keys*30/100 || size > keys*37/100 {
			t.Errorf("master %s holds %d of %d data keys; want about a third", m.Addr, size, keys)
		}
	}
	t.Logf("data keys per master after %d fresh keys: %s", keys, strings.Join(figures, ", "))
	if total != keys+warmKeys {
		t.Errorf("the masters hold %d data keys; want exactly %d, one per key decided", total, keys+warmKeys)
	}
}
