package node

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ratelimiter/ratelimiter/internal/testkit"
)

// TestManagementListen: with management_listen, the data plane answers
// only the checks (envoyproxy/ratelimit's POST /json included) and
// /health; the management API and /metrics answer on their own address,
// which serves no checks.
func TestManagementListen(t *testing.T) {
	cfg := testConfig("split", nil)
	cfg.ManagementListen = "127.0.0.1:0"
	cfg.AdminToken = "s3cret"
	n := startNode(t, cfg, nil, nil)
	mgmt := "http://" + n.ManagementAddr()
	if mgmt == n.URL {
		t.Fatalf("management address %s is the data plane's", mgmt)
	}
	f := func(base, method, path, body string, want int, hdr ...string) {
		t.Helper()
		if resp := testkit.Call(t, method, base+path, body, nil, hdr...); resp.StatusCode != want {
			t.Fatalf("%s %s%s: %d; want %d", method, base, path, resp.StatusCode, want)
		} else if want == 404 && resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Fatalf("%s %s%s: 404 without a problem body", method, base, path)
		}
	}
	f(n.URL, "POST", "/api/v1/check", `{"key":"log:a"}`, 200)
	f(n.URL, "GET", "/api/v1/check?key=log:a", "", 200)
	f(n.URL, "POST", "/api/v1/check/batch", `{"checks":[{"key":"log:a"}]}`, 200)
	f(n.URL, "POST", "/json", envoyJSON, 200)
	f(n.URL, "GET", "/health", "", 200)
	for _, p := range []string{"/api/v1/limits", "/api/v1/nodes", "/api/v1/blocks", "/api/v1/hot-keys", "/metrics", "/api/v1/counters/log:a"} {
		f(n.URL, "GET", p, "", 404)
	}
	f(n.URL, "POST", "/api/v1/blocks/log:a", `{"duration_seconds":5}`, 404, admin...)
	// Paths that only normalize to a management one stay off the data plane.
	for _, p := range []string{"/api/v1/./limits", "//api/v1/limits", "/api/v1/check/../limits", "/health/../metrics", "/api/v1/%6cimits"} {
		f(n.URL, "GET", p, "", 404)
	}
	f(n.URL, "POST", "/api/v1/nodes/split/drain", "", 404, admin...)

	f(mgmt, "GET", "/api/v1/limits", "", 200)
	f(mgmt, "GET", "/api/v1/counters/log:a", "", 200)
	f(mgmt, "GET", "/metrics", "", 200)
	f(mgmt, "GET", "/health", "", 200)
	f(mgmt, "POST", "/api/v1/blocks/log:b", `{"duration_seconds":5}`, 200, admin...)
	f(mgmt, "POST", "/api/v1/blocks/log:b", `{"duration_seconds":5}`, 401)
	f(mgmt, "POST", "/api/v1/check", `{"key":"log:a"}`, 404)
	f(mgmt, "POST", "/api/v1/check/batch", `{"checks":[{"key":"log:a"}]}`, 404)
	f(mgmt, "POST", "/json", envoyJSON, 404)
}

// envoyJSON is envoyproxy/ratelimit's POST /json body, for a domain with no
// descriptors configured: OK, as envoyproxy/ratelimit answers it.
const envoyJSON = `{"domain":"none","descriptors":[{"entries":[{"key":"k","value":"v"}]}]}`

// TestAdminTokenFileAndReads: the token comes from a file (whitespace
// around it ignored); with admin_reads, reads need it too, while the
// checks, /health and /metrics do not.
func TestAdminTokenFileAndReads(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig("reads", nil)
	cfg.AdminTokenFile = file
	cfg.AdminReads = true
	n := startNode(t, cfg, nil, nil)
	f := func(method, path, body string, want int, hdr ...string) {
		t.Helper()
		if resp := testkit.Call(t, method, n.URL+path, body, nil, hdr...); resp.StatusCode != want {
			t.Fatalf("%s %s: %d; want %d", method, path, resp.StatusCode, want)
		}
	}
	for _, p := range []string{"/api/v1/limits", "/api/v1/nodes", "/api/v1/blocks", "/api/v1/hot-keys", "/api/v1/counters/log:a", "/api/v1/cluster/state"} {
		f("GET", p, "", 401)
		f("GET", p, "", 401, "Authorization", "Bearer wrong")
		f("GET", p, "", 200, admin...)
	}
	f("POST", "/api/v1/blocks/log:a", `{"duration_seconds":5}`, 401)
	f("POST", "/api/v1/blocks/log:a", `{"duration_seconds":5}`, 200, admin...)
	f("POST", "/api/v1/check", `{"key":"log:b"}`, 200)
	f("GET", "/health", "", 200)
	f("GET", "/metrics", "", 200)
}

func TestManagementConfigProblems(t *testing.T) {
	f := func(edit func(*Config), want string) {
		t.Helper()
		cfg := testConfig("bad", nil)
		edit(&cfg)
		_, err := New(cfg, nil, testkit.Logger(t, slog.LevelWarn), nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("New = %v; want an error with %q", err, want)
		}
	}
	f(func(c *Config) { c.AdminToken, c.AdminTokenFile = "a", "/x" }, "admin_token_file")
	f(func(c *Config) { c.AdminReads = true }, "admin_reads")
	f(func(c *Config) { c.ManagementListen = "nope" }, "management_listen")
	f(func(c *Config) { c.AdminTokenFile = filepath.Join(t.TempDir(), "missing") }, "cannot read admin_token_file")
	empty := filepath.Join(t.TempDir(), "empty")
	_ = os.WriteFile(empty, []byte("\n"), 0o600)
	f(func(c *Config) { c.AdminTokenFile = empty }, "is empty")
	big := filepath.Join(t.TempDir(), "big")
	_ = os.WriteFile(big, []byte(strings.Repeat("t", maxAdminTokenFile+1)), 0o600)
	f(func(c *Config) { c.AdminTokenFile = big }, "is larger than 4096 bytes")
	// A device that never ends is refused at once, not read into memory.
	f(func(c *Config) { c.AdminTokenFile = "/dev/zero" }, "is larger than 4096 bytes")
	f(func(c *Config) { c.AdminTokenFile = t.TempDir() }, "cannot read admin_token_file")
}
