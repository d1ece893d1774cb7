package loadgen

import (
	"math/rand/v2"
	"strconv"
)

// keyPicker draws the key of each request: uniformly or by a Zipf law over
// Keys keys, with HotKeyShare of the draws going to one hot key. It is
// seeded, so a run's key sequence can be replayed.
type keyPicker struct {
	rng  *rand.Rand
	zipf *rand.Zipf
	n    int
	hot  float64
	// keys[n] is the hot key; bodies hold each key's POST body, built once
	// so the send path does not build one per request.
	keys   []string
	bodies [][]byte
}

func newKeyPicker(c Config) *keyPicker {
	rng := rand.New(rand.NewPCG(c.Seed, c.Seed^0x9e3779b97f4a7c15))
	k := &keyPicker{rng: rng, n: c.Keys, hot: c.HotKeyShare, keys: make([]string, c.Keys+1), bodies: make([][]byte, c.Keys+1)}
	for i := range k.keys {
		k.keys[i] = c.KeyPrefix + strconv.Itoa(i)
		if i == c.Keys {
			k.keys[i] = c.KeyPrefix + "hot"
		}
		k.bodies[i] = []byte(`{"key":` + strconv.Quote(k.keys[i]) + `,"cost":` + strconv.FormatInt(c.Cost, 10) + `}`)
	}
	if c.Distribution == "zipf" {
		k.zipf = rand.NewZipf(rng, c.ZipfS, 1, uint64(c.Keys-1))
	}
	return k
}

// next returns the index of the next key in keys (and bodies).
func (k *keyPicker) next() int {
	if k.hot > 0 && k.rng.Float64() < k.hot {
		return k.n
	}
	if k.zipf != nil {
		return int(k.zipf.Uint64())
	}
	return k.rng.IntN(k.n)
}
