package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func runDemo(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	start := time.Now()
	err := run(ctx, append([]string{"ratelimiter", "demo", "--dir", t.TempDir()}, args...), &stdout, &stderr)
	t.Logf("demo %v took %v:\n%s", args, time.Since(start).Round(time.Second), stdout.String())
	if stderr.Len() > 0 {
		t.Logf("stderr:\n%s", stderr.String())
	}
	return stdout.String(), err
}

func mustContain(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q", w)
		}
	}
}

// TestDemoTour runs the demo end to end on a private redis-server with a
// short tour: the timeline shows the fault, what the operator saw,
// concluded and did, and the scorecard passes.
func TestDemoTour(t *testing.T) {
	out, err := runDemo(t, "--tour", "node-kill,redis-slow")
	if err != nil {
		t.Fatalf("demo: %v", err)
	}
	mustContain(t, out,
		"store: a private redis-server",
		"operator status page: http://127.0.0.1:",
		"injected: SIGKILL node-2",
		"operator saw: node_down:node-2",
		"operator concluded",
		"operator action #1 drain_node",
		"reverted: restarted node-2",
		"operator saw: redis_disconnected:node-",
		"TOTAL 2/2 passed",
		"stopping the cluster",
	)
}

// TestDemoWithoutRedis: with no redis-server on PATH the demo says so, runs
// on in-process stores, plays what they can show and skips the rest.
func TestDemoWithoutRedis(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	out, err := runDemo(t, "--tour", "hot-key,redis-slow")
	if err != nil {
		t.Fatalf("demo: %v", err)
	}
	mustContain(t, out,
		"store: in-process (no redis-server on PATH)",
		"operator saw: hot_key:user:flood-hot",
		"block_key",
		"SKIPPED: needs Redis",
		"TOTAL 1/1 passed (1 skipped)",
	)
}

func TestDemoUnknownScenario(t *testing.T) {
	_, err := runDemo(t, "--tour", "node-kill,meteor")
	if err == nil || !strings.Contains(err.Error(), `no scenario "meteor"`) {
		t.Fatalf("demo with an unknown scenario = %v; want an error naming it", err)
	}
}
