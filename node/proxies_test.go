package node

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/proxytest"
	"github.com/ratelimiter/ratelimiter/internal/testkit"
	"github.com/ratelimiter/ratelimiter/limiter"
	"github.com/ratelimiter/ratelimiter/node/store"
)

// The proxy tests run docs/proxies.md's configurations in front of two
// nodes sharing one in-process store, a third node address where nothing
// listens, and a small application that records what reaches it.

const proxiesDoc = "../docs/proxies.md"

// testApp is the application behind the proxy.
type testApp struct {
	addr string
	mu   sync.Mutex
	reqs []*http.Request // what reached it, headers included
}

func startApp(t *testing.T) *testApp {
	t.Helper()
	a := &testApp{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a.addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		a.mu.Lock()
		a.reqs = append(a.reqs, r)
		a.mu.Unlock()
		w.Header().Set("X-App", "yes")
		_, _ = w.Write([]byte("app:" + string(body)))
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return a
}

func (a *testApp) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.reqs)
}

func (a *testApp) last() *http.Request {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.reqs[len(a.reqs)-1]
}

// clientFrom is an HTTP client whose connections come from the loopback
// address ip, so the proxy sees distinct clients.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 2 * time.Second}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
	}}
}

type proxied struct {
	status int
	header http.Header
	body   string
}

func sendVia(t *testing.T, c *http.Client, method, url, body string, hdr ...string) proxied {
	t.Helper()
	resp := testkit.CallWith(t, c, method, url, body, nil, hdr...)
	b, _ := io.ReadAll(resp.Body)
	return proxied{resp.StatusCode, resp.Header, string(b)}
}

// proxyCluster is two nodes on one store with a limit of 5 per minute per
// "ip:*" key, and the application.
type proxyCluster struct {
	a, b *testNode
	app  *testApp
}

func startProxyCluster(t *testing.T, tweak func(*Config)) *proxyCluster {
	t.Helper()
	shared := store.NewMemoryStore(time.Now)
	limits := []limiter.Limit{
		{KeyPattern: "*", MaxRequests: 1000, WindowSeconds: 60},
		{KeyPattern: "ip:*", MaxRequests: 5, WindowSeconds: 60},
		// A client under a shadow limit, whose fields are not advertised.
		{KeyPattern: "ip:127.0.0.9", MaxRequests: 1, WindowSeconds: 60, Shadow: true},
	}
	pc := &proxyCluster{app: startApp(t)}
	for _, id := range []string{"a", "b"} {
		cfg := testConfig(id, nil)
		cfg.Limits = limits
		if tweak != nil {
			tweak(&cfg)
		}
		n := startNode(t, cfg, shared, nil)
		if id == "a" {
			pc.a = n
		} else {
			pc.b = n
		}
	}
	return pc
}

func (pc *proxyCluster) decisions() (a, b uint64) {
	get := func(n *testNode) uint64 { return n.metrics.allowed.Get() + n.metrics.denied.Get() }
	return get(pc.a), get(pc.b)
}

// expectAllowed sends one request through the proxy and checks that the
// application got it with the RateLimit fields, and the client too.
func (pc *proxyCluster) expectAllowed(t *testing.T, c *http.Client, method, url, body, wantR string) {
	t.Helper()
	before := pc.app.count()
	r := sendVia(t, c, method, url, body)
	if r.status != 200 || r.header.Get("X-App") != "yes" || r.body != "app:"+body {
		t.Fatalf("%s %s = %d %q (X-App %q); want 200 from the application", method, url, r.status, r.body, r.header.Get("X-App"))
	}
	if got := pc.app.count(); got != before+1 {
		t.Fatalf("the application got %d requests; want %d", got, before+1)
	}
	wantPolicy := `"ip:*";q=5;w=60`
	if got := r.header.Get("RateLimit-Policy"); got != wantPolicy {
		t.Errorf("client's RateLimit-Policy = %q; want %q", got, wantPolicy)
	}
	if got := r.header.Get("RateLimit"); !strings.HasPrefix(got, `"ip:*";r=`+wantR+";t=") {
		t.Errorf("client's RateLimit = %q; want r=%s", got, wantR)
	}
	req := pc.app.last()
	if req.Method != method {
		t.Errorf("the application got a %s; want %s", req.Method, method)
	}
	if got := req.Header.Get("RateLimit-Policy"); got != wantPolicy {
		t.Errorf("application's RateLimit-Policy = %q; want %q", got, wantPolicy)
	}
	if got := req.Header.Get("RateLimit"); got != r.header.Get("RateLimit") {
		t.Errorf("application's RateLimit = %q; want the client's %q", got, r.header.Get("RateLimit"))
	}
}

// expectForgedDropped sends a RateLimit request header from a client whose
// limit advertises none: the application must not see the client's own.
func (pc *proxyCluster) expectForgedDropped(t *testing.T, url string) {
	t.Helper()
	r := sendVia(t, clientFrom("127.0.0.9"), "GET", url, "", "RateLimit", `"ip:*";r=1000;t=0`, "RateLimit-Policy", `"ip:*";q=1000;w=1`)
	if r.status != 200 || len(r.header.Values("RateLimit")) != 0 || len(r.header.Values("RateLimit-Policy")) != 0 {
		t.Fatalf("shadow-limited client: %d, RateLimit %q; want 200 without fields", r.status, r.header.Get("RateLimit"))
	}
	if h := pc.app.last().Header; h.Get("RateLimit") != "" || h.Get("RateLimit-Policy") != "" {
		t.Errorf("the application got the client's own RateLimit %q, RateLimit-Policy %q", h.Get("RateLimit"), h.Get("RateLimit-Policy"))
	}
}

func expectDenied(t *testing.T, c *http.Client, url string, hdr ...string) proxied {
	t.Helper()
	r := sendVia(t, c, "GET", url, "", hdr...)
	if r.status != http.StatusTooManyRequests || r.header.Get("X-App") != "" {
		t.Fatalf("GET %s = %d %q; want 429 from the proxy", url, r.status, r.body)
	}
	if ra := r.header.Get("Retry-After"); ra == "" || ra == "0" {
		t.Errorf("429 has Retry-After %q; want a positive number of seconds", ra)
	}
	if got := r.header.Get("RateLimit"); !strings.HasPrefix(got, `"ip:*";r=0;t=`) {
		t.Errorf("429 has RateLimit %q; want r=0", got)
	}
	return r
}

// proxyConf is the documented block of docs/proxies.md pointed at pc's
// nodes, a node that is down, pc's application and listen; extra pairs
// are replaced first.
func (pc *proxyCluster) proxyConf(t *testing.T, block, listen string, extra ...string) string {
	t.Helper()
	pairs := append(extra,
		"127.0.0.1:8081", strings.TrimPrefix(pc.a.URL, "http://"),
		"127.0.0.1:8082", strings.TrimPrefix(pc.b.URL, "http://"),
		"127.0.0.1:8083", proxytest.FreeAddr(t), // a node that is down
		"127.0.0.1:9000", pc.app.addr,
		"127.0.0.1:8080", listen)
	return proxytest.Replace(t, proxytest.Block(t, proxiesDoc, block), pairs...)
}

// expectLimitOfFive sends the 5 requests c's limit admits; every method
// is checked as a bodiless GET and the body still reaches the application.
func (pc *proxyCluster) expectLimitOfFive(t *testing.T, c *http.Client, url string) {
	t.Helper()
	for i := range 5 {
		method, body := "GET", ""
		if i == 2 {
			method, body = "POST", `{"hello":"app"}`
		}
		pc.expectAllowed(t, c, method, url, body, string(rune('4'-i)))
	}
}

// expectOnlyB checks, once node a is drained and out of the proxy's
// rotation, that a fresh client gets its limit with every check decided by b.
func (pc *proxyCluster) expectOnlyB(t *testing.T, url string) {
	t.Helper()
	da, db := pc.decisions()
	c4 := clientFrom("127.0.0.4")
	for i := range 5 {
		pc.expectAllowed(t, c4, "GET", url, "", string(rune('4'-i)))
	}
	expectDenied(t, c4, url)
	da2, db2 := pc.decisions()
	if da2 != da || db2 != db+6 {
		t.Errorf("while a drained, a decided %d and b %d checks; want 0 and 6", da2-da, db2-db)
	}
}

func TestNginx(t *testing.T) {
	pc := startProxyCluster(t, nil)
	listen := proxytest.FreeAddr(t)
	conf := pc.proxyConf(t, "nginx", listen)
	proxytest.Nginx(t, conf, listen)
	url := "http://" + listen + "/x"

	// Exactly the limit reaches the application.
	c2 := clientFrom("127.0.0.2")
	pc.expectLimitOfFive(t, c2, url)
	// Forging X-Forwarded-For changes nothing: the key is nginx's $remote_addr.
	for _, forged := range []string{"198.51.100.1", "198.51.100.2, 127.0.0.5", "user:1"} {
		r := expectDenied(t, c2, url, "X-Forwarded-For", forged)
		if !strings.Contains(r.body, `"status":429`) {
			t.Errorf("429 body = %q; want the problem document", r.body)
		}
	}
	if got := pc.app.count(); got != 5 {
		t.Fatalf("the application got %d requests from a client limited to 5; want 5", got)
	}
	// Another client has its own key.
	pc.expectAllowed(t, clientFrom("127.0.0.3"), "GET", url, "", "4")
	pc.expectForgedDropped(t, url)

	// Drain a: every check goes to b, and no client sees an error.
	testkit.Call(t, "POST", pc.a.URL+"/api/v1/nodes/a/drain", "", nil)
	testkit.WaitFor(t, 5*time.Second, "node a draining", func() bool {
		resp, err := http.Get(pc.a.URL + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	pc.expectOnlyB(t, url)
}

func TestCaddy(t *testing.T) {
	pc := startProxyCluster(t, nil)
	listen := proxytest.FreeAddr(t)
	conf := pc.proxyConf(t, "caddyfile", listen)
	proxytest.Caddy(t, conf, listen)
	url := "http://" + listen + "/x"

	c2 := clientFrom("127.0.0.2")
	pc.expectLimitOfFive(t, c2, url)
	// A client's own RateLimit request header never reaches the application.
	for range 3 {
		expectDenied(t, c2, url)
	}
	if got := pc.app.count(); got != 5 {
		t.Fatalf("the application got %d requests from a client limited to 5; want 5", got)
	}
	r := sendVia(t, clientFrom("127.0.0.3"), "GET", url, "", "RateLimit", `"ip:*";r=1000;t=0`)
	if r.status != 200 || pc.app.last().Header.Get("RateLimit") != r.header.Get("RateLimit") || !strings.Contains(r.header.Get("RateLimit"), "r=4;") {
		t.Errorf("forged RateLimit: client got %d %q, application %q; want the node's r=4 for both",
			r.status, r.header.Get("RateLimit"), pc.app.last().Header.Get("RateLimit"))
	}
	pc.expectForgedDropped(t, url)

	// The probe client is under a shadow limit: never denied, so it can
	// poll until Caddy has taken the drained node out.
	testkit.Call(t, "POST", pc.a.URL+"/api/v1/nodes/a/drain", "", nil)
	probe := clientFrom("127.0.0.9")
	ok := 0
	testkit.WaitFor(t, 10*time.Second, "Caddy to skip the drained node", func() bool {
		if sendVia(t, probe, "GET", url, "").status == 200 {
			ok++
		} else {
			ok = 0
		}
		return ok >= 10
	})
	pc.expectOnlyB(t, url)
}

// TestNginxKeyFromXFF runs the documented variant where the node reads the
// client address from nginx's X-Forwarded-For (key_from = "xff", one
// trusted hop): a client forging the header still has one key.
func TestNginxKeyFromXFF(t *testing.T) {
	pc := startProxyCluster(t, func(c *Config) {
		c.KeyFrom, c.KeyPrefix, c.TrustedProxies = keyFromXFF, "ip:", TrustedProxies{Hops: 1}
	})
	listen := proxytest.FreeAddr(t)
	conf := pc.proxyConf(t, "nginx", listen, "key=ip:$remote_addr&", "")
	proxytest.Nginx(t, conf, listen)
	url := "http://" + listen + "/x"
	c2 := clientFrom("127.0.0.2")
	for i, forged := range []string{"", "198.51.100.1", "198.51.100.2, 198.51.100.3", "127.0.0.3", "ip:1"} {
		before := pc.app.count()
		r := sendVia(t, c2, "GET", url, "", "X-Forwarded-For", forged)
		if r.status != 200 || pc.app.count() != before+1 || !strings.HasPrefix(r.header.Get("RateLimit"), `"ip:*";r=`+string(rune('4'-i))+";") {
			t.Fatalf("request %d forging %q: %d, RateLimit %q; want 200 with r=%d", i, forged, r.status, r.header.Get("RateLimit"), 4-i)
		}
	}
	expectDenied(t, c2, url, "X-Forwarded-For", "203.0.113.50")
	if got := pc.app.count(); got != 5 {
		t.Fatalf("the application got %d requests from a client forging X-Forwarded-For under a limit of 5", got)
	}
	// The key is the address nginx saw.
	var c CounterView
	testkit.Call(t, "GET", pc.a.URL+"/api/v1/counters/ip:127.0.0.2", "", &c)
	if c.Used != 5 {
		t.Errorf("counter of ip:127.0.0.2: %+v; want used 5", c)
	}
}
