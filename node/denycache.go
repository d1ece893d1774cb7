package node

import (
	"crypto/sha256"
	"sync"

	"github.com/ratelimiter/ratelimiter/limiter"
)

// denyCache answers keys that are over their limit until a known time
// without asking the store. An entry only answers requests at least as
// costly as the one that was denied: a cheaper one might fit. It is cleared
// whenever limits, blocks or counters change anywhere in the cluster.
//
// When full, a new denial evicts the oldest key (a ring of keys in
// insertion order): O(1) under the lock, where a sweep for expired entries
// would hold every check for the whole map. An evicted key only costs its
// next check a store call.
type denyCache struct {
	mu   sync.RWMutex
	m    map[string]denial
	ring []string // keys of m, oldest at next once full
	next int
	n    int
}

type denial struct {
	policy  *Policy
	cost    int64
	until   int64 // node clock, µs: the earliest time the cost could fit
	resetAt int64 // node clock, µs
	nextAt  int64 // node clock, µs: when more quota comes (at or before until)
}

// maxDenyKeyBytes is the longest key the deny cache holds as it is; a
// longer one (an Envoy counter key reaches 33 KB) is held by its SHA-256,
// behind a NUL no key may start with (HTTP keys hold no control
// characters, Envoy keys start with "envoy:"). deny_cache_size (10,000)
// such keys held 330 MB as they were; hashing one costs about as much as
// reading it from the request.
const maxDenyKeyBytes = limiter.MaxKeyBytes

// digestKey is the form under which a key over maxDenyKeyBytes is cached.
func digestKey(key []byte) [1 + sha256.Size]byte {
	var d [1 + sha256.Size]byte
	sum := sha256.Sum256(key)
	copy(d[1:], sum[:])
	return d
}

func newDenyCache(n int) *denyCache {
	return &denyCache{m: make(map[string]denial, n), ring: make([]string, 0, n), n: n}
}

func (c *denyCache) get(key []byte, p *Policy, cost, now int64) (denial, bool) {
	if c.n == 0 {
		return denial{}, false
	}
	if len(key) > maxDenyKeyBytes {
		d := digestKey(key)
		key = d[:]
	}
	c.mu.RLock()
	d, ok := c.m[string(key)]
	c.mu.RUnlock()
	if !ok || d.policy != p || cost < d.cost || now >= d.until {
		return denial{}, false
	}
	return d, true
}

// put remembers key's denial. key may alias request memory: put copies
// what it keeps, and a long key only as its digest, never whole.
func (c *denyCache) put(k []byte, d denial) {
	if c.n == 0 {
		return
	}
	if len(k) > maxDenyKeyBytes {
		dk := digestKey(k)
		k = dk[:]
	}
	key := string(k)
	c.mu.Lock()
	defer c.mu.Unlock()
	had := len(c.m)
	c.m[key] = d
	if len(c.m) == had {
		return // an update: the key keeps its place
	}
	if len(c.ring) < c.n {
		c.ring = append(c.ring, key)
		return
	}
	delete(c.m, c.ring[c.next])
	c.ring[c.next] = key
	c.next = (c.next + 1) % c.n
}

func (c *denyCache) clear() {
	c.mu.Lock()
	clear(c.m)
	clear(c.ring)
	c.ring, c.next = c.ring[:0], 0
	c.mu.Unlock()
}
