package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ratelimiter/ratelimiter/internal/nodetest"
	"github.com/ratelimiter/ratelimiter/internal/testkit"
	"github.com/ratelimiter/ratelimiter/node"
)

func TestEmbeddedConfigIsValid(t *testing.T) {
	f, err := loadConfig("")
	if err != nil {
		t.Fatalf("embedded config.toml: %v", err)
	}
	if len(f.Limits) == 0 || f.Limits[0].KeyPattern != "*" {
		t.Fatalf("embedded config has no default \"*\" limit first: %+v", f.Limits)
	}
}

func TestBadConfigRefusesToStart(t *testing.T) {
	f := func(name, content string, wants ...string) {
		t.Helper()
		path := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := run(ctx, []string{"ratelimiter", "node", "--config", path, "--listen", "127.0.0.1:0"}, &bytes.Buffer{}, &stderr)
		if err == nil {
			t.Fatalf("%s: the node started with a bad config", name)
		}
		for _, w := range wants {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", name, err, w)
			}
		}
	}
	f("unknown.toml", "[node]\nlisten = \"127.0.0.1:0\"\nlisen = \"x\"\n", "node.lisen", "unknown key", ":3:")
	f("limits.toml", "[[limits]]\nkey_pattern = \"a:*\"\nmax_requests = 5\nwindow_seconds = 10\n\n[[limits]]\nkey_pattern = \"b:*\"\nmax_requests = 5\nwindow_seconds = 0\nalgorithm = \"leaky\"\n",
		"limits[1].window_seconds", ":9:", "limits[1].algorithm", "leaky", ":10:")
	f("syntax.toml", "[node\nlisten = 1\n", "syntax.toml:1:6: toml: expected", "[node")
	f("type.toml", "[node]\nredis_timeout = 50\n", "node.redis_timeout")
	f("duration.toml", "[node]\nredis_timeout = \"fast\"\n", "node.redis_timeout", "fast")
	f("table.toml", "[nodes]\nlisten = \"x\"\n", "nodes", "unknown")
	f("mode.toml", "[node]\nfailure_mode = \"sometimes\"\n", "node.failure_mode", "sometimes")
	f("dup.toml", "[[limits]]\nkey_pattern = \"a\"\nmax_requests = 1\nwindow_seconds = 1\n[[limits]]\nkey_pattern = \"a\"\nmax_requests = 2\nwindow_seconds = 1\n",
		"limits[1].key_pattern", "duplicates")
}

// TestPrecedence checks flags over environment over file over defaults.
func TestPrecedence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(path, []byte("[node]\nid = \"from-file\"\nadmin_token = \"file-token\"\nredis_prefix = \"fileprefix\"\n"), 0o600)
	t.Setenv("NODE_ID", "from-env")
	t.Setenv("ADMIN_TOKEN", "env-token")
	var got node.Config
	app := &cli.App{Commands: []*cli.Command{nodeCommand()}, ExitErrHandler: func(*cli.Context, error) {}}
	app.Commands[0].Action = func(c *cli.Context) error {
		f, err := loadConfig(c.String("config"))
		if err != nil {
			return err
		}
		got = f.Node
		applyNodeFlags(c, &got)
		return nil
	}
	if err := app.Run([]string{"x", "node", "--config", path, "--admin-token", "flag-token"}); err != nil {
		t.Fatal(err)
	}
	if got.ID != "from-env" || got.AdminToken != "flag-token" || got.RedisPrefix != "fileprefix" || got.SyncInterval.Duration != 250*time.Millisecond {
		t.Fatalf("precedence: id %q token %q prefix %q sync %s; want env id, flag token, file prefix, default sync",
			got.ID, got.AdminToken, got.RedisPrefix, got.SyncInterval)
	}
}

// TestRunNode runs the node subcommand in-process on the embedded config
// and stops it with the context.
func TestRunNode(t *testing.T) {
	addr := nodetest.FreeAddr(t)
	stop := startNodeCLI(t, "--listen", addr, "--node-id", "inproc")
	var resp *http.Response
	testkit.WaitFor(t, 5*time.Second, "the node to serve on "+addr, func() bool {
		r, err := http.Post("http://"+addr+"/api/v1/check", "application/json", strings.NewReader(`{"key":"user:1"}`))
		if err != nil {
			return false
		}
		r.Body.Close()
		resp = r
		return true
	})
	if resp.StatusCode != 200 || resp.Header.Get("RateLimit-Policy") != `"user:*";q=100;w=60` {
		t.Fatalf("check: %d %q", resp.StatusCode, resp.Header.Get("RateLimit-Policy"))
	}
	stop()
}

// startNodeCLI runs `ratelimiter node --log-level warn args...` in
// process; stop cancels its context and fails the test unless run
// returns nil within 5 s.
func startNodeCLI(t *testing.T, args ...string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"ratelimiter", "node", "--log-level", "warn"}, args...), &bytes.Buffer{}, &bytes.Buffer{})
	}()
	return func() {
		t.Helper()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("node did not stop with its context")
		}
	}
}
