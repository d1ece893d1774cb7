package node

import (
	"math"
	"math/bits"
	"sync/atomic"
)

// sketch counts distinct keys in bounded memory (HyperLogLog, 2^12 one-byte
// registers, about 1.6 % standard error). Sketches merge by taking the
// larger register, so the cluster's distinct key count is the estimate of
// every node's sketch merged, with no key ever sent anywhere. The hash is
// fixed (FNV-1a then a mixer) so sketches from different processes agree.
type sketch struct {
	reg [sketchRegs]atomic.Uint32
}

const (
	sketchP    = 12
	sketchRegs = 1 << sketchP
)

func hashKey(key []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range key {
		h ^= uint64(c)
		h *= 1099511628211
	}
	// splitmix64 finalizer: FNV's low bits are weak for short keys.
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	return h ^ h>>31
}

func (s *sketch) add(key []byte) {
	h := hashKey(key)
	idx := h >> (64 - sketchP)
	rho := uint32(bits.LeadingZeros64(h<<sketchP|1<<(sketchP-1)) + 1)
	r := &s.reg[idx]
	for {
		cur := r.Load()
		if rho <= cur || r.CompareAndSwap(cur, rho) {
			return
		}
	}
}

func (s *sketch) reset() {
	for i := range s.reg {
		s.reg[i].Store(0)
	}
}

// bytes returns the registers, one byte each, merged with more (max).
func (s *sketch) bytes(more ...*sketch) []byte {
	out := make([]byte, sketchRegs)
	for i := range s.reg {
		v := s.reg[i].Load()
		for _, o := range more {
			v = max(v, o.reg[i].Load())
		}
		out[i] = byte(v)
	}
	return out
}

// estimate returns the distinct count of the merge of register sets.
func estimate(sets ...[]byte) int64 {
	var merged [sketchRegs]byte
	for _, set := range sets {
		if len(set) != sketchRegs {
			continue
		}
		for i, v := range set {
			merged[i] = max(merged[i], v)
		}
	}
	sum, zeros := 0.0, 0
	for _, v := range merged {
		sum += math.Ldexp(1, -int(v))
		if v == 0 {
			zeros++
		}
	}
	m := float64(sketchRegs)
	e := 0.7213 / (1 + 1.079/m) * m * m / sum
	if e <= 2.5*m && zeros > 0 {
		e = m * math.Log(m/float64(zeros)) // linear counting for small sets
	}
	return int64(math.Round(e))
}
