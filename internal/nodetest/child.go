package nodetest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
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
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(raw))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &testkit.Buffer{}
	cmd.Stderr = stderr
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
		r := bufio.NewReader(out)
		s, _ := r.ReadString('\n')
		line <- strings.TrimSpace(s)
		_, _ = io.Copy(io.Discard, r)
	}()
	select {
	case addr := <-line:
		if addr == "" {
			t.Fatalf("child node %s exited without an address (does TestMain call nodetest.RunChildIfRequested first?); stderr:\n%s", cfg.ID, stderr.String())
		}
		c := &Child{ID: cfg.ID, URL: "http://" + addr, cmd: cmd}
		waitHealth(t, c.URL)
		return c
	case <-time.After(10 * time.Second):
		t.Fatalf("child node %s did not start; stderr:\n%s", cfg.ID, stderr.String())
	}
	return nil
}

// Kill SIGKILLs the child and waits for it to exit.
func (c *Child) Kill(t testing.TB) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL node %s: %v", c.ID, err)
	}
	_ = c.cmd.Wait()
}
