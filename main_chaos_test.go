package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/ratelimiter/ratelimiter/chaos"
	"github.com/ratelimiter/ratelimiter/chaos/proxy"
	"github.com/ratelimiter/ratelimiter/internal/nodetest"
	"github.com/ratelimiter/ratelimiter/internal/redistest"
	"github.com/ratelimiter/ratelimiter/internal/testkit"
	"github.com/ratelimiter/ratelimiter/limiter"
	"github.com/ratelimiter/ratelimiter/operator"
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
	t.Logf("chaos run --all took %v:\n%s", time.Since(start).Round(time.Second), stdout.String())
	if err != nil {
		t.Fatalf("chaos run --all: %v\nstderr:\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "TOTAL 11/11 passed") {
		t.Fatalf("scorecard does not say 11/11 passed:\n%s", stdout.String())
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

// TestChaosFaultsInjectAndRevert checks each fault kind on a real cluster:
// Inject has the effect it claims and Revert undoes it.
func TestChaosFaultsInjectAndRevert(t *testing.T) {
	f, err := loadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := chaos.StartCluster(ctx, chaos.ClusterConfig{
		Command: selfCommand, Nodes: 2, Operator: f.Operator, Subject: f.Subjects["ratelimiter"],
		Secrets:  operator.ResolveSecrets(f.Operator, f.Subjects["ratelimiter"], os.Getenv),
		Interval: time.Hour, // the operator ticks once: these faults are checked by hand
		Dir:      t.TempDir(), Log: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n1, n2 := c.Nodes[0], c.Nodes[1]
	// A shared CI machine can stall any one call past a short timeout. A
	// longer one only makes "a paused or killed node does not answer"
	// stricter: the node must stay silent for all of it.
	client := &http.Client{Timeout: 2 * time.Second}
	status := func(url string) int {
		resp, err := client.Get(url)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// getJSON decodes n1's answer to GET path into out.
	getJSON := func(path string, out any) error {
		resp, err := client.Get(n1.URL() + path)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return fmt.Errorf("GET %s: %s: %w", path, resp.Status, err)
		}
		return nil
	}
	// wantLimit checks n1's limit for pattern; 0 means not listed.
	wantLimit := func(pattern string, want int64) error {
		var doc struct{ Limits []limiter.Limit }
		if err := getJSON("/api/v1/limits", &doc); err != nil {
			return err
		}
		got := int64(0)
		for _, l := range doc.Limits {
			if l.KeyPattern == pattern {
				got = l.MaxRequests
			}
		}
		if got != want {
			return fmt.Errorf("%s limit %d; want %d (0: not listed)", pattern, got, want)
		}
		return nil
	}
	checkTook := func() time.Duration {
		start := time.Now()
		resp, err := client.Post(n1.URL()+"/api/v1/check", "application/json", strings.NewReader(`{"key":"api:probe"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return time.Since(start)
	}
	// play injects spec's fault and runs during, which must hold at once:
	// the "does not answer" checks in particular are one-shot, since a
	// retry could only let a stray timeout pass for a stopped node. After
	// the revert, after is polled for up to 5 s, because a resumed or
	// restarted process may need a moment (and a stalled machine more) to
	// serve again; a revert that undoes nothing still fails it.
	play := func(spec chaos.FaultSpec, during, after func() error) {
		t.Helper()
		fault, err := chaos.NewFault(spec, c)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fault.Inject(ctx); err != nil {
			t.Fatalf("%s: inject: %v", spec.Kind, err)
		}
		if err := during(); err != nil {
			t.Errorf("%s, injected: %v", spec.Kind, err)
		}
		what, err := fault.Revert(ctx)
		if err != nil {
			t.Fatalf("%s: revert: %v", spec.Kind, err)
		}
		if err := testkit.Retry(5*time.Second, 50*time.Millisecond, after); err != nil {
			t.Errorf("%s, reverted (%s): %v", spec.Kind, what, err)
		}
		if what2, err := fault.Revert(ctx); err != nil {
			t.Errorf("%s: a second revert failed: %v (%s)", spec.Kind, err, what2)
		}
	}
	want := func(cond bool, format string, args ...any) error {
		if cond {
			return nil
		}
		return fmt.Errorf(format, args...)
	}
	health2 := n2.URL() + "/health"

	play(chaos.FaultSpec{Kind: "limit_set", KeyPattern: "api:*", MaxRequests: 1, WindowSeconds: 60},
		func() error { return wantLimit("api:*", 1) },
		func() error { return wantLimit("api:*", 1000) })
	play(chaos.FaultSpec{Kind: "limit_remove", KeyPattern: "api:*"},
		func() error { return wantLimit("api:*", 0) },
		func() error { return wantLimit("api:*", 1000) })
	play(chaos.FaultSpec{Kind: "proxy", Proxy: proxy.Fault{Type: "latency", LatencyMs: 30}},
		func() error {
			d := checkTook()
			return want(d >= 30*time.Millisecond, "a check took %v under 30 ms of latency", d)
		},
		func() error { return want(len(c.Proxy.Faults()) == 0, "proxy faults left: %+v", c.Proxy.Faults()) })
	play(chaos.FaultSpec{Kind: "node_drain", Node: "node-2"},
		func() error { return want(status(health2) == 503, "drained /health = %d; want 503", status(health2)) },
		func() error { s := status(health2); return want(s == 200, "undrained /health = %d; want 200", s) })
	play(chaos.FaultSpec{Kind: "node_pause", Node: "node-2"},
		func() error { return want(status(health2) == 0, "paused node answered /health") },
		func() error { s := status(health2); return want(s == 200, "resumed /health = %d; want 200", s) })
	pid := n2.PID()
	play(chaos.FaultSpec{Kind: "node_kill", Node: "node-2"},
		func() error {
			return want(n2.PID() == 0 && status(health2) == 0, "killed node still runs (pid %d)", n2.PID())
		},
		func() error {
			p, s := n2.PID(), status(health2)
			return want(p != 0 && p != pid && s == 200, "restarted node: pid %d (was %d), /health %d", p, pid, s)
		})
	play(chaos.FaultSpec{Kind: "hot_key", Key: "user:flood-", Rate: 200},
		func() error {
			// At 200/s the flood reaches the key's limit of 100 in half a
			// second; give a stalled machine up to 5 s. A flood that never
			// starts, or misses the key, still fails.
			return testkit.Retry(5*time.Second, 50*time.Millisecond, func() error {
				var cv struct{ Used int64 }
				if err := getJSON("/api/v1/counters/user:flood-hot", &cv); err != nil {
					return err
				}
				return want(cv.Used >= 100, "user:flood-hot used %d under a flood at 200/s; want its limit, 100", cv.Used)
			})
		},
		func() error { return nil })
}

// TestChaosRunWithModel plays node-kill with the LLM diagnoser against a
// stand-in OpenAI-compatible server. The stand-in reads the ticket from the
// prompt and submits a structured diagnosis, so the scorecard's "right
// diagnosis" is judged on cause_invariant and cause_entity.
func TestChaosRunWithModel(t *testing.T) {
	var calls atomic.Int64
	model := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		var req struct {
			Messages []struct {
				Role    string `json:"role"`
				Content string `json:"content"`
			} `json:"messages"`
			Tools []struct {
				Function struct{ Name string } `json:"function"`
			} `json:"tools"`
		}
		if r.URL.Path != "/v1/chat/completions" || json.NewDecoder(r.Body).Decode(&req) != nil {
			http.Error(w, "unexpected request", http.StatusBadRequest)
			return
		}
		var doc struct {
			Ticket struct{ Invariant, Entity string } `json:"ticket"`
		}
		for _, m := range req.Messages {
			if i := strings.Index(m.Content, "\n\n{"); m.Role == "user" && i >= 0 {
				json.Unmarshal([]byte(m.Content[i+2:]), &doc)
			}
		}
		args, _ := json.Marshal(map[string]any{
			"summary": "node " + doc.Ticket.Entity + " is gone", "root_cause": "its process stopped heartbeating",
			"cause_invariant": doc.Ticket.Invariant, "cause_entity": doc.Ticket.Entity, "confidence": 0.9,
			"evidence": []string{"state unhealthy"}, "alternatives": []string{"a partition"},
			"recommended_actions": []map[string]any{{"action": "drain_node", "params": map[string]any{"node_id": doc.Ticket.Entity}, "reason": "stop routing to it"}},
		})
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"id": "c1", "object": "chat.completion", "model": "stand-in",
			"choices": []map[string]any{{"index": 0, "finish_reason": "tool_calls", "message": map[string]any{
				"role": "assistant", "content": nil,
				"tool_calls": []map[string]any{{"id": "call_1", "type": "function",
					"function": map[string]any{"name": "submit_diagnosis", "arguments": string(args)}}}}}},
			"usage": map[string]any{"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150},
		})
	}))
	defer model.Close()

	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.toml")
	llmSection := "\n[operator.llm]\nprovider = \"openai\"\nmodel = \"stand-in\"\napi_key_env = \"\"\nbase_url = \"" + model.URL + "/v1\"\n"
	if err := os.WriteFile(cfg, append(append([]byte{}, defaultConfig...), llmSection...), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"ratelimiter", "chaos", "run", "--scenario", "node-kill", "--diagnoser", "llm",
		"--config", cfg, "--dir", filepath.Join(dir, "run")}, &stdout, &stderr)
	t.Logf("stdout:\n%s", stdout.String())
	if err != nil {
		t.Fatalf("chaos run --diagnoser llm: %v\nstderr:\n%s", err, stderr.String())
	}
	if calls.Load() == 0 {
		t.Fatal("the stand-in model was never asked")
	}
	mustContain(t, stdout.String(), "node node-2 is gone", "TOTAL 1/1 passed")
	var diag bool
	for _, s := range readJournal(t, filepath.Join(dir, "run", "journal.jsonl")) {
		if s.Step == "diagnosis" && strings.Contains(string(s.Detail), `"diagnoser":"llm"`) && strings.Contains(string(s.Detail), `"cause_entity":"node-2"`) {
			diag = true
		}
	}
	if !diag {
		t.Error("the journal has no diagnosis by the model naming node-2")
	}
}

// TestChaosProxyCommand runs `chaos proxy` in process: its API sets a
// fault, and cancelling the context stops it cleanly.
func TestChaosProxyCommand(t *testing.T) {
	rs := redistest.Start(t)
	listen, api := nodetest.FreeAddr(t), nodetest.FreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var stderr bytes.Buffer
	go func() {
		done <- run(ctx, []string{"ratelimiter", "chaos", "proxy", "--listen", listen, "--upstream", rs.Addr, "--api", api}, io.Discard, &stderr)
	}()
	var resp *http.Response
	testkit.WaitFor(t, 5*time.Second, "the proxy API", func() bool {
		req, _ := http.NewRequest("PUT", "http://"+api+"/faults/slow", strings.NewReader(`{"type":"latency","latency_ms":40}`))
		var err error
		resp, err = http.DefaultClient.Do(req)
		return err == nil
	})
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("PUT /faults/slow: %d", resp.StatusCode)
	}
	client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{listen}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	start := time.Now()
	if err := client.Do(ctx, client.B().Ping().Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 40*time.Millisecond {
		t.Errorf("PING through the proxy took %v under 40 ms of latency", took)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("chaos proxy after cancel: %v\n%s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("chaos proxy did not stop within 10 s of its context ending")
	}
}

// TestChaosNegativeScenariosFail plays scenarios the operator cannot meet
// (chaos/testdata/negative.toml): a remediation it cannot make, and a
// detect_within shorter than the invariant's grace period. Each must FAIL,
// naming the deadline it missed, and the run must exit 2.
func TestChaosNegativeScenariosFail(t *testing.T) {
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	start := time.Now()
	err := run(ctx, []string{"ratelimiter", "chaos", "run", "--all", "--json", "--scenarios", "chaos/testdata/negative.toml", "--dir", dir}, &stdout, &stderr)
	t.Logf("negative scenarios took %v:\n%s", time.Since(start).Round(time.Second), stdout.String())
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 {
		t.Fatalf("chaos run of the negative scenarios = %v; want exit status 2\nstderr:\n%s", err, tail(stderr.String(), 40))
	}
	var doc struct {
		Results []chaos.Result `json:"results"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &doc); err != nil {
		t.Fatalf("--json output: %v", err)
	}
	want := map[string][2]string{ // the missed deadline, and what was lacking
		"cannot-remediate":    {"remediation before the revert (recover_within 40s): ", "the operator has not executed drain_node (proposal #1 pending)"},
		"detect-before-grace": {"detect_within (10s): ", "no drain_stuck ticket"},
	}
	if len(doc.Results) != len(want) {
		t.Fatalf("got %d results; want %d", len(doc.Results), len(want))
	}
	for _, r := range doc.Results {
		if r.Passed {
			t.Errorf("%s passed; want FAIL: %+v", r.Scenario, r)
		}
		if !r.Recovered {
			t.Errorf("%s did not recover after the revert (%v): the failure must come from the missed deadline alone", r.Scenario, r.Missed)
		}
		w := want[r.Scenario]
		if len(r.Missed) != 1 || !strings.HasPrefix(r.Missed[0], w[0]) || !strings.Contains(r.Missed[0], w[1]) {
			t.Errorf("%s missed %q; want one entry starting %q and naming %q", r.Scenario, r.Missed, w[0], w[1])
		}
	}
}
