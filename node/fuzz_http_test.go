package node

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// readmeRequests are the requests README.md shows, as method, path, query,
// body and whether the admin token goes with it: the fuzzer's seeds.
var readmeRequests = []struct {
	method, path, query, body string
	auth                      bool
}{
	{"POST", "/api/v1/check", "", `{"key":"user:42","cost":1}`, false},
	{"GET", "/api/v1/check", "key=login:bob", "", false},
	{"POST", "/api/v1/check/batch", "", `{"checks":[{"key":"user:1"},{"key":"ip:10.0.0.1","cost":2}]}`, false},
	{"POST", "/api/v1/check", "", `{"key":""}`, false},
	{"GET", "/api/v1/limits", "", "", false},
	{"POST", "/api/v1/limits", "", `{"key_pattern":"tenant:*","max_requests":500,"window_seconds":60,"algorithm":"token_bucket","burst":50}`, true},
	{"POST", "/api/v1/limits/tenant:%2A/rollback", "", "", true},
	{"DELETE", "/api/v1/limits/tenant:%2A", "", "", true},
	{"GET", "/api/v1/counters/user:42", "", "", false},
	{"DELETE", "/api/v1/counters/user:42", "", "", true},
	{"POST", "/api/v1/blocks/user:666", "", `{"duration_seconds":300,"reason":"abuse"}`, true},
	{"GET", "/api/v1/blocks", "", "", false},
	{"DELETE", "/api/v1/blocks/user:666", "", "", true},
	{"GET", "/api/v1/hot-keys", "ratio=0.8", "", false},
	{"GET", "/api/v1/nodes", "", "", false},
	{"GET", "/api/v1/nodes/fuzz/metrics", "", "", false},
	{"GET", "/api/v1/cluster/state", "", "", false},
	{"POST", "/api/v1/nodes/fuzz/drain", "", "", true},
	{"DELETE", "/api/v1/nodes/fuzz/drain", "", "", true},
	{"GET", "/health", "", "", false},
	{"GET", "/metrics", "", "", false},
	// And what once killed a node.
	{"POST", "/api/v1/check/batch", "", `{}`, false},
	{"GET", "/api/v1/hot-keys", "ratio=NaN", "", false},
	// The inputs added with forward-auth, drains and caps, at their edges.
	{"GET", "/api/v1/check", "key=a&deny_status=403", "", false},
	{"GET", "/api/v1/check", "key=a&deny_status=NaN&cost=-1", "", false},
	{"GET", "/api/v1/check", "key=a&cost=9223372036854775807", "", false},
	{"POST", "/api/v1/nodes/fuzz/drain", "", `{"by":"ops","reason":"deploy","duration_seconds":600}`, true},
	{"POST", "/api/v1/nodes/fuzz/drain", "", `{"until":"2999-01-01T00:00:00Z","duration_seconds":null}`, true},
	{"POST", "/api/v1/nodes/fuzz/drain", "", `{"duration_seconds":1e999,"by":{"a":[[[]]]}}`, true},
	{"POST", "/api/v1/nodes/fuzz/drain", "", `null`, true},
	{"POST", "/api/v1/check/batch", "", `{"checks":[[[[{"key":"a"}]]]]}`, false},
	{"POST", "/api/v1/check/batch", "", `{"checks":[{"key":"a","cost":1e308}]}`, false},
	// envoyproxy/ratelimit's POST /json (ShouldRateLimit in proto3 JSON),
	// whose per-request scratch memory is pooled: hostile counts, overrides
	// with unknown units and zero limits, nulls, nesting, NaN and -1.
	{"POST", "/json", "", `{"domain":"web","descriptors":[{"entries":[{"key":"user","value":"u1"}]}],"hits_addend":1}`, false},
	{"POST", "/json", "", `{"domain":"web","descriptors":[{"entries":[{"key":"k","value":"v"}],"limit":{"requests_per_unit":0,"unit":"SECOND"},"hits_addend":0},{"entries":[{"key":"k","value":"v"}],"limit":{"requests_per_unit":5,"unit":99}}],"hits_addend":4294967295}`, false},
	{"POST", "/json", "", `{"domain":"web","descriptors":[{"entries":[{"key":"","value":""},{"key":"a|b=c\\","value":"*"}]}]}`, false},
	{"POST", "/json", "", `{"domain":null,"descriptors":[null]}`, false},
	{"POST", "/json", "", `{"domain":"d","descriptors":[{"entries":[[[[{}]]]]}]}`, false},
	{"POST", "/json", "", `{"domain":"d","descriptors":[],"hits_addend":-1}`, false},
	{"POST", "/json", "", `{"domain":"d","hits_addend":NaN}`, false},
	{"POST", "/json", "", `null`, false},
}

// FuzzHTTP drives the node's real handler with arbitrary methods, paths,
// queries and bodies, with and without the admin token. Whatever arrives:
// nothing panics, every answer is a complete HTTP response, every 4xx is
// problem+json, the only 5xx is 503 (this node draining: the in-process
// store is never away), and the node still answers /health afterwards.
func FuzzHTTP(f *testing.F) {
	for _, r := range readmeRequests {
		f.Add(r.method, r.path, r.query, r.body, r.auth)
	}
	// Keys the node refuses since the hostile-input rounds: an Envoy
	// counter's prefix on the HTTP path, and a block's reason over 256 bytes.
	f.Add("POST", "/api/v1/check", "", `{"key":"envoy:web|user=bob"}`, false)
	f.Add("POST", "/api/v1/blocks/k1", "", `{"duration_seconds":60,"reason":"`+strings.Repeat("r", 300)+`"}`, true)
	cfg := testConfig("fuzz", nil)
	cfg.AdminToken = "s3cret"
	m := startMemNode(f, cfg)
	f.Fuzz(func(t *testing.T, method, path, query, body string, auth bool) {
		req := rawRequest(method, path, query, body, auth)
		start := time.Now()
		resp := m.raw(t, req)
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("%.300q took %s: a request must not stall the node", req, took)
		}
		checkAnswer(t, req, resp)
		health := m.raw(t, []byte("GET /health HTTP/1.1\r\nHost: node\r\n\r\n"))
		if s := health.StatusCode(); s != 200 && s != 503 {
			t.Fatalf("after %.200q: /health answered %d", req, s)
		}
		if n := m.metrics.panics.Get(); n != 0 {
			t.Fatalf("after %.200q: %d panics recovered", req, n)
		}
	})
}

// rawRequest builds one HTTP/1.1 request. The method is kept to a token and
// the target to bytes a request line may hold, so that what is fuzzed is
// the node, not fasthttp's request-line parser.
func rawRequest(method, path, query, body string, auth bool) []byte {
	m := strings.Map(func(r rune) rune {
		if r >= 'A' && r <= 'Z' {
			return r
		}
		return -1
	}, method)
	if m == "" {
		m = "GET"
	}
	target := escapeTarget(path)
	if !strings.HasPrefix(target, "/") {
		target = "/" + target
	}
	if query != "" {
		target += "?" + escapeTarget(query)
	}
	var b strings.Builder
	b.WriteString(m + " " + target + " HTTP/1.1\r\nHost: node\r\n")
	if auth {
		b.WriteString("Authorization: Bearer s3cret\r\n")
	}
	b.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	return []byte(b.String())
}

func escapeTarget(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '#' {
			b.WriteString("%" + strings.ToUpper(strconv.FormatUint(uint64(c)|0x100, 16)[1:]))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func checkAnswer(t *testing.T, req []byte, resp *fasthttp.Response) {
	t.Helper()
	status := resp.StatusCode()
	switch {
	case status >= 200 && status < 300, status == fasthttp.StatusTooManyRequests:
		return
	case status >= 400 && status < 500, status == fasthttp.StatusServiceUnavailable:
	default:
		t.Fatalf("%.300q: status %d %q; want 2xx, 4xx or 503", req, status, resp.Body())
	}
	_, target, _ := strings.Cut(string(req), " ")
	if status == fasthttp.StatusServiceUnavailable && (strings.HasPrefix(target, "/health ") || strings.HasPrefix(target, "/health?")) {
		return // the health answer is its own JSON
	}
	if ct := string(resp.Header.ContentType()); ct != "application/problem+json" {
		t.Fatalf("%.300q: status %d with Content-Type %q; want application/problem+json", req, status, ct)
	}
	if strings.HasPrefix(string(req), "HEAD ") {
		return
	}
	var p struct {
		Type   string `json:"type"`
		Status int    `json:"status"`
	}
	if err := json.Unmarshal(resp.Body(), &p); err != nil || p.Status != status || p.Type == "" {
		t.Fatalf("%.300q: status %d with problem %q (%v)", req, status, resp.Body(), err)
	}
}

// TestFuzzHarnessSeesFailures makes sure the harness is not blind: a
// request line fasthttp rejects still gets a complete problem answer, and
// HEAD answers parse.
func TestFuzzHarnessSeesFailures(t *testing.T) {
	m := startMemNode(t, testConfig("harness", nil))
	resp := m.raw(t, []byte("GET /x HTTP/1.1\r\nHost: node\r\nContent-Length: nope\r\n\r\n"))
	wantProblem(t, "bad Content-Length", resp, 400)
}
