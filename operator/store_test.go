package operator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// storeT0 is microsecond-exact: the store keeps microseconds.
var storeT0 = time.Date(2025, 3, 4, 5, 6, 7, 123456000, time.UTC)

// storeTestOpen opens a store at path and closes it when the test ends.
func storeTestOpen(t *testing.T, path string) *Store {
	t.Helper()
	s, err := OpenStore(path)
	if err != nil {
		t.Fatalf("OpenStore(%q): %v", path, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestStoreReopenKeepsData(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "op?#%.db") // characters that end or escape a URI path
	s, err := OpenStore(path)
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	for _, c := range []struct{ pragma, want string }{
		{"journal_mode", "wal"}, {"foreign_keys", "1"}, {"busy_timeout", "5000"},
	} {
		var got string
		if err := s.db.QueryRowContext(ctx, "PRAGMA "+c.pragma).Scan(&got); err != nil || got != c.want {
			t.Errorf("PRAGMA %s = %q, %v; want %q", c.pragma, got, err, c.want)
		}
	}
	tk, opened, err := s.RecordViolation(ctx, Violation{Invariant: "node_down", Entity: "n1", Severity: "critical",
		Message: "node n1 is down", Since: storeT0, Observation: json.RawMessage(`{"up":false}`)}, storeT0.Add(time.Second))
	if err != nil || !opened {
		t.Fatalf("RecordViolation = %v, %v; want opened", opened, err)
	}
	timers := map[string]Timer{
		"node_down:n2": {Key: "node_down:n2", Since: storeT0, LastTrue: storeT0.Add(3 * time.Second)},
		"high_p99:":    {Key: "high_p99:", Since: storeT0.Add(-time.Minute), LastTrue: storeT0, Firing: true},
	}
	if err := s.SaveTimers(ctx, timers); err != nil {
		t.Fatal(err)
	}
	if err := s.SetMode(ctx, ModeApprove, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = storeTestOpen(t, path) // the restart
	got, err := s.Ticket(ctx, tk.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, tk) {
		t.Errorf("Ticket(%d) after reopen = %+v; want %+v", tk.ID, got, tk)
	}
	gotTimers, err := s.Timers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotTimers, timers) {
		t.Errorf("Timers() after reopen = %+v; want %+v", gotTimers, timers)
	}
	if m, ok, err := s.Mode(ctx); m != ModeApprove || !ok || err != nil {
		t.Errorf("Mode() after reopen = %q, %v, %v; want %q, true, nil", m, ok, err, ModeApprove)
	}
	var version int
	if err := s.db.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&version); err != nil || version != len(migrations) {
		t.Errorf("schema version = %d, %v; want %d", version, err, len(migrations))
	}

	// A file from a newer binary is refused rather than misread.
	if _, err := s.db.ExecContext(ctx, `UPDATE schema_version SET version = 999`); err != nil {
		t.Fatal(err)
	}
	if s2, err := OpenStore(path); err == nil {
		s2.Close()
		t.Errorf("OpenStore on schema version 999 succeeded; want an error")
	} else if !strings.Contains(err.Error(), "newer") {
		t.Errorf("OpenStore on schema version 999: %v; want it to say the schema is newer", err)
	}
}

func TestStoreTicketDedup(t *testing.T) {
	ctx := context.Background()
	s := storeTestOpen(t, filepath.Join(t.TempDir(), "op.db"))
	v := Violation{Invariant: "node_down", Entity: "n1", Severity: "critical", Message: "first", Since: storeT0,
		Observation: json.RawMessage(`{"n":1}`)}
	if v.Key() != "node_down:n1" {
		t.Fatalf("Key() = %q; want node_down:n1", v.Key())
	}

	t1, opened, err := s.RecordViolation(ctx, v, storeT0.Add(10*time.Second))
	if err != nil || !opened {
		t.Fatalf("first RecordViolation = %v, %v; want opened", opened, err)
	}
	want := Ticket{ID: t1.ID, Key: "node_down:n1", Invariant: "node_down", Entity: "n1", Severity: "critical",
		Status: StatusOpen, Message: "first", FirstSeen: storeT0, LastSeen: storeT0.Add(10 * time.Second),
		Occurrences: 1, Observation: json.RawMessage(`{"n":1}`)}
	if !reflect.DeepEqual(t1, want) {
		t.Errorf("opened ticket = %+v; want %+v", t1, want)
	}

	v.Message, v.Observation = "second", json.RawMessage(`{"n":2}`)
	t2, opened, err := s.RecordViolation(ctx, v, storeT0.Add(20*time.Second))
	if err != nil || opened {
		t.Fatalf("second RecordViolation = %v, %v; want not opened", opened, err)
	}
	want.LastSeen, want.Occurrences, want.Message, want.Observation = storeT0.Add(20*time.Second), 2, "second", json.RawMessage(`{"n":2}`)
	if !reflect.DeepEqual(t2, want) {
		t.Errorf("updated ticket = %+v; want %+v", t2, want)
	}

	// Another entity is another ticket.
	other, opened, err := s.RecordViolation(ctx, Violation{Invariant: "node_down", Entity: "n2", Severity: "critical"}, storeT0)
	if err != nil || !opened || other.ID == t1.ID {
		t.Fatalf("RecordViolation(n2) = %+v, %v, %v; want a new ticket", other, opened, err)
	}
	if !other.FirstSeen.Equal(storeT0) {
		t.Errorf("FirstSeen without Since = %v; want now %v", other.FirstSeen, storeT0)
	}

	// Resolved, then seen again: a new ticket.
	resolvedAt := storeT0.Add(time.Minute)
	if err := s.Resolve(ctx, t1.ID, "operator", "cleared", resolvedAt); err != nil {
		t.Fatal(err)
	}
	if err := s.Resolve(ctx, t1.ID, "operator", "again", resolvedAt.Add(time.Hour)); err != nil {
		t.Fatalf("Resolve of a resolved ticket: %v", err)
	}
	got, _ := s.Ticket(ctx, t1.ID)
	if got.Status != StatusResolved || got.ResolvedAt == nil || !got.ResolvedAt.Equal(resolvedAt) {
		t.Errorf("resolved ticket = %s at %v; want resolved at %v (the second Resolve changes nothing)", got.Status, got.ResolvedAt, resolvedAt)
	}
	t3, opened, err := s.RecordViolation(ctx, v, storeT0.Add(2*time.Minute))
	if err != nil || !opened || t3.ID == t1.ID || t3.Occurrences != 1 {
		t.Fatalf("RecordViolation after resolve = %+v, %v, %v; want a new ticket with 1 occurrence", t3, opened, err)
	}

	f := func(filter TicketFilter, want ...int64) {
		t.Helper()
		ts, err := s.Tickets(ctx, filter)
		if err != nil {
			t.Fatal(err)
		}
		var ids []int64
		for _, tk := range ts {
			ids = append(ids, tk.ID)
		}
		if !reflect.DeepEqual(ids, want) {
			t.Errorf("Tickets(%+v) = %v; want %v", filter, ids, want)
		}
	}
	f(TicketFilter{}, t3.ID, other.ID, t1.ID)
	f(TicketFilter{Unresolved: true}, t3.ID, other.ID)
	f(TicketFilter{Status: []string{StatusResolved}}, t1.ID)
	f(TicketFilter{Status: []string{StatusResolved, StatusOpen}, Limit: 2}, t3.ID, other.ID)
	f(TicketFilter{Status: []string{StatusResolved}, Unresolved: true})

	// The DB itself refuses a second unresolved ticket for a key.
	if _, err := s.db.ExecContext(ctx, `INSERT INTO tickets (key, invariant, entity, severity, status, message,
		first_seen, last_seen, occurrences) VALUES ('node_down:n1', 'node_down', 'n1', 'critical', 'open', '', 0, 0, 1)`); err == nil {
		t.Errorf("a second unresolved ticket for one key was inserted; want a constraint error")
	}

	if _, err := s.Ticket(ctx, 9999); !errors.Is(err, ErrNotFound) {
		t.Errorf("Ticket(9999) error = %v; want ErrNotFound", err)
	}
	if _, _, err := s.RecordViolation(ctx, Violation{Invariant: "x", Observation: json.RawMessage(`{`)}, storeT0); err == nil {
		t.Errorf("RecordViolation with invalid observation JSON succeeded; want an error")
	}
}

func TestStoreTicketSetStatus(t *testing.T) {
	ctx := context.Background()
	s := storeTestOpen(t, filepath.Join(t.TempDir(), "op.db"))
	tk, _, err := s.RecordViolation(ctx, Violation{Invariant: "high_p99", Severity: "warning"}, storeT0)
	if err != nil {
		t.Fatal(err)
	}
	f := func(from []string, to string, wantMoved bool, wantStatus string) {
		t.Helper()
		moved, err := s.SetStatus(ctx, tk.ID, from, to, "bob", "why")
		if err != nil {
			t.Fatalf("SetStatus(%v, %q): %v", from, to, err)
		}
		got, _ := s.Ticket(ctx, tk.ID)
		if moved != wantMoved || got.Status != wantStatus {
			t.Errorf("SetStatus(%v, %q) = %v, status %q; want %v, %q", from, to, moved, got.Status, wantMoved, wantStatus)
		}
	}
	f([]string{StatusDiagnosed}, StatusRemediating, false, StatusOpen) // guard refuses
	f([]string{StatusOpen}, StatusDiagnosed, true, StatusDiagnosed)
	f([]string{StatusOpen}, StatusRemediating, false, StatusDiagnosed)
	f([]string{StatusOpen, StatusDiagnosed}, StatusRemediating, true, StatusRemediating)
	f(nil, StatusRemediating, false, StatusRemediating) // already there: nothing moves
	f(nil, StatusHeld, true, StatusHeld)
	f([]string{StatusHeld}, StatusOpen, true, StatusOpen)

	if _, err := s.SetStatus(ctx, tk.ID, nil, "bogus", "bob", ""); err == nil {
		t.Errorf("SetStatus to an unknown status succeeded; want an error")
	}
	if _, err := s.SetStatus(ctx, 9999, nil, StatusHeld, "bob", ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetStatus(9999) error = %v; want ErrNotFound", err)
	}

	diag := json.RawMessage(`{"summary":"slow redis"}`)
	if err := s.SetDiagnosis(ctx, tk.ID, diag, "rules"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Ticket(ctx, tk.ID); string(got.Diagnosis) != string(diag) {
		t.Errorf("Diagnosis = %s; want %s", got.Diagnosis, diag)
	}
	if err := s.SetDiagnosis(ctx, 9999, diag, "rules"); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetDiagnosis(9999) error = %v; want ErrNotFound", err)
	}

	// Every move is in the audit log, in order; the refused ones are not.
	log, err := s.AuditLog(ctx, tk.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range log {
		var d struct{ From, To string }
		_ = json.Unmarshal(e.Detail, &d)
		got = append(got, fmt.Sprintf("%s %s %s>%s", e.Actor, e.Event, d.From, d.To))
	}
	want := []string{"monitor opened >", "bob status open>diagnosed", "bob status diagnosed>remediating",
		"bob status remediating>held", "bob status held>open", "rules diagnosis >"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("audit log =\n%q\nwant\n%q", got, want)
	}
}

func TestStoreProposalRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := storeTestOpen(t, filepath.Join(t.TempDir(), "op.db"))
	tk, _, err := s.RecordViolation(ctx, Violation{Invariant: "hot_key", Entity: "k"}, storeT0)
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.AddProposal(ctx, Proposal{TicketID: tk.ID, Action: "set_limit", Params: map[string]any{"key": "k", "limit": 10},
		Reason: "hot", Source: "playbook", RiskLevel: "low", CreatedAt: storeT0})
	if err != nil {
		t.Fatal(err)
	}
	want := Proposal{ID: p.ID, TicketID: tk.ID, Action: "set_limit", Params: map[string]any{"key": "k", "limit": float64(10)},
		Reason: "hot", Source: "playbook", RiskLevel: "low", Status: ProposalPending, CreatedAt: storeT0, UpdatedAt: storeT0}
	got, err := s.Proposal(ctx, p.ID)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Proposal(%d) = %+v, %v; want %+v", p.ID, got, err, want)
	}

	// A manual proposal has no ticket: NULL, not 0 (which the foreign key refuses).
	m, err := s.AddProposal(ctx, Proposal{Action: "drain", Source: "manual", Actor: "carol", RiskLevel: "high", RequiresApproval: true})
	if err != nil {
		t.Fatalf("AddProposal without ticket: %v", err)
	}
	if m.CreatedAt.IsZero() || m.TicketID != 0 || m.Params == nil {
		t.Errorf("manual proposal = %+v; want CreatedAt set, TicketID 0, empty Params", m)
	}
	if _, err := s.AddProposal(ctx, Proposal{TicketID: 9999, Action: "x"}); err == nil {
		t.Errorf("AddProposal for a missing ticket succeeded; want a foreign key error")
	}

	moved, err := s.Transition(ctx, p.ID, ProposalPending, ProposalApproved, "alice", "", storeT0.Add(time.Second))
	if err != nil || !moved {
		t.Fatalf("Transition pending>approved = %v, %v; want moved", moved, err)
	}
	moved, err = s.Transition(ctx, p.ID, ProposalPending, ProposalRejected, "bob", "", storeT0.Add(time.Second))
	if err != nil || moved {
		t.Errorf("Transition from a stale status = %v, %v; want not moved", moved, err)
	}
	if _, err := s.Transition(ctx, 9999, ProposalPending, ProposalApproved, "x", "", storeT0); !errors.Is(err, ErrNotFound) {
		t.Errorf("Transition(9999) error = %v; want ErrNotFound", err)
	}
	if _, err := s.Transition(ctx, p.ID, ProposalApproved, "bogus", "x", "", storeT0); err == nil {
		t.Errorf("Transition to an unknown status succeeded; want an error")
	}
	s.Transition(ctx, p.ID, ProposalApproved, ProposalExecuting, "operator", "", storeT0.Add(2*time.Second))
	s.Transition(ctx, p.ID, ProposalExecuting, ProposalSucceeded, "", "HTTP 200", storeT0.Add(3*time.Second))
	got, _ = s.Proposal(ctx, p.ID)
	if got.Status != ProposalSucceeded || got.Actor != "operator" || got.Result != "HTTP 200" ||
		got.ExecutedAt == nil || !got.ExecutedAt.Equal(storeT0.Add(2*time.Second)) || !got.UpdatedAt.Equal(storeT0.Add(3*time.Second)) {
		t.Errorf("after execution: %+v; want succeeded by operator, HTTP 200, executed at +2s, updated at +3s", got)
	}

	f := func(filter ProposalFilter, want ...int64) {
		t.Helper()
		ps, err := s.Proposals(ctx, filter)
		if err != nil {
			t.Fatal(err)
		}
		var ids []int64
		for _, p := range ps {
			ids = append(ids, p.ID)
		}
		if !reflect.DeepEqual(ids, want) {
			t.Errorf("Proposals(%+v) = %v; want %v", filter, ids, want)
		}
	}
	f(ProposalFilter{}, m.ID, p.ID)
	f(ProposalFilter{TicketID: tk.ID}, p.ID)
	f(ProposalFilter{Status: []string{ProposalPending}}, m.ID)
	f(ProposalFilter{Limit: 1}, m.ID)
}

func TestStoreProposalTransitionExclusive(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "op.db")
	stores := []*Store{storeTestOpen(t, path), storeTestOpen(t, path)} // two operators, one file
	p, err := stores[0].AddProposal(ctx, Proposal{Action: "restart", Source: "manual"})
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners []string
		errs    []error
	)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			actor := fmt.Sprintf("op%d", i)
			moved, err := stores[i%2].Transition(ctx, p.ID, ProposalPending, ProposalExecuting, actor, "", storeT0)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			}
			if moved {
				winners = append(winners, actor)
			}
		}()
	}
	close(start)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("Transition errors: %v", errs)
	}
	if len(winners) != 1 {
		t.Fatalf("%d goroutines moved the proposal to executing (%v); want exactly 1", len(winners), winners)
	}
	got, _ := stores[1].Proposal(ctx, p.ID)
	if got.Status != ProposalExecuting || got.Actor != winners[0] {
		t.Errorf("proposal = %s by %q; want executing by %q", got.Status, got.Actor, winners[0])
	}
	log, _ := stores[0].AuditLog(ctx, 0, 0)
	var moves int
	for _, e := range log {
		if e.Event == "proposal_status" && e.ProposalID == p.ID {
			moves++
		}
	}
	if moves != 1 {
		t.Errorf("%d proposal_status audit entries; want 1", moves)
	}
}

func TestStoreProposalExecuted(t *testing.T) {
	ctx := context.Background()
	s := storeTestOpen(t, filepath.Join(t.TempDir(), "op.db"))
	var tickets [2]int64
	for i := range tickets {
		tk, _, err := s.RecordViolation(ctx, Violation{Invariant: "node_down", Entity: fmt.Sprint(i)}, storeT0)
		if err != nil {
			t.Fatal(err)
		}
		tickets[i] = tk.ID
	}
	// add makes a proposal for ticket and walks it through statuses, the
	// executing step (if any) at execAt.
	add := func(ticket int64, execAt time.Time, path ...string) {
		t.Helper()
		p, err := s.AddProposal(ctx, Proposal{TicketID: ticket, Action: "a", Source: "playbook", CreatedAt: storeT0})
		if err != nil {
			t.Fatal(err)
		}
		from := ProposalPending
		for _, to := range path {
			if ok, err := s.Transition(ctx, p.ID, from, to, "op", "", execAt); !ok || err != nil {
				t.Fatalf("Transition %s>%s = %v, %v", from, to, ok, err)
			}
			from = to
		}
	}
	hourAgo := storeT0.Add(-time.Hour)
	add(tickets[0], hourAgo.Add(-time.Minute), ProposalExecuting, ProposalSucceeded, ProposalVerified) // too old for the hour
	add(tickets[0], storeT0, ProposalExecuting, ProposalFailed)
	add(tickets[0], storeT0, ProposalApproved, ProposalExecuting)
	add(tickets[0], storeT0, ProposalSkipped)                                            // never executed
	add(tickets[0], storeT0, ProposalRejected)                                           // never executed
	add(tickets[0], storeT0)                                                             // pending
	add(tickets[1], hourAgo, ProposalExecuting, ProposalSucceeded, ProposalVerifyFailed) // exactly at the boundary
	add(0, storeT0, ProposalExecuting)                                                   // manual

	f := func(ticket int64, since time.Time, wantTicket, wantTotal int) {
		t.Helper()
		gotTicket, gotTotal, err := s.Executed(ctx, ticket, since)
		if err != nil || gotTicket != wantTicket || gotTotal != wantTotal {
			t.Errorf("Executed(%d, %v) = %d, %d, %v; want %d, %d", ticket, since, gotTicket, gotTotal, err, wantTicket, wantTotal)
		}
	}
	f(tickets[0], hourAgo, 3, 4)
	f(tickets[1], hourAgo, 1, 4)
	f(0, hourAgo, 0, 4)
	f(tickets[0], storeT0.Add(time.Second), 3, 0)
	f(tickets[0], time.Time{}, 3, 5)
	f(9999, hourAgo, 0, 4)
}

func TestStoreAuditAppendOnly(t *testing.T) {
	ctx := context.Background()
	s := storeTestOpen(t, filepath.Join(t.TempDir(), "op.db"))
	tk, _, err := s.RecordViolation(ctx, Violation{Invariant: "redis_down"}, storeT0) // audits "opened"
	if err != nil {
		t.Fatal(err)
	}
	// At out of order on purpose: the log keeps the order of appending.
	for i, at := range []time.Time{storeT0.Add(3 * time.Second), storeT0.Add(time.Second), {}} {
		e := AuditEntry{At: at, Actor: "tester", Event: fmt.Sprintf("e%d", i), Detail: json.RawMessage(`{"i":` + fmt.Sprint(i) + `}`)}
		if i == 1 {
			e.TicketID = tk.ID
		}
		if err := s.Audit(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Audit(ctx, AuditEntry{Event: "bad", Detail: json.RawMessage(`nope`)}); err == nil {
		t.Errorf("Audit with invalid detail JSON succeeded; want an error")
	}

	events := func(ticket int64, limit int) []string {
		t.Helper()
		log, err := s.AuditLog(ctx, ticket, limit)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for i, e := range log {
			if i > 0 && e.ID <= log[i-1].ID {
				t.Errorf("AuditLog(%d, %d): id %d after %d; want increasing ids", ticket, limit, e.ID, log[i-1].ID)
			}
			out = append(out, e.Event)
		}
		return out
	}
	f := func(ticket int64, limit int, want ...string) {
		t.Helper()
		if got := events(ticket, limit); !reflect.DeepEqual(got, want) {
			t.Errorf("AuditLog(%d, %d) = %v; want %v", ticket, limit, got, want)
		}
	}
	f(0, 0, "opened", "e0", "e1", "e2")
	f(0, 2, "e1", "e2") // the last two, oldest first
	f(tk.ID, 0, "opened", "e1")

	log, _ := s.AuditLog(ctx, 0, 0)
	if !log[1].At.Equal(storeT0.Add(3*time.Second)) || log[3].At.IsZero() || string(log[2].Detail) != `{"i":1}` || log[2].TicketID != tk.ID {
		t.Errorf("audit entries = %+v; want At as given (now when zero), detail and ticket kept", log)
	}

	for _, q := range []string{
		`UPDATE audit SET actor = 'mallory'`,
		`UPDATE audit SET event = 'nothing' WHERE id = 1`,
		`DELETE FROM audit WHERE id = 1`,
		`DELETE FROM audit`,
	} {
		if _, err := s.db.ExecContext(ctx, q); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: err = %v; want the append-only trigger to abort it", q, err)
		}
	}
	f(0, 0, "opened", "e0", "e1", "e2")
}

func TestStoreLease(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "op.db")
	a, b := storeTestOpen(t, path), storeTestOpen(t, path)
	ttl := 30 * time.Second
	f := func(s *Store, owner string, now time.Time, wantHeld bool, wantHolder string) {
		t.Helper()
		held, holder, err := s.AcquireLease(ctx, owner, ttl, now)
		if err != nil || held != wantHeld || holder != wantHolder {
			t.Errorf("AcquireLease(%q, %v) = %v, %q, %v; want %v, %q", owner, now.Sub(storeT0), held, holder, err, wantHeld, wantHolder)
		}
	}
	f(a, "A", storeT0, true, "A")                      // free
	f(b, "B", storeT0.Add(time.Second), false, "A")    // held
	f(a, "A", storeT0.Add(20*time.Second), true, "A")  // renewed to +50s
	f(b, "B", storeT0.Add(40*time.Second), false, "A") // still held thanks to the renewal
	f(b, "B", storeT0.Add(50*time.Second), true, "B")  // expired: taken over
	f(a, "A", storeT0.Add(51*time.Second), false, "B")

	if err := a.ReleaseLease(ctx, "A"); err != nil { // not A's to release
		t.Fatal(err)
	}
	f(a, "A", storeT0.Add(52*time.Second), false, "B")
	if err := b.ReleaseLease(ctx, "B"); err != nil {
		t.Fatal(err)
	}
	f(a, "A", storeT0.Add(53*time.Second), true, "A")

	if _, _, err := a.AcquireLease(ctx, "A", 0, storeT0); err == nil {
		t.Errorf("AcquireLease with ttl 0 succeeded; want an error")
	}
	log, _ := a.AuditLog(ctx, 0, 0)
	var got []string
	for _, e := range log {
		got = append(got, e.Actor+" "+string(e.Detail))
	}
	want := []string{`A {"acquired":true,"previous":""}`, `B {"acquired":true,"previous":"A"}`,
		`B {"released":true}`, `A {"acquired":true,"previous":""}`}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("lease audit =\n%q\nwant\n%q", got, want)
	}
}

func TestStoreMode(t *testing.T) {
	ctx := context.Background()
	s := storeTestOpen(t, filepath.Join(t.TempDir(), "op.db"))
	if m, ok, err := s.Mode(ctx); m != "" || ok || err != nil {
		t.Errorf("Mode() on a new store = %q, %v, %v; want \"\", false, nil", m, ok, err)
	}
	for _, m := range []string{ModeAuto, ModeObserve, ModeApprove} {
		if err := s.SetMode(ctx, m, "alice"); err != nil {
			t.Fatal(err)
		}
		if got, ok, err := s.Mode(ctx); got != m || !ok || err != nil {
			t.Errorf("Mode() after SetMode(%q) = %q, %v, %v", m, got, ok, err)
		}
	}
	if err := s.SetMode(ctx, "yolo", "mallory"); err == nil {
		t.Errorf("SetMode(yolo) succeeded; want an error")
	}
	if got, _, _ := s.Mode(ctx); got != ModeApprove {
		t.Errorf("Mode() after a refused SetMode = %q; want %q", got, ModeApprove)
	}
	log, _ := s.AuditLog(ctx, 0, 1)
	if len(log) != 1 || log[0].Event != "mode" || log[0].Actor != "alice" || string(log[0].Detail) != `{"from":"observe","to":"approve"}` {
		t.Errorf("last audit entry = %+v; want alice's mode change observe>approve", log)
	}
}

func TestStoreTimersReplace(t *testing.T) {
	ctx := context.Background()
	s := storeTestOpen(t, filepath.Join(t.TempDir(), "op.db"))
	f := func(timers map[string]Timer) {
		t.Helper()
		if err := s.SaveTimers(ctx, timers); err != nil {
			t.Fatal(err)
		}
		got, err := s.Timers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(timers) == 0 && len(got) == 0 {
			return
		}
		if !reflect.DeepEqual(got, timers) {
			t.Errorf("Timers() = %+v; want %+v", got, timers)
		}
	}
	f(map[string]Timer{"a:": {Key: "a:", Since: storeT0}, "b:x": {Key: "b:x", Since: storeT0, LastTrue: storeT0, Firing: true}})
	f(map[string]Timer{"c:y": {Key: "c:y", Since: storeT0.Add(time.Hour), LastTrue: storeT0.Add(2 * time.Hour)}}) // a and b gone
	f(nil)
}
