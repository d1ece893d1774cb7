package operator

// What a hostile or runaway model answer can make one diagnosis cost: the
// tool calls it asks for (each read_* is a whole pass over the subject) and
// the size of their inputs, all echoed back to the model in every later
// turn and into the audit log.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/testkit"
)

func TestLLMToolCallsBounded(t *testing.T) {
	t.Parallel()
	reads := func(n int) func(m *standInModel) modelReply {
		return func(m *standInModel) modelReply {
			cs := make([]modelCall, n)
			for i := range cs {
				cs[i] = modelCall{"read_workers", map[string]any{}}
			}
			return m.calls(100, 10, cs...)
		}
	}
	type tc struct {
		name, provider string
		turns          []func(m *standInModel) modelReply
		want           string // in the ticket's error
		requests       int    // to the model
		reads          int    // GET /status the model's calls made
	}
	var cases []tc
	for _, p := range providers {
		perTurn := make([]func(m *standInModel) modelReply, 8)
		for i := range perTurn {
			perTurn[i] = reads(4)
		}
		cases = append(cases,
			tc{"1000_calls_in_one_answer", p, []func(m *standInModel) modelReply{reads(1000)},
				"the model asked for 1000 tool calls in one answer, more than maxToolCallsPerAnswer (8)", 1, 0},
			tc{"4_calls_a_turn_for_8_turns", p, perTurn,
				"the model asked for 20 tool calls in this diagnosis, more than maxToolCallsPerDiagnosis (16)", 5, 16},
			tc{"100_KiB_input", p, []func(m *standInModel) modelReply{func(m *standInModel) modelReply {
				return m.calls(100, 10, modelCall{"read_workers", map[string]any{"pad": strings.Repeat("x", 100<<10)}})
			}}, `the input of tool call "read_workers" is 102410 bytes, more than maxToolInputBytes (65536)`, 1, 0},
			tc{"100_KiB_text", p, []func(m *standInModel) modelReply{func(m *standInModel) modelReply {
				return m.text(strings.Repeat("x", 100<<10), map[string]string{"anthropic": "end_turn", "openai": "stop"}[m.provider])
			}}, "the answer has 102400 bytes of text, more than maxAnswerTextBytes (65536)", 1, 0},
		)
	}
	for _, c := range cases {
		t.Run(c.provider+"/"+c.name, func(t *testing.T) {
			t.Parallel()
			model := startModel(t, c.provider)
			for _, f := range c.turns {
				model.steps = append(model.steps, func(*testing.T, modelReq) modelReply { return f(model) })
			}
			e, q := llmQueue(t, model, time.Now, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if err := e.op.Tick(ctx); err != nil {
				t.Fatalf("Tick = %v; a model failure must not fail the loop", err)
			}
			gets, _ := q.statuses()
			reads := gets - 2 // the tick's observe reads /status for each of the two observations
			t.Logf("%d requests to the model, %d reads of the subject for it", len(model.requests()), reads)
			if n := len(model.requests()); n != c.requests {
				t.Errorf("%d requests to the model; want %d", n, c.requests)
			}
			if reads != c.reads {
				t.Errorf("the model's calls read the subject %d times; want %d", reads, c.reads)
			}
			tk := e.withKey(t, "worker_stuck:w1")
			if len(tk) != 1 {
				t.Fatalf("tickets %v; want worker_stuck:w1", keys(e.tickets(t)))
			}
			if d := diagnosisOf(t, tk[0]); d.Diagnoser != DiagnoserRules || !strings.Contains(d.Error, c.want) {
				t.Errorf("diagnosis %s, error %q; want the playbook's, with an error containing %q", d.Diagnoser, d.Error, c.want)
			}
		})
	}
}

// TestLLMDiagnosesInFlightBounded: a list of 20 stuck workers opens 20
// tickets in one tick; with a model diagnoser each is diagnosed beside the
// loop, but no more than maxDiagnosesInFlight at once: the others wait,
// open, for a later tick, and their "opened" is sent at once.
func TestLLMDiagnosesInFlightBounded(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var model *standInModel
	wait := func(t *testing.T, r modelReq) modelReply {
		<-release
		return model.submit(answer("stuck", "worker_stuck", ""))
	}
	model = startModel(t, "anthropic")
	for range 20 {
		model.steps = append(model.steps, wait)
	}
	workers := map[string]bool{}
	for i := range 20 {
		workers[fmt.Sprintf("w%d", i)] = true
	}
	q := startQueue(t, workers)
	cfg, subj := queueSubject(t)
	cfg.Mode = ModeObserve
	cfg.Diagnoser = DiagnoserLLM
	cfg.LLM.Provider, cfg.LLM.BaseURL, cfg.LLM.Model, cfg.LLM.APIKeyEnv = model.provider, model.URL, "test-model", llmKeyEnv
	e := newOp(t, cfg, subj, []string{q.URL}, time.Now)
	// Diagnose beside the loop, as Run does.
	bgCtx, stop := context.WithCancel(context.Background())
	e.op.bg = &background{ctx: bgCtx, inflight: map[int64]bool{}}
	t.Cleanup(func() { stop(); e.op.bg.wg.Wait() })
	inflight := func() int {
		e.op.bg.mu.Lock()
		defer e.op.bg.mu.Unlock()
		return len(e.op.bg.inflight)
	}
	e.tick(t)
	n := inflight()
	t.Logf("20 tickets opened: %d diagnoses in flight", n)
	if n != 4 {
		t.Errorf("%d diagnoses in flight after the tick; want 4 (maxDiagnosesInFlight)", n)
	}
	if tk := e.tickets(t); len(tk) != 20 {
		t.Errorf("%d tickets; want 20", len(tk))
	}
	close(release)
	testkit.WaitFor(t, 5*time.Second, "the first diagnoses to end", func() bool { return inflight() == 0 })
	e.tick(t)
	if n := inflight(); n != 4 {
		t.Errorf("%d diagnoses in flight after the second tick; want 4 more", n)
	}
	testkit.WaitFor(t, 5*time.Second, "the second diagnoses to end", func() bool { return inflight() == 0 })
}
