package node

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/testkit"
)

// TestDrainWhoWhyUntil: a drain records who, why and until when; the node
// reports them with its age and how far past its until it is; a bad body
// is a 400 and changes nothing.
func TestDrainWhoWhyUntil(t *testing.T) {
	n := startNode(t, testConfig("d", nil), nil, nil)
	url := n.URL + "/api/v1/nodes/d/drain"
	var info Info
	for _, body := range []string{`{"by":"alice","until":"2001-01-01T00:00:00Z"}`, `{"until":"x"}`, `{"by":"a","colour":"red"}`,
		`{"duration_seconds":60,"until":"2999-01-01T00:00:00Z"}`, `{"duration_seconds":-1}`, `{"reason":"` + strings.Repeat("x", 300) + `"}`} {
		resp := testkit.Call(t, "POST", url, body, nil)
		if resp.StatusCode != http.StatusBadRequest || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") {
			t.Errorf("POST drain %s = %d %s; want 400 problem+json", body, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	testkit.Call(t, "GET", n.URL+"/api/v1/nodes/d", "", &info)
	if info.Draining || info.DrainedAt != nil {
		t.Fatalf("after rejected drains: %+v; want not draining", info)
	}

	until := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
	mustCall(t, "POST", url, `{"by":"alice","reason":"kernel upgrade","until":"`+until.Format(time.RFC3339)+`"}`, http.StatusOK, nil)
	testkit.Call(t, "GET", n.URL+"/api/v1/nodes/d", "", &info)
	if !info.Draining || info.DrainBy != "alice" || info.DrainReason != "kernel upgrade" || info.DrainUntil == nil ||
		!info.DrainUntil.Equal(until) || info.DrainedAt == nil || info.DrainOverdueMs > -3600_000 {
		t.Fatalf("drained node: %+v; want alice, kernel upgrade, until %v, overdue about -2h", info, until)
	}
	first := *info.DrainedAt
	// A second drain (extending, say) keeps the start and takes the rest.
	mustCall(t, "POST", url, `{"by":"bob","reason":"deploy"}`, http.StatusOK, nil)
	testkit.Call(t, "GET", n.URL+"/api/v1/nodes/d", "", &info)
	if info.DrainBy != "bob" || info.DrainUntil != nil || info.DrainOverdueMs != 0 || !info.DrainedAt.Equal(first) {
		t.Fatalf("re-drained node: %+v; want bob, no until, drained at %v", info, first)
	}
	// The raw JSON always has the fields, so expressions never miss them.
	var raw map[string]any
	mustCall(t, "DELETE", url, "", http.StatusOK, nil)
	testkit.Call(t, "GET", n.URL+"/api/v1/nodes/d", "", &raw)
	for _, f := range []string{"drained_at", "drain_by", "drain_reason", "drain_until", "drain_age_ms", "drain_overdue_ms"} {
		if _, ok := raw[f]; !ok {
			t.Errorf("GET node lacks %q when not draining: %v", f, raw)
		}
	}
	if raw["draining"] != false {
		t.Errorf("after DELETE drain: %v; want not draining", raw)
	}
}
