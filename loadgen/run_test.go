package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/config"
	"github.com/ratelimiter/ratelimiter/internal/nodetest"
	"github.com/ratelimiter/ratelimiter/internal/redistest"
	"github.com/ratelimiter/ratelimiter/internal/testkit"
	"github.com/ratelimiter/ratelimiter/limiter"
)

// startCluster runs nodes in this process on one fresh Redis, with
// nodetest's fast loops, until the test ends. It returns their base URLs
// once every node serves all of limits.
func startCluster(t *testing.T, nodes int, limits []limiter.Limit) []string {
	t.Helper()
	srv := redistest.Start(t)
	var urls []string
	for i := range nodes {
		cfg := nodetest.Config(fmt.Sprintf("lg%d", i), srv)
		// Several runs share two CPUs: a Redis call that outlives the default
		// 50 ms is answered fail-open while its script may still have run,
		// which is a fault of the test machine, not of the limiter.
		cfg.RedisTimeout = config.Duration{Duration: time.Second}
		cfg.Limits = append([]limiter.Limit(nil), limits...)
		urls = append(urls, nodetest.Start(t, cfg).URL)
	}
	for _, u := range urls {
		nodetest.WaitLimits(t, u, limits)
	}
	return urls
}

// postLimit changes a limit through the node API, as an operator would.
func postLimit(base string, l limiter.Limit) error {
	body, _ := json.Marshal(l)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Post(base+"/api/v1/limits", "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("POST %s/api/v1/limits: %s: %s", base, resp.Status, b)
	}
	return nil
}

// run is Run bounded well past the run's own length.
func run(t *testing.T, cfg Config) *Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Duration+15*time.Second)
	defer cancel()
	r, err := Run(ctx, cfg, nil, false, testkit.Logger(t, slog.LevelWarn))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if r.Interrupted {
		t.Fatalf("Run was interrupted: %+v", r)
	}
	return r
}

func errorCount(r *Report) int64 {
	var n int64
	for _, k := range r.Errors {
		n += k
	}
	return n
}

// TestRateAchieved holds the generator to its rate against two real nodes:
// every request due is sent, at 2,000/s to within 2 % (issue 4), and
// answered.
//
// The achieved rate is Sent over the time to the last send, so a host that
// stalls the sending goroutine near the end of the run by 100 ms (CPU steal
// on a shared CI machine does) pulls it under 2 % with nothing wrong in the
// generator. Such a miss, a rate too low or a run too long, is measured
// again on a fresh run, up to three runs in all; one run inside the bounds
// shows the generator keeps the rate. Everything else is held on every
// run: exactly 10,000 sent and none dropped (the open-loop schedule), every
// request answered, and a rate never above 2 % over, which no stall can
// cause: the last request is not due before 5 s.
func TestRateAchieved(t *testing.T) {
	urls := startCluster(t, 2, []limiter.Limit{{KeyPattern: "*", MaxRequests: limiter.MaxRequestsLimit, WindowSeconds: 60, Algorithm: limiter.FixedWindow}})
	cfg := DefaultConfig()
	cfg.Targets, cfg.Rate, cfg.Duration = urls, 2000, 5*time.Second
	const runs = 3
	for attempt := 1; ; attempt++ {
		start := time.Now()
		r := run(t, cfg)
		elapsed := time.Since(start)
		t.Logf("run %d, 2000/s for 5s on 2 nodes: sent %d in %.2fs, achieved %.1f/s, late %d, max lag %.1fms, latency p50 %.3fms p99 %.3fms max %.3fms; took %s",
			attempt, r.Sent, r.DurationS, r.AchievedRate, r.Late, r.MaxLagMs, r.Latency.P50, r.Latency.P99, r.Latency.Max, elapsed.Round(time.Millisecond))
		if r.Sent != 10_000 || r.Dropped != 0 {
			t.Errorf("sent %d, dropped %d; want 10000 sent, none dropped", r.Sent, r.Dropped)
		}
		if r.IntendedRate != 2000 {
			t.Errorf("intended rate = %g; want 2000", r.IntendedRate)
		}
		if r.AchievedRate > 2000*1.02 {
			t.Errorf("achieved rate = %.1f/s; want 2000/s within 2%%: sent ahead of the schedule", r.AchievedRate)
		}
		if r.Completed != r.Sent || errorCount(r) != 0 || r.Allowed != r.Sent {
			t.Errorf("completed %d, allowed %d, errors %v of %d sent; want every request answered and allowed", r.Completed, r.Allowed, r.Errors, r.Sent)
		}
		if len(r.PerTarget) != 2 || r.PerTarget[0].Sent != 5000 || r.PerTarget[1].Sent != 5000 {
			t.Errorf("per target = %+v; want 5000 to each of 2 nodes", r.PerTarget)
		}
		if r.Latency.P99 <= 0 || r.Latency.P99 > 1000 {
			t.Errorf("latency p99 = %gms; want a measured value under a second", r.Latency.P99)
		}
		if t.Failed() {
			return
		}
		var slow []string
		if r.AchievedRate < 2000*0.98 {
			slow = append(slow, fmt.Sprintf("achieved rate = %.1f/s; want 2000/s within 2%%", r.AchievedRate))
		}
		if elapsed > cfg.Duration+2*time.Second {
			slow = append(slow, fmt.Sprintf("the run took %s; want about %s", elapsed, cfg.Duration))
		}
		switch {
		case len(slow) == 0:
			return
		case attempt == runs:
			t.Errorf("%d runs in a row fell behind; the last: %s", runs, strings.Join(slow, "; "))
			return
		}
		t.Logf("run %d fell behind (%s); the host may have stalled the generator, running again", attempt, strings.Join(slow, "; "))
	}
}

// planned is one request as the pacer and key picker plan it.
type planned struct {
	key string
	at  time.Duration
}

// plan replays the requests Run issues for cfg: the same seed gives the
// same keys at the same intended times.
func plan(cfg Config) []planned {
	p := pacer{start: cfg.Rate, end: cfg.RateEnd, span: cfg.Duration.Seconds()}
	k := newKeyPicker(cfg)
	out := make([]planned, p.total())
	for i := range out {
		out[i] = planned{key: k.keys[k.next()], at: p.due(int64(i))}
	}
	return out
}

// idealSlidingLog is how many of the planned requests an exact sliding log
// admits, if each is decided at its intended time.
func idealSlidingLog(reqs []planned, limit int64, window time.Duration) int64 {
	logs := map[string][]time.Duration{}
	var n int64
	for _, r := range reqs {
		live := logs[r.key][:0]
		for _, s := range logs[r.key] {
			if r.at < s+window {
				live = append(live, s)
			}
		}
		if int64(len(live)) < limit {
			live = append(live, r.at)
			n++
		}
		logs[r.key] = live
	}
	return n
}

// idealFixedWindow is how many of the planned requests a fixed window
// admits when its edges fall at phase + k*window.
func idealFixedWindow(reqs []planned, limit int64, window, phase time.Duration) int64 {
	type slot struct {
		key string
		w   int64
	}
	used := map[slot]int64{}
	var n int64
	for _, r := range reqs {
		s := slot{r.key, floorDiv(r.at-phase, window)}
		if used[s] < limit {
			used[s]++
			n++
		}
	}
	return n
}

// TestVerify runs the accuracy check against two real nodes on one Redis:
// correct limits judged correct, and limits changed behind the verifier's
// back (it reads them once, at the start) caught. 200 requests/s over 20
// keys is 10/s a key, twice or more every limit below, so many requests
// are denied and the check has something to judge.
func TestVerify(t *testing.T) {
	limits := []limiter.Limit{
		{KeyPattern: "log-ok:*", MaxRequests: 10, WindowSeconds: 2, Algorithm: limiter.SlidingLog},
		{KeyPattern: "log-raised:*", MaxRequests: 10, WindowSeconds: 2, Algorithm: limiter.SlidingLog},
		{KeyPattern: "log-lowered:*", MaxRequests: 10, WindowSeconds: 2, Algorithm: limiter.SlidingLog},
		{KeyPattern: "fw-ok:*", MaxRequests: 5, WindowSeconds: 1, Algorithm: limiter.FixedWindow},
		{KeyPattern: "fw-raised:*", MaxRequests: 5, WindowSeconds: 1, Algorithm: limiter.FixedWindow},
		{KeyPattern: "fw-lowered:*", MaxRequests: 5, WindowSeconds: 1, Algorithm: limiter.FixedWindow},
		// Limits count units: at cost 2, 20 units are 10 requests.
		{KeyPattern: "log-cost:*", MaxRequests: 20, WindowSeconds: 2, Algorithm: limiter.SlidingLog},
		{KeyPattern: "log-cost-raised:*", MaxRequests: 20, WindowSeconds: 2, Algorithm: limiter.SlidingLog},
		{KeyPattern: "post-blocked:*", MaxRequests: 10, WindowSeconds: 2, Algorithm: limiter.SlidingLog},
		{KeyPattern: "get-blocked:*", MaxRequests: 10, WindowSeconds: 2, Algorithm: limiter.SlidingLog},
	}
	urls := startCluster(t, 2, limits)
	load := func(l limiter.Limit, cost int64) Config {
		cfg := DefaultConfig()
		cfg.Targets, cfg.Rate, cfg.Duration, cfg.Keys, cfg.Verify, cfg.Cost = urls, 200, 3*time.Second, 20, true, cost
		cfg.KeyPrefix = strings.TrimSuffix(l.KeyPattern, "*")
		zero := 0.0 // a correct limiter makes no false block the verifier can prove
		cfg.MaxFalseBlocksRate = &zero
		return cfg
	}
	// verdict checks the verdict and the thresholds the run missed.
	verdict := func(t *testing.T, r *Report, want string, failed ...string) {
		t.Helper()
		if r.Accuracy.Verdict != want || len(r.Failed) != len(failed) {
			t.Errorf("verdict %q, failed thresholds %q; want %q and %q", r.Accuracy.Verdict, r.Failed, want, failed)
			return
		}
		for i, f := range failed {
			if !strings.Contains(r.Failed[i], f) {
				t.Errorf("failed threshold %q; want it to name %q", r.Failed[i], f)
			}
		}
	}
	// verifyRun sends 3s of load to the keys of l; when to is set, a
	// goroutine posts it (the same pattern, another limit) after delay.
	verifyRun := func(t *testing.T, l limiter.Limit, cost int64, to *limiter.Limit, delay time.Duration) (Config, *Report, PolicyAccuracy) {
		t.Helper()
		cfg := load(l, cost)
		changed := make(chan error, 1)
		if to != nil {
			go func() {
				time.Sleep(delay)
				changed <- postLimit(urls[0], *to)
			}()
		} else {
			changed <- nil
		}
		r := run(t, cfg)
		if err := <-changed; err != nil {
			t.Fatalf("changing the limit behind the verifier's back: %v", err)
		}
		a := r.Accuracy
		if a == nil || len(a.PerPolicy) != 1 {
			t.Fatalf("accuracy = %+v; want one policy judged", a)
		}
		pa := a.PerPolicy[0]
		t.Logf("%s at cost %d: sent %d, allowed %d, denied %d, errors %v; checked %d, excluded %d, unaligned %d; over-admissions %d, false blocks %d",
			l.KeyPattern, cost, r.Sent, pa.Allowed, pa.Denied, r.Errors, a.Checked, a.Excluded, pa.Unaligned, a.OverAdmissions, a.FalseBlocks)
		if r.Dropped != 0 || errorCount(r) != 0 {
			t.Errorf("dropped %d, errors %v; want every request sent and answered", r.Dropped, r.Errors)
		}
		if pa.Policy != l.KeyPattern || pa.Algorithm != l.Algorithm || pa.Allowed+pa.Denied+a.Excluded != r.Sent {
			t.Errorf("per policy = %+v, excluded %d; want %s (%s) and %d decisions", pa, a.Excluded, l.KeyPattern, l.Algorithm, r.Sent)
		}
		return cfg, r, pa
	}
	with := func(l limiter.Limit, max int64) *limiter.Limit { l.MaxRequests = max; return &l }
	correctSlidingLog := func(t *testing.T, l limiter.Limit, cost int64) {
		t.Helper()
		cfg, r, pa := verifyRun(t, l, cost, nil, 0)
		if r.Accuracy.OverAdmissions != 0 || r.Accuracy.FalseBlocks != 0 || !pa.FalseBlocksChecked || r.Accuracy.Excluded != 0 {
			t.Errorf("accuracy = %+v; want 0 over-admissions and 0 false blocks, both checked, nothing excluded", r.Accuracy)
		}
		verdict(t, r, "pass")
		// An exact sliding log admits what a replay of the plan admits, but
		// for requests decided within a latency of an entry's expiry.
		want := idealSlidingLog(plan(cfg), l.MaxRequests/cost, l.Window())
		if pa.Keys != cfg.Keys || pa.Denied < r.Sent/4 || math.Abs(float64(pa.Allowed-want)) > 0.03*float64(want)+2 {
			t.Errorf("%d keys: allowed %d, denied %d; a correct sliding log admits %d (± 3%%) and denies the rest", pa.Keys, pa.Allowed, pa.Denied, want)
		}
	}

	t.Run("sliding_log correct", func(t *testing.T) {
		t.Parallel()
		correctSlidingLog(t, limits[0], 1)
	})
	t.Run("sliding_log raised behind its back", func(t *testing.T) {
		t.Parallel()
		l := limits[1]
		_, r, _ := verifyRun(t, l, 1, with(l, 1000), 500*time.Millisecond)
		if r.Accuracy.OverAdmissions == 0 {
			t.Errorf("max_requests raised from 10 to 1000 during the run: over-admissions = 0; want > 0")
		}
		verdict(t, r, "fail", "over-admissions > --max-over-admissions 0")
	})
	t.Run("sliding_log lowered behind its back", func(t *testing.T) {
		t.Parallel()
		l := limits[2]
		_, r, _ := verifyRun(t, l, 1, with(l, 2), 300*time.Millisecond)
		if r.Accuracy.FalseBlocks == 0 || r.Accuracy.OverAdmissions != 0 {
			t.Errorf("max_requests lowered from 10 to 2 during the run: %d false blocks, %d over-admissions; want > 0 and 0",
				r.Accuracy.FalseBlocks, r.Accuracy.OverAdmissions)
		}
		verdict(t, r, "fail", "> --max-false-blocks-rate 0")
	})
	t.Run("fixed_window correct", func(t *testing.T) {
		t.Parallel()
		l := limits[3]
		cfg, r, pa := verifyRun(t, l, 1, nil, 0)
		if r.Accuracy.OverAdmissions != 0 || r.Accuracy.FalseBlocks != 0 || !pa.FalseBlocksChecked || r.Accuracy.Excluded != 0 {
			t.Errorf("accuracy = %+v; want 0 over-admissions and 0 false blocks, both checked, nothing excluded", r.Accuracy)
		}
		verdict(t, r, "pass")
		// Only requests within a latency of a window edge go unjudged; if
		// the edges could not be located from reset_after, all would.
		if pa.Unaligned > r.Sent/20 {
			t.Errorf("unaligned = %d of %d; want the windows located and few requests near their edges", pa.Unaligned, r.Sent)
		}
		// The store's window edges fall anywhere relative to the run:
		// the count must lie within what some phase admits.
		reqs := plan(cfg)
		lo, hi := int64(math.MaxInt64), int64(0)
		for phase := time.Duration(0); phase < l.Window(); phase += 5 * time.Millisecond {
			n := idealFixedWindow(reqs, l.MaxRequests, l.Window(), phase)
			lo, hi = min(lo, n), max(hi, n)
		}
		if pa.Denied < r.Sent/4 || pa.Allowed < lo*97/100 || pa.Allowed > hi*103/100+2 {
			t.Errorf("allowed %d, denied %d; a correct fixed window admits %d to %d, by phase, and denies the rest", pa.Allowed, pa.Denied, lo, hi)
		}
	})
	t.Run("fixed_window raised behind its back", func(t *testing.T) {
		t.Parallel()
		l := limits[4]
		_, r, _ := verifyRun(t, l, 1, with(l, 100), 300*time.Millisecond)
		if r.Accuracy.OverAdmissions == 0 {
			t.Errorf("max_requests raised from 5 to 100 during the run: over-admissions = 0; want > 0")
		}
		verdict(t, r, "fail", "over-admissions > --max-over-admissions 0")
	})
	t.Run("fixed_window lowered behind its back", func(t *testing.T) {
		t.Parallel()
		l := limits[5]
		_, r, _ := verifyRun(t, l, 1, with(l, 1), 300*time.Millisecond)
		if r.Accuracy.FalseBlocks == 0 || r.Accuracy.OverAdmissions != 0 {
			t.Errorf("max_requests lowered from 5 to 1 during the run: %d false blocks, %d over-admissions; want > 0 and 0",
				r.Accuracy.FalseBlocks, r.Accuracy.OverAdmissions)
		}
		verdict(t, r, "fail", "> --max-false-blocks-rate 0")
	})
	// At --cost 2 the nodes count two units a request; the verifier must
	// too, or every correct denial looks like a false block and an
	// over-admission of up to twice the limit goes unseen.
	t.Run("sliding_log correct at cost 2", func(t *testing.T) {
		t.Parallel()
		correctSlidingLog(t, limits[6], 2)
	})
	t.Run("sliding_log raised behind its back at cost 2", func(t *testing.T) {
		t.Parallel()
		l := limits[7]
		_, r, _ := verifyRun(t, l, 2, with(l, 32), 300*time.Millisecond)
		if r.Accuracy.OverAdmissions == 0 {
			t.Errorf("max_requests raised from 20 to 32 units (10 to 16 requests of cost 2) during the run: over-admissions = 0; want > 0")
		}
		verdict(t, r, "fail", "over-admissions > --max-over-admissions 0")
	})
	// A blocked key's denials say nothing about its limit: they are
	// excluded, not judged as false blocks. Over GET the answer carries no
	// reason, so the verifier must either refuse or not judge them.
	blocked := func(t *testing.T, l limiter.Limit, method string) (*Report, error) {
		t.Helper()
		key := strings.TrimSuffix(l.KeyPattern, "*") + "0"
		if err := postBlock(urls[0], key); err != nil {
			t.Fatal(err)
		}
		for _, u := range urls {
			waitBlocked(t, u, key)
		}
		cfg := load(l, 1)
		cfg.Method, cfg.Duration = method, 2*time.Second
		ctx, cancel := context.WithTimeout(context.Background(), cfg.Duration+15*time.Second)
		defer cancel()
		return Run(ctx, cfg, nil, false, testkit.Logger(t, slog.LevelWarn))
	}
	t.Run("blocked key excluded", func(t *testing.T) {
		t.Parallel()
		r, err := blocked(t, limits[8], "post")
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if a := r.Accuracy; a == nil || a.Excluded == 0 || a.FalseBlocks != 0 || a.OverAdmissions != 0 {
			t.Errorf("accuracy = %+v; want the blocked key's answers excluded, 0 false blocks, 0 over-admissions", a)
		}
	})
	t.Run("blocked key over GET", func(t *testing.T) {
		t.Parallel()
		r, err := blocked(t, limits[9], "get")
		if err != nil {
			t.Logf("--verify over GET refused: %v", err)
			return
		}
		if a := r.Accuracy; a == nil || a.FalseBlocks != 0 {
			t.Errorf("--method get: accuracy = %+v; want no false blocks invented from a blocked key's denials (or --verify refused)", a)
		}
	})
}

// postBlock blocks key for a minute through the node API.
func postBlock(base, key string) error {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Post(base+"/api/v1/blocks/"+key, "application/json",
		strings.NewReader(`{"duration_seconds":60,"reason":"loadgen test"}`))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("POST %s/api/v1/blocks/%s: %s: %s", base, key, resp.Status, b)
	}
	return nil
}

// waitBlocked polls base until it lists key as blocked.
func waitBlocked(t *testing.T, base, key string) {
	t.Helper()
	client := &http.Client{Timeout: time.Second}
	testkit.WaitFor(t, 3*time.Second, fmt.Sprintf("%s to list %q as blocked", base, key), func() bool {
		resp, err := client.Get(base + "/api/v1/blocks")
		if err != nil {
			return false
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return strings.Contains(string(body), `"`+key+`"`)
	})
}

// TestDeadTarget: refused connections are errors of their own kind, fail
// fast, and do not hold the run past its duration.
func TestDeadTarget(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	cfg.Targets, cfg.Rate, cfg.Duration, cfg.MaxErrorRate = []string{"http://" + nodetest.FreeAddr(t)}, 200, 2*time.Second, 0.5
	start := time.Now()
	r := run(t, cfg)
	if elapsed := time.Since(start); elapsed > cfg.Duration+time.Second {
		t.Errorf("a 2s run against a dead target took %s; want at most 3s", elapsed)
	}
	if r.Sent != 400 || r.Completed != r.Sent || r.Errors["connection"] != r.Sent || r.Allowed+r.Denied != 0 {
		t.Errorf("sent %d, completed %d, allowed %d, denied %d, errors %v; want 400 connection errors",
			r.Sent, r.Completed, r.Allowed, r.Denied, r.Errors)
	}
	if r.ErrorRate != 1 || len(r.Failed) != 1 || !strings.Contains(r.Failed[0], "--max-error-rate 0.5") {
		t.Errorf("error rate %g, failed thresholds %q; want 1 and the --max-error-rate 0.5 threshold missed", r.ErrorRate, r.Failed)
	}
	if len(r.PerTarget) != 1 || r.PerTarget[0].Errors != r.Sent {
		t.Errorf("per target = %+v; want every request an error", r.PerTarget)
	}
}
