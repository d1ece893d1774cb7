// Package chaos injects real faults into a running rate-limiter cluster and
// scores how the operator handles them: a TCP fault proxy (chaos/proxy)
// between the nodes and Redis, node kills and pauses, traffic floods and bad
// limits through the real API. It never writes fabricated data into Redis to
// fake a symptom, and every fault it injects it also reverts.
package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/ratelimiter/ratelimiter/operator"
)

// Config of a chaos run.
type Config struct {
	Cluster ClusterConfig // Dir is the run's directory; each scenario gets a subdirectory
	// Steady bounds the wait for the steady state before the fault.
	Steady time.Duration
	// Journal gets one JSON object per step; Timeline gets the same steps
	// as lines a person can follow. Either may be nil.
	Journal  io.Writer
	Timeline io.Writer
}

// Result is one scenario's row of the scorecard.
type Result struct {
	Scenario       string   `json:"scenario"`
	Passed         bool     `json:"passed"`
	Detected       bool     `json:"detected"`
	RightInvariant bool     `json:"right_invariant"`
	RightEntity    bool     `json:"right_entity"`
	RightDiagnosis bool     `json:"right_diagnosis"`
	RightAction    bool     `json:"right_action"`
	Recovered      bool     `json:"recovered"`
	DetectSeconds  float64  `json:"time_to_detect_s,omitempty"`
	RecoverSeconds float64  `json:"time_to_recover_s,omitempty"`
	Tickets        []string `json:"tickets,omitempty"` // invariant:entity of every ticket opened
	// Missed names every deadline the operator missed (detect_within,
	// the remediation before the revert, recover_within), with what was
	// still lacking. A scenario with a missed deadline fails, whatever the
	// columns say by the end of the run.
	Missed  []string `json:"missed,omitempty"`
	Error   string   `json:"error,omitempty"`
	Skipped string   `json:"skipped,omitempty"` // why the scenario did not run
	control bool
}

// Run plays the scenarios one after another, each on a fresh cluster, and
// returns their results. It stops early when ctx ends; the fault of the
// scenario under way is still reverted and its cluster stopped.
func Run(ctx context.Context, cfg Config, scenarios []Scenario) ([]Result, error) {
	return cfg.each(ctx, scenarios, func(sc Scenario, j *journal) Result { return runFresh(ctx, cfg, sc, j) })
}

// Tour plays the scenarios one after another on one running cluster, as
// the demo does. A scenario whose fault the cluster cannot carry (a proxy
// fault on in-process stores) is skipped and says so.
func Tour(ctx context.Context, cfg Config, c *Cluster, scenarios []Scenario) ([]Result, error) {
	return cfg.each(ctx, scenarios, func(sc Scenario, j *journal) Result {
		j.step(sc.Name, "start", sc, "%s", sc.Description)
		return play(ctx, cfg, c, sc, j)
	})
}

func (cfg *Config) each(ctx context.Context, scenarios []Scenario, f func(Scenario, *journal) Result) ([]Result, error) {
	if cfg.Steady <= 0 {
		cfg.Steady = 30 * time.Second
	}
	j := &journal{w: cfg.Journal, tl: cfg.Timeline, t0: time.Now()}
	var results []Result
	for _, sc := range scenarios {
		if ctx.Err() != nil {
			return results, ctx.Err()
		}
		r := f(sc, j)
		results = append(results, r)
		j.step(sc.Name, "result", r, "%s", verdict(r))
	}
	return results, ctx.Err()
}

func verdict(r Result) string {
	if r.Skipped != "" {
		return "SKIPPED: " + r.Skipped
	}
	if r.Passed {
		return "PASS"
	}
	why := append([]string(nil), r.Missed...)
	if r.Error != "" {
		why = append(why, r.Error)
	}
	if len(why) == 0 {
		return "FAIL"
	}
	return "FAIL: " + strings.Join(why, "; ")
}

// runFresh is one scenario from cluster start to cluster stop.
func runFresh(ctx context.Context, cfg Config, sc Scenario, j *journal) Result {
	fail := func(err error) Result {
		return Result{Scenario: sc.Name, control: sc.Expect.Invariant == "", Error: err.Error()}
	}
	cc := cfg.Cluster
	cc.Dir = filepath.Join(cfg.Cluster.Dir, sc.Name)
	if err := os.MkdirAll(cc.Dir, 0o755); err != nil {
		return fail(err)
	}
	if cc.Log == nil {
		cc.Log = quiet
	}
	j.step(sc.Name, "start", sc, "%s", sc.Description)
	c, err := StartCluster(ctx, cc)
	if err != nil {
		return fail(fmt.Errorf("cannot start the cluster: %w", err))
	}
	defer func() {
		c.Close()
		j.step(sc.Name, "stopped", map[string]any{"dir": cc.Dir}, "cluster stopped (logs in %s)", cc.Dir)
	}()
	j.step(sc.Name, "cluster", map[string]any{"redis": c.RedisAddr, "proxy": proxyAddr(c), "nodes": c.URLs(), "pids": c.PIDs()},
		"redis %s behind proxy %s, nodes %v, operator in auto mode", c.RedisAddr, proxyAddr(c), c.URLs())
	return play(ctx, cfg, c, sc, j)
}

// play runs one scenario on a running cluster: steady state, inject, wait
// for the expected outcome, revert (always), steady state again.
func play(ctx context.Context, cfg Config, c *Cluster, sc Scenario, j *journal) (res Result) {
	res = Result{Scenario: sc.Name, control: sc.Expect.Invariant == ""}
	fail := func(err error) Result {
		res.Error = err.Error()
		return res
	}
	fault, err := NewFault(sc.Fault, c)
	if errors.Is(err, ErrNeedsRedis) {
		res.Skipped = ErrNeedsRedis.Error()
		return res
	}
	if err != nil {
		return fail(err)
	}
	w := &watcher{c: c, j: j, scenario: sc.Name}
	if err := waitFor(ctx, cfg.Steady, "steady state", func() error { return c.steady(ctx) }); err != nil {
		return fail(err)
	}
	j.step(sc.Name, "steady", nil, "steady state: every node healthy and connected, load flowing, no ticket open")
	w.since = time.Now()
	t0 := time.Now()
	revert := sync.OnceFunc(func() {
		// The revert runs even when ctx was cancelled (Ctrl-C), with its
		// own bound.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		what, err := fault.Revert(rctx)
		if err != nil {
			j.step(sc.Name, "revert_failed", map[string]any{"error": err.Error()}, "revert failed: %v", err)
			return
		}
		j.step(sc.Name, "revert", map[string]any{"what": what}, "reverted: %s", what)
	})
	defer revert()
	what, err := fault.Inject(ctx)
	if err != nil {
		return fail(fmt.Errorf("cannot inject the fault: %w", err))
	}
	j.step(sc.Name, "inject", map[string]any{"what": what, "fault": sc.Fault}, "injected: %s", what)

	miss := func(deadline string, err error) {
		res.Missed = append(res.Missed, deadline+": "+err.Error())
		j.step(sc.Name, "missed", map[string]any{"deadline": deadline, "error": err.Error()}, "MISSED %s: %v", deadline, err)
	}
	if res.control {
		err = sleep(ctx, sc.Hold.Duration, func() { w.poll(ctx) })
	} else {
		err = waitFor(ctx, sc.DetectWithin.Duration, "the ticket, its diagnosis and its proposal", func() error {
			w.poll(ctx)
			return w.outcome(sc.Expect)
		})
		if err != nil && ctx.Err() == nil {
			miss(fmt.Sprintf("detect_within (%v)", sc.DetectWithin.Duration), err)
		}
		if err == nil && sc.Expect.Remediates {
			err = waitFor(ctx, sc.RecoverWithin.Duration, "the operator's own fix", func() error {
				w.poll(ctx)
				return w.remediated(sc.Expect)
			})
			if err != nil && ctx.Err() == nil {
				miss(fmt.Sprintf("remediation before the revert (recover_within %v)", sc.RecoverWithin.Duration), err)
			}
		}
	}
	if ctx.Err() != nil {
		return fail(errInterrupted)
	}
	revert()

	errSteady := waitFor(ctx, sc.RecoverWithin.Duration, "steady state after the revert", func() error {
		w.poll(ctx)
		return c.steady(ctx)
	})
	if errSteady == nil {
		res.Recovered = true
		res.RecoverSeconds = round1(time.Since(t0).Seconds())
		j.step(sc.Name, "recovered", map[string]any{"after_s": res.RecoverSeconds}, "steady state back %.1f s after the injection", res.RecoverSeconds)
	} else if ctx.Err() != nil {
		res.Error = errInterrupted.Error()
	} else {
		miss(fmt.Sprintf("recover_within (%v)", sc.RecoverWithin.Duration), errSteady)
	}
	w.score(&res, sc.Expect, t0)
	return res
}

// errInterrupted is the result of a scenario whose run was stopped
// (Ctrl-C); its fault was still reverted.
var errInterrupted = errors.New("interrupted (the fault was reverted)")

func proxyAddr(c *Cluster) string {
	if c.Proxy == nil {
		return "(none)"
	}
	return c.Proxy.Addr()
}

// sleep waits d while calling f every 250 ms, or until ctx ends.
func sleep(ctx context.Context, d time.Duration, f func()) error {
	end := time.Now().Add(d)
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for time.Now().Before(end) {
		f()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	f()
	return nil
}

// steady is nil when every node answers, is healthy and connected to its
// store, load reaches every node, and no ticket is open.
func (c *Cluster) steady(ctx context.Context) error {
	var doc struct {
		Nodes []struct {
			ID             string `json:"id"`
			State          string `json:"state"`
			RedisConnected bool   `json:"redis_connected"`
		} `json:"nodes"`
	}
	for _, n := range c.Nodes {
		if err := c.getJSON(ctx, n.URL()+"/api/v1/nodes", &doc); err != nil {
			return fmt.Errorf("%s: %w", n.ID, err)
		}
		if c.Proxy == nil {
			continue // in-process stores: each node knows only itself
		}
		if len(doc.Nodes) != len(c.Nodes) {
			return fmt.Errorf("%s sees %d nodes; want %d", n.ID, len(doc.Nodes), len(c.Nodes))
		}
		for _, m := range doc.Nodes {
			if m.State != "healthy" || !m.RedisConnected {
				return fmt.Errorf("%s sees %s %s (redis_connected=%v)", n.ID, m.ID, m.State, m.RedisConnected)
			}
		}
	}
	if c.cfg.Load > 0 {
		for _, n := range c.Nodes {
			var m struct {
				RequestsPerSecond float64 `json:"requests_per_second"`
			}
			if err := c.getJSON(ctx, n.URL()+"/api/v1/nodes/"+n.ID+"/metrics", &m); err != nil {
				return err
			}
			// Half the node's share of the load: its rolling window has
			// filled, so the operator has seen the steady state a fault is
			// judged against (limit_denies_traffic compares with it).
			if want := c.cfg.Load / float64(len(c.Nodes)) / 2; m.RequestsPerSecond < want {
				return fmt.Errorf("%s serves %.1f checks/s; want at least %.1f", n.ID, m.RequestsPerSecond, want)
			}
		}
	}
	open, err := c.Store.Tickets(ctx, operator.TicketFilter{Unresolved: true})
	if err != nil {
		return err
	}
	if len(open) > 0 {
		return fmt.Errorf("%d ticket(s) open, first %s", len(open), open[0].Key)
	}
	return nil
}

// watcher follows the operator's database during a scenario and reports
// each new ticket, diagnosis, proposal and resolution as it appears.
type watcher struct {
	c        *Cluster
	j        *journal
	scenario string
	since    time.Time

	tickets   map[int64]operator.Ticket
	opened    map[int64]time.Time // when the watcher first saw each ticket
	proposals map[int64]operator.Proposal
	// failed holds why each ticket was escalated (remediation_failed), as
	// soon as the watcher saw it: a later resolution does not undo it.
	failed map[int64]string
}

func (w *watcher) poll(ctx context.Context) {
	if w.tickets == nil {
		w.tickets, w.proposals, w.opened = map[int64]operator.Ticket{}, map[int64]operator.Proposal{}, map[int64]time.Time{}
		w.failed = map[int64]string{}
	}
	ts, err := w.c.Store.Tickets(ctx, operator.TicketFilter{})
	if err != nil {
		return
	}
	for _, t := range ts {
		if t.FirstSeen.Before(w.since) {
			continue
		}
		old, seen := w.tickets[t.ID]
		w.tickets[t.ID] = t
		if !seen {
			w.opened[t.ID] = time.Now()
			w.j.step(w.scenario, "ticket", t, "operator saw: %s [%s %s] %s", t.Key, t.Severity, t.Status, t.Message)
		}
		if len(t.Diagnosis) > 0 && len(old.Diagnosis) == 0 {
			summary, cause := diagnosisText(t.Diagnosis)
			w.j.step(w.scenario, "diagnosis", json.RawMessage(t.Diagnosis), "operator concluded on #%d: %s — %s", t.ID, summary, cause)
		}
		if t.Status == operator.StatusRemediationFailed && w.failed[t.ID] == "" {
			w.failed[t.ID] = "remediation_failed"
		}
		if t.Status == operator.StatusResolved && old.Status != operator.StatusResolved && seen {
			w.j.step(w.scenario, "resolved", map[string]any{"ticket": t.ID, "key": t.Key}, "ticket #%d %s resolved", t.ID, t.Key)
		}
	}
	ps, err := w.c.Store.Proposals(ctx, operator.ProposalFilter{})
	if err != nil {
		return
	}
	for _, p := range ps {
		if _, ok := w.tickets[p.TicketID]; !ok {
			continue
		}
		old, seen := w.proposals[p.ID]
		w.proposals[p.ID] = p
		if !seen || old.Status != p.Status {
			b, _ := json.Marshal(p.Params)
			result := p.Result
			if p.Status == operator.ProposalPending {
				result = "(needs approval: `ratelimiter operator actions approve " + fmt.Sprint(p.ID) + "`)"
			}
			w.j.step(w.scenario, "action", p, "operator action #%d %s %s: %s %s", p.ID, p.Action, b, p.Status, result)
		}
	}
}

// matching are the scenario's tickets with the expected invariant and
// entity.
func (w *watcher) matching(e Expect) []operator.Ticket {
	var out []operator.Ticket
	for _, t := range w.tickets {
		if t.Invariant == e.Invariant && entityMatches(e.Entity, t.Entity) {
			out = append(out, t)
		}
	}
	return out
}

func entityMatches(glob, entity string) bool {
	if glob == "" {
		return true
	}
	ok, _ := path.Match(glob, entity)
	return ok
}

// outcome is nil once the expected ticket is diagnosed and, when an action
// is expected, that action was proposed.
func (w *watcher) outcome(e Expect) error {
	ts := w.matching(e)
	if len(ts) == 0 {
		return fmt.Errorf("no %s ticket for %q yet", e.Invariant, e.Entity)
	}
	for _, t := range ts {
		if len(t.Diagnosis) == 0 {
			continue
		}
		if e.Action == "" || w.proposed(t.ID, e) != nil {
			return nil
		}
	}
	if e.Action != "" {
		return fmt.Errorf("no %s proposed yet", e.Action)
	}
	return errors.New("no diagnosis yet")
}

// remediated is nil once the operator itself executed the expected action
// and every expected ticket has resolved. A ticket that resolved without
// the operator's action (the fault cleared on its own) or after its
// action failed is not a remediation.
func (w *watcher) remediated(e Expect) error {
	ts := w.matching(e)
	if len(ts) == 0 {
		return fmt.Errorf("no %s ticket for %q", e.Invariant, e.Entity)
	}
	for _, t := range ts {
		if w.failed[t.ID] != "" {
			return fmt.Errorf("ticket #%d %s was escalated: %s", t.ID, t.Key, w.failed[t.ID])
		}
		for _, p := range w.proposals {
			if p.TicketID == t.ID && (p.Status == operator.ProposalFailed || p.Status == operator.ProposalVerifyFailed) {
				return fmt.Errorf("ticket #%d %s: action #%d %s %s: %s", t.ID, t.Key, p.ID, p.Action, p.Status, p.Result)
			}
		}
	}
	fixed := false
	for _, t := range ts {
		if p := w.proposed(t.ID, e); p != nil && (p.Status == operator.ProposalSucceeded || p.Status == operator.ProposalVerified) {
			fixed = true
		}
	}
	if !fixed {
		return fmt.Errorf("the operator has not executed %s (proposal %s)", e.Action, w.proposalStatus(ts, e))
	}
	for _, t := range ts {
		if t.Status != operator.StatusResolved {
			return fmt.Errorf("ticket #%d %s is %s", t.ID, t.Key, t.Status)
		}
	}
	return nil
}

// proposalStatus says where the expected proposal of the tickets stands.
func (w *watcher) proposalStatus(ts []operator.Ticket, e Expect) string {
	for _, t := range ts {
		if p := w.proposed(t.ID, e); p != nil {
			return fmt.Sprintf("#%d %s", p.ID, p.Status)
		}
	}
	return "none"
}

// proposed returns the ticket's proposal of the expected action and
// parameters, or nil. Its status does not matter: an action that needs
// approval waits, and one still pending when its ticket resolves is
// skipped; either way the operator proposed the right thing.
func (w *watcher) proposed(ticket int64, e Expect) *operator.Proposal {
	for _, p := range w.proposals {
		if p.TicketID != ticket || p.Action != e.Action {
			continue
		}
		ok := true
		for k, v := range e.Params {
			if fmt.Sprint(p.Params[k]) != v {
				ok = false
			}
		}
		if ok {
			return &p
		}
	}
	return nil
}

// score fills the scorecard columns from what the watcher saw.
func (w *watcher) score(r *Result, e Expect, t0 time.Time) {
	// Detection is the ticket opening, grace period included; the ticket's
	// first_seen is when the violation began, which may be earlier.
	var first time.Time
	for _, t := range w.tickets {
		r.Tickets = append(r.Tickets, t.Key)
		if at := w.opened[t.ID]; first.IsZero() || at.Before(first) {
			first = at
		}
	}
	if r.control {
		r.Detected = len(w.tickets) > 0 // a false alarm
		if r.Detected && r.Error == "" {
			r.Error = "a ticket opened during a control, which expects none"
		}
		r.Passed = !r.Detected && r.Recovered && len(r.Missed) == 0 && r.Error == ""
		return
	}
	r.Detected = len(w.tickets) > 0
	if r.Detected {
		r.DetectSeconds = round1(max(0, first.Sub(t0).Seconds()))
	}
	re, _ := regexp.Compile(e.Diagnosis)
	for _, t := range w.tickets {
		if t.Invariant != e.Invariant {
			continue
		}
		r.RightInvariant = true
		if !entityMatches(e.Entity, t.Entity) {
			continue
		}
		r.RightEntity = true
		if rightDiagnosis(t.Diagnosis, e, re) {
			r.RightDiagnosis = true
		}
		if e.Action == "" {
			r.RightAction = !w.anyAction(t.ID)
		} else if w.proposed(t.ID, e) != nil {
			r.RightAction = true
		}
	}
	r.Passed = passed(r)
}

// passed is the verdict: every column right and no deadline missed. A
// column that came right only after its deadline (a diagnosis that arrived
// once the fault was reverted) does not make a pass.
func passed(r *Result) bool {
	return r.Detected && r.RightInvariant && r.RightEntity && r.RightDiagnosis && r.RightAction && r.Recovered &&
		len(r.Missed) == 0 && r.Error == ""
}

func (w *watcher) anyAction(ticket int64) bool {
	for _, p := range w.proposals {
		if p.TicketID == ticket {
			return true
		}
	}
	return false
}

// storedDiagnosis is the part of a ticket's diagnosis the scorecard reads.
type storedDiagnosis struct {
	Diagnoser      string `json:"diagnoser"`
	Summary        string `json:"summary"`
	RootCause      string `json:"root_cause"`
	CauseInvariant string `json:"cause_invariant"`
	CauseEntity    string `json:"cause_entity"`
}

// diagnosisText takes the summary and root cause out of a stored
// diagnosis.
func diagnosisText(raw json.RawMessage) (summary, cause string) {
	var d storedDiagnosis
	json.Unmarshal(raw, &d)
	return d.Summary, d.RootCause
}

// rightDiagnosis judges a playbook's diagnosis by its text (the scenario's
// regular expression) and a model's by its structured root cause: the
// expected invariant, and an entity the scenario's glob matches. A model's
// wording is its own; its cause_invariant and cause_entity are not.
func rightDiagnosis(raw json.RawMessage, e Expect, re *regexp.Regexp) bool {
	if len(raw) == 0 {
		return false
	}
	var d storedDiagnosis
	if json.Unmarshal(raw, &d) != nil {
		return false
	}
	if d.Diagnoser == "" || d.Diagnoser == "rules" {
		return re.MatchString(d.Summary + "\n" + d.RootCause)
	}
	return d.CauseInvariant == e.Invariant && entityMatches(e.Entity, d.CauseEntity)
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }

// journal writes each step as a JSON line and as a timeline line.
type journal struct {
	mu sync.Mutex
	w  io.Writer
	tl io.Writer
	t0 time.Time
}

func (j *journal) step(scenario, step string, detail any, format string, args ...any) {
	j.mu.Lock()
	defer j.mu.Unlock()
	now := time.Now()
	if j.w != nil {
		b, err := json.Marshal(map[string]any{"at": now.UTC().Format(time.RFC3339Nano), "scenario": scenario, "step": step, "detail": detail})
		if err == nil {
			j.w.Write(append(b, '\n'))
		}
	}
	if j.tl != nil {
		fmt.Fprintf(j.tl, "%7.1fs  %-20s %-10s %s\n", now.Sub(j.t0).Seconds(), scenario, step, fmt.Sprintf(format, args...))
	}
}
