package main

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/nodetest"
	"github.com/ratelimiter/ratelimiter/internal/testkit"
)

// TestHealth probes a real node while it serves and while it drains, a
// dead address and a malformed URL, through the CLI as HEALTHCHECK runs it.
func TestHealth(t *testing.T) {
	cfg := nodetest.Config("health-1", nil)
	cfg.AdminToken = "health-token"
	n := nodetest.Start(t, cfg)
	f := func(url string, wantOK bool, wantText string) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := run(ctx, []string{"ratelimiter", "health", "--url", url, "--timeout", "1s"}, &stdout, &stderr)
		if (err == nil) != wantOK {
			t.Fatalf("health --url %s = %v; want ok=%v", url, err, wantOK)
		}
		got := stdout.String()
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, wantText) {
			t.Fatalf("health --url %s said %q; want it to contain %q", url, got, wantText)
		}
	}
	f(n.URL+"/health", true, "healthy: 200")

	req, _ := http.NewRequest(http.MethodPost, n.URL+"/api/v1/nodes/health-1/drain", nil)
	req.Header.Set("Authorization", "Bearer health-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("POST drain: status %d", resp.StatusCode)
	}
	testkit.WaitFor(t, 5*time.Second, "the node to report draining", func() bool {
		r, err := http.Get(n.URL + "/health")
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == http.StatusServiceUnavailable
	})
	f(n.URL+"/health", false, "503")
	f("http://"+nodetest.FreeAddr(t)+"/health", false, "unhealthy")
	f("http://[::1/health", false, "invalid --url")
}
