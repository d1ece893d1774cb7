package operator

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/expr-lang/expr/vm"
)

// evaluator turns observations into violations. Its timers implement
// grace_period (a condition must hold that long before it fires, like
// Prometheus' "for") and keep_firing_for (a firing condition must stay
// false that long before it clears, so a flapping one stays one ticket).
// The timers are saved in the store each loop, so a restart neither loses
// a pending grace period nor starts it over.
type evaluator struct {
	invariants []compiledInvariant
	timers     map[string]Timer
	hist       *history // recent observations, for at/ago/age
	tmpl       templates
}

type compiledInvariant struct {
	Invariant
	prog *vm.Program
	path string    // its TOML path under the subject, for configuration tickets
	used usedNames // the names its expression reads
}

func newEvaluator(subj *Subject, tmpl templates, timers map[string]Timer, interval time.Duration) (*evaluator, error) {
	e := &evaluator{timers: timers, hist: newHistory(interval), tmpl: tmpl}
	if e.timers == nil {
		e.timers = map[string]Timer{}
	}
	for i, inv := range subj.Invariants {
		if inv.Name == SubjectUnreachable {
			continue
		}
		prog, err := compileExpr(inv.Expr)
		if err != nil {
			return nil, fmt.Errorf("invariant %s: %w", inv.Name, err)
		}
		used, err := exprNames(inv.Expr)
		if err != nil {
			return nil, fmt.Errorf("invariant %s: %w", inv.Name, err)
		}
		e.invariants = append(e.invariants, compiledInvariant{Invariant: inv, prog: prog, used: used,
			path: fmt.Sprintf("invariants[%d].expr", i)})
	}
	return e, nil
}

// outcome of one evaluation: violations past their grace period, and the
// keys that are only being kept firing (no new data, but not cleared).
type evaluation struct {
	firing  []Violation
	holding map[string]bool
	errs    []error
	// config are violations of the operator's own configuration: an
	// expression naming a field that no observed entity has, which would
	// otherwise be false forever.
	config []Violation
}

// OperatorConfig is the built-in invariant of the operator's own
// configuration: its tickets say an invariant cannot work as written.
const OperatorConfig = "operator_config"

// unknownFields returns the names inv's expression reads that neither an
// observation, "entity", nor any of its entities has. With no entity there
// is nothing to judge by.
func (inv compiledInvariant) unknownFields(obs map[string]any, cs []candidate) []string {
	if inv.Over == "" || len(cs) == 0 {
		return nil
	}
	var out []string
	for _, id := range inv.used.idents {
		if _, ok := obs[id]; ok || id == "entity" || slices.Contains(historyNames, id) {
			continue
		}
		found := false
		for _, c := range cs {
			if m, ok := c.element.(map[string]any); ok {
				if _, ok := m[id]; ok {
					found = true
					break
				}
			}
		}
		if !found && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

func (e *evaluator) evaluate(obs map[string]any, now time.Time) evaluation {
	ev := evaluation{holding: map[string]bool{}}
	seen := map[string]bool{}
	for _, inv := range e.invariants {
		cs := candidates(inv, obs, e.hist, now)
		if unknown := inv.unknownFields(obs, cs); len(unknown) > 0 {
			ev.config = append(ev.config, Violation{Invariant: OperatorConfig, Entity: inv.path, Severity: "warning", Since: now,
				Message: fmt.Sprintf("invariant %s (%s) names %s, which none of the %d entities of %s has: it cannot fire until the configuration is fixed",
					inv.Name, inv.path, quoteJoin(unknown), len(cs), inv.Over)})
		}
		for _, c := range cs {
			if len(c.entity) > maxEntityBytes {
				ev.errs = append(ev.errs, fmt.Errorf("invariant %s: an entity of %d bytes (%q…), more than maxEntityBytes (%d): left out",
					inv.Name, len(c.entity), c.entity[:32], maxEntityBytes))
				continue
			}
			key := inv.Name + ":" + c.entity
			seen[key] = true
			out, err := runExpr(inv.prog, c.env)
			if err != nil {
				ev.errs = append(ev.errs, fmt.Errorf("invariant %s, entity %q: %w", inv.Name, c.entity, err))
				continue
			}
			violated, ok := out.(bool)
			if !ok {
				ev.errs = append(ev.errs, fmt.Errorf("invariant %s: expression gave %T, want bool", inv.Name, out))
				continue
			}
			v, state := e.step(inv.Invariant, key, violated, now)
			switch state {
			case stepFiring:
				v.Entity = c.entity
				v.Message = e.message(inv.Invariant, c)
				v.Observation = snapshot(c.element)
				ev.firing = append(ev.firing, v)
			case stepHolding:
				ev.holding[key] = true
			}
		}
	}
	// Entities no longer observed (a node forgotten, a key gone cold) count
	// as false.
	for key, t := range e.timers {
		if !seen[key] && !isUnreachable(key) {
			inv := e.find(key)
			if _, state := e.step(inv, key, false, now); state == stepHolding {
				ev.holding[key] = true
			}
			_ = t
		}
	}
	sort.Slice(ev.firing, func(i, j int) bool { return ev.firing[i].Key() < ev.firing[j].Key() })
	return ev
}

const (
	stepQuiet   = iota // not violated, or still within its grace period
	stepFiring         // violated past its grace period
	stepHolding        // cleared, but within keep_firing_for
)

// step advances key's timer with this evaluation's result.
func (e *evaluator) step(inv Invariant, key string, violated bool, now time.Time) (Violation, int) {
	t, ok := e.timers[key]
	if violated {
		if !ok {
			t = Timer{Key: key, Since: now}
		}
		t.LastTrue = now
		if now.Sub(t.Since) >= inv.GracePeriod.Duration {
			t.Firing = true
		}
		e.timers[key] = t
		if t.Firing {
			return Violation{Invariant: inv.Name, Severity: inv.Severity, Since: t.Since}, stepFiring
		}
		return Violation{}, stepQuiet
	}
	if ok && t.Firing && now.Sub(t.LastTrue) < inv.KeepFiringFor.Duration {
		return Violation{}, stepHolding
	}
	delete(e.timers, key)
	return Violation{}, stepQuiet
}

func (e *evaluator) find(key string) Invariant {
	for _, inv := range e.invariants {
		if len(key) > len(inv.Name) && key[:len(inv.Name)+1] == inv.Name+":" {
			return inv.Invariant
		}
	}
	return Invariant{}
}

func isUnreachable(key string) bool { return key == SubjectUnreachable+":" }

// candidate is one entity an invariant is evaluated for.
type candidate struct {
	entity  string
	element any
	env     map[string]any
}

// candidates lists the entities of inv: the elements of its observation,
// each seen with its own fields on top of the observations by name.
func candidates(inv compiledInvariant, obs map[string]any, hist *history, now time.Time) []candidate {
	base := func(entity string) map[string]any {
		env := hist.funcs(inv.Over, inv.Entity, entity, now)
		for k, v := range obs {
			env[k] = v
		}
		return env
	}
	if inv.Over == "" {
		return []candidate{{entity: "", element: obs, env: base("")}}
	}
	list, _ := obs[inv.Over].([]any)
	out := make([]candidate, 0, len(list))
	for _, el := range list {
		m, _ := el.(map[string]any)
		entity := fmt.Sprint(m[inv.Entity])
		env := base(entity)
		for k, v := range m {
			env[k] = v
		}
		env["entity"] = entity
		out = append(out, candidate{entity: entity, element: el, env: env})
	}
	return out
}

// What a ticket keeps of an entity, stored on every update, sent in every
// notification and shown on the status page, whatever the subject answers.
const (
	// maxEntityBytes bounds an entity's name, part of the ticket's key: it
	// names a node or a rate-limit key, and a key is at most 512 bytes. A
	// longer one is left out of the evaluation, with an error.
	maxEntityBytes = 512
	// maxMessageBytes bounds a rendered message, a line for a human: longer
	// is cut.
	maxMessageBytes = 2048
	// maxSnapshotBytes bounds the snapshot of the entity kept on the
	// ticket (an element of the shipped subject is under 1 KiB; an
	// invariant with no over snapshots the whole observation): a larger one
	// is replaced by a note of its size.
	maxSnapshotBytes = 64 << 10
)

// snapshot is v as JSON for a ticket, within maxSnapshotBytes.
func snapshot(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	if len(b) > maxSnapshotBytes {
		b, _ = json.Marshal(map[string]any{"omitted": fmt.Sprintf("%d bytes, more than maxSnapshotBytes (%d)", len(b), maxSnapshotBytes)})
	}
	return b
}

// message renders the invariant's message, within maxMessageBytes; a
// broken template still gives a useful line.
func (e *evaluator) message(inv Invariant, c candidate) string {
	if inv.Message == "" {
		return fmt.Sprintf("%s violated for %q", inv.Name, c.entity)
	}
	data := map[string]any{}
	if m, ok := c.element.(map[string]any); ok {
		for k, v := range m {
			data[k] = v
		}
	}
	data["entity"] = c.entity
	s, err := e.tmpl.render(inv.Message, data)
	if err != nil {
		return fmt.Sprintf("%s violated for %q (message template failed: %v)", inv.Name, c.entity, err)
	}
	if len(s) > maxMessageBytes {
		s = strings.ToValidUTF8(s[:maxMessageBytes], "") + "…"
	}
	return s
}

// unreachable steps the built-in subject_unreachable invariant.
func (e *evaluator) unreachable(inv Invariant, failed bool, now time.Time) (Violation, int) {
	return e.step(inv, SubjectUnreachable+":", failed, now)
}
