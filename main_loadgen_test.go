package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	rls "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"

	"github.com/ratelimiter/ratelimiter/config"
	"github.com/ratelimiter/ratelimiter/internal/nodetest"
	"github.com/ratelimiter/ratelimiter/internal/redistest"
	"github.com/ratelimiter/ratelimiter/limiter"
)

// loadgenNode runs one node on a fresh Redis until the test ends and
// returns its base URL once it serves limits.
func loadgenNode(t *testing.T, limits []limiter.Limit) string {
	t.Helper()
	cfg := nodetest.Config("lg", redistest.Start(t))
	cfg.Limits = limits
	// Under a loaded test machine a Redis call may outlive the default
	// 50 ms and be answered fail-open; --verify would rightly exclude it.
	cfg.RedisTimeout = config.Duration{Duration: time.Second}
	base := nodetest.Start(t, cfg).URL
	nodetest.WaitLimits(t, base, limits)
	return base
}

// runLoadgen runs the CLI in-process, bounded in time.
func runLoadgen(t *testing.T, args ...string) (stdout, stderr string, err error, took time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	start := time.Now()
	err = run(ctx, append([]string{"ratelimiter", "loadgen"}, args...), &out, &errOut)
	return out.String(), errOut.String(), err, time.Since(start)
}

// TestLoadgenDeadTargetExitsTwo: a run whose threshold is missed exits 2,
// on time, and says which threshold.
func TestLoadgenDeadTargetExitsTwo(t *testing.T) {
	t.Parallel()
	target := "http://" + nodetest.FreeAddr(t)
	stdout, stderr, err, took := runLoadgen(t, "--target", target, "--rate", "200", "--duration", "2s", "--max-error-rate", "0.5")
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 {
		t.Fatalf("loadgen against a dead target = %v (%T); want an *exitError with code 2\nstdout:\n%s\nstderr:\n%s", err, err, stdout, stderr)
	}
	if msg := ee.Error(); !strings.Contains(msg, "--max-error-rate 0.5") || !strings.Contains(msg, "error rate 1.000") {
		t.Errorf("exit message = %q; want it to name the --max-error-rate 0.5 threshold and the error rate", msg)
	}
	if took > 3*time.Second {
		t.Errorf("a 2s run against a dead target took %s; want at most 3s", took)
	}
	for _, want := range []string{"sent           400 ", "connection", "FAILED         error rate 1.000 > --max-error-rate 0.5"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("text report lacks %q:\n%s", want, stdout)
		}
	}
}

// TestLoadgenJSON checks the documented fields of --json, on a passing run
// and on one that misses a threshold (the report still comes out).
func TestLoadgenJSON(t *testing.T) {
	t.Parallel()
	base := loadgenNode(t, []limiter.Limit{{KeyPattern: "json:*", MaxRequests: 10, WindowSeconds: 10}})
	type report struct {
		Sent         *int64   `json:"sent"`
		AchievedRate *float64 `json:"achieved_rate"`
		Latency      *struct {
			P99 *float64 `json:"p99_ms"`
		} `json:"latency"`
		PerTarget []struct {
			URL  string `json:"url"`
			Sent int64  `json:"sent"`
		} `json:"per_target"`
		Failed   []string         `json:"failed_thresholds"`
		Errors   map[string]int64 `json:"errors"`
		Accuracy *struct {
			Checked        int64  `json:"checked"`
			OverAdmissions int64  `json:"over_admissions"`
			Verdict        string `json:"verdict"`
		} `json:"accuracy"`
	}
	f := func(wantCode int, extra ...string) report {
		t.Helper()
		args := append([]string{"--target", base, "--rate", "300", "--duration", "1s", "--keys", "5",
			"--key-prefix", "json:", "--verify", "--json"}, extra...)
		stdout, stderr, err, _ := runLoadgen(t, args...)
		var ee *exitError
		switch {
		case wantCode == 0 && err != nil:
			t.Fatalf("loadgen %q = %v; want success\nstderr:\n%s", args, err, stderr)
		case wantCode != 0 && (!errors.As(err, &ee) || ee.code != wantCode):
			t.Fatalf("loadgen %q = %v; want exit code %d\nstderr:\n%s", args, err, wantCode, stderr)
		}
		// Every field is present, even the empty ones: null would break jq.
		var raw map[string]json.RawMessage
		if err := json.Unmarshal([]byte(stdout), &raw); err != nil {
			t.Fatalf("--json output is not JSON: %v\n%s", err, stdout)
		}
		for _, k := range []string{"sent", "achieved_rate", "latency", "per_target", "failed_thresholds", "errors", "accuracy"} {
			if v, ok := raw[k]; !ok || string(v) == "null" {
				t.Errorf("--json output field %q = %s; want a value", k, v)
			}
		}
		var r report
		if err := json.Unmarshal([]byte(stdout), &r); err != nil {
			t.Fatalf("--json output does not have the documented types: %v\n%s", err, stdout)
		}
		if r.Sent == nil || *r.Sent != 300 || r.AchievedRate == nil || *r.AchievedRate < 250 ||
			r.Latency == nil || r.Latency.P99 == nil || *r.Latency.P99 <= 0 {
			t.Errorf("--json = %s; want sent 300, achieved_rate about 300, latency.p99_ms > 0", stdout)
		}
		if len(r.PerTarget) != 1 || r.PerTarget[0].URL != base || r.PerTarget[0].Sent != 300 {
			t.Errorf("per_target = %+v; want all 300 to %s", r.PerTarget, base)
		}
		if r.Accuracy == nil || r.Accuracy.Checked != 300 || r.Accuracy.OverAdmissions != 0 || r.Accuracy.Verdict != "pass" {
			t.Errorf("accuracy = %+v; want 300 checked, 0 over-admissions, verdict pass", r.Accuracy)
		}
		return r
	}
	if r := f(0); r.Failed == nil || len(r.Failed) != 0 || len(r.Errors) != 0 {
		t.Errorf("passing run: failed_thresholds = %q, errors = %v; want [] and {}", r.Failed, r.Errors)
	}
	if r := f(2, "--min-rate", "1e9", "--key-prefix", "json:second:"); len(r.Failed) != 1 || !strings.Contains(r.Failed[0], "--min-rate") {
		t.Errorf("--min-rate 1e9: failed_thresholds = %q; want the --min-rate threshold", r.Failed)
	}
}

// TestLoadgenDroppedExitsTwo: a run that fell behind and dropped requests
// exits 2 by default (--max-dropped 0), and passes when they are allowed.
func TestLoadgenDroppedExitsTwo(t *testing.T) {
	t.Parallel()
	// One request at a time against a server that holds each for 1.5 s:
	// after the first, the generator is hopelessly behind.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { time.Sleep(1500 * time.Millisecond) }))
	t.Cleanup(srv.Close)
	args := []string{"--target", srv.URL, "--rate", "100", "--duration", "1s", "--max-inflight", "1", "--timeout", "5s"}
	stdout, stderr, err, _ := runLoadgen(t, args...)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(ee.Error(), "dropped > --max-dropped 0") {
		t.Fatalf("loadgen %q = %v; want exit 2 naming --max-dropped 0\nstdout:\n%s\nstderr:\n%s", args, err, stdout, stderr)
	}
	if !strings.Contains(stdout, "FAILED") || !strings.Contains(stdout, "dropped") {
		t.Errorf("text report does not name the dropped requests:\n%s", stdout)
	}
	if _, _, err, _ := runLoadgen(t, append(args, "--max-dropped", "1000")...); err != nil {
		t.Errorf("loadgen %q --max-dropped 1000 = %v; want success", args, err)
	}
}

// TestLoadgenVerdictExitsTwo: --verify ends with a verdict; a limit raised
// behind the verifier's back makes over-admissions, and the default
// --max-over-admissions 0 makes the exit status 2.
func TestLoadgenVerdictExitsTwo(t *testing.T) {
	t.Parallel()
	l := limiter.Limit{KeyPattern: "verdict:*", MaxRequests: 5, WindowSeconds: 1, Algorithm: limiter.FixedWindow}
	base := loadgenNode(t, []limiter.Limit{l})
	raised := make(chan error, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		l.MaxRequests = 100
		body, _ := json.Marshal(l)
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Post(base+"/api/v1/limits", "application/json", bytes.NewReader(body))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode/100 != 2 {
				err = fmt.Errorf("POST /api/v1/limits: %s", resp.Status)
			}
		}
		raised <- err
	}()
	stdout, stderr, err, _ := runLoadgen(t, "--target", base, "--rate", "200", "--duration", "2s", "--keys", "10",
		"--key-prefix", "verdict:", "--verify")
	if err := <-raised; err != nil {
		t.Fatalf("raising the limit behind the verifier's back: %v", err)
	}
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(ee.Error(), "over-admissions > --max-over-admissions 0") {
		t.Fatalf("loadgen --verify with the limit raised mid-run = %v; want exit 2 naming --max-over-admissions 0\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	if !strings.Contains(stdout, "verdict        FAIL (at most 0 over-admissions)") {
		t.Errorf("text report lacks the verdict line:\n%s", stdout)
	}
}

// rlsStandIn is an Envoy Rate Limit Service that admits everything and
// records each request.
type rlsStandIn struct {
	rls.UnimplementedRateLimitServiceServer
	mu   sync.Mutex
	seen []*rls.RateLimitRequest
}

func (s *rlsStandIn) ShouldRateLimit(_ context.Context, req *rls.RateLimitRequest) (*rls.RateLimitResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen = append(s.seen, req)
	return &rls.RateLimitResponse{OverallCode: rls.RateLimitResponse_OK}, nil
}

// TestLoadgenOtherTargets: the CLI drives any HTTP URL from templates
// (method, headers, a body from a file) and Envoy's gRPC API, keeping
// commas inside a header, a URL or a descriptor whole.
func TestLoadgenOtherTargets(t *testing.T) {
	t.Parallel()
	t.Run("http", func(t *testing.T) {
		t.Parallel()
		var (
			mu   sync.Mutex
			seen []string
		)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			mu.Lock()
			seen = append(seen, r.Method+" "+r.URL.RequestURI()+" "+r.Header.Get("X-Client")+" "+r.Header.Get("Content-Type")+" "+string(b))
			mu.Unlock()
			w.WriteHeader(http.StatusOK)
		}))
		t.Cleanup(srv.Close)
		bodyFile := filepath.Join(t.TempDir(), "body.json")
		if err := os.WriteFile(bodyFile, []byte(`{"key":"{key}","cost":{cost}}`), 0o600); err != nil {
			t.Fatal(err)
		}
		stdout, stderr, err, _ := runLoadgen(t, "--method", "http", "-t", srv.URL+"/auth?ids=1,2&k={key}", "--http-method", "PATCH",
			"-H", "X-Client: {key}, via loadgen", "--body-file", bodyFile, "--rate", "100", "-d", "1s", "--keys", "1", "--key-prefix", "h", "--cost", "2")
		if err != nil {
			t.Fatalf("loadgen --method http = %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
		}
		mu.Lock()
		defer mu.Unlock()
		want := `PATCH /auth?ids=1,2&k=h0 h0, via loadgen application/json {"key":"h0","cost":2}`
		if len(seen) != 100 || seen[0] != want || seen[99] != want {
			t.Errorf("the server saw %d requests, the first %q; want 100 of %q", len(seen), seen[0], want)
		}
		if !strings.Contains(stdout, "answers        100 allowed, 0 denied, 0 errors") {
			t.Errorf("report lacks 100 allowed:\n%s", stdout)
		}
	})
	t.Run("grpc", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := &rlsStandIn{}
		g := grpc.NewServer()
		rls.RegisterRateLimitServiceServer(g, s)
		go func() { _ = g.Serve(ln) }()
		t.Cleanup(g.Stop)
		stdout, stderr, err, _ := runLoadgen(t, "--method", "grpc", "-t", "grpc://"+ln.Addr().String(), "--domain", "edge",
			"--descriptor", "remote_address={key},tier=gold", "--rate", "100", "-d", "1s", "--keys", "1", "--key-prefix", "g")
		if err != nil {
			t.Fatalf("loadgen --method grpc = %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.seen) != 100 {
			t.Fatalf("the server saw %d requests; want 100", len(s.seen))
		}
		req := s.seen[0]
		if d := req.GetDescriptors(); req.GetDomain() != "edge" || len(d) != 1 || len(d[0].GetEntries()) != 2 ||
			d[0].GetEntries()[0].GetValue() != "g0" || d[0].GetEntries()[1].GetValue() != "gold" || req.GetHitsAddend() != 1 {
			t.Errorf("the server got %v; want domain edge, one descriptor remote_address=g0, tier=gold, hits_addend 1", req)
		}
	})
	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		_, _, err, _ := runLoadgen(t, "--method", "grpc", "-t", "grpc://127.0.0.1:1", "--descriptor", "a=b", "-d", "1s")
		if err == nil || !strings.Contains(err.Error(), "domain") {
			t.Errorf("loadgen --method grpc without --domain = %v; want an error naming --domain", err)
		}
		// An endless --body-file is read no further than the limit: refused, not a hang.
		_, _, err, _ = runLoadgen(t, "--method", "http", "-t", "http://127.0.0.1:1/{key}", "--body-file", "/dev/zero", "-d", "1s")
		if err == nil || !strings.Contains(err.Error(), "larger than") {
			t.Errorf("loadgen --body-file /dev/zero = %v; want an error naming the size limit", err)
		}
	})
}
