package node

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/ratelimiter/ratelimiter/config"
	"github.com/ratelimiter/ratelimiter/limiter"
	"github.com/ratelimiter/ratelimiter/node/store"
)

// TestMain doubles as a node process for tests that must kill one for real:
// with RATELIMITER_TEST_NODE set, the test binary runs that node instead.
func TestMain(m *testing.M) {
	if raw := os.Getenv("RATELIMITER_TEST_NODE"); raw != "" {
		runChildNode(raw)
		return
	}
	os.Exit(m.Run())
}

func runChildNode(raw string) {
	var cfg Config
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		panic(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	n, err := New(cfg, nil, slog.New(slog.NewTextHandler(os.Stderr, nil)), time.Now)
	if err != nil {
		panic(err)
	}
	os.Stdout.WriteString(n.Addr() + "\n")
	if err := n.Run(ctx); err != nil {
		panic(err)
	}
}

// testLimits is a small set covering every algorithm.
func testLimits() []limiter.Limit {
	return []limiter.Limit{
		{KeyPattern: "*", MaxRequests: 1000, WindowSeconds: 60},
		{KeyPattern: "log:*", MaxRequests: 10, WindowSeconds: 10, Algorithm: limiter.SlidingLog},
		{KeyPattern: "sw:*", MaxRequests: 10, WindowSeconds: 10, Algorithm: limiter.SlidingWindow},
		{KeyPattern: "tb:*", MaxRequests: 10, WindowSeconds: 10, Algorithm: limiter.TokenBucket, Burst: 5},
		{KeyPattern: "fw:*", MaxRequests: 10, WindowSeconds: 10, Algorithm: limiter.FixedWindow},
		{KeyPattern: "closed:*", MaxRequests: 10, WindowSeconds: 10, FailureMode: limiter.FailClosed},
		{KeyPattern: "shadow:*", MaxRequests: 2, WindowSeconds: 10, Shadow: true},
	}
}

// backend is a Redis deployment that tests run nodes on: one redis-server
// (*redistest.Server) or a Redis Cluster (*redistest.Cluster).
type backend interface {
	URL() string
	Client(testing.TB) rueidis.Client
}

// testConfig is a node config with fast loops, on srv when given.
func testConfig(id string, srv backend) Config {
	cfg := DefaultConfig()
	cfg.ID = id
	cfg.Listen = "127.0.0.1:0"
	cfg.HeartbeatInterval = config.Duration{Duration: 200 * time.Millisecond}
	cfg.UnhealthyAfter = config.Duration{Duration: time.Second}
	cfg.SyncInterval = config.Duration{Duration: 100 * time.Millisecond}
	cfg.Limits = testLimits()
	if srv != nil {
		cfg.RedisURL = srv.URL()
	}
	return cfg
}

// exactConfig is testConfig for tests that count exact decisions while
// Redis stays up. The default 50 ms redis_timeout answers a check by its
// failure mode when one call is late, which a stall of the shared 2-core
// CI machine can cause; the tests of that behaviour use testConfig.
func exactConfig(id string, srv backend) Config {
	cfg := testConfig(id, srv)
	cfg.RedisTimeout.Duration = time.Second
	return cfg
}

// awayFromWindowEdge sleeps past the next edge of fixed windows of length w
// when less than 2 s is left before it, so that a short burst of checks
// stays inside one window. Redis runs on this host, so its TIME and
// time.Now agree.
func awayFromWindowEdge(w time.Duration) {
	if left := w - time.Duration(time.Now().UnixNano())%w; left < 2*time.Second {
		time.Sleep(left + 50*time.Millisecond)
	}
}

// testNode is a node running in this process.
type testNode struct {
	*Node
	URL    string
	cancel context.CancelFunc
	done   chan error
}

// startNode runs a node until the test ends (or stop is called).
func startNode(t testing.TB, cfg Config, shared store.Store, now func() time.Time) *testNode {
	t.Helper()
	if now == nil {
		now = time.Now
	}
	n, err := New(cfg, shared, testLogger(t), now)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tn := &testNode{Node: n, URL: "http://" + n.Addr(), cancel: cancel, done: make(chan error, 1)}
	go func() { tn.done <- n.Run(ctx) }()
	t.Cleanup(tn.stop)
	waitFor(t, 5*time.Second, "node "+cfg.ID+" serving", func() bool {
		resp, err := http.Get(tn.URL + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	return tn
}

var stopOnce sync.Map

func (tn *testNode) stop() {
	if _, done := stopOnce.LoadOrStore(tn, true); done {
		return
	}
	tn.cancel()
	select {
	case <-tn.done:
	case <-time.After(10 * time.Second):
		panic("node did not stop within 10s")
	}
}

// childNode is a node in its own process, for SIGKILL and SIGTERM.
type childNode struct {
	cmd *exec.Cmd
	URL string
}

func startChild(t *testing.T, cfg Config) *childNode {
	t.Helper()
	raw, _ := json.Marshal(cfg)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "RATELIMITER_TEST_NODE="+string(raw))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("child node %s stderr:\n%s", cfg.ID, stderr.String())
		}
	})
	line := make(chan string, 1)
	go func() {
		b := make([]byte, 128)
		k, _ := out.Read(b)
		line <- strings.TrimSpace(string(b[:k]))
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case addr := <-line:
		return &childNode{cmd: cmd, URL: "http://" + addr}
	case <-time.After(10 * time.Second):
		t.Fatalf("child node %s did not start; stderr:\n%s", cfg.ID, stderr.String())
	}
	return nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// waitFor polls cond every 20ms until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if cond() {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// eventually polls cond until it holds or timeout passes, and says which.
func eventually(timeout time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(timeout); ; time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// call sends one request and decodes a JSON answer into out (when not nil).
func call(t testing.TB, method, url, body string, out any, hdr ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: cannot decode %q: %v", method, url, data, err)
		}
	}
	resp.Body = io.NopCloser(bytes.NewReader(data))
	return resp
}

// checkResult is the JSON body of POST /api/v1/check.
type checkResult struct {
	Allowed      bool   `json:"allowed"`
	Key          string `json:"key"`
	Policy       string `json:"policy"`
	Limit        int64  `json:"limit"`
	Remaining    int64  `json:"remaining"`
	ResetAfterMs int64  `json:"reset_after_ms"`
	RetryAfterMs int64  `json:"retry_after_ms"`
	Reason       string `json:"reason"`
}

func check(t testing.TB, base, key string, cost int64) (checkResult, *http.Response) {
	t.Helper()
	var r checkResult
	body, _ := json.Marshal(map[string]any{"key": key, "cost": cost})
	resp := call(t, "POST", base+"/api/v1/check", string(body), &r)
	return r, resp
}

// fakeClock is a settable clock for tests.
type fakeClock struct{ us atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.us.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro())
	return c
}
func (c *fakeClock) Now() time.Time      { return time.UnixMicro(c.us.Load()) }
func (c *fakeClock) Add(d time.Duration) { c.us.Add(d.Microseconds()) }
