package loadgen

import (
	"math"
	"testing"
	"time"
)

// dueTimes returns every due time of p, checking that they never go
// backwards and all fall inside the run.
func dueTimes(t *testing.T, p pacer) []time.Duration {
	t.Helper()
	n := p.total()
	out := make([]time.Duration, n)
	span := time.Duration(p.span * float64(time.Second))
	for i := range n {
		d := p.due(i)
		if d < 0 || d > span {
			t.Fatalf("%+v: due(%d) = %s; want within [0, %s]", p, i, d, span)
		}
		if i > 0 && d < out[i-1] {
			t.Fatalf("%+v: due(%d) = %s < due(%d) = %s; want monotonic", p, i, d, i-1, out[i-1])
		}
		out[i] = d
	}
	return out
}

// countIn is how many due times fall in [from, to).
func countIn(due []time.Duration, from, to time.Duration) int {
	n := 0
	for _, d := range due {
		if d >= from && d < to {
			n++
		}
	}
	return n
}

func TestPacerConstant(t *testing.T) {
	p := pacer{start: 1000, span: 2}
	if got := p.total(); got != 2000 {
		t.Fatalf("total() = %d; want 2000", got)
	}
	due := dueTimes(t, p)
	for _, i := range []int64{0, 1, 999, 1999} {
		if want := time.Duration(i) * time.Millisecond; due[i] != want {
			t.Errorf("due(%d) = %s; want %s", i, due[i], want)
		}
	}
	for s := range 2 {
		from := time.Duration(s) * time.Second
		if got := countIn(due, from, from+time.Second); got != 1000 {
			t.Errorf("requests due in second %d = %d; want 1000", s, got)
		}
	}
	if got := p.rate(1500 * time.Millisecond); got != 1000 {
		t.Errorf("rate(1.5s) = %g; want 1000", got)
	}
	// A ramp whose ends agree is the constant rate, not a division by zero.
	if got, want := (pacer{start: 1000, end: 1000, span: 2}).due(1500), 1500*time.Millisecond; got != want {
		t.Errorf("flat ramp due(1500) = %s; want %s", got, want)
	}
}

func TestPacerRamp(t *testing.T) {
	f := func(start, end float64) {
		t.Helper()
		p := pacer{start: start, end: end, span: 10}
		// The integral of a linear rate: the mean rate times the span.
		if got, want := p.total(), int64((start+end)/2*10); got != want {
			t.Fatalf("%g:%g total() = %d; want %d", start, end, got, want)
		}
		due := dueTimes(t, p)
		if last := due[len(due)-1]; last < 9900*time.Millisecond {
			t.Errorf("%g:%g last request due at %s; want near the end of the 10s run", start, end, last)
		}
		// Mid-run the rate is the mean of the ends, both as the pacer says
		// it and as counted over the second around the middle.
		mid := (start + end) / 2
		if got := p.rate(5 * time.Second); math.Abs(got-mid) > 1e-9 {
			t.Errorf("%g:%g rate(5s) = %g; want %g", start, end, got, mid)
		}
		if got := countIn(due, 4500*time.Millisecond, 5500*time.Millisecond); math.Abs(float64(got)-mid) > 2 {
			t.Errorf("%g:%g requests due in [4.5s, 5.5s) = %d; want %g ± 2", start, end, got, mid)
		}
		first := countIn(due, 0, time.Second)
		lastSec := countIn(due, 9*time.Second, 10*time.Second)
		// Over the first and last seconds the linear rate averages start ± a tenth of the ramp.
		wantFirst, wantLast := start+(end-start)/20, end-(end-start)/20
		if math.Abs(float64(first)-wantFirst) > 2 || math.Abs(float64(lastSec)-wantLast) > 2 {
			t.Errorf("%g:%g requests due in the first and last second = %d, %d; want %g, %g (± 2)",
				start, end, first, lastSec, wantFirst, wantLast)
		}
	}
	f(1000, 5000)
	f(5000, 1000) // ramping down takes the other root: it must not go NaN before the end
}
