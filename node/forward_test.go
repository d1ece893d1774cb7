package node

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/ratelimiter/ratelimiter/config"
	"github.com/ratelimiter/ratelimiter/internal/testkit"
	"github.com/ratelimiter/ratelimiter/limiter"
)

func TestForwardAuthDenyStatus(t *testing.T) {
	cfg := testConfig("deny", nil)
	cfg.Limits = []limiter.Limit{{KeyPattern: "*", MaxRequests: 1, WindowSeconds: 60}}
	cfg.ForwardAuthDenyStatus = http.StatusUnauthorized
	n := startNode(t, cfg, nil, nil)
	get := func(query string) *http.Response {
		t.Helper()
		return testkit.Call(t, "GET", n.URL+"/api/v1/check?"+query, "", nil)
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

func TestClientAddr(t *testing.T) {
	f := func(from string, tp TrustedProxies, peer string, hdr []string, want string) {
		t.Helper()
		cfg := DefaultConfig()
		cfg.KeyFrom, cfg.TrustedProxies = from, tp
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Validate: %v", err)
		}
		n := &Node{cfg: cfg}
		var req fasthttp.Request
		req.SetRequestURI("/api/v1/check")
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Add(hdr[i], hdr[i+1])
		}
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(peer)), nil)
		got, perr := n.clientAddr(&ctx)
		if perr != nil {
			if want != "400" {
				t.Errorf("%s %+v from %s with %q: %v; want %s", from, tp, peer, hdr, perr, want)
			}
			return
		}
		if got.String() != want {
			t.Errorf("%s %+v from %s with %q = %s; want %s", from, tp, peer, hdr, got, want)
		}
	}
	one := TrustedProxies{Hops: 1}
	two := TrustedProxies{Hops: 2}
	nets := TrustedProxies{CIDRs: []string{"127.0.0.0/8", "10.0.0.0/8", "2001:db8:1::/48"}}
	const xff = "X-Forwarded-For"

	// One proxy appends the client it saw; what the client wrote stays left of it.
	f("xff", one, "127.0.0.1:1", []string{xff, "203.0.113.7"}, "203.0.113.7")
	f("xff", one, "127.0.0.1:1", []string{xff, "6.6.6.6, 203.0.113.7"}, "203.0.113.7")
	f("xff", one, "127.0.0.1:1", []string{xff, "6.6.6.6", xff, "203.0.113.7"}, "203.0.113.7") // two header lines
	f("xff", one, "127.0.0.1:1", []string{xff, "  6.6.6.6 ,203.0.113.7:4711 "}, "203.0.113.7")
	f("xff", one, "127.0.0.1:1", []string{xff, "[2001:db8::7]:443"}, "2001:db8::7")
	f("xff", one, "127.0.0.1:1", []string{xff, "::ffff:203.0.113.7"}, "203.0.113.7")
	f("xff", one, "127.0.0.1:1", nil, "127.0.0.1") // no header: the peer itself
	// Two proxies: a CDN, then nginx.
	f("xff", two, "127.0.0.1:1", []string{xff, "6.6.6.6, 203.0.113.7, 198.51.100.1"}, "203.0.113.7")
	f("xff", two, "127.0.0.1:1", []string{xff, "203.0.113.7"}, "203.0.113.7") // shorter chain: the leftmost
	// Networks: skip every trusted hop from the right.
	f("xff", nets, "127.0.0.1:1", []string{xff, "6.6.6.6, 203.0.113.7, 10.1.1.1, 10.2.2.2"}, "203.0.113.7")
	f("xff", nets, "127.0.0.1:1", []string{xff, "10.1.1.1, 10.2.2.2"}, "10.1.1.1") // all trusted: the leftmost
	f("xff", nets, "192.0.2.9:1", []string{xff, "6.6.6.6"}, "192.0.2.9")           // not through a proxy: the peer
	f("xff", nets, "[2001:db8:1::5]:1", []string{xff, "203.0.113.7"}, "203.0.113.7")
	f("xff", nets, "127.0.0.1:1", []string{xff, "6.6.6.6, bogus"}, "400")
	f("xff", one, "127.0.0.1:1", []string{xff, "1.2.3.4, _hidden"}, "400")

	const fwd = "Forwarded"
	f("forwarded", one, "127.0.0.1:1", []string{fwd, `for=6.6.6.6, for="[2001:db8::7]:443";proto=https`}, "2001:db8::7")
	f("forwarded", one, "127.0.0.1:1", []string{fwd, `For=203.0.113.7;by=10.0.0.1`}, "203.0.113.7")
	f("forwarded", one, "127.0.0.1:1", []string{fwd, `for="6.6.6.6,x";by=a, for=203.0.113.7`}, "203.0.113.7") // a comma inside quotes
	f("forwarded", nets, "127.0.0.1:1", []string{fwd, `for=203.0.113.7, for=10.0.0.1`}, "203.0.113.7")
	f("forwarded", one, "127.0.0.1:1", []string{fwd, `proto=https`}, "400")       // a hop with no for=
	f("forwarded", one, "127.0.0.1:1", []string{xff, "203.0.113.7"}, "127.0.0.1") // X-Forwarded-For is not read

	// Hostile chains: long, empty, garbage, unbalanced quotes.
	many := strings.Repeat("6.6.6.6, ", 2000) + "203.0.113.7"
	f("xff", one, "127.0.0.1:1", []string{xff, many}, "203.0.113.7")
	f("xff", nets, "127.0.0.1:1", []string{xff, strings.Repeat("10.0.0.1,", 2000) + "10.0.0.2"}, "10.0.0.1")
	f("xff", one, "127.0.0.1:1", []string{xff, ""}, "127.0.0.1")       // no entry: the peer
	f("xff", one, "127.0.0.1:1", []string{xff, " , ,, "}, "127.0.0.1") // still none
	f("xff", one, "127.0.0.1:1", []string{xff, strings.Repeat("9", 4000)}, "400")
	f("xff", one, "127.0.0.1:1", []string{xff, "\x00\xff, fe80::1%eth0"}, "fe80::1") // a zone is dropped
	f("xff", one, "127.0.0.1:1", []string{xff, "1.2.3.4, \x00\xff"}, "400")
	f("forwarded", one, "127.0.0.1:1", []string{fwd, strings.Repeat("for=6.6.6.6;by=x, ", 2000) + "for=203.0.113.7"}, "203.0.113.7")
	f("forwarded", one, "127.0.0.1:1", []string{fwd, `for="203.0.113.7`}, "203.0.113.7") // unterminated: the quote is trimmed
	f("forwarded", one, "127.0.0.1:1", []string{fwd, `for="a\", for=1.2.3.4`}, "400")    // an escaped quote keeps the comma quoted
	f("forwarded", one, "127.0.0.1:1", []string{fwd, `for=1.2.3.4, for=\`}, "400")
	f("forwarded", one, "127.0.0.1:1", []string{fwd, ""}, "400")             // an element without for=
	f("forwarded", one, "127.0.0.1:1", []string{fwd, "for=1.2.3.4,"}, "400") // a trailing empty element is a hop too
	f("forwarded", nets, "127.0.0.1:1", []string{fwd, ";;;=,=;=for"}, "400")
}

// TestKeyFromXFF is a client forging X-Forwarded-For through one proxy
// (the test, appending the address it saw): every forged value lands on
// the client's real key.
func TestKeyFromXFF(t *testing.T) {
	cfg := testConfig("xff", nil)
	cfg.KeyFrom, cfg.KeyPrefix, cfg.TrustedProxies = "xff", "ip:", TrustedProxies{Hops: 1}
	cfg.Limits = []limiter.Limit{
		{KeyPattern: "*", MaxRequests: 1000, WindowSeconds: 60},
		{KeyPattern: "ip:*", MaxRequests: 3, WindowSeconds: 60},
	}
	n := startNode(t, cfg, nil, nil)
	allowed := 0
	for _, forged := range []string{"", "1.1.1.1", "2.2.2.2, 3.3.3.3", "203.0.113.8", "user:42", "4.4.4.4"} {
		xff := "203.0.113.7"
		if forged != "" {
			xff = forged + ", " + xff
		}
		r := testkit.Call(t, "GET", n.URL+"/api/v1/check", "", nil, "X-Forwarded-For", xff)
		if r.StatusCode == 200 {
			allowed++
		} else if r.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("X-Forwarded-For %q: %d; want 200 or 429", xff, r.StatusCode)
		}
		if got := r.Header.Get("RateLimit-Policy"); !strings.HasPrefix(got, `"ip:*"`) {
			t.Errorf("X-Forwarded-For %q: policy %q; want ip:*", xff, got)
		}
	}
	if allowed != 3 {
		t.Errorf("a client forging X-Forwarded-For got %d of 6 requests through a limit of 3", allowed)
	}
	var c struct {
		Key string `json:"key"`
	}
	testkit.Call(t, "GET", n.URL+"/api/v1/counters/ip:203.0.113.7", "", &c)
	if c.Key != "ip:203.0.113.7" {
		t.Errorf("counter of the real client: %+v", c)
	}
	if r := testkit.Call(t, "GET", n.URL+"/api/v1/check?key=ip:1.1.1.1", "", nil); r.StatusCode != http.StatusBadRequest {
		t.Errorf("a key in the query with key_from = xff: %d; want 400", r.StatusCode)
	}
}

func TestKeyPrefixOnHeaderKeys(t *testing.T) {
	cfg := testConfig("hdr", nil)
	cfg.KeyHeader, cfg.KeyPrefix = "X-User", "user:"
	cfg.Limits = []limiter.Limit{
		{KeyPattern: "*", MaxRequests: 1000, WindowSeconds: 60},
		{KeyPattern: "user:*", MaxRequests: 1, WindowSeconds: 60},
	}
	n := startNode(t, cfg, nil, nil)
	for i, want := range []int{200, 429} {
		r := testkit.Call(t, "GET", n.URL+"/api/v1/check", "", nil, "X-User", "42")
		if r.StatusCode != want || !strings.HasPrefix(r.Header.Get("RateLimit-Policy"), `"user:*"`) {
			t.Errorf("check %d: %d, policy %q; want %d under user:*", i, r.StatusCode, r.Header.Get("RateLimit-Policy"), want)
		}
	}
	// A key in the query is taken as it is: the proxy's configuration wrote it.
	if r := testkit.Call(t, "GET", n.URL+"/api/v1/check?key=42", "", nil); !strings.HasPrefix(r.Header.Get("RateLimit-Policy"), `"*"`) {
		t.Errorf("query key 42: policy %q; want *", r.Header.Get("RateLimit-Policy"))
	}
}

func TestTrustedProxiesTOML(t *testing.T) {
	f := func(doc string, want TrustedProxies, wantErr string) {
		t.Helper()
		file := nodeFile{Node: DefaultConfig()}
		err := config.Decode("c.toml", []byte("[node]\nkey_from = \"xff\"\n"+doc+"\n"), &file)
		if wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Errorf("%s: %v; want %q", doc, err, wantErr)
			}
			return
		}
		if err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		got := file.Node.TrustedProxies
		if got.Hops != want.Hops || strings.Join(got.CIDRs, ",") != strings.Join(want.CIDRs, ",") {
			t.Errorf("%s = %+v; want %+v", doc, got, want)
		}
	}
	f("trusted_proxies = 2", TrustedProxies{Hops: 2}, "")
	f(`trusted_proxies = ["10.0.0.0/8", "::1"]`, TrustedProxies{CIDRs: []string{"10.0.0.0/8", "::1"}}, "")
	f(`trusted_proxies = ["10.0.0.0/33"]`, TrustedProxies{}, "c.toml:3: node.trusted_proxies[0]: must be a CIDR")
	f(`trusted_proxies = "10.0.0.0/8"`, TrustedProxies{}, "trusted_proxies must be a count of proxy hops or a list of CIDRs")
	f(`trusted_proxies = -1`, TrustedProxies{}, "node.trusted_proxies: must not be negative")
	f(`trusted_proxies = 0`, TrustedProxies{}, "c.toml:3: node.trusted_proxies: must be set")
	f(`trusted_proxies = []`, TrustedProxies{}, "c.toml:3: node.trusted_proxies: must be set")
	f(`trusted_proxies = [""]`, TrustedProxies{}, `c.toml:3: node.trusted_proxies[0]: must be a CIDR (10.0.0.0/8) or an address, got ""`)
	f(`trusted_proxies = [1]`, TrustedProxies{}, "trusted_proxies[0] must be a string")
	f(`trusted_proxies = 1.5`, TrustedProxies{}, "trusted_proxies must be a count of proxy hops or a list of CIDRs")
	f(`trusted_proxies = 9223372036854775807`, TrustedProxies{Hops: 9223372036854775807}, "") // every hop trusted: the leftmost entry
	f(`trusted_proxies = 99999999999999999999`, TrustedProxies{}, "c.toml")
}

// TestTrustedProxiesFlag: --trusted-proxies at its edges is a config error
// naming trusted_proxies, or a valid setting.
func TestTrustedProxiesFlag(t *testing.T) {
	f := func(flag, want string) {
		t.Helper()
		cfg := DefaultConfig()
		cfg.KeyFrom, cfg.TrustedProxies = keyFromXFF, ParseTrustedProxies(flag)
		err := cfg.Validate()
		switch {
		case want == "" && err != nil:
			t.Errorf("--trusted-proxies %q: %v; want valid", flag, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("--trusted-proxies %q: %v; want %q", flag, err, want)
		}
	}
	f(" 2 ", "")
	f("10.0.0.0/8, ::1", "")
	f("", `trusted_proxies[0]: must be a CIDR (10.0.0.0/8) or an address, got ""`)
	f(" , ", `trusted_proxies[0]: must be a CIDR`)
	f("0", "trusted_proxies: must be set")
	f("-1", "trusted_proxies: must not be negative, got -1")
	f("99999999999999999999", `trusted_proxies[0]: must be a CIDR (10.0.0.0/8) or an address, got "99999999999999999999"`)
	f("10.0.0.0/8,,", `trusted_proxies[1]: must be a CIDR`)
	f("NaN", `trusted_proxies[0]: must be a CIDR`)
}
