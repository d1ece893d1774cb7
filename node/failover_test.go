package node

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/redistest"
	"github.com/ratelimiter/ratelimiter/internal/testkit"
)

// These tests SIGKILL a Redis master (or a Sentinel-managed primary) under
// traffic and measure what the issue bounds: every check is answered; the
// checks answered by failure mode instead of Redis all fall in one window
// after the kill; after the promotion the nodes decide exactly again,
// without a restart.

// failoverBound is how long after a master's SIGKILL checks may be answered
// by failure mode. On the tests' cluster (cluster-node-timeout 1 s) the
// replica is promoted 2-3 s after the kill; the client then needs up to one
// topology refresh (rueidis waits up to 1 s) to follow it.
const failoverBound = 3*redistest.ClusterNodeTimeout + 3*time.Second

// answerP99Bound bounds check latency during a failover: every call to
// Redis is cut at redis_timeout (50 ms), so a dead master costs bounded
// latency, never seconds.
const answerP99Bound = 100 * time.Millisecond

// failoverLoad is a bounded pool of clients sending checks round-robin to
// nodes over keys spread across every master, each on a key far from its
// limit, so every answer is "within" unless it came from failure mode.
type failoverLoad struct {
	samples [][]outageSample
	health  map[string][]healthSample // by node id
	stop    chan struct{}
	wg      sync.WaitGroup
}

// healthSample is what a node said of its store at one moment.
type healthSample struct {
	at        time.Time
	connected bool
}

func startFailoverLoad(nodes []*testNode) *failoverLoad {
	const (
		workers   = 4
		perWorker = 10_000
		keys      = 3000
		pace      = 2 * time.Millisecond
		hardLimit = 30 * time.Second
	)
	l := &failoverLoad{samples: make([][]outageSample, workers), health: map[string][]healthSample{}, stop: make(chan struct{})}
	begin := time.Now()
	l.wg.Add(1)
	go l.watchHealth(nodes, begin.Add(hardLimit))
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := range perWorker {
				select {
				case <-l.stop:
					return
				default:
				}
				if time.Since(begin) > hardLimit {
					return
				}
				s := outageSample{start: time.Now()}
				r, status, err := tryCheck(nodes[(w+i)%len(nodes)].URL, fmt.Sprintf("fo:%d", (w*perWorker+i)%keys))
				s.end, s.status, s.reason, s.err = time.Now(), status, r.Reason, err
				l.samples[w] = append(l.samples[w], s)
				time.Sleep(pace)
			}
		}()
	}
	return l
}

// watchHealth polls every node's /health until the load stops.
func (l *failoverLoad) watchHealth(nodes []*testNode, until time.Time) {
	defer l.wg.Done()
	for time.Now().Before(until) {
		select {
		case <-l.stop:
			return
		case <-time.After(25 * time.Millisecond):
		}
		for _, n := range nodes {
			var h health
			status, _, data, err := send("GET", n.URL+"/health", "")
			if err == nil && status == http.StatusOK && json.Unmarshal(data, &h) == nil {
				l.health[n.ID()] = append(l.health[n.ID()], healthSample{time.Now(), h.RedisConnected})
			}
		}
	}
}

// disconnections returns, per node, the spans (from the kill) in which it
// reported its store disconnected.
func (l *failoverLoad) disconnections(killAt time.Time) map[string][][2]time.Duration {
	out := map[string][][2]time.Duration{}
	for id, hs := range l.health {
		var spans [][2]time.Duration
		for i, h := range hs {
			at := h.at.Sub(killAt)
			switch {
			case h.connected:
			case i > 0 && !hs[i-1].connected:
				spans[len(spans)-1][1] = at
			default:
				spans = append(spans, [2]time.Duration{at, at})
			}
		}
		out[id] = spans
	}
	return out
}

// finish stops the load and returns every sample, by start time.
func (l *failoverLoad) finish() []outageSample {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
	var all []outageSample
	for _, ws := range l.samples {
		all = append(all, ws...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].start.Before(all[j].start) })
	return all
}

// correct is an answer decided by Redis.
func (s outageSample) correct() bool {
	return s.err == nil && s.status == http.StatusOK && s.reason == reasonWithin
}

// failoverReport is what a failover cost the clients.
type failoverReport struct {
	checks, wrong, unanswered int
	firstWrong, lastWrong     time.Duration // after the kill; -1 when none
	p99, max                  time.Duration // latency of the checks in the window
}

func (r failoverReport) window() time.Duration {
	if r.lastWrong < 0 {
		return 0
	}
	return r.lastWrong - r.firstWrong
}

func (r failoverReport) String() string {
	return fmt.Sprintf("%d checks; %d not decided by Redis (%d unanswered), from %v to %v after the fault (window %v); latency in the window p99 %v max %v",
		r.checks, r.wrong, r.unanswered, r.firstWrong.Round(time.Millisecond), r.lastWrong.Round(time.Millisecond),
		r.window().Round(time.Millisecond), r.p99, r.max)
}

// reportFailover sums up samples around a kill at killAt. A check counts
// from the moment it was sent.
func reportFailover(t *testing.T, samples []outageSample, killAt time.Time) failoverReport {
	t.Helper()
	r := failoverReport{firstWrong: -1, lastWrong: -1}
	var lat []time.Duration
	for _, s := range samples {
		if s.end.Before(killAt) {
			if !s.correct() {
				t.Errorf("check before the kill = %d %q %v; want 200 %q", s.status, s.reason, s.err, reasonWithin)
			}
			continue
		}
		r.checks++
		if s.correct() {
			continue
		}
		r.wrong++
		if s.err != nil || (s.status != http.StatusOK && s.status != http.StatusTooManyRequests) {
			r.unanswered++
		}
		at := max(s.start.Sub(killAt), 0)
		if r.firstWrong < 0 {
			r.firstWrong = at
		}
		r.lastWrong = max(r.lastWrong, at)
	}
	for _, s := range samples {
		at := s.start.Sub(killAt)
		if r.firstWrong >= 0 && at >= r.firstWrong && at <= r.lastWrong {
			lat = append(lat, s.end.Sub(s.start))
		}
	}
	if len(lat) > 0 {
		r.p99, r.max = quantileOf(lat, 0.99), quantileOf(lat, 1)
	}
	return r
}

// checkFailover bounds a failover's report: every check answered, none by
// failure mode later than bound after the kill, latency bounded meanwhile.
func checkFailover(t *testing.T, r failoverReport, bound time.Duration) {
	t.Helper()
	if r.unanswered != 0 {
		t.Errorf("%d checks unanswered during the failover; want every check answered (by Redis or by failure mode)", r.unanswered)
	}
	if r.lastWrong > bound {
		t.Errorf("last check not decided by Redis %v after the kill; want within %v", r.lastWrong, bound)
	}
	if r.p99 > answerP99Bound {
		t.Errorf("p99 check latency during the failover = %v; want <= %v", r.p99, answerP99Bound)
	}
}

// checkDisconnections insists that each node reported its store
// disconnected in one span only, inside the failover window, and connected
// otherwise: what an operator watching redis_connected sees.
func checkDisconnections(t *testing.T, l *failoverLoad, killAt time.Time, nodes []*testNode, bound time.Duration) {
	t.Helper()
	spans := l.disconnections(killAt)
	var figures []string
	for _, n := range nodes {
		s := spans[n.ID()]
		figures = append(figures, fmt.Sprintf("%s %v", n.ID(), s))
		if len(l.health[n.ID()]) < 20 {
			t.Errorf("node %s: only %d health samples", n.ID(), len(l.health[n.ID()]))
			continue
		}
		if len(s) != 1 {
			t.Errorf("node %s reported its store disconnected in %d spans %v; want one, for the outage", n.ID(), len(s), s)
			continue
		}
		if s[0][0] < 0 || s[0][1] > bound {
			t.Errorf("node %s reported its store disconnected from %v to %v after the kill; want within [0, %v]", n.ID(), s[0][0], s[0][1], bound)
		}
	}
	t.Logf("redis_connected=false spans after the kill (25 ms polls): %s", strings.Join(figures, ", "))
}

// waitDecidingAgain waits until checks through every node have been decided
// by Redis for a whole second, and returns when that began after since.
func waitDecidingAgain(t *testing.T, nodes []*testNode, since time.Time, bound time.Duration) time.Duration {
	t.Helper()
	probe := 0
	took := stableFor(since, 2*bound, time.Second, func() bool {
		for _, n := range nodes {
			probe++
			r, status, err := tryCheck(n.URL, fmt.Sprintf("fo:probe-%d", probe))
			if err != nil || status != http.StatusOK || r.Reason != reasonWithin {
				return false
			}
		}
		return true
	})
	if took < 0 {
		t.Fatalf("nodes not deciding by Redis again %v after the kill", 2*bound)
	}
	return took
}

// expectExact sends 3×limit checks of key round-robin through nodes and
// insists that exactly limit are admitted, each with one less remaining.
func expectExact(t *testing.T, nodes []*testNode, key string, limit int64) {
	t.Helper()
	admitted, last := int64(0), limit
	for i := range 3 * limit {
		n := nodes[int(i)%len(nodes)]
		r, resp := check(t, n.URL, key, 1)
		switch {
		case r.Allowed && r.Reason == reasonWithin && r.Remaining == last-1:
			admitted++
			last = r.Remaining
		case !r.Allowed && resp.StatusCode == http.StatusTooManyRequests && r.Reason == reasonLimit:
		default:
			t.Errorf("check %d of %s on %s = %d %+v; want a decision by Redis with remaining %d or a denial", i+1, key, n.ID(), resp.StatusCode, r, last-1)
		}
	}
	if admitted != limit {
		t.Errorf("%s: %d of %d checks over %d nodes admitted; want exactly %d", key, admitted, 3*limit, len(nodes), limit)
	}
}

// expectConnected insists that every node reports itself and the others
// healthy and connected, from the store.
func expectConnected(t *testing.T, nodes []*testNode) {
	t.Helper()
	for _, n := range nodes {
		testkit.WaitFor(t, 3*time.Second, "registry on "+n.ID()+" all healthy and connected", func() bool {
			view, src, err := tryNodes(n.URL)
			if err != nil || src != "store" || len(view) != len(nodes) {
				return false
			}
			for _, v := range view {
				if v.State != stateHealthy || !v.RedisConnected {
					return false
				}
			}
			return true
		})
	}
}

// testClusterFailover kills, under traffic, the master of the registry's
// slot (which serves a third of the data keys too) or a master of data keys
// only, and bounds the outage the clients see.
func testClusterFailover(t *testing.T, c *redistest.Cluster, registry bool) {
	nodes := []*testNode{
		startNode(t, testConfig("a", asNodeUser{c}), nil, nil),
		startNode(t, testConfig("b", asNodeUser{c}), nil, nil),
		startNode(t, testConfig("c", asNodeUser{c}), nil, nil),
	}
	closeConnsFirst(t)
	expectConnected(t, nodes)
	victim := c.MasterFor(t, "{rl}")
	if !registry {
		for _, m := range c.Masters(t) {
			if m != victim {
				victim = m
				break
			}
		}
	}
	heir := c.ReplicaOf(t, victim)
	if heir == nil {
		t.Fatalf("master %s has no replica", victim.Addr)
	}
	// A key of the dying master, to prove exact decisions on its heir.
	key := ""
	for i := 0; key == ""; i++ {
		if k := fmt.Sprintf("log:fo-%d", i); c.MasterFor(t, "rl:sl:"+k) == victim {
			key = k
		}
	}

	load := startFailoverLoad(nodes)
	t.Cleanup(func() { load.finish() })
	time.Sleep(500 * time.Millisecond)
	killAt := time.Now()
	victim.Kill()
	back := waitDecidingAgain(t, nodes, killAt, failoverBound)
	time.Sleep(500 * time.Millisecond) // traffic after recovery
	r := reportFailover(t, load.finish(), killAt)
	t.Logf("SIGKILL of master %s (registry slot: %v): %s; every node deciding by Redis again (stable 1 s) %v after the kill",
		victim.Addr, registry, r, back.Round(time.Millisecond))
	checkFailover(t, r, failoverBound)
	checkDisconnections(t, load, killAt, nodes, failoverBound)
	if got := c.MasterFor(t, "rl:sl:"+key); got != heir {
		t.Fatalf("after the failover %s is served by %s; want the promoted replica %s", key, got.Addr, heir.Addr)
	}
	expectExact(t, nodes, key, 10)
	expectConnected(t, nodes)

	// Put the cluster back to full strength for the next test.
	victim.Restart(t)
	addNodeUser(t, victim)
	c.WaitOK(t, 20*time.Second)
}
