package node

import (
	"context"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/config"
	"github.com/ratelimiter/ratelimiter/internal/testkit"
	"log/slog"
)

// hangingAddr is a loopback address where a TCP connect hangs: a socket
// that listens with a backlog of 0, never accepts, and whose one queue
// place is taken, so the kernel drops every further SYN.
func hangingAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(sa.(*syscall.SockaddrInet4).Port)
	for range 4 { // fill the queue; the connects that no longer fit time out
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			break
		}
		t.Cleanup(func() { c.Close() })
	}
	if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
		c.Close()
		t.Fatalf("a connect to %s succeeded: the queue is not full", addr)
	}
	return addr
}

// TestDialTimeout: connecting to Redis gives up after the URL's
// dial_timeout, or else after 20 × redis_timeout (at least 1 s), never after
// a fixed second whatever redis_timeout says.
func TestDialTimeout(t *testing.T) {
	addr := hangingAddr(t)
	f := func(query string, redisTimeout, atLeast, below time.Duration) {
		t.Helper()
		cfg := testConfig("dial", nil)
		cfg.RedisURL = "redis://" + addr + query
		cfg.RedisTimeout = config.Duration{Duration: redisTimeout}
		n, err := New(cfg, nil, testkit.Logger(t, slog.LevelWarn), time.Now)
		if err != nil {
			t.Fatal(err)
		}
		defer n.store.Close()
		start := time.Now()
		err = n.store.Ping(context.Background())
		took := time.Since(start)
		if err == nil || took < atLeast || took >= below {
			t.Errorf("redis_timeout %s, URL %q: Ping = %v after %s; want an error after %s to %s", redisTimeout, query, err, took, atLeast, below)
		}
	}
	f("", 100*time.Millisecond, 1800*time.Millisecond, 4*time.Second)                    // 20 × 100 ms
	f("?dial_timeout=2500ms", 10*time.Millisecond, 2300*time.Millisecond, 5*time.Second) // the URL's
	f("?dial_timeout=300ms", time.Second, 0, 1500*time.Millisecond)                      // not 20 s
}
