package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/testkit"
	"github.com/ratelimiter/ratelimiter/node/store"
)

// apiNodes returns a node on the in-process store and one on Redis, so
// every API test runs against both stores.
func apiNodes(t *testing.T, srv backend) map[string]*testNode {
	mem := testConfig("mem", nil)
	red := exactConfig("redis", srv)
	mem.AdminToken, red.AdminToken = "s3cret", "s3cret"
	return map[string]*testNode{"memory": startNode(t, mem, nil, nil), "redis": startNode(t, red, nil, nil)}
}

var admin = []string{"Authorization", "Bearer s3cret"}

var (
	policyRE    = regexp.MustCompile(`^"[^"]+";q=\d+;w=\d+$`)
	rateLimitRE = regexp.MustCompile(`^"[^"]+";r=\d+;t=\d+$`)
)

func testHeadersAndForwardAuth(t *testing.T, red backend) {
	for name, n := range apiNodes(t, red) {
		t.Run(name, func(t *testing.T) {
			awayFromWindowEdge(10 * time.Second)
			for i := 0; i < 10; i++ {
				r, resp := check(t, n.URL, "fw:hdr", 1)
				if !r.Allowed || resp.StatusCode != 200 {
					t.Fatalf("check %d: status %d %+v; want 200 allowed", i, resp.StatusCode, r)
				}
				if got := resp.Header.Get("RateLimit-Policy"); got != `"fw:*";q=10;w=10` {
					t.Fatalf("RateLimit-Policy = %q; want %q", got, `"fw:*";q=10;w=10`)
				}
				want := fmt.Sprintf(`"fw:*";r=%d;t=`, 9-i)
				if got := resp.Header.Get("RateLimit"); !strings.HasPrefix(got, want) || !rateLimitRE.MatchString(got) {
					t.Fatalf("RateLimit = %q; want %q…", got, want)
				}
				if resp.Header.Get("Retry-After") != "" {
					t.Fatalf("Retry-After on an allowed request")
				}
			}
			r, resp := check(t, n.URL, "fw:hdr", 1)
			if r.Allowed || resp.StatusCode != 429 || r.Reason != "limit" || r.Remaining != 0 {
				t.Fatalf("11th check: %d %+v; want 429 denied by limit", resp.StatusCode, r)
			}
			if ra := resp.Header.Get("Retry-After"); ra == "" || ra == "0" {
				t.Fatalf("Retry-After = %q on 429", ra)
			}
			if !policyRE.MatchString(resp.Header.Get("RateLimit-Policy")) || !rateLimitRE.MatchString(resp.Header.Get("RateLimit")) {
				t.Fatalf("headers on 429 not in draft syntax: %q %q", resp.Header.Get("RateLimit-Policy"), resp.Header.Get("RateLimit"))
			}

			// The GET form: same decision, empty body, key from the query.
			resp = testkit.Call(t, "GET", n.URL+"/api/v1/check?key=fw:hdr", "", nil)
			if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" || resp.ContentLength != 0 {
				t.Fatalf("GET check on an exhausted key: %d, Retry-After %q, length %d; want 429 with Retry-After and no body",
					resp.StatusCode, resp.Header.Get("Retry-After"), resp.ContentLength)
			}
			resp = testkit.Call(t, "GET", n.URL+"/api/v1/check?key=fw:other&cost=3", "", nil)
			if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("RateLimit"), "r=7;") {
				t.Fatalf("GET check with cost 3: %d %q; want 200 with r=7", resp.StatusCode, resp.Header.Get("RateLimit"))
			}
		})
	}
}

func TestKeyFromHeader(t *testing.T) {
	cfg := testConfig("hdr", nil)
	cfg.KeyHeader = "X-Forwarded-For"
	n := startNode(t, cfg, nil, nil)
	for i := 0; i < 3; i++ {
		resp := testkit.Call(t, "GET", n.URL+"/api/v1/check", "", nil, "X-Forwarded-For", "shadow:10.0.0.1")
		if resp.StatusCode != 200 {
			t.Fatalf("check %d: %d", i, resp.StatusCode)
		}
	}
	var r checkResult
	testkit.Call(t, "GET", n.URL+"/api/v1/counters/"+url.PathEscape("shadow:10.0.0.1"), "", &r)
	// The shadow limit (2) was exceeded but never denied: the counter shows it full.
	var c CounterView
	testkit.Call(t, "GET", n.URL+"/api/v1/counters/"+url.PathEscape("shadow:10.0.0.1"), "", &c)
	if c.Used != 2 || c.Remaining != 0 {
		t.Fatalf("counter after 3 header-keyed checks on a shadow limit of 2: %+v; want used 2", c)
	}
}

func testShadowNeverDenies(t *testing.T, red backend) {
	for name, n := range apiNodes(t, red) {
		t.Run(name, func(t *testing.T) {
			for i := 0; i < 5; i++ {
				r, resp := check(t, n.URL, "shadow:k", 1)
				want := "within_limit"
				if i >= 2 {
					want = "shadow"
				}
				if resp.StatusCode != 200 || !r.Allowed || r.Reason != want {
					t.Fatalf("shadow check %d: %d %+v; want 200 reason %s", i, resp.StatusCode, r, want)
				}
			}
			body := scrape(t, n.URL)
			if !strings.Contains(body, `ratelimiter_shadow_denials_total{node_id="`+n.ID()+`"} 3`) {
				t.Fatalf("shadow denials not counted as 3 in /metrics")
			}
		})
	}
}

func testBadInput(t *testing.T, red backend) {
	for name, n := range apiNodes(t, red) {
		t.Run(name, func(t *testing.T) {
			f := func(method, path, body string, want int, hdr ...string) {
				t.Helper()
				var resp *http.Response
				if len(body) > 64<<10 {
					resp = callOversized(t, method, n.URL+path, body)
				} else {
					resp = testkit.Call(t, method, n.URL+path, body, nil, hdr...)
				}
				if resp.StatusCode != want {
					t.Fatalf("%s %s %.60q: status %d; want %d", method, path, body, resp.StatusCode, want)
				}
				if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
					t.Fatalf("%s %s: Content-Type %q; want application/problem+json", method, path, ct)
				}
				var p struct {
					Type   string `json:"type"`
					Title  string `json:"title"`
					Status int    `json:"status"`
					Detail string `json:"detail"`
				}
				b := make([]byte, 0)
				_ = b
				if err := json.NewDecoder(resp.Body).Decode(&p); err != nil || p.Status != want || p.Type == "" || p.Detail == "" {
					t.Fatalf("%s %s: problem body %+v (%v); want type, status %d and detail", method, path, p, err, want)
				}
			}
			f("POST", "/api/v1/check", `{"key":`, 400)
			f("POST", "/api/v1/check", `not json`, 400)
			f("POST", "/api/v1/check", `[1,2]`, 400)
			f("POST", "/api/v1/check", `{"key":42}`, 400)
			f("POST", "/api/v1/check", `{"key":"log:`+strings.Repeat("x", 70<<10)+`"}`, 413)
			f("POST", "/api/v1/check", `{"key":""}`, 400)
			f("POST", "/api/v1/check", `{"key":"log:`+strings.Repeat("k", 520)+`"}`, 400)
			f("POST", "/api/v1/check", `{"key":"log:a\u0001b"}`, 400)
			f("POST", "/api/v1/check", `{"key":"log:a\nb"}`, 400)
			f("POST", "/api/v1/check", `{"key":"log:a","cost":0}`, 400)
			f("POST", "/api/v1/check", `{"key":"log:a","cost":-3}`, 400)
			f("POST", "/api/v1/check", `{"key":"log:a","cost":1.5}`, 400)
			f("POST", "/api/v1/check", `{"key":"log:a","cost":11}`, 400) // above the limit of 10
			f("POST", "/api/v1/check", `{"key":"tb:a","cost":6}`, 400)   // above the burst of 5
			f("GET", "/api/v1/check?key=log:a&cost=x", "", 400)
			f("GET", "/api/v1/check", "", 400) // no key
			f("POST", "/api/v1/check/batch", `{"checks":[{"key":"log:a"},{"key":""}]}`, 400)
			f("POST", "/api/v1/check/batch", `{"checks":[]}`, 400)
			f("POST", "/api/v1/limits", `{"key_pattern":"x:*","max_requests":5,"window_seconds":10,"algorithm":"leaky"}`, 400, admin...)
			f("POST", "/api/v1/limits", `{"key_pattern":"x:*","max_requests":5,"window_seconds":0}`, 400, admin...)
			f("POST", "/api/v1/limits", `{"key_pattern":"x:*","max_requests":5,"window_seconds":-1}`, 400, admin...)
			f("POST", "/api/v1/limits", `{"key_pattern":"x:*","max_requests":0,"window_seconds":1}`, 400, admin...)
			f("POST", "/api/v1/limits", `{"key_pattern":"x:*","max_requests":5,"window_seconds":1,"bogus":1}`, 400, admin...)
			f("POST", "/api/v1/limits", `{"key_pattern":"x:*"`, 400, admin...)
			f("DELETE", "/api/v1/counters/user/42", "", 400, admin...) // an unescaped "/" in a key
			f("POST", "/api/v1/blocks/user/42", `{"duration_seconds":5}`, 400, admin...)
			f("POST", "/api/v1/blocks/user:1", `{"duration_seconds":0}`, 400, admin...)
			f("POST", "/api/v1/blocks/user:1", `{"duration_seconds":"5"}`, 400, admin...)
			f("DELETE", "/api/v1/limits/nope:*", "", 404, admin...)
			f("GET", "/api/v1/nodes/nope", "", 404)
			f("GET", "/api/v1/nowhere", "", 404)
			f("PUT", "/api/v1/check", "", 405)
			f("GET", "/api/v1/hot-keys?ratio=7", "", 400)
			f("GET", "/api/v1/hot-keys?ratio=NaN", "", 400) // once killed the node
			f("POST", "/api/v1/check/batch", `{}`, 400)     // once killed the node

			// The node is still serving, and decided nothing for the bad requests.
			r, resp := check(t, n.URL, "log:a", 1)
			if resp.StatusCode != 200 || r.Remaining != 9 {
				t.Fatalf("after bad input: %d %+v; want 200 with 9 remaining", resp.StatusCode, r)
			}
		})
	}
}

func testAdminToken(t *testing.T, red backend) {
	n := apiNodes(t, red)["redis"]
	mutating := []struct{ method, path, body string }{
		{"POST", "/api/v1/limits", `{"key_pattern":"a:*","max_requests":5,"window_seconds":10}`},
		{"DELETE", "/api/v1/limits/log:*", ""},
		{"POST", "/api/v1/limits/log:*/rollback", ""},
		{"DELETE", "/api/v1/counters/log:a", ""},
		{"POST", "/api/v1/blocks/log:a", `{"duration_seconds":5}`},
		{"DELETE", "/api/v1/blocks/log:a", ""},
		{"POST", "/api/v1/nodes/redis/drain", ""},
		{"DELETE", "/api/v1/nodes/redis/drain", ""},
	}
	for _, m := range mutating {
		for _, hdr := range [][]string{nil, {"Authorization", "Bearer wrong"}, {"Authorization", "s3cret"}} {
			if resp := testkit.Call(t, m.method, n.URL+m.path, m.body, nil, hdr...); resp.StatusCode != 401 {
				t.Fatalf("%s %s with %v: %d; want 401", m.method, m.path, hdr, resp.StatusCode)
			}
		}
	}
	// Nothing above took effect.
	var lim struct{ Limits []limitRecord }
	testkit.Call(t, "GET", n.URL+"/api/v1/limits", "", &lim)
	for _, l := range lim.Limits {
		if l.KeyPattern == "a:*" {
			t.Fatalf("an unauthorized POST created a limit")
		}
	}
	// Reads and checks need no token; writes work with it.
	for _, p := range []string{"/api/v1/limits", "/api/v1/nodes", "/api/v1/blocks", "/api/v1/hot-keys", "/api/v1/cluster/state", "/api/v1/counters/log:a", "/health", "/metrics"} {
		if resp := testkit.Call(t, "GET", n.URL+p, "", nil); resp.StatusCode != 200 {
			t.Fatalf("GET %s without token: %d; want 200", p, resp.StatusCode)
		}
	}
	if _, resp := check(t, n.URL, "log:a", 1); resp.StatusCode != 200 {
		t.Fatalf("check without token: %d", resp.StatusCode)
	}
	if resp := testkit.Call(t, "POST", n.URL+mutating[0].path, mutating[0].body, nil, admin...); resp.StatusCode != 201 {
		t.Fatalf("POST limit with token: %d; want 201", resp.StatusCode)
	}
	// Rolling back a creation deletes the limit; rolling back again restores it.
	for i, wantActive := range []bool{false, true} {
		if resp := testkit.Call(t, "POST", n.URL+"/api/v1/limits/a:%2A/rollback", "", nil, admin...); resp.StatusCode != 200 {
			t.Fatalf("rollback %d: %d", i, resp.StatusCode)
		}
		if r, _ := check(t, n.URL, "a:1", 1); (r.Policy == "a:*") != wantActive {
			t.Fatalf("after rollback %d the key is decided by %q; want a:* active=%v", i, r.Policy, wantActive)
		}
	}
}

func testManagementRoundTrip(t *testing.T, red backend) {
	for name, n := range apiNodes(t, red) {
		t.Run(name, func(t *testing.T) {
			// Counters: inspect without consuming, then reset.
			for i := 0; i < 4; i++ {
				check(t, n.URL, "sw:c", 1)
			}
			var c CounterView
			for i := 0; i < 2; i++ {
				testkit.Call(t, "GET", n.URL+"/api/v1/counters/sw:c", "", &c)
				if c.Used != 4 || c.Remaining != 6 || c.Algorithm != "sliding_window" || c.Policy != "sw:*" {
					t.Fatalf("counter (read %d): %+v; want used 4, remaining 6", i, c)
				}
			}
			if resp := testkit.Call(t, "DELETE", n.URL+"/api/v1/counters/sw:c", "", nil, admin...); resp.StatusCode != 200 {
				t.Fatalf("reset: %d", resp.StatusCode)
			}
			testkit.Call(t, "GET", n.URL+"/api/v1/counters/sw:c", "", &c)
			if c.Used != 0 {
				t.Fatalf("counter after reset: %+v", c)
			}

			// Blocks: a blocked key is denied with reason blocked until unblocked.
			var b BlockView
			if resp := testkit.Call(t, "POST", n.URL+"/api/v1/blocks/"+url.PathEscape("log:bad/actor"), `{"duration_seconds":30,"reason":"abuse"}`, &b, admin...); resp.StatusCode != 200 {
				t.Fatalf("block: %d", resp.StatusCode)
			}
			if b.Key != "log:bad/actor" || b.RemainingMs < 29_000 || b.Reason != "abuse" {
				t.Fatalf("block answer: %+v", b)
			}
			r, resp := check(t, n.URL, "log:bad/actor", 1)
			if resp.StatusCode != 429 || r.Reason != "blocked" || r.RetryAfterMs < 29_000 {
				t.Fatalf("check of a blocked key: %d %+v", resp.StatusCode, r)
			}
			var blocks struct{ Blocks []BlockView }
			testkit.Call(t, "GET", n.URL+"/api/v1/blocks", "", &blocks)
			if len(blocks.Blocks) != 1 || blocks.Blocks[0].Key != "log:bad/actor" {
				t.Fatalf("blocks: %+v", blocks)
			}
			testkit.Call(t, "DELETE", n.URL+"/api/v1/blocks/"+url.PathEscape("log:bad/actor"), "", nil, admin...)
			if r, _ := check(t, n.URL, "log:bad/actor", 1); !r.Allowed {
				t.Fatalf("check after unblock: %+v", r)
			}
			if resp := testkit.Call(t, "DELETE", n.URL+"/api/v1/blocks/"+url.PathEscape("log:bad/actor"), "", nil, admin...); resp.StatusCode != 404 {
				t.Fatalf("unblocking an unblocked key: %d; want 404", resp.StatusCode)
			}

			// Batch: one decision per check, in order.
			var batch struct{ Results []checkResult }
			testkit.Call(t, "POST", n.URL+"/api/v1/check/batch", `{"checks":[{"key":"tb:b","cost":5},{"key":"tb:b"},{"key":"log:b","cost":2},{"key":"unmatched-but-star"}]}`, &batch)
			if len(batch.Results) != 4 || !batch.Results[0].Allowed || batch.Results[1].Allowed || batch.Results[2].Remaining != 8 || batch.Results[3].Policy != "*" {
				t.Fatalf("batch: %+v", batch.Results)
			}

			// Hot keys: a key at its limit shows, with its denials.
			for i := 0; i < 12; i++ {
				check(t, n.URL, "log:hot", 1)
			}
			var hot struct {
				HotKeys   []HotKey `json:"hot_keys"`
				TopDenied []HotKey `json:"top_denied"`
			}
			testkit.Call(t, "GET", n.URL+"/api/v1/hot-keys", "", &hot)
			if len(hot.HotKeys) == 0 || hot.HotKeys[0].Key != "log:hot" || hot.HotKeys[0].Ratio != 1 {
				t.Fatalf("hot keys: %+v", hot)
			}
			if len(hot.TopDenied) == 0 || hot.TopDenied[0].Key != "log:hot" || hot.TopDenied[0].Denied != 2 {
				t.Fatalf("top denied: %+v", hot.TopDenied)
			}

			// Node metrics and cluster state come with no Prometheus.
			var cs ClusterState
			testkit.Call(t, "GET", n.URL+"/api/v1/cluster/state", "", &cs)
			if cs.NodeCount != 1 || cs.HealthyNodes != 1 || len(cs.Limits) != len(testLimits()) || cs.TotalKeys < 4 {
				t.Fatalf("cluster state: %+v", cs)
			}
			var m Figures
			testkit.Call(t, "GET", n.URL+"/api/v1/nodes/"+n.ID()+"/metrics", "", &m)
			if m.NodeID != n.ID() || m.ActiveKeys < 4 {
				t.Fatalf("node metrics: %+v", m)
			}
		})
	}
}

func TestNodeMetricsRolling(t *testing.T) {
	clock := testkit.NewClock()
	n := startNode(t, testConfig("roll", nil), store.NewMemoryStore(clock.Now), clock.Now)
	for i := 0; i < 30; i++ {
		check(t, n.URL, "log:m", 1) // 10 allowed, 20 denied
	}
	clock.Add(time.Second) // the figures cover complete seconds
	m := n.stats.snapshot(clock.Now())
	if m.RequestsPerSecond != round2(30.0/9) || m.AllowedRate != round2(100.0/3) || m.BlockedRate != round2(200.0/3) {
		t.Fatalf("rolling figures: %+v", m)
	}
	if m.LatencyP99Ms <= 0 || m.LatencyP50Ms > m.LatencyP99Ms {
		t.Fatalf("latency quantiles: p50 %v p99 %v", m.LatencyP50Ms, m.LatencyP99Ms)
	}
	clock.Add(20 * time.Second)
	if m := n.stats.snapshot(clock.Now()); m.RequestsPerSecond != 0 {
		t.Fatalf("figures 20s later: %+v; want an empty window", m)
	}
}

func scrape(t *testing.T, base string) string {
	t.Helper()
	resp := testkit.Call(t, "GET", base+"/metrics", "", nil)
	var sb strings.Builder
	buf := make([]byte, 1<<16)
	for {
		k, err := resp.Body.Read(buf)
		sb.Write(buf[:k])
		if err != nil {
			break
		}
	}
	return sb.String()
}

func testPrometheusMetrics(t *testing.T, red backend) {
	n := apiNodes(t, red)["redis"]
	for i := 0; i < 12; i++ {
		check(t, n.URL, "log:p", 1)
	}
	body := scrape(t, n.URL)
	id := `node_id="redis"`
	for _, want := range []string{
		`ratelimiter_requests_total{` + id + `,result="allowed"} 10`,
		`ratelimiter_requests_total{` + id + `,result="blocked"} 2`,
		`ratelimiter_redis_operations_total{` + id + `,operation="check"} `,
		`ratelimiter_active_keys{` + id + `} `,
		`ratelimiter_node_state{` + id + `,state="healthy"} 1`,
		`ratelimiter_node_state{` + id + `,state="draining"} 0`,
		`ratelimiter_request_duration_seconds_bucket{` + id + `,le="0.001"} `,
		`ratelimiter_request_duration_seconds_bucket{` + id + `,le="+Inf"} 12`,
		`ratelimiter_request_duration_seconds_count{` + id + `} 12`,
		`ratelimiter_redis_latency_seconds_bucket{` + id + `,le="+Inf"} `,
		`ratelimiter_fail_open_total{` + id + `} 0`,
		`ratelimiter_shadow_denials_total{` + id + `} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(body, "vmrange") {
		t.Errorf("/metrics uses vmrange buckets; histogram_quantile needs le")
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
}

func testDenyCacheAnswersLocally(t *testing.T, red backend) {
	n := startNode(t, exactConfig("dc", red), nil, nil)
	for i := 0; i < 15; i++ {
		check(t, n.URL, "log:dc", 1)
	}
	if got := n.metrics.localDenials.Get(); got < 4 {
		t.Fatalf("local denials = %d after 5 denied checks; want the repeats answered locally", got)
	}
	// A reset anywhere clears the cache: the key is admitted at once.
	testkit.Call(t, "DELETE", n.URL+"/api/v1/counters/log:dc", "", nil)
	if r, _ := check(t, n.URL, "log:dc", 1); !r.Allowed {
		t.Fatalf("check after reset answered from a stale cache: %+v", r)
	}
	if _, err := http.Get(n.URL + "/health"); err != nil {
		t.Fatal(err)
	}
}

// callOversized sends a body the node will refuse. The node answers 413 and
// closes the connection without reading the rest, so a client still writing
// may see the reset before the answer; a few tries on fresh connections get
// the answer itself, which is what the test asserts on.
func callOversized(t *testing.T, method, url, body string) *http.Response {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	var lastErr error
	for range 5 {
		req, err := http.NewRequest(method, url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			lastErr = err
			continue
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(data))
		return resp
	}
	t.Fatalf("%s %s with an oversized body: no answer in 5 tries: %v", method, url, lastErr)
	return nil
}
