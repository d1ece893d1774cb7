package operator

import (
	"context"
	"encoding/json"
	"fmt"
)

// Diagnosis is the seed's structured diagnosis of a ticket.
type Diagnosis struct {
	Diagnoser          string           `json:"diagnoser"`
	Summary            string           `json:"summary"`
	RootCause          string           `json:"root_cause"`
	Confidence         float64          `json:"confidence"`
	Evidence           []string         `json:"evidence"`
	Alternatives       []string         `json:"alternatives"`
	RecommendedActions []Recommendation `json:"recommended_actions"`
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
	playbooks map[string]Playbook
}

func newRules(subj *Subject) *rules {
	r := &rules{playbooks: map[string]Playbook{}}
	for _, pb := range subj.Playbooks {
		r.playbooks[pb.Invariant] = pb
	}
	return r
}

func (r *rules) Diagnose(_ context.Context, t Ticket, obs map[string]any) (Diagnosis, error) {
	pb, ok := r.playbooks[t.Invariant]
	if !ok {
		return Diagnosis{Diagnoser: "rules", Summary: t.Message, RootCause: "no playbook for " + t.Invariant,
			Evidence: []string{t.Message}}, nil
	}
	data := templateData(t, obs)
	d := Diagnosis{Diagnoser: "rules", Confidence: pb.Confidence, Alternatives: pb.Alternatives}
	var err error
	if d.Summary, err = render(pb.Summary, data); err != nil {
		return d, fmt.Errorf("playbook %s summary: %w", pb.Invariant, err)
	}
	if d.RootCause, err = render(pb.RootCause, data); err != nil {
		return d, fmt.Errorf("playbook %s root_cause: %w", pb.Invariant, err)
	}
	d.Evidence = append([]string{t.Message}, pb.Evidence...)
	for _, pa := range pb.Actions {
		rec := Recommendation{Action: pa.Action, Params: map[string]any{}, Reason: pa.Reason}
		for name, text := range pa.Params {
			v, err := render(text, data)
			if err != nil {
				return d, fmt.Errorf("playbook %s action %s param %s: %w", pb.Invariant, pa.Action, name, err)
			}
			rec.Params[name] = v
		}
		d.RecommendedActions = append(d.RecommendedActions, rec)
	}
	return d, nil
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
