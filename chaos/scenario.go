package chaos

import (
	_ "embed"
	"fmt"
	"path"
	"regexp"

	"github.com/ratelimiter/ratelimiter/chaos/proxy"
	"github.com/ratelimiter/ratelimiter/config"
)

//go:embed scenarios.toml
var defaultScenarios []byte

// Scenario is one experiment: a fault, and what the operator is expected to
// make of it.
type Scenario struct {
	Name        string    `toml:"name" json:"name"`
	Description string    `toml:"description" json:"description"`
	Fault       FaultSpec `toml:"fault" json:"fault"`
	Expect      Expect    `toml:"expect" json:"expect"`
	// DetectWithin bounds the wait for the expected ticket, its diagnosis
	// and its proposal; RecoverWithin bounds the wait for the steady state
	// after the revert (and, when the operator remediates, for the ticket
	// to resolve before it). Hold is how long the control watches.
	DetectWithin  config.Duration `toml:"detect_within" json:"detect_within"`
	RecoverWithin config.Duration `toml:"recover_within" json:"recover_within"`
	Hold          config.Duration `toml:"hold" json:"hold,omitzero"`
}

// Expect is a scenario's expected outcome. An empty Invariant makes the
// scenario a control: it passes only when no ticket opens.
type Expect struct {
	Invariant string `toml:"invariant" json:"invariant,omitempty"`
	// Entity is a glob (path.Match) over ticket entities.
	Entity string `toml:"entity" json:"entity,omitempty"`
	// Diagnosis is a regular expression the diagnosis' summary and root
	// cause must match.
	Diagnosis string `toml:"diagnosis" json:"diagnosis,omitempty"`
	// Action is the action the operator must propose ("" for none), with
	// Params it must carry.
	Action string            `toml:"action" json:"action,omitempty"`
	Params map[string]string `toml:"params" json:"params,omitempty"`
	// Remediates says the operator's own action clears the violation, so
	// the ticket must resolve before the fault is reverted.
	Remediates bool `toml:"remediates" json:"remediates,omitempty"`
}

// FaultSpec says which fault to inject; which fields count depends on Kind.
type FaultSpec struct {
	Kind  string      `toml:"kind" json:"kind"`
	Node  string      `toml:"node" json:"node,omitempty"`  // node_kill, node_pause, node_drain
	Proxy proxy.Fault `toml:"proxy" json:"proxy,omitzero"` // proxy
	Key   string      `toml:"key" json:"key,omitempty"`    // hot_key: the flooded key
	Rate  float64     `toml:"rate" json:"rate,omitempty"`  // hot_key: checks per second
	// limit_set and limit_remove act on the limit of KeyPattern.
	KeyPattern    string `toml:"key_pattern" json:"key_pattern,omitempty"`
	MaxRequests   int64  `toml:"max_requests" json:"max_requests,omitempty"`
	WindowSeconds int64  `toml:"window_seconds" json:"window_seconds,omitempty"`
	// DrainFor, for node_drain, gives the drain an end that far away (a
	// planned maintenance); without it the drain has none (a deploy's).
	DrainFor config.Duration `toml:"drain_for" json:"drain_for,omitzero"`
}

// Scenarios is the TOML file of scenarios: [[scenario]] tables.
type Scenarios struct {
	Scenario []Scenario `toml:"scenario"`
}

// Validate checks every scenario, naming each problem's TOML path.
func (s *Scenarios) Validate() error {
	var p config.Problems
	seen := map[string]bool{}
	for i := range s.Scenario {
		sc := &s.Scenario[i]
		sp := p.Under(fmt.Sprintf("scenario[%d]", i))
		switch {
		case sc.Name == "":
			sp.Add("name", "required")
		case seen[sc.Name]:
			sp.Add("name", "duplicate scenario %q", sc.Name)
		}
		seen[sc.Name] = true
		if err := sc.Fault.validate(); err != nil {
			sp.Merge("fault", err)
		}
		if sc.Fault.DrainFor.Duration < 0 || (sc.Fault.DrainFor.Duration > 0 && sc.Fault.Kind != "node_drain") {
			sp.Add("fault.drain_for", "a positive duration, for node_drain only")
		}
		if sc.Expect.Entity != "" {
			if _, err := path.Match(sc.Expect.Entity, ""); err != nil {
				sp.Add("expect.entity", "invalid glob: %v", err)
			}
		}
		if _, err := regexp.Compile(sc.Expect.Diagnosis); err != nil {
			sp.Add("expect.diagnosis", "invalid regular expression: %v", err)
		}
		if sc.Expect.Invariant == "" && (sc.Expect.Action != "" || sc.Expect.Remediates) {
			sp.Add("expect", "a control (no invariant) expects no action")
		}
		if sc.Expect.Invariant == "" && sc.Hold.Duration <= 0 {
			sp.Add("hold", "a control needs a positive hold")
		}
		if sc.Expect.Invariant != "" && sc.DetectWithin.Duration <= 0 {
			sp.Add("detect_within", "must be positive")
		}
		if sc.RecoverWithin.Duration <= 0 {
			sp.Add("recover_within", "must be positive")
		}
	}
	return p.Err()
}

// LoadScenarios reads a scenarios file; an empty path gives the embedded
// scenarios.toml.
func LoadScenarios(file string) ([]Scenario, error) {
	var s Scenarios
	var err error
	if file == "" {
		err = config.Decode("scenarios.toml (embedded)", defaultScenarios, &s)
	} else {
		err = config.Load(file, &s)
	}
	if err != nil {
		return nil, fmt.Errorf("invalid scenarios:\n%w", err)
	}
	return s.Scenario, nil
}

// Select returns the named scenarios, in the order asked.
func Select(all []Scenario, names []string) ([]Scenario, error) {
	var out []Scenario
	for _, n := range names {
		found := false
		for _, sc := range all {
			if sc.Name == n {
				out = append(out, sc)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("no scenario %q (have %s)", n, scenarioNames(all))
		}
	}
	return out, nil
}

func scenarioNames(all []Scenario) string {
	s := ""
	for i, sc := range all {
		if i > 0 {
			s += ", "
		}
		s += sc.Name
	}
	return s
}
