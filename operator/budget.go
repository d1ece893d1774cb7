package operator

import (
	"context"
	"fmt"
	"io"
	"math"
	"sync"
	"time"
)

// Error budgets. Each loop, the time since the last one counts as good
// (the SLO met) or bad (out of target for longer than its grace_period);
// the seconds are kept per minute in the store, so a restart loses none.
// An SLO's goal is the share of its window it must be met (99.9%); the
// rest is its error budget. The burn rate over a window is how fast the
// budget goes: 1 spends exactly the budget over the SLO's window. As in
// the Google SRE workbook, an alert needs a long and a short window both
// burning: the long one says it matters, the short one that it is still
// going on (so the ticket resolves soon after the burn stops).

// burnAlert is one multi-window burn-rate alert.
type burnAlert struct {
	name        string
	long, short time.Duration
	rate        float64
	severity    string
}

var burnAlerts = []burnAlert{
	{"fast", time.Hour, 5 * time.Minute, 14.4, "critical"},  // 2% of a 30-day budget in an hour
	{"slow", 6 * time.Hour, 30 * time.Minute, 6, "warning"}, // 5% of it in six hours
}

// burnWindows are the windows reported on the status page and /metrics.
var burnWindows = []struct {
	name string
	d    time.Duration
}{{"5m", 5 * time.Minute}, {"30m", 30 * time.Minute}, {"1h", time.Hour}, {"6h", 6 * time.Hour}}

// SLOBurn is the invariant of burn-rate tickets; the entity is the SLO.
const SLOBurn = "slo_burn"

const (
	defaultGoal      = 99.9
	defaultSLOWindow = 30 * 24 * time.Hour
)

// sloTracker remembers, between loops, since when each SLO has been out of
// target and when the last loop counted.
type sloTracker struct {
	mu    sync.Mutex
	since map[string]time.Time
	last  time.Time
}

func goal(s SLO) float64 {
	if s.Goal > 0 {
		return s.Goal
	}
	return defaultGoal
}

func sloWindow(s SLO) time.Duration {
	if s.Window.Duration > 0 {
		return s.Window.Duration
	}
	return defaultSLOWindow
}

// trackSLOs counts the time since the last loop for every SLO and returns
// the burn-rate violations. A failed observation counts for nothing.
func (o *Operator) trackSLOs(ctx context.Context, obs map[string]any, now time.Time) ([]Violation, error) {
	tr := &o.slo
	tr.mu.Lock()
	dt := now.Sub(tr.last)
	if tr.last.IsZero() || dt > 2*o.cfg.Interval.Duration || dt < 0 {
		dt = o.cfg.Interval.Duration // a first loop, or one after a pause: one interval, not the gap
	}
	tr.last = now
	tr.mu.Unlock()
	var out []Violation
	for _, st := range o.SLOs(obs) {
		slo := o.sloByName(st.Name)
		if st.Status == "unknown" {
			continue // the expression failed: neither good nor bad
		}
		good, bad := dt.Seconds(), 0.0
		if st.Status == "violated" {
			good, bad = 0, dt.Seconds()
		}
		if err := o.store.AddSLOTime(ctx, slo.Name, now, good, bad, max(sloWindow(slo), 6*time.Hour)); err != nil {
			return out, err
		}
		burns, err := o.burnRates(ctx, slo, now)
		if err != nil {
			return out, err
		}
		for _, a := range burnAlerts {
			if burns[a.long] >= a.rate && burns[a.short] >= a.rate {
				out = append(out, Violation{Invariant: SLOBurn, Entity: slo.Name, Severity: a.severity, Since: now,
					Message: fmt.Sprintf("SLO %s burns its error budget %s: %.1fx over %s and %.1fx over %s (alert at %gx; goal %g%% over %s)",
						slo.Name, a.name, burns[a.long], a.long, burns[a.short], a.short, a.rate, goal(slo), sloWindow(slo))})
				break // the fast alert covers the slow one
			}
		}
	}
	return out, nil
}

func (o *Operator) sloByName(name string) SLO {
	for _, s := range o.subj.SLOs {
		if s.Name == name {
			return s
		}
	}
	return SLO{Name: name}
}

// burnRates are slo's burn rates over every alert and report window: the
// bad seconds in the window, over the window, over the budget share.
func (o *Operator) burnRates(ctx context.Context, slo SLO, now time.Time) (map[time.Duration]float64, error) {
	out := map[time.Duration]float64{}
	budget := 1 - goal(slo)/100
	for _, w := range burnWindows {
		_, bad, err := o.store.SLOTime(ctx, slo.Name, now.Add(-w.d))
		if err != nil {
			return nil, err
		}
		out[w.d] = round3(bad / w.d.Seconds() / budget)
	}
	return out, nil
}

// budgetRemaining is the share of slo's error budget left over its
// window, in percent (negative once overspent).
func (o *Operator) budgetRemaining(ctx context.Context, slo SLO, now time.Time) (float64, error) {
	w := sloWindow(slo)
	_, bad, err := o.store.SLOTime(ctx, slo.Name, now.Add(-w))
	if err != nil {
		return 0, err
	}
	allowed := w.Seconds() * (1 - goal(slo)/100)
	return round3(100 * (1 - bad/allowed)), nil
}

// addBudgets fills the budget and burn rates of each SLO status.
func (o *Operator) addBudgets(ctx context.Context, sts []SLOStatus) {
	now := o.now()
	for i := range sts {
		slo := o.sloByName(sts[i].Name)
		sts[i].Goal, sts[i].Window = goal(slo), sloWindow(slo).String()
		rem, err := o.budgetRemaining(ctx, slo, now)
		if err != nil {
			continue
		}
		burns, err := o.burnRates(ctx, slo, now)
		if err != nil {
			continue
		}
		sts[i].BudgetRemaining = &rem
		sts[i].Burn = map[string]float64{}
		for _, w := range burnWindows {
			sts[i].Burn[w.name] = burns[w.d]
		}
	}
}

// writeSLOMetrics writes the budgets and burn rates for /metrics.
func (o *Operator) writeSLOMetrics(ctx context.Context, w io.Writer) {
	sts := make([]SLOStatus, len(o.subj.SLOs))
	for i, s := range o.subj.SLOs {
		sts[i].Name = s.Name
	}
	o.addBudgets(ctx, sts)
	fmt.Fprintln(w, "# HELP ratelimiter_operator_slo_error_budget_remaining Share of the SLO's error budget left over its window, percent.")
	fmt.Fprintln(w, "# TYPE ratelimiter_operator_slo_error_budget_remaining gauge")
	for _, s := range sts {
		if s.BudgetRemaining != nil {
			fmt.Fprintf(w, "ratelimiter_operator_slo_error_budget_remaining{slo=%q} %g\n", s.Name, *s.BudgetRemaining)
		}
	}
	fmt.Fprintln(w, "# HELP ratelimiter_operator_slo_burn_rate How fast the SLO spends its error budget over the window (1 = exactly the budget over the SLO's window).")
	fmt.Fprintln(w, "# TYPE ratelimiter_operator_slo_burn_rate gauge")
	for _, s := range sts {
		for _, bw := range burnWindows {
			if v, ok := s.Burn[bw.name]; ok {
				fmt.Fprintf(w, "ratelimiter_operator_slo_burn_rate{slo=%q,window=%q} %g\n", s.Name, bw.name, v)
			}
		}
	}
}

func round3(f float64) float64 {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return f
	}
	return math.Round(f*1000) / 1000
}
