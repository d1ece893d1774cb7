package node

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/redistest"
	"github.com/ratelimiter/ratelimiter/internal/testkit"
)

// These tests break things for real: a node process killed or terminated,
// a node drained through another, a redis-server killed under traffic and
// started again, a node started before its Redis.

// Bounds the issue sets.
const (
	unhealthyBound = 5 * time.Second        // a dead node reported unhealthy
	outageP99Bound = 100 * time.Millisecond // check latency while Redis is down, redis_timeout 50 ms
	recoveryBound  = 2 * time.Second        // from Redis answering to decisions from Redis
)

func testKilledNodeTurnsUnhealthy(t *testing.T, red backend) {
	a := startNode(t, testConfig("a", red), nil, nil)
	k := startChild(t, testConfig("k", red))
	testkit.WaitFor(t, 5*time.Second, "node k healthy in a's registry", func() bool {
		nodes, _, err := tryNodes(a.URL)
		return err == nil && nodes["k"].State == stateHealthy
	})
	if r, status, err := tryCheck(k.URL, "kill:1"); err != nil || status != http.StatusOK {
		t.Fatalf("check on k before the kill = %d %+v %v; want 200", status, r, err)
	}

	start := time.Now()
	if err := k.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var last apiNode
	took := testkit.PollSince(start, unhealthyBound, 20*time.Millisecond, func() bool {
		nodes, _, err := tryNodes(a.URL)
		last = nodes["k"]
		return err == nil && last.State == stateUnhealthy
	})
	if took < 0 {
		t.Fatalf("killed node k not reported unhealthy by a within %v; last entry %+v", unhealthyBound, last)
	}
	t.Logf("SIGKILLed node reported unhealthy after %v (heartbeat age %d ms)", took.Round(time.Millisecond), last.HeartbeatAgeMs)
	if last.HeartbeatAgeMs < testConfig("", nil).UnhealthyAfter.Milliseconds() {
		t.Errorf("k unhealthy with heartbeat_age_ms %d; want at least unhealthy_after", last.HeartbeatAgeMs)
	}
	if _, _, _, err := send("GET", k.URL+"/health", ""); err == nil {
		t.Errorf("k still answers /health after SIGKILL")
	}
}

func testTerminatedNodeDeregisters(t *testing.T, red backend) {
	a := startNode(t, testConfig("a", red), nil, nil)
	k := startChild(t, testConfig("k", red))
	testkit.WaitFor(t, 5*time.Second, "node k healthy in a's registry", func() bool {
		nodes, _, err := tryNodes(a.URL)
		return err == nil && nodes["k"].State == stateHealthy
	})

	start := time.Now()
	if err := k.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- k.cmd.Wait() }()
	var nodes map[string]apiNode
	took := testkit.PollSince(start, 3*time.Second, 10*time.Millisecond, func() bool {
		var err error
		nodes, _, err = tryNodes(a.URL)
		_, present := nodes["k"]
		return err == nil && !present
	})
	// The process exits after deregistering (a -race binary sleeps 1 s at
	// exit, so its exit time says little).
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("k after SIGTERM: %v; want a clean exit", err)
		}
	case <-time.After(10 * time.Second):
		_ = k.cmd.Process.Kill()
		<-exited
		t.Errorf("k did not exit within 10s of SIGTERM")
	}
	if took < 0 {
		t.Fatalf("k still in a's registry 3s after SIGTERM: %+v", nodes["k"])
	}
	t.Logf("SIGTERMed node gone from the registry after %v", took.Round(time.Millisecond))
	// Now that the process is gone, no late heartbeat can still put it back.
	for range 4 {
		time.Sleep(50 * time.Millisecond)
		if nodes, _, err := tryNodes(a.URL); err == nil {
			if n, present := nodes["k"]; present {
				t.Fatalf("k is back in a's registry after deregistering: %+v", n)
			}
		}
	}
}

func testDrainThroughAnotherNode(t *testing.T, red backend) {
	a := startNode(t, testConfig("a", red), nil, nil)
	b := startNode(t, testConfig("b", red), nil, nil)

	var info apiNode
	start := time.Now()
	mustCall(t, "POST", a.URL+"/api/v1/nodes/b/drain", "", http.StatusOK, &info)
	if info.ID != "b" || !info.Draining {
		t.Errorf("POST /api/v1/nodes/b/drain answered %+v; want b draining", info)
	}
	took := testkit.PollSince(start, 3*time.Second, 5*time.Millisecond, func() bool {
		_, status, err := tryCheck(b.URL, "drain:1")
		return err == nil && status == http.StatusServiceUnavailable
	})
	if took < 0 || took >= propagationBound {
		t.Fatalf("b answered checks with 503 after %v; want within %v of the drain", took, propagationBound)
	}
	t.Logf("drain through a applied on b after %v", took.Round(time.Millisecond))

	isProblem := func(what string, status int, hdr http.Header, body []byte) {
		t.Helper()
		if status != http.StatusServiceUnavailable {
			t.Errorf("%s on drained b = %d; want 503", what, status)
		}
		if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
			t.Errorf("%s on drained b: Content-Type %q; want application/problem+json", what, ct)
		}
		var p struct {
			Type   string `json:"type"`
			Status int    `json:"status"`
		}
		if err := json.Unmarshal(body, &p); err != nil || !strings.HasSuffix(p.Type, "temporary-reduced-capacity") || p.Status != http.StatusServiceUnavailable {
			t.Errorf("%s on drained b: body %s (%v); want a 503 problem whose type ends in temporary-reduced-capacity", what, body, err)
		}
	}
	status, hdr, body, err := send("POST", b.URL+"/api/v1/check", `{"key":"drain:1"}`)
	if err != nil {
		t.Fatal(err)
	}
	isProblem("POST /api/v1/check", status, hdr, body)
	if status, hdr, body, err = send("POST", b.URL+"/api/v1/check/batch", `{"checks":[{"key":"drain:1"}]}`); err != nil {
		t.Fatal(err)
	}
	isProblem("POST /api/v1/check/batch", status, hdr, body)
	var h struct {
		State string `json:"state"`
	}
	if resp := testkit.Call(t, "GET", b.URL+"/health", "", &h); resp.StatusCode != http.StatusServiceUnavailable || h.State != stateDraining {
		t.Errorf("GET /health on drained b = %d %q; want 503 draining", resp.StatusCode, h.State)
	}
	if resp := testkit.Call(t, "GET", a.URL+"/health", "", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /health on a = %d; want 200: only b drains", resp.StatusCode)
	}
	if _, resp := check(t, a.URL, "drain:1", 1); resp.StatusCode != http.StatusOK {
		t.Errorf("check on a = %d; want 200: only b drains", resp.StatusCode)
	}
	if nodes, _, err := tryNodes(a.URL); err != nil || nodes["b"].State != stateDraining || !nodes["b"].Draining {
		t.Errorf("a's registry shows b as %+v (%v); want draining", nodes["b"], err)
	}

	start = time.Now()
	mustCall(t, "DELETE", a.URL+"/api/v1/nodes/b/drain", "", http.StatusOK, &info)
	took = testkit.PollSince(start, 3*time.Second, 5*time.Millisecond, func() bool {
		_, status, err := tryCheck(b.URL, "drain:1")
		hs, _, _, herr := send("GET", b.URL+"/health", "")
		return err == nil && status == http.StatusOK && herr == nil && hs == http.StatusOK
	})
	if took < 0 || took >= propagationBound {
		t.Fatalf("b answered checks and /health with 200 after %v; want within %v of the drain's end", took, propagationBound)
	}
	t.Logf("end of drain through a applied on b after %v", took.Round(time.Millisecond))
	if nodes, _, err := tryNodes(a.URL); err != nil || nodes["b"].State != stateHealthy || nodes["b"].Draining {
		t.Errorf("a's registry shows b as %+v (%v) after the drain's end; want healthy", nodes["b"], err)
	}
}

// outageSample is one check made by the load of TestRedisOutage.
type outageSample struct {
	start, end time.Time
	closed     bool // under "closed:*" (fails closed), else under "*" (fails open)
	status     int
	reason     string
	err        error
}

func TestRedisOutage(t *testing.T) {
	srv := redistest.Start(t)
	cfg := testConfig("a", srv)
	if cfg.RedisTimeout.Duration != 50*time.Millisecond {
		t.Fatalf("redis_timeout = %v; this test assumes the default 50ms", cfg.RedisTimeout.Duration)
	}
	n := startNode(t, cfg, nil, nil)
	closeConnsFirst(t)

	// A bounded pool sends checks, each on a fresh key so no key ever
	// reaches its limit and every answer shows where the decision came from.
	const (
		workers   = 4
		perWorker = 2000
		loadLimit = 15 * time.Second
	)
	samples := make([][]outageSample, workers)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	begin := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				select {
				case <-stop:
					return
				default:
				}
				if time.Since(begin) > loadLimit {
					return
				}
				s := outageSample{closed: i%2 == 1}
				key := fmt.Sprintf("open:%d-%d", w, i)
				if s.closed {
					key = fmt.Sprintf("closed:%d-%d", w, i)
				}
				s.start = time.Now()
				r, status, err := tryCheck(n.URL, key)
				s.end = time.Now()
				s.status, s.reason, s.err = status, r.Reason, err
				samples[w] = append(samples[w], s)
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopLoad)

	time.Sleep(300 * time.Millisecond)
	killAt := time.Now()
	srv.Kill()
	downFrom := time.Now()

	var self apiNode
	var source string
	disconnected := testkit.PollSince(downFrom, 5*time.Second, 20*time.Millisecond, func() bool {
		nodes, src, err := tryNodes(n.URL)
		self, source = nodes["a"], src
		return err == nil && self.ID == "a" && !self.RedisConnected
	})
	if disconnected < 0 {
		t.Errorf("a still reports redis_connected for itself 5s into the outage: %+v (source %q)", self, source)
	}
	time.Sleep(time.Until(downFrom.Add(1500 * time.Millisecond)))
	downUntil := time.Now()
	srv.Restart(t)
	upAt := time.Now()

	// Two figures, each for a state that held 250 ms: reconnected, when the
	// node is back on the store (redis_connected, no failure-mode answers);
	// recovered, when its decisions are Redis's under the configured limits.
	var lastCheck checkResult
	var lastStatus int
	var lastErr error
	var backSince time.Time
	reconnected := time.Duration(-1)
	probe := 0
	recovered := stableFor(upAt, 2*recoveryBound, 250*time.Millisecond, func() bool {
		probe++
		lastCheck, lastStatus, lastErr = tryCheck(n.URL, fmt.Sprintf("closed:recover-%d", probe))
		nodes, src, err := tryNodes(n.URL)
		self, source = nodes["a"], src
		back := lastErr == nil && err == nil && src == "store" && self.RedisConnected &&
			lastCheck.Reason != reasonFailOpen && lastCheck.Reason != reasonFailClosed
		switch {
		case !back:
			backSince = time.Time{}
		case backSince.IsZero():
			backSince = time.Now()
		case reconnected < 0 && time.Since(backSince) >= 250*time.Millisecond:
			reconnected = backSince.Sub(upAt)
		}
		return back && lastStatus == http.StatusOK && lastCheck.Reason == reasonWithin && lastCheck.Policy == "closed:*"
	})
	recoveredAt := time.Now()
	if recovered >= 0 && (reconnected < 0 || recovered < reconnected) {
		reconnected = recovered // recovered implies reconnected
	}
	time.Sleep(200 * time.Millisecond) // some traffic after recovery
	stopLoad()

	// Every check made while Redis was down.
	var down, before, after []outageSample
	for _, ws := range samples {
		for _, s := range ws {
			switch {
			case s.end.Before(killAt):
				before = append(before, s)
			case !s.start.Before(downFrom) && !s.end.After(downUntil):
				down = append(down, s)
			case recovered >= 0 && s.start.After(recoveredAt):
				after = append(after, s)
			}
		}
	}
	if len(before) < 20 || len(down) < 100 {
		t.Fatalf("only %d checks before and %d during the outage; the load did not run", len(before), len(down))
	}
	healthy := make([]time.Duration, 0, len(before))
	for _, s := range before {
		if s.err != nil || s.status != http.StatusOK || s.reason != reasonWithin {
			t.Fatalf("check before the outage = %d %q %v; want 200 within_limit", s.status, s.reason, s.err)
		}
		healthy = append(healthy, s.end.Sub(s.start))
	}
	lat := make([]time.Duration, 0, len(down))
	wrong := map[string]int{}
	for _, s := range down {
		lat = append(lat, s.end.Sub(s.start))
		want, wantStatus := reasonFailOpen, http.StatusOK
		if s.closed {
			want, wantStatus = reasonFailClosed, http.StatusTooManyRequests
		}
		if s.err != nil || s.status != wantStatus || s.reason != want {
			wrong[fmt.Sprintf("closed=%v: got %d %q %v; want %d %q", s.closed, s.status, s.reason, s.err, wantStatus, want)]++
		}
	}
	for w, k := range wrong {
		t.Errorf("%d checks during the outage: %s", k, w)
	}
	// The healthy phase's p99 is logged for comparison: when it is high
	// too, the machine rather than the outage is slow.
	t.Logf("outage: %d checks in %v, latency p50 %v p99 %v max %v (before the outage: %d checks, p99 %v); redis_connected false after %v",
		len(down), downUntil.Sub(downFrom).Round(time.Millisecond), quantileOf(lat, 0.50), quantileOf(lat, 0.99), quantileOf(lat, 1),
		len(healthy), quantileOf(healthy, 0.99), figure(disconnected, 5*time.Second))
	if p99 := quantileOf(lat, 0.99); p99 > outageP99Bound {
		t.Errorf("p99 check latency while Redis was down = %v; want <= %v with redis_timeout %v", p99, outageP99Bound, cfg.RedisTimeout.Duration)
	}

	t.Logf("time from Redis answering again: to reconnected %s, to decisions under the configured limits %s",
		figure(reconnected, 2*recoveryBound), figure(recovered, 2*recoveryBound))
	if reconnected < 0 || reconnected > recoveryBound {
		t.Errorf("time to reconnect: %s; want within %v", figure(reconnected, 2*recoveryBound), recoveryBound)
	}
	if recovered < 0 || recovered > recoveryBound {
		t.Fatalf("time to decisions under the configured limits: %s; want within %v of Redis answering again; last probe %d %+v %v, registry entry %+v (source %q), %d live limits on the node",
			figure(recovered, 2*recoveryBound), recoveryBound, lastStatus, lastCheck, lastErr, self, source, len(limitsOn(t, n.URL, false)))
	}
	for _, s := range after {
		if s.err != nil || s.status != http.StatusOK || s.reason != reasonWithin {
			t.Fatalf("check after recovery (closed=%v) = %d %q %v; want 200 within_limit", s.closed, s.status, s.reason, s.err)
		}
	}
	// Denials come from Redis again too.
	for i := range 11 {
		r, resp := check(t, n.URL, "closed:after", 1)
		want, wantStatus := reasonWithin, http.StatusOK
		if i == 10 {
			want, wantStatus = reasonLimit, http.StatusTooManyRequests
		}
		if resp.StatusCode != wantStatus || r.Reason != want {
			t.Fatalf("check %d of closed:after after recovery = %d %q; want %d %q", i+1, resp.StatusCode, r.Reason, wantStatus, want)
		}
	}
}

func TestNodeStartsWithRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	srv.Kill()
	n := startNode(t, testConfig("a", srv), nil, nil)

	if r, resp := check(t, n.URL, "open:1", 1); resp.StatusCode != http.StatusOK || r.Reason != reasonFailOpen {
		t.Errorf("check under a fail-open limit with Redis down = %d %q; want 200 %q", resp.StatusCode, r.Reason, reasonFailOpen)
	}
	if r, resp := check(t, n.URL, "closed:1", 1); resp.StatusCode != http.StatusTooManyRequests || r.Reason != reasonFailClosed || r.Policy != "closed:*" {
		t.Errorf("check under %q with Redis down = %d %q policy %q; want 429 %q", "closed:*", resp.StatusCode, r.Reason, r.Policy, reasonFailClosed)
	}
	if nodes, src, err := tryNodes(n.URL); err != nil || nodes["a"].RedisConnected || src != "peers" {
		t.Errorf("registry with Redis down = %+v source %q (%v); want a with redis_connected false, from peers", nodes, src, err)
	}

	srv.Restart(t)
	up := time.Now()
	var self apiNode
	var source, reason string
	probe := 0
	joined := stableFor(up, 2*recoveryBound, 250*time.Millisecond, func() bool {
		probe++
		r, status, err := tryCheck(n.URL, fmt.Sprintf("closed:join-%d", probe))
		reason = r.Reason
		if err != nil || status != http.StatusOK || r.Reason != reasonWithin {
			return false
		}
		nodes, src, err := tryNodes(n.URL)
		self, source = nodes["a"], src
		return err == nil && src == "store" && self.State == stateHealthy && self.RedisConnected
	})
	if joined < 0 || joined > recoveryBound {
		t.Fatalf("time from Redis appearing to the node joining: %s; want within %v (last reason %q, registry entry %+v, source %q)", figure(joined, 2*recoveryBound), recoveryBound, reason, self, source)
	}
	t.Logf("node started without Redis joined %s after Redis appeared", figure(joined, 2*recoveryBound))
	if l := limitsOn(t, n.URL, false)["closed:*"]; l.Source != "config" || l.CreatedAt.IsZero() {
		t.Errorf("config limit after joining = %+v; want it seeded into the store", l)
	}
}

// quantileOf returns the q-quantile (nearest rank) of d, which it sorts.
func quantileOf(d []time.Duration, q float64) time.Duration {
	slices.Sort(d)
	i := int(math.Ceil(q*float64(len(d)))) - 1
	return d[max(0, min(len(d)-1, i))].Round(10 * time.Microsecond)
}

// stableFor polls cond every 20ms until it has held on every poll for hold,
// and returns when, after start, that streak began; -1 when no such streak
// ends by start+timeout. A single success is not enough after a store
// restart: the first decisions may succeed before the next sync changes
// what the node knows.
func stableFor(start time.Time, timeout, hold time.Duration, cond func() bool) time.Duration {
	var streak time.Time
	for time.Since(start) <= timeout {
		now := time.Now()
		switch {
		case !cond():
			streak = time.Time{}
		case streak.IsZero():
			streak = now
		case now.Sub(streak) >= hold:
			return streak.Sub(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return -1
}

// figure formats a measured time, or says that none was measured.
func figure(d, limit time.Duration) string {
	if d < 0 {
		return fmt.Sprintf("never (waited %v)", limit)
	}
	return d.Round(time.Millisecond).String()
}
