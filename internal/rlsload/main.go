// Command rlsload is the gRPC side of scripts/bench-grpc.sh. With --serve it
// is the baseline: a Rate Limit Service that answers OK without deciding
// anything. Otherwise it drives ShouldRateLimit at a fixed number of
// concurrent streams over descriptors user=u0 … u(N-1) of one domain for a
// duration, and prints "decisions/s p50_ms p99_ms errors cpu_us", where
// cpu_us is the CPU time of process --pid per decision, read from /proc.
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
	clients := make([]rls.RateLimitServiceClient, *conns)
	for i := range clients {
		cc, err := grpc.NewClient(*target, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			log.Fatal(err)
		}
		defer cc.Close()
		clients[i] = rls.NewRateLimitServiceClient(cc)
	}
	reqs := make([]*rls.RateLimitRequest, *n)
	for i := range reqs {
		reqs[i] = &rls.RateLimitRequest{Domain: *domain, Descriptors: []*rlcommon.RateLimitDescriptor{{
			Entries: []*rlcommon.RateLimitDescriptor_Entry{{Key: "user", Value: "u" + strconv.Itoa(i)}}}}}
	}
	var errs, done atomic.Int64
	var mu sync.Mutex
	hist := hdrhistogram.New(1, 10_000_000, 3) // µs
	cpu0 := cpuTicks(*pid)
	start := time.Now()
	deadline := start.Add(*dur)
	var wg sync.WaitGroup
	for w := range *conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clients[w%len(clients)]
			h := hdrhistogram.New(1, 10_000_000, 3)
			for time.Now().Before(deadline) {
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := c.ShouldRateLimit(ctx, reqs[rand.IntN(len(reqs))])
				cancel()
				if err != nil {
					errs.Add(1)
					continue
				}
				done.Add(1)
				_ = h.RecordValue(time.Since(t0).Microseconds())
			}
			mu.Lock()
			hist.Merge(h)
			mu.Unlock()
		}()
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
