package loadgen

import (
	"math"
	"time"
)

// pacer says when each request is due: constant rate, or a rate that moves
// linearly from start to end over the run. Request i (from 0) is due when
// the expected number of arrivals, the integral of the rate, reaches i.
type pacer struct {
	start, end float64 // requests per second
	span       float64 // seconds
}

// due is request i's intended send time, from the start of the run.
func (p pacer) due(i int64) time.Duration {
	n := float64(i)
	slope := (p.end - p.start) / p.span
	var t float64
	if p.end == 0 || math.Abs(slope) < 1e-12 {
		t = n / p.start
	} else {
		// start*t + slope*t^2/2 = n, the root that is positive at n > 0.
		t = (-p.start + math.Sqrt(p.start*p.start+2*slope*n)) / slope
	}
	return time.Duration(t * float64(time.Second))
}

// total is the number of requests due within the whole run.
func (p pacer) total() int64 {
	end := p.end
	if end == 0 {
		end = p.start
	}
	return int64(math.Floor((p.start + end) / 2 * p.span))
}

// rate is the intended rate at elapsed time t.
func (p pacer) rate(t time.Duration) float64 {
	if p.end == 0 {
		return p.start
	}
	return p.start + (p.end-p.start)*t.Seconds()/p.span
}
