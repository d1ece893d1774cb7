package loadgen

import (
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/limiter"
)

const ms1 = time.Millisecond

// answered is a request sent at sentMs and answered at doneMs (offsets in
// milliseconds from the start of the run).
func answered(allowed bool, sentMs, doneMs int) outcome {
	return outcome{key: "k", sent: time.Duration(sentMs) * ms1, done: time.Duration(doneMs) * ms1, allowed: allowed}
}

// quick is a request answered 1 ms after it was sent.
func quick(allowed bool, sentMs int) outcome { return answered(allowed, sentMs, sentMs+1) }

func quicks(allowed bool, sentMs ...int) []outcome {
	out := make([]outcome, len(sentMs))
	for i, s := range sentMs {
		out[i] = quick(allowed, s)
	}
	return out
}

func TestSlidingOver(t *testing.T) {
	f := func(name string, allowed []outcome, limit int64, period time.Duration, slack, want int64) {
		t.Helper()
		if got := slidingOver(allowed, 1, limit, time.Second, period, slack); got != want {
			t.Errorf("%s: slidingOver = %d; want %d", name, got, want)
		}
	}
	// sliding_log: at most limit admissions in any window.
	f("exactly the limit", quicks(true, 0, 100, 200), 3, 0, 0, 0)
	f("one extra", quicks(true, 0, 100, 200, 300), 3, 0, 0, 1)
	f("two extra", quicks(true, 0, 100, 200, 300, 400), 3, 0, 0, 2)
	f("one extra, last just inside the window", append(quicks(true, 0, 300, 600), answered(true, 997, 998)), 3, 0, 0, 1)
	f("the limit again a window later", quicks(true, 0, 100, 200, 1001, 1101, 1201), 3, 0, 0, 0)
	// The fourth might have been decided a full window after the first:
	// timing hides it, it is not invented.
	f("extra that may fall outside", append(quicks(true, 0, 100, 200), answered(true, 900, 1000)), 3, 0, 0, 0)
	// token_bucket: burst + elapsed/period + slack.
	f("bucket burst", quicks(true, 0, 0, 0), 2, 500*ms1, 1, 0)
	f("bucket burst + 1 over slack", quicks(true, 0, 0, 0, 0), 2, 500*ms1, 1, 1)
	f("bucket refill", quicks(true, 0, 0, 0, 500), 2, 500*ms1, 1, 0)
	f("bucket refill too early", quicks(true, 0, 0, 0, 100), 2, 500*ms1, 1, 1)
}

func TestSlidingFalseBlocks(t *testing.T) {
	f := func(name string, allowed, denied []outcome, want int64) {
		t.Helper()
		if got := slidingFalseBlocks(allowed, denied, 1, 3, time.Second); got != want {
			t.Errorf("%s: slidingFalseBlocks = %d; want %d", name, got, want)
		}
	}
	f("denied when full", quicks(true, 0, 100, 200), quicks(false, 300), 0)
	f("denied with room", quicks(true, 0, 100), quicks(false, 300), 1)
	f("denied after the window moved on", quicks(true, 0, 100, 200), quicks(false, 1150), 1)
	// The first admission might still be live if the denial was decided
	// right when it was sent.
	f("denied at the window's edge", quicks(true, 0, 100, 200), []outcome{answered(false, 1000, 1002)}, 0)
	// An admission sent after the denial was answered cannot justify it;
	// one whose interval overlaps the denial's might.
	f("later admission", quicks(true, 0, 100, 300), quicks(false, 200), 1)
	f("overlapping admission", []outcome{quick(true, 0), quick(true, 100), answered(true, 190, 260)}, []outcome{answered(false, 200, 250)}, 0)
	f("no admissions", nil, quicks(false, 0, 10), 2)
}

// The aligned tests below put window edges at 300 ms + k s, as if the
// store's clock were 300 ms ahead of a whole second at the start.
const edgePhase = 300 * ms1

// atEdges is a request decided at decidedMs inside [sentMs, doneMs], with
// the reset_after_ms a fixed_window node would answer (ceil to the ms of
// the time to the window's end), plus extra (one window for
// sliding_window).
func atEdges(allowed bool, sentMs, decidedMs, doneMs int, extra time.Duration) outcome {
	o := answered(allowed, sentMs, doneMs)
	d := time.Duration(decidedMs) * ms1
	end := edgePhase + (d-edgePhase)/time.Second*time.Second + time.Second
	if d < edgePhase {
		end = edgePhase
	}
	reset := end - d + extra
	o.resetMs = int64((reset + ms1 - 1) / ms1)
	return o
}

func TestAlignedCheck(t *testing.T) {
	fixed := &limiter.Limit{KeyPattern: "k", MaxRequests: 2, WindowSeconds: 1, Algorithm: limiter.FixedWindow}
	sliding := &limiter.Limit{KeyPattern: "k", MaxRequests: 2, WindowSeconds: 1, Algorithm: limiter.SlidingWindow}
	f := func(name string, l *limiter.Limit, allowed, denied [][2]int, straddling []outcome, wantOver, wantFalse, wantUnaligned int64) {
		t.Helper()
		extra := time.Duration(0)
		if l.Algorithm == limiter.SlidingWindow {
			extra = l.Window()
		}
		var a, d []outcome
		for _, s := range allowed { // {sent, latency} in ms, decided halfway
			a = append(a, atEdges(true, s[0], s[0]+s[1]/2, s[0]+s[1], extra))
		}
		for _, s := range denied {
			d = append(d, atEdges(false, s[0], s[0]+s[1]/2, s[0]+s[1], extra))
		}
		for _, o := range straddling {
			if o.allowed {
				o.resetMs += extra.Milliseconds()
				a = append(a, o)
			} else {
				d = append(d, o)
			}
		}
		over, falseBlocks, unaligned := alignedCheck(a, nil, d, 1, l)
		if over != wantOver || falseBlocks != wantFalse || unaligned != wantUnaligned {
			t.Errorf("%s (%s): alignedCheck = %d over, %d false blocks, %d unaligned; want %d, %d, %d",
				name, l.Algorithm, over, falseBlocks, unaligned, wantOver, wantFalse, wantUnaligned)
		}
	}
	// Windows [300, 1300), [1300, 2300), [2300, 3300) ms.
	full := [][2]int{{400, 2}, {500, 4}, {1400, 2}, {1500, 10}}
	for _, l := range []*limiter.Limit{fixed, sliding} {
		f("the limit in each window", l, full, nil, nil, 0, 0, 0)
		f("one extra", l, append(full, [2]int{600, 2}), nil, nil, 1, 0, 0)
		f("one extra in each of two windows", l, append(full, [2]int{600, 2}, [2]int{2200, 2}), nil, nil, 2, 0, 0)
		f("the limit around the edges", l, [][2]int{{1200, 2}, {1290, 2}, {1310, 2}, {1350, 2}}, nil, nil, 0, 0, 0)
	}
	// Denials: a false block only where the window had room. fixed_window
	// only; sliding_window weighs the previous window, so denials there
	// are not judged (verify ignores its false blocks).
	f("denied when full", fixed, full, [][2]int{{700, 2}, {1600, 2}}, nil, 0, 0, 0)
	f("denied with room", fixed, full, [][2]int{{2400, 2}}, nil, 0, 1, 0)
	f("denied with room left by one", fixed, full[:3], [][2]int{{1600, 2}}, nil, 0, 1, 0)
	// A request whose [sent, done] holds an edge is counted as unaligned and
	// not judged: the allowed one below was decided at 1295 ms, so it made
	// three in [300, 1300), but nothing proves which side it fell on; nor
	// may the denial be called a false block in the empty window after 2300.
	straddle := []outcome{atEdges(true, 1290, 1295, 1310, 0), atEdges(false, 2290, 2295, 2310, 0)}
	f("straddling an edge", fixed, full, nil, straddle, 0, 0, 2)
	f("straddling an edge", sliding, full, nil, straddle[:1], 0, 0, 1)
	// Answers whose resets cannot all be true leave nothing to judge.
	bad := []outcome{quick(true, 400), quick(true, 500), quick(true, 600)}
	bad[0].resetMs, bad[1].resetMs, bad[2].resetMs = 900, 300, 600
	if over, fb, un := alignedCheck(bad, nil, quicks(false, 700), 1, fixed); over != 0 || fb != 0 || un != 4 {
		t.Errorf("inconsistent resets: alignedCheck = %d, %d, %d; want 0 over, 0 false blocks, 4 unaligned", over, fb, un)
	}
}

// TestVerifyGroupsByPolicy runs the whole check over synthetic outcomes:
// each key is judged alone, against the limit its pattern matches, and
// answers that say nothing about the limit are excluded.
func TestVerifyGroupsByPolicy(t *testing.T) {
	limits := []limiter.Limit{
		{KeyPattern: "log:*", MaxRequests: 2, WindowSeconds: 1},
		{KeyPattern: "shadow:*", MaxRequests: 1, WindowSeconds: 1, Shadow: true},
	}
	for i := range limits {
		limits[i].Normalize()
	}
	p := &policies{table: limiter.NewTable(limits)}
	at := func(key string, allowed bool, sentMs int, reason string) outcome {
		o := quick(allowed, sentMs)
		o.key, o.reason = key, reason
		return o
	}
	outs := []outcome{
		// Two keys at the limit each: together four admissions, none over.
		at("log:a", true, 0, "within_limit"), at("log:a", true, 10, "within_limit"), at("log:a", false, 20, "limit"),
		at("log:b", true, 5, "within_limit"), at("log:b", true, 15, "within_limit"),
		// One over the limit, sent before the others so order matters not.
		at("log:c", true, 30, "within_limit"), at("log:c", true, 0, "within_limit"), at("log:c", true, 20, "within_limit"),
		// A denial with room.
		at("log:d", false, 0, "limit"),
		// Excluded: shadow, unmatched, an error, a failure-mode answer, a block.
		at("shadow:a", true, 0, "shadow"), at("shadow:a", true, 1, "shadow"),
		at("other", true, 0, "no_limit"),
		{key: "log:a", errKind: "timeout", sent: 40 * ms1, done: 2040 * ms1},
		at("log:a", true, 50, "fail_open"),
		at("log:e", false, 0, "blocked"),
	}
	acc := verify(p, outs, 1)
	if acc.OverAdmissions != 1 || acc.FalseBlocks != 1 || acc.Excluded != 6 || acc.Checked != 9 {
		t.Errorf("verify = %d over-admissions, %d false blocks, %d excluded, %d checked; want 1, 1, 6, 9",
			acc.OverAdmissions, acc.FalseBlocks, acc.Excluded, acc.Checked)
	}
	if len(acc.PerPolicy) != 1 {
		t.Fatalf("verify per policy = %+v; want one entry, log:*", acc.PerPolicy)
	}
	pa := acc.PerPolicy[0]
	want := PolicyAccuracy{Policy: "log:*", Algorithm: limiter.SlidingLog, Keys: 4, Allowed: 7, Denied: 2,
		OverAdmissions: 1, FalseBlocks: 1, FalseBlocksChecked: true}
	if pa != want {
		t.Errorf("verify per policy = %+v; want %+v", pa, want)
	}
	if acc.OverAdmissionRate != 1.0/7 || acc.FalseBlockRate != 0.5 {
		t.Errorf("verify rates = %g over-admission, %g false block; want %g, 0.5", acc.OverAdmissionRate, acc.FalseBlockRate, 1.0/7)
	}
}

// TestVerifyUnansweredMayHaveConsumed: a request the generator saw fail
// (a timeout) or the node answered fail-open (its store call timed out)
// may still have been admitted by the store's script. It proves nothing,
// so it is excluded, but a denial it might explain is no false block:
// counting it as never admitted invents faults.
func TestVerifyUnansweredMayHaveConsumed(t *testing.T) {
	limits := []limiter.Limit{
		{KeyPattern: "log:*", MaxRequests: 2, WindowSeconds: 1},
		{KeyPattern: "fw:*", MaxRequests: 2, WindowSeconds: 1, Algorithm: limiter.FixedWindow},
	}
	for i := range limits {
		limits[i].Normalize()
	}
	p := &policies{table: limiter.NewTable(limits)}
	with := func(key string, o outcome, reason string) outcome { o.key, o.reason = key, reason; return o }
	f := func(name string, outs []outcome) {
		t.Helper()
		acc := verify(p, outs, 1)
		if acc.FalseBlocks != 0 || acc.Excluded != 1 {
			t.Errorf("%s: verify = %d false blocks, %d excluded; want 0 false blocks, 1 excluded: the denial is explained if the unanswered request was admitted",
				name, acc.FalseBlocks, acc.Excluded)
		}
	}
	timedOut := outcome{errKind: "timeout", sent: 10 * ms1, done: 2010 * ms1}
	f("sliding_log after a timeout", []outcome{
		with("log:a", quick(true, 0), "within_limit"), with("log:a", timedOut, ""), with("log:a", quick(false, 100), "limit"),
	})
	f("sliding_log after fail-open", []outcome{
		with("log:a", quick(true, 0), "within_limit"), with("log:a", answered(true, 10, 60), "fail_open"), with("log:a", quick(false, 100), "limit"),
	})
	// Edges at 300 ms + k s, as in TestAlignedCheck.
	f("fixed_window after a timeout", []outcome{
		with("fw:a", atEdges(true, 400, 400, 401, 0), "within_limit"), with("fw:a", outcome{errKind: "timeout", sent: 410 * ms1, done: 450 * ms1}, ""),
		with("fw:a", atEdges(false, 500, 500, 501, 0), "limit"),
	})
}
