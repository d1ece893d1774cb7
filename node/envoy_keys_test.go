package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rls "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ratelimiter/ratelimiter/internal/redistest"
	"github.com/ratelimiter/ratelimiter/limiter"
)

// TestEnvoyCounterKeysNeverCollide: two different descriptors never count
// on one counter, whatever separators (| = \) their keys and values hold.
// Before, a limit sent with the descriptor wrote its entries unescaped, so
// [a="b|c=d"] and [a=b, c=d] spent one budget, and an override in domain
// "x=y" shared the counter of a configured descriptor of domain "override".
func TestEnvoyCounterKeysNeverCollide(t *testing.T) {
	dir := envoyDir(t, `
domain: override
descriptors:
  - key: x
    value: y
    descriptors:
      - key: k
        rate_limit: {unit: hour, requests_per_unit: 1}
`)
	writeYAML(t, dir, "b.yaml", "domain: \"x=y\"\n")
	writeYAML(t, dir, "c.yaml", "domain: d\n")
	n := startLocalEnvoyNode(t, dir, nil)

	entries := func(kv ...string) *rlcommon.RateLimitDescriptor {
		d := &rlcommon.RateLimitDescriptor{}
		for i := 0; i < len(kv); i += 2 {
			d.Entries = append(d.Entries, &rlcommon.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
		}
		return d
	}
	override := func(d *rlcommon.RateLimitDescriptor) *rlcommon.RateLimitDescriptor {
		d.Limit = &rlcommon.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 1, Unit: 3} // hour: no window ends between the two requests
		return d
	}
	// Each pair: the first spends the only request of its window; the
	// second, a different descriptor, must still have its own.
	f := func(what, domainA string, a *rlcommon.RateLimitDescriptor, domainB string, b *rlcommon.RateLimitDescriptor) {
		t.Helper()
		ra, err := n.shouldRateLimit(&rls.RateLimitRequest{Domain: domainA, Descriptors: []*rlcommon.RateLimitDescriptor{a}})
		if err != nil || ra.OverallCode != rls.RateLimitResponse_OK || ra.Statuses[0].CurrentLimit == nil {
			t.Fatalf("%s: first descriptor: %v, %v; want OK under a limit", what, ra, err)
		}
		rb, err := n.shouldRateLimit(&rls.RateLimitRequest{Domain: domainB, Descriptors: []*rlcommon.RateLimitDescriptor{b}})
		if err != nil || rb.OverallCode != rls.RateLimitResponse_OK {
			t.Errorf("%s: second descriptor: %v, %v; want OK (its own counter)", what, rb, err)
		}
	}
	f("override value with | and =", "d", override(entries("a", "b|c=d")), "d", override(entries("a", "b", "c", "d")))
	f("override = in key or value", "d", override(entries("a=b", "c")), "d", override(entries("a", "b=c")))
	f("override value ending in \\", "d", override(entries("a", `b\`, "c", "d")), "d", override(entries("a", `b\|c=d`)))
	f("override against configured", "x=y", override(entries("k", `v\`)), "override", entries("x", "y", "k", "v|1/3600"))
	f("configured value with | and =", "override", entries("x", "y", "k", "a|k=b"), "override", entries("x", "y", "k", `a\|k=b`))

	// Ordinary keys stay as they were, readable: only keys holding a
	// separator changed at the upgrade.
	n.hot.min = 0
	if _, err := n.shouldRateLimit(&rls.RateLimitRequest{Domain: "d", Descriptors: []*rlcommon.RateLimitDescriptor{override(entries("user", "bob"))}}); err != nil {
		t.Fatal(err)
	}
	if n.hot.m["envoy:override|d|user=bob|1/3600"] == nil {
		t.Errorf("hot keys %v; want envoy:override|d|user=bob|1/3600 (the key before escaping)", keysOf(n.hot.m))
	}
}

func keysOf[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestEnvoyLongKeysStayOutOfHeartbeats: a counter key longer than a block
// may name (512 bytes) is not tracked as a hot key, so it costs nothing in
// the hot-key table or in heartbeats. Before, descriptors of 32 entries of
// 512-byte keys and values made 33 KB keys, and 60 of them over their
// limit made a 1.69 MB heartbeat (and could hold 330 MB in the table).
func TestEnvoyLongKeysStayOutOfHeartbeats(t *testing.T) {
	n := startLocalEnvoyNode(t, envoyDir(t, "domain: d\n"), nil)
	send := func(d *rlcommon.RateLimitDescriptor) {
		t.Helper()
		d.Limit = &rlcommon.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 1, Unit: 3} // hour
		for range 2 {                                                                          // the second is denied: the key is hot
			if _, err := n.shouldRateLimit(&rls.RateLimitRequest{Domain: "d", Descriptors: []*rlcommon.RateLimitDescriptor{d}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range 60 {
		d := &rlcommon.RateLimitDescriptor{}
		for e := range maxEnvoyEntries {
			d.Entries = append(d.Entries, &rlcommon.RateLimitDescriptor_Entry{
				Key: fmt.Sprintf("%03d%s", e, strings.Repeat("k", maxEnvoyEntryBytes-3)), Value: fmt.Sprintf("%03d%s", i, strings.Repeat("v", maxEnvoyEntryBytes-3))})
		}
		send(d)
	}
	send(desc("user=bob"))
	enc, err := json.Marshal(n.record())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("heartbeat: %d bytes, %d hot keys", len(enc), len(n.hot.m))
	if len(enc) > 16<<10 {
		t.Errorf("heartbeat of %d bytes; want at most 16 KiB", len(enc))
	}
	if len(n.hot.m) != 1 || n.hot.m["envoy:override|d|user=bob|1/3600"] == nil {
		t.Errorf("hot keys %d, with user=bob %v; want only it", len(n.hot.m), n.hot.m["envoy:override|d|user=bob|1/3600"] != nil)
	}
}

// TestEnvoyOverrideMaxUnit: a limit sent with the descriptor picks its own
// window, and so how long its counter keys live in Redis, one key per
// distinct descriptor: a YEAR limit keeps each until its year-long window ends (25,106,400 s here).
// envoy_override_max_unit bounds it; a longer unit is INVALID_ARGUMENT
// naming the setting. The default (year) keeps envoyproxy/ratelimit's
// behaviour.
func TestEnvoyOverrideMaxUnit(t *testing.T) {
	srv := redistest.Start(t)
	clock := alignedClock()
	ttl := func(n *envoyNode, unit int32, user string) (int64, error) {
		t.Helper()
		d := desc("user=" + user)
		d.Limit = &rlcommon.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 5, Unit: typev3.RateLimitUnit(unit)}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := n.rls.ShouldRateLimit(ctx, &rls.RateLimitRequest{Domain: "d", Descriptors: []*rlcommon.RateLimitDescriptor{d}}); err != nil {
			return 0, err
		}
		w := unitSeconds[rls.RateLimitResponse_RateLimit_Unit(unit)]
		secs, err := srv.DoInt("TTL", "rl:fw:envoy:override|d|user="+user+"|5/"+strconv.FormatInt(w, 10))
		if err != nil {
			t.Fatal(err)
		}
		return secs, nil
	}
	year, day := int32(rls.RateLimitResponse_RateLimit_YEAR), int32(rls.RateLimitResponse_RateLimit_DAY)

	n := startEnvoyNode(t, "ovdefault", srv, envoyDir(t, "domain: d\n"), clock, nil)
	if secs, err := ttl(n, year, "a"); err != nil || secs <= 7*86400 {
		t.Fatalf("YEAR override by default: TTL %d s, %v; want the rest of its year-long window (envoyproxy/ratelimit's behaviour)", secs, err)
	}

	n = startEnvoyNode(t, "ovday", srv, envoyDir(t, "domain: d\n"), clock, func(c *Config) { c.EnvoyOverrideMaxUnit = "day" })
	if secs, err := ttl(n, day, "b"); err != nil || secs <= 0 || secs > 86400 {
		t.Fatalf("DAY override under envoy_override_max_unit = day: TTL %d s, %v; want at most a day", secs, err)
	}
	_, err := ttl(n, year, "c")
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "envoy_override_max_unit") {
		t.Fatalf("YEAR override under envoy_override_max_unit = day: %v; want INVALID_ARGUMENT naming envoy_override_max_unit", err)
	}
	if secs, _ := srv.DoInt("EXISTS", "rl:fw:envoy:override|d|user=c|5/31536000"); secs != 0 {
		t.Errorf("the refused request made its counter key")
	}

	cfg := DefaultConfig()
	cfg.EnvoyOverrideMaxUnit = "fortnight"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "envoy_override_max_unit") {
		t.Errorf("Validate(envoy_override_max_unit = fortnight) = %v; want an error naming it", err)
	}
}

// TestLongKeysCostLittleInTheDenyCache: the deny cache remembers a key
// longer than 512 bytes by its SHA-256, so deny_cache_size (10,000) of
// Envoy's 33 KB keys hold 330 KB, not 330 MB, and a denied long key is
// still answered from the cache.
func TestLongKeysCostLittleInTheDenyCache(t *testing.T) {
	// 32 levels of 512-byte keys, any value: the longest counter key a
	// file allows.
	key := strings.Repeat("k", maxEnvoyEntryBytes)
	n := startLocalEnvoyNode(t, envoyDir(t, "domain: d\ndescriptors: "+
		strings.Repeat("[{key: "+key+", descriptors: ", maxEnvoyEntries-1)+
		"[{key: "+key+", rate_limit: {unit: hour, requests_per_unit: 1}}]"+
		strings.Repeat("}]", maxEnvoyEntries-1)+"\n"), nil)
	long := func(i int) *rls.RateLimitRequest {
		d := &rlcommon.RateLimitDescriptor{}
		for range maxEnvoyEntries {
			d.Entries = append(d.Entries, &rlcommon.RateLimitDescriptor_Entry{Key: key, Value: fmt.Sprintf("%03d%s", i, strings.Repeat("v", maxEnvoyEntryBytes-3))})
		}
		return &rls.RateLimitRequest{Domain: "d", Descriptors: []*rlcommon.RateLimitDescriptor{d}}
	}
	const keys = 100
	for i := range keys {
		for j, want := range []rls.RateLimitResponse_Code{rls.RateLimitResponse_OK, rls.RateLimitResponse_OVER_LIMIT} {
			if r, err := n.shouldRateLimit(long(i)); err != nil || r.OverallCode != want {
				t.Fatalf("descriptor %d, request %d: %v, %v; want %v", i, j+1, r, err, want)
			}
		}
	}
	n.denies.mu.RLock()
	held, entries := 0, len(n.denies.m)
	for k := range n.denies.m {
		held += len(k)
	}
	n.denies.mu.RUnlock()
	t.Logf("%d denied descriptors of 33 KB keys: %d deny-cache entries, %d bytes of keys", keys, entries, held)
	if entries != keys || held > keys*64 {
		t.Errorf("deny cache: %d entries holding %d bytes of keys; want %d entries of at most 64 bytes each", entries, held, keys)
	}
	before := n.metrics.localDenials.Get()
	if r, err := n.shouldRateLimit(long(7)); err != nil || r.OverallCode != rls.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("a denied long descriptor again: %v, %v; want OVER_LIMIT", r, err)
	}
	if got := n.metrics.localDenials.Get() - before; got != 1 {
		t.Errorf("a denied long descriptor again: %d answers from the deny cache; want 1", got)
	}
	if r, err := n.shouldRateLimit(long(keys)); err != nil || r.OverallCode != rls.RateLimitResponse_OK {
		t.Errorf("a new long descriptor: %v, %v; want OK (its own entry)", r, err)
	}
}

// TestHTTPChecksCannotSpendEnvoyCounters: an HTTP check on a key with
// Envoy's prefix is a 400 and spends nothing. Before, under an HTTP limit
// matching envoy:* (fixed_window, as descriptors count), two checks on
// envoy:web|user=bob spent bob's descriptor budget of 2.
func TestHTTPChecksCannotSpendEnvoyCounters(t *testing.T) {
	dir := envoyDir(t, "domain: web\ndescriptors:\n  - key: user\n    rate_limit: {unit: hour, requests_per_unit: 2}\n")
	n := startLocalEnvoyNode(t, dir, func(c *Config) {
		c.Limits = append(c.Limits, limiter.Limit{KeyPattern: "envoy:*", MaxRequests: 1000, WindowSeconds: 3600, Algorithm: limiter.FixedWindow})
	})
	for _, uri := range []string{"/api/v1/check?key=envoy:web%7Cuser%3Dbob", "/api/v1/check?key=envoy:x"} {
		resp, err := http.Get(n.URL + uri)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(body), "Envoy descriptor") {
			t.Errorf("GET %s: %d %s; want 400 saying the key is an Envoy descriptor's", uri, resp.StatusCode, body)
		}
	}
	resp, err := http.Post(n.URL+"/api/v1/check/batch", "application/json", strings.NewReader(`{"checks":[{"key":"envoy:web|user=bob"},{"key":"envoy:web|user=bob"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	r, err := n.shouldRateLimit(rlsRequest("web", "user=bob"))
	if err != nil || r.OverallCode != rls.RateLimitResponse_OK || r.Statuses[0].LimitRemaining != 1 {
		t.Errorf("Envoy after the HTTP checks: %v, %v; want OK with 1 of 2 left (batch answered %d)", r, err, resp.StatusCode)
	}
}

// TestOverrideDenialsStayOutOfTheDenyCache: a limit sent with the
// descriptor is compiled for its request, so a cached denial of it could
// never answer another request (the cache matches the policy too); kept,
// a flood of them evicted the denials that do. Before, 100 denied
// override descriptors left 100 entries, none of them ever used.
func TestOverrideDenialsStayOutOfTheDenyCache(t *testing.T) {
	n := startLocalEnvoyNode(t, envoyDir(t, "domain: d\n"), nil)
	before := n.metrics.localDenials.Get()
	for i := range 100 {
		d := desc(fmt.Sprintf("user=u%d", i))
		d.Limit = &rlcommon.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 1, Unit: 3} // hour
		for j, want := range []rls.RateLimitResponse_Code{rls.RateLimitResponse_OK, rls.RateLimitResponse_OVER_LIMIT, rls.RateLimitResponse_OVER_LIMIT} {
			r, err := n.shouldRateLimit(&rls.RateLimitRequest{Domain: "d", Descriptors: []*rlcommon.RateLimitDescriptor{d}})
			if err != nil || r.OverallCode != want {
				t.Fatalf("override %d, request %d: %v, %v; want %v", i, j+1, r, err, want)
			}
		}
	}
	n.denies.mu.RLock()
	entries := len(n.denies.m)
	n.denies.mu.RUnlock()
	if used := n.metrics.localDenials.Get() - before; entries != 0 || used != 0 {
		t.Errorf("after 100 denied overrides: %d deny-cache entries, %d answers from them; want 0 and 0", entries, used)
	}
}
