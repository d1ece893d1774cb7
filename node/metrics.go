package node

import (
	"bytes"
	"io"
	"strconv"

	"github.com/VictoriaMetrics/metrics"

	"github.com/ratelimiter/ratelimiter/internal/promtext"
)

// promMetrics are the Prometheus series of one node. Each node owns its Set,
// so several nodes in one process (the demo, tests) never share counters.
type promMetrics struct {
	set                       *metrics.Set
	allowed, denied           *metrics.Counter
	shadow, failOpen, failCl  *metrics.Counter
	localDenials, badRequests *metrics.Counter
	panics                    *metrics.Counter
	redisOps, redisErrs       map[string]*metrics.Counter
	duration, redisLatency    *metrics.PrometheusHistogram
}

// Redis operations counted by ratelimiter_redis_operations_total.
var redisOperations = []string{"check", "check_batch", "sync", "heartbeat", "nodes", "write", "reset", "peek"}

// Buckets from 50 µs to 2.5 s: a decision normally takes well under a
// millisecond, and a dead Redis costs up to the timeout.
var latencyBuckets = []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}

func newPromMetrics(n *Node) *promMetrics {
	s := metrics.NewSet()
	id := strconv.Quote(n.id)
	m := &promMetrics{
		set:          s,
		allowed:      s.NewCounter(`ratelimiter_requests_total{node_id=` + id + `,result="allowed"}`),
		denied:       s.NewCounter(`ratelimiter_requests_total{node_id=` + id + `,result="blocked"}`),
		shadow:       s.NewCounter(`ratelimiter_shadow_denials_total{node_id=` + id + `}`),
		failOpen:     s.NewCounter(`ratelimiter_fail_open_total{node_id=` + id + `}`),
		failCl:       s.NewCounter(`ratelimiter_fail_closed_total{node_id=` + id + `}`),
		localDenials: s.NewCounter(`ratelimiter_local_denials_total{node_id=` + id + `}`),
		badRequests:  s.NewCounter(`ratelimiter_bad_requests_total{node_id=` + id + `}`),
		panics:       s.NewCounter(`ratelimiter_panics_total{node_id=` + id + `}`),
		redisOps:     map[string]*metrics.Counter{},
		redisErrs:    map[string]*metrics.Counter{},
		duration:     s.NewPrometheusHistogramExt(`ratelimiter_request_duration_seconds{node_id=`+id+`}`, latencyBuckets),
		redisLatency: s.NewPrometheusHistogramExt(`ratelimiter_redis_latency_seconds{node_id=`+id+`}`, latencyBuckets),
	}
	for _, op := range redisOperations {
		m.redisOps[op] = s.NewCounter(`ratelimiter_redis_operations_total{node_id=` + id + `,operation="` + op + `"}`)
		m.redisErrs[op] = s.NewCounter(`ratelimiter_redis_errors_total{node_id=` + id + `,operation="` + op + `"}`)
	}
	s.NewGauge(`ratelimiter_active_keys{node_id=`+id+`}`, func() float64 { return float64(n.activeKeys()) })
	s.NewGauge(`ratelimiter_redis_connected{node_id=`+id+`}`, func() float64 { return b2f(n.connected.Load()) })
	for _, st := range []string{stateHealthy, stateUnhealthy, stateDraining} {
		s.NewGauge(`ratelimiter_node_state{node_id=`+id+`,state="`+st+`"}`, func() float64 { return b2f(n.selfState() == st) })
	}
	return m
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// write writes the metrics with their HELP and TYPE (see metricsMeta).
func (m *promMetrics) write(w io.Writer) {
	var b bytes.Buffer
	m.set.WritePrometheus(&b)
	metrics.WriteProcessMetrics(&b)
	_ = promtext.Annotate(w, b.Bytes(), metricsMeta) // a client gone mid-scrape is no error of ours
}
