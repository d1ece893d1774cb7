package testkit

import "testing"

var sink []byte

func TestAllocated(t *testing.T) {
	total, live := Allocated(func() { sink = make([]byte, 8<<20) })
	if total < 8<<20 || total > 9<<20 || live < 7<<20 {
		t.Errorf("Allocated(8 MiB kept) = %d total, %d live; want about 8 MiB each", total, live)
	}
	sink = nil
	if total, live := Allocated(func() { _ = make([]byte, 1<<10) }); total > 64<<10 || live > 1<<20 {
		t.Errorf("Allocated(1 KiB dropped) = %d total, %d live; want about 1 KiB and nothing live", total, live)
	}
}
