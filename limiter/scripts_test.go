package limiter

import (
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestDecideExpiry(t *testing.T) {
	// An expired state is empty: it decides like the zero State, whatever it held.
	f := func(alg Algorithm, p Params, s State) {
		t.Helper()
		p.Cost = 0
		got := Decide(alg, &s, s.ExpiresAt, p)
		want := Decide(alg, &State{}, s.ExpiresAt, p)
		if got != want {
			t.Errorf("%s: Decide at ExpiresAt of %+v = %+v; want the empty key's %+v", alg, s, got, want)
		}
	}
	f(SlidingLog, Params{Limit: 2, Window: 10}, State{Log: []LogEntry{{At: 5, End: 1}, {At: 6, Start: 1, End: 2}}, ExpiresAt: 3})
	f(SlidingWindow, Params{Limit: 2, Window: 10}, State{Window: 0, Count: 2, Prev: 2, ExpiresAt: 3})
	f(TokenBucket, Params{Limit: 2, Window: 10, Burst: 2}, State{TAT: 100, ExpiresAt: 3})
	f(FixedWindow, Params{Limit: 2, Window: 10}, State{Window: 0, Count: 2, ExpiresAt: 3})
}

func TestTokenBucketValidation(t *testing.T) {
	f := func(maxRequests, windowSeconds, burst int64, ok bool) {
		t.Helper()
		l := Limit{KeyPattern: "k", MaxRequests: maxRequests, WindowSeconds: windowSeconds, Algorithm: TokenBucket, Burst: burst}
		l.Normalize()
		if err := l.Validate(); (err == nil) != ok {
			t.Errorf("Validate(%d/%ds, burst %d) = %v; want ok=%v", maxRequests, windowSeconds, burst, err, ok)
		}
	}
	f(1, MaxWindowSeconds, 13_031, true)
	f(1, MaxWindowSeconds, 13_032, false)
	f(MaxRequestsLimit, MaxWindowSeconds, MaxRequestsLimit, true)
	f(1, 1, MaxRequestsLimit, true)
	f(1, 60, MaxRequestsLimit, false)
}

func TestIntegerHelpers(t *testing.T) {
	f := func(a, b, floor, ceil int64) {
		t.Helper()
		if got := floorDiv(a, b); got != floor {
			t.Errorf("floorDiv(%d, %d) = %d; want %d", a, b, got, floor)
		}
		if got := ceilDiv(a, b); got != ceil {
			t.Errorf("ceilDiv(%d, %d) = %d; want %d", a, b, got, ceil)
		}
	}
	f(7, 2, 3, 4)
	f(-7, 2, -4, -3)
	f(6, 3, 2, 2)
	f(-6, 3, -2, -2)
	f(0, 5, 0, 0)

	rng := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		a := rng.Int64N(MaxRequestsLimit + 1)
		m := 1 + rng.Int64N(MaxWindowSeconds*1e6)
		x := rng.Int64N(m + 1)
		q, r := mulDiv(a, x, m)
		wq, wr := new(big.Int).QuoRem(new(big.Int).Mul(big.NewInt(a), big.NewInt(x)), big.NewInt(m), new(big.Int))
		if q != wq.Int64() || r != wr.Int64() {
			t.Fatalf("mulDiv(%d, %d, %d) = %d, %d; want %v, %v", a, x, m, q, r, wq, wr)
		}
		if c := mulDivCeil(a, x, m); c != q+min(r, 1) {
			t.Fatalf("mulDivCeil(%d, %d, %d) = %d; want %d", a, x, m, c, q+min(r, 1))
		}
	}
}

// TestScriptLayout checks what BatchScript relies on: each script defines
// decide before the line where the batch cuts it, once, and that part reads
// neither KEYS nor ARGV, which in a batch belong to the whole batch.
func TestScriptLayout(t *testing.T) {
	for _, alg := range Algorithms {
		src := Script(alg)
		if n := strings.Count(src, batchCut); n != 1 {
			t.Errorf("%s.lua has %d lines starting %q; want 1", alg, n, batchCut)
			continue
		}
		kept := src[:strings.Index(src, batchCut)]
		if !strings.Contains(kept, "\nlocal function decide(key, limit, window, burst, cost, now)\n") {
			t.Errorf("%s.lua does not define decide(key, limit, window, burst, cost, now) before the cut", alg)
		}
		for i, line := range strings.Split(kept, "\n") {
			code, _, _ := strings.Cut(line, "--")
			if strings.Contains(code, "KEYS") || strings.Contains(code, "ARGV") {
				t.Errorf("%s.lua:%d reads KEYS or ARGV before the cut: %s", alg, i+1, line)
			}
		}
	}
	if n := strings.Count(BatchScript(), "algs['"); n != len(Algorithms) {
		t.Errorf("BatchScript defines %d algorithms; want %d", n, len(Algorithms))
	}
}
