package operator

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/testkit"
)

// TestRetryAfterLostAnswerAppliesOnce: the first node applies the action
// and its answer is lost; the operator retries on another node with the
// same Idempotency-Key, and the limit changes exactly once.
func TestRetryAfterLostAnswerAppliesOnce(t *testing.T) {
	t.Parallel()
	_, nodes := startCluster(t, 2)
	a, b := nodes[0], nodes[1]
	// In front of a: reads pass; a mutation reaches a, a applies it, and
	// the connection is cut before its answer gets back.
	var cut atomic.Int32
	lossy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, a.URL+r.URL.RequestURI(), r.Body)
		req.Header = r.Header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if r.Method != http.MethodGet {
			cut.Add(1)
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return
		}
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		w.Write(body)
	}))
	defer lossy.Close()

	cfg, subj := shipped(t)
	cfg.Mode = ModeAuto
	e := newOp(t, cfg, subj, []string{lossy.URL, b.URL}, time.Now)
	// hot:* goes from 10 to 7; a rollback brings back 10, and a second
	// rollback would bring back 7: the effect shows how often it ran.
	setLimit(t, b.URL, `{"key_pattern":"hot:*","max_requests":7,"window_seconds":60}`)
	p, err := e.op.Act(context.Background(), "rollback_limit", map[string]any{"key_pattern": "hot:*"}, "carol", false)
	if err != nil {
		t.Fatalf("Act: %v", err)
	}
	if cut.Load() != 1 {
		t.Fatalf("the lossy node saw %d mutations; want 1 (the test proves nothing otherwise)", cut.Load())
	}
	if p.Status != ProposalSucceeded || !strings.Contains(p.Result, "not applied again") {
		t.Errorf("proposal %s: %s; want succeeded with the first attempt's answer, replayed", p.Status, p.Result)
	}
	// Applied once: 10 again, with 7 as its previous.
	type limit struct {
		KeyPattern  string `json:"key_pattern"`
		MaxRequests int64  `json:"max_requests"`
		Previous    *struct {
			MaxRequests int64 `json:"max_requests"`
		} `json:"previous"`
	}
	var got limit
	testkit.WaitFor(t, 5*time.Second, "hot:* rolled back on b", func() bool {
		var doc struct{ Limits []limit }
		_, body := httpDo(t, "GET", b.URL+"/api/v1/limits", "")
		_ = json.Unmarshal(body, &doc)
		for _, l := range doc.Limits {
			if l.KeyPattern == "hot:*" {
				got = l
			}
		}
		return got.MaxRequests != 7
	})
	if got.MaxRequests != 10 || got.Previous == nil || got.Previous.MaxRequests != 7 {
		t.Errorf("hot:* = %d, previous %+v; want 10 with previous 7: rolled back exactly once", got.MaxRequests, got.Previous)
	}
	// The audit shows one effect: one execution, one success.
	var executing, succeeded int
	for _, a := range e.audit(t, 0) {
		if a.ProposalID == p.ID && a.Event == "proposal_status" {
			switch {
			case strings.Contains(string(a.Detail), `"to":"executing"`):
				executing++
			case strings.Contains(string(a.Detail), `"to":"succeeded"`):
				succeeded++
			}
		}
	}
	if executing != 1 || succeeded != 1 {
		t.Errorf("audit: %d executions, %d successes of proposal %d; want one each", executing, succeeded, p.ID)
	}
}
