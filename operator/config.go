// Package operator watches a subject system over HTTP (and optionally
// Prometheus), opens tickets for violated invariants, diagnoses them and
// proposes, validates and (by mode) executes actions, with every step in an
// audit log. It is subject-agnostic: all it knows of a subject comes from
// TOML. It must not import the node package.
package operator

import (
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/ratelimiter/ratelimiter/config"
)

// Modes say what the operator may execute.
const (
	ModeObserve = "observe" // never execute
	ModeApprove = "approve" // every action waits for approval
	ModeAuto    = "auto"    // execute what does not require approval
)

// Config is the [operator] section.
type Config struct {
	Subject  string          `toml:"subject"`
	DB       string          `toml:"db"`
	Interval config.Duration `toml:"interval"`
	Mode     string          `toml:"mode"`
	// Safety limits on executed actions.
	MaxActionsPerTicket int `toml:"max_actions_per_ticket"`
	MaxActionsPerHour   int `toml:"max_actions_per_hour"`
	// VerifyWithin: after an action the violation must clear within this,
	// else the remediation failed and the ticket is escalated.
	VerifyWithin config.Duration `toml:"verify_within"`
	// Lease: how long a running operator holds the DB before another may
	// take over; two operators never act on one DB at once.
	Lease config.Duration `toml:"lease"`
	// ApprovalTTL: an approval not executed within this expires; a fresh
	// one is needed, against the state of then.
	ApprovalTTL config.Duration `toml:"approval_ttl"`
	// Diagnoser picks who diagnoses a new ticket: DiagnoserRules,
	// DiagnoserLLM or DiagnoserBoth. The model ones need LLM.
	Diagnoser string    `toml:"diagnoser"`
	LLM       LLMConfig `toml:"llm"`
	// Webhook gets opened, escalated and resolved tickets (notify.go).
	Webhook WebhookConfig `toml:"webhook"`
}

// Diagnosers.
const (
	DiagnoserRules = "rules" // the subject's playbooks
	DiagnoserLLM   = "llm"   // a model; on any failure the playbooks, with the error on the ticket
	DiagnoserBoth  = "both"  // both, stored side by side on the ticket; proposals from both
)

// LLMConfig is [operator.llm]: the model that diagnoses when Diagnoser is
// llm or both, and the guard rails around it.
type LLMConfig struct {
	Provider string `toml:"provider"` // anthropic, or openai for any OpenAI-compatible endpoint
	BaseURL  string `toml:"base_url"` // "" is the provider's public endpoint
	Model    string `toml:"model"`
	// APIKeyEnv names the environment variable that holds the key; the key
	// itself is never in a file. Empty sends no key (a local server).
	APIKeyEnv string `toml:"api_key_env"`
	// MaxTurns bounds the model calls for one ticket; Timeout the whole
	// diagnosis of one ticket (the loop waits for it).
	MaxTurns int             `toml:"max_turns"`
	Timeout  config.Duration `toml:"timeout"`
	// MaxTokens caps one answer; MaxTokensPerTicket every call of one
	// diagnosis (input and output); MaxTokensPerHour all diagnoses, counted
	// from the audit log so a restart does not reset it.
	MaxTokens          int `toml:"max_tokens"`
	MaxTokensPerTicket int `toml:"max_tokens_per_ticket"`
	MaxTokensPerHour   int `toml:"max_tokens_per_hour"`
	// Redact: a JSON field whose name contains one of these (any case) has
	// its value replaced before anything is sent to the model.
	Redact []string `toml:"redact"`
	// MaxRisk is the highest risk level of an action the model may propose.
	// EntityBoundRisk: from this risk level up, a model's proposal must name
	// the ticket's entity in a parameter ("none" turns the check off), so
	// text planted in observed data cannot steer a drastic action at
	// something else.
	MaxRisk         string `toml:"max_risk"`
	EntityBoundRisk string `toml:"entity_bound_risk"`
}

// DefaultLLMConfig is [operator.llm]'s defaults (no provider: unused).
func DefaultLLMConfig() LLMConfig {
	return LLMConfig{MaxTurns: 8, Timeout: config.Duration{Duration: 60 * time.Second}, MaxTokens: 2048,
		MaxTokensPerTicket: 60000, MaxTokensPerHour: 500000,
		Redact:  []string{"token", "secret", "password", "passwd", "authorization", "api_key", "apikey", "credential", "private_key", "cookie"},
		MaxRisk: "high", EntityBoundRisk: "high"}
}

// DefaultConfig is the [operator] section's defaults.
func DefaultConfig() Config {
	return Config{Subject: "ratelimiter", DB: "operator.db", Interval: config.Duration{Duration: 5 * time.Second},
		Mode: ModeObserve, MaxActionsPerTicket: 3, MaxActionsPerHour: 20,
		VerifyWithin: config.Duration{Duration: time.Minute}, Lease: config.Duration{Duration: 30 * time.Second},
		ApprovalTTL: config.Duration{Duration: time.Hour}, Diagnoser: DiagnoserRules, LLM: DefaultLLMConfig(),
		Webhook: DefaultWebhookConfig()}
}

// Subject is everything the operator knows about one system.
type Subject struct {
	BaseURLs []string `toml:"base_urls"` // tried in order; the first that answers wins
	// CredentialsEnv names the environment variable holding the bearer token
	// sent with actions. The token itself never appears in a file, the DB
	// or a log.
	CredentialsEnv string          `toml:"credentials_env"`
	Timeout        config.Duration `toml:"timeout"`
	PrometheusURL  string          `toml:"prometheus_url"`
	Observations   []Observation   `toml:"observations"`
	Lookups        []Lookup        `toml:"lookups"`
	Actions        []Action        `toml:"actions"`
	SLOs           []SLO           `toml:"slos"`
	Invariants     []Invariant     `toml:"invariants"`
	Playbooks      []Playbook      `toml:"playbooks"`
}

// Observation is one thing the operator reads: an HTTP GET (Path, then the
// JSON value at Field) or a PromQL instant query. ForEach repeats the GET
// once per element of an earlier observation, filling {field} placeholders
// of Path from that element (e.g. /api/v1/nodes/{id}/metrics). Expr, when
// set, derives the observation's value from the fetched one (an expr-lang
// expression where `it` is the fetched value and other observations are
// visible by name).
type Observation struct {
	Name        string `toml:"name"`
	Description string `toml:"description"`
	Path        string `toml:"path"`
	Field       string `toml:"field"`
	ForEach     string `toml:"for_each"`
	PromQL      string `toml:"promql"`
	Expr        string `toml:"expr"`
	// Fields declares the fields of the value (of each element, for a
	// list), so that `operator check` rejects an expression naming one it
	// does not have. Without it the names are checked against a live
	// sample (--subject-url) and at run time.
	Fields []string `toml:"fields"`
}

// Lookup is a read made only on demand, with parameters: the LLM
// diagnoser gets each as a tool (one key's counter, say); the loop never
// makes it. It is always a GET: Path's {param} placeholders are filled with
// the validated, URL-escaped parameters, and Field is taken from the
// answer, as for an observation.
type Lookup struct {
	Name        string           `toml:"name"`
	Description string           `toml:"description"`
	Path        string           `toml:"path"`
	Field       string           `toml:"field"`
	Params      map[string]Param `toml:"params"`
}

// Param is one typed action or lookup parameter.
type Param struct {
	Type        string   `toml:"type"` // string, int, float, bool, duration
	Required    bool     `toml:"required"`
	Default     any      `toml:"default"`
	Min         *float64 `toml:"min"`
	Max         *float64 `toml:"max"`
	Pattern     string   `toml:"pattern"` // a regexp a string must match
	Description string   `toml:"description"`
}

// Action is what the operator may do to a subject (description, typed
// parameters, risk, approval) plus how to perform it over HTTP.
// Path and Body are Go templates over the validated parameters; in Path
// every value is URL-escaped, in Body JSON-encoded (use {{json .x}}).
type Action struct {
	Name        string           `toml:"name"`
	Description string           `toml:"description"`
	Method      string           `toml:"method"`
	Path        string           `toml:"path"`
	Body        string           `toml:"body"`
	Params      map[string]Param `toml:"params"`
	RiskLevel   string           `toml:"risk_level"` // low, medium, high
	// RequiresApproval unset means: a high-risk action waits for approval,
	// others do not. Running a high-risk action unapproved in auto mode
	// takes an explicit requires_approval = false.
	RequiresApproval *bool `toml:"requires_approval"`
}

// NeedsApproval says whether the action waits for approval in auto mode.
func (a *Action) NeedsApproval() bool {
	if a.RequiresApproval != nil {
		return *a.RequiresApproval
	}
	return a.RiskLevel == "high"
}

// SLO is an objective evaluated and reported every loop: Expr computes the
// current value from the observations; the SLO is met when the value is at
// most Target (Objective "max") or at least Target ("min").
type SLO struct {
	Name        string          `toml:"name"`
	Description string          `toml:"description"`
	Expr        string          `toml:"expr"`
	Target      float64         `toml:"target"`
	Unit        string          `toml:"unit"`
	Objective   string          `toml:"objective"`
	GracePeriod config.Duration `toml:"grace_period"` // out of target this long before it counts
	// Goal is the share of Window (percent) the SLO must be met; the rest
	// is its error budget. Defaults: 99.9 over 30 days.
	Goal   float64         `toml:"goal"`
	Window config.Duration `toml:"window"`
}

// Invariant is a condition that must not hold for long. Over names an
// observation whose value is a list: each element is one entity, named by
// its Entity field, and Expr (expr-lang, true = violated) sees the
// element's fields plus every observation by name. With Over empty, Expr is
// evaluated once for the subject as a whole.
type Invariant struct {
	Name          string          `toml:"name"`
	Description   string          `toml:"description"`
	Over          string          `toml:"over"`
	Entity        string          `toml:"entity"`
	Expr          string          `toml:"expr"`
	GracePeriod   config.Duration `toml:"grace_period"`    // true this long before it fires (Prometheus "for")
	KeepFiringFor config.Duration `toml:"keep_firing_for"` // false this long before it clears (flap damping)
	Severity      string          `toml:"severity"`        // info, warning, critical
	Message       string          `toml:"message"`         // Go template over the element (and .entity)
}

// Playbook is the rule-based diagnosis of one invariant: its texts are Go
// templates over the violation; its actions' parameters too.
type Playbook struct {
	Invariant string `toml:"invariant"`
	// When, an expression, picks among several playbooks of one invariant:
	// the first whose when holds (or has none) diagnoses. It sees what the
	// invariant's expression sees, plus began, when the violation began.
	When         string           `toml:"when"`
	Summary      string           `toml:"summary"`
	RootCause    string           `toml:"root_cause"`
	Confidence   float64          `toml:"confidence"`
	Evidence     []string         `toml:"evidence"`
	Alternatives []string         `toml:"alternatives"`
	Actions      []PlaybookAction `toml:"actions"`
}

// PlaybookAction is a recommended action with templated parameters.
type PlaybookAction struct {
	Action string            `toml:"action"`
	Params map[string]string `toml:"params"`
	Reason string            `toml:"reason"`
}

// SubjectUnreachable is the built-in invariant opened when an observation
// fails; a subject may define it to set its severity, message and playbook.
const SubjectUnreachable = "subject_unreachable"

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// reservedNames mean something in every expression; an observation by one
// of these names would hide it.
var reservedNames = map[string]bool{"at": true, "ago": true, "age": true, "entity": true, "began": true, "it": true}

// Validate reports every problem of the [operator] section.
func (c *Config) Validate() error {
	var p config.Problems
	if c.Subject == "" {
		p.Add("subject", "must name a subject under [subjects]")
	}
	if c.DB == "" {
		p.Add("db", "must not be empty")
	}
	if c.Interval.Duration <= 0 {
		p.Add("interval", "must be positive")
	}
	if !validMode(c.Mode) {
		p.Add("mode", "must be observe, approve or auto, got %q", c.Mode)
	}
	if c.MaxActionsPerTicket < 1 {
		p.Add("max_actions_per_ticket", "must be at least 1")
	}
	if c.MaxActionsPerHour < 1 {
		p.Add("max_actions_per_hour", "must be at least 1")
	}
	if c.VerifyWithin.Duration <= 0 {
		p.Add("verify_within", "must be positive")
	}
	if c.Lease.Duration <= 0 {
		p.Add("lease", "must be positive")
	}
	c.Webhook.validate(p.Under("webhook"))
	if c.ApprovalTTL.Duration < 0 {
		p.Add("approval_ttl", "must not be negative (0 means 1h)")
	}
	switch c.Diagnoser {
	case DiagnoserRules, "": // "" for a Config built in Go without DefaultConfig
		if c.LLM.Provider != "" {
			c.LLM.validate(p.Under("llm"))
		}
	case DiagnoserLLM, DiagnoserBoth:
		c.LLM.validate(p.Under("llm"))
	default:
		p.Add("diagnoser", "must be rules, llm or both, got %q", c.Diagnoser)
	}
	return p.Err()
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

var riskRank = map[string]int{"low": 1, "medium": 2, "high": 3}

func (l *LLMConfig) validate(p *config.Problems) {
	switch l.Provider {
	case "anthropic", "openai":
	case "":
		p.Add("provider", "the llm and both diagnosers need a provider: anthropic or openai")
	default:
		p.Add("provider", "must be anthropic or openai (any OpenAI-compatible endpoint), got %q", l.Provider)
	}
	if l.Model == "" {
		p.Add("model", "must name the model")
	}
	if l.BaseURL != "" {
		if u, err := url.Parse(l.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p.Add("base_url", "%q is not an http(s) URL", l.BaseURL)
		}
	}
	switch {
	case l.APIKeyEnv == "" && l.Provider == "anthropic":
		p.Add("api_key_env", "anthropic needs a key: name the environment variable that holds it")
	case l.APIKeyEnv != "" && !envNameRE.MatchString(l.APIKeyEnv):
		p.Add("api_key_env", "must be the name of an environment variable, not the key itself")
	}
	if l.MaxTurns < 1 {
		p.Add("max_turns", "must be at least 1")
	}
	if l.Timeout.Duration <= 0 {
		p.Add("timeout", "must be positive")
	}
	if l.MaxTokens < 1 {
		p.Add("max_tokens", "must be at least 1")
	}
	if l.MaxTokensPerTicket < l.MaxTokens {
		p.Add("max_tokens_per_ticket", "must be at least max_tokens (%d)", l.MaxTokens)
	}
	if l.MaxTokensPerHour < l.MaxTokensPerTicket {
		p.Add("max_tokens_per_hour", "must be at least max_tokens_per_ticket (%d)", l.MaxTokensPerTicket)
	}
	for i, f := range l.Redact {
		if strings.TrimSpace(f) == "" {
			p.Add(fmt.Sprintf("redact[%d]", i), "must not be empty")
		}
	}
	if riskRank[l.MaxRisk] == 0 {
		p.Add("max_risk", "must be low, medium or high, got %q", l.MaxRisk)
	}
	if riskRank[l.EntityBoundRisk] == 0 && l.EntityBoundRisk != "none" {
		p.Add("entity_bound_risk", "must be low, medium, high or none, got %q", l.EntityBoundRisk)
	}
}

func validMode(m string) bool { return m == ModeObserve || m == ModeApprove || m == ModeAuto }

// Validate reports every problem of a subject: names, references between
// observations, invariants, playbooks and actions, and that every
// expression and template compiles.
func (s *Subject) Validate() error {
	var p config.Problems
	if len(s.BaseURLs) == 0 {
		p.Add("base_urls", "at least one base URL is needed")
	}
	for i, u := range s.BaseURLs {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			p.Add(fmt.Sprintf("base_urls[%d]", i), "%q is not an http(s) URL", u)
		}
	}
	if s.Timeout.Duration < 0 {
		p.Add("timeout", "must not be negative (0 means 2s)")
	}
	obs := map[string]bool{}
	for i, o := range s.Observations {
		at := p.Under(fmt.Sprintf("observations[%d]", i))
		checkName(at, o.Name, obs)
		if reservedNames[o.Name] {
			at.Add("name", "%q is reserved in expressions (at, ago, age, entity, began, it)", o.Name)
		}
		switch {
		case (o.Path == "") == (o.PromQL == ""):
			at.Add("path", "give exactly one of path and promql")
		case o.PromQL != "" && s.PrometheusURL == "":
			at.Add("promql", "needs prometheus_url on the subject")
		}
		if o.ForEach != "" && !obs[o.ForEach] {
			at.Add("for_each", "%q is not an observation defined before this one", o.ForEach)
		}
		if o.Expr != "" {
			if err := checkExpr(o.Expr); err != nil {
				at.Add("expr", "%v", err)
			}
		}
	}
	lookups := map[string]bool{}
	for i, l := range s.Lookups {
		at := p.Under(fmt.Sprintf("lookups[%d]", i))
		checkName(at, l.Name, lookups)
		if l.Path == "" || l.Path[0] != '/' {
			at.Add("path", "must start with /")
		}
		checkParams(at, l.Params)
		for _, m := range placeholder.FindAllStringSubmatch(l.Path, -1) {
			if _, ok := l.Params[m[1]]; !ok {
				at.Add("path", "{%s} is not a parameter of this lookup", m[1])
			}
		}
		for _, n := range sortedKeys(l.Params) {
			if !strings.Contains(l.Path, "{"+n+"}") {
				at.Add("params."+n, "is not used in path")
			}
		}
	}
	actions := map[string]*Action{}
	for i := range s.Actions {
		a := &s.Actions[i]
		at := p.Under(fmt.Sprintf("actions[%d]", i))
		checkName(at, a.Name, map[string]bool{})
		if actions[a.Name] != nil {
			at.Add("name", "duplicates another action")
		}
		actions[a.Name] = a
		switch a.Method {
		case "GET", "POST", "PUT", "PATCH", "DELETE":
		default:
			at.Add("method", "must be GET, POST, PUT, PATCH or DELETE, got %q", a.Method)
		}
		if a.Path == "" || a.Path[0] != '/' {
			at.Add("path", "must start with /")
		}
		switch a.RiskLevel {
		case "low", "medium", "high":
		default:
			at.Add("risk_level", "must be low, medium or high, got %q", a.RiskLevel)
		}
		checkParams(at, a.Params)
		for _, t := range []struct{ field, text string }{{"path", a.Path}, {"body", a.Body}} {
			if _, err := parseTemplate(t.text); err != nil {
				at.Add(t.field, "%v", err)
			}
		}
	}
	for i, o := range s.SLOs {
		at := p.Under(fmt.Sprintf("slos[%d]", i))
		checkName(at, o.Name, map[string]bool{})
		if err := checkExpr(o.Expr); err != nil {
			at.Add("expr", "%v", err)
		}
		if o.Goal < 0 || o.Goal >= 100 {
			at.Add("goal", "must be a percentage below 100 (0 means 99.9), got %g", o.Goal)
		}
		if o.Window.Duration < 0 || (o.Window.Duration > 0 && o.Window.Duration < 6*time.Hour) {
			at.Add("window", "must be at least 6h, the longest burn-rate window (0 means 30 days)")
		}
		if o.GracePeriod.Duration < 0 {
			at.Add("grace_period", "must not be negative")
		}
		if o.Objective != "max" && o.Objective != "min" {
			at.Add("objective", "must be max (value <= target) or min (value >= target), got %q", o.Objective)
		}
	}
	invs := map[string]bool{}
	for i, inv := range s.Invariants {
		at := p.Under(fmt.Sprintf("invariants[%d]", i))
		checkName(at, inv.Name, invs)
		if inv.Name == SubjectUnreachable {
			if inv.Expr != "" || inv.Over != "" {
				at.Add("expr", "subject_unreachable is built in: give only its severity, message and timings")
			}
		} else {
			if inv.Over != "" && !obs[inv.Over] {
				at.Add("over", "%q is not an observation", inv.Over)
			}
			if inv.Over != "" && inv.Entity == "" {
				at.Add("entity", "must name the field that identifies each element of %q", inv.Over)
			}
			if err := checkExpr(inv.Expr); err != nil {
				at.Add("expr", "%v", err)
			}
		}
		switch inv.Severity {
		case "info", "warning", "critical":
		default:
			at.Add("severity", "must be info, warning or critical, got %q", inv.Severity)
		}
		if inv.GracePeriod.Duration < 0 || inv.KeepFiringFor.Duration < 0 {
			at.Add("grace_period", "durations must not be negative")
		}
		if _, err := parseTemplate(inv.Message); err != nil {
			at.Add("message", "%v", err)
		}
	}
	for i, pb := range s.Playbooks {
		at := p.Under(fmt.Sprintf("playbooks[%d]", i))
		if !invs[pb.Invariant] && pb.Invariant != SubjectUnreachable {
			at.Add("invariant", "%q is not an invariant of this subject", pb.Invariant)
		}
		if pb.When != "" {
			if err := checkExpr(pb.When); err != nil {
				at.Add("when", "%v", err)
			}
		}
		if pb.Confidence < 0 || pb.Confidence > 1 {
			at.Add("confidence", "must be between 0 and 1")
		}
		for _, t := range []struct{ field, text string }{{"summary", pb.Summary}, {"root_cause", pb.RootCause}} {
			if _, err := parseTemplate(t.text); err != nil {
				at.Add(t.field, "%v", err)
			}
		}
		for j, pa := range pb.Actions {
			aat := at.Under(fmt.Sprintf("actions[%d]", j))
			a := actions[pa.Action]
			if a == nil {
				aat.Add("action", "%q is not an action of this subject", pa.Action)
				continue
			}
			for n, text := range pa.Params {
				if _, ok := a.Params[n]; !ok {
					aat.Add("params."+n, "action %q has no parameter %q", a.Name, n)
				}
				if _, err := parseTemplate(text); err != nil {
					aat.Add("params."+n, "%v", err)
				}
			}
		}
	}
	if err := s.CheckNames(nil); err != nil {
		p.Merge("", err)
	}
	return p.Err()
}

func checkParams(at *config.Problems, params map[string]Param) {
	for _, n := range sortedKeys(params) {
		pp := params[n]
		pat := at.Under("params." + n)
		switch pp.Type {
		case "string", "int", "float", "bool", "duration":
		default:
			pat.Add("type", "must be string, int, float, bool or duration, got %q", pp.Type)
		}
		if pp.Pattern != "" {
			if _, err := regexp.Compile(pp.Pattern); err != nil {
				pat.Add("pattern", "%v", err)
			}
		}
		if pp.Default != nil {
			if _, err := coerce(pp, pp.Default); err != nil {
				pat.Add("default", "%v", err)
			}
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// maxNameLen keeps names short enough to name a model's tool ("lookup_"
// plus the name within the 64 characters both providers allow).
const maxNameLen = 48

func checkName(p *config.Problems, name string, seen map[string]bool) {
	if !nameRE.MatchString(name) {
		p.Add("name", "%q must be lower_snake_case", name)
	}
	if len(name) > maxNameLen {
		p.Add("name", "%q is longer than %d characters", name, maxNameLen)
	}
	if seen[name] {
		p.Add("name", "%q is defined twice", name)
	}
	seen[name] = true
}
