package nodetest

import (
	"net/http"
	"os"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	RunChildIfRequested()
	os.Exit(m.Run())
}

// healthy reports whether base answers /health.
func healthy(base string) bool {
	resp, err := (&http.Client{Timeout: time.Second}).Get(base + "/health")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// TestStartStop: an in-process node serves once Start returns and stops
// serving after Stop; a second Stop (the cleanup's) does nothing.
func TestStartStop(t *testing.T) {
	n := Start(t, Config("in-process", nil))
	if !healthy(n.URL) {
		t.Fatalf("%s/health does not answer 200 after Start", n.URL)
	}
	n.Stop()
	if healthy(n.URL) {
		t.Errorf("%s/health still answers after Stop", n.URL)
	}
	n.Stop()
}

// TestChildKill: a child node serves once StartChild returns, from another
// process, and is gone after Kill.
func TestChildKill(t *testing.T) {
	c := StartChild(t, Config("child", nil))
	if !healthy(c.URL) {
		t.Fatalf("%s/health does not answer 200 after StartChild", c.URL)
	}
	if pid := c.cmd.Process.Pid; pid == os.Getpid() {
		t.Fatalf("the child runs in the test's process (pid %d)", pid)
	}
	c.Kill(t)
	if healthy(c.URL) {
		t.Errorf("%s/health still answers after Kill", c.URL)
	}
}

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
