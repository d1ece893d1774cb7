package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// outcome is one request as it happened. Times are offsets from the start
// of the run on the generator's monotonic clock.
type outcome struct {
	key      string
	body     []byte // the POST body, shared and read-only
	target   int
	intended time.Duration // when the pacer wanted it sent
	sent     time.Duration
	done     time.Duration
	allowed  bool
	reason   string // from the JSON answer (POST only)
	resetMs  int64  // reset_after_ms from the JSON answer (POST only)
	errKind  string // "" when the target gave a decision (admitted or denied)
}

// lateAfter is how far behind its intended time a send must be to count
// as late. Latency is measured from the intended time either way; this
// only tells a reader that the generator itself was struggling.
const lateAfter = 5 * time.Millisecond

// coarseMargin is how long before a due time the pacer stops trusting Go's
// timers, which wake up to a millisecond late (more on a loaded host), and
// sleeps the rest in the kernel.
const coarseMargin = 2 * time.Millisecond

// minSleep is the shortest wait the pacer sleeps. The kernel wakes a
// sleeper some 50 µs late, so one sleep per request would cap the rate
// near 10,000/s; a request due sooner than this leaves at once instead,
// and its latency counts from when it left (see aggregate.add).
const minSleep = 100 * time.Microsecond

// sleepUntil returns at due (an offset from start), or up to minSleep
// before it, or false when ctx ends first. A request must not leave late:
// latency counts from its due time, so every microsecond the pacer
// oversleeps is reported as the target's.
func sleepUntil(ctx context.Context, start time.Time, due time.Duration, timer *time.Timer) bool {
	if w := due - time.Since(start) - coarseMargin; w > 0 {
		timer.Reset(w)
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
		}
	}
	if w := due - time.Since(start); w > minSleep {
		preciseSleep(w)
	}
	return ctx.Err() == nil
}

// Run sends the load described by cfg and reports what happened. Progress
// lines go to progress: one updating line when tty is set, else a line per
// second. Run stops early, with a report of what was sent, when ctx ends.
func Run(ctx context.Context, cfg Config, progress io.Writer, tty bool, log *slog.Logger) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var limits *policies
	if cfg.Verify {
		var err error
		if limits, err = fetchPolicies(cfg.Targets, cfg.Timeout); err != nil {
			return nil, fmt.Errorf("cannot read the cluster's limits for --verify: %w", err)
		}
	}
	clients := make([]endpoint, len(cfg.Targets))
	for i, t := range cfg.Targets {
		c, err := newEndpoint(cfg, t)
		if err != nil {
			for _, c := range clients[:i] {
				c.close()
			}
			return nil, err
		}
		clients[i] = c
	}
	agg := newAggregate(len(cfg.Targets), cfg.Verify)
	p := pacer{start: cfg.Rate, end: cfg.RateEnd, span: cfg.Duration.Seconds()}
	keys := newKeyPicker(cfg)
	sem := make(chan struct{}, cfg.MaxInflight)
	var wg sync.WaitGroup
	start := time.Now()

	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		agg.progressLoop(start, progress, tty, stopProgress)
	}()

	total := p.total()
	var issued, late int64
	var maxLag, sendEnd time.Duration
	var behind bool
	paced := make(chan struct{})
	go func() {
		defer close(paced)
		lockPacerThread() // never unlocked: the thread exits with this goroutine
		timer := time.NewTimer(time.Hour)
		defer timer.Stop()
		for issued < total {
			due := p.due(issued)
			if !sleepUntil(ctx, start, due, timer) {
				break
			}
			select { // a free in-flight slot, or wait for one: the wait shows as latency
			case sem <- struct{}{}:
			case <-ctx.Done():
			}
			if ctx.Err() != nil {
				break
			}
			lag := time.Since(start) - due
			if lag > cfg.Duration/10+time.Second {
				behind = true // hopelessly behind: what is left counts as dropped
				break
			}
			if lag > lateAfter {
				late++
			}
			maxLag = max(maxLag, lag)
			k := keys.next()
			o := outcome{key: keys.keys[k], body: keys.bodies[k], target: int(issued % int64(len(clients))), intended: due}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				clients[o.target].do(&o, start)
				agg.add(&o)
			}()
			issued++
		}
		sendEnd = time.Since(start)
	}()
	<-paced
	wg.Wait()
	for _, c := range clients {
		c.close()
	}
	close(stopProgress)
	<-progressDone

	r := agg.report(cfg, sendEnd)
	// Dropped are the requests left when the generator gave up, hopelessly
	// behind. A run stopped from outside drops nothing: it is interrupted,
	// which fails it as well (checkThresholds).
	var dropped int64
	if behind {
		dropped = total - issued
	}
	r.Sent, r.Dropped, r.Late, r.MaxLagMs = issued, dropped, late, ms(maxLag)
	r.Interrupted = !behind && issued < total
	if sendEnd > 0 {
		r.AchievedRate = round2(float64(issued) / sendEnd.Seconds())
	}
	r.IntendedRate = round2(float64(total) / cfg.Duration.Seconds())
	if limits != nil {
		r.Accuracy = verify(limits, agg.outcomes, cfg.Cost)
	}
	r.checkThresholds(cfg)
	if r.Dropped > 0 {
		log.Warn("the generator could not keep up: requests were dropped", "dropped", r.Dropped, "achieved_rate", r.AchievedRate)
	}
	return r, nil
}

func errorKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, fasthttp.ErrTimeout), errors.Is(err, fasthttp.ErrDialTimeout), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return "no_free_connections"
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF),
		errors.Is(err, fasthttp.ErrConnectionClosed):
		return "connection"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return "connection"
	}
	return "other"
}
