package operator

import (
	"testing"
	"time"
)

// TestHistoryFunctions: at, ago and age see an entity's own past, one
// sample per step, and nothing from before the history began.
func TestHistoryFunctions(t *testing.T) {
	h := newHistory(5 * time.Second)
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	sample := func(rate float64) map[string]any {
		return map[string]any{"node_metrics": []any{
			map[string]any{"node_id": "a", "blocked_rate": rate},
			map[string]any{"node_id": "b", "blocked_rate": 100 - rate},
		}}
	}
	for i := range 5 { // 0, 10, 20, 30, 40 % at t0, +5 s, …
		h.add(sample(float64(10*i)), 1, t0.Add(time.Duration(i)*5*time.Second))
	}
	h.add(sample(99), 1, t0.Add(21*time.Second)) // within a step of the last: not kept
	now := t0.Add(20 * time.Second)
	env := h.funcs("node_metrics", "node_id", "a", now)
	at := env["at"].(func(any) any)
	ago := env["ago"].(func(any) any)
	age := env["age"].(func(any) any)
	rate := func(v any) any {
		if v == nil {
			return nil
		}
		return v.(map[string]any)["blocked_rate"]
	}
	f := func(what string, got, want any) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %v; want %v", what, got, want)
		}
	}
	f(`at(t0+12s)`, rate(at(t0.Add(12*time.Second).Format(time.RFC3339Nano))), 20.0)
	f(`at(t0+10s)`, rate(at(t0.Add(10*time.Second))), 20.0)
	f(`at(t0-1s)`, at(t0.Add(-time.Second)), nil) // before the history began
	f(`ago("10s")`, rate(ago("10s")), 20.0)
	f(`ago(15)`, rate(ago(15)), 10.0)
	f(`age(t0)`, age(t0.Format(time.RFC3339)), 20.0)
	f(`at("not a time")`, at("not a time"), nil)
	other := h.funcs("node_metrics", "node_id", "b", now)["ago"].(func(any) any)
	f(`b's ago("10s")`, rate(other("10s")), 80.0)
	// Older than the history keeps: gone.
	h.add(sample(1), 1, t0.Add(historyKeep+time.Minute))
	f(`at(t0+12s) after 30 min`, at(t0.Add(12*time.Second)), nil)
}
