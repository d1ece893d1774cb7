package operator

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/testkit"
)

// TestModelDiagnosisBesideTheLoop: while a model takes its time (here,
// until the test lets it answer, several leases long), the loop keeps
// observing and renewing its lease, and the ticket shows diagnosing; the
// answer then lands as the diagnosis, with its proposal.
func TestModelDiagnosisBesideTheLoop(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	defer free()
	var model *standInModel
	model = startModel(t, "anthropic", func(t *testing.T, r modelReq) modelReply {
		<-release
		return model.submit(answer("w1 hangs on a job", "worker_stuck", "w1", rec("restart_worker", map[string]any{"name": "w1", "attempt": 1})))
	})
	e, q := llmQueue(t, model, time.Now, func(c *Config) {
		c.Lease.Duration = 400 * time.Millisecond
		c.Interval.Duration = 50 * time.Millisecond
		c.Mode = ModeObserve
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.op.Run(ctx) }()
	defer func() {
		free()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	testkit.WaitFor(t, 10*time.Second, "a ticket diagnosing", func() bool {
		ts := e.tickets(t)
		return len(ts) == 1 && ts[0].Status == StatusDiagnosing
	})
	before, _ := q.statuses()
	// Three leases long, the model has not answered.
	deadline := time.Now().Add(3 * e.op.cfg.Lease.Duration)
	for time.Now().Before(deadline) {
		if held, holder, err := e.store.AcquireLease(context.Background(), "intruder", time.Second, time.Now()); err != nil || held {
			t.Fatalf("another operator took the lease (%v, %s, %v) while the model thought: the loop stopped renewing it", held, holder, err)
		}
		time.Sleep(50 * time.Millisecond) // pacing the intruder's attempts, not waiting for a result
	}
	if after, _ := q.statuses(); after < before+5 {
		t.Errorf("the subject was observed %d times while the model thought; want the loop to keep observing", after-before)
	}
	if ts := e.tickets(t); ts[0].Status != StatusDiagnosing || len(ts[0].Diagnosis) != 0 {
		t.Fatalf("ticket before the answer: %s with diagnosis %s; want diagnosing, none yet", ts[0].Status, ts[0].Diagnosis)
	}
	free()
	testkit.WaitFor(t, 10*time.Second, "the model's diagnosis", func() bool {
		ts := e.tickets(t)
		return ts[0].Status == StatusDiagnosed && len(ts[0].Diagnosis) > 0
	})
	tk := e.tickets(t)[0]
	if d := diagnosisOf(t, tk); d.Summary != "w1 hangs on a job" || d.Diagnoser != DiagnoserLLM {
		t.Errorf("diagnosis %+v; want the model's", d)
	}
	if ps := e.proposals(t, tk.ID); len(ps) != 1 || ps[0].Action != "restart_worker" {
		t.Errorf("proposals %+v; want the model's restart_worker", ps)
	}
}
