package node

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/ratelimiter/ratelimiter/internal/redistest"
	"github.com/ratelimiter/ratelimiter/internal/testkit"
)

// TestEveryPerKeyRedisKeyExpires sends 10,000 distinct keys of every
// algorithm through a node on Redis (admitted, some twice to be denied, a
// few peeked and reset), then SCANs Redis: every key but the shared state
// under the {rl} hash tag has a TTL. The test scans; the node never does
// (its Redis user may not, see TestOnCluster).
func TestEveryPerKeyRedisKeyExpires(t *testing.T) {
	srv := redistest.Start(t)
	n := startNode(t, exactConfig("ttl", srv), nil, nil)
	const perAlg = 10_000
	for _, prefix := range []string{"log:", "sw:", "tb:", "fw:"} {
		for b := 0; b < perAlg; b += 1000 {
			var checks []map[string]any
			for i := b; i < b+1000; i++ {
				checks = append(checks, map[string]any{"key": prefix + strconv.Itoa(i), "cost": 1 + i%3})
			}
			body, _ := json.Marshal(map[string]any{"checks": checks})
			if resp := testkit.Call(t, "POST", n.URL+"/api/v1/check/batch", string(body), nil); resp.StatusCode != 200 {
				t.Fatalf("batch %s%d: %d", prefix, b, resp.StatusCode)
			}
		}
		for i := range 20 {
			check(t, n.URL, prefix+"hot", 5) // admitted, then denied
			if i%5 == 0 {
				testkit.Call(t, "GET", n.URL+"/api/v1/counters/"+prefix+"peek"+strconv.Itoa(i), "", nil)
				testkit.Call(t, "DELETE", n.URL+"/api/v1/counters/"+prefix+strconv.Itoa(i), "", nil)
			}
		}
	}
	c := srv.Client(t)
	ctx := context.Background()
	var cursor uint64
	seen, perKey := 0, 0
	byAlg := map[string]int{} // per-key keys by the prefix of their key
	for {
		e, err := c.Do(ctx, c.B().Scan().Cursor(cursor).Count(1000).Build()).AsScanEntry()
		if err != nil {
			t.Fatalf("SCAN: %v", err)
		}
		for _, k := range e.Elements {
			seen++
			if strings.HasPrefix(k, "{rl}") {
				continue // shared state: limits, blocks, drains, the registry
			}
			perKey++
			for _, prefix := range []string{"log:", "sw:", "tb:", "fw:"} {
				if strings.Contains(k, prefix) {
					byAlg[prefix]++
				}
			}
			ttl, err := c.Do(ctx, c.B().Ttl().Key(k).Build()).AsInt64()
			if err != nil || ttl == -1 {
				t.Fatalf("per-key Redis key %q has TTL %d (%v); every per-key key must expire", k, ttl, err)
			}
		}
		if cursor = e.Cursor; cursor == 0 {
			break
		}
	}
	// The sliding windows' keys outlive the test (10 s windows, sent within
	// a few seconds), so all of them must be there. token_bucket keys
	// expire once the bucket is full again (1 to 3 s here) and fixed_window
	// keys at their window's end, which the test may cross: those may be
	// gone already. Four keys of each were reset above.
	for _, prefix := range []string{"log:", "sw:"} {
		if byAlg[prefix] < perAlg-4 {
			t.Fatalf("SCAN found %d per-key keys of %s* (of %d keys); want at least %d: the test did not reach Redis", byAlg[prefix], prefix, seen, perAlg-4)
		}
	}
	t.Logf("%d keys, %d per-key (%v), all with a TTL", seen, perKey, byAlg)
}
