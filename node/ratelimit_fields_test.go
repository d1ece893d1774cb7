package node

import (
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/dunglas/httpsfv"

	"github.com/ratelimiter/ratelimiter/internal/redistest"
	"github.com/ratelimiter/ratelimiter/internal/testkit"
	"github.com/ratelimiter/ratelimiter/limiter"
	"github.com/ratelimiter/ratelimiter/node/store"
)

// fieldsLimits has one limit per algorithm, token buckets with a burst
// above and below the quota, and a shadow limit. Windows, periods and the
// clock's steps are multiples of 100 ms, so every key's Redis TTL is at
// least 100 ms of real time and none expires ahead of the test's clock.
func fieldsLimits() []limiter.Limit {
	return []limiter.Limit{
		{KeyPattern: "*", MaxRequests: 1000, WindowSeconds: 60},
		{KeyPattern: "log:*", MaxRequests: 5, WindowSeconds: 10, Algorithm: limiter.SlidingLog},
		{KeyPattern: "sw:*", MaxRequests: 5, WindowSeconds: 10, Algorithm: limiter.SlidingWindow},
		{KeyPattern: "tb:*", MaxRequests: 5, WindowSeconds: 10, Algorithm: limiter.TokenBucket, Burst: 8},
		{KeyPattern: "tbs:*", MaxRequests: 5, WindowSeconds: 10, Algorithm: limiter.TokenBucket, Burst: 3},
		{KeyPattern: "fw:*", MaxRequests: 5, WindowSeconds: 10, Algorithm: limiter.FixedWindow},
		{KeyPattern: "shadow:*", MaxRequests: 2, WindowSeconds: 10, Shadow: true},
	}
}

// sfvFields are a response's RateLimit-Policy and RateLimit, parsed with an
// independent RFC 9651 parser.
type sfvFields struct {
	name       string
	q, w, r, t int64
	burst      int64 // ratelimiter-burst, 0 when absent
	retryAfter int64 // Retry-After, -1 when absent
}

func parseFields(t *testing.T, h http.Header) sfvFields {
	t.Helper()
	item := func(field string) httpsfv.Item {
		t.Helper()
		l, err := httpsfv.UnmarshalList(h.Values(field))
		if err != nil || len(l) != 1 {
			t.Fatalf("%s %q: %v, %d members; want one item", field, h.Values(field), err, len(l))
		}
		it, ok := l[0].(httpsfv.Item)
		if !ok {
			t.Fatalf("%s %q: not an item", field, h.Values(field))
		}
		return it
	}
	integer := func(field string, it httpsfv.Item, key string, required bool) int64 {
		t.Helper()
		v, ok := it.Params.Get(key)
		if !ok && !required {
			return 0
		}
		n, isInt := v.(int64)
		if !ok || !isInt || n < 0 {
			t.Fatalf("%s: parameter %s = %v; want a non-negative integer", field, key, v)
		}
		return n
	}
	var f sfvFields
	pol := item("RateLimit-Policy")
	f.name, _ = pol.Value.(string)
	f.q, f.w = integer("RateLimit-Policy", pol, "q", true), integer("RateLimit-Policy", pol, "w", true)
	f.burst = integer("RateLimit-Policy", pol, "ratelimiter-burst", false)
	for _, k := range pol.Params.Names() {
		if k != "q" && k != "w" && k != "ratelimiter-burst" {
			t.Errorf("RateLimit-Policy has parameter %q: neither the draft's nor ours", k)
		}
	}
	rl := item("RateLimit")
	if name, _ := rl.Value.(string); name != f.name {
		t.Fatalf("RateLimit names %q, RateLimit-Policy %q", name, f.name)
	}
	f.r, f.t = integer("RateLimit", rl, "r", true), integer("RateLimit", rl, "t", true)
	f.retryAfter = -1
	if ra := h.Get("Retry-After"); ra != "" {
		var err error
		if f.retryAfter, err = strconv.ParseInt(ra, 10, 64); err != nil {
			t.Fatalf("Retry-After %q: %v", ra, err)
		}
	}
	return f
}

func TestRateLimitFields(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		clock := testkit.NewClock()
		testRateLimitFields(t, store.NewMemoryStore(clock.Now), clock)
	})
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t)
		clock := testkit.NewClock()
		rs, err := store.NewRedisStore(srv.URL(), "rl", store.TimeoutsFor(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		rs.SetClock(clock.Now)
		t.Cleanup(rs.Close)
		testRateLimitFields(t, rs, clock)
	})
}

// testRateLimitFields runs random traces on every algorithm and checks each
// answer's fields: r <= q, t <= w (2w for sliding_window, whose estimate
// counts a unit into the next window), t = Retry-After when one unit is
// denied, t = 0 at full quota, and t exact: more quota t seconds on, none
// a second earlier.
func testRateLimitFields(t *testing.T, shared store.Store, clock *testkit.Clock) {
	cfg := exactConfig("fields", nil)
	cfg.Limits = fieldsLimits()
	n := startNode(t, cfg, shared, clock.Now)
	rng := rand.New(rand.NewPCG(9, 10))
	const step = 100 * time.Millisecond
	for _, prefix := range []string{"log", "sw", "tb", "tbs", "fw"} {
		key := prefix + ":k"
		sawDenial, sawT := false, false
		for i := range 150 {
			switch rng.IntN(5) {
			case 0:
			case 1:
				clock.Add(step * time.Duration(1+rng.IntN(30)))
			default:
				clock.Add(step * time.Duration(rng.IntN(4)))
			}
			cost := int64(1)
			if rng.IntN(5) == 0 {
				cost = 2 + rng.Int64N(2)
			}
			var resp *http.Response
			if rng.IntN(2) == 0 {
				_, resp = check(t, n.URL, key, cost)
			} else {
				resp = testkit.Call(t, "GET", n.URL+"/api/v1/check?key="+url.QueryEscape(key)+"&cost="+strconv.FormatInt(cost, 10), "", nil)
			}
			f := parseFields(t, resp.Header)
			where := key + " step " + strconv.Itoa(i)
			bound := f.w
			if prefix == "sw" {
				bound = 2 * f.w
			}
			switch {
			case f.name != prefix+":*" || f.q != 5 || f.w != 10:
				t.Fatalf("%s: policy %+v; want %s:* with q=5, w=10", where, f, prefix)
			case prefix == "tb" && f.burst != 8, prefix == "tbs" && f.burst != 3, prefix != "tb" && prefix != "tbs" && f.burst != 0:
				t.Fatalf("%s: ratelimiter-burst = %d", where, f.burst)
			case f.r > f.q:
				t.Fatalf("%s: r=%d > q=%d", where, f.r, f.q)
			case f.t > bound:
				t.Fatalf("%s: t=%d > %d", where, f.t, bound)
			case f.r == f.q && f.t != 0:
				t.Fatalf("%s: r=q=%d but t=%d: no more quota can come", where, f.r, f.t)
			case resp.StatusCode == 429 && cost == 1 && f.retryAfter != f.t:
				t.Fatalf("%s: a single unit denied with Retry-After %d but t=%d", where, f.retryAfter, f.t)
			case resp.StatusCode == 429 && f.retryAfter < f.t:
				t.Fatalf("%s: Retry-After %d before more quota (t=%d)", where, f.retryAfter, f.t)
			case resp.StatusCode == 200 && f.retryAfter != -1:
				t.Fatalf("%s: Retry-After on an allowed answer", where)
			}
			sawDenial = sawDenial || resp.StatusCode == 429
			if f.t == 0 || rng.IntN(3) != 0 {
				continue
			}
			// t is exact to the second.
			sawT = true
			clock.Add(time.Duration(f.t-1) * time.Second)
			if before := peekRemaining(t, n.URL, key, f.q); before > f.r {
				t.Fatalf("%s: r=%d;t=%d, but %d units %d s later", where, f.r, f.t, before, f.t-1)
			}
			clock.Add(time.Second)
			if at := peekRemaining(t, n.URL, key, f.q); at <= f.r {
				t.Fatalf("%s: r=%d;t=%d, but still %d units %d s later", where, f.r, f.t, at, f.t)
			}
		}
		if !sawDenial || !sawT {
			t.Errorf("%s: the trace saw a denial %v and checked t %v; want both", key, sawDenial, sawT)
		}
	}
}

// peekRemaining reads a key's units left without taking any, as r shows
// them (at most q).
func peekRemaining(t *testing.T, base, key string, q int64) int64 {
	t.Helper()
	var c CounterView
	testkit.Call(t, "GET", base+"/api/v1/counters/"+url.PathEscape(key), "", &c)
	return min(c.Remaining, q)
}

func TestRateLimitFieldsShadowAndFailOpen(t *testing.T) {
	shadowChecks := func(n *testNode) []*http.Response {
		var out []*http.Response
		for range 3 {
			_, r := check(t, n.URL, "shadow:s", 1)
			if r.StatusCode != 200 {
				t.Fatalf("shadow check: %d; want 200", r.StatusCode)
			}
			out = append(out, r)
		}
		return out
	}
	cfg := testConfig("hide", nil)
	cfg.Limits = fieldsLimits()
	for i, r := range shadowChecks(startNode(t, cfg, nil, nil)) {
		if r.Header.Get("RateLimit-Policy") != "" || r.Header.Get("RateLimit") != "" {
			t.Errorf("shadow check %d advertises %q %q; want nothing without advertise_shadow", i, r.Header.Get("RateLimit-Policy"), r.Header.Get("RateLimit"))
		}
	}
	cfg = testConfig("show", nil)
	cfg.Limits, cfg.AdvertiseShadow = fieldsLimits(), true
	rs := shadowChecks(startNode(t, cfg, nil, nil))
	if f := parseFields(t, rs[2].Header); f.name != "shadow:*" || f.q != 2 || f.r != 0 || f.t == 0 {
		t.Errorf("third shadow check with advertise_shadow: %+v; want r=0 of q=2 and a t", f)
	}

	// Fail-open knows nothing of the key: the policy, and no claim on it.
	cfg = testConfig("open", nil)
	cfg.Limits, cfg.RedisURL, cfg.FailureMode = fieldsLimits(), "redis://"+freeAddr(t), limiter.FailOpen
	n := startNode(t, cfg, nil, nil)
	var body checkResult
	resp := testkit.Call(t, "POST", n.URL+"/api/v1/check", `{"key":"fw:x"}`, &body)
	if resp.StatusCode != 200 || body.Reason != reasonFailOpen {
		t.Fatalf("check with Redis away: %d %+v; want 200 fail_open", resp.StatusCode, body)
	}
	if resp.Header.Get("RateLimit-Policy") != `"fw:*";q=5;w=10` || resp.Header.Get("RateLimit") != "" {
		t.Errorf("fail-open answer: RateLimit-Policy %q, RateLimit %q; want the policy and no RateLimit",
			resp.Header.Get("RateLimit-Policy"), resp.Header.Get("RateLimit"))
	}
}

// freeAddr is a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	port, err := testkit.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return "127.0.0.1:" + strconv.Itoa(port)
}
