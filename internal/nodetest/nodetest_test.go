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
