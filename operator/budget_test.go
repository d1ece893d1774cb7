package operator

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSLOGraceBudgetAndBurn: an SLO out of target within its grace_period
// costs no budget; past it, the bad time is spent from the error budget,
// a fast burn (1 h and 5 min windows) opens a slo_burn ticket that
// resolves once the short window is clean, and the status JSON and
// /metrics show the budget and the burn rates.
func TestSLOGraceBudgetAndBurn(t *testing.T) {
	t.Parallel()
	q := startQueue(t, map[string]bool{"w1": false})
	cfg, subj := queueSubject(t)
	cfg.Mode = ModeObserve
	cfg.Interval.Duration = 5 * time.Second
	subj.SLOs[0].GracePeriod.Duration = 30 * time.Second
	subj.SLOs[0].Goal = 99.9
	var mu sync.Mutex
	clock := time.Now()
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	e := newOp(t, cfg, subj, []string{q.URL}, now)
	run := func(d time.Duration) { // ticks every 5 s of injected time
		for end := now().Add(d); now().Before(end); {
			mu.Lock()
			clock = clock.Add(5 * time.Second)
			mu.Unlock()
			e.tick(t)
		}
	}
	srv := httptest.NewServer(e.op.StatusHandler())
	defer srv.Close()
	status := func() SLOStatus {
		t.Helper()
		resp, err := http.Get(srv.URL + "/api/v1/status")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st Status
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || len(st.SLOs) != 1 {
			t.Fatalf("status: %v, %+v", err, st.SLOs)
		}
		return st.SLOs[0]
	}
	run(time.Minute)
	// 20 s out of target: within the 30 s grace.
	q.set(func(q *queueService) { q.stuck["w1"] = true })
	run(20 * time.Second)
	if s := status(); s.Status != "in_grace" || s.BudgetRemaining == nil || *s.BudgetRemaining != 100 {
		t.Fatalf("SLO within its grace: %+v (budget %v); want in_grace, 100%% of the budget left", s, s.BudgetRemaining)
	}
	q.set(func(q *queueService) { q.stuck["w1"] = false })
	run(10 * time.Second)
	// 90 s out of target: 60 s past the grace, 1.7% of an hour.
	q.set(func(q *queueService) { q.stuck["w1"] = true })
	run(90 * time.Second)
	s := status()
	if s.Status != "violated" || s.Burn["1h"] < 14.4 || s.Burn["5m"] < 14.4 || s.BudgetRemaining == nil || *s.BudgetRemaining >= 100 {
		t.Fatalf("SLO after 90 s out of target: %+v (budget %v); want violated, 1h and 5m burn >= 14.4, budget spent", s, *s.BudgetRemaining)
	}
	burn := e.withKey(t, "slo_burn:healthy_workers")
	if len(burn) != 1 || burn[0].Severity != "critical" || !strings.Contains(burn[0].Message, "fast") {
		t.Fatalf("tickets %v; want one critical slo_burn:healthy_workers (fast)", keys(e.tickets(t)))
	}
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`ratelimiter_operator_slo_error_budget_remaining{slo="healthy_workers"} `,
		`ratelimiter_operator_slo_burn_rate{slo="healthy_workers",window="1h"} 1`, `ratelimiter_operator_slo_burn_rate{slo="healthy_workers",window="5m"} `} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// Fixed; once the 5 min window is clean the ticket resolves, the
	// spent budget stays spent.
	q.set(func(q *queueService) { q.stuck["w1"] = false })
	run(6 * time.Minute)
	if tk, _ := e.store.Ticket(context.Background(), burn[0].ID); tk.Status != StatusResolved {
		t.Errorf("slo_burn ticket 6 min after the fix: %s; want resolved", tk.Status)
	}
	if s := status(); s.Status != "met" || *s.BudgetRemaining >= 100 {
		t.Errorf("SLO after the fix: %+v; want met, with the budget still spent", s)
	}
}

// TestStatusJSONEmptyLists: before anything happened, every list in the
// status JSON is [], never null.
func TestStatusJSONEmptyLists(t *testing.T) {
	cfg, subj := queueSubject(t)
	e := newOp(t, cfg, subj, []string{"http://127.0.0.1:9"}, time.Now)
	srv := httptest.NewServer(e.op.StatusHandler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/api/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`"slos":[]`, `"tables":[]`, `"tickets":[]`, `"actions":[]`} {
		if !strings.Contains(strings.ReplaceAll(strings.ReplaceAll(string(body), " ", ""), "\n", ""), want) {
			t.Errorf("status JSON lacks %s: %s", want, body)
		}
	}
}
