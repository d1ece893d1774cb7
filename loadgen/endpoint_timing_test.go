package loadgen

import (
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// BenchmarkHTTPEndpoint is one --method http request with a templated URL,
// two templated headers and a templated JSON body, against a fasthttp
// server on loopback. The round trip dominates the time; allocs/op is the
// generator's own work per request.
func BenchmarkHTTPEndpoint(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(fasthttp.StatusNoContent) }}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Shutdown() })
	cfg := DefaultConfig()
	cfg.Method, cfg.Targets = MethodHTTP, []string{"http://" + ln.Addr().String() + "/v2/limit/{key}?cost={cost}"}
	cfg.Headers = []string{"X-Tenant: t-{key}", "X-Cost: {cost}"}
	cfg.Body = `{"key":"{key}","hits":{cost}}`
	e, err := newHTTPEndpoint(cfg, cfg.Targets[0])
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.close)
	b.ReportAllocs()
	for b.Loop() {
		o := outcome{key: "user:12345"}
		e.do(&o, time.Now())
		if !o.allowed {
			b.Fatalf("outcome %+v; want admitted", o)
		}
	}
}
