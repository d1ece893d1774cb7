package operator

import (
	"strings"
	"testing"
	"time"
)

// TestExpressionNamesChecked: an expression may name only observations,
// the fields its observation declares, and what it binds itself; a typo is
// a configuration error at its TOML path, not an invariant false forever.
func TestExpressionNamesChecked(t *testing.T) {
	base := func() Subject {
		return Subject{BaseURLs: []string{"http://127.0.0.1:1"},
			Observations: []Observation{
				{Name: "nodes", Path: "/nodes", Field: "nodes", Fields: []string{"id", "state", "draining"}},
				{Name: "cluster", Path: "/cluster", Fields: []string{"healthy_nodes", "node_count"}},
				{Name: "raw", Path: "/raw"}, // declares nothing
			}}
	}
	f := func(mod func(s *Subject), want ...string) {
		t.Helper()
		s := base()
		mod(&s)
		err := s.Validate()
		if len(want) == 0 {
			if err != nil {
				t.Errorf("Validate() = %v; want nil", err)
			}
			return
		}
		if err == nil {
			t.Fatalf("Validate() = nil; want %q", want)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Validate() = %v; want it to contain %q", err, w)
			}
		}
	}
	inv := func(over, expr string) func(s *Subject) {
		return func(s *Subject) {
			s.Invariants = append(s.Invariants, Invariant{Name: "x", Over: over, Entity: "id", Expr: expr, Severity: "warning"})
		}
	}
	f(inv("nodes", `state == "unhealthy"`))
	f(inv("nodes", `stat == "unhealthy"`), `invariants[0].expr: unknown name "stat"`, "known: age, ago, at, cluster, draining, entity, id, nodes, raw, state")
	f(inv("nodes", `let s = state; s == "x" && entity != "" && len(filter(nodes, #.whatever)) > 0 && cluster.node_count > 1`))
	f(inv("nodes", `cluster.healty_nodes < 1`), `invariants[0].expr: unknown name "cluster.healty_nodes"`)
	f(inv("", `cluster.healthy_nodes < cluster.node_count && len(nodez) > 0`), `invariants[0].expr: unknown name "nodez"`)
	f(inv("raw", `anything_at_all`)) // raw declares no fields: checked at run time or with --subject-url
	f(inv("raw", `anything && unknown_fn(1)`))
	f(func(s *Subject) {
		s.SLOs = []SLO{{Name: "avail", Expr: `100 * cluster.healthy_nodes / max(1, clustr.node_count)`, Objective: "min"}}
	}, `slos[0].expr: unknown name "clustr"`)
	f(func(s *Subject) {
		s.Observations = append(s.Observations, Observation{Name: "late", Path: "/late", Expr: `len(it) + len(later)`},
			Observation{Name: "later", Path: "/later"})
	}, `observations[3].expr: unknown name "later"`)

	f(func(s *Subject) { s.Observations = append(s.Observations, Observation{Name: "age", Path: "/age"}) },
		`observations[3].name: "age" is reserved`)

	// A live sample knows the fields nothing declared.
	s := base()
	inv("raw", `stuk`)(&s)
	if err := s.Validate(); err != nil {
		t.Fatalf("Validate() = %v; want nil (raw declares no fields)", err)
	}
	sample := map[string]any{"raw": []any{map[string]any{"id": "a", "stuck": true}}, "nodes": []any{}, "cluster": map[string]any{}}
	if err := s.CheckNames(sample); err == nil || !strings.Contains(err.Error(), `invariants[0].expr: unknown name "stuk"`) {
		t.Errorf("CheckNames(sample) = %v; want invariants[0].expr: unknown name \"stuk\"", err)
	}
	s.Invariants[0].Expr = "stuck"
	if err := s.CheckNames(sample); err != nil {
		t.Errorf("CheckNames(sample) = %v; want nil", err)
	}
}

// TestUnknownFieldOpensConfigTicket: at run time, an invariant naming a
// field that none of its entities has opens a ticket about the operator's
// own configuration, and the ticket resolves once the subject has the field.
func TestUnknownFieldOpensConfigTicket(t *testing.T) {
	t.Parallel()
	q := startQueue(t, map[string]bool{"w1": false, "w2": false})
	cfg, subj := queueSubject(t)
	cfg.Mode = ModeObserve
	subj.Invariants[0].Expr = "stuck || overloaded" // the queue reports no "overloaded"
	e := newOp(t, cfg, subj, []string{q.URL}, time.Now)
	e.tick(t)
	ts := e.tickets(t)
	if len(ts) != 1 || ts[0].Key != "operator_config:invariants[0].expr" {
		t.Fatalf("tickets %v; want one operator_config:invariants[0].expr", keys(ts))
	}
	if !strings.Contains(ts[0].Message, `names "overloaded", which none of the 2 entities of workers has`) {
		t.Errorf("message %q does not say which name and observation", ts[0].Message)
	}
	if !strings.Contains(string(ts[0].Diagnosis), "the operator's own configuration") {
		t.Errorf("diagnosis %s does not blame the configuration", ts[0].Diagnosis)
	}
	q.set(func(q *queueService) { q.extra = map[string]any{"overloaded": false} })
	e.tick(t)
	if tk := e.tickets(t)[0]; tk.Status != StatusResolved {
		t.Errorf("config ticket is %s once the subject reports the field; want resolved", tk.Status)
	}
}
