package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rls "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ratelimiter/ratelimiter/internal/nodetest"
	"github.com/ratelimiter/ratelimiter/internal/testkit"
)

// The --grpc-listen and --envoy-config flags reach the node.
func TestRunNodeEnvoyFlags(t *testing.T) {
	dir := t.TempDir()
	yaml := "domain: web\ndescriptors:\n  - key: user\n    rate_limit: {unit: hour, requests_per_unit: 1}\n"
	if err := os.WriteFile(filepath.Join(dir, "web.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	addr, grpcAddr := nodetest.FreeAddr(t), nodetest.FreeAddr(t)
	stop := startNodeCLI(t, "--listen", addr, "--node-id", "envoy", "--grpc-listen", grpcAddr, "--envoy-config", dir)
	testkit.WaitFor(t, 5*time.Second, "the node to serve on "+addr, func() bool {
		r, err := http.Get("http://" + addr + "/health")
		if err != nil {
			return false
		}
		r.Body.Close()
		return true
	})
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := &rls.RateLimitRequest{Domain: "web", Descriptors: []*rlcommon.RateLimitDescriptor{{
		Entries: []*rlcommon.RateLimitDescriptor_Entry{{Key: "user", Value: "ann"}}}}}
	for i, want := range []rls.RateLimitResponse_Code{rls.RateLimitResponse_OK, rls.RateLimitResponse_OVER_LIMIT} {
		resp, err := rls.NewRateLimitServiceClient(conn).ShouldRateLimit(context.Background(), req)
		if err != nil || resp.OverallCode != want {
			t.Fatalf("request %d: %v, %v; want %v", i+1, resp.GetOverallCode(), err, want)
		}
	}
	r, err := http.Post("http://"+addr+"/json", "application/json",
		strings.NewReader(`{"domain":"web","descriptors":[{"entries":[{"key":"user","value":"ann"}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusTooManyRequests {
		t.Errorf("POST /json = %d; want 429 (the same counter as gRPC)", r.StatusCode)
	}
	stop()
}
