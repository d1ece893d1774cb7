package operator

import (
	"fmt"
	"math"
)

// SLOStatus is one objective as evaluated now.
type SLOStatus struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Target float64 `json:"target"`
	Unit   string  `json:"unit"`
	Met    bool    `json:"met"`
	Status string  `json:"status"` // met, violated, unknown
	Error  string  `json:"error,omitempty"`
}

// SLOs evaluates the subject's objectives against observations.
func (o *Operator) SLOs(obs map[string]any) []SLOStatus {
	out := make([]SLOStatus, 0, len(o.subj.SLOs))
	for _, slo := range o.subj.SLOs {
		st := SLOStatus{Name: slo.Name, Target: slo.Target, Unit: slo.Unit, Status: "unknown"}
		v, err := evalNumber(slo.Expr, obs)
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
		out = append(out, st)
	}
	return out
}

func evalNumber(src string, env map[string]any) (float64, error) {
	prog, err := compileExpr(src)
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
