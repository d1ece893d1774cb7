package node

import (
	"math"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/ratelimiter/ratelimiter/limiter"
)

// hotKeys remembers, per node, the keys that recently came close to their
// limit or were denied. Only such keys are tracked, so ordinary traffic pays
// one comparison and no lock. Heartbeats publish the list and every node
// merges the lists of the whole cluster.
type hotKeys struct {
	mu  sync.RWMutex
	m   map[string]*hotEntry
	max int
	min float64 // smallest usage ratio worth tracking
	ttl int64   // µs an entry lives after its last hot sighting
}

type hotEntry struct {
	policy    atomic.Pointer[Policy]
	used      atomic.Int64 // units used when last seen
	limit     atomic.Int64
	lastSeen  atomic.Int64 // node clock, µs
	denied    atomic.Int64
	firstSeen int64
}

// HotKey is one entry of GET /api/v1/hot-keys.
type HotKey struct {
	Key       string  `json:"key"`
	Policy    string  `json:"policy"`
	Ratio     float64 `json:"ratio"`
	Limit     int64   `json:"limit"`
	Remaining int64   `json:"remaining"`
	Denied    int64   `json:"denied"`
	LastSeen  int64   `json:"last_seen_ms"` // ms ago, from the reporting node
	Nodes     int     `json:"nodes,omitempty"`
}

// maxHotKeyBytes is the longest key tracked as hot: the longest a block or
// a reset may name (limiter.MaxKeyBytes), so every listed key is one the
// operator can act on. Envoy counter keys reach 33 KB (32 entries of
// 512-byte keys and values); tracked, 50 of them made a 1.7 MB heartbeat
// that every node reads at every sync, and a full table held 330 MB.
const maxHotKeyBytes = limiter.MaxKeyBytes

func newHotKeys(max int, min float64, ttl int64) *hotKeys {
	return &hotKeys{m: map[string]*hotEntry{}, max: max, min: min, ttl: ttl}
}

func (h *hotKeys) record(key []byte, p *Policy, remaining int64, denied bool, now int64) {
	if len(key) > maxHotKeyBytes {
		return
	}
	limit := p.Capacity()
	used := limit - remaining
	if !denied && float64(used) < h.min*float64(limit) {
		return
	}
	if denied && used < limit {
		used = limit // a denial means the key is at its limit for this cost
	}
	h.mu.RLock()
	e := h.m[string(key)]
	h.mu.RUnlock()
	if e == nil {
		h.mu.Lock()
		if e = h.m[string(key)]; e == nil {
			if len(h.m) >= h.max {
				// Full: evict one entry at random (map order), O(1). A
				// flood of distinct keys cannot lock out a truly hot
				// key for long, as that one comes back at each sighting.
				for k := range h.m {
					delete(h.m, k)
					break
				}
			}
			e = &hotEntry{firstSeen: now}
			h.m[string(key)] = e
		}
		h.mu.Unlock()
	}
	e.policy.Store(p)
	e.used.Store(used)
	e.limit.Store(limit)
	e.lastSeen.Store(now)
	if denied {
		e.denied.Add(1)
	}
}

// forget drops key's entry (its counter was reset or it was unblocked).
func (h *hotKeys) forget(key string) {
	h.mu.Lock()
	delete(h.m, key)
	h.mu.Unlock()
}

// list sweeps entries past their ttl and returns the rest, most used first.
func (h *hotKeys) list(now int64, limit int) []HotKey {
	h.mu.Lock()
	out := make([]HotKey, 0, len(h.m))
	for k, e := range h.m {
		seen := e.lastSeen.Load()
		if now-seen > h.ttl {
			delete(h.m, k)
			continue
		}
		p := e.policy.Load()
		used, lim := e.used.Load(), e.limit.Load()
		out = append(out, HotKey{Key: k, Policy: p.Name, Ratio: ratio(used, lim), Limit: lim,
			Remaining: max(lim-used, 0), Denied: e.denied.Load(), LastSeen: (now - seen) / 1000})
	}
	h.mu.Unlock()
	sortHot(out)
	if len(out) > limit {
		out = out[:limit]
	}
	return out
}

func ratio(used, limit int64) float64 {
	if limit <= 0 {
		return 0
	}
	return math.Round(1000*float64(used)/float64(limit)) / 1000
}

func sortHot(list []HotKey) {
	sort.Slice(list, func(i, j int) bool {
		if list[i].Ratio != list[j].Ratio {
			return list[i].Ratio > list[j].Ratio
		}
		if list[i].Denied != list[j].Denied {
			return list[i].Denied > list[j].Denied
		}
		return list[i].Key < list[j].Key
	})
}
