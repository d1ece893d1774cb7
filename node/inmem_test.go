package node

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/ratelimiter/ratelimiter/internal/testkit"
	"github.com/ratelimiter/ratelimiter/node/store"
)

// memNode is a node serving its real handler on an in-memory listener over
// the in-process store, with no background loops: fast enough to take
// thousands of requests per second from a fuzzer.
type memNode struct {
	*Node
	ln *fasthttputil.InmemoryListener
}

func startMemNode(t testing.TB, cfg Config) *memNode {
	t.Helper()
	cfg.Listen = "127.0.0.1:0"
	clock := testkit.NewClock()
	log := testkit.Logger(t, slog.LevelWarn)
	if _, fuzzing := t.(*testing.F); fuzzing {
		// A fuzz target's workers must not log through F from the
		// server's goroutines; the properties checked say what matters.
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	n, err := New(cfg, store.NewMemoryStore(clock.Now), log, clock.Now)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	n.startup(context.Background()) // sync and heartbeat once, so the node is in the registry
	ln := fasthttputil.NewInmemoryListener()
	done := make(chan struct{})
	go func() { defer close(done); _ = n.server.Serve(ln) }()
	t.Cleanup(func() {
		_ = n.server.Shutdown()
		_ = ln.Close()
		<-done
		_ = n.ln.Close()
	})
	return &memNode{Node: n, ln: ln}
}

// raw writes req as it is and reads one response; it fails the test unless
// the node answers with a complete HTTP response.
func (m *memNode) raw(t testing.TB, req []byte) *fasthttp.Response {
	t.Helper()
	c, err := m.ln.Dial()
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	go func() { _, _ = c.Write(req) }()
	resp := new(fasthttp.Response)
	resp.SkipBody = bytes.HasPrefix(req, []byte("HEAD "))
	if err := resp.Read(bufio.NewReader(c)); err != nil {
		t.Fatalf("request %.200q: no complete response: %v", req, err)
	}
	return resp
}

// do sends one well-formed request.
func (m *memNode) do(t testing.TB, method, uri, body string, hdr ...string) *fasthttp.Response {
	t.Helper()
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.Header.SetMethod(method)
	req.SetRequestURI("http://node" + uri)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if body != "" {
		req.SetBodyString(body)
	}
	c := &fasthttp.Client{Dial: func(string) (net.Conn, error) { return m.ln.Dial() }}
	resp := new(fasthttp.Response)
	if err := c.DoTimeout(req, resp, 10*time.Second); err != nil {
		t.Fatalf("%s %s: %v", method, uri, err)
	}
	return resp
}
