package node

import (
	"net/http"
	"strings"
	"testing"

	"github.com/ratelimiter/ratelimiter/limiter"
)

func TestForwardAuthDenyStatus(t *testing.T) {
	cfg := testConfig("deny", nil)
	cfg.Limits = []limiter.Limit{{KeyPattern: "*", MaxRequests: 1, WindowSeconds: 60}}
	cfg.ForwardAuthDenyStatus = http.StatusUnauthorized
	n := startNode(t, cfg, nil, nil)
	get := func(query string) *http.Response {
		t.Helper()
		return call(t, "GET", n.URL+"/api/v1/check?"+query, "", nil)
	}
	if r := get("key=k"); r.StatusCode != 200 {
		t.Fatalf("first check = %d; want 200", r.StatusCode)
	}
	f := func(query string, want int) {
		t.Helper()
		r := get(query)
		if r.StatusCode != want {
			t.Fatalf("GET ?%s = %d; want %d", query, r.StatusCode, want)
		}
		if r.Header.Get("Retry-After") == "" || r.Header.Get("RateLimit") == "" {
			t.Errorf("GET ?%s: Retry-After %q, RateLimit %q; want both", query, r.Header.Get("Retry-After"), r.Header.Get("RateLimit"))
		}
	}
	f("key=k", http.StatusUnauthorized) // forward_auth_deny_status
	f("key=k&deny_status=403", http.StatusForbidden)
	f("key=k&deny_status=429", http.StatusTooManyRequests)

	// POST answers 429 whatever the default: it is not forward-auth.
	if _, r := check(t, n.URL, "k", 1); r.StatusCode != http.StatusTooManyRequests {
		t.Errorf("POST denial = %d; want 429", r.StatusCode)
	}
	for _, bad := range []string{"500", "200", "x", "-403"} {
		if r := get("key=other&deny_status=" + bad); r.StatusCode != http.StatusBadRequest {
			t.Errorf("deny_status=%s = %d; want 400", bad, r.StatusCode)
		}
	}
	// An allowed check ignores deny_status.
	if r := get("key=fresh&deny_status=403"); r.StatusCode != 200 {
		t.Errorf("allowed check with deny_status = %d; want 200", r.StatusCode)
	}
}

func TestForwardConfigValidate(t *testing.T) {
	f := func(edit func(*Config), want string) {
		t.Helper()
		cfg := testConfig("v", nil)
		edit(&cfg)
		err := cfg.Validate()
		switch {
		case want == "" && err != nil:
			t.Errorf("Validate = %v; want nil", err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("Validate = %v; want %q", err, want)
		}
	}
	f(func(c *Config) { c.ForwardAuthDenyStatus = 403 }, "")
	f(func(c *Config) { c.ForwardAuthDenyStatus = 500 }, "forward_auth_deny_status: must be 401, 403 or 429, got 500")
	f(func(c *Config) { c.KeyFrom = "xff" }, "trusted_proxies: must be set")
	f(func(c *Config) { c.KeyFrom = "xff"; c.TrustedProxies.Hops = 1 }, "")
	f(func(c *Config) { c.KeyFrom = "forwarded"; c.TrustedProxies.CIDRs = []string{"10.0.0.0/8", "::1"} }, "")
	f(func(c *Config) { c.KeyFrom = "xff"; c.TrustedProxies.CIDRs = []string{"10.0.0.0/8", "nope"} },
		`trusted_proxies[1]: must be a CIDR (10.0.0.0/8) or an address, got "nope"`)
	f(func(c *Config) { c.KeyFrom = "header" }, `key_from: must be "query", "xff" or "forwarded", got "header"`)
	f(func(c *Config) { c.KeyPrefix = "ip:\x01" }, "key_prefix: must be printable")
}
