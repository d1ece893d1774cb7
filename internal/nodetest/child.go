package nodetest

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/testkit"
	"github.com/ratelimiter/ratelimiter/node"
)

// childEnv, when set (to a node.Config in JSON), makes the test binary run
// that node instead of its tests.
const childEnv = "RATELIMITER_NODETEST_CHILD"

// RunChildIfRequested runs the node a StartChild asked for and exits the
// process when it stops; otherwise it returns at once. Every TestMain of a
// package that uses StartChild calls it first.
func RunChildIfRequested() {
	raw := os.Getenv(childEnv)
	if raw == "" {
		return
	}
	if err := runChild(raw); err != nil {
		fmt.Fprintln(os.Stderr, "child node:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func runChild(raw string) error {
	var cfg node.Config
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		return fmt.Errorf("cannot decode %s: %w", childEnv, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	n, err := node.New(cfg, nil, slog.New(slog.NewTextHandler(os.Stderr, nil)), time.Now)
	if err != nil {
		return err
	}
	// The parent learns the address from the first line of stdout.
	if _, err := os.Stdout.WriteString(n.Addr() + "\n"); err != nil {
		return err
	}
	return n.Run(ctx)
}

// Child is a node in its own process, for tests that SIGKILL one.
type Child struct {
	ID, URL string // URL is http://ADDR

	cmd *exec.Cmd
}

// StartChild re-executes the test binary as one node with cfg and returns
// once it answers /health; it is killed at cleanup, and its stderr is
// logged if the test failed. The package's TestMain must call
// RunChildIfRequested.
func StartChild(t *testing.T, cfg node.Config) *Child {
	t.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ch := testkit.StartChild(t, "node "+cfg.ID, childEnv, string(raw))
	c := &Child{ID: cfg.ID, URL: "http://" + ch.Line, cmd: ch.Cmd}
	waitHealth(t, c.URL)
	return c
}

// Kill SIGKILLs the child and waits for it to exit.
func (c *Child) Kill(t testing.TB) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL node %s: %v", c.ID, err)
	}
	_ = c.cmd.Wait()
}
