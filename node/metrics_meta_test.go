package node

import (
	"io"
	"net/http"
	"testing"

	"github.com/ratelimiter/ratelimiter/internal/promtest"
	"github.com/ratelimiter/ratelimiter/internal/testkit"
)

// lintExplained are the problems promtool reports on a node's /metrics
// that stay: names VictoriaMetrics/metrics gives its process metrics,
// which dashboards know them by.
var lintExplained = map[string]string{
	`go_cgo_calls_count counter metrics should have "_total" suffix`:                           "VictoriaMetrics/metrics' name",
	`go_cgo_calls_count non-histogram and non-summary metrics should not have "_count" suffix`: "VictoriaMetrics/metrics' name",
	`go_cpu_count non-histogram and non-summary metrics should not have "_count" suffix`:       "VictoriaMetrics/metrics' name",
	`go_gc_forced_count counter metrics should have "_total" suffix`:                           "VictoriaMetrics/metrics' name",
	`go_gc_forced_count non-histogram and non-summary metrics should not have "_count" suffix`: "VictoriaMetrics/metrics' name",
}

func TestMetricsPromtool(t *testing.T) {
	n := startNode(t, testConfig("prom", nil), nil, nil)
	for _, key := range []string{"log:a", "log:a", "sw:b", "tb:c", "fw:d", "shadow:e", "shadow:e", "shadow:e"} {
		check(t, n.URL, key, 1)
	}
	testkit.Call(t, "POST", n.URL+"/api/v1/check", `{"key":""}`, nil) // a bad request
	resp, err := http.Get(n.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	promtest.CheckMetrics(t, text, lintExplained)
}
