// Package nodetest starts rate-limiter nodes for the tests of the packages
// that drive nodes from outside (operator, loadgen, the CLI): in the test's
// own process, or as a child process a test can SIGKILL. It also holds the
// small pieces those tests share around a node: polling, logging to the
// test, a settable clock, a free address.
//
// Only tests import it. node's own tests cannot (it imports node), so they
// keep their own harness; nothing here may be needed by production code.
package nodetest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/config"
	"github.com/ratelimiter/ratelimiter/internal/redistest"
	"github.com/ratelimiter/ratelimiter/internal/testkit"
	"github.com/ratelimiter/ratelimiter/limiter"
	"github.com/ratelimiter/ratelimiter/node"
)

// Config is a node with fast loops, on a free loopback port and on srv when
// given (in memory otherwise): heartbeats every 200 ms, unhealthy after 1 s,
// limits synced every 100 ms. The limits are node.DefaultConfig's.
func Config(id string, srv *redistest.Server) node.Config {
	cfg := node.DefaultConfig()
	cfg.ID = id
	cfg.Listen = "127.0.0.1:0"
	cfg.HeartbeatInterval = config.Duration{Duration: 200 * time.Millisecond}
	cfg.UnhealthyAfter = config.Duration{Duration: time.Second}
	cfg.SyncInterval = config.Duration{Duration: 100 * time.Millisecond}
	if srv != nil {
		cfg.RedisURL = srv.URL()
	}
	return cfg
}

// Node is a node running in the test's process.
type Node struct {
	ID, URL string // URL is http://ADDR

	t      testing.TB
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// Start runs a node until the test ends (or Stop is called) and returns
// once it answers /health. It logs warnings and errors to the test.
func Start(t testing.TB, cfg node.Config) *Node {
	t.Helper()
	n, err := node.New(cfg, nil, testkit.Logger(t, slog.LevelWarn), time.Now)
	if err != nil {
		t.Fatalf("node.New(%s): %v", cfg.ID, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tn := &Node{ID: cfg.ID, URL: "http://" + n.Addr(), t: t, cancel: cancel, done: make(chan error, 1)}
	go func() { tn.done <- n.Run(ctx) }()
	t.Cleanup(tn.Stop)
	waitHealth(t, tn.URL)
	return tn
}

// Stop cancels the node and waits for Run to return; a Run error, or a
// node still running after 10 s, fails the test. Later calls do nothing.
func (n *Node) Stop() {
	n.once.Do(func() {
		n.cancel()
		select {
		case err := <-n.done:
			if err != nil {
				n.t.Errorf("node %s: Run = %v", n.ID, err)
			}
		case <-time.After(10 * time.Second):
			n.t.Errorf("node %s did not stop within 10s", n.ID)
		}
	})
}

func waitHealth(t testing.TB, base string) {
	t.Helper()
	testkit.WaitFor(t, 5*time.Second, base+" serving", func() bool {
		resp, err := http.Get(base + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
}

// WaitLimits polls base until GET /api/v1/limits lists every pattern of
// limits, for at most 5 s.
func WaitLimits(t testing.TB, base string, limits []limiter.Limit) {
	t.Helper()
	client := &http.Client{Timeout: time.Second}
	var last string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		resp, err := client.Get(base + "/api/v1/limits")
		if err != nil {
			last = err.Error()
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		last = string(body)
		all := resp.StatusCode == http.StatusOK
		for _, l := range limits {
			all = all && strings.Contains(last, `"key_pattern":"`+l.KeyPattern+`"`)
		}
		if all {
			return
		}
	}
	t.Fatalf("%s did not serve its limits within 5s; last answer: %s", base, last)
}

// RunUntil runs run until cond holds (polled every 10 ms), then cancels
// its context and returns what run returned. A run that returns first, on
// its own, returns at once (nil becomes an error: it stopped before what).
// Unlike a short fixed deadline, this cannot cut a loop off in a slow
// SQLite fsync or tick on a loaded machine before it got to what the test
// looks at; cond not holding within 10 s fails the test.
func RunUntil(t testing.TB, run func(context.Context) error, what string, cond func() bool) error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	stop := func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatalf("run did not return within 10s of cancel")
			return nil
		}
	}
	deadline := time.After(10 * time.Second)
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for {
		select {
		case err := <-done:
			if err == nil {
				err = fmt.Errorf("run returned nil, uncancelled, before %s", what)
			}
			return err
		case <-deadline:
			err := stop()
			t.Fatalf("run: no %s within 10s (it returned %v)", what, err)
		case <-poll.C:
			if cond() {
				return stop()
			}
		}
	}
}

// FreeAddr is a loopback host:port that nobody listens on now: an address
// to give a node started through the CLI, or a dead target.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}
