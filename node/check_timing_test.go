package node

import (
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ratelimiter/ratelimiter/internal/redistest"
	"github.com/ratelimiter/ratelimiter/limiter"
)

// Reference figures, 2-core shared VM (go1.26, redis 7.0 on loopback), 2026-11-27:
//   BenchmarkCheckHandler/memory   ~1.3 µs/op     0 allocs/op
//   BenchmarkCheckHandler/redis    (see the closing note of issue 2)
//   BenchmarkDecide/redis/sliding_window     ~20 µs/op (concurrent checks batched)
//   BenchmarkDecide/cluster/sliding_window   ~49 µs/op (3 masters + 3 replicas on
//                                            the same 2 cores, one script per check)
// Redis allocations are rueidis' command and the data key string.

var benchSink atomic.Int64

func benchNode(b *testing.B, store string) *Node {
	cfg := testConfig("bench", nil)
	cfg.Limits = []limiter.Limit{{KeyPattern: "*", MaxRequests: 1_000_000, WindowSeconds: 60, Algorithm: limiter.SlidingWindow}}
	if store == "redis" {
		cfg.RedisURL = redistest.Start(b).URL()
	}
	return startNode(b, cfg, nil, nil).Node
}

func benchKeys(n int) [][]byte {
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = []byte(`{"key":"user:` + strconv.Itoa(i) + `","cost":1}`)
	}
	return keys
}

// BenchmarkCheckHandler calls the fasthttp handler directly (no sockets),
// so it measures the node's own work and allocations per decision.
func BenchmarkCheckHandler(b *testing.B) {
	for _, store := range []string{"memory", "redis"} {
		b.Run(store, func(b *testing.B) {
			n := benchNode(b, store)
			bodies := benchKeys(10_000)
			var next atomic.Int64
			b.SetParallelism(16) // concurrent requests, as on a server: lets rueidis pipeline
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var ctx fasthttp.RequestCtx
				ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, nil)
				ctx.Request.Header.SetMethod("POST")
				ctx.Request.SetRequestURI("/api/v1/check")
				for pb.Next() {
					i := next.Add(1)
					ctx.Request.SetBodyRaw(bodies[i%int64(len(bodies))])
					ctx.Response.Reset()
					n.handle(&ctx)
					if ctx.Response.StatusCode() != 200 {
						b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
					}
					benchSink.Add(int64(len(ctx.Response.Body())))
				}
			})
		})
	}
}

// BenchmarkDecide measures the store call alone: in process, on one
// redis-server (concurrent checks batched into one script), and on a Redis
// Cluster of three masters and three replicas (one script per check).
func BenchmarkDecide(b *testing.B) {
	for _, store := range []string{"memory", "redis", "cluster"} {
		for _, alg := range limiter.Algorithms {
			b.Run(store+"/"+string(alg), func(b *testing.B) {
				var s Store = NewMemoryStore(time.Now)
				if store != "memory" {
					var url string
					if store == "redis" {
						url = redistest.Start(b).URL()
					} else {
						url = redistest.StartCluster(b).URL()
					}
					rs, err := NewRedisStore(url, "rl", time.Second)
					if err != nil {
						b.Fatal(err)
					}
					if err := rs.Ping(b.Context()); err != nil {
						b.Fatal(err)
					}
					b.Cleanup(rs.Close)
					s = rs
				}
				l := limiter.Limit{KeyPattern: "*", MaxRequests: 1_000_000, WindowSeconds: 60, Algorithm: alg}
				l.Normalize()
				p := compile(l, "open")
				keys := make([]string, 10_000)
				for i := range keys {
					keys[i] = "user:" + strconv.Itoa(i)
				}
				var next atomic.Int64
				b.SetParallelism(16)
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					items := make([]Item, 1)
					for pb.Next() {
						items[0] = Item{Key: keys[next.Add(1)%int64(len(keys))], Cost: 1, Policy: p}
						if err := s.Decide(b.Context(), items); err != nil {
							b.Fatal(err)
						}
						benchSink.Add(items[0].Result.Remaining)
					}
				})
			})
		}
	}
}
