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

// sloPass is what one loop writes and reads of the SLOs, in its
// transaction: the seconds to add, how long to keep them, and the starts
// of the windows whose bad seconds it reads back.
type sloPass struct {
	times []SLOTime
	keep  time.Duration
	since []time.Time
}

// sloPass counts the time since the last loop for every SLO. A failed
// observation counts for nothing (the caller does not call it).
func (o *Operator) sloPass(obs map[string]any, now time.Time) sloPass {
	if len(o.subj.SLOs) == 0 {
		return sloPass{}
	}
	tr := &o.slo
	tr.mu.Lock()
	dt := now.Sub(tr.last)
	if tr.last.IsZero() || dt > 2*o.cfg.Interval.Duration || dt < 0 {
		dt = o.cfg.Interval.Duration // a first loop, or one after a pause: one interval, not the gap
	}
	tr.last = now
	tr.mu.Unlock()
	pass := sloPass{keep: 6 * time.Hour, since: o.budgetSince(now)}
	for _, st := range o.SLOs(obs) {
		if st.Status == "unknown" {
			continue // the expression failed: neither good nor bad
		}
		t := SLOTime{SLO: st.Name, Good: dt.Seconds()}
		if st.Status == "violated" {
			t.Good, t.Bad = 0, dt.Seconds()
		}
		pass.times = append(pass.times, t)
		pass.keep = max(pass.keep, sloWindow(o.sloByName(st.Name)))
	}
	return pass
}

// burns are the burn-rate violations of the bad seconds read by the
// loop's transaction.
func (o *Operator) burns(bad map[string][]float64, now time.Time) []Violation {
	if len(o.subj.SLOs) == 0 {
		return nil
	}
	all := o.budgetsOf(bad)
	var out []Violation
	for _, slo := range o.subj.SLOs {
		b := all[slo.Name]
		for _, a := range burnAlerts {
			if b.burn[a.long] >= a.rate && b.burn[a.short] >= a.rate {
				out = append(out, Violation{Invariant: SLOBurn, Entity: slo.Name, Severity: a.severity, Since: now,
					Message: fmt.Sprintf("SLO %s burns its error budget %s: %.1fx over %s and %.1fx over %s (alert at %gx; goal %g%% over %s)",
						slo.Name, a.name, b.burn[a.long], a.long, b.burn[a.short], a.short, a.rate, goal(slo), sloWindow(slo))})
				break // the fast alert covers the slow one
			}
		}
	}
	return out
}

func (o *Operator) sloByName(name string) SLO {
	for _, s := range o.subj.SLOs {
		if s.Name == name {
			return s
		}
	}
	return SLO{Name: name}
}

// budget is one SLO's error budget left (percent, negative once
// overspent) and its burn rates by window.
type budget struct {
	remaining float64
	burn      map[time.Duration]float64
}

// budgetSince are the starts of the windows budgets reads: burnWindows,
// then each SLO's window.
func (o *Operator) budgetSince(now time.Time) []time.Time {
	since := make([]time.Time, 0, len(burnWindows)+len(o.subj.SLOs))
	for _, w := range burnWindows {
		since = append(since, now.Add(-w.d))
	}
	for _, slo := range o.subj.SLOs {
		since = append(since, now.Add(-sloWindow(slo)))
	}
	return since
}

// budgets reads every SLO's budget in one query.
func (o *Operator) budgets(ctx context.Context, now time.Time) (map[string]budget, error) {
	bad, err := o.store.SLOBad(ctx, o.budgetSince(now))
	if err != nil {
		return nil, err
	}
	return o.budgetsOf(bad), nil
}

// budgetsOf computes the budgets from the bad seconds since each of
// budgetSince. The burn rate over a window is the bad seconds in it, over
// the window, over the budget share.
func (o *Operator) budgetsOf(bad map[string][]float64) map[string]budget {
	out := map[string]budget{}
	for i, slo := range o.subj.SLOs {
		vals := bad[slo.Name]
		if vals == nil {
			vals = make([]float64, len(burnWindows)+len(o.subj.SLOs))
		}
		share := 1 - goal(slo)/100
		b := budget{burn: map[time.Duration]float64{}}
		for j, w := range burnWindows {
			b.burn[w.d] = round3(vals[j] / w.d.Seconds() / share)
		}
		b.remaining = round3(100 * (1 - vals[len(burnWindows)+i]/(sloWindow(slo).Seconds()*share)))
		out[slo.Name] = b
	}
	return out
}

// addBudgets fills the budget and burn rates of each SLO status.
func (o *Operator) addBudgets(ctx context.Context, sts []SLOStatus) {
	all, err := o.budgets(ctx, o.now())
	for i := range sts {
		slo := o.sloByName(sts[i].Name)
		sts[i].Goal, sts[i].Window = goal(slo), sloWindow(slo).String()
		b, ok := all[slo.Name]
		if err != nil || !ok {
			continue
		}
		rem := b.remaining
		sts[i].BudgetRemaining = &rem
		sts[i].Burn = map[string]float64{}
		for _, w := range burnWindows {
			sts[i].Burn[w.name] = b.burn[w.d]
		}
	}
}

// writeSLOMetrics writes the budgets and burn rates for /metrics (their
// HELP and TYPE are in metricsMeta).
func (o *Operator) writeSLOMetrics(ctx context.Context, w io.Writer) {
	sts := make([]SLOStatus, len(o.subj.SLOs))
	for i, s := range o.subj.SLOs {
		sts[i].Name = s.Name
	}
	o.addBudgets(ctx, sts)
	for _, s := range sts {
		if s.BudgetRemaining != nil {
			fmt.Fprintf(w, "ratelimiter_operator_slo_error_budget_remaining{slo=%q} %g\n", s.Name, *s.BudgetRemaining)
		}
	}
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
