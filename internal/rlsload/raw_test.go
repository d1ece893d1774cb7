package main

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rls "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// counting answers OK to every request of domain "ok", and an error to the
// others, and counts what it saw.
type counting struct {
	rls.UnimplementedRateLimitServiceServer
	calls, bad atomic.Int64
	value      atomic.Value // the last descriptor value seen
}

func (s *counting) ShouldRateLimit(_ context.Context, r *rls.RateLimitRequest) (*rls.RateLimitResponse, error) {
	s.calls.Add(1)
	if r.Domain != "ok" || len(r.Descriptors) != 1 || r.Descriptors[0].Entries[0].Key != "user" {
		s.bad.Add(1)
		return nil, status.Error(codes.InvalidArgument, "unexpected request")
	}
	s.value.Store(r.Descriptors[0].Entries[0].Value)
	return okResponse, nil
}

func serve(t *testing.T) (*counting, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	s := &counting{}
	rls.RegisterRateLimitServiceServer(srv, s)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return s, ln.Addr().String()
}

func requests(domain string, n int) [][]byte {
	reqs := make([]*rls.RateLimitRequest, n)
	for i := range reqs {
		reqs[i] = &rls.RateLimitRequest{Domain: domain, Descriptors: []*rlcommon.RateLimitDescriptor{{
			Entries: []*rlcommon.RateLimitDescriptor_Entry{{Key: "user", Value: "u" + string(rune('a'+i))}}}}}
	}
	bodies, err := rawRequests(reqs)
	if err != nil {
		panic(err)
	}
	return bodies
}

// TestRawClientCountsWhatTheServerAnswered: every call the raw client
// reports done is one a grpc-go server decoded and answered OK.
func TestRawClientCountsWhatTheServerAnswered(t *testing.T) {
	s, addr := serve(t)
	bodies := requests("ok", 3)
	i := 0
	c, err := runRaw(addr, 8, time.Now().Add(300*time.Millisecond), bodies, func() int { i++; return i % len(bodies) })
	if err != nil {
		t.Fatal(err)
	}
	if c.done < 100 || c.errs != 0 || c.done != s.calls.Load() || s.bad.Load() != 0 {
		t.Fatalf("raw client: %d done, %d errors; server: %d calls, %d unexpected; want 100+ done, all answered OK",
			c.done, c.errs, s.calls.Load(), s.bad.Load())
	}
	if c.hist.TotalCount() != c.done || c.hist.ValueAtQuantile(50) <= 0 {
		t.Fatalf("latencies: %d recorded for %d calls, p50 %d µs", c.hist.TotalCount(), c.done, c.hist.ValueAtQuantile(50))
	}
	if v, _ := s.value.Load().(string); v != "ua" && v != "ub" && v != "uc" {
		t.Fatalf("the server saw value %q; want one of the bodies'", v)
	}
}

// TestRawHeadersIndexed: after the first request, a request's header block
// is six indexes into the server's HPACK table, as a client such as Envoy
// sends, not literals the server must decode every time.
func TestRawHeadersIndexed(t *testing.T) {
	first, rest := rawHeaders("127.0.0.1:1")
	if len(rest) != 6 || len(first) <= len(rest) {
		t.Fatalf("header blocks of %d and %d bytes; want the later ones 6 bytes, one index per field", len(first), len(rest))
	}
}

// TestRawClientCountsErrors: a call answered with a gRPC error is an error,
// not a decision.
func TestRawClientCountsErrors(t *testing.T) {
	s, addr := serve(t)
	c, err := runRaw(addr, 4, time.Now().Add(200*time.Millisecond), requests("other", 1), func() int { return 0 })
	if err != nil {
		t.Fatal(err)
	}
	if c.done != 0 || c.errs == 0 || c.errs != s.calls.Load() {
		t.Fatalf("raw client: %d done, %d errors; server answered %d errors; want every call an error", c.done, c.errs, s.calls.Load())
	}
}
