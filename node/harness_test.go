package node

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/ratelimiter/ratelimiter/config"
	"github.com/ratelimiter/ratelimiter/internal/testkit"
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
	n, err := New(cfg, shared, testkit.Logger(t, slog.LevelWarn), now)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tn := &testNode{Node: n, URL: "http://" + n.Addr(), cancel: cancel, done: make(chan error, 1)}
	go func() { tn.done <- n.Run(ctx) }()
	t.Cleanup(tn.stop)
	testkit.WaitFor(t, 5*time.Second, "node "+cfg.ID+" serving", func() bool {
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
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ch := testkit.StartChild(t, "node "+cfg.ID, "RATELIMITER_TEST_NODE", string(raw))
	return &childNode{cmd: ch.Cmd, URL: "http://" + ch.Line}
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
	resp := testkit.Call(t, "POST", base+"/api/v1/check", string(body), &r)
	return r, resp
}
