package operator

import (
	"fmt"
	"math"
	"time"
)

// SLOStatus is one objective as evaluated now.
type SLOStatus struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Target float64 `json:"target"`
	Unit   string  `json:"unit"`
	Met    bool    `json:"met"`
	Status string  `json:"status"` // met, in_grace (out of target within its grace_period), violated, unknown
	Error  string  `json:"error,omitempty"`
	// The error budget (budget.go), where the store has it: the goal (the
	// share of the window the SLO must be met, percent), the window, the
	// share of the budget left (percent) and the burn rate by window.
	Goal            float64            `json:"goal,omitzero"`
	Window          string             `json:"window,omitempty"`
	BudgetRemaining *float64           `json:"budget_remaining,omitempty"`
	Burn            map[string]float64 `json:"burn_rate,omitempty"`
}

// SLOs evaluates the subject's objectives against observations.
func (o *Operator) SLOs(obs map[string]any) []SLOStatus {
	out := make([]SLOStatus, 0, len(o.subj.SLOs))
	for _, slo := range o.subj.SLOs {
		st := SLOStatus{Name: slo.Name, Target: slo.Target, Unit: slo.Unit, Status: "unknown"}
		v, err := evalNumber(o.sloProgs, slo.Expr, obs)
		if err != nil {
			st.Error = err.Error()
			out = append(out, st)
			continue
		}
		st.Value = math.Round(v*1000) / 1000
		if slo.Objective == "min" {
			st.Met = v >= slo.Target
		} else {
			st.Met = v <= slo.Target
		}
		st.Status = "violated"
		if st.Met {
			st.Status = "met"
		}
		// grace_period: out of target only this long is not yet a
		// violation, and costs no error budget.
		o.slo.mu.Lock()
		since, seen := o.slo.since[slo.Name]
		switch {
		case st.Met:
			delete(o.slo.since, slo.Name)
		case !seen:
			if o.slo.since == nil {
				o.slo.since = map[string]time.Time{}
			}
			o.slo.since[slo.Name] = o.now()
			since = o.now()
			fallthrough
		default:
			if o.now().Sub(since) < slo.GracePeriod.Duration {
				st.Status = "in_grace"
			}
		}
		o.slo.mu.Unlock()
		out = append(out, st)
	}
	return out
}

func evalNumber(ps programs, src string, env map[string]any) (float64, error) {
	prog, err := ps.get(src)
	if err != nil {
		return 0, err
	}
	v, err := runExpr(prog, env)
	if err != nil {
		return 0, err
	}
	switch x := v.(type) {
	case float64:
		return x, nil
	case int:
		return float64(x), nil
	case int64:
		return float64(x), nil
	}
	return 0, fmt.Errorf("expression gave %T, want a number", v)
}
