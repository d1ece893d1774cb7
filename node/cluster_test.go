package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/testkit"
)

// These tests run several nodes on one real redis-server and check what the
// cluster promises: changes made through any node reach every node within a
// second, limit history survives restarts, one key's limit holds across
// nodes under concurrency, and node clocks never enter a decision.

// propagationBound is how soon a change made through one node must apply on
// the others.
const propagationBound = time.Second

// apiLimit is one entry of GET /api/v1/limits as a client reads it; it is
// deliberately not the node's own type, so a renamed field fails the test.
type apiLimit struct {
	KeyPattern    string    `json:"key_pattern"`
	MaxRequests   int64     `json:"max_requests"`
	WindowSeconds int64     `json:"window_seconds"`
	Algorithm     string    `json:"algorithm"`
	Source        string    `json:"source"`
	Deleted       bool      `json:"deleted"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	Previous      *apiLimit `json:"previous"`
}

// apiNode is one entry of GET /api/v1/nodes as a client reads it.
type apiNode struct {
	ID             string    `json:"id"`
	State          string    `json:"state"`
	RedisConnected bool      `json:"redis_connected"`
	Draining       bool      `json:"draining"`
	HeartbeatAgeMs int64     `json:"heartbeat_age_ms"`
	StartedAt      time.Time `json:"started_at"`
}

// apiCounter is GET /api/v1/counters/{key}.
type apiCounter struct {
	Policy    string `json:"policy"`
	Limit     int64  `json:"limit"`
	Used      int64  `json:"used"`
	Remaining int64  `json:"remaining"`
}

// testHTTP is the client of the load and polling goroutines: enough idle
// connections per node for 64 workers, and a timeout so nothing hangs.
var testHTTP = &http.Client{
	Timeout:   10 * time.Second,
	Transport: &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 64, IdleConnTimeout: 5 * time.Second},
}

// send is call without t: safe in any goroutine.
func send(method, url, body string) (int, http.Header, []byte, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	resp, err := testHTTP.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, data, err
}

// tryCheck is check without t: safe in any goroutine.
func tryCheck(base, key string) (checkResult, int, error) {
	var r checkResult
	body, _ := json.Marshal(map[string]any{"key": key, "cost": 1})
	status, _, data, err := send("POST", base+"/api/v1/check", string(body))
	if err != nil {
		return r, 0, err
	}
	if status == http.StatusOK || status == http.StatusTooManyRequests {
		if err := json.Unmarshal(data, &r); err != nil {
			return r, status, fmt.Errorf("cannot decode check answer %q: %w", data, err)
		}
	}
	return r, status, nil
}

// limitsOn reads GET /api/v1/limits (with deleted ones when asked) by pattern.
func limitsOn(t *testing.T, base string, deleted bool) map[string]apiLimit {
	t.Helper()
	var out struct {
		Limits []apiLimit `json:"limits"`
	}
	u := base + "/api/v1/limits"
	if deleted {
		u += "?deleted=true"
	}
	if resp := testkit.Call(t, "GET", u, "", &out); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %d; want 200", u, resp.StatusCode)
	}
	m := make(map[string]apiLimit, len(out.Limits))
	for _, l := range out.Limits {
		m[l.KeyPattern] = l
	}
	return m
}

// tryNodes reads GET /api/v1/nodes without t.
func tryNodes(base string) (map[string]apiNode, string, error) {
	status, _, data, err := send("GET", base+"/api/v1/nodes", "")
	if err != nil {
		return nil, "", err
	}
	if status != http.StatusOK {
		return nil, "", fmt.Errorf("GET /api/v1/nodes = %d: %s", status, data)
	}
	var out struct {
		Nodes  []apiNode `json:"nodes"`
		Source string    `json:"source"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, "", err
	}
	m := make(map[string]apiNode, len(out.Nodes))
	for _, n := range out.Nodes {
		m[n.ID] = n
	}
	return m, out.Source, nil
}

func counterOn(t *testing.T, base, key string) apiCounter {
	t.Helper()
	var c apiCounter
	u := base + "/api/v1/counters/" + url.PathEscape(key)
	if resp := testkit.Call(t, "GET", u, "", &c); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %d; want 200", u, resp.StatusCode)
	}
	return c
}

// closeConnsFirst closes the load's idle connections before the nodes
// registered so far stop: a node's graceful shutdown waits for connections
// that never carried a request, which 64 concurrent clients leave behind.
func closeConnsFirst(t *testing.T) { t.Cleanup(testHTTP.CloseIdleConnections) }

// mustCall sends a management request and insists on its status.
func mustCall(t *testing.T, method, url, body string, want int, out any) {
	t.Helper()
	resp := testkit.Call(t, method, url, body, out)
	if resp.StatusCode != want {
		data, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s %s = %d (%s); want %d", method, url, resp.StatusCode, data, want)
	}
}

// expectApplied polls cond on every node in parallel from start, fails the
// test unless each node satisfied it within propagationBound, and logs the
// measured times.
func expectApplied(t *testing.T, what string, start time.Time, nodes []*testNode, cond func(base string) bool) {
	t.Helper()
	took := make([]time.Duration, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			took[i] = testkit.PollSince(start, 3*propagationBound, 5*time.Millisecond, func() bool { return cond(n.URL) })
		}()
	}
	wg.Wait()
	var figures []string
	for i, n := range nodes {
		switch {
		case took[i] < 0:
			t.Errorf("%s: not applied on node %s within %v", what, n.ID(), 3*propagationBound)
		case took[i] >= propagationBound:
			t.Errorf("%s: applied on node %s after %v; want < %v", what, n.ID(), took[i], propagationBound)
		}
		figures = append(figures, n.ID()+"="+figure(took[i], 3*propagationBound))
	}
	t.Logf("propagation of %s: %s", what, strings.Join(figures, " "))
}

func testClusterPropagation(t *testing.T, red backend) {
	a := startNode(t, exactConfig("a", red), nil, nil)
	b := startNode(t, exactConfig("b", red), nil, nil)
	c := startNode(t, exactConfig("c", red), nil, nil)
	others := []*testNode{b, c}

	policyIs := func(key, policy string, limit int64) func(string) bool {
		return func(base string) bool {
			r, _, err := tryCheck(base, key)
			return err == nil && r.Policy == policy && r.Limit == limit
		}
	}

	// Limits: created, changed, deleted through a.
	start := time.Now()
	mustCall(t, "POST", a.URL+"/api/v1/limits", `{"key_pattern":"prop:*","max_requests":500,"window_seconds":60}`, http.StatusCreated, nil)
	expectApplied(t, "a new limit", start, others, policyIs("prop:1", "prop:*", 500))

	start = time.Now()
	mustCall(t, "POST", a.URL+"/api/v1/limits", `{"key_pattern":"prop:*","max_requests":600,"window_seconds":60}`, http.StatusOK, nil)
	expectApplied(t, "a changed limit", start, others, policyIs("prop:2", "prop:*", 600))

	start = time.Now()
	mustCall(t, "DELETE", a.URL+"/api/v1/limits/"+url.PathEscape("prop:*"), "", http.StatusOK, nil)
	expectApplied(t, "a deleted limit", start, others, policyIs("prop:3", "*", 1000))

	// Blocks.
	for _, n := range others {
		if r, status, err := tryCheck(n.URL, "blk:1"); err != nil || status != http.StatusOK {
			t.Fatalf("check blk:1 on %s before the block = %d %+v %v; want 200", n.ID(), status, r, err)
		}
	}
	start = time.Now()
	mustCall(t, "POST", a.URL+"/api/v1/blocks/blk:1", `{"duration_seconds":60,"reason":"propagation test"}`, http.StatusOK, nil)
	expectApplied(t, "a block", start, others, func(base string) bool {
		r, status, err := tryCheck(base, "blk:1")
		return err == nil && status == http.StatusTooManyRequests && r.Reason == reasonBlocked
	})
	start = time.Now()
	mustCall(t, "DELETE", a.URL+"/api/v1/blocks/blk:1", "", http.StatusOK, nil)
	expectApplied(t, "an unblock", start, others, func(base string) bool {
		r, status, err := tryCheck(base, "blk:1")
		return err == nil && status == http.StatusOK && r.Reason == reasonWithin
	})

	// Counter resets: b and c remember the denial locally until told.
	for i := range 10 {
		if r, _ := check(t, a.URL, "log:reset", 1); !r.Allowed {
			t.Fatalf("check %d of log:reset on a denied (%+v); want the first 10 allowed", i+1, r)
		}
	}
	for _, n := range others {
		if r, _ := check(t, n.URL, "log:reset", 1); r.Allowed || r.Reason != reasonLimit {
			t.Fatalf("check 11 of log:reset on %s = %+v; want denied with reason limit", n.ID(), r)
		}
	}
	start = time.Now()
	mustCall(t, "DELETE", a.URL+"/api/v1/counters/log:reset", "", http.StatusOK, nil)
	expectApplied(t, "a counter reset", start, others, func(base string) bool {
		r, status, err := tryCheck(base, "log:reset")
		return err == nil && status == http.StatusOK && r.Reason == reasonWithin
	})

	// Drains of b and c, requested through a, and their end.
	answers := func(want int) func(string) bool {
		return func(base string) bool {
			_, status, err := tryCheck(base, "drain:probe")
			return err == nil && status == want
		}
	}
	start = time.Now()
	for _, n := range others {
		mustCall(t, "POST", a.URL+"/api/v1/nodes/"+n.ID()+"/drain", "", http.StatusOK, nil)
	}
	expectApplied(t, "a drain", start, others, answers(http.StatusServiceUnavailable))
	if _, status, err := tryCheck(a.URL, "drain:probe"); err != nil || status != http.StatusOK {
		t.Errorf("check on a while b and c drain = %d, %v; want 200: a was not drained", status, err)
	}
	start = time.Now()
	for _, n := range others {
		mustCall(t, "DELETE", a.URL+"/api/v1/nodes/"+n.ID()+"/drain", "", http.StatusOK, nil)
	}
	expectApplied(t, "the end of a drain", start, others, answers(http.StatusOK))
}

func testLimitHistoryAndRollback(t *testing.T, red backend) {
	a := startNode(t, exactConfig("a", red), nil, nil)
	b := startNode(t, exactConfig("b", red), nil, nil)
	const pattern = "fw:*"

	orig, ok := limitsOn(t, a.URL, false)[pattern]
	if !ok {
		t.Fatalf("GET /api/v1/limits has no %q from the config", pattern)
	}
	if orig.CreatedAt.IsZero() || orig.UpdatedAt.IsZero() {
		t.Fatalf("config limit %q: created_at=%v updated_at=%v; want both set", pattern, orig.CreatedAt, orig.UpdatedAt)
	}
	if orig.MaxRequests != 10 || orig.Source != "config" || orig.Previous == nil || !orig.Previous.Deleted {
		t.Fatalf("config limit %q = %+v; want max_requests 10 from config, its previous version \"absent\"", pattern, orig)
	}

	// A change keeps created_at, moves updated_at and remembers the old values.
	var changed apiLimit
	mustCall(t, "POST", a.URL+"/api/v1/limits", `{"key_pattern":"fw:*","max_requests":20,"window_seconds":10,"algorithm":"fixed_window"}`, http.StatusOK, &changed)
	verify := func(where string, got apiLimit) {
		t.Helper()
		if got.MaxRequests != 20 || got.Source != "api" {
			t.Errorf("%s: %q = max_requests %d source %q; want 20 from api", where, pattern, got.MaxRequests, got.Source)
		}
		if !got.CreatedAt.Equal(orig.CreatedAt) {
			t.Errorf("%s: created_at = %v; want it kept at %v", where, got.CreatedAt, orig.CreatedAt)
		}
		if !got.UpdatedAt.After(orig.UpdatedAt) {
			t.Errorf("%s: updated_at = %v; want after %v", where, got.UpdatedAt, orig.UpdatedAt)
		}
		p := got.Previous
		if p == nil {
			t.Fatalf("%s: previous is missing after a change", where)
		}
		if p.MaxRequests != 10 || p.Source != "config" || p.Algorithm != "fixed_window" || !p.UpdatedAt.Equal(orig.UpdatedAt) || !p.CreatedAt.Equal(orig.CreatedAt) {
			t.Errorf("%s: previous = %+v; want the old version %+v", where, *p, orig)
		}
		if p.Previous != nil {
			t.Errorf("%s: previous has its own previous; want one level of history", where)
		}
	}
	verify("POST answer", changed)
	verify("GET on a", limitsOn(t, a.URL, false)[pattern])
	testkit.WaitFor(t, propagationBound, "the change on b", func() bool { return limitsOn(t, b.URL, false)[pattern].MaxRequests == 20 })
	verify("GET on b", limitsOn(t, b.URL, false)[pattern])
	if r, _ := check(t, b.URL, "fw:hist", 1); r.Policy != pattern || r.Limit != 20 {
		t.Errorf("check on b after the change = policy %q limit %d; want %q 20", r.Policy, r.Limit, pattern)
	}

	// Rollback restores the previous version, and keeps the undone one.
	var rolled apiLimit
	mustCall(t, "POST", a.URL+"/api/v1/limits/"+url.PathEscape(pattern)+"/rollback", "", http.StatusOK, &rolled)
	for where, got := range map[string]apiLimit{"rollback answer": rolled, "GET on a after rollback": limitsOn(t, a.URL, false)[pattern]} {
		if got.MaxRequests != 10 || got.Deleted {
			t.Errorf("%s: %q = max_requests %d deleted %v; want 10 restored", where, pattern, got.MaxRequests, got.Deleted)
		}
		if !got.CreatedAt.Equal(orig.CreatedAt) || !got.UpdatedAt.After(changed.UpdatedAt) {
			t.Errorf("%s: created_at %v updated_at %v; want created_at %v and updated_at after %v", where, got.CreatedAt, got.UpdatedAt, orig.CreatedAt, changed.UpdatedAt)
		}
		if got.Previous == nil || got.Previous.MaxRequests != 20 {
			t.Errorf("%s: previous = %+v; want the rolled-back version with max_requests 20", where, got.Previous)
		}
	}
	start := time.Now()
	expectApplied(t, "a rollback", start, []*testNode{b}, func(base string) bool {
		// Polls before the rollback arrives may fill the key: any decision
		// under the restored limit counts.
		r, _, err := tryCheck(base, "fw:hist2")
		return err == nil && r.Policy == pattern && r.Limit == 10
	})
}

func testLimitChangesSurviveRestart(t *testing.T, red backend) {
	first := startNode(t, exactConfig("a", red), nil, nil)
	// An API change to one config limit and an API delete of another.
	mustCall(t, "POST", first.URL+"/api/v1/limits", `{"key_pattern":"log:*","max_requests":3,"window_seconds":10,"algorithm":"sliding_log"}`, http.StatusOK, nil)
	mustCall(t, "DELETE", first.URL+"/api/v1/limits/"+url.PathEscape("sw:*"), "", http.StatusOK, nil)
	first.stop()

	// The same config file again, on the same Redis.
	second := startNode(t, exactConfig("a", red), nil, nil)
	live := limitsOn(t, second.URL, false)
	if l := live["log:*"]; l.MaxRequests != 3 || l.Source != "api" {
		t.Errorf("after restart %q = max_requests %d source %q; want the API's 3, not the file's 10", "log:*", l.MaxRequests, l.Source)
	}
	if _, ok := live["sw:*"]; ok {
		t.Errorf("after restart %q is live again; want it to stay deleted", "sw:*")
	}
	if l := live["fw:*"]; l.MaxRequests != 10 || l.Source != "config" {
		t.Errorf("after restart untouched %q = max_requests %d source %q; want 10 from config", "fw:*", l.MaxRequests, l.Source)
	}
	if l, ok := limitsOn(t, second.URL, true)["sw:*"]; !ok || !l.Deleted {
		t.Errorf("GET /api/v1/limits?deleted=true after restart: %q = %+v (present %v); want it marked deleted", "sw:*", l, ok)
	}

	// And the decisions follow the store, not the file.
	for i := range 5 {
		r, _ := check(t, second.URL, "log:restart", 1)
		if want := i < 3; r.Allowed != want || r.Policy != "log:*" {
			t.Errorf("check %d of log:restart = allowed %v policy %q; want %v under %q", i+1, r.Allowed, r.Policy, want, "log:*")
		}
	}
	if r, _ := check(t, second.URL, "sw:restart", 1); r.Policy != "*" {
		t.Errorf("check of sw:restart = policy %q; want %q since %q stays deleted", r.Policy, "*", "sw:*")
	}
}

// concurrently runs clients goroutines that make requests calls of one in
// all, one(w) being a call by client w, within 20 s; a client whose call
// returns false stops. It returns when every client has.
func concurrently(clients int, requests int64, one func(w int) bool) {
	var next atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(20 * time.Second)
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= requests && time.Now().Before(deadline) {
				if !one(w) {
					return
				}
			}
		}()
	}
	wg.Wait()
}

func testConcurrentClientsAdmitExactlyTheLimit(t *testing.T, red backend) {
	const (
		limit    = 50
		clients  = 64
		requests = 20 * limit
		key      = "race:one"
	)
	// This test is about one count shared by three nodes, not about slow
	// stores: a generous redis_timeout keeps a busy machine (-race, few
	// cores, a stalled VM) from turning late answers into fail-open
	// admissions, which TestRedisOutage covers.
	cfg := func(id string) Config {
		c := testConfig(id, red)
		c.RedisTimeout.Duration = 5 * time.Second
		return c
	}
	nodes := []*testNode{
		startNode(t, cfg("a"), nil, nil),
		startNode(t, cfg("b"), nil, nil),
		startNode(t, cfg("c"), nil, nil),
	}
	closeConnsFirst(t)
	mustCall(t, "POST", nodes[0].URL+"/api/v1/limits",
		fmt.Sprintf(`{"key_pattern":"race:*","max_requests":%d,"window_seconds":60,"algorithm":"sliding_log"}`, limit), http.StatusCreated, nil)
	for _, n := range nodes {
		testkit.WaitFor(t, propagationBound, "race:* on node "+n.ID(), func() bool {
			c := counterOn(t, n.URL, "race:probe")
			return c.Policy == "race:*" && c.Limit == limit
		})
	}

	var allowed, denied atomic.Int64
	var errs sync.Map
	concurrently(clients, requests, func(w int) bool {
		r, status, err := tryCheck(nodes[w%len(nodes)].URL, key)
		switch {
		case err != nil:
			errs.Store(w, err)
			return false
		case status == http.StatusOK && r.Allowed && r.Reason == reasonWithin:
			allowed.Add(1)
		case status == http.StatusTooManyRequests && !r.Allowed && r.Reason == reasonLimit:
			denied.Add(1)
		default:
			errs.Store(w, fmt.Errorf("unexpected answer %d %+v", status, r))
			return false
		}
		return true
	})
	errs.Range(func(k, v any) bool { t.Errorf("client %v: %v", k, v); return true })
	if got := allowed.Load(); got != limit {
		t.Errorf("%d clients on %d nodes: %d of %d checks allowed; want exactly %d", clients, len(nodes), got, allowed.Load()+denied.Load(), limit)
	}
	if got := allowed.Load() + denied.Load(); got != requests {
		t.Errorf("%d checks answered; want all %d within the time bound", got, requests)
	}
	for _, n := range nodes {
		if c := counterOn(t, n.URL, key); c.Remaining != 0 || c.Used != limit {
			t.Errorf("counter of %s on %s = used %d remaining %d; want %d and 0", key, n.ID(), c.Used, c.Remaining, limit)
		}
	}
}

// testClockSkew runs two nodes whose clocks disagree by 30 s, more than any
// window under test: if either node's clock entered a decision, the shared
// key would admit up to twice its limit.
func testClockSkew(t *testing.T, red backend) {
	a := startNode(t, exactConfig("a", red), nil, nil)
	b := startNode(t, exactConfig("b", red), nil, func() time.Time { return time.Now().Add(30 * time.Second) })
	rc := red.Client(t)
	// The skew is real: b stamps its own start with its clock.
	nodes, _, err := tryNodes(a.URL)
	if skew := nodes["b"].StartedAt.Sub(nodes["a"].StartedAt); err != nil || skew < 29*time.Second {
		t.Fatalf("b started %v after a by their clocks (%v); want about 30s", skew, err)
	}

	for _, key := range []string{"fw:skew", "log:skew"} {
		t.Run(key, func(t *testing.T) {
			if strings.HasPrefix(key, "fw:") {
				// Stay inside one fixed window (10 s, aligned on Redis time)
				// for the whole subtest.
				ts, err := rc.Do(context.Background(), rc.B().Time().Build()).AsStrSlice()
				if err != nil || len(ts) != 2 {
					t.Fatalf("redis TIME: %v %v", ts, err)
				}
				sec, err1 := strconv.ParseInt(ts[0], 10, 64)
				usec, err2 := strconv.ParseInt(ts[1], 10, 64)
				if err1 != nil || err2 != nil {
					t.Fatalf("redis TIME = %q", ts)
				}
				if left := 10e6 - (sec*1e6+usec)%10e6; left < 2e6 {
					time.Sleep(time.Duration(left)*time.Microsecond + 50*time.Millisecond)
				}
			}
			nodes := []*testNode{a, b}
			var admitted int
			last := int64(10)
			for i := range 30 {
				n := nodes[i%2]
				r, resp := check(t, n.URL, key, 1)
				if r.Allowed {
					admitted++
					if r.Remaining != last-1 {
						t.Errorf("check %d on %s: remaining %d; want %d (one count shared by both nodes)", i+1, n.ID(), r.Remaining, last-1)
					}
					last = r.Remaining
				} else if resp.StatusCode != http.StatusTooManyRequests || r.Reason != reasonLimit {
					t.Errorf("check %d on %s = %d %+v; want 429 with reason limit", i+1, n.ID(), resp.StatusCode, r)
				}
				if i == 3 {
					ca, cb := counterOn(t, a.URL, key), counterOn(t, b.URL, key)
					if ca != cb || ca.Remaining != 6 {
						t.Errorf("after 4 checks: counter on a = %+v, on b = %+v; want both remaining 6", ca, cb)
					}
				}
			}
			if admitted != 10 {
				t.Errorf("%s: %d of 30 checks admitted over nodes 30 s apart; want exactly the limit 10", key, admitted)
			}
			ca, cb := counterOn(t, a.URL, key), counterOn(t, b.URL, key)
			if ca != cb || ca.Remaining != 0 || ca.Used != 10 {
				t.Errorf("at the end: counter on a = %+v, on b = %+v; want both used 10, remaining 0", ca, cb)
			}
		})
	}
}
