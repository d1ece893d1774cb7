package operator

import (
	"testing"

	"github.com/ratelimiter/ratelimiter/internal/promtest"
)

func TestMetricsPromtool(t *testing.T) {
	_, srv := statusEnv(t) // one loop that executed an action: every family has samples
	code, body := get(t, srv.URL+"/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics = %d", code)
	}
	promtest.CheckMetrics(t, []byte(body), nil)
}
