package loadgen

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// aggregate collects outcomes as they complete.
type aggregate struct {
	mu       sync.Mutex
	all      *hdr.Histogram // µs, from intended send time to answer
	window   *hdr.Histogram // the current second, for progress lines
	targets  []targetAgg
	allowed  int64
	denied   int64
	errors   map[string]int64
	done     int64
	keep     bool
	outcomes []outcome
	winDone  int64
}

type targetAgg struct {
	lat                           *hdr.Histogram
	sent, allowed, denied, errors int64
}

func newHist() *hdr.Histogram { return hdr.New(1, int64(10*time.Minute/time.Microsecond), 3) }

func newAggregate(targets int, keep bool) *aggregate {
	a := &aggregate{all: newHist(), window: newHist(), targets: make([]targetAgg, targets), errors: map[string]int64{}, keep: keep}
	for i := range a.targets {
		a.targets[i].lat = newHist()
	}
	return a
}

func (a *aggregate) add(o *outcome) {
	// From the intended send time, or from the actual one when the pacer
	// let the request leave early (by under minSleep): a late send counts
	// its wait, an early one does not shorten the answer.
	us := max((o.done - min(o.intended, o.sent)).Microseconds(), 1)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.done++
	a.winDone++
	t := &a.targets[o.target]
	t.sent++
	_ = a.all.RecordValue(us)
	_ = a.window.RecordValue(us)
	_ = t.lat.RecordValue(us)
	switch {
	case o.errKind != "":
		a.errors[o.errKind]++
		t.errors++
	case o.allowed:
		a.allowed++
		t.allowed++
	default:
		a.denied++
		t.denied++
	}
	if a.keep {
		a.outcomes = append(a.outcomes, *o)
	}
}

// progressLoop writes a progress line every second until stop closes.
func (a *aggregate) progressLoop(start time.Time, w io.Writer, tty bool, stop <-chan struct{}) {
	if w == nil {
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			if tty {
				fmt.Fprintln(w)
			}
			return
		case <-t.C:
		}
		a.mu.Lock()
		var errs int64
		for _, n := range a.errors {
			errs += n
		}
		line := fmt.Sprintf("%6s  rate %7.0f/s  p50 %7.2fms  p99 %7.2fms  allowed %d  denied %d  errors %d",
			time.Since(start).Round(time.Second), float64(a.winDone), float64(a.window.ValueAtQuantile(50))/1000,
			float64(a.window.ValueAtQuantile(99))/1000, a.allowed, a.denied, errs)
		a.window.Reset()
		a.winDone = 0
		a.mu.Unlock()
		if tty {
			fmt.Fprintf(w, "\r\033[K%s", line)
		} else {
			fmt.Fprintln(w, line)
		}
	}
}

// Latency is a latency summary in milliseconds.
type Latency struct {
	Min  float64 `json:"min_ms"`
	Mean float64 `json:"mean_ms"`
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	P999 float64 `json:"p999_ms"`
	Max  float64 `json:"max_ms"`
}

func latency(h *hdr.Histogram) Latency {
	if h.TotalCount() == 0 {
		return Latency{}
	}
	q := func(p float64) float64 { return round3(float64(h.ValueAtQuantile(p)) / 1000) }
	return Latency{Min: round3(float64(h.Min()) / 1000), Mean: round3(h.Mean() / 1000), P50: q(50), P90: q(90),
		P99: q(99), P999: q(99.9), Max: round3(float64(h.Max()) / 1000)}
}

// TargetReport is one node's share of the run.
type TargetReport struct {
	URL     string  `json:"url"`
	Sent    int64   `json:"sent"`
	Allowed int64   `json:"allowed"`
	Denied  int64   `json:"denied"`
	Errors  int64   `json:"errors"`
	Latency Latency `json:"latency"`
}

// Report is the outcome of a run, as text or JSON.
type Report struct {
	Targets      []string         `json:"targets"`
	DurationS    float64          `json:"duration_s"`
	IntendedRate float64          `json:"intended_rate"`
	AchievedRate float64          `json:"achieved_rate"`
	Sent         int64            `json:"sent"`
	Dropped      int64            `json:"dropped"` // due but never sent: the generator fell behind
	Late         int64            `json:"late"`    // sent more than 5 ms after their intended time
	MaxLagMs     float64          `json:"max_lag_ms"`
	Completed    int64            `json:"completed"`
	Allowed      int64            `json:"allowed"`
	Denied       int64            `json:"denied"`
	Errors       map[string]int64 `json:"errors"`
	ErrorRate    float64          `json:"error_rate"`
	Latency      Latency          `json:"latency"`
	PerTarget    []TargetReport   `json:"per_target"`
	Accuracy     *Accuracy        `json:"accuracy,omitempty"`
	Interrupted  bool             `json:"interrupted,omitempty"`
	// Failed lists the thresholds the run missed; a run with any exits 2.
	Failed []string `json:"failed_thresholds"`
}

func (a *aggregate) report(cfg Config, sendEnd time.Duration) *Report {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := &Report{Targets: cfg.Targets, DurationS: round2(sendEnd.Seconds()), Completed: a.done, Allowed: a.allowed,
		Denied: a.denied, Errors: map[string]int64{}, Latency: latency(a.all), Failed: []string{}}
	var errs int64
	for k, n := range a.errors {
		r.Errors[k] = n
		errs += n
	}
	if a.done > 0 {
		r.ErrorRate = round3(float64(errs) / float64(a.done))
	}
	for i, t := range a.targets {
		r.PerTarget = append(r.PerTarget, TargetReport{URL: cfg.Targets[i], Sent: t.sent, Allowed: t.allowed,
			Denied: t.denied, Errors: t.errors, Latency: latency(t.lat)})
	}
	return r
}

func (r *Report) checkThresholds(cfg Config) {
	if cfg.MaxP99 > 0 && r.Latency.P99 > ms(cfg.MaxP99) {
		r.Failed = append(r.Failed, fmt.Sprintf("p99 %.3fms > --max-p99 %s", r.Latency.P99, cfg.MaxP99))
	}
	if cfg.MaxErrorRate > 0 && r.ErrorRate > cfg.MaxErrorRate {
		r.Failed = append(r.Failed, fmt.Sprintf("error rate %.3f > --max-error-rate %g", r.ErrorRate, cfg.MaxErrorRate))
	}
	if cfg.MinRate > 0 && r.AchievedRate < cfg.MinRate {
		r.Failed = append(r.Failed, fmt.Sprintf("achieved rate %.1f/s < --min-rate %g", r.AchievedRate, cfg.MinRate))
	}
	if r.Interrupted {
		// A run cut short measured less than it was asked to: a pipeline
		// that stopped it (a timeout, a cancelled job) must not read a pass.
		r.Failed = append(r.Failed, fmt.Sprintf("interrupted after %.2fs of a %s run", r.DurationS, cfg.Duration))
	}
	if r.Dropped > cfg.MaxDropped {
		r.Failed = append(r.Failed, fmt.Sprintf("%d requests dropped > --max-dropped %d", r.Dropped, cfg.MaxDropped))
	}
	if a := r.Accuracy; a != nil {
		var failed []string
		if a.OverAdmissions > cfg.MaxOverAdmissions {
			failed = append(failed, fmt.Sprintf("%d over-admissions > --max-over-admissions %d", a.OverAdmissions, cfg.MaxOverAdmissions))
		}
		if m := cfg.MaxFalseBlocksRate; m != nil && a.FalseBlockRate > *m {
			failed = append(failed, fmt.Sprintf("false-block rate %.4f > --max-false-blocks-rate %g", a.FalseBlockRate, *m))
		}
		a.Verdict = "pass"
		if len(failed) > 0 {
			a.Verdict = "fail"
		}
		a.limits = fmt.Sprintf("at most %d over-admissions", cfg.MaxOverAdmissions)
		if m := cfg.MaxFalseBlocksRate; m != nil {
			a.limits += fmt.Sprintf(", a false-block rate of at most %g", *m)
		}
		r.Failed = append(r.Failed, failed...)
	}
}

// WriteText writes the report for a person.
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "targets        %s\n", strings.Join(r.Targets, " "))
	fmt.Fprintf(w, "sent           %d in %.2fs: %.1f/s achieved, %.1f/s intended\n", r.Sent, r.DurationS, r.AchievedRate, r.IntendedRate)
	if r.Dropped > 0 || r.Late*100 > r.Sent {
		fmt.Fprintf(w, "behind         %d dropped, %d sent over 5 ms late (max lag %.1fms): the generator could not keep up\n", r.Dropped, r.Late, r.MaxLagMs)
	}
	fmt.Fprintf(w, "answers        %d allowed, %d denied, %d errors (%.1f%%)\n", r.Allowed, r.Denied, r.Completed-r.Allowed-r.Denied, 100*r.ErrorRate)
	kinds := make([]string, 0, len(r.Errors))
	for k := range r.Errors {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		fmt.Fprintf(w, "  error        %-20s %d\n", k, r.Errors[k])
	}
	l := r.Latency
	fmt.Fprintf(w, "latency (ms)   min %.3f  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f   (from intended send time)\n",
		l.Min, l.P50, l.P90, l.P99, l.P999, l.Max)
	for _, t := range r.PerTarget {
		fmt.Fprintf(w, "  %-28s sent %d  allowed %d  denied %d  errors %d  p50 %.3f  p99 %.3f\n",
			t.URL, t.Sent, t.Allowed, t.Denied, t.Errors, t.Latency.P50, t.Latency.P99)
	}
	if a := r.Accuracy; a != nil {
		a.writeText(w)
	}
	if r.Interrupted {
		fmt.Fprintln(w, "interrupted    the run was stopped early")
	}
	for _, f := range r.Failed {
		fmt.Fprintf(w, "FAILED         %s\n", f)
	}
}

func ms(d time.Duration) float64 { return round3(float64(d) / float64(time.Millisecond)) }
func round2(v float64) float64   { return math.Round(v*100) / 100 }
func round3(v float64) float64   { return math.Round(v*1000) / 1000 }
