// Command rlsload is the gRPC side of scripts/bench-grpc.sh. With --serve it
// is the baseline: a Rate Limit Service that answers OK without deciding
// anything. Otherwise it drives ShouldRateLimit at a fixed number of
// concurrent streams over descriptors user=u0 … u(N-1) of one domain for a
// duration, and prints "decisions/s p50_ms p99_ms errors cpu_us", where
// cpu_us is the CPU time of process --pid per decision, read from /proc.
// By default it writes HTTP/2 frames by hand (raw.go), as light a driver as
// wrk is for the HTTP path; --client grpc uses grpc-go's client instead.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rls "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

type noop struct {
	rls.UnimplementedRateLimitServiceServer
}

var okResponse = &rls.RateLimitResponse{OverallCode: rls.RateLimitResponse_OK,
	Statuses: []*rls.RateLimitResponse_DescriptorStatus{{Code: rls.RateLimitResponse_OK}}}

func (noop) ShouldRateLimit(context.Context, *rls.RateLimitRequest) (*rls.RateLimitResponse, error) {
	return okResponse, nil
}

func main() {
	serve := flag.String("serve", "", "serve the no-op Rate Limit Service on this address")
	target := flag.String("target", "127.0.0.1:18097", "gRPC address to load")
	conc := flag.Int("c", 16, "concurrent streams")
	conns := flag.Int("conns", 2, "HTTP/2 connections the streams share")
	client := flag.String("client", "raw", "raw: HTTP/2 frames written by hand, one goroutine per connection; grpc: grpc-go's client, a goroutine per stream")
	dur := flag.Duration("d", 10*time.Second, "duration")
	pid := flag.Int("pid", 0, "server process whose CPU time to report")
	n := flag.Int("descriptors", 10_000, "distinct descriptors")
	domain := flag.String("domain", "bench", "domain")
	flag.Parse()
	if *serve != "" {
		ln, err := net.Listen("tcp", *serve)
		if err != nil {
			log.Fatal(err)
		}
		s := grpc.NewServer()
		rls.RegisterRateLimitServiceServer(s, noop{})
		log.Fatal(s.Serve(ln))
	}
	if *conns < 1 || *conc < *conns {
		log.Fatalf("want 1 <= --conns <= -c, got %d and %d", *conns, *conc)
	}
	reqs := make([]*rls.RateLimitRequest, *n)
	for i := range reqs {
		reqs[i] = &rls.RateLimitRequest{Domain: *domain, Descriptors: []*rlcommon.RateLimitDescriptor{{
			Entries: []*rlcommon.RateLimitDescriptor_Entry{{Key: "user", Value: "u" + strconv.Itoa(i)}}}}}
	}
	var (
		errs, done atomic.Int64
		mu         sync.Mutex
		wg         sync.WaitGroup
	)
	hist := hdrhistogram.New(1, 10_000_000, 3) // µs
	merge := func(h *hdrhistogram.Histogram, ok, failed int64) {
		mu.Lock()
		defer mu.Unlock()
		hist.Merge(h)
		done.Add(ok)
		errs.Add(failed)
	}
	cpu0 := cpuTicks(*pid)
	start := time.Now()
	deadline := start.Add(*dur)
	switch *client {
	case "raw":
		bodies, err := rawRequests(reqs)
		if err != nil {
			log.Fatal(err)
		}
		for i := range *conns {
			streams := *conc / *conns
			if i < *conc%*conns {
				streams++
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := runRaw(*target, streams, deadline, bodies, func() int { return rand.IntN(len(bodies)) })
				if err != nil {
					log.Fatalf("connection %d: %v", i, err)
				}
				merge(c.hist, c.done, c.errs)
			}()
		}
	case "grpc":
		clients := make([]rls.RateLimitServiceClient, *conns)
		for i := range clients {
			cc, err := grpc.NewClient(*target, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				log.Fatal(err)
			}
			defer cc.Close()
			clients[i] = rls.NewRateLimitServiceClient(cc)
		}
		for w := range *conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := clients[w%len(clients)]
				h := hdrhistogram.New(1, 10_000_000, 3)
				var ok, failed int64
				for time.Now().Before(deadline) {
					t0 := time.Now()
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					_, err := c.ShouldRateLimit(ctx, reqs[rand.IntN(len(reqs))])
					cancel()
					if err != nil {
						failed++
						continue
					}
					ok++
					_ = h.RecordValue(time.Since(t0).Microseconds())
				}
				merge(h, ok, failed)
			}()
		}
	default:
		log.Fatalf("--client must be raw or grpc, got %q", *client)
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := float64(cpuTicks(*pid)-cpu0) * 1e6 / 100 // USER_HZ is 100 on Linux
	d := float64(done.Load())
	cpuPer := 0.0
	if *pid != 0 && d > 0 {
		cpuPer = cpu / d
	}
	fmt.Printf("%.0f %.2f %.2f %d %.1f\n", d/elapsed.Seconds(), float64(hist.ValueAtQuantile(50))/1000,
		float64(hist.ValueAtQuantile(99))/1000, errs.Load(), cpuPer)
}

// cpuTicks is utime+stime of pid in clock ticks, 0 without one.
func cpuTicks(pid int) int64 {
	if pid == 0 {
		return 0
	}
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		log.Fatal(err)
	}
	// Fields after the command name, which may hold spaces: state is 3rd.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}
