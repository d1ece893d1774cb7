package node

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ratelimiter/ratelimiter/internal/testkit"
	"github.com/ratelimiter/ratelimiter/limiter"
)

// BenchmarkDenyCachePut records a denial of a new key in a cache of the
// default size (10,000) that is empty (cleared every 5,000 puts, the clear
// included) and one that is full of live denials, so every put evicts. The
// two must be within 2× (issue 12); the old cache swept the whole map
// under its lock on every put when full.
//
// Reference, 2-vCPU VM shared with four other builds, 2026-12-04, medians
// of -count 4: empty 44 ns, full 110 ns (2.5×: a map delete on top of the
// insert, in a bigger map). The check path around it is what must stay
// within 2×: see BenchmarkDeniedCheck.
func BenchmarkDenyCachePut(b *testing.B) {
	const size = 10_000
	keys := make([][]byte, 1<<16) // more than size: a key comes back only after its eviction
	for i := range keys {
		keys[i] = []byte("user:" + strconv.Itoa(i))
	}
	p := &Policy{}
	live := denial{policy: p, cost: 1, until: 1 << 62}
	b.Run("empty", func(b *testing.B) {
		b.ReportAllocs()
		c := newDenyCache(size)
		for i := 0; b.Loop(); i++ {
			if len(c.m) == size/2 {
				c.clear()
			}
			c.put(keys[i%len(keys)], live)
		}
	})
	b.Run("full", func(b *testing.B) {
		b.ReportAllocs()
		c := newDenyCache(size)
		for i := range size {
			c.put(keys[i], live)
		}
		for i := size; b.Loop(); i++ {
			c.put(keys[i%len(keys)], live)
		}
	})
}

// BenchmarkDeniedCheck is the check path of a key denied for the first
// time, whose denial goes into the deny cache: one check admits a new key
// (limit 1), a second is denied. With the cache full of live denials
// (10,000) every such denial evicts one; empty, it is cleared every 5,000
// checks. Issue 12: within 2× (the old cache took ~65 µs when full).
// Reference, same VM and day, medians of -count 4 (two checks per op):
// empty 3.44 µs, full 3.57 µs (1.04×), 3 allocs/op each.
func BenchmarkDeniedCheck(b *testing.B) {
	for _, state := range []string{"empty", "full"} {
		b.Run(state, func(b *testing.B) {
			cfg := testConfig("bench", nil)
			cfg.Limits = []limiter.Limit{{KeyPattern: "*", MaxRequests: 1, WindowSeconds: 1, Algorithm: limiter.SlidingWindow}}
			clock := testkit.NewClock()
			n := startNode(b, cfg, nil, clock.Now).Node
			p := n.state.Load().policies["*"]
			if state == "full" {
				for i := range cfg.DenyCacheSize {
					n.denies.put([]byte("filler:"+strconv.Itoa(i)), denial{policy: p, cost: 1, until: 1 << 62})
				}
			}
			var ctx fasthttp.RequestCtx
			ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, nil)
			ctx.Request.Header.SetMethod("POST")
			ctx.Request.SetRequestURI("/api/v1/check")
			body := make([]byte, 0, 64)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if i%5000 == 0 {
					clock.Add(2 * time.Second) // old keys expire; the store sweeps them
					if state == "empty" {
						n.denies.clear()
					}
				}
				body = append(strconv.AppendInt(append(body[:0], `{"key":"k`...), int64(i), 10), `"}`...)
				ctx.Request.SetBodyRaw(body)
				for want := range []int{200, 429} {
					ctx.Response.Reset()
					n.server.Handler(&ctx)
					if got := ctx.Response.StatusCode(); got != []int{200, 429}[want] {
						b.Fatalf("check %d of k%d: status %d", want, i, got)
					}
				}
			}
		})
	}
}
