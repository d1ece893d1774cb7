package loadgen

import (
	"math/rand/v2"
	"strconv"
)

// keyPicker draws the key of each request: uniformly or by a Zipf law over
// Keys keys, with HotKeyShare of the draws going to one hot key. It is
// seeded, so a run's key sequence can be replayed.
type keyPicker struct {
	rng    *rand.Rand
	zipf   *rand.Zipf
	n      int
	hot    float64
	keys   []string
	hotKey string
}

func newKeyPicker(c Config) *keyPicker {
	rng := rand.New(rand.NewPCG(c.Seed, c.Seed^0x9e3779b97f4a7c15))
	k := &keyPicker{rng: rng, n: c.Keys, hot: c.HotKeyShare, keys: make([]string, c.Keys), hotKey: c.KeyPrefix + "hot"}
	for i := range k.keys {
		k.keys[i] = c.KeyPrefix + strconv.Itoa(i)
	}
	if c.Distribution == "zipf" {
		k.zipf = rand.NewZipf(rng, c.ZipfS, 1, uint64(c.Keys-1))
	}
	return k
}

func (k *keyPicker) next() string {
	if k.hot > 0 && k.rng.Float64() < k.hot {
		return k.hotKey
	}
	if k.zipf != nil {
		return k.keys[k.zipf.Uint64()]
	}
	return k.keys[k.rng.IntN(k.n)]
}
