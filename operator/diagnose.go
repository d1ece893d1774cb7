package operator

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/expr-lang/expr/vm"
)

// Diagnosis is the structured diagnosis of a ticket, from the playbooks or a
// model: summary, root cause, confidence, evidence, alternatives and the
// recommended actions.
type Diagnosis struct {
	Diagnoser string `json:"diagnoser"`
	Summary   string `json:"summary"`
	RootCause string `json:"root_cause"`
	// CauseInvariant and CauseEntity are the root cause in structured form:
	// the invariant and entity the diagnoser holds responsible, which may
	// differ from the ticket's (slow checks on a node caused by Redis).
	CauseInvariant     string           `json:"cause_invariant,omitempty"`
	CauseEntity        string           `json:"cause_entity,omitempty"`
	Confidence         float64          `json:"confidence"`
	Evidence           []string         `json:"evidence"`
	Alternatives       []string         `json:"alternatives"`
	RecommendedActions []Recommendation `json:"recommended_actions"`
	// Error is why a diagnoser failed. On a diagnosis that is otherwise the
	// playbook's, it is why the model's could not be had.
	Error string `json:"error,omitempty"`
	// Diagnoses holds every diagnoser's own result when several ran
	// (diagnoser "both"), side by side; the fields above are then the
	// model's, or the playbook's when the model failed.
	Diagnoses []Diagnosis `json:"diagnoses,omitempty"`
	// Turns and Tokens are what a model's diagnosis cost.
	Turns  int `json:"turns,omitempty"`
	Tokens int `json:"tokens,omitempty"`
}

// Recommendation is an action a diagnoser proposes; it is only a proposal
// until validated against the action's definition and allowed by the mode.
type Recommendation struct {
	Action string         `json:"action"`
	Params map[string]any `json:"params"`
	Reason string         `json:"reason"`
}

// Diagnoser turns a ticket and the current observations into a diagnosis.
// It may only propose: nothing it returns is executed without validation.
type Diagnoser interface {
	Diagnose(ctx context.Context, t Ticket, obs map[string]any) (Diagnosis, error)
}

// rules is the default diagnoser: the subject's playbooks.
type rules struct {
	playbooks map[string][]compiledPlaybook // by invariant, in file order
	invs      map[string]Invariant
	hist      *history
	now       func() time.Time
	tmpl      templates
}

type compiledPlaybook struct {
	Playbook
	when *vm.Program // nil: always
}

func newRules(subj *Subject, tmpl templates, hist *history, now func() time.Time) *rules {
	r := &rules{playbooks: map[string][]compiledPlaybook{}, invs: map[string]Invariant{}, hist: hist, now: now, tmpl: tmpl}
	for _, inv := range subj.Invariants {
		r.invs[inv.Name] = inv
	}
	for _, pb := range subj.Playbooks {
		c := compiledPlaybook{Playbook: pb}
		if pb.When != "" {
			c.when, _ = compileExpr(pb.When) // Validate compiled it already
		}
		r.playbooks[pb.Invariant] = append(r.playbooks[pb.Invariant], c)
	}
	return r
}

// choose returns the first playbook of t's invariant whose when holds.
// when sees what the invariant's expression saw (the entity's fields, the
// observations by name, at/ago/age) and began, when the violation began.
func (r *rules) choose(t Ticket, obs map[string]any) (Playbook, bool, error) {
	var env map[string]any
	for _, pb := range r.playbooks[t.Invariant] {
		if pb.when == nil {
			return pb.Playbook, true, nil
		}
		if env == nil {
			env = r.whenEnv(t, obs)
		}
		out, err := runExpr(pb.when, env)
		if err != nil {
			return Playbook{}, false, fmt.Errorf("playbook %s when: %w", pb.Invariant, err)
		}
		if ok, _ := out.(bool); ok {
			return pb.Playbook, true, nil
		}
	}
	return Playbook{}, false, nil
}

func (r *rules) whenEnv(t Ticket, obs map[string]any) map[string]any {
	now := time.Now
	if r.now != nil {
		now = r.now
	}
	inv := r.invs[t.Invariant]
	env := r.hist.funcs(inv.Over, inv.Entity, t.Entity, now())
	for k, v := range obs {
		env[k] = v
	}
	var el map[string]any
	if json.Unmarshal(t.Observation, &el) == nil {
		for k, v := range el {
			env[k] = v
		}
	}
	env["entity"] = t.Entity
	env["began"] = t.FirstSeen
	return env
}

func (r *rules) Diagnose(_ context.Context, t Ticket, obs map[string]any) (Diagnosis, error) {
	pb, ok, err := r.choose(t, obs)
	if err != nil {
		return Diagnosis{Diagnoser: DiagnoserRules, Summary: t.Message, RootCause: err.Error(),
			CauseInvariant: t.Invariant, CauseEntity: t.Entity, Evidence: []string{t.Message}}, err
	}
	if !ok && t.Invariant == OperatorConfig {
		return Diagnosis{Diagnoser: DiagnoserRules, Summary: t.Message, Confidence: 1, CauseInvariant: t.Invariant, CauseEntity: t.Entity,
			RootCause: "the operator's own configuration, not the subject: an expression names a field the subject does not report " +
				"(a typo, or a field the subject renamed); fix " + t.Entity + " and check it with `operator check --subject-url URL`",
			Evidence: []string{t.Message}}, nil
	}
	if !ok {
		return Diagnosis{Diagnoser: DiagnoserRules, Summary: t.Message, RootCause: "no playbook (or none whose when holds) for " + t.Invariant,
			CauseInvariant: t.Invariant, CauseEntity: t.Entity, Evidence: []string{t.Message}}, nil
	}
	data := templateData(t, obs)
	d := Diagnosis{Diagnoser: DiagnoserRules, Confidence: pb.Confidence, Alternatives: pb.Alternatives,
		CauseInvariant: t.Invariant, CauseEntity: t.Entity}
	if d.Summary, err = r.tmpl.render(pb.Summary, data); err != nil {
		return d, fmt.Errorf("playbook %s summary: %w", pb.Invariant, err)
	}
	if d.RootCause, err = r.tmpl.render(pb.RootCause, data); err != nil {
		return d, fmt.Errorf("playbook %s root_cause: %w", pb.Invariant, err)
	}
	d.Evidence = append([]string{t.Message}, pb.Evidence...)
	for _, pa := range pb.Actions {
		rec := Recommendation{Action: pa.Action, Params: map[string]any{}, Reason: pa.Reason}
		for name, text := range pa.Params {
			v, err := r.tmpl.render(text, data)
			if err != nil {
				return d, fmt.Errorf("playbook %s action %s param %s: %w", pb.Invariant, pa.Action, name, err)
			}
			rec.Params[name] = v
		}
		d.RecommendedActions = append(d.RecommendedActions, rec)
	}
	return d, nil
}

// fallback is the llm diagnoser: the model, or on any failure of it the
// playbook's diagnosis carrying the model's error.
type fallback struct {
	model, rules Diagnoser
}

func (f fallback) Diagnose(ctx context.Context, t Ticket, obs map[string]any) (Diagnosis, error) {
	d, err := f.model.Diagnose(ctx, t, obs)
	if err == nil {
		return d, nil
	}
	rd, rerr := f.rules.Diagnose(ctx, t, obs)
	rd.Error = "llm: " + err.Error()
	rd.Turns, rd.Tokens = d.Turns, d.Tokens
	return rd, rerr
}

// sideBySide is the both diagnoser: the playbook's and the model's
// diagnoses, each kept whole in Diagnoses. The top level is the model's, or
// the playbook's (with the model's error) when the model failed.
type sideBySide struct {
	rules, model Diagnoser
}

func (s sideBySide) Diagnose(ctx context.Context, t Ticket, obs map[string]any) (Diagnosis, error) {
	rd, rerr := s.rules.Diagnose(ctx, t, obs)
	if rerr != nil {
		rd.Error = rerr.Error()
	}
	md, merr := s.model.Diagnose(ctx, t, obs)
	if merr != nil {
		md = Diagnosis{Diagnoser: DiagnoserLLM, Error: merr.Error(), Turns: md.Turns, Tokens: md.Tokens}
	}
	top := md
	if merr != nil {
		top = rd
		top.Error = "llm: " + merr.Error()
	}
	top.Diagnoses = []Diagnosis{rd, md}
	return top, nil
}

// templateData is what playbook templates see: the violating element's
// fields at the top, plus .entity, .invariant, .message and .obs.
func templateData(t Ticket, obs map[string]any) map[string]any {
	data := map[string]any{}
	var el map[string]any
	if json.Unmarshal(t.Observation, &el) == nil {
		for k, v := range el {
			data[k] = v
		}
	}
	data["entity"] = t.Entity
	data["invariant"] = t.Invariant
	data["message"] = t.Message
	data["obs"] = obs
	return data
}
