package node

import (
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/testkit"
)

// TestConditionalRollback: a rollback naming the version it saw applies
// once; a second one that saw the same bad version gets 412 and does not
// restore it (an unconditional second rollback would).
func TestConditionalRollback(t *testing.T) {
	n := startNode(t, testConfig("n1", nil), nil, nil)
	post := func(max int) {
		t.Helper()
		body := `{"key_pattern":"c:*","max_requests":` + strconv.Itoa(max) + `,"window_seconds":60}`
		if resp := testkit.Call(t, "POST", n.URL+"/api/v1/limits", body, nil); resp.StatusCode/100 != 2 {
			t.Fatalf("POST limit: %d", resp.StatusCode)
		}
	}
	post(1000)
	post(1) // the bad change
	var lim struct{ Limits []limitRecord }
	testkit.Call(t, "GET", n.URL+"/api/v1/limits", "", &lim)
	var seen time.Time
	for _, l := range lim.Limits {
		if l.KeyPattern == "c:*" {
			seen = l.UpdatedAt
		}
	}
	rollback := n.URL + "/api/v1/limits/c:%2A/rollback?if_updated_at=" + url.QueryEscape(seen.Format(time.RFC3339Nano))
	var rec limitRecord
	if resp := testkit.Call(t, "POST", rollback, "", &rec); resp.StatusCode != 200 || rec.MaxRequests != 1000 {
		t.Fatalf("first conditional rollback: %d, max_requests %d; want 200 and 1000", resp.StatusCode, rec.MaxRequests)
	}
	if resp := testkit.Call(t, "POST", rollback, "", nil); resp.StatusCode != 412 {
		t.Fatalf("second conditional rollback: %d; want 412", resp.StatusCode)
	}
	if r, _ := check(t, n.URL, "c:x", 1); r.Limit != 1000 {
		t.Fatalf("after both rollbacks the limit is %d; want 1000", r.Limit)
	}
	if resp := testkit.Call(t, "POST", n.URL+"/api/v1/limits/c:%2A/rollback?if_updated_at=yesterday", "", nil); resp.StatusCode != 400 {
		t.Fatalf("rollback with a malformed time: %d; want 400", resp.StatusCode)
	}
}
