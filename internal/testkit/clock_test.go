package testkit

import (
	"testing"
	"time"
)

func TestClock(t *testing.T) {
	c := NewClock()
	t0 := c.Now()
	if want := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC); !t0.Equal(want) {
		t.Fatalf("NewClock().Now() = %v; want %v", t0, want)
	}
	c.Add(1500*time.Millisecond + 7*time.Nanosecond)
	if got := c.Now().Sub(t0); got != 1500*time.Millisecond {
		t.Errorf("after Add(1.5s + 7ns): Now() - start = %v; want 1.5s (microsecond-exact)", got)
	}
}
