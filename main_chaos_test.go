package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets chaos and demo re-execute this test binary as the real
// binary: selfCommand marks such children with childEnv.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestChaosRunAll plays every shipped scenario against real processes and
// expects the operator to get every one right.
func TestChaosRunAll(t *testing.T) {
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	start := time.Now()
	err := run(ctx, []string{"ratelimiter", "chaos", "run", "--all", "--dir", dir}, &stdout, &stderr)
	t.Logf("chaos run --all took %v:\n%s", time.Since(start).Round(time.Second), tail(stdout.String(), 16))
	if err != nil {
		t.Fatalf("chaos run --all: %v\nstderr:\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "TOTAL 10/10 passed") {
		t.Fatalf("scorecard does not say 9/9 passed:\n%s", stdout.String())
	}
	steps := readJournal(t, filepath.Join(dir, "journal.jsonl"))
	want := map[string]bool{}
	for _, s := range steps {
		if s.Step == "inject" || s.Step == "revert" {
			want[s.Scenario+"/"+s.Step] = true
		}
	}
	for _, sc := range []string{"node-kill", "redis-blackhole", "misconfigured-limit"} {
		if !want[sc+"/inject"] || !want[sc+"/revert"] {
			t.Errorf("journal lacks the inject and revert of %s", sc)
		}
	}
}

// TestChaosInterruptLeavesNothing sends SIGINT to a chaos run while its
// fault is in place: the run reverts the fault and stops every process it
// started.
func TestChaosInterruptLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	cmd := selfCommand("chaos", "run", "--scenario", "redis-latency", "--dir", dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	injected := make(chan struct{})
	var stdout bytes.Buffer
	go func() {
		sc := bufio.NewScanner(out)
		once := false
		for sc.Scan() {
			stdout.WriteString(sc.Text() + "\n")
			if !once && strings.Contains(sc.Text(), "injected:") {
				once = true
				close(injected)
			}
		}
	}()
	select {
	case <-injected:
	case <-time.After(60 * time.Second):
		t.Fatalf("no injection within 60 s\nstderr:\n%s", stderr.String())
	}
	time.Sleep(500 * time.Millisecond) // mid-fault: the latency is in place
	cmd.Process.Signal(syscall.SIGINT)
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err := <-waited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("interrupted run exited with %v; want a failure status", err)
		}
	case <-time.After(45 * time.Second):
		t.Fatal("the interrupted run did not exit within 45 s")
	}

	steps := readJournal(t, filepath.Join(dir, "journal.jsonl"))
	var pids []int
	reverted := false
	for _, s := range steps {
		switch s.Step {
		case "cluster":
			var d struct{ PIDs []int }
			json.Unmarshal(s.Detail, &d)
			pids = d.PIDs
		case "revert":
			reverted = strings.Contains(string(s.Detail), "cleared")
		}
	}
	if !reverted {
		t.Errorf("the journal has no revert clearing the proxy fault:\n%s", stdout.String())
	}
	if len(pids) != 4 { // redis-server and three nodes
		t.Fatalf("journal lists pids %v; want 4", pids)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d still exists after the interrupted run (kill 0: %v)", pid, err)
		}
	}
}

type journalStep struct {
	Scenario string          `json:"scenario"`
	Step     string          `json:"step"`
	Detail   json.RawMessage `json:"detail"`
}

func readJournal(t *testing.T, path string) []journalStep {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var steps []journalStep
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var s journalStep
		if err := json.Unmarshal([]byte(line), &s); err != nil {
			t.Fatalf("journal line %q: %v", line, err)
		}
		steps = append(steps, s)
	}
	return steps
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
