package node

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// stats keeps the node's rolling figures over the last statsSlots seconds:
// request counts and latency histograms, updated with atomics on the hot
// path and read when a heartbeat publishes them. A slot is recycled when
// its second comes round again; a writer racing the recycle may lose one
// sample, which rolling figures can afford.
type stats struct {
	slots [statsSlots]statSlot
}

const (
	statsSlots = 10
	// latency buckets: 4 per power of two of microseconds, up to ~2^40 µs.
	latBuckets = 4 * 41
)

type statSlot struct {
	sec                                  atomic.Int64
	requests, allowed, denied            atomic.Int64
	shadow, failOpen, failClosed, errors atomic.Int64
	redisCalls, redisMicros              atomic.Int64
	lat                                  [latBuckets]atomic.Int64
}

func latBucket(us int64) int {
	if us < 4 {
		if us < 0 {
			return 0
		}
		return int(us)
	}
	n := bits.Len64(uint64(us)) // us in [2^(n-1), 2^n)
	sub := int(uint64(us)>>(n-3)) & 3
	if b := 4*(n-2) + sub; b < latBuckets {
		return b
	}
	return latBuckets - 1
}

// latUpper is the upper bound (µs) of bucket b, used to report quantiles.
func latUpper(b int) float64 {
	if b < 4 {
		return float64(b + 1)
	}
	n := b/4 + 2
	sub := b % 4
	return float64(uint64(4+sub+1) << (n - 3))
}

func (s *stats) slot(now time.Time) *statSlot {
	sec := now.Unix()
	sl := &s.slots[sec%statsSlots]
	if old := sl.sec.Load(); old != sec && sl.sec.CompareAndSwap(old, sec) {
		sl.requests.Store(0)
		sl.allowed.Store(0)
		sl.denied.Store(0)
		sl.shadow.Store(0)
		sl.failOpen.Store(0)
		sl.failClosed.Store(0)
		sl.errors.Store(0)
		sl.redisCalls.Store(0)
		sl.redisMicros.Store(0)
		for i := range sl.lat {
			sl.lat[i].Store(0)
		}
	}
	return sl
}

// Figures are one node's rolling figures (GET /api/v1/nodes/{id}/metrics),
// published with its heartbeat so they exist without Prometheus. The
// Prometheus series are promMetrics (metrics.go).
type Figures struct {
	NodeID            string  `json:"node_id"`
	WindowSeconds     int     `json:"window_seconds"`
	RequestsPerSecond float64 `json:"requests_per_second"`
	AllowedRate       float64 `json:"allowed_rate"` // percent of requests
	BlockedRate       float64 `json:"blocked_rate"` // percent of requests
	LatencyP50Ms      float64 `json:"latency_p50_ms"`
	LatencyP99Ms      float64 `json:"latency_p99_ms"`
	RedisLatencyMs    float64 `json:"redis_latency_ms"` // mean of the window
	ActiveKeys        int64   `json:"active_keys"`
	ShadowDenials     int64   `json:"shadow_denials"`
	FailOpen          int64   `json:"fail_open"`
	FailClosed        int64   `json:"fail_closed"`
	StoreErrors       int64   `json:"store_errors"`
}

// snapshot sums the complete seconds of the window (the current second is
// still filling, so it is left out).
func (s *stats) snapshot(now time.Time) Figures {
	cur := now.Unix()
	var m Figures
	var hist [latBuckets]int64
	var total, calls, micros int64
	for i := range s.slots {
		sl := &s.slots[i]
		sec := sl.sec.Load()
		if sec >= cur || sec < cur-statsSlots {
			continue
		}
		total += sl.requests.Load()
		m.AllowedRate += float64(sl.allowed.Load())
		m.BlockedRate += float64(sl.denied.Load())
		m.ShadowDenials += sl.shadow.Load()
		m.FailOpen += sl.failOpen.Load()
		m.FailClosed += sl.failClosed.Load()
		m.StoreErrors += sl.errors.Load()
		calls += sl.redisCalls.Load()
		micros += sl.redisMicros.Load()
		for b := range hist {
			hist[b] += sl.lat[b].Load()
		}
	}
	m.WindowSeconds = statsSlots - 1
	m.RequestsPerSecond = round2(float64(total) / float64(statsSlots-1))
	if total > 0 {
		m.AllowedRate = round2(100 * m.AllowedRate / float64(total))
		m.BlockedRate = round2(100 * m.BlockedRate / float64(total))
	}
	if calls > 0 {
		m.RedisLatencyMs = round2(float64(micros) / float64(calls) / 1000)
	}
	m.LatencyP50Ms = round2(quantile(hist[:], 0.50) / 1000)
	m.LatencyP99Ms = round2(quantile(hist[:], 0.99) / 1000)
	return m
}

func quantile(hist []int64, q float64) float64 {
	var n int64
	for _, c := range hist {
		n += c
	}
	if n == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(n)))
	var seen int64
	for b, c := range hist {
		if seen += c; seen >= rank {
			return latUpper(b)
		}
	}
	return latUpper(len(hist) - 1)
}

func round2(v float64) float64 { return math.Round(v*100) / 100 }
