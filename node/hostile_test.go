package node

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/ratelimiter/ratelimiter/config"
)

// wantProblem fails unless resp is status with an RFC 9457 body.
func wantProblem(t testing.TB, what string, resp *fasthttp.Response, status int) {
	t.Helper()
	if resp.StatusCode() != status {
		t.Fatalf("%s: status %d %q; want %d", what, resp.StatusCode(), resp.Body(), status)
	}
	if ct := string(resp.Header.ContentType()); ct != "application/problem+json" {
		t.Fatalf("%s: Content-Type %q; want application/problem+json", what, ct)
	}
	var p struct {
		Type   string `json:"type"`
		Status int    `json:"status"`
		Detail string `json:"detail"`
	}
	if err := json.Unmarshal(resp.Body(), &p); err != nil || p.Status != status || p.Type == "" || p.Detail == "" {
		t.Fatalf("%s: problem body %q (%v); want type, status %d and detail", what, resp.Body(), err, status)
	}
}

// TestHostileRequestsAnswer4xx sends what once killed a node, and more of
// its kind: each gets a problem answer and the node keeps deciding.
func TestHostileRequestsAnswer4xx(t *testing.T) {
	cfg := testConfig("hostile", nil)
	m := startMemNode(t, cfg)
	f := func(method, uri, body string, want int) {
		t.Helper()
		wantProblem(t, method+" "+uri+" "+body, m.do(t, method, uri, body), want)
	}
	f("POST", "/api/v1/check/batch", `{}`, 400)
	f("POST", "/api/v1/check/batch", `{"checks":null}`, 400)
	f("POST", "/api/v1/check/batch", `{"checks":{}}`, 400)
	f("POST", "/api/v1/check/batch", `{"checks":[null]}`, 400)
	f("POST", "/api/v1/check/batch", `[]`, 400)
	f("POST", "/api/v1/check/batch", `null`, 400)
	f("POST", "/api/v1/check/batch", `{"checks":[`+strings.Repeat(`{"key":"a"},`, cfg.MaxBatch)+`{"key":"a"}]}`, 400)
	for _, r := range []string{"NaN", "nan", "-NaN", "Inf", "+Inf", "-Inf", "0", "-0", "1.0000001", "1e309", "0x1p-2x"} {
		f("GET", "/api/v1/hot-keys?ratio="+r, "", 400)
	}
	f("GET", "/api/v1/hot-keys?limit=1e3", "", 400)
	if resp := m.do(t, "GET", "/api/v1/hot-keys?ratio=0x1p-1", "", nil...); resp.StatusCode() != 200 {
		t.Fatalf("hot-keys?ratio=0x1p-1 (0.5): %d %q; want 200", resp.StatusCode(), resp.Body())
	}
	resp := m.do(t, "POST", "/api/v1/check", `{"key":"log:a"}`)
	if resp.StatusCode() != 200 {
		t.Fatalf("check after hostile input: %d %q; want 200", resp.StatusCode(), resp.Body())
	}
}

// TestPanicAnswers500AndServes breaks a broken invariant on purpose: a
// handler that panics answers 500 problem+json, the panic is counted, and
// the next request is served.
func TestPanicAnswers500AndServes(t *testing.T) {
	m := startMemNode(t, testConfig("panicky", nil))
	st := m.state.Load()
	m.state.Store(nil) // every check now dereferences nil
	wantProblem(t, "check with no state", m.do(t, "POST", "/api/v1/check", `{"key":"log:a"}`), 500)
	wantProblem(t, "again", m.do(t, "GET", "/api/v1/check?key=log:a", ""), 500)
	m.state.Store(st)
	if resp := m.do(t, "POST", "/api/v1/check", `{"key":"log:a"}`); resp.StatusCode() != 200 {
		t.Fatalf("check after the panics: %d %q; want 200", resp.StatusCode(), resp.Body())
	}
	metrics := string(m.do(t, "GET", "/metrics", "").Body())
	if !strings.Contains(metrics, `ratelimiter_panics_total{node_id="panicky"} 2`) {
		t.Fatalf("/metrics lacks ratelimiter_panics_total 2:\n%s", metrics)
	}
}

// TestMaxCost: a limit's max_cost (default: its capacity) bounds the cost
// of one request; a larger one is a 400 naming it, and decides nothing.
func TestMaxCost(t *testing.T) {
	m := startMemNode(t, testConfig("maxcost", nil))
	resp := m.do(t, "POST", "/api/v1/limits", `{"key_pattern":"mc:*","max_requests":1000,"window_seconds":60,"max_cost":10}`)
	if resp.StatusCode() != 201 || !strings.Contains(string(resp.Body()), `"max_cost":10`) {
		t.Fatalf("POST limit with max_cost: %d %s; want 201 echoing max_cost", resp.StatusCode(), resp.Body())
	}
	resp = m.do(t, "POST", "/api/v1/check", `{"key":"mc:a","cost":11}`)
	wantProblem(t, "cost 11 over max_cost 10", resp, 400)
	if !strings.Contains(string(resp.Body()), "max_cost 10") {
		t.Fatalf("problem %s does not name max_cost 10", resp.Body())
	}
	if resp = m.do(t, "POST", "/api/v1/check", `{"key":"mc:a","cost":10}`); resp.StatusCode() != 200 || !strings.Contains(string(resp.Body()), `"remaining":990`) {
		t.Fatalf("cost 10: %d %s; want 200 with 990 remaining (the refused request decided nothing)", resp.StatusCode(), resp.Body())
	}
	// The default is the capacity.
	wantProblem(t, "cost over the capacity", m.do(t, "POST", "/api/v1/check", `{"key":"log:a","cost":11}`), 400)
	// max_cost above the capacity is a bad limit.
	wantProblem(t, "max_cost over capacity", m.do(t, "POST", "/api/v1/limits", `{"key_pattern":"mc2:*","max_requests":5,"window_seconds":60,"max_cost":6}`), 400)
	wantProblem(t, "negative max_cost", m.do(t, "POST", "/api/v1/limits", `{"key_pattern":"mc2:*","max_requests":5,"window_seconds":60,"max_cost":-1}`), 400)
}

// TestCaps: limits and blocks created through the API stop at their caps
// with a 409 problem; hot-key tracking evicts at its cap.
func TestCaps(t *testing.T) {
	cfg := testConfig("caps", nil)
	cfg.MaxLimits = len(cfg.Limits) + 1
	cfg.MaxBlocks = 2
	m := startMemNode(t, cfg)
	if resp := m.do(t, "POST", "/api/v1/limits", `{"key_pattern":"c1:*","max_requests":5,"window_seconds":60}`); resp.StatusCode() != 201 {
		t.Fatalf("limit under the cap: %d %s", resp.StatusCode(), resp.Body())
	}
	wantProblem(t, "limit over max_limits", m.do(t, "POST", "/api/v1/limits", `{"key_pattern":"c2:*","max_requests":5,"window_seconds":60}`), 409)
	if resp := m.do(t, "POST", "/api/v1/limits", `{"key_pattern":"c1:*","max_requests":6,"window_seconds":60}`); resp.StatusCode() != 200 {
		t.Fatalf("updating a limit at the cap: %d %s; want 200", resp.StatusCode(), resp.Body())
	}
	if resp := m.do(t, "DELETE", "/api/v1/limits/c1:%2A", ""); resp.StatusCode() != 200 {
		t.Fatalf("delete: %d %s", resp.StatusCode(), resp.Body())
	}
	if resp := m.do(t, "POST", "/api/v1/limits", `{"key_pattern":"c2:*","max_requests":5,"window_seconds":60}`); resp.StatusCode() != 201 {
		t.Fatalf("limit after a delete freed room: %d %s", resp.StatusCode(), resp.Body())
	}
	for _, k := range []string{"b1", "b2"} {
		if resp := m.do(t, "POST", "/api/v1/blocks/"+k, `{"duration_seconds":60}`); resp.StatusCode() != 200 {
			t.Fatalf("block %s: %d %s", k, resp.StatusCode(), resp.Body())
		}
	}
	wantProblem(t, "block over max_blocks", m.do(t, "POST", "/api/v1/blocks/b3", `{"duration_seconds":60}`), 409)
	// A block's reason is bounded as a drain's: 300 blocks with 60 KiB
	// reasons held 49 MiB on the node, and made a block's POST take 130 ms
	// and a sync 100 ms; max_blocks of them would be about 6 GiB.
	wantProblem(t, "block reason over 256 bytes", m.do(t, "POST", "/api/v1/blocks/b1", `{"duration_seconds":60,"reason":"`+strings.Repeat("r", 257)+`"}`), 400)
	if resp := m.do(t, "POST", "/api/v1/blocks/b1", `{"duration_seconds":60,"reason":"`+strings.Repeat("r", 256)+`"}`); resp.StatusCode() != 200 {
		t.Fatalf("block with a 256-byte reason: %d %s; want 200", resp.StatusCode(), resp.Body())
	}
	if resp := m.do(t, "POST", "/api/v1/blocks/b1", `{"duration_seconds":120}`); resp.StatusCode() != 200 {
		t.Fatalf("extending a block at the cap: %d %s; want 200", resp.StatusCode(), resp.Body())
	}

	h := newHotKeys(3, 0.5, 10e6)
	p := m.state.Load().policies["log:*"]
	for i := range 10 {
		h.record([]byte("hot"+strconv.Itoa(i)), p, 0, true, 1)
	}
	if len(h.m) != 3 || h.m["hot9"] == nil {
		t.Fatalf("hot keys at cap 3 after 10 keys: %d entries, newest tracked %v; want 3 with hot9", len(h.m), h.m["hot9"] != nil)
	}
}

// TestMaxCostFromTOML: max_cost is a [[limits]] setting; a bad one is
// reported with its TOML path and line.
func TestMaxCostFromTOML(t *testing.T) {
	good := "[[limits]]\nkey_pattern = \"up:*\"\nmax_requests = 100\nwindow_seconds = 60\nmax_cost = 5\n"
	fc := nodeFile{Node: DefaultConfig()}
	if err := config.Decode("c.toml", []byte(good), &fc); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if got := compile(fc.Limits[0], "open").CostLimit(); got != 5 {
		t.Fatalf("max_cost from TOML: cost limit %d; want 5", got)
	}
	bad := strings.Replace(good, "max_cost = 5", "max_cost = 101", 1)
	fc = nodeFile{Node: DefaultConfig()}
	err := config.Decode("c.toml", []byte(bad), &fc)
	if err == nil || !strings.Contains(err.Error(), "c.toml:5: limits[0].max_cost") {
		t.Fatalf("Decode(max_cost above max_requests) = %v; want c.toml:5: limits[0].max_cost", err)
	}
}
