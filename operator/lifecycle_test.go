package operator

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStatusMoves(t *testing.T) {
	f := func(moves map[string][]string, what, from, to string, legal bool) {
		t.Helper()
		err := checkMove(moves, what, from, to)
		if legal && err != nil {
			t.Errorf("checkMove(%s %s → %s) = %v; want legal", what, from, to, err)
		}
		if !legal && !errors.Is(err, ErrIllegalMove) {
			t.Errorf("checkMove(%s %s → %s) = %v; want ErrIllegalMove", what, from, to, err)
		}
	}
	// The moves the operator and the CLI make.
	f(ticketMoves, "ticket", StatusOpen, StatusDiagnosing, true)
	f(ticketMoves, "ticket", StatusDiagnosing, StatusDiagnosed, true)
	f(ticketMoves, "ticket", StatusDiagnosed, StatusRemediating, true)
	f(ticketMoves, "ticket", StatusRemediating, StatusRemediationFailed, true)
	f(ticketMoves, "ticket", StatusRemediationFailed, StatusHeld, true)
	f(ticketMoves, "ticket", StatusHeld, StatusDiagnosed, true)
	f(ticketMoves, "ticket", StatusRemediating, StatusResolved, true)
	f(proposalMoves, "proposal", ProposalPending, ProposalApproved, true)
	f(proposalMoves, "proposal", ProposalPending, ProposalExecuting, true) // auto mode
	f(proposalMoves, "proposal", ProposalApproved, ProposalExecuting, true)
	f(proposalMoves, "proposal", ProposalExecuting, ProposalSucceeded, true)
	f(proposalMoves, "proposal", ProposalSucceeded, ProposalVerifyFailed, true)
	// What must never happen.
	f(ticketMoves, "ticket", StatusResolved, StatusOpen, false)
	f(ticketMoves, "ticket", StatusResolved, StatusRemediationFailed, false)
	f(ticketMoves, "ticket", StatusRemediationFailed, StatusRemediating, false)
	f(ticketMoves, "ticket", StatusHeld, StatusRemediating, false)
	f(ticketMoves, "ticket", StatusRemediating, StatusOpen, false)
	f(proposalMoves, "proposal", ProposalRejected, ProposalExecuting, false)
	f(proposalMoves, "proposal", ProposalFailed, ProposalExecuting, false)
	f(proposalMoves, "proposal", ProposalVerified, ProposalExecuting, false)
	f(proposalMoves, "proposal", ProposalExecuting, ProposalPending, false)
	f(proposalMoves, "proposal", ProposalSkipped, ProposalApproved, false)
	f(proposalMoves, "proposal", ProposalPending, ProposalVerified, false)

	// The tables list every status, and name no other.
	for _, c := range []struct {
		moves    map[string][]string
		statuses []string
	}{{ticketMoves, ticketStatuses}, {proposalMoves, proposalStatuses}} {
		if len(c.moves) != len(c.statuses) {
			t.Errorf("a move table has %d statuses; want %d", len(c.moves), len(c.statuses))
		}
		for _, st := range c.statuses {
			next, ok := c.moves[st]
			if !ok {
				t.Errorf("status %q has no row in its move table", st)
			}
			for _, to := range next {
				if !inSet(to, c.statuses) {
					t.Errorf("%q may move to %q, which is no status", st, to)
				}
			}
		}
	}
	if err := checkMove(ticketMoves, "ticket", "bogus", StatusOpen); err == nil || errors.Is(err, ErrIllegalMove) {
		t.Errorf("checkMove from an unknown status = %v; want an unknown-status error", err)
	}
}

// TestStoreRefusesIllegalMoves: an illegal move is an error, and the row
// and the audit log stay as they were.
func TestStoreRefusesIllegalMoves(t *testing.T) {
	ctx := context.Background()
	s := storeTestOpen(t, filepath.Join(t.TempDir(), "op.db"))
	tk, _, err := s.RecordViolation(ctx, Violation{Invariant: "high_p99", Severity: "warning"}, storeT0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Resolve(ctx, tk.ID, "operator", "cleared", storeT0); err != nil {
		t.Fatal(err)
	}
	before, err := s.AuditLog(ctx, tk.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(before) < 2 {
		t.Fatalf("audit log holds %d entries; want opened and resolved", len(before))
	}
	for _, to := range []string{StatusOpen, StatusRemediationFailed, StatusHeld} {
		moved, err := s.SetStatus(ctx, tk.ID, nil, to, "bob", "reopen")
		if moved || !errors.Is(err, ErrIllegalMove) {
			t.Errorf("SetStatus(resolved → %s) = %v, %v; want false, ErrIllegalMove", to, moved, err)
		}
	}
	after, _ := s.AuditLog(ctx, tk.ID, 0)
	if got, _ := s.Ticket(ctx, tk.ID); got.Status != StatusResolved || got.ResolvedAt == nil || len(after) != len(before) {
		t.Errorf("after refused moves: status %q, resolved_at %v, %d audit entries; want resolved, set, %d", got.Status, got.ResolvedAt, len(after), len(before))
	}

	p, err := s.AddProposal(ctx, Proposal{TicketID: tk.ID, Action: "a", Source: "playbook", CreatedAt: storeT0})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := s.Transition(ctx, p.ID, ProposalPending, ProposalRejected, "alice", "", storeT0); !ok || err != nil {
		t.Fatalf("reject: %v, %v", ok, err)
	}
	moved, err := s.Transition(ctx, p.ID, ProposalRejected, ProposalExecuting, "mallory", "", storeT0)
	if moved || !errors.Is(err, ErrIllegalMove) {
		t.Errorf("Transition(rejected → executing) = %v, %v; want false, ErrIllegalMove", moved, err)
	}
	if got, _ := s.Proposal(ctx, p.ID); got.Status != ProposalRejected || got.ExecutedAt != nil || got.Actor != "alice" {
		t.Errorf("after a refused move: status %q, executed_at %v, actor %q; want rejected, unset, alice", got.Status, got.ExecutedAt, got.Actor)
	}
}

// TestResolveSkipsWaitingProposals: resolving a ticket skips its pending
// and approved proposals in the same transaction, audited; one already
// executing or done keeps its status, and another ticket's is untouched.
func TestResolveSkipsWaitingProposals(t *testing.T) {
	ctx := context.Background()
	s := storeTestOpen(t, filepath.Join(t.TempDir(), "op.db"))
	tk, _, err := s.RecordViolation(ctx, Violation{Invariant: "node_down", Entity: "n1", Severity: "critical"}, storeT0)
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := s.RecordViolation(ctx, Violation{Invariant: "node_down", Entity: "n2", Severity: "critical"}, storeT0)
	if err != nil {
		t.Fatal(err)
	}
	add := func(ticket int64, moves ...string) int64 {
		t.Helper()
		p, err := s.AddProposal(ctx, Proposal{TicketID: ticket, Action: "drain_node", Source: "playbook", CreatedAt: storeT0})
		if err != nil {
			t.Fatal(err)
		}
		from := ProposalPending
		for _, to := range moves {
			if ok, err := s.Transition(ctx, p.ID, from, to, "alice", "", storeT0); !ok || err != nil {
				t.Fatalf("%s → %s: %v, %v", from, to, ok, err)
			}
			from = to
		}
		return p.ID
	}
	pending, approved, running := add(tk.ID), add(tk.ID, ProposalApproved), add(tk.ID, ProposalApproved, ProposalExecuting)
	elsewhere := add(other.ID)
	if err := s.Resolve(ctx, tk.ID, "cli", "resolved by hand", storeT0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[int64]string{pending: ProposalSkipped, approved: ProposalSkipped, running: ProposalExecuting, elsewhere: ProposalPending} {
		p, err := s.Proposal(ctx, id)
		if err != nil || p.Status != want {
			t.Errorf("proposal %d after Resolve: %s, %v; want %s", id, p.Status, err, want)
		}
		if want == ProposalSkipped && (p.Actor != "cli" || p.Result != "the ticket resolved first") {
			t.Errorf("skipped proposal %d: actor %q, result %q; want the resolver and the reason", id, p.Actor, p.Result)
		}
	}
	audit, _ := s.AuditLog(ctx, tk.ID, 0)
	skips := 0
	for _, e := range audit {
		if e.Event == "proposal_status" && strings.Contains(string(e.Detail), `"to":"skipped"`) {
			skips++
		}
	}
	if skips != 2 {
		t.Errorf("audit log has %d skips; want 2", skips)
	}
}
