package operator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Operator runs the monitor loop for one subject.
type Operator struct {
	cfg   Config
	subj  *Subject
	store *Store
	log   *slog.Logger
	now   func() time.Time
	owner string // lease holder name

	obs      *observer
	sloProgs programs  // every SLO's expr, compiled once
	tmpl     templates // every template of the subject, parsed once
	eval     *evaluator
	diag     Diagnoser
	// diagNote, when set, says why the configured diagnoser is not the one
	// in use (no API key in the environment); Run says it at start.
	diagNote string
	diagName string // the diagnoser in use: rules, llm or both
	exec     *executor
	// unreachable is the subject's subject_unreachable definition.
	unreachable Invariant
	// lastObs is the last successful observation, for diagnoses; the
	// status page reads it, with when and how the last attempt went, under
	// obsMu.
	obsMu   sync.Mutex
	lastObs map[string]any
	lastAt  time.Time
	lastErr error
	metrics *opMetrics
	slo     sloTracker
	notify  *notifier // nil without [operator.webhook] url
	// bg, set by Run, runs model diagnoses beside the loop, which keeps
	// observing, evaluating and renewing its lease meanwhile.
	bg *background
	// leased, set by Run, has every Tick renew the lease in its
	// transaction.
	leased bool
	// savedTimers are the grace timers as last stored: a tick stores them
	// only when they changed.
	savedTimers map[string]Timer
	// recordFrom is where in the firing violations the next tick starts
	// recording when they are more than maxRecordsPerTick.
	recordFrom int
}

// background tracks the diagnoses in flight, one per ticket.
type background struct {
	ctx      context.Context
	wg       sync.WaitGroup
	mu       sync.Mutex
	inflight map[int64]bool
}

// maxRecordsPerTick bounds the violations one tick records: each is a
// SQLite transaction, and a new one a ticket, a diagnosis, proposals and a
// notification. A subject can list any number of violating entities: 5,000
// took 4.7 s to open and 0.65 s a tick to update, at the 5 s interval. A
// cluster of 1,000 nodes all down at once still gets a ticket each.
const maxRecordsPerTick = 1000

// maxDiagnosesInFlight bounds the model diagnoses running at once. A
// subject can list any number of violating entities, each a new ticket in
// one tick: every diagnosis is a conversation with the model carrying the
// observation, and the token budgets are checked before a call, so
// hundreds at once would all pass them before any had spent. A ticket
// left out stays open without a diagnosis, and a later tick that still
// sees it firing starts it (record).
const maxDiagnosesInFlight = 4

// start claims ticket for a diagnosis; false when one is under way, or
// maxDiagnosesInFlight are.
func (b *background) start(ticket int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.inflight[ticket] || len(b.inflight) >= maxDiagnosesInFlight {
		return false
	}
	b.inflight[ticket] = true
	b.wg.Add(1)
	return true
}

func (b *background) done(ticket int64) {
	b.mu.Lock()
	delete(b.inflight, ticket)
	b.mu.Unlock()
	b.wg.Done()
}

// New prepares an operator. urls, when not empty, replace the subject's
// base URLs (--subject-url). secrets are what the configuration names by
// environment variable (ResolveSecrets).
func New(cfg Config, subj Subject, urls []string, store *Store, secrets Secrets, log *slog.Logger, now func() time.Time) (*Operator, error) {
	if len(urls) > 0 {
		subj.BaseURLs = urls
	}
	if subj.Timeout.Duration == 0 {
		subj.Timeout.Duration = 2 * time.Second
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := subj.Validate(); err != nil {
		return nil, err
	}
	timers, err := store.Timers(context.Background())
	if err != nil {
		return nil, fmt.Errorf("cannot read grace timers: %w", err)
	}
	tmpl := subj.templates()
	eval, err := newEvaluator(&subj, tmpl, timers, cfg.Interval.Duration)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	o := &Operator{cfg: cfg, subj: &subj, store: store, log: log.With("role", "operator", "subject", cfg.Subject),
		now: now, owner: fmt.Sprintf("%s/%d/%08x", host, os.Getpid(), rand.Uint32()), eval: eval, metrics: newOpMetrics(),
		savedTimers: maps.Clone(timers), tmpl: tmpl,
		unreachable: Invariant{Name: SubjectUnreachable, Severity: "critical", Message: "the subject did not answer its observations"}}
	for _, inv := range subj.Invariants {
		if inv.Name == SubjectUnreachable {
			o.unreachable = inv
		}
	}
	o.notify = newNotifier(cfg.Webhook, secrets.WebhookToken, cfg.Subject, o.metrics.set, o.log)
	o.obs = newObserver(o.subj, subj.BaseURLs, passDeadline(cfg.Lease.Duration, o.subj.Timeout.Duration))
	var slos []string
	for _, slo := range subj.SLOs {
		slos = append(slos, slo.Expr)
	}
	o.sloProgs = compilePrograms(slos...)
	o.exec = newExecutor(o.subj, tmpl, subj.BaseURLs, secrets.SubjectToken, &http.Client{Timeout: subj.Timeout.Duration})
	if err := o.chooseDiagnoser(secrets.LLMKey); err != nil {
		return nil, err
	}
	return o, nil
}

// chooseDiagnoser sets up cfg.Diagnoser. A model diagnoser whose key is not
// in the environment is replaced by the playbooks, with a note that Run
// logs: a missing key must not stop the operator watching.
func (o *Operator) chooseDiagnoser(key string) error {
	rules := newRules(o.subj, o.tmpl, o.eval.hist, o.now)
	o.diag, o.diagName = rules, DiagnoserRules
	if o.cfg.Diagnoser != DiagnoserLLM && o.cfg.Diagnoser != DiagnoserBoth {
		return nil
	}
	if env := o.cfg.LLM.APIKeyEnv; env != "" {
		if key == "" {
			o.diagNote = fmt.Sprintf("diagnoser %s asked for, but $%s is empty: diagnosing with the playbooks only", o.cfg.Diagnoser, env)
			return nil
		}
	}
	m, err := newLLMDiagnoser(llmDeps{cfg: o.cfg.LLM, subject: o.cfg.Subject, apiKey: key, subjectToken: o.exec.token,
		subj: o.subj, obs: o.obs, store: o.store, slos: o.SLOs, log: o.log, now: o.now})
	if err != nil {
		return err
	}
	o.diagName = o.cfg.Diagnoser
	if o.cfg.Diagnoser == DiagnoserLLM {
		o.diag = fallback{model: m, rules: rules}
	} else {
		o.diag = sideBySide{rules: rules, model: m}
	}
	return nil
}

// Secrets are the values the configuration names by environment variable:
// the subject's credentials_env, llm.api_key_env and webhook.token_env.
// main reads them (ResolveSecrets) and hands them to New, so the operator
// never reads its environment and tests give it values directly.
type Secrets struct {
	SubjectToken string // bearer token for the subject's actions
	LLMKey       string
	WebhookToken string
}

// ResolveSecrets looks up the variables that cfg and subj name with getenv
// (os.Getenv in main); an unnamed variable leaves its secret empty.
func ResolveSecrets(cfg Config, subj Subject, getenv func(string) string) Secrets {
	var s Secrets
	if subj.CredentialsEnv != "" {
		s.SubjectToken = getenv(subj.CredentialsEnv)
	}
	if cfg.LLM.APIKeyEnv != "" {
		s.LLMKey = getenv(cfg.LLM.APIKeyEnv)
	}
	if cfg.Webhook.TokenEnv != "" {
		s.WebhookToken = getenv(cfg.Webhook.TokenEnv)
	}
	return s
}

// Diagnoser is the diagnoser in use (rules, llm or both) and, when it is
// not the configured one, why.
func (o *Operator) Diagnoser() (name, note string) { return o.diagName, o.diagNote }

// lastObservation is the last successful observation, when the last
// attempt was made and how it failed, if it did.
func (o *Operator) lastObservation() (map[string]any, time.Time, error) {
	o.obsMu.Lock()
	defer o.obsMu.Unlock()
	return o.lastObs, o.lastAt, o.lastErr
}

// Observe reads the subject once (the `operator observe` command).
func (o *Operator) Observe(ctx context.Context) (map[string]any, error) { return o.obs.observe(ctx) }

// ErrLeaseHeld is returned by Run when another operator holds the DB.
var ErrLeaseHeld = errors.New("another operator is running on this database")

// Run loops until ctx ends. It holds the DB's lease while it runs, so two
// operators on one file never both act.
func (o *Operator) Run(ctx context.Context) error {
	held, holder, err := o.store.AcquireLease(ctx, o.owner, o.cfg.Lease.Duration, o.now())
	if err != nil {
		return err
	}
	if !held && holderDead(holder) {
		// An operator killed on this host leaves its lease behind; waiting
		// for it to expire would leave the subject unwatched meanwhile.
		o.log.Warn("taking over the lease of an operator that is no longer running", "holder", holder)
		if err := o.store.ReleaseLease(ctx, holder); err != nil {
			return err
		}
		if held, holder, err = o.store.AcquireLease(ctx, o.owner, o.cfg.Lease.Duration, o.now()); err != nil {
			return err
		}
	}
	if !held {
		return fmt.Errorf("%w (%s holds its lease)", ErrLeaseHeld, holder)
	}
	defer func() { _ = o.store.ReleaseLease(context.Background(), o.owner) }()
	// Notifications go out beside the loop; the last ones (those of the
	// diagnoses below included) get a moment after it stops.
	nctx, stopNotify := context.WithCancel(context.WithoutCancel(ctx))
	notified := make(chan struct{})
	go func() { defer close(notified); o.notify.run(nctx) }()
	defer func() { stopNotify(); <-notified }()
	// Diagnoses in flight end with ctx; the lease is released only after
	// them, so no write of this operator follows another's taking over.
	o.bg = &background{ctx: ctx, inflight: map[int64]bool{}}
	defer o.bg.wg.Wait()
	if o.subj.CredentialsEnv != "" && o.exec.token == "" {
		o.log.Warn("the subject's credentials variable is empty; actions go without a token", "env", o.subj.CredentialsEnv)
	}
	if o.diagNote != "" {
		o.log.Warn(o.diagNote)
	}
	o.log.Info("operator running", "interval", o.cfg.Interval.Duration, "mode", o.mode(ctx), "db", o.cfg.DB, "diagnoser", o.diagName)
	o.leased = true
	defer func() { o.leased = false }()
	t := time.NewTicker(o.cfg.Interval.Duration)
	defer t.Stop()
	for {
		if err := o.Tick(ctx); errors.Is(err, ErrLeaseHeld) {
			return err
		} else if err != nil && ctx.Err() == nil {
			o.log.Error("loop", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// mode is the mode in the DB (set by `operator mode`, the kill switch), or
// the configured one.
func (o *Operator) mode(ctx context.Context) string {
	if m, ok, err := o.store.Mode(ctx); err == nil && ok {
		return m
	}
	return o.cfg.Mode
}

// Tick is one pass of the loop, in this order: observe the subject;
// evaluate the invariants; write what every pass writes and read the
// state, in one transaction (begin); open or update a ticket per violation
// (record), which starts the diagnosis of a new one; verify executed
// actions, both ways (verify); resolve the tickets whose violation cleared
// (resolveCleared); act as the mode allows (act). A quiet pass, with
// nothing firing, pending or to verify, makes no other SQLite call than
// begin's. Under Run, a pass that finds the lease taken returns
// ErrLeaseHeld and does nothing else.
func (o *Operator) Tick(ctx context.Context) error {
	start := time.Now()
	defer o.metrics.loop.UpdateDuration(start)
	now := o.now()
	obs, values, obsErr := o.obs.observeCounted(ctx)
	o.obsMu.Lock()
	o.lastAt, o.lastErr = now, obsErr
	if obsErr == nil {
		o.lastObs = obs
	}
	o.obsMu.Unlock()
	if obsErr != nil && ctx.Err() != nil {
		return nil // shutting down, not a failed observation
	}
	v, state := o.eval.unreachable(o.unreachable, obsErr != nil, now)
	var ev evaluation
	var slo sloPass
	if obsErr == nil {
		ev = o.eval.evaluate(obs, now)
		o.eval.hist.add(obs, values, now)
		slo = o.sloPass(obs, now)
	}
	st, err := o.begin(ctx, now, slo)
	if err != nil {
		return err
	}
	var errs []error
	if obsErr != nil {
		// A failed observation says nothing about the other invariants:
		// their tickets and timers stay as they are.
		o.log.Warn("observation failed", "err", obsErr)
		if state == stepFiring {
			v.Entity, v.Message = "", o.renderOr(o.unreachable.Message, map[string]any{"error": obsErr.Error()})
			v.Observation, _ = json.Marshal(map[string]any{"error": obsErr.Error()})
			if err := o.record(ctx, v, now, nil); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	active := map[string]bool{}
	if state == stepHolding {
		active[SubjectUnreachable+":"] = true
	}
	for _, err := range ev.errs {
		o.log.Warn("invariant", "err", err)
	}
	for k := range ev.holding {
		active[k] = true
	}
	ev.config = append(ev.config, o.burns(st.SLOBad, now)...)
	for _, v := range ev.config {
		if v.Invariant == OperatorConfig {
			o.log.Error("configuration", "invariant", v.Entity, "problem", v.Message)
		}
		ev.firing = append(ev.firing, v)
	}
	for _, v := range ev.firing {
		active[v.Key()] = true // recorded or not, it fires: its ticket is not resolved
	}
	// Past maxRecordsPerTick, each tick records the next window of the
	// violations (in key order, wrapping), so none waits more than
	// len/maxRecordsPerTick ticks; always the first ones would starve the
	// rest for as long as the flood lasts.
	n, from := len(ev.firing), 0
	if n > maxRecordsPerTick {
		from = o.recordFrom % n
		o.recordFrom = from + maxRecordsPerTick
		o.log.Error("too many violations", "err", fmt.Sprintf("%d violations fire, more than the %d one tick records (maxRecordsPerTick): this tick records those from #%d in key order, the next tick the following ones; none of them is resolved meanwhile", n, maxRecordsPerTick, from))
	}
	for i := range min(n, maxRecordsPerTick) {
		if err := o.record(ctx, ev.firing[(from+i)%n], now, obs); err != nil {
			errs = append(errs, err)
		}
	}
	// What record wrote (a ticket, a diagnosis, proposals) is read again;
	// a quiet pass wrote nothing and keeps begin's state.
	if len(ev.firing) > 0 {
		if st, err = o.reread(ctx, st); err != nil {
			return errors.Join(append(errs, err)...)
		}
	}
	// Verify before resolving (a cleared ticket's actions are verified by
	// it) and both before acting: a ticket whose action failed its
	// verification is escalated before anything else runs for it, and one
	// whose violation cleared gets no further action.
	wrote, err := o.verify(ctx, st, active, now)
	if err != nil {
		errs = append(errs, err)
	}
	resolved, err := o.resolveCleared(ctx, st, active, now)
	if err != nil {
		errs = append(errs, err)
	}
	if wrote || resolved {
		if st, err = o.reread(ctx, st); err != nil {
			return errors.Join(append(errs, err)...)
		}
	}
	if err := o.act(ctx, st, now); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// begin is the pass's one transaction: it renews the lease (under Run),
// adds the SLOs' time and reads their budgets, stores the grace timers if
// they changed, and reads the mode, the unresolved tickets and the
// proposals still to run or verify.
func (o *Operator) begin(ctx context.Context, now time.Time, slo sloPass) (TickState, error) {
	w := TickWrites{SLOTimes: slo.times, SLOKeep: slo.keep, SLOSince: slo.since}
	if o.leased {
		w.LeaseOwner, w.LeaseTTL = o.owner, o.cfg.Lease.Duration
	}
	if !maps.EqualFunc(o.eval.timers, o.savedTimers, Timer.equal) {
		w.Timers = o.eval.timers
	}
	st, err := o.store.Tick(ctx, now, w)
	if err != nil {
		return st, err
	}
	if !st.LeaseHeld {
		return st, fmt.Errorf("%w (%s took the lease)", ErrLeaseHeld, st.LeaseHolder)
	}
	if w.Timers != nil {
		o.savedTimers = maps.Clone(w.Timers)
	}
	return st, nil
}

// reread reads the state again after the pass wrote to it, keeping the SLO
// budgets begin read.
func (o *Operator) reread(ctx context.Context, st TickState) (TickState, error) {
	fresh, err := o.store.Tick(ctx, o.now(), TickWrites{})
	fresh.SLOBad = st.SLOBad
	return fresh, err
}

func (o *Operator) renderOr(text string, data map[string]any) string {
	if s, err := o.tmpl.render(text, data); err == nil && s != "" {
		return s
	}
	return fmt.Sprint(data["error"])
}

// record opens or updates the ticket of v; a new ticket is diagnosed and
// its recommendations become proposals.
func (o *Operator) record(ctx context.Context, v Violation, now time.Time, obs map[string]any) error {
	t, opened, err := o.store.RecordViolation(ctx, v, now)
	if err != nil {
		return err
	}
	// A ticket still open (or diagnosing) without a diagnosis is one an
	// earlier operator opened and then died before diagnosing: finish its
	// work.
	if !opened && !((t.Status == StatusOpen || t.Status == StatusDiagnosing) && len(t.Diagnosis) == 0) {
		return nil
	}
	if opened {
		o.log.Warn("ticket opened", "ticket", t.ID, "key", t.Key, "severity", t.Severity, "message", t.Message)
	}
	if o.bg != nil && o.diagName != DiagnoserRules {
		// A model may take a minute, longer than the lease: it answers
		// beside the loop, and the ticket says diagnosing meanwhile.
		if !o.bg.start(t.ID) {
			if opened {
				o.notify.notify(EventOpened, t, fmt.Sprintf("waiting for the %s diagnoser: %d diagnoses under way (maxDiagnosesInFlight)",
					o.diagName, maxDiagnosesInFlight), now)
			}
			return nil
		}
		if _, err := o.store.SetStatus(ctx, t.ID, []string{StatusOpen}, StatusDiagnosing, "operator", "asking the "+o.diagName+" diagnoser"); err != nil {
			o.bg.done(t.ID)
			return err
		}
		if opened {
			o.notify.notify(EventOpened, t, "diagnosing with the "+o.diagName+" diagnoser", now)
		}
		go func() {
			defer o.bg.done(t.ID)
			d, err := o.diag.Diagnose(o.bg.ctx, t, obs)
			if err := o.conclude(o.bg.ctx, t, d, err, o.now(), false); err != nil && o.bg.ctx.Err() == nil {
				o.log.Error("cannot store the diagnosis", "ticket", t.ID, "err", err)
			}
		}()
		return nil
	}
	d, err := o.diag.Diagnose(ctx, t, obs)
	return o.conclude(ctx, t, d, err, now, opened)
}

// conclude stores a diagnosis and its proposals. A ticket that resolved
// while its diagnosis was under way gets the diagnosis, for the record,
// and no proposals.
func (o *Operator) conclude(ctx context.Context, t Ticket, d Diagnosis, err error, now time.Time, notifyOpened bool) error {
	if err != nil {
		o.audit(ctx, t.ID, 0, "diagnosis_failed", map[string]any{"error": err.Error()})
	}
	// Every diagnoser's result, side by side for "both".
	parts := d.Diagnoses
	if len(parts) == 0 {
		parts = []Diagnosis{d}
	}
	if d.Error != "" {
		// The model failed and the playbook stood in: say so where an SRE
		// looks, and keep the reason with the ticket.
		o.log.Warn("model diagnosis failed: using the playbook's", "ticket", t.ID, "err", d.Error)
		o.audit(ctx, t.ID, 0, "diagnosis_fallback", map[string]any{"error": d.Error})
	}
	raw, _ := json.Marshal(d)
	if err := o.store.SetDiagnosis(ctx, t.ID, raw, d.Diagnoser); err != nil {
		return err
	}
	moved, err := o.store.SetStatus(ctx, t.ID, []string{StatusOpen, StatusDiagnosing}, StatusDiagnosed, "operator", d.Summary)
	if err != nil {
		return err
	}
	if !moved {
		if cur, err := o.store.Ticket(ctx, t.ID); err == nil && cur.Status == StatusResolved {
			o.audit(ctx, t.ID, 0, "diagnosis_late", map[string]any{"note": "the ticket resolved before its diagnosis arrived: nothing proposed"})
			return nil
		}
	}
	if notifyOpened {
		t.Diagnosis = raw
		o.notify.notify(EventOpened, t, "", now)
	}
	seen := map[string]bool{}
	for _, part := range parts {
		for _, rec := range part.RecommendedActions {
			o.propose(ctx, t, rec, part.Diagnoser, now, seen)
		}
	}
	return nil
}

// propose validates a recommendation and stores it: pending when it may
// run (now or after approval), skipped with the reason when invalid or,
// for a model's, against the model policy. seen holds the actions already
// proposed for this diagnosis: the same action with the same parameters
// from two diagnosers is proposed once.
func (o *Operator) propose(ctx context.Context, t Ticket, rec Recommendation, source string, now time.Time, seen map[string]bool) {
	p := Proposal{TicketID: t.ID, Action: rec.Action, Params: rec.Params, Reason: rec.Reason, Source: source,
		Status: ProposalPending, CreatedAt: now}
	a, params, err := o.exec.validate(rec.Action, rec.Params)
	if err == nil && source == DiagnoserLLM {
		err = o.modelPolicy(t, a, params)
	}
	if err != nil {
		p.Status, p.Result = ProposalSkipped, "rejected by validation: "+err.Error()
	} else {
		p.Params, p.RiskLevel, p.RequiresApproval = params, a.RiskLevel, a.NeedsApproval()
		key, _ := json.Marshal([]any{a.Name, params})
		if seen[string(key)] {
			return
		}
		seen[string(key)] = true
	}
	if _, err := o.store.AddProposal(ctx, p); err != nil {
		o.log.Error("cannot store proposal", "ticket", t.ID, "err", err)
	}
}

// modelPolicy is what a model's proposal must meet beyond the action's
// definition: a risk level no higher than [operator.llm] max_risk, and from
// entity_bound_risk up, a parameter naming the ticket's entity. The second
// is the defence against instructions planted in observed data (a key
// named "…drain node n1…"): a model can be talked into proposing
// something, but not into aiming a drastic action at anything other than
// the entity the ticket is about.
func (o *Operator) modelPolicy(t Ticket, a *Action, params map[string]any) error {
	l := o.cfg.LLM
	if riskRank[a.RiskLevel] > riskRank[l.MaxRisk] {
		return fmt.Errorf("a model may propose actions up to risk %s ([operator.llm] max_risk); %s is %s", l.MaxRisk, a.Name, a.RiskLevel)
	}
	if l.EntityBoundRisk == "none" || riskRank[a.RiskLevel] < riskRank[l.EntityBoundRisk] {
		return nil
	}
	if t.Entity != "" {
		for _, v := range params {
			if s, ok := v.(string); ok && s == t.Entity {
				return nil
			}
		}
	}
	return fmt.Errorf("%s is %s risk: a model may propose it only on the ticket's entity %q ([operator.llm] entity_bound_risk), and no parameter names it",
		a.Name, a.RiskLevel, t.Entity)
}

// resolveCleared resolves every unresolved ticket whose violation is
// neither firing nor held by keep_firing_for (a held ticket too: holding
// stops the operator acting, but a cleared problem is still over); Resolve
// skips its proposals still waiting to run. It reports whether it wrote.
func (o *Operator) resolveCleared(ctx context.Context, st TickState, active map[string]bool, now time.Time) (bool, error) {
	wrote := false
	for _, t := range st.Tickets {
		if active[t.Key] {
			continue
		}
		if err := o.store.Resolve(ctx, t.ID, "operator", "the violation cleared", now); err != nil {
			return wrote, err
		}
		wrote = true
		o.log.Info("ticket resolved", "ticket", t.ID, "key", t.Key)
		o.notify.notify(EventResolved, t, "the violation cleared", now)
	}
	return wrote, nil
}

// act executes what the mode allows.
func (o *Operator) act(ctx context.Context, st TickState, now time.Time) error {
	mode := st.Mode
	if mode == "" {
		mode = o.cfg.Mode
	}
	if mode == ModeObserve {
		return nil
	}
	for i := len(st.Proposals) - 1; i >= 0; i-- { // oldest first
		p := st.Proposals[i]
		if p.Status != ProposalPending && p.Status != ProposalApproved {
			continue
		}
		if p.Status == ProposalPending && (mode == ModeApprove || p.RequiresApproval) {
			continue // waits for `operator actions approve`
		}
		if p.TicketID != 0 {
			t, ok := st.Unresolved[p.TicketID]
			if !ok || t.Status == StatusHeld || t.Status == StatusRemediationFailed {
				continue // resolved, held or escalated
			}
		}
		if p.Status == ProposalApproved {
			// An approval was given for the state of then: it expires, and
			// the action must still be valid as the subject defines it now.
			if why := o.stale(p, now); why != "" {
				_, _ = o.store.Transition(ctx, p.ID, ProposalApproved, ProposalSkipped, "operator", why, now)
				continue
			}
		}
		if why, err := o.ranAlready(ctx, p, now); err != nil {
			return err
		} else if why != "" {
			_, _ = o.store.Transition(ctx, p.ID, p.Status, ProposalSkipped, "operator", why, now)
			continue
		}
		if why, err := o.capped(ctx, p.TicketID, now); err != nil {
			return err
		} else if why != "" {
			_, _ = o.store.Transition(ctx, p.ID, p.Status, ProposalSkipped, "operator", why, now)
			continue
		}
		o.run(ctx, p, "operator", now)
	}
	return nil
}

// ranAlready says which proposal already executed the same action with
// the same parameters within verify_within: two tickets of one cause (a
// bad limit seen by two invariants, or on three nodes) get one execution,
// not a second that fails and escalates.
func (o *Operator) ranAlready(ctx context.Context, p Proposal, now time.Time) (string, error) {
	done, err := o.store.Proposals(ctx, ProposalFilter{Status: []string{ProposalExecuting, ProposalSucceeded, ProposalVerified}, Limit: 100})
	if err != nil {
		return "", err
	}
	want, _ := json.Marshal(p.Params)
	for _, q := range done {
		if q.ID == p.ID || q.Action != p.Action || q.ExecutedAt == nil || now.Sub(*q.ExecutedAt) > o.cfg.VerifyWithin.Duration {
			continue
		}
		if got, _ := json.Marshal(q.Params); string(got) == string(want) {
			return fmt.Sprintf("the same action already ran as proposal #%d (ticket #%d)", q.ID, q.TicketID), nil
		}
	}
	return "", nil
}

// approvalTTL is [operator] approval_ttl, 1 h when unset.
func (o *Operator) approvalTTL() time.Duration {
	if d := o.cfg.ApprovalTTL.Duration; d > 0 {
		return d
	}
	return time.Hour
}

// stale says why an approved proposal may no longer run: its approval
// expired, or it no longer validates against the action's definition.
func (o *Operator) stale(p Proposal, now time.Time) string {
	if age := now.Sub(p.UpdatedAt); age > o.approvalTTL() {
		return fmt.Sprintf("the approval expired: given %s ago, approval_ttl is %s; approve a new proposal", age.Round(time.Second), o.approvalTTL())
	}
	if _, _, err := o.exec.validate(p.Action, p.Params); err != nil {
		return "no longer valid: " + err.Error()
	}
	return ""
}

// capped says why the caps forbid one more action (for ticket, when not
// 0) now, or "" when they allow it.
func (o *Operator) capped(ctx context.Context, ticket int64, now time.Time) (string, error) {
	perTicket, perHour, err := o.store.Executed(ctx, ticket, now.Add(-time.Hour))
	if err != nil {
		return "", err
	}
	if ticket != 0 && perTicket >= o.cfg.MaxActionsPerTicket || perHour >= o.cfg.MaxActionsPerHour {
		return fmt.Sprintf("action limit reached: %d executed for this ticket (max %d), %d in the last hour (max %d)",
			perTicket, o.cfg.MaxActionsPerTicket, perHour, o.cfg.MaxActionsPerHour), nil
	}
	return "", nil
}

// run executes one proposal: it claims it (so no other operator can), calls
// the subject, and records the outcome.
func (o *Operator) run(ctx context.Context, p Proposal, actor string, now time.Time) {
	ok, err := o.store.Transition(ctx, p.ID, p.Status, ProposalExecuting, actor, "", now)
	if err != nil || !ok {
		return
	}
	if p.TicketID != 0 {
		_, _ = o.store.SetStatus(ctx, p.TicketID, []string{StatusOpen, StatusDiagnosing, StatusDiagnosed, StatusRemediating}, StatusRemediating, actor, "executing "+p.Action)
	}
	result, err := o.exec.execute(ctx, p.Action, p.Params, idempotencyKey(p))
	to := ProposalSucceeded
	if err != nil {
		to, result = ProposalFailed, err.Error()
		o.log.Warn("action failed", "proposal", p.ID, "action", p.Action, "err", err)
	} else {
		o.log.Info("action executed", "proposal", p.ID, "action", p.Action, "result", result)
	}
	_, _ = o.store.Transition(ctx, p.ID, ProposalExecuting, to, actor, result, o.now())
	o.metrics.action(to)
	if err != nil && p.TicketID != 0 {
		o.escalate(ctx, p.TicketID, actor, "action "+p.Action+" failed: "+result)
	}
}

// escalate marks a ticket remediation_failed and tells the webhook: a
// person must look now.
func (o *Operator) escalate(ctx context.Context, ticket int64, actor, why string) {
	moved, err := o.store.SetStatus(ctx, ticket, nil, StatusRemediationFailed, actor, why)
	if err != nil || !moved {
		return
	}
	if t, err := o.store.Ticket(ctx, ticket); err == nil {
		o.notify.notify(EventEscalated, t, why, o.now())
	}
}

// idempotencyKey is the Idempotency-Key of a proposal's execution: its id,
// and its creation time so two operator databases never share one.
func idempotencyKey(p Proposal) string {
	return fmt.Sprintf("ratelimiter-operator-proposal-%d-%d", p.ID, p.CreatedAt.UnixMicro())
}

// verify settles every executed action of a ticket, both ways: verified
// when its ticket's violation no longer fires (active holds the firing and
// held keys), verification_failed when it still fires VerifyWithin after
// the action ran; the ticket is then escalated as remediation_failed and
// nothing is retried. Until one or the other, the action waits.
func (o *Operator) verify(ctx context.Context, st TickState, active map[string]bool, now time.Time) (wrote bool, err error) {
	for _, p := range st.Proposals {
		if p.Status != ProposalSucceeded || p.TicketID == 0 {
			continue // not executed, or run by hand (operator act): no violation to clear
		}
		// A ticket not among the unresolved is resolved.
		if t, ok := st.Unresolved[p.TicketID]; ok && !active[t.Key] {
			if ok, _ := o.store.Transition(ctx, p.ID, ProposalSucceeded, ProposalVerified, "operator", "the violation cleared", now); ok {
				o.metrics.action(ProposalVerified)
				wrote = true
			}
			continue
		}
		if p.ExecutedAt == nil || now.Sub(*p.ExecutedAt) < o.cfg.VerifyWithin.Duration {
			continue
		}
		if ok, _ := o.store.Transition(ctx, p.ID, ProposalSucceeded, ProposalVerifyFailed, "operator",
			fmt.Sprintf("the violation did not clear within %s", o.cfg.VerifyWithin.Duration), now); ok {
			o.escalate(ctx, p.TicketID, "operator", "escalated: "+p.Action+" did not clear the violation within "+o.cfg.VerifyWithin.Duration.String())
			o.metrics.action(ProposalVerifyFailed)
			o.log.Error("remediation failed: escalating", "ticket", p.TicketID, "action", p.Action)
			wrote = true
		}
	}
	return wrote, nil
}

func (o *Operator) audit(ctx context.Context, ticket, proposal int64, event string, detail any) {
	raw, _ := json.Marshal(detail)
	if err := o.store.Audit(ctx, AuditEntry{TicketID: ticket, ProposalID: proposal, Actor: "operator", Event: event, Detail: raw}); err != nil {
		o.log.Error("audit", "err", err)
	}
}

// ErrRefused is returned by Act when the kill switch or a cap forbids the
// action; --force overrides it.
var ErrRefused = errors.New("refused")

// Act runs a manual action now (`operator act NAME key=value…`), through
// the same validation, kill switch, caps and audit as the loop's. force
// overrides the kill switch and the caps, and is audited as such.
func (o *Operator) Act(ctx context.Context, name string, params map[string]any, actor string, force bool) (Proposal, error) {
	now := o.now()
	a, p, err := o.exec.validate(name, params)
	if err != nil {
		return Proposal{}, err
	}
	var refusals []string
	if mode := o.mode(ctx); mode == ModeObserve {
		refusals = append(refusals, "the operator is in observe mode (the kill switch)")
	}
	why, err := o.capped(ctx, 0, now)
	if err != nil {
		return Proposal{}, err
	}
	if why != "" {
		refusals = append(refusals, why)
	}
	reason := "manual action by " + actor
	if len(refusals) > 0 {
		if !force {
			o.auditAs(ctx, actor, 0, 0, "manual_refused", map[string]any{"action": name, "params": p, "why": refusals})
			return Proposal{}, fmt.Errorf("%w: %s: %s (--force overrides, and is audited)", ErrRefused, name, strings.Join(refusals, "; "))
		}
		reason += ", forced past: " + strings.Join(refusals, "; ")
	}
	prop, err := o.store.AddProposal(ctx, Proposal{Action: name, Params: p, Source: "manual", RiskLevel: a.RiskLevel,
		RequiresApproval: a.NeedsApproval(), Status: ProposalApproved, CreatedAt: now, Reason: reason})
	if err != nil {
		return Proposal{}, err
	}
	if len(refusals) > 0 {
		o.log.Warn("manual action forced", "actor", actor, "action", name, "overrode", refusals)
		o.auditAs(ctx, actor, 0, prop.ID, "forced", map[string]any{"action": name, "overrode": refusals})
	}
	o.run(ctx, prop, actor, now)
	return o.store.Proposal(ctx, prop.ID)
}

func (o *Operator) auditAs(ctx context.Context, actor string, ticket, proposal int64, event string, detail any) {
	raw, _ := json.Marshal(detail)
	if err := o.store.Audit(ctx, AuditEntry{TicketID: ticket, ProposalID: proposal, Actor: actor, Event: event, Detail: raw}); err != nil {
		o.log.Error("audit", "err", err)
	}
}

// holderDead reports whether a lease holder ("host/pid/nonce") is a process
// on this host that no longer exists. Holders on other hosts are never
// presumed dead: their lease simply expires.
func holderDead(holder string) bool {
	parts := strings.Split(holder, "/")
	host, _ := os.Hostname()
	if len(parts) != 3 || parts[0] != host {
		return false
	}
	pid, err := strconv.Atoi(parts[1])
	if err != nil || pid <= 0 || pid == os.Getpid() {
		return false
	}
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}
