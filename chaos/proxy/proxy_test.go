package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/redistest"
	"github.com/ratelimiter/ratelimiter/internal/testkit"
)

// startProxy runs a proxy in front of a fresh redis-server.
func startProxy(t *testing.T) (*Proxy, *redistest.Server) {
	t.Helper()
	rs := redistest.Start(t)
	p, err := New("127.0.0.1:0", rs.Addr, testkit.Logger(t, slog.LevelInfo))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return p, rs
}

// respConn is one raw Redis connection, so the test sees exactly what the
// wire does (a client library would retry and reconnect).
type respConn struct {
	net.Conn
	r *bufio.Reader
}

func dialRESP(t *testing.T, addr string) *respConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &respConn{Conn: c, r: bufio.NewReader(c)}
}

// do sends one inline command and reads one reply line, within timeout.
func (c *respConn) do(cmd string, timeout time.Duration) (string, time.Duration, error) {
	start := time.Now()
	c.SetDeadline(start.Add(timeout))
	if _, err := io.WriteString(c, cmd+"\r\n"); err != nil {
		return "", time.Since(start), err
	}
	line, err := c.r.ReadString('\n')
	return strings.TrimSpace(line), time.Since(start), err
}

func mustPing(t *testing.T, c *respConn) time.Duration {
	t.Helper()
	reply, took, err := c.do("PING", 2*time.Second)
	if err != nil || reply != "+PONG" {
		t.Fatalf("PING = %q, %v; want +PONG", reply, err)
	}
	return took
}

func setFault(t *testing.T, p *Proxy, f Fault) {
	t.Helper()
	if _, err := p.Set(f); err != nil {
		t.Fatalf("Set(%+v): %v", f, err)
	}
}

// fastPing is the quickest of up to three PINGs on c, stopping at the
// first under unslowed. A latency fault delays every PING by at least its
// latency minus jitter, so one fast PING proves no fault acts; taking the
// best of three keeps a single scheduling stall on a busy machine (or the
// proxy's upstream dial, which the first PING on a connection waits for)
// from passing for a fault.
func fastPing(t *testing.T, c *respConn) time.Duration {
	t.Helper()
	best := time.Duration(1<<63 - 1)
	for range 3 {
		if best = min(best, mustPing(t, c)); best <= unslowed {
			break
		}
	}
	return best
}

// unslowed bounds a PING that no latency fault acts on. The faults in
// TestProxyLatency delay a PING by at least 200 ms, so the two stay apart
// by far more than a scheduling stall.
const unslowed = 150 * time.Millisecond

func TestProxyLatency(t *testing.T) {
	p, _ := startProxy(t)
	c := dialRESP(t, p.Addr())
	if took := fastPing(t, c); took > unslowed {
		t.Fatalf("PING without fault took %v; want at most %v", took, unslowed)
	}
	setFault(t, p, Fault{Type: Latency, LatencyMs: 300, JitterMs: 50, Direction: Downstream})
	for range 5 {
		if took := mustPing(t, c); took < 250*time.Millisecond {
			t.Fatalf("PING under 300±50 ms latency took %v; want at least 250 ms", took)
		}
	}
	setFault(t, p, Fault{Name: "up", Type: Latency, LatencyMs: 200, Direction: Upstream})
	if took := mustPing(t, c); took < 450*time.Millisecond {
		t.Fatalf("PING under both latencies took %v; want at least 450 ms", took)
	}
	p.ClearAll()
	if took := fastPing(t, c); took > unslowed {
		t.Fatalf("PING after clearing took %v; want at most %v", took, unslowed)
	}
}

func TestProxyBlackholeHoldsAndReleases(t *testing.T) {
	p, _ := startProxy(t)
	c := dialRESP(t, p.Addr())
	mustPing(t, c)
	setFault(t, p, Fault{Type: Blackhole})
	// The connection stays open but nothing comes back: the call times out.
	_, _, err := c.do("PING", 300*time.Millisecond)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("PING into a blackhole: err = %v; want a timeout", err)
	}
	// New connections are accepted and held too.
	c2 := dialRESP(t, p.Addr())
	if _, _, err := c2.do("PING", 200*time.Millisecond); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("PING on a new connection into a blackhole: err = %v; want a timeout", err)
	}
	// Held bytes are delivered, never lost, once the fault clears, so the
	// stream stays in step like a healed partition.
	if !p.Clear(Blackhole) {
		t.Fatal("Clear(blackhole) = false")
	}
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if line, err := c.r.ReadString('\n'); err != nil || strings.TrimSpace(line) != "+PONG" {
		t.Fatalf("held reply = %q, %v; want +PONG", line, err)
	}
	mustPing(t, c)
}

func TestProxyResetPeer(t *testing.T) {
	p, _ := startProxy(t)
	c := dialRESP(t, p.Addr())
	mustPing(t, c)
	setFault(t, p, Fault{Type: ResetPeer, Direction: Upstream})
	_, _, err := c.do("PING", time.Second)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("PING after reset_peer: err = %v; want connection reset", err)
	}
	p.ClearAll()
	mustPing(t, dialRESP(t, p.Addr()))
}

func TestProxyDownRefusesThenRecovers(t *testing.T) {
	p, _ := startProxy(t)
	c := dialRESP(t, p.Addr())
	mustPing(t, c)
	setFault(t, p, Fault{Type: Down})
	if _, _, err := c.do("PING", time.Second); err == nil {
		t.Fatal("PING on a connection cut by down succeeded")
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial while down: err = %v; want connection refused", err)
	}
	p.ClearAll()
	mustPing(t, dialRESP(t, p.Addr()))
}

func TestProxyBandwidth(t *testing.T) {
	p, rs := startProxy(t)
	value := strings.Repeat("x", 100<<10)
	if err := rs.Client(t).Do(context.Background(), rs.Client(t).B().Set().Key("big").Value(value).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	c := dialRESP(t, p.Addr())
	setFault(t, p, Fault{Type: Bandwidth, RateKBps: 200, Direction: Downstream})
	start := time.Now()
	c.SetDeadline(start.Add(5 * time.Second))
	io.WriteString(c, "GET big\r\n")
	if _, err := c.r.ReadString('\n'); err != nil { // $102400
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c.r, make([]byte, len(value)+2)); err != nil {
		t.Fatal(err)
	}
	// 100 KiB at 200 KiB/s: half a second; allow for the first chunk's
	// pacing landing after its write.
	if took := time.Since(start); took < 400*time.Millisecond {
		t.Fatalf("100 KiB at 200 KiB/s took %v; want at least 400 ms", took)
	}
}

// TestProxyToxicity: a 50% fault hits about half of the connections, and
// always the same ones.
func TestProxyToxicity(t *testing.T) {
	p, _ := startProxy(t)
	// The latency acts both ways, so a slowed PING takes at least 400 ms and
	// an unslowed one a few ms: the 200 ms line between them leaves 200 ms
	// of margin on either side for scheduling stalls.
	const latency, slowAfter = 200, 200 * time.Millisecond
	setFault(t, p, Fault{Type: Latency, LatencyMs: latency, Toxicity: 0.5})
	const conns = 40
	cs := make([]*respConn, conns)
	for i := range cs {
		cs[i] = dialRESP(t, p.Addr())
	}
	// pingAll PINGs every connection at once, so that a round costs one
	// slowed PING rather than twenty of them in a row.
	pingAll := func() []bool {
		t.Helper()
		slow := make([]bool, conns)
		errs := make([]error, conns)
		var wg sync.WaitGroup
		for i, c := range cs {
			wg.Go(func() {
				reply, took, err := c.do("PING", 5*time.Second)
				if err == nil && reply != "+PONG" {
					err = fmt.Errorf("reply %q", reply)
				}
				if err != nil {
					errs[i] = fmt.Errorf("connection %d: PING: %w", i, err)
				}
				slow[i] = took >= slowAfter
				if slow[i] && took < 2*latency*time.Millisecond {
					errs[i] = fmt.Errorf("connection %d: PING took %v: neither unslowed nor slowed both ways by %d ms", i, took, latency)
				}
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		return slow
	}
	slow := pingAll()
	n := 0
	for i := range cs {
		if slow[i] {
			n++
		}
	}
	for range 2 {
		again := pingAll()
		for i := range cs {
			if again[i] != slow[i] {
				t.Fatalf("connection %d: slow = %v, then %v; want the same draw every time", i, slow[i], again[i])
			}
		}
	}
	// Binomial(40, 0.5): outside [8, 32] has probability below 1e-4.
	if n < 8 || n > 32 {
		t.Fatalf("%d of %d connections slowed by a 0.5 toxicity", n, conns)
	}
}

func TestProxyAPI(t *testing.T) {
	p, _ := startProxy(t)
	srv := httptest.NewServer(p.Handler())
	defer srv.Close()
	do := func(method, path, body string, wantStatus int, wantIn string) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		got, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != wantStatus || !strings.Contains(string(got), wantIn) {
			t.Fatalf("%s %s %s = %d %s; want %d containing %q", method, path, body, resp.StatusCode, got, wantStatus, wantIn)
		}
		if resp.StatusCode >= 400 && resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Fatalf("%s %s: Content-Type %q; want application/problem+json", method, path, resp.Header.Get("Content-Type"))
		}
	}
	do("PUT", "/faults/slow", `{"type":"latency","latency_ms":5,"direction":"upstream"}`, 200, `"name":"slow"`)
	do("POST", "/faults", `{"type":"blackhole","toxicity":0.25}`, 200, `"name":"blackhole"`)
	do("GET", "/faults", "", 200, `"toxicity":0.25`)
	do("GET", "/health", "", 200, fmt.Sprintf(`"listen":%q`, p.Addr()))
	do("PUT", "/faults/x", `{"type":"latency"`, 400, "invalid JSON")
	do("PUT", "/faults/x", `{"type":"latency","latency_ms":5,"color":"red"}`, 400, "unknown field")
	do("PUT", "/faults/x", `{"type":"teleport"}`, 400, "unknown type")
	do("PUT", "/faults/x", `{"type":"latency","latency_ms":5,"jitter_ms":9}`, 400, "jitter_ms")
	do("PUT", "/faults/x", `{"type":"blackhole","direction":"sideways"}`, 400, "unknown direction")
	do("PUT", "/faults/x", `{"type":"blackhole","toxicity":1.5}`, 400, "toxicity")
	do("PUT", "/faults/x", `{"name":"y","type":"blackhole"}`, 400, "differs")
	do("PUT", "/faults/x", strings.Repeat(" ", maxFaultBody+1), 400, "body over")
	do("DELETE", "/faults/nope", "", 404, "no fault")
	do("DELETE", "/faults/slow", "", 204, "")
	if fs := p.Faults(); len(fs) != 1 || fs[0].Name != "blackhole" {
		t.Fatalf("faults after deleting slow: %+v", fs)
	}
	do("DELETE", "/faults", "", 204, "")
	if fs := p.Faults(); len(fs) != 0 {
		t.Fatalf("faults after clearing: %+v", fs)
	}
}
