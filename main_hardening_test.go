package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/nodetest"
	"github.com/ratelimiter/ratelimiter/internal/testkit"
)

// TestNodeManagementFlags runs `ratelimiter node --management-listen
// --admin-token-file --admin-reads`: the token never appears on the
// command line, the management API is on its own address and wants the
// token even to read, and the data plane serves only checks and /health.
func TestNodeManagementFlags(t *testing.T) {
	data, mgmt := nodetest.FreeAddr(t), nodetest.FreeAddr(t)
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ADMIN_TOKEN", "")
	stop := startNodeCLI(t, "--listen", data, "--management-listen", mgmt,
		"--admin-token-file", token, "--admin-reads", "--node-id", "flags")
	get := func(url string, auth bool) int {
		req, _ := http.NewRequest("GET", url, nil)
		if auth {
			req.Header.Set("Authorization", "Bearer s3cret")
		}
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			return -1
		}
		r.Body.Close()
		return r.StatusCode
	}
	testkit.WaitFor(t, 5*time.Second, "the node to serve on "+mgmt, func() bool { return get("http://"+mgmt+"/health", false) == 200 })
	for _, c := range []struct {
		url  string
		auth bool
		want int
	}{
		{"http://" + data + "/api/v1/check?key=user:1", false, 200},
		{"http://" + data + "/health", false, 200},
		{"http://" + data + "/api/v1/limits", true, 404},
		{"http://" + data + "/metrics", false, 404},
		{"http://" + mgmt + "/api/v1/limits", false, 401},
		{"http://" + mgmt + "/api/v1/limits", true, 200},
		{"http://" + mgmt + "/metrics", false, 200},
	} {
		if got := get(c.url, c.auth); got != c.want {
			t.Errorf("GET %s (token %v) = %d; want %d", c.url, c.auth, got, c.want)
		}
	}
	r, err := http.Post("http://"+mgmt+"/api/v1/blocks/user:9", "application/json", strings.NewReader(`{"duration_seconds":5}`))
	if err != nil || r.StatusCode != 401 {
		t.Errorf("POST block without the token: %v %v; want 401", r, err)
	}
	stop()
}
