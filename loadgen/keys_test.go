package loadgen

import (
	"math"
	"strconv"
	"testing"
)

func pickerConfig(keys int, dist string, hot float64, seed uint64) Config {
	c := DefaultConfig()
	c.Keys, c.Distribution, c.HotKeyShare, c.Seed, c.KeyPrefix = keys, dist, hot, seed, "k:"
	return c
}

func draw(c Config, n int) []string {
	k := newKeyPicker(c)
	out := make([]string, n)
	for i := range out {
		out[i] = k.keys[k.next()]
	}
	return out
}

func counts(keys []string) map[string]int {
	m := map[string]int{}
	for _, k := range keys {
		m[k]++
	}
	return m
}

func TestKeyPickerReplays(t *testing.T) {
	for _, dist := range []string{"uniform", "zipf"} {
		a := draw(pickerConfig(1000, dist, 0.2, 7), 5000)
		b := draw(pickerConfig(1000, dist, 0.2, 7), 5000)
		c := draw(pickerConfig(1000, dist, 0.2, 8), 5000)
		same := 0
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("%s, seed 7: draw %d = %q then %q; want the same sequence twice", dist, i, a[i], b[i])
			}
			if a[i] == c[i] {
				same++
			}
		}
		if same > len(a)/2 {
			t.Errorf("%s: seeds 7 and 8 agree on %d of %d draws; want different sequences", dist, same, len(a))
		}
	}
}

func TestKeyPickerUniformCoversAllKeys(t *testing.T) {
	const keys, n = 100, 20_000
	m := counts(draw(pickerConfig(keys, "uniform", 0, 1), n))
	if len(m) != keys {
		t.Fatalf("uniform over %d keys drew %d distinct keys; want all", keys, len(m))
	}
	for i := range keys {
		// 200 expected; 6 standard deviations is about 85.
		if got := m["k:"+strconv.Itoa(i)]; got < 115 || got > 285 {
			t.Errorf("uniform: key %d drawn %d times of %d; want about %d", i, got, n, n/keys)
		}
	}
}

func TestKeyPickerZipf(t *testing.T) {
	const keys, n, s = 1000, 100_000, 1.1
	m := counts(draw(pickerConfig(keys, "zipf", 0, 1), n))
	// P(key i) is proportional to (1+i)^-s.
	var norm, top10 float64
	for i := range keys {
		p := math.Pow(float64(1+i), -s)
		norm += p
		if i < 10 {
			top10 += p
		}
	}
	got := 0
	for i := range 10 {
		got += m["k:"+strconv.Itoa(i)]
	}
	if share, want := float64(got)/n, top10/norm; math.Abs(share-want) > 0.02 {
		t.Errorf("zipf s=%g: share of the first 10 of %d keys = %.3f; want %.3f ± 0.02", s, keys, share, want)
	}
	if share := float64(m["k:0"]) / n; math.Abs(share-1/norm) > 0.01 {
		t.Errorf("zipf s=%g: share of key 0 = %.3f; want %.3f ± 0.01", s, share, 1/norm)
	}
	for i := 1; i < 5; i++ {
		if m["k:"+strconv.Itoa(i)] >= m["k:"+strconv.Itoa(i-1)] {
			t.Errorf("zipf: key %d drawn %d times, key %d %d times; want the first keys most", i, m["k:"+strconv.Itoa(i)], i-1, m["k:"+strconv.Itoa(i-1)])
		}
	}
	// One key is a valid configuration: every draw is that key.
	for _, k := range draw(pickerConfig(1, "zipf", 0, 1), 100) {
		if k != "k:0" {
			t.Fatalf("zipf over 1 key drew %q; want k:0", k)
		}
	}
}

func TestKeyPickerHotKeyShare(t *testing.T) {
	const n = 100_000
	for _, dist := range []string{"uniform", "zipf"} {
		for _, share := range []float64{0.1, 0.5} {
			m := counts(draw(pickerConfig(1000, dist, share, 3), n))
			if got := float64(m["k:hot"]) / n; math.Abs(got-share) > 0.01 {
				t.Errorf("%s, hot-key-share %g: hot key share = %.3f; want %g ± 0.01", dist, share, got, share)
			}
		}
	}
	if m := counts(draw(pickerConfig(1000, "uniform", 0, 3), n)); m["k:hot"] != 0 {
		t.Errorf("hot-key-share 0: hot key drawn %d times; want 0", m["k:hot"])
	}
}
