package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/ratelimiter/ratelimiter/limiter"
)

// The accuracy check. The generator cannot see the store's clock, only that
// a decision happened somewhere between sending a request and reading its
// answer, [sent, done] on the generator's clock. Every judgement below holds
// for any decision time inside those intervals, so network delay can hide a
// fault but never invent one. Sliding windows need no clock agreement at all
// (only differences count, assuming the clocks run at the same rate); the
// aligned windows of fixed_window and sliding_window are located from the
// reset_after the nodes report (to the millisecond), and a request whose
// interval might straddle a window edge is not counted against either side.

// policies are the cluster's limits as read before the run.
type policies struct {
	table *limiter.Table
}

// maxLimitsAnswer bounds the read of a node's GET /api/v1/limits, which
// --verify takes whole. max_limits (1,000) limits at their longest (512-byte
// pattern and name) list in 2.6 MB, twice that with the previous version
// a change keeps; 16 MiB leaves room for the descriptor limits a
// node lists with them, and a hostile or broken target costs no more.
const maxLimitsAnswer = 16 << 20

func fetchPolicies(targets []string, timeout time.Duration) (*policies, error) {
	client := &http.Client{Timeout: timeout}
	var lastErr error
	for _, t := range targets {
		resp, err := client.Get(t + "/api/v1/limits")
		if err != nil {
			lastErr = err
			continue
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxLimitsAnswer+1))
		resp.Body.Close()
		if err != nil {
			lastErr = fmt.Errorf("GET %s/api/v1/limits: %w", t, err)
			continue
		}
		if len(body) > maxLimitsAnswer {
			lastErr = fmt.Errorf("GET %s/api/v1/limits: answer larger than %d MiB", t, maxLimitsAnswer>>20)
			continue
		}
		if resp.StatusCode != http.StatusOK {
			lastErr = fmt.Errorf("GET %s/api/v1/limits: status %d", t, resp.StatusCode)
			continue
		}
		var doc struct{ Limits []limiter.Limit }
		if err := json.Unmarshal(body, &doc); err != nil {
			return nil, fmt.Errorf("GET %s/api/v1/limits: %w", t, err)
		}
		for i := range doc.Limits {
			doc.Limits[i].Normalize()
		}
		return &policies{table: limiter.NewTable(doc.Limits)}, nil
	}
	return nil, lastErr
}

// Accuracy is the verdict of --verify.
type Accuracy struct {
	Checked           int64            `json:"checked"` // decisions judged
	Excluded          int64            `json:"excluded"`
	OverAdmissions    int64            `json:"over_admissions"`
	OverAdmissionRate float64          `json:"over_admission_rate"` // of allowed decisions checked
	FalseBlocks       int64            `json:"false_blocks"`
	FalseBlockRate    float64          `json:"false_block_rate"` // of denials checked
	PerPolicy         []PolicyAccuracy `json:"per_policy"`
	Method            string           `json:"method"`
	// Verdict is "pass" or "fail": whether the counts are within
	// --max-over-admissions and --max-false-blocks-rate. A failed verdict
	// is also among the report's failed thresholds, so the exit status is 2.
	Verdict string `json:"verdict"`
	limits  string // the thresholds, for the text report
}

// PolicyAccuracy is the verdict for the keys of one limit.
type PolicyAccuracy struct {
	Policy             string            `json:"policy"`
	Algorithm          limiter.Algorithm `json:"algorithm"`
	Keys               int               `json:"keys"`
	Allowed            int64             `json:"allowed"`
	Denied             int64             `json:"denied"`
	OverAdmissions     int64             `json:"over_admissions"`
	FalseBlocks        int64             `json:"false_blocks"`
	FalseBlocksChecked bool              `json:"false_blocks_checked"`
	Unaligned          int64             `json:"unaligned,omitempty"` // near a window edge: not counted
}

const methodNote = "decision times bounded by [sent, answered] on the generator's clock; aligned windows located from reset_after_ms (±1 ms); requests that might straddle a window edge are not counted"

// verify judges outs; every request asked for cost units.
func verify(p *policies, outs []outcome, cost int64) *Accuracy {
	acc := &Accuracy{Method: methodNote}
	byKey := map[string][]outcome{}
	// uncertain requests got no decision from the limiter (an error, or a
	// fail-open answer after the store timed out) yet may still have been
	// admitted by the store: they are not judged, but a denial they could
	// explain is not called a false block.
	uncertain := map[string][]outcome{}
	pol := map[string]*limiter.Limit{}
	for _, o := range outs {
		l := p.table.Match([]byte(o.key))
		switch {
		case l == nil || l.Shadow || o.reason == "blocked" || o.reason == "no_limit" || o.reason == "shadow":
			acc.Excluded++
		case o.errKind != "" || (o.reason != "within_limit" && o.reason != "limit"):
			acc.Excluded++
			uncertain[o.key] = append(uncertain[o.key], o)
		default:
			byKey[o.key] = append(byKey[o.key], o)
			pol[o.key] = l
		}
	}
	per := map[string]*PolicyAccuracy{}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		l, list := pol[k], byKey[k]
		pa := per[l.KeyPattern]
		if pa == nil {
			pa = &PolicyAccuracy{Policy: l.Name, Algorithm: l.Algorithm}
			per[l.KeyPattern] = pa
		}
		pa.Keys++
		sort.Slice(list, func(i, j int) bool { return list[i].sent < list[j].sent })
		var allowed, denied []outcome
		for _, o := range list {
			if o.allowed {
				allowed = append(allowed, o)
			} else {
				denied = append(denied, o)
			}
		}
		pa.Allowed += int64(len(allowed))
		pa.Denied += int64(len(denied))
		maybe := append(append([]outcome(nil), allowed...), uncertain[k]...)
		sort.Slice(maybe, func(i, j int) bool { return maybe[i].sent < maybe[j].sent })
		switch l.Algorithm {
		case limiter.SlidingLog:
			pa.OverAdmissions += slidingOver(allowed, cost, l.MaxRequests, l.Window(), 0, 0)
			pa.FalseBlocks += slidingFalseBlocks(maybe, denied, cost, l.MaxRequests, l.Window())
			pa.FalseBlocksChecked = true
		case limiter.TokenBucket:
			period := time.Duration((l.WindowSeconds*1e6+l.MaxRequests-1)/l.MaxRequests) * time.Microsecond
			pa.OverAdmissions += slidingOver(allowed, cost, l.Burst, l.Window(), period, 1)
		case limiter.FixedWindow, limiter.SlidingWindow:
			over, falseBlocks, unaligned := alignedCheck(allowed, uncertain[k], denied, cost, l)
			pa.OverAdmissions += over
			pa.Unaligned += unaligned
			if l.Algorithm == limiter.FixedWindow {
				pa.FalseBlocks += falseBlocks
				pa.FalseBlocksChecked = true
			}
		}
	}
	var allowedChecked, deniedChecked int64
	for _, pa := range per {
		acc.PerPolicy = append(acc.PerPolicy, *pa)
		acc.OverAdmissions += pa.OverAdmissions
		acc.FalseBlocks += pa.FalseBlocks
		acc.Checked += pa.Allowed + pa.Denied - pa.Unaligned
		allowedChecked += pa.Allowed
		if pa.FalseBlocksChecked {
			deniedChecked += pa.Denied
		}
	}
	sort.Slice(acc.PerPolicy, func(i, j int) bool { return acc.PerPolicy[i].Policy < acc.PerPolicy[j].Policy })
	if allowedChecked > 0 {
		acc.OverAdmissionRate = float64(acc.OverAdmissions) / float64(allowedChecked)
	}
	if deniedChecked > 0 {
		acc.FalseBlockRate = float64(acc.FalseBlocks) / float64(deniedChecked)
	}
	return acc
}

// slidingOver counts allowed requests that made a set of allowed requests,
// certainly decided within a span L no longer than window, exceed
// limit + L/period + slack units (period 0: a plain limit per window).
// Every request asked for cost units.
func slidingOver(allowed []outcome, cost, limit int64, window, period time.Duration, slack int64) int64 {
	var over int64
	for j := range allowed {
		latest := allowed[j].done
		n := int64(0)
		for i := j; i >= 0; i-- {
			latest = max(latest, allowed[i].done)
			span := latest - allowed[i].sent
			if span >= window {
				break
			}
			n += cost
			bound := limit + slack
			if period > 0 {
				bound += int64(span / period)
			}
			if n > bound {
				over++
				break
			}
			if n > limit+slack+int64(window/max(period, 1)) { // nothing more to find
				break
			}
		}
	}
	return over
}

// slidingFalseBlocks counts denials that even the most generous reading of
// the timing could not justify: every request that might have been admitted
// and might share the window still leaves room for this one.
func slidingFalseBlocks(maybe, denied []outcome, cost, limit int64, window time.Duration) int64 {
	var falseBlocks int64
	for _, d := range denied {
		n := int64(0)
		for _, a := range maybe {
			if a.sent >= d.done {
				break
			}
			if a.done > d.sent-window {
				n += cost
			}
		}
		if n+cost <= limit {
			falseBlocks++
		}
	}
	return falseBlocks
}

// alignedCheck counts, per aligned window, allowed requests beyond the
// limit, and (for fixed_window) denials in windows with room left. The
// window edges are located from reset_after: the end of the window of a
// request decided at t is t + reset_after (fixed_window) or t + reset_after
// - window (sliding_window, whose reset runs to the end of the next window).
func alignedCheck(allowed, uncertain, denied []outcome, cost int64, l *limiter.Limit) (over, falseBlocks, unaligned int64) {
	w := l.Window()
	shift := time.Duration(0)
	if l.Algorithm == limiter.SlidingWindow {
		shift = w
	}
	// Intersect the intervals every allowed answer gives for the phase of
	// the window edges.
	var lo, hi time.Duration
	have := false
	for _, a := range allowed {
		if a.resetMs <= 0 {
			continue
		}
		r := time.Duration(a.resetMs)*time.Millisecond - shift
		elo, ehi := a.sent+r-time.Millisecond, a.done+r+time.Millisecond
		if !have {
			lo, hi, have = elo, ehi, true
			continue
		}
		// The edge this answer bounds is k whole windows from the first one.
		k := floorDiv((elo+ehi)/2-(lo+hi)/2+w/2, w)
		lo, hi = max(lo, elo-time.Duration(k)*w), min(hi, ehi-time.Duration(k)*w)
	}
	if !have || lo > hi {
		return 0, 0, int64(len(allowed) + len(denied)) // no consistent edges: nothing judged
	}
	// window returns the index of the window holding [from, to], or false
	// when the interval might cross an edge.
	window := func(from, to time.Duration) (int64, bool) {
		a := floorDiv(from-hi, w)
		b := floorDiv(to-lo, w)
		return a, a == b
	}
	count := map[int64]int64{} // units certainly admitted in each window
	maybe := map[int64]int64{} // units that might have been admitted in it
	for _, a := range allowed {
		k, ok := window(a.sent, a.done)
		if !ok {
			unaligned++
			maybe[k] += cost
			maybe[k+1] += cost
			continue
		}
		count[k] += cost
		maybe[k] += cost
	}
	for _, u := range uncertain {
		k, ok := window(u.sent, u.done)
		maybe[k] += cost
		if !ok {
			maybe[k+1] += cost
		}
	}
	for _, n := range count {
		over += (max(n-l.MaxRequests, 0) + cost - 1) / cost // in requests
	}
	for _, d := range denied {
		k, ok := window(d.sent, d.done)
		if !ok {
			unaligned++
			continue
		}
		if maybe[k]+cost <= l.MaxRequests {
			falseBlocks++
		}
	}
	return over, falseBlocks, unaligned
}

func floorDiv(a, b time.Duration) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return int64(q)
}

func (a *Accuracy) writeText(w io.Writer) {
	fmt.Fprintf(w, "accuracy       %d decisions checked, %d excluded: %d over-admissions (%.4f%%), %d false blocks (%.4f%%)\n",
		a.Checked, a.Excluded, a.OverAdmissions, 100*a.OverAdmissionRate, a.FalseBlocks, 100*a.FalseBlockRate)
	for _, p := range a.PerPolicy {
		fb := fmt.Sprint(p.FalseBlocks)
		if !p.FalseBlocksChecked {
			fb = "not checked"
		}
		fmt.Fprintf(w, "  %-20s %-15s keys %d  allowed %d  denied %d  over-admissions %d  false blocks %s\n",
			p.Policy, p.Algorithm, p.Keys, p.Allowed, p.Denied, p.OverAdmissions, fb)
	}
	fmt.Fprintf(w, "  method: %s\n", a.Method)
	if a.Verdict != "" {
		fmt.Fprintf(w, "verdict        %s (%s)\n", strings.ToUpper(a.Verdict), a.limits)
	}
}
