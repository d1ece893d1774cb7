package operator

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/testkit"
)

// TestHighRiskNeedsApprovalByDefault: a high-risk action waits for approval
// unless its definition says requires_approval = false; the shipped
// configuration relaxes block_key only.
func TestHighRiskNeedsApprovalByDefault(t *testing.T) {
	no, yes := false, true
	f := func(risk string, explicit *bool, want bool) {
		t.Helper()
		a := Action{Name: "a", RiskLevel: risk, RequiresApproval: explicit}
		if got := a.NeedsApproval(); got != want {
			t.Errorf("risk %s, requires_approval %v: NeedsApproval() = %v; want %v", risk, explicit, got, want)
		}
	}
	f("high", nil, true)
	f("high", &no, false)
	f("medium", nil, false)
	f("low", &yes, true)
	_, subj := shipped(t)
	for _, a := range subj.Actions {
		if a.RiskLevel == "high" && !a.NeedsApproval() && a.Name != "block_key" {
			t.Errorf("shipped %s is high risk and runs without approval", a.Name)
		}
	}
	for _, name := range []string{"update_limit", "drain_node"} {
		for _, a := range subj.Actions {
			if a.Name == name && !a.NeedsApproval() {
				t.Errorf("shipped %s needs no approval; want it to", name)
			}
		}
	}
}

// TestActGoesThroughKillSwitchAndCaps: `operator act` is refused in observe
// mode and past the hourly cap, and audited; --force runs it anyway and is
// audited as forced.
func TestActGoesThroughKillSwitchAndCaps(t *testing.T) {
	t.Parallel()
	q := startQueue(t, map[string]bool{"w1": false})
	cfg, subj := queueSubject(t)
	cfg.Mode = ModeObserve
	cfg.MaxActionsPerHour = 1
	e := newOp(t, cfg, subj, []string{q.URL}, time.Now)
	ctx := context.Background()
	params := map[string]any{"name": "w1", "attempt": "1"}
	if _, err := e.op.Act(ctx, "restart_worker", params, "carol", false); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "observe mode") {
		t.Fatalf("Act in observe mode = %v; want refused by the kill switch", err)
	}
	if n := len(q.calls()); n != 0 {
		t.Fatalf("%d calls after a refused act; want 0", n)
	}
	p, err := e.op.Act(ctx, "restart_worker", params, "carol", true)
	if err != nil || p.Status != ProposalSucceeded {
		t.Fatalf("Act --force = %+v, %v; want succeeded", p, err)
	}
	if !strings.Contains(p.Reason, "forced past: the operator is in observe mode") {
		t.Errorf("forced proposal's reason %q does not say what it overrode", p.Reason)
	}
	// The cap: one action an hour, and the forced one counts.
	if err := e.store.SetMode(ctx, ModeAuto, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.op.Act(ctx, "restart_worker", params, "carol", false); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "action limit reached") {
		t.Fatalf("Act past max_actions_per_hour = %v; want refused by the cap", err)
	}
	if n := len(q.calls()); n != 1 {
		t.Errorf("%d calls; want only the forced one", n)
	}
	events := map[string]int{}
	for _, a := range e.audit(t, 0) {
		events[a.Actor+" "+a.Event]++
	}
	if events["carol manual_refused"] != 2 || events["carol forced"] != 1 {
		t.Errorf("audit events %v; want 2 carol manual_refused and 1 carol forced", events)
	}
}

// TestApprovalExpires: an approval not executed within approval_ttl is
// skipped, never run; a fresh one runs.
func TestApprovalExpires(t *testing.T) {
	t.Parallel()
	q := startQueue(t, map[string]bool{"w1": true})
	cfg, subj := queueSubject(t)
	cfg.Mode = ModeApprove
	cfg.ApprovalTTL.Duration = time.Hour
	var mu sync.Mutex
	clock := time.Now()
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	e := newOp(t, cfg, subj, []string{q.URL}, now)
	ctx := context.Background()
	e.tick(t)
	ts := e.tickets(t)
	if len(ts) != 1 {
		t.Fatalf("tickets %v; want worker_stuck:w1", keys(ts))
	}
	ps := e.proposals(t, ts[0].ID)
	if len(ps) != 1 || ps[0].Status != ProposalPending {
		t.Fatalf("proposals %+v; want one pending", ps)
	}
	if ok, err := e.store.Transition(ctx, ps[0].ID, ProposalPending, ProposalApproved, "cli", "", now()); !ok || err != nil {
		t.Fatalf("approve: %v %v", ok, err)
	}
	// Nobody switched to auto or ticked for an hour and a minute: the
	// operator was down, say. The approval is stale.
	advance(61 * time.Minute)
	e.tick(t)
	p, _ := e.store.Proposal(ctx, ps[0].ID)
	if p.Status != ProposalSkipped || !strings.Contains(p.Result, "approval expired") {
		t.Fatalf("proposal approved 61 min ago is %s (%s); want skipped: approval expired", p.Status, p.Result)
	}
	if n := len(q.calls()); n != 0 {
		t.Fatalf("%d calls for an expired approval; want 0", n)
	}
	// A fresh approval of a proposal the subject's definition no longer
	// allows (attempt 1 when the action now starts at 2) is not run either.
	p2, err := e.store.AddProposal(ctx, Proposal{TicketID: ts[0].ID, Action: "restart_worker", Params: ps[0].Params,
		Source: "rules", RiskLevel: "low", Status: ProposalPending, CreatedAt: now()})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := e.store.Transition(ctx, p2.ID, ProposalPending, ProposalApproved, "cli", "", now()); !ok || err != nil {
		t.Fatalf("approve: %v %v", ok, err)
	}
	two := 2.0
	pdef := e.op.exec.actions["restart_worker"].Params["attempt"]
	pdef.Min = &two
	e.op.exec.actions["restart_worker"].Params["attempt"] = pdef
	e.tick(t)
	if p, _ := e.store.Proposal(ctx, p2.ID); p.Status != ProposalSkipped || !strings.Contains(p.Result, "no longer valid") {
		t.Fatalf("approved proposal against a changed definition is %s (%s); want skipped: no longer valid", p.Status, p.Result)
	}
	if n := len(q.calls()); n != 0 {
		t.Fatalf("%d calls; want 0", n)
	}
}

// TestDrainStuckHonoursUntil: drain_stuck leaves a drain with an until
// alone however old it is, and flags one with no until past its grace.
func TestDrainStuckHonoursUntil(t *testing.T) {
	t.Parallel()
	_, nodes := startCluster(t, 2)
	a := nodes[0]
	cfg, subj := shipped(t)
	cfg.Mode = ModeObserve
	var mu sync.Mutex
	clock := time.Now()
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	e := newOp(t, cfg, subj, []string{a.URL}, now)
	waitSeen(t, e, 2)
	auth := []string{"Authorization", "Bearer " + adminToken}
	until := time.Now().Add(4 * time.Hour).UTC().Format(time.RFC3339)
	if st, body := httpDo(t, "POST", a.URL+"/api/v1/nodes/n1/drain", `{"by":"alice","reason":"maintenance","until":"`+until+`"}`, auth...); st != 200 {
		t.Fatalf("drain n1: %d %s", st, body)
	}
	if st, body := httpDo(t, "POST", a.URL+"/api/v1/nodes/n2/drain", `{"by":"deploy-bot","reason":"deploy 42"}`, auth...); st != 200 {
		t.Fatalf("drain n2: %d %s", st, body)
	}
	testkit.WaitFor(t, 5*time.Second, "both drains seen", func() bool {
		obs, err := e.op.Observe(context.Background())
		if err != nil {
			return false
		}
		draining := 0
		for _, el := range obs["nodes"].([]any) {
			if el.(map[string]any)["state"] == "draining" {
				draining++
			}
		}
		return draining == 2
	})
	e.tick(t)
	advance(time.Hour) // far past the 30 s grace, within alice's until
	e.tick(t)
	ts := e.tickets(t)
	if len(ts) != 1 || ts[0].Key != "drain_stuck:n2" {
		t.Fatalf("tickets %v; want drain_stuck:n2 only (n1's drain has an until 4 h away)", keys(ts))
	}
	if msg := e.tickets(t)[0].Message; !strings.Contains(msg, "by deploy-bot: deploy 42") {
		t.Errorf("ticket message %q does not say who drained and why", msg)
	}
}
