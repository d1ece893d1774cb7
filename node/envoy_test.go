package node

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rls "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/ratelimiter/ratelimiter/internal/redistest"
	"github.com/ratelimiter/ratelimiter/internal/testkit"
	"github.com/ratelimiter/ratelimiter/node/store"
)

// envoyNode is a node serving gRPC on a real Redis, its store and node
// clock both the test's clock, so windows are where the test puts them.
type envoyNode struct {
	*testNode
	rls  rls.RateLimitServiceClient
	conn *grpc.ClientConn
	dir  string
}

// startEnvoyNode starts a node on srv with the descriptor files of dir.
// edit adjusts the config before the node starts.
func startEnvoyNode(t *testing.T, id string, srv *redistest.Server, dir string, clock *testkit.Clock, edit func(*Config)) *envoyNode {
	t.Helper()
	cfg := exactConfig(id, srv)
	cfg.GRPCListen = "127.0.0.1:0"
	cfg.EnvoyConfigDir = dir
	if edit != nil {
		edit(&cfg)
	}
	shared, err := store.NewRedisStore(cfg.RedisURL, cfg.RedisPrefix, store.TimeoutsFor(cfg.RedisTimeout.Duration))
	if err != nil {
		t.Fatal(err)
	}
	shared.SetClock(clock.Now)
	t.Cleanup(shared.Close)
	n := startNode(t, cfg, shared, clock.Now)
	conn := dialGRPC(t, n.GRPCAddr())
	return &envoyNode{testNode: n, rls: rls.NewRateLimitServiceClient(conn), conn: conn, dir: dir}
}

// envoyDir is a fresh directory holding one descriptor file, a.yaml.
func envoyDir(t *testing.T, content string) string {
	t.Helper()
	dir := t.TempDir()
	writeYAML(t, dir, "a.yaml", content)
	return dir
}

// dialGRPC connects to a node's gRPC listener, closed with the test.
func dialGRPC(t *testing.T, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// startLocalEnvoyNode starts a node with the in-process store serving
// gRPC with the descriptor files of dir; edit adjusts the config first.
func startLocalEnvoyNode(t *testing.T, dir string, edit func(*Config)) *testNode {
	t.Helper()
	cfg := testConfig("a", nil)
	cfg.GRPCListen, cfg.EnvoyConfigDir = "127.0.0.1:0", dir
	if edit != nil {
		edit(&cfg)
	}
	return startNode(t, cfg, nil, nil)
}

// rlsRequest is a request of one descriptor built from "k=v" entries.
func rlsRequest(domain string, pairs ...string) *rls.RateLimitRequest {
	return &rls.RateLimitRequest{Domain: domain, Descriptors: []*rlcommon.RateLimitDescriptor{desc(pairs...)}}
}

// writeYAML writes one descriptor file into dir.
func writeYAML(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(strings.TrimLeft(content, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
}

// desc builds a descriptor from "k=v" entries.
func desc(pairs ...string) *rlcommon.RateLimitDescriptor {
	d := &rlcommon.RateLimitDescriptor{}
	for _, p := range pairs {
		k, v, _ := strings.Cut(p, "=")
		d.Entries = append(d.Entries, &rlcommon.RateLimitDescriptor_Entry{Key: k, Value: v})
	}
	return d
}

func (n *envoyNode) ask(t *testing.T, domain string, hits uint32, ds ...*rlcommon.RateLimitDescriptor) *rls.RateLimitResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := n.rls.ShouldRateLimit(ctx, &rls.RateLimitRequest{Domain: domain, Descriptors: ds, HitsAddend: hits})
	if err != nil {
		t.Fatalf("ShouldRateLimit(%s): %v", domain, err)
	}
	return resp
}

// codes sends one descriptor count times and returns the codes, as a
// string like "OK OK OVER_LIMIT".
func (n *envoyNode) codes(t *testing.T, domain string, count int, pairs ...string) string {
	t.Helper()
	var out []string
	for range count {
		out = append(out, n.ask(t, domain, 0, desc(pairs...)).OverallCode.String())
	}
	return strings.Join(out, " ")
}

func repeat(code string, k int) []string {
	out := make([]string, k)
	for i := range out {
		out[i] = code
	}
	return out
}

func seq(parts ...[]string) string {
	var all []string
	for _, p := range parts {
		all = append(all, p...)
	}
	return strings.Join(all, " ")
}

// alignedClock is a fake clock 100 ms into a minute, so every window of
// a second or more is fresh and far from its edge.
func alignedClock() *testkit.Clock {
	c := testkit.NewClock()
	c.Set(time.Date(2026, 3, 2, 10, 0, 0, 100e6, time.UTC))
	return c
}

// The behaviours envoyproxy/ratelimit's README documents, restated with
// our own values, over gRPC on a real Redis.
func TestEnvoyDocumentedBehaviours(t *testing.T) {
	srv := redistest.Start(t)
	dir := t.TempDir()
	writeYAML(t, dir, "shop.yaml", `
domain: shop
descriptors:
  # A placeholder with a nested value-less key: one counter per customer.
  - key: plan
    value: free
    descriptors:
      - key: customer
        rate_limit: {unit: minute, requests_per_unit: 3}
  # A value-less key at the top.
  - key: customer
    rate_limit: {unit: minute, requests_per_unit: 5}
  # The specific value wins over the key alone, and 0 blocks.
  - key: ip
    rate_limit: {unit: minute, requests_per_unit: 4}
  - key: ip
    value: 198.51.100.9
    rate_limit: {unit: minute, requests_per_unit: 0}
  # Unlimited never touches the store.
  - key: healthcheck
    rate_limit: {unlimited: true}
  # Wildcards: each value its own counter, or one shared counter.
  - key: path
    value: /api/*
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: path
    value: /static/*
    share_threshold: true
    rate_limit: {unit: minute, requests_per_unit: 3}
  # Shadow: counted, never denied.
  - key: trial
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  # Replaces: the specific rule replaces the general one by name.
  - key: group
    value: readers
    descriptors:
      - key: user
        rate_limit: {name: per_user_read, unit: minute, requests_per_unit: 2}
  - key: endpoint
    value: search
    descriptors:
      - key: user
        rate_limit:
          replaces: [{name: per_user_read}]
          unit: minute
          requests_per_unit: 6
  - key: sliding
    rate_limit: {unit: minute, requests_per_unit: 2, algorithm: sliding_window}
`)
	clock := alignedClock()
	n := startEnvoyNode(t, "a", srv, dir, clock, nil)

	check := func(name, got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("%s: codes %q; want %q", name, got, want)
		}
	}
	check("nested value-less", n.codes(t, "shop", 4, "plan=free", "customer=c1"), seq(repeat("OK", 3), []string{"OVER_LIMIT"}))
	check("nested, another customer", n.codes(t, "shop", 1, "plan=free", "customer=c2"), "OK")
	check("nested, unknown plan", n.codes(t, "shop", 2, "plan=gold", "customer=c1"), "OK OK")
	check("top-level value-less", n.codes(t, "shop", 6, "customer=c1"), seq(repeat("OK", 5), []string{"OVER_LIMIT"}))
	check("key alone", n.codes(t, "shop", 5, "ip=203.0.113.1"), seq(repeat("OK", 4), []string{"OVER_LIMIT"}))
	check("key and value first", n.codes(t, "shop", 1, "ip=198.51.100.9"), "OVER_LIMIT")
	check("unlimited", n.codes(t, "shop", 20, "healthcheck=lb"), strings.Join(repeat("OK", 20), " "))
	check("wildcard, first value", n.codes(t, "shop", 3, "path=/api/a"), "OK OK OVER_LIMIT")
	check("wildcard, own counter per value", n.codes(t, "shop", 1, "path=/api/b"), "OK")
	check("share_threshold", n.codes(t, "shop", 2, "path=/static/a.css")+" "+n.codes(t, "shop", 2, "path=/static/b.js"), "OK OK OK OVER_LIMIT")
	check("shadow", n.codes(t, "shop", 3, "trial=x"), "OK OK OK")
	check("depth mismatch", n.codes(t, "shop", 1, "ip=203.0.113.1", "extra=1"), "OK")
	check("unknown domain", n.codes(t, "nowhere", 1, "ip=203.0.113.1"), "OK")
	check("algorithm extension", n.codes(t, "shop", 3, "sliding=s"), "OK OK OVER_LIMIT")

	// Replaces: with both rules matched, only the replacing one counts, and
	// the replaced one's counter is left alone.
	for i := range 6 {
		r := n.ask(t, "shop", 0, desc("group=readers", "user=u1"), desc("endpoint=search", "user=u1"))
		if r.OverallCode != rls.RateLimitResponse_OK || r.Statuses[0].CurrentLimit != nil || r.Statuses[1].CurrentLimit.GetRequestsPerUnit() != 6 {
			t.Fatalf("replaces, request %d: %v; want OK with only the limit of 6 applied", i+1, r)
		}
	}
	if r := n.ask(t, "shop", 0, desc("group=readers", "user=u1"), desc("endpoint=search", "user=u1")); r.OverallCode != rls.RateLimitResponse_OVER_LIMIT {
		t.Errorf("replaces: 7th request %v; want OVER_LIMIT", r.OverallCode)
	}
	check("replaced rule untouched", n.codes(t, "shop", 3, "group=readers", "user=u1"), "OK OK OVER_LIMIT")

	// The overall code is the OR of the statuses, each with its numbers.
	r := n.ask(t, "shop", 0, desc("customer=c9"), desc("ip=198.51.100.9"), desc("healthcheck=lb"), desc("nothing=here"))
	if r.OverallCode != rls.RateLimitResponse_OVER_LIMIT {
		t.Errorf("overall %v; want OVER_LIMIT", r.OverallCode)
	}
	s := r.Statuses
	if s[0].Code != rls.RateLimitResponse_OK || s[0].CurrentLimit.GetRequestsPerUnit() != 5 || s[0].CurrentLimit.GetUnit() != rls.RateLimitResponse_RateLimit_MINUTE ||
		s[0].LimitRemaining != 4 || s[0].DurationUntilReset.AsDuration() != 59900*time.Millisecond {
		t.Errorf("status 0 = %v; want OK, 5/minute, 4 left, 59.9s to reset", s[0])
	}
	if s[1].Code != rls.RateLimitResponse_OVER_LIMIT || s[1].LimitRemaining != 0 || s[1].DurationUntilReset.AsDuration() != 59900*time.Millisecond {
		t.Errorf("status 1 = %v; want OVER_LIMIT, 0 left, 59.9s to reset", s[1])
	}
	if s[2].Code != rls.RateLimitResponse_OK || s[2].LimitRemaining != 1<<32-1 || s[2].CurrentLimit != nil {
		t.Errorf("status 2 (unlimited) = %v; want OK with MaxUint32 left", s[2])
	}
	if s[3].Code != rls.RateLimitResponse_OK || s[3].CurrentLimit != nil {
		t.Errorf("status 3 (no rule) = %v; want OK without a limit", s[3])
	}
	// Windows move on with the clock.
	clock.Add(time.Minute)
	check("next window", n.codes(t, "shop", 1, "plan=free", "customer=c1"), "OK")
}

// hits_addend: the request's field where 0 means 1, and the descriptor's
// own, where 0 reads without consuming.
func TestEnvoyHitsAddend(t *testing.T) {
	srv := redistest.Start(t)
	dir := envoyDir(t, `
domain: d
descriptors:
  - key: k
    rate_limit: {unit: hour, requests_per_unit: 10}
`)
	n := startEnvoyNode(t, "a", srv, dir, alignedClock(), nil)
	remaining := func(r *rls.RateLimitResponse) uint32 { return r.Statuses[0].LimitRemaining }
	if r := n.ask(t, "d", 0, desc("k=a")); remaining(r) != 9 {
		t.Errorf("hits_addend 0: remaining %d; want 9 (0 means 1)", remaining(r))
	}
	if r := n.ask(t, "d", 4, desc("k=a")); remaining(r) != 5 {
		t.Errorf("hits_addend 4: remaining %d; want 5", remaining(r))
	}
	peek := desc("k=a")
	peek.HitsAddend = wrapperspb.UInt64(0)
	for range 3 {
		if r := n.ask(t, "d", 7, peek); remaining(r) != 5 || r.OverallCode != rls.RateLimitResponse_OK {
			t.Errorf("descriptor hits_addend 0: %v remaining %d; want OK with 5 (nothing consumed)", r.OverallCode, remaining(r))
		}
	}
	own := desc("k=a")
	own.HitsAddend = wrapperspb.UInt64(5)
	if r := n.ask(t, "d", 1, own); remaining(r) != 0 || r.OverallCode != rls.RateLimitResponse_OK {
		t.Errorf("descriptor hits_addend 5 over request 1: %v remaining %d; want OK with 0", r.OverallCode, remaining(r))
	}
	if r := n.ask(t, "d", 0, peek); r.OverallCode != rls.RateLimitResponse_OVER_LIMIT {
		t.Errorf("peek of a spent key: %v; want OVER_LIMIT", r.OverallCode)
	}
	huge := desc("k=b")
	huge.HitsAddend = wrapperspb.UInt64(1 << 40)
	if r := n.ask(t, "d", 0, huge); r.OverallCode != rls.RateLimitResponse_OVER_LIMIT {
		t.Errorf("hits_addend 2^40: %v; want OVER_LIMIT", r.OverallCode)
	}
	if r := n.ask(t, "d", 0, desc("k=b")); remaining(r) != 9 {
		t.Errorf("after a refused huge request: remaining %d; want 9", remaining(r))
	}
}

// A per-second window at its edges, with the injected clock. (The keys'
// TTLs run on Redis' real clock, so each phase stays well inside the TTL
// its last write set.)
func TestEnvoySecondWindowEdges(t *testing.T) {
	srv := redistest.Start(t)
	dir := envoyDir(t, `
domain: d
descriptors:
  - key: k
    rate_limit: {unit: second, requests_per_unit: 3}
`)
	clock := testkit.NewClock()
	clock.Set(time.Date(2026, 3, 2, 10, 0, 0, 500_000_000, time.UTC)) // half-way through a second
	n := startEnvoyNode(t, "a", srv, dir, clock, nil)
	r := n.ask(t, "d", 0, desc("k=x"))
	if got := r.Statuses[0].DurationUntilReset.AsDuration(); got != 500*time.Millisecond {
		t.Errorf("duration_until_reset = %v; want 500ms", got)
	}
	if got := n.codes(t, "d", 3, "k=x"); got != "OK OK OVER_LIMIT" {
		t.Errorf("inside the window: %q; want OK OK OVER_LIMIT", got)
	}
	clock.Add(499_999 * time.Microsecond) // 1 µs before the edge
	if got := n.codes(t, "d", 1, "k=x"); got != "OVER_LIMIT" {
		t.Errorf("1 µs before the edge: %q; want OVER_LIMIT", got)
	}
	if got := n.ask(t, "d", 0, desc("k=y")).Statuses[0].DurationUntilReset.AsDuration(); got != time.Microsecond {
		t.Errorf("duration_until_reset 1 µs before the edge = %v; want 1µs", got)
	}
	clock.Add(time.Microsecond) // exactly on the edge: a new window
	if got := n.codes(t, "d", 4, "k=x"); got != "OK OK OK OVER_LIMIT" {
		t.Errorf("on the edge: %q; want a fresh window", got)
	}
}

// Three nodes and 64 concurrent gRPC clients on one descriptor admit
// exactly its limit per window, and the next window admits it again.
func TestEnvoyConcurrentClientsAdmitExactlyTheLimit(t *testing.T) {
	const (
		limit    = 50
		clients  = 64
		requests = 6 * limit
	)
	srv := redistest.Start(t)
	dir := envoyDir(t, fmt.Sprintf(`
domain: race
descriptors:
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: %d}
`, limit))
	clock := alignedClock()
	slow := func(c *Config) { c.RedisTimeout.Duration = 5 * time.Second } // see testConcurrentClientsAdmitExactlyTheLimit
	nodes := []*envoyNode{
		startEnvoyNode(t, "a", srv, dir, clock, slow),
		startEnvoyNode(t, "b", srv, dir, clock, slow),
		startEnvoyNode(t, "c", srv, dir, clock, slow),
	}
	for window := range 2 {
		var ok, over atomic.Int64
		var errs sync.Map
		concurrently(clients, requests, func(w int) bool {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			r, err := nodes[w%len(nodes)].rls.ShouldRateLimit(ctx, rlsRequest("race", "tenant=t1"))
			switch {
			case err != nil:
				errs.Store(err.Error(), true)
			case r.OverallCode == rls.RateLimitResponse_OK:
				ok.Add(1)
			default:
				over.Add(1)
			}
			return true
		})
		errs.Range(func(k, _ any) bool { t.Errorf("window %d: %v", window, k); return true })
		if ok.Load() != limit || ok.Load()+over.Load() != requests {
			t.Errorf("window %d: %d OK and %d OVER_LIMIT of %d; want exactly %d OK", window, ok.Load(), over.Load(), requests, limit)
		}
		clock.Add(time.Minute)
	}
}

// Blocks and drains apply to gRPC as to HTTP checks.
func TestEnvoyBlocksAndDrain(t *testing.T) {
	srv := redistest.Start(t)
	dir := envoyDir(t, `
domain: d
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 100}
`)
	n := startEnvoyNode(t, "a", srv, dir, alignedClock(), nil)
	if got := n.codes(t, "d", 1, "user=mallory"); got != "OK" {
		t.Fatalf("before the block: %q", got)
	}
	mustCall(t, "POST", n.URL+"/api/v1/blocks/"+pathEscape("envoy:d|user=mallory"), `{"duration_seconds":60}`, http.StatusOK, nil)
	if got := n.codes(t, "d", 1, "user=mallory"); got != "OVER_LIMIT" {
		t.Errorf("blocked key: %q; want OVER_LIMIT", got)
	}
	if got := n.codes(t, "d", 1, "user=alice"); got != "OK" {
		t.Errorf("another key: %q; want OK", got)
	}

	health := healthpb.NewHealthClient(n.conn)
	serving := func() healthpb.HealthCheckResponse_ServingStatus {
		r, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "envoy.service.ratelimit.v3.RateLimitService"})
		if err != nil {
			t.Fatalf("health: %v", err)
		}
		return r.Status
	}
	if s := serving(); s != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health %v; want SERVING", s)
	}
	mustCall(t, "POST", n.URL+"/api/v1/nodes/a/drain", "", http.StatusOK, nil)
	_, err := n.rls.ShouldRateLimit(context.Background(), rlsRequest("d", "user=alice"))
	if status.Code(err) != codes.Unavailable {
		t.Errorf("draining node answered %v; want Unavailable", err)
	}
	testkit.WaitFor(t, 2*time.Second, "health NOT_SERVING while draining", func() bool { return serving() == healthpb.HealthCheckResponse_NOT_SERVING })
	mustCall(t, "DELETE", n.URL+"/api/v1/nodes/a/drain", "", http.StatusOK, nil)
	testkit.WaitFor(t, 2*time.Second, "health SERVING after the drain", func() bool { return serving() == healthpb.HealthCheckResponse_SERVING })
}

// A Redis outage answers by failure_mode within redis_timeout, never as a
// gRPC error unless envoy_store_errors asks for one.
func TestEnvoyRedisOutage(t *testing.T) {
	srv := redistest.Start(t)
	dir := envoyDir(t, `
domain: d
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 100}
`)
	clock := alignedClock()
	timeout := func(mode string, errs bool) func(*Config) {
		return func(c *Config) {
			c.RedisTimeout.Duration = 100 * time.Millisecond
			c.FailureMode, c.EnvoyStoreErrors = mode, errs
		}
	}
	open := startEnvoyNode(t, "open", srv, dir, clock, timeout("open", false))
	closed := startEnvoyNode(t, "closed", srv, dir, clock, timeout("closed", false))
	errs := startEnvoyNode(t, "errs", srv, dir, clock, timeout("open", true))
	srv.Kill()
	f := func(n *envoyNode, wantCode rls.RateLimitResponse_Code, wantErr codes.Code) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		r, err := n.rls.ShouldRateLimit(ctx, rlsRequest("d", "user=u"))
		took := time.Since(start)
		if status.Code(err) != wantErr || (err == nil && r.OverallCode != wantCode) {
			t.Errorf("%s: %v, %v; want %v, %v", n.ID(), r.GetOverallCode(), err, wantCode, wantErr)
		}
		// The bound is the timeout plus the round trip and a busy machine.
		if took > time.Second {
			t.Errorf("%s answered after %v; want within redis_timeout (100ms) and slack", n.ID(), took)
		}
	}
	for range 3 {
		f(open, rls.RateLimitResponse_OK, codes.OK)
		f(closed, rls.RateLimitResponse_OVER_LIMIT, codes.OK)
		f(errs, 0, codes.Unavailable)
	}
	if body := metricsOf(t, open.URL); !strings.Contains(body, `descriptor="d.user",result="fail_open"`) {
		t.Errorf("no fail_open descriptor series in:\n%s", grepLines(body, "envoy"))
	}
}

// A change to the directory applies within 2 s with no failed request
// meanwhile; a bad file keeps the last good configuration, says why and
// counts the error.
func TestEnvoyReload(t *testing.T) {
	srv := redistest.Start(t)
	dir := envoyDir(t, `
domain: d
descriptors:
  - key: k
    rate_limit: {unit: hour, requests_per_unit: 1000}
`)
	clock := alignedClock()
	a := startEnvoyNode(t, "a", srv, dir, clock, nil)
	b := startEnvoyNode(t, "b", srv, dir, clock, nil)

	// Traffic through the swap: every request must succeed.
	stop := make(chan struct{})
	var failed atomic.Int64
	var sent atomic.Int64
	var wg sync.WaitGroup
	for _, n := range []*envoyNode{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
				select {
				case <-stop:
					return
				default:
				}
				_, err := n.rls.ShouldRateLimit(context.Background(), rlsRequest("d", "k=traffic"))
				sent.Add(1)
				if err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	limitOf := func(n *envoyNode, key string) uint32 {
		return n.ask(t, "d", 0, desc(key)).Statuses[0].GetCurrentLimit().GetRequestsPerUnit()
	}
	writeYAML(t, dir, "a.yaml", `
domain: d
descriptors:
  - key: k
    rate_limit: {unit: hour, requests_per_unit: 7}
`)
	for _, n := range []*envoyNode{a, b} {
		took := testkit.WaitFor(t, 2*time.Second, "reload on "+n.ID(), func() bool { return limitOf(n, "k=probe") == 7 })
		t.Logf("%s reloaded within %v", n.ID(), took.Round(time.Millisecond))
	}
	// Both nodes count on the same key.
	a.ask(t, "d", 3, desc("k=shared"))
	if r := b.ask(t, "d", 0, desc("k=shared")); r.Statuses[0].LimitRemaining != 3 {
		t.Errorf("b sees %d left after a took 3 and b 1; want 3 (one shared counter)", r.Statuses[0].LimitRemaining)
	}

	// A bad file: the last good configuration stays.
	errsBefore := metricValue(t, a.URL, `ratelimiter_config_reload_errors_total{node_id="a"}`)
	writeYAML(t, dir, "b.yaml", `
domain: other
descriptors:
  - key: x
    rate_limit:
      unit: fortnight
      requests_per_unit: 1
`)
	testkit.WaitFor(t, 3*time.Second, "reload error counted", func() bool {
		return metricValue(t, a.URL, `ratelimiter_config_reload_errors_total{node_id="a"}`) == errsBefore+1
	})
	if got := limitOf(a, "k=probe2"); got != 7 {
		t.Errorf("after a bad file: limit %d; want the last good 7", got)
	}
	// Reported once, not at every poll.
	time.Sleep(2 * envoyReloadPoll)
	if got := metricValue(t, a.URL, `ratelimiter_config_reload_errors_total{node_id="a"}`); got != errsBefore+1 {
		t.Errorf("reload errors %v; want %v (one bad change, one error)", got, errsBefore+1)
	}
	// Fixing the file applies it.
	writeYAML(t, dir, "b.yaml", `
domain: other
descriptors:
  - key: x
    rate_limit: {unit: day, requests_per_unit: 2}
`)
	testkit.WaitFor(t, 2*time.Second, "fixed file applied", func() bool {
		return a.ask(t, "other", 0, desc("x=1")).Statuses[0].GetCurrentLimit().GetRequestsPerUnit() == 2
	})
	close(stop)
	wg.Wait()
	if failed.Load() > 0 || sent.Load() == 0 {
		t.Errorf("%d of %d requests failed during reloads; want none", failed.Load(), sent.Load())
	}
}

// POST /json is the same decision in proto3 JSON, 200 or 429.
func TestEnvoyJSON(t *testing.T) {
	srv := redistest.Start(t)
	dir := envoyDir(t, `
domain: web
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 1}
`)
	n := startEnvoyNode(t, "a", srv, dir, alignedClock(), nil)
	body := `{"domain":"web","descriptors":[{"entries":[{"key":"user","value":"bob"}]}]}`
	f := func(body string, wantStatus int, want string) {
		t.Helper()
		resp := testkit.Call(t, "POST", n.URL+"/json", body, nil)
		data, _ := io.ReadAll(resp.Body)
		// protojson varies its spacing on purpose: compare without it.
		compact := strings.ReplaceAll(string(data), " ", "")
		if resp.StatusCode != wantStatus || !(strings.Contains(string(data), want) || strings.Contains(compact, want)) {
			t.Errorf("POST /json %s = %d %s; want %d with %s", body, resp.StatusCode, data, wantStatus, want)
		}
	}
	f(body, http.StatusOK, `"overallCode":"OK"`)
	f(body, http.StatusTooManyRequests, `"overallCode":"OVER_LIMIT"`)
	f(body, http.StatusTooManyRequests, `"currentLimit":{"requestsPerUnit":1,"unit":"MINUTE"}`)
	f(`{"domain":`, http.StatusBadRequest, "malformed RateLimitRequest JSON")
	f(`{"domain":"web","descriptors":[]}`, http.StatusBadRequest, "descriptor list must not be empty")
	f(`{"domain":"web","descriptors":[{"entries":[{"key":"user","value":"x"}]}],"colour":1}`, http.StatusBadRequest, "malformed")
	if resp := testkit.Call(t, "GET", n.URL+"/json", "", nil); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /json = %d; want 405", resp.StatusCode)
	}
}

// Headers, shadow modes, metrics and the limits listing.
func TestEnvoyHeadersShadowMetricsListing(t *testing.T) {
	srv := redistest.Start(t)
	dir := envoyDir(t, `
domain: web
descriptors:
  - key: user
    rate_limit: {name: per_user, unit: minute, requests_per_unit: 2}
  - key: route
    detailed_metric: true
    rate_limit: {unit: minute, requests_per_unit: 100}
`)
	clock := alignedClock()
	draft := startEnvoyNode(t, "draft", srv, dir, clock, nil)
	x := startEnvoyNode(t, "x", srv, dir, clock, func(c *Config) { c.EnvoyHeaders = "x-ratelimit"; c.RedisPrefix = "x" })
	global := startEnvoyNode(t, "g", srv, dir, clock, func(c *Config) { c.EnvoyShadowMode = true; c.RedisPrefix = "g" })

	headers := func(r *rls.RateLimitResponse) string {
		var out []string
		for _, h := range r.ResponseHeadersToAdd {
			out = append(out, h.Key+": "+h.Value)
		}
		return strings.Join(out, "\n")
	}
	r := draft.ask(t, "web", 0, desc("user=u"))
	if got, want := headers(r), "RateLimit-Policy: \"per_user\";q=2;w=60\nRateLimit: \"per_user\";r=1;t=60"; got != want {
		t.Errorf("draft10 headers:\n%s\nwant\n%s", got, want)
	}
	r = x.ask(t, "web", 0, desc("user=u"))
	if got, want := headers(r), "X-RateLimit-Limit: 2, 2;w=60\nX-RateLimit-Remaining: 1\nX-RateLimit-Reset: 60"; got != want {
		t.Errorf("x-ratelimit headers:\n%s\nwant\n%s", got, want)
	}

	// Global shadow: the statuses tell, the overall code never denies.
	for range 2 {
		global.ask(t, "web", 0, desc("user=u"))
	}
	r = global.ask(t, "web", 0, desc("user=u"))
	if r.OverallCode != rls.RateLimitResponse_OK || r.Statuses[0].Code != rls.RateLimitResponse_OVER_LIMIT {
		t.Errorf("global shadow: overall %v, status %v; want OK overall and OVER_LIMIT in the status", r.OverallCode, r.Statuses[0].Code)
	}
	if v := metricValue(t, global.URL, `ratelimiter_envoy_global_shadow_total{node_id="g"}`); v != 1 {
		t.Errorf("global shadow counter %v; want 1", v)
	}

	// Metrics per domain and descriptor: bounded unless detailed_metric.
	for _, u := range []string{"u1", "u2", "u3"} {
		draft.ask(t, "web", 0, desc("user="+u))
	}
	draft.ask(t, "web", 0, desc("route=/a"))
	draft.ask(t, "web", 0, desc("route=/b"))
	body := metricsOf(t, draft.URL)
	for _, want := range []string{
		`ratelimiter_envoy_decisions_total{node_id="draft",domain="web",descriptor="web.user",result="ok"} 4`,
		`ratelimiter_envoy_decisions_total{node_id="draft",domain="web",descriptor="web.route_/a",result="ok"} 1`,
		`ratelimiter_envoy_decisions_total{node_id="draft",domain="web",descriptor="web.route_/b",result="ok"} 1`,
		`ratelimiter_requests_total{node_id="draft",result="allowed"} 6`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s; have:\n%s", want, grepLines(body, "envoy_decisions", "requests_total"))
		}
	}
	if strings.Contains(body, "user_u1") {
		t.Errorf("request values leaked into series without detailed_metric")
	}

	// Descriptor limits in GET /api/v1/limits, read-only with their file.
	var lim struct {
		Descriptors []descriptorRecord `json:"descriptors"`
	}
	mustCall(t, "GET", draft.URL+"/api/v1/limits", "", http.StatusOK, &lim)
	if len(lim.Descriptors) != 2 || lim.Descriptors[0].Descriptor != "web.user" || lim.Descriptors[0].File != filepath.Join(dir, "a.yaml") ||
		lim.Descriptors[0].Line != 4 || !lim.Descriptors[0].ReadOnly || lim.Descriptors[0].MaxRequests != 2 {
		t.Errorf("descriptors listed: %+v", lim.Descriptors)
	}
}

// The gRPC server offers reflection, and stops with the node.
func TestEnvoyReflectionAndShutdown(t *testing.T) {
	dir := envoyDir(t, "domain: d\n")
	n := startLocalEnvoyNode(t, dir, nil)
	conn := dialGRPC(t, n.GRPCAddr())
	stream, err := reflectpb.NewServerReflectionClient(conn).ServerReflectionInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectpb.ServerReflectionRequest{MessageRequest: &reflectpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.Name)
	}
	got := strings.Join(names, " ")
	for _, want := range []string{"envoy.service.ratelimit.v3.RateLimitService", "grpc.health.v1.Health"} {
		if !strings.Contains(got, want) {
			t.Errorf("reflection lists %q; want %s", got, want)
		}
	}
	_ = stream.CloseSend()
	stopOnce.Store(n, true) // stopped here, not by the cleanup
	n.cancel()
	select {
	case err := <-n.done:
		if err != nil {
			t.Errorf("Run = %v; want a clean stop", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("node did not stop within 10s")
	}
	_, err = rls.NewRateLimitServiceClient(conn).ShouldRateLimit(context.Background(),
		rlsRequest("d", "k=v"))
	if status.Code(err) != codes.Unavailable {
		t.Errorf("after stop: %v; want Unavailable", err)
	}
}

// A bad directory refuses to start, naming the file and line.
func TestEnvoyBadConfigAtStart(t *testing.T) {
	dir := t.TempDir()
	writeYAML(t, dir, "broken.yaml", "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second}\n")
	cfg := testConfig("a", nil)
	cfg.EnvoyConfigDir = dir
	_, err := New(cfg, nil, testkit.Logger(t, slog.LevelWarn), time.Now)
	if err == nil || !strings.Contains(err.Error(), "broken.yaml:4: descriptors[0].rate_limit.requests_per_unit: missing") {
		t.Errorf("New = %v; want the file, line and path", err)
	}
	cfg.EnvoyConfigDir, cfg.EnvoyHeaders, cfg.GRPCListen = filepath.Join(dir, "nope"), "fancy", "nonsense"
	err = cfg.Validate()
	for _, want := range []string{"envoy_config_dir: must be a readable directory", `envoy_headers: must be`, "grpc_listen: must be host:port"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v; want %q", err, want)
		}
	}
}

func pathEscape(s string) string {
	r := strings.NewReplacer("%", "%25", "/", "%2F", "|", "%7C", "=", "%3D", ":", "%3A")
	return r.Replace(s)
}

func metricsOf(t *testing.T, base string) string {
	t.Helper()
	resp := testkit.Call(t, "GET", base+"/metrics", "", nil)
	data, _ := io.ReadAll(resp.Body)
	return string(data)
}

func metricValue(t *testing.T, base, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(metricsOf(t, base), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return -1
}

func grepLines(s string, subs ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, sub := range subs {
			if strings.Contains(l, sub) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

// Hostile requests get INVALID_ARGUMENT and change nothing.
func TestEnvoyBadRequests(t *testing.T) {
	dir := envoyDir(t, "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 5}\n")
	n := startLocalEnvoyNode(t, dir, func(c *Config) { c.MaxBatch = 10 })
	client := rls.NewRateLimitServiceClient(dialGRPC(t, n.GRPCAddr()))
	many := make([]*rlcommon.RateLimitDescriptor, 11)
	for i := range many {
		many[i] = desc("k=v")
	}
	long := make([]string, 33)
	for i := range long {
		long[i] = "k=v"
	}
	f := func(name string, req *rls.RateLimitRequest, want string) {
		t.Helper()
		_, err := client.ShouldRateLimit(context.Background(), req)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v; want InvalidArgument with %q", name, err, want)
		}
	}
	f("no domain", &rls.RateLimitRequest{Descriptors: []*rlcommon.RateLimitDescriptor{desc("k=v")}}, "domain must not be empty")
	f("no descriptors", &rls.RateLimitRequest{Domain: "d"}, "descriptor list must not be empty")
	f("empty descriptor", &rls.RateLimitRequest{Domain: "d", Descriptors: []*rlcommon.RateLimitDescriptor{{}}}, "descriptors[0]: want 1 to 32 entries")
	f("too many descriptors", &rls.RateLimitRequest{Domain: "d", Descriptors: many}, "at most 10 descriptors")
	f("too many entries", rlsRequest("d", long...), "want 1 to 32 entries, got 33")
	f("long value", rlsRequest("d", "k="+strings.Repeat("x", 513)), "at most 512 bytes")
	// Nothing was consumed by the refused requests.
	r, err := client.ShouldRateLimit(context.Background(), rlsRequest("d", "k=v"))
	if err != nil || r.Statuses[0].LimitRemaining != 4 {
		t.Errorf("after the refused requests: %v, %v; want 4 left", r, err)
	}
}

// grpc_max_connection_age ends a client's connection after that long, so
// Envoys reconnect (and spread over new nodes); no call fails for it.
func TestEnvoyMaxConnectionAge(t *testing.T) {
	dir := envoyDir(t, "domain: d\n")
	n := startLocalEnvoyNode(t, dir, func(c *Config) {
		c.GRPCMaxConnectionAge.Duration = 300 * time.Millisecond
		c.GRPCMaxConnectionAgeGrace.Duration = 200 * time.Millisecond
	})
	var dials atomic.Int64
	conn := dialGRPC(t, n.GRPCAddr(), grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		dials.Add(1)
		return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}))
	client := rls.NewRateLimitServiceClient(conn)
	deadline := time.Now().Add(5 * time.Second)
	for dials.Load() < 3 && time.Now().Before(deadline) {
		if _, err := client.ShouldRateLimit(context.Background(), rlsRequest("d", "k=v")); err != nil {
			t.Fatalf("call failed across a connection's end: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if dials.Load() < 3 {
		t.Errorf("%d connections in 5 s; want a new one after each 300 ms age", dials.Load())
	}
}

// Series named after request values stop at the cap; past it, decisions
// count under the limit's own name.
func TestEnvoyDetailedSeriesAreCapped(t *testing.T) {
	dir := envoyDir(t, "domain: d\ndescriptors:\n  - key: route\n    detailed_metric: true\n    rate_limit: {unit: hour, requests_per_unit: 50}\n")
	n := startLocalEnvoyNode(t, dir, nil)
	n.envoy.mu.Lock()
	n.envoy.maxDetailed = 2
	n.envoy.mu.Unlock()
	for _, r := range []string{"/a", "/b", "/c", "/d", "/a"} {
		if _, err := n.shouldRateLimit(rlsRequest("d", "route="+r)); err != nil {
			t.Fatal(err)
		}
	}
	body := metricsOf(t, n.URL)
	for series, want := range map[string]float64{
		`ratelimiter_envoy_decisions_total{node_id="a",domain="d",descriptor="d.route_/a",result="ok"}`: 2,
		`ratelimiter_envoy_decisions_total{node_id="a",domain="d",descriptor="d.route_/b",result="ok"}`: 1,
		`ratelimiter_envoy_decisions_total{node_id="a",domain="d",descriptor="d.route",result="ok"}`:    2,
	} {
		if got := metricValue(t, n.URL, series); got != want {
			t.Errorf("%s = %v; want %v", series, got, want)
		}
	}
	if strings.Contains(body, "route_/c") || strings.Contains(body, "route_/d") {
		t.Errorf("series past the cap:\n%s", grepLines(body, "envoy_decisions"))
	}
}

// A limit sent with the descriptor applies only in a loaded domain, as in
// envoyproxy/ratelimit, and its series, named by the request's keys, are
// capped with the detailed ones. Before, every domain and key set a
// request named made a series: 200 requests of 100 overrides, 2.3 KB each
// under a new 512-byte domain, left 20,000 series and 62 MiB of heap, and
// one 18 KB request of 1,000 overrides sent 1.4 MB to Redis and got 1 MB
// of headers back.
func TestEnvoyOverrideBounds(t *testing.T) {
	dir := envoyDir(t, "domain: d\n")
	n := startLocalEnvoyNode(t, dir, nil)
	n.envoy.mu.Lock()
	n.envoy.maxDetailed = 3
	n.envoy.mu.Unlock()
	override := func(domain string, pairs ...string) *rls.RateLimitRequest {
		r := rlsRequest(domain, pairs...)
		r.Descriptors[0].Limit = &rlcommon.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 1, Unit: 3} // hour
		return r
	}
	// Each key is cut at 64 bytes in the series name: 10,000 series named by
	// 32 keys of 512 bytes held about 330 MiB.
	var long []string
	for e := range 32 {
		long = append(long, fmt.Sprintf("%02d%s=v", e, strings.Repeat("k", 510)))
	}
	if _, err := n.shouldRateLimit(override("d", long...)); err != nil {
		t.Fatal(err)
	}
	n.envoy.mu.Lock()
	for name := range n.envoy.series {
		if len(name) > 32*65+64 {
			t.Errorf("a series named by %d bytes; want each key cut at 64", len(name))
		}
	}
	n.envoy.mu.Unlock()
	for i, want := range []rls.RateLimitResponse_Code{rls.RateLimitResponse_OK, rls.RateLimitResponse_OVER_LIMIT} {
		if r, err := n.shouldRateLimit(override("d", "k=v")); err != nil || r.OverallCode != want {
			t.Fatalf("override in d, request %d: %v, %v; want %v", i+1, r, err, want)
		}
	}
	for i := range 20 {
		r, err := n.shouldRateLimit(override(fmt.Sprintf("other%d", i), "k=v"))
		if err != nil || r.OverallCode != rls.RateLimitResponse_OK || r.Statuses[0].CurrentLimit != nil {
			t.Fatalf("override in an unknown domain: %v, %v; want OK without a limit", r, err)
		}
		if _, err := n.shouldRateLimit(override("d", fmt.Sprintf("k%d=v", i))); err != nil {
			t.Fatal(err)
		}
	}
	body := grepLines(metricsOf(t, n.URL), "envoy_decisions")
	if strings.Contains(body, "other") || strings.Contains(body, "d.k19") || !strings.Contains(body, `descriptor="d.(override)"`) {
		t.Errorf("series past the cap or for unknown domains:\n%s", body)
	}
	n.envoy.mu.Lock()
	series := len(n.envoy.series)
	n.envoy.mu.Unlock()
	if series > 6 {
		t.Errorf("%d descriptor series; want at most 6:\n%s", series, body)
	}
}
