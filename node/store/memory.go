package store

import (
	"context"
	"hash/maphash"
	"strings"
	"sync"
	"time"

	"github.com/ratelimiter/ratelimiter/limiter"
)

// MemoryStore keeps the cluster state in this process. Several nodes in one
// process may share it, exactly as several processes share one Redis; its
// clock plays the role of Redis TIME.
type MemoryStore struct {
	now    func() time.Time
	seed   maphash.Seed
	shards [64]memShard

	mu      sync.Mutex // guards version and hashes
	version int64
	hashes  map[string]map[string]string
}

type memShard struct {
	mu      sync.Mutex
	states  [limiter.NumAlgorithms]map[string]*limiter.State // one map per algorithm, like one Redis key per algorithm
	inserts int
}

// A shard drops its expired state once it has taken as many new keys as
// half its size, and at least sweepMin: each sweep then scans at most about
// twice the keys inserted since the last one (O(1) per insert, amortized),
// and memory follows the live key set without a background goroutine. A
// shard holds at most its keys live at its last sweep plus the keys
// inserted since, so the store holds at most about twice the keys decided
// within their windows, plus 64 × sweepMin: with 5,000,000 distinct keys
// through a node, what stays is what is still live, not all of them.
const sweepMin = 256

// NewMemoryStore returns an empty in-process store reading time from now.
func NewMemoryStore(now func() time.Time) *MemoryStore {
	s := &MemoryStore{now: now, seed: maphash.MakeSeed(), hashes: map[string]map[string]string{}}
	for i := range s.shards {
		for a := range s.shards[i].states {
			s.shards[i].states[a] = map[string]*limiter.State{}
		}
	}
	return s
}

func (s *MemoryStore) clock() int64 { return s.now().UnixMicro() }

func (s *MemoryStore) shard(key string) *memShard {
	return &s.shards[maphash.String(s.seed, key)%uint64(len(s.shards))]
}

func (s *MemoryStore) Decide(_ context.Context, items []Item) error {
	now := s.clock()
	for i := range items {
		it := &items[i]
		p := it.Limit
		sh := s.shard(it.Key)
		sh.mu.Lock()
		m := sh.states[p.alg]
		st := m[it.Key]
		if st != nil && st.ExpiresAt != 0 && now >= st.ExpiresAt {
			*st = limiter.State{Log: st.Log[:0]}
		}
		if st == nil {
			st = &limiter.State{}
			if it.Cost > 0 { // a peek must not create state, as on Redis
				m[strings.Clone(it.Key)] = st
				if sh.inserts++; sh.inserts >= sweepMin && 2*sh.inserts >= sh.size() {
					sh.sweep(now)
				}
			}
		}
		it.Result = limiter.Decide(p.Algorithm, st, now, p.Params(it.Cost))
		sh.mu.Unlock()
	}
	return nil
}

func (sh *memShard) size() int {
	n := 0
	for _, m := range sh.states {
		n += len(m)
	}
	return n
}

func (sh *memShard) sweep(now int64) {
	sh.inserts = 0
	for _, m := range sh.states {
		for k, st := range m {
			if st.ExpiresAt != 0 && now >= st.ExpiresAt {
				delete(m, k)
			}
		}
	}
}

func (s *MemoryStore) ResetCounter(_ context.Context, key string) error {
	sh := s.shard(key)
	sh.mu.Lock()
	for _, m := range sh.states {
		delete(m, key)
	}
	sh.mu.Unlock()
	s.mu.Lock()
	s.version++
	s.mu.Unlock()
	return nil
}

func (s *MemoryStore) Version(context.Context) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version, nil
}

func (s *MemoryStore) Read(_ context.Context, hashes ...string) (Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := Snapshot{Now: s.clock(), Version: s.version, Hashes: make([]map[string]string, len(hashes))}
	for i, h := range hashes {
		c := make(map[string]string, len(s.hashes[h]))
		for k, v := range s.hashes[h] {
			c[k] = v
		}
		snap.Hashes[i] = c
	}
	return snap, nil
}

// ReadShared always reads every block: one process has no other node to
// keep up with, and the in-process twin keeps no log of changes.
func (s *MemoryStore) ReadShared(ctx context.Context, _ int64, _ string, hashes ...string) (Shared, error) {
	snap, err := s.Read(ctx, append(append([]string(nil), hashes...), HashBlocks)...)
	if err != nil {
		return Shared{}, err
	}
	last := len(snap.Hashes) - 1
	sh := Shared{Snapshot: snap, Blocks: snap.Hashes[last]}
	sh.Hashes = snap.Hashes[:last]
	return sh, nil
}

func (s *MemoryStore) ReadField(_ context.Context, hash, field string) (int64, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clock(), s.hashes[hash][field], nil
}

func (s *MemoryStore) Prune(_ context.Context, hash string, fields map[string]string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for f, v := range fields {
		if s.hashes[hash][f] == v {
			s.set(hash, f, "")
		}
	}
	return nil
}

func (s *MemoryStore) Swap(_ context.Context, hash, field, old, new string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hashes[hash][field] != old {
		return false, nil
	}
	s.set(hash, field, new)
	s.version++
	return true, nil
}

// set writes or (for "") deletes a field; the caller holds s.mu.
func (s *MemoryStore) set(hash, field, value string) {
	h := s.hashes[hash]
	if value == "" {
		delete(h, field)
		return
	}
	if h == nil {
		h = map[string]string{}
		s.hashes[hash] = h
	}
	h[field] = value
}

func (s *MemoryStore) Heartbeat(_ context.Context, id, record string) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock()
	s.set(HashNodes, id, record)
	s.set(HashBeats, id, formatInt(now))
	return now, nil
}

func (s *MemoryStore) Forget(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.set(HashNodes, id, "")
	s.set(HashBeats, id, "")
	s.set(HashDrain, id, "")
	s.version++
	return nil
}

func (s *MemoryStore) Ping(context.Context) error { return nil }
func (s *MemoryStore) Close()                     {}
