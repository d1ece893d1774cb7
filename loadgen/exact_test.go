package loadgen

import (
	"context"
	"log/slog"
	"math"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ratelimiter/ratelimiter/internal/testkit"
)

// standIn is an HTTP server standing in for a node: it answers every
// request 200 after busy-waiting for answer (so the answer time is its
// own, not the Go scheduler's), holds requests that arrive during its
// stalls, and records how long each request took from its own point of
// view, handler entry to handler exit.
type standIn struct {
	URL    string
	answer time.Duration
	// Every stallEvery from the first request, after an offset of half
	// that, the server stalls for stallFor: requests arriving then are held
	// until the stall ends.
	stallEvery, stallFor time.Duration

	mu          sync.Mutex
	first       time.Time
	took        []time.Duration
	duringStall int
}

func startStandIn(t *testing.T, answer, stallEvery, stallFor time.Duration) *standIn {
	t.Helper()
	s := &standIn{answer: answer, stallEvery: stallEvery, stallFor: stallFor}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: s.handle}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.ShutdownWithContext(ctx)
	})
	s.URL = "http://" + ln.Addr().String()
	return s
}

func (s *standIn) handle(ctx *fasthttp.RequestCtx) {
	in := time.Now()
	s.mu.Lock()
	if s.first.IsZero() {
		s.first = in
	}
	first := s.first
	s.mu.Unlock()
	var hold time.Duration
	if s.stallEvery > 0 {
		phase := (in.Sub(first) + s.stallEvery/2) % s.stallEvery
		if phase < s.stallFor {
			hold = s.stallFor - phase
		}
	}
	if hold > 0 {
		time.Sleep(hold)
	}
	for time.Since(in) < hold+s.answer {
	}
	ctx.SetContentType("application/json")
	ctx.SetBodyString(`{"allowed":true,"reason":"within_limit"}`)
	took := time.Since(in)
	s.mu.Lock()
	s.took = append(s.took, took)
	if hold > 0 {
		s.duringStall++
	}
	s.mu.Unlock()
}

// reset forgets what the server saw.
func (s *standIn) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.first, s.took, s.duringStall = time.Time{}, nil, 0
}

// median is the server's own median answer time, and how many requests it
// answered.
func (s *standIn) median() (time.Duration, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.took) == 0 {
		return 0, 0
	}
	sorted := slices.Clone(s.took)
	slices.Sort(sorted)
	return sorted[len(sorted)/2], len(sorted)
}

// TestLatencyExact: requests leave at their due time, so against a server
// that answers in about 0.2 ms at 500/s the generator's p50 is within
// 0.3 ms of the server's own (issue 15). A pacer that waits for a 1 ms tick
// after each due time adds that wait to every request: at 500/s every due
// time falls on a tick, so its p50 is a whole millisecond over.
//
// A run on a shared machine can be unlucky (another process holds both
// CPUs for a while), so a miss is measured again on a fresh run, up to
// five in all; one run within 0.3 ms shows the pacer is exact. (On a
// 2-core machine at load average 5 the runs came in at +0.15 to +0.23 ms;
// the 1 ms tick it replaced gave +1.8 ms.) The
// generator's p50 can never be below the server's: a latency measured
// from any later point than the intended send time would be.
func TestLatencyExact(t *testing.T) {
	srv := startStandIn(t, 200*time.Microsecond, 0, 0)
	cfg := DefaultConfig()
	cfg.Targets, cfg.Rate, cfg.Duration, cfg.Keys = []string{srv.URL}, 500, time.Second, 10
	const runs = 5
	for attempt := 1; ; attempt++ {
		srv.reset()
		r := run(t, cfg)
		server, answered := srv.median()
		diff := r.Latency.P50 - ms(server)
		t.Logf("run %d, 500/s for 1s: server p50 %.3fms over %d; loadgen p50 %.3fms (+%.3fms) p99 %.3fms, max send lag %.3fms",
			attempt, ms(server), answered, r.Latency.P50, diff, r.Latency.P99, r.MaxLagMs)
		if r.Sent != 500 || r.Completed != 500 || r.Allowed != 500 || answered != 500 || r.Dropped != 0 {
			t.Fatalf("sent %d, completed %d, allowed %d, dropped %d, server answered %d; want 500 of each, none dropped",
				r.Sent, r.Completed, r.Allowed, r.Dropped, answered)
		}
		if server < 200*time.Microsecond || r.Latency.P50 < ms(server) {
			t.Fatalf("server p50 %s, loadgen p50 %.3fms; want the server's at least 0.2 ms and loadgen's at least the server's", server, r.Latency.P50)
		}
		switch {
		case diff <= 0.3:
			return
		case attempt == runs:
			t.Fatalf("%d runs in a row: loadgen p50 %.3fms is %.3fms over the server's %.3fms; want within 0.3 ms",
				runs, r.Latency.P50, diff, ms(server))
		}
	}
}

// TestLatencyStalls: against a server that stalls for 200 ms every 2 s,
// the generator keeps sending on schedule and counts the wait from each
// request's due time, so p99 is at least 150 ms. Over 4 s at 500/s two
// stalls hold about 200 of 2000 requests, 50 of them 150 ms or more: 2.5 %.
// A generator that waited for answers before sending (coordinated
// omission) would send a handful during each stall and report a p99 of
// about 0.2 ms.
func TestLatencyStalls(t *testing.T) {
	srv := startStandIn(t, 200*time.Microsecond, 2*time.Second, 200*time.Millisecond)
	cfg := DefaultConfig()
	cfg.Targets, cfg.Rate, cfg.Duration, cfg.Keys = []string{srv.URL}, 500, 4*time.Second, 10
	r := run(t, cfg)
	srv.mu.Lock()
	during := srv.duringStall
	srv.mu.Unlock()
	t.Logf("500/s for 4s, stalls of 200ms every 2s: %d requests arrived during a stall; loadgen p50 %.3fms p90 %.3fms p99 %.3fms max %.3fms",
		during, r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Latency.Max)
	if r.Sent != 2000 || r.Completed != 2000 || r.Dropped != 0 || errorCount(r) != 0 {
		t.Fatalf("sent %d, completed %d, dropped %d, errors %v; want 2000 sent and answered", r.Sent, r.Completed, r.Dropped, r.Errors)
	}
	// About 200 are due in the stalls; a loaded host delays some past a
	// stall's end on either side, so half is the bound. A generator that
	// waited for answers would send a few.
	if during < 100 {
		t.Errorf("%d requests arrived during the stalls; want about 200: the generator must not wait for answers", during)
	}
	if r.Latency.P99 < 150 || r.Latency.Max < 190 {
		t.Errorf("p99 %.3fms, max %.3fms; want p99 at least 150 ms and max about 200 ms", r.Latency.P99, r.Latency.Max)
	}
}

// TestDropped: when the generator falls hopelessly behind (here one
// request in flight at a time against a server that holds each for 1.5 s)
// the requests it never sent are counted as dropped, and any at all fail
// the run by default, so a truncated run cannot exit 0.
func TestDropped(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { time.Sleep(1500 * time.Millisecond) }}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	cfg := DefaultConfig()
	cfg.Targets, cfg.Rate, cfg.Duration, cfg.MaxInflight, cfg.Timeout = []string{"http://" + ln.Addr().String()}, 100, time.Second, 1, 5*time.Second
	r := run(t, cfg)
	t.Logf("sent %d, dropped %d, failed %q", r.Sent, r.Dropped, r.Failed)
	if r.Sent < 1 || r.Dropped < 90 || r.Sent+r.Dropped != 100 {
		t.Errorf("sent %d, dropped %d; want 100 due, one or a few sent and the rest dropped", r.Sent, r.Dropped)
	}
	if len(r.Failed) != 1 || !strings.Contains(r.Failed[0], "dropped > --max-dropped 0") {
		t.Errorf("failed thresholds = %q; want the --max-dropped 0 threshold missed", r.Failed)
	}
	cfg.MaxDropped = r.Dropped
	r.Failed = nil
	if r.checkThresholds(cfg); len(r.Failed) != 0 {
		t.Errorf("--max-dropped %d with %d dropped: failed thresholds = %q; want none", cfg.MaxDropped, r.Dropped, r.Failed)
	}
}

// TestInterrupted: a run stopped early (Ctrl-C, a pipeline's timeout)
// reports what it sent, drops nothing (the generator kept up), and fails
// as interrupted: a run cut short is not a pass.
func TestInterrupted(t *testing.T) {
	t.Parallel()
	srv := startStandIn(t, 0, 0, 0)
	cfg := DefaultConfig()
	cfg.Targets, cfg.Rate, cfg.Duration, cfg.Keys = []string{srv.URL}, 100, 10*time.Second, 10
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	r, err := Run(ctx, cfg, nil, false, testkit.Logger(t, slog.LevelWarn))
	if err != nil {
		t.Fatal(err)
	}
	if !r.Interrupted || r.Sent < 20 || r.Sent > 60 || r.Dropped != 0 || len(r.Failed) != 1 || !strings.Contains(r.Failed[0], "interrupted after") {
		t.Errorf("stopped after 0.5s of 10s: interrupted %v, sent %d, dropped %d, failed %q; want interrupted, about 50 sent, none dropped, failed as interrupted",
			r.Interrupted, r.Sent, r.Dropped, r.Failed)
	}
}

// TestLatencyOrigin: latency counts from the intended send time when the
// request left late (the wait is the target's fault as the client sees
// it), and from when it left when the pacer let it go early, so an early
// send never shortens an answer.
func TestLatencyOrigin(t *testing.T) {
	f := func(intended, sent, done time.Duration, want float64) {
		t.Helper()
		a := newAggregate(1, false)
		a.add(&outcome{intended: intended, sent: sent, done: done, allowed: true})
		if got := latency(a.all).P50; math.Abs(got-want) > 0.05 { // HDR keeps 3 significant digits
			t.Errorf("intended %s, sent %s, done %s: latency %gms; want %gms", intended, sent, done, got, want)
		}
	}
	ms := time.Millisecond
	f(10*ms, 30*ms, 31*ms, 21)                                        // late: from intended
	f(10*ms, 10*ms, 12*ms, 2)                                         // on time
	f(10*ms, 10*ms-80*time.Microsecond, 11*ms-80*time.Microsecond, 1) // early: from sent
}
