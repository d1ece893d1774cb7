package operator

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/nodetest"
	"github.com/ratelimiter/ratelimiter/internal/redistest"
	"github.com/ratelimiter/ratelimiter/internal/testkit"
	"github.com/ratelimiter/ratelimiter/limiter"
)

// offsetClock is the real time plus an offset the test moves forward: the
// store's clock (limits' updated_at) and the operator's agree, and a grace
// period still passes without waiting for it.
type offsetClock struct{ off atomic.Int64 }

func (c *offsetClock) Now() time.Time                  { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *offsetClock) Add(d time.Duration)             { c.off.Add(int64(d)) }
func (c *offsetClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

func setLimit(t *testing.T, base, body string) {
	t.Helper()
	if status, out := httpDo(t, "POST", base+"/api/v1/limits", body, "Authorization", "Bearer "+adminToken); status != http.StatusOK && status != http.StatusCreated {
		t.Fatalf("POST /api/v1/limits %s: HTTP %d %s", body, status, out)
	}
}

// TestFloodWithoutRecentChangeIsSurge: a brute-force flood on login:* with
// login:* tightened 17 minutes earlier is a traffic surge: diagnosed, and
// nothing rolled back (the old playbook loosened login:* for the attacker).
func TestFloodWithoutRecentChangeIsSurge(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ncfg := nodeConfig("n1", srv)
	ncfg.Limits = append(ncfg.Limits, limiter.Limit{KeyPattern: "login:*", MaxRequests: 5, WindowSeconds: 300})
	a := nodetest.Start(t, ncfg)
	cfg, subj := shipped(t)
	cfg.Mode = ModeAuto
	clk := &offsetClock{}
	e := newOp(t, cfg, subj, []string{a.URL}, clk.Now)
	waitSeen(t, e, 1)
	e.tick(t)
	setLimit(t, a.URL, `{"key_pattern":"login:*","max_requests":3,"window_seconds":300}`)
	for range 4 { // 17 minutes of quiet, seen by the operator
		clk.Add(255 * time.Second)
		e.tick(t)
	}
	denied := 0
	for i := range 120 {
		denied += flood(t, a.URL, fmt.Sprintf("login:victim-%d", i%2), 1)
	}
	if denied < 100 {
		t.Fatalf("%d of 120 denied; want most", denied)
	}
	waitBlocked(t, e, 50)
	e.tick(t)
	clk.Add(invariant(t, &subj, "high_block_rate").GracePeriod.Duration)
	e.tick(t)
	ts := e.withKey(t, "high_block_rate:n1")
	if len(ts) != 1 {
		t.Fatalf("tickets %v; want high_block_rate:n1", keys(e.tickets(t)))
	}
	var d Diagnosis
	_ = json.Unmarshal(ts[0].Diagnosis, &d)
	if !strings.Contains(d.Summary, "a traffic surge") || len(d.RecommendedActions) != 0 {
		t.Errorf("diagnosis %q / %q with actions %v; want a traffic surge and no action", d.Summary, d.RootCause, d.RecommendedActions)
	}
	for _, tk := range e.tickets(t) {
		if ps := e.proposals(t, tk.ID); len(ps) != 0 {
			t.Errorf("ticket %s has proposals %+v; want none", tk.Key, ps)
		}
	}
	if status, body := httpDo(t, "GET", a.URL+"/api/v1/limits", ""); status != 200 || !strings.Contains(string(body), `"key_pattern":"login:*","max_requests":3`) {
		t.Errorf("login:* after the flood: %s; want still 3 (not rolled back)", body)
	}
}

// waitBlocked waits until the node's blocked_rate reaches pct (its rolling
// rate counts complete seconds only).
func waitBlocked(t *testing.T, e *opEnv, pct float64) {
	t.Helper()
	testkit.WaitFor(t, 5*time.Second, fmt.Sprintf("a blocked rate of %v%%", pct), func() bool {
		obs, err := e.op.Observe(context.Background())
		if err != nil {
			return false
		}
		list, _ := obs["node_metrics"].([]any)
		m, _ := list[0].(map[string]any)
		rate, _ := m["blocked_rate"].(float64)
		return rate >= pct
	})
}

// TestTighteningDeniesTenPercentCaught: under steady load, a tightening
// that newly denies about a fifth of the traffic admitted before it (far
// from the 50% of high_block_rate) opens limit_denies_traffic, diagnosed as
// that change and rolled back, within two minutes of the change.
func TestTighteningDeniesTenPercentCaught(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ncfg := nodeConfig("n1", srv)
	ncfg.Limits = append(ncfg.Limits, limiter.Limit{KeyPattern: "user:*", MaxRequests: 1000, WindowSeconds: 60})
	a := nodetest.Start(t, ncfg)
	cfg, subj := shipped(t)
	cfg.Mode = ModeAuto
	clk := &offsetClock{}
	e := newOp(t, cfg, subj, []string{a.URL}, clk.Now)
	waitSeen(t, e, 1)

	// Steady load, bounded: 50 checks/s, one in five on user:*, for at most
	// 40 s. The i-th check is due 20 ms × i after the start and a late one
	// goes at once: a time.Ticker would drop the ticks a stalled process
	// missed, and a machine stalling the test 150 ms a second then sends
	// 13 % fewer checks than the 45/s the wait below wants.
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		const every = 20 * time.Millisecond
		begin := time.Now()
		for i := 0; ; i++ {
			wait := time.NewTimer(time.Until(begin.Add(time.Duration(i+1) * every)))
			select {
			case <-ctx.Done():
				wait.Stop()
				return
			case <-wait.C:
			}
			key := fmt.Sprintf("other:%d", i%40)
			if i%5 == 0 {
				key = fmt.Sprintf("user:%d", i%3)
			}
			req, _ := http.NewRequestWithContext(ctx, "POST", a.URL+"/api/v1/check", strings.NewReader(`{"key":"`+key+`"}`))
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}
	}()
	defer wg.Wait()
	defer cancel()
	// The node's 9 s window fills with the steady load; the operator
	// samples it.
	// The node's 9 s window fills with the steady load, and the operator's
	// latest sample (one per 5 s) shows it full.
	testkit.WaitFor(t, 25*time.Second, "a sample of a full window of steady load", func() bool {
		e.tick(t)
		obs := e.op.eval.hist.at(clk.Now())
		list, _ := obs["node_metrics"].([]any)
		if len(list) == 0 {
			return false
		}
		rps, _ := list[0].(map[string]any)["requests_per_second"].(float64)
		return rps >= 45
	})
	changed := clk.Now()
	setLimit(t, a.URL, `{"key_pattern":"user:*","max_requests":1,"window_seconds":60}`)
	// From here injected time runs at twice the real pace, so the grace
	// period passes sooner while the node's real window fills with the
	// denials.
	var found Ticket
	for found.ID == 0 && clk.Since(changed) < 3*time.Minute {
		time.Sleep(250 * time.Millisecond) // real time for the load; the loop is bounded by the 3 min of injected time
		clk.Add(250 * time.Millisecond)
		e.tick(t)
		if ts := e.withKey(t, "limit_denies_traffic:n1"); len(ts) > 0 {
			found = ts[0]
		}
	}
	if found.ID == 0 {
		t.Fatalf("no limit_denies_traffic ticket within 3 min of injected time; tickets %v", keys(e.tickets(t)))
	}
	took := found.LastSeen.Sub(changed)
	t.Logf("limit_denies_traffic opened %v (operator time) after the change: %s", took.Round(time.Second), found.Message)
	if took > 2*time.Minute {
		t.Errorf("detected %v after the change; want within 2 min", took)
	}
	if hb := e.withKey(t, "high_block_rate:n1"); len(hb) != 0 {
		t.Errorf("high_block_rate opened too (%s): the change should deny far less than half", hb[0].Message)
	}
	var d Diagnosis
	_ = json.Unmarshal(found.Diagnosis, &d)
	if !strings.Contains(d.RootCause, "The limit user:* was changed") {
		t.Errorf("root cause %q; want the change of user:*", d.RootCause)
	}
	ps := e.proposals(t, found.ID)
	if len(ps) != 1 || ps[0].Action != "rollback_limit" || ps[0].Params["key_pattern"] != "user:*" {
		t.Fatalf("proposals %+v; want rollback_limit user:*", ps)
	}
}
