package node

import (
	"strconv"
	"testing"
)

// TestDenyCacheEvictsOldestWhenFull: at its size the cache stays at its
// size, forgets the oldest denial and remembers the newest, live or not.
func TestDenyCacheEvictsOldestWhenFull(t *testing.T) {
	p := &Policy{}
	c := newDenyCache(3)
	for i := range 5 {
		c.put([]byte("k"+strconv.Itoa(i)), denial{policy: p, cost: 1, until: 100})
	}
	if len(c.m) != 3 {
		t.Fatalf("cache of 3 holds %d after 5 denials", len(c.m))
	}
	for i, want := range []bool{false, false, true, true, true} {
		if _, ok := c.get([]byte("k"+strconv.Itoa(i)), p, 1, 50); ok != want {
			t.Errorf("get(k%d) = %v; want %v", i, ok, want)
		}
	}
	c.put([]byte("k4"), denial{policy: p, cost: 1, until: 200}) // an update takes no slot
	if d, ok := c.get([]byte("k2"), p, 1, 50); !ok || d.until != 100 {
		t.Errorf("k2 evicted by an update of k4")
	}
	c.clear()
	c.put([]byte("k9"), denial{policy: p, cost: 1, until: 100})
	if len(c.m) != 1 || len(c.ring) != 1 {
		t.Fatalf("after clear and one put: %d entries, ring %d; want 1, 1", len(c.m), len(c.ring))
	}
}
