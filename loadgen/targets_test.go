package loadgen

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	rls "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/valyala/fasthttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestHTTPTemplate drives a plain HTTP server with --method http: every
// request carries the templated method, path, query, headers and body
// with its key and cost in place, and the answers are counted as a proxy
// gives them: 2xx admitted, 429 denied, anything else an error by status.
func TestHTTPTemplate(t *testing.T) {
	t.Parallel()
	type got struct{ method, path, query, tenant, ctype, body string }
	var (
		mu   sync.Mutex
		seen []got
	)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		g := got{string(ctx.Method()), string(ctx.Path()), string(ctx.QueryArgs().Peek("k")), string(ctx.Request.Header.Peek("X-Tenant")),
			string(ctx.Request.Header.ContentType()), string(ctx.PostBody())}
		mu.Lock()
		seen = append(seen, g)
		mu.Unlock()
		switch g.query {
		case "tpl: 0":
			ctx.SetStatusCode(fasthttp.StatusTooManyRequests)
		case "tpl: 1":
			ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		default:
			ctx.SetStatusCode(fasthttp.StatusNoContent)
		}
	}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })

	cfg := DefaultConfig()
	cfg.Method, cfg.Rate, cfg.Duration, cfg.Keys, cfg.KeyPrefix, cfg.Cost = MethodHTTP, 200, time.Second, 4, "tpl: ", 3
	cfg.Targets = []string{"http://" + ln.Addr().String() + "/v2/limit/{key}?k={key}&cost={cost}"}
	cfg.HTTPMethod, cfg.Body = "put", `{"key":"{key}","hits":{cost}}`
	cfg.Headers = []string{"X-Tenant: t-{key}", "Content-Type: application/vnd.test+json"}
	r := run(t, cfg)
	t.Logf("sent %d: allowed %d, denied %d, errors %v", r.Sent, r.Allowed, r.Denied, r.Errors)

	mu.Lock()
	defer mu.Unlock()
	byKey := map[string]int64{}
	for _, g := range seen {
		key := g.query
		byKey[key]++
		want := got{"PUT", "/v2/limit/" + key, key, "t-" + key, "application/vnd.test+json", `{"key":"` + key + `","hits":3}`}
		if g != want || !strings.HasPrefix(key, "tpl: ") {
			t.Fatalf("the server got %+v; want %+v for one of the keys tpl: 0 to tpl: 3", g, want)
		}
	}
	if r.Sent != 200 || int64(len(seen)) != r.Sent || r.Completed != r.Sent {
		t.Errorf("sent %d, completed %d, the server saw %d; want 200 of each", r.Sent, r.Completed, len(seen))
	}
	if r.Denied != byKey["tpl: 0"] || r.Errors["status_503"] != byKey["tpl: 1"] || r.Allowed != byKey["tpl: 2"]+byKey["tpl: 3"] ||
		r.Denied == 0 || r.Allowed == 0 {
		t.Errorf("allowed %d, denied %d, errors %v; want the server's 204s (%d), 429s (%d) and 503s (%d)",
			r.Allowed, r.Denied, r.Errors, byKey["tpl: 2"]+byKey["tpl: 3"], byKey["tpl: 0"], byKey["tpl: 1"])
	}
}

// rlsServer is an Envoy Rate Limit Service standing in for a node: it
// records each request and answers OVER_LIMIT for the descriptor value
// "rls:0", UNKNOWN for "rls:1", a gRPC error for "rls:2" and OK for the
// rest.
type rlsServer struct {
	rls.UnimplementedRateLimitServiceServer
	mu   sync.Mutex
	seen []*rls.RateLimitRequest
}

func (s *rlsServer) ShouldRateLimit(ctx context.Context, req *rls.RateLimitRequest) (*rls.RateLimitResponse, error) {
	s.mu.Lock()
	s.seen = append(s.seen, req)
	s.mu.Unlock()
	code := rls.RateLimitResponse_OK
	if d := req.GetDescriptors(); len(d) > 0 && len(d[0].GetEntries()) > 0 {
		switch d[0].GetEntries()[0].GetValue() {
		case "rls:0":
			code = rls.RateLimitResponse_OVER_LIMIT
		case "rls:1":
			code = rls.RateLimitResponse_UNKNOWN
		case "rls:2":
			return nil, status.Error(codes.ResourceExhausted, "test")
		}
	}
	return &rls.RateLimitResponse{OverallCode: code}, nil
}

func startRLS(t *testing.T) (*rlsServer, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rlsServer{}
	g := grpc.NewServer()
	rls.RegisterRateLimitServiceServer(g, s)
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	return s, "grpc://" + ln.Addr().String()
}

// TestGRPCTarget drives Envoy's ShouldRateLimit with --method grpc: every
// request carries the domain, the descriptors with the key in place and
// hits_addend = the cost; OK is admitted, OVER_LIMIT denied, UNKNOWN and
// gRPC errors are errors by kind.
func TestGRPCTarget(t *testing.T) {
	t.Parallel()
	srv, target := startRLS(t)
	cfg := DefaultConfig()
	cfg.Method, cfg.Rate, cfg.Duration, cfg.Keys, cfg.KeyPrefix, cfg.Cost = MethodGRPC, 200, time.Second, 5, "rls:", 2
	cfg.Targets, cfg.Domain = []string{target}, "edge"
	cfg.Descriptors = []string{"remote_address={key},tier=gold", "generic_key=cost-{cost}"}
	r := run(t, cfg)
	t.Logf("sent %d: allowed %d, denied %d, errors %v", r.Sent, r.Allowed, r.Denied, r.Errors)

	srv.mu.Lock()
	defer srv.mu.Unlock()
	byKey := map[string]int64{}
	for _, req := range srv.seen {
		d := req.GetDescriptors()
		if len(d) != 2 || len(d[0].GetEntries()) != 2 || len(d[1].GetEntries()) != 1 {
			t.Fatalf("the server got %v; want two descriptors of 2 and 1 entries", req)
		}
		key := d[0].GetEntries()[0].GetValue()
		byKey[key]++
		got := fmt.Sprintf("%s %d %s=%s %s=%s %s=%s", req.GetDomain(), req.GetHitsAddend(), d[0].GetEntries()[0].GetKey(), key,
			d[0].GetEntries()[1].GetKey(), d[0].GetEntries()[1].GetValue(), d[1].GetEntries()[0].GetKey(), d[1].GetEntries()[0].GetValue())
		if want := "edge 2 remote_address=" + key + " tier=gold generic_key=cost-2"; got != want || !strings.HasPrefix(key, "rls:") {
			t.Fatalf("the server got %q; want %q for one of the keys rls:0 to rls:4", got, want)
		}
	}
	if r.Sent != 200 || int64(len(srv.seen)) != r.Sent || r.Completed != r.Sent {
		t.Errorf("sent %d, completed %d, the server saw %d; want 200 of each", r.Sent, r.Completed, len(srv.seen))
	}
	if r.Denied != byKey["rls:0"] || r.Errors["code_unknown"] != byKey["rls:1"] || r.Errors["grpc_resourceexhausted"] != byKey["rls:2"] ||
		r.Allowed != byKey["rls:3"]+byKey["rls:4"] || r.Denied == 0 || r.Allowed == 0 {
		t.Errorf("allowed %d, denied %d, errors %v; want the server's OKs (%d), OVER_LIMITs (%d), UNKNOWNs (%d) and errors (%d)",
			r.Allowed, r.Denied, r.Errors, byKey["rls:3"]+byKey["rls:4"], byKey["rls:0"], byKey["rls:1"], byKey["rls:2"])
	}
}

// TestGRPCDeadTarget: a gRPC target that refuses connections gives
// connection errors, fast, like an HTTP one.
func TestGRPCDeadTarget(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := DefaultConfig()
	cfg.Method, cfg.Rate, cfg.Duration, cfg.Targets, cfg.Domain, cfg.Descriptors = MethodGRPC, 100, time.Second, []string{"grpc://" + addr}, "d", []string{"k={key}"}
	start := time.Now()
	r := run(t, cfg)
	if took := time.Since(start); r.Errors["connection"] != r.Sent || r.Sent != 100 || took > 3*time.Second {
		t.Errorf("sent %d, errors %v in %s; want 100 connection errors in about 1s", r.Sent, r.Errors, took)
	}
}

// TestTargetConfig: each method's targets and templates are checked, and
// flags of one method are refused with another.
func TestTargetConfig(t *testing.T) {
	f := func(edit func(c *Config), want string) {
		t.Helper()
		c := DefaultConfig()
		c.Targets, c.Duration = []string{"http://127.0.0.1:1"}, time.Second
		edit(&c)
		err := c.Validate()
		switch {
		case want == "" && err != nil:
			t.Errorf("Validate = %v; want nil", err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("Validate = %v; want an error containing %q", err, want)
		}
	}
	f(func(c *Config) {
		c.Method, c.Targets, c.Body, c.Headers = MethodHTTP, []string{"https://api.example:8443/check?u={key}"}, "{cost}", []string{"A: b"}
	}, "")
	f(func(c *Config) { c.Method, c.Targets = MethodHTTP, []string{"http://{key}.example/"} }, "has no valid host")
	f(func(c *Config) { c.Method, c.Targets = MethodHTTP, []string{"grpc://127.0.0.1:1"} }, "not an http:// or https:// URL")
	f(func(c *Config) { c.Method, c.Headers = MethodHTTP, []string{"no colon"} }, "not a Name: value header")
	f(func(c *Config) { c.Method, c.HTTPMethod = MethodHTTP, "GE T" }, "not an HTTP method")
	f(func(c *Config) { c.Body = "x" }, "need --method http")
	f(func(c *Config) { c.Method, c.Verify = MethodHTTP, true }, "verify")
	f(func(c *Config) {
		c.Method, c.Targets, c.Domain, c.Descriptors = MethodGRPC, []string{"grpc://127.0.0.1:8081"}, "d", []string{"a={key},b=c"}
	}, "")
	f(func(c *Config) {
		c.Method, c.Targets, c.Descriptors = MethodGRPC, []string{"grpc://127.0.0.1:8081"}, []string{"a=b"}
	}, "needs the --domain")
	f(func(c *Config) { c.Method, c.Targets, c.Domain = MethodGRPC, []string{"grpc://127.0.0.1:8081"}, "d" }, "at least one --descriptor")
	f(func(c *Config) {
		c.Method, c.Targets, c.Domain, c.Descriptors = MethodGRPC, []string{"grpc://127.0.0.1:8081"}, "d", []string{"a=b,=c"}
	}, "every entry needs a key and a value")
	f(func(c *Config) { c.Method, c.Domain, c.Descriptors = MethodGRPC, "d", []string{"a=b"} }, "not a grpc://host:port target")
	f(func(c *Config) { c.Domain = "d" }, "need --method grpc")
	// Hostile templates, refused before the run.
	httpTo := func(c *Config) { c.Method, c.Targets = MethodHTTP, []string{"http://127.0.0.1:1/check?k={key}"} }
	f(func(c *Config) { httpTo(c); c.Body = strings.Repeat("x", MaxBody+1) }, "larger than 1048576 bytes")
	f(func(c *Config) { httpTo(c); c.Body = strings.Repeat("x", MaxBody) }, "")
	f(func(c *Config) { httpTo(c); c.Body = `{"key": {key}}` }, "not JSON once {key} and {cost} are filled in")
	f(func(c *Config) { httpTo(c); c.Body = `[{"cost": {cost}}` }, "not JSON")
	f(func(c *Config) { httpTo(c); c.Body = `{"key": "{key}", "cost": {cost}}` }, "")
	f(func(c *Config) { httpTo(c); c.Body, c.KeyPrefix = `{"key": "{key}"}`, `a"b` }, "not JSON")
	f(func(c *Config) { httpTo(c); c.Body, c.Headers = `{"key": {key}}`, []string{"content-type: text/plain"} }, "")
	f(func(c *Config) { httpTo(c); c.Headers = []string{""} }, "not a Name: value header")
	f(func(c *Config) { httpTo(c); c.Headers = []string{": v"} }, "not a Name: value header")
	f(func(c *Config) { httpTo(c); c.Headers = []string{"X-Empty:"} }, "")
	f(func(c *Config) { httpTo(c); c.Headers, c.KeyPrefix = []string{"X-Key: {key}"}, "a\r\nX-Admin: 1\r\n" }, "holds a line break")
	f(func(c *Config) { httpTo(c); c.KeyPrefix = "a\r\nb" }, "") // escaped in the URL
	f(func(c *Config) { c.Method, c.Targets = MethodHTTP, []string{"http://127.0.0.1:1/check"} }, "no --target, --header or --body holds {key}")
	f(func(c *Config) { c.Method, c.Targets, c.Keys = MethodHTTP, []string{"http://127.0.0.1:1/check"}, 1 }, "")
	f(func(c *Config) { c.Method, c.Targets, c.Body = MethodHTTP, []string{"http://127.0.0.1:1/"}, "k={key}" }, "")
	grpcTo := func(c *Config, d ...string) {
		c.Method, c.Targets, c.Domain, c.Descriptors = MethodGRPC, []string{"grpc://127.0.0.1:8081"}, "d", d
	}
	f(func(c *Config) { grpcTo(c, "") }, "every entry needs a key and a value")
	f(func(c *Config) { grpcTo(c, "novalue") }, "every entry needs a key and a value")
	f(func(c *Config) { grpcTo(c, "a={key},,b=c") }, "every entry needs a key and a value")
	f(func(c *Config) { grpcTo(c, "a=b", "c=d") }, "no --descriptor holds {key}")
	many := make([]string, 1000)
	for i := range many {
		many[i] = "k{key}=v" + strconv.Itoa(i)
	}
	f(func(c *Config) { grpcTo(c, many...) }, "")
	f(func(c *Config) { c.Method = "PUT" }, "must be post, get, http or grpc")
	f(func(c *Config) { c.Method = "" }, "must be post, get, http or grpc")
}
