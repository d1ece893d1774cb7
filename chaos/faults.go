package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"sync"
	"syscall"
	"time"

	"github.com/ratelimiter/ratelimiter/chaos/proxy"
	"github.com/ratelimiter/ratelimiter/config"
	"github.com/ratelimiter/ratelimiter/limiter"
	"github.com/ratelimiter/ratelimiter/loadgen"
)

// Fault is one thing that goes wrong on purpose. Inject breaks it and says
// what it did; Revert puts it back, runs whether or not Inject succeeded
// and is safe to call when there is nothing left to undo.
type Fault interface {
	Inject(ctx context.Context) (string, error)
	Revert(ctx context.Context) (string, error)
}

// faultKind makes a fault for a running cluster, and checks a spec before
// any cluster runs. needsRedis marks the faults a cluster on in-process
// stores cannot show: proxy faults, and node faults, which the other nodes
// only notice through the shared registry.
type faultKind struct {
	needsRedis bool
	validate   func(FaultSpec) error
	make       func(FaultSpec, *Cluster) (Fault, error)
}

// faultKinds is every kind a scenario may name.
var faultKinds = map[string]faultKind{
	"none":         {validate: func(FaultSpec) error { return nil }, make: func(FaultSpec, *Cluster) (Fault, error) { return noFault{}, nil }},
	"proxy":        {needsRedis: true, validate: validateProxy, make: makeProxyFault},
	"node_kill":    {needsRedis: true, validate: needNode, make: makeNodeKill},
	"node_pause":   {needsRedis: true, validate: needNode, make: makeNodePause},
	"node_drain":   {needsRedis: true, validate: needNode, make: makeNodeDrain},
	"hot_key":      {validate: validateHotKey, make: makeHotKey},
	"limit_set":    {validate: validateLimitSet, make: makeLimitChange},
	"limit_remove": {validate: needPattern, make: makeLimitChange},
}

// ErrNeedsRedis is NewFault's answer for a fault that a cluster on
// in-process stores cannot show.
var ErrNeedsRedis = errors.New("needs Redis: the nodes run on in-process stores")

// NewFault makes the fault spec describes for a running cluster.
func NewFault(spec FaultSpec, c *Cluster) (Fault, error) {
	if err := spec.validate(); err != nil {
		return nil, err
	}
	k := faultKinds[spec.Kind]
	if k.needsRedis && c.Proxy == nil {
		return nil, fmt.Errorf("a %s fault: %w", spec.Kind, ErrNeedsRedis)
	}
	return k.make(spec, c)
}

func (f FaultSpec) validate() error {
	k, ok := faultKinds[f.Kind]
	if !ok {
		return fieldErr("kind", fmt.Sprintf("unknown fault kind %q (want none, proxy, node_kill, node_pause, node_drain, hot_key, limit_set or limit_remove)", f.Kind))
	}
	return k.validate(f)
}

// fieldErr is a problem with one field of a fault spec.
func fieldErr(path, msg string) error { return &config.FieldError{Path: path, Msg: msg} }

func validateProxy(f FaultSpec) error {
	p := f.Proxy
	if err := p.Normalize(); err != nil {
		return fieldErr("proxy", err.Error())
	}
	return nil
}

func needNode(f FaultSpec) error {
	if f.Node == "" {
		return fieldErr("node", "required")
	}
	return nil
}

func needPattern(f FaultSpec) error {
	if f.KeyPattern == "" {
		return fieldErr("key_pattern", "required")
	}
	return nil
}

func validateHotKey(f FaultSpec) error {
	var errs []error
	if f.Key == "" {
		errs = append(errs, fieldErr("key", "required"))
	}
	if f.Rate <= 0 || f.Rate > 5000 {
		errs = append(errs, fieldErr("rate", "must be in (0, 5000]"))
	}
	return errors.Join(errs...)
}

func validateLimitSet(f FaultSpec) error {
	var errs []error
	if err := needPattern(f); err != nil {
		errs = append(errs, err)
	}
	if f.MaxRequests <= 0 {
		errs = append(errs, fieldErr("max_requests", "must be positive"))
	}
	if f.WindowSeconds <= 0 {
		errs = append(errs, fieldErr("window_seconds", "must be positive"))
	}
	return errors.Join(errs...)
}

type noFault struct{}

func (noFault) Inject(context.Context) (string, error) { return "nothing (control)", nil }
func (noFault) Revert(context.Context) (string, error) { return "nothing to revert", nil }

// proxyFault sets one fault on the proxy between the nodes and Redis.
type proxyFault struct {
	p *proxy.Proxy
	f proxy.Fault
}

func makeProxyFault(s FaultSpec, c *Cluster) (Fault, error) {
	if c.Proxy == nil {
		return nil, errors.New("a proxy fault needs Redis, and the cluster runs on in-process stores")
	}
	return &proxyFault{p: c.Proxy, f: s.Proxy}, nil
}

func (f *proxyFault) Inject(context.Context) (string, error) {
	set, err := f.p.Set(f.f)
	if err != nil {
		return "", err
	}
	f.f = set
	b, _ := json.Marshal(set)
	return "proxy fault " + string(b), nil
}

func (f *proxyFault) Revert(context.Context) (string, error) {
	f.p.Clear(f.f.Name)
	return "proxy fault " + f.f.Name + " cleared", nil
}

// nodeKill sends SIGKILL; the revert starts the node again on its address.
type nodeKill struct {
	c      *Cluster
	n      *Node
	killed bool
}

func makeNodeKill(s FaultSpec, c *Cluster) (Fault, error) {
	n, err := c.Node(s.Node)
	return &nodeKill{c: c, n: n}, err
}

func (f *nodeKill) Inject(context.Context) (string, error) {
	pid := f.n.PID()
	if pid == 0 {
		return "", fmt.Errorf("%s is not running", f.n.ID)
	}
	f.n.proc.kill()
	f.killed = true
	return fmt.Sprintf("SIGKILL %s (pid %d)", f.n.ID, pid), nil
}

func (f *nodeKill) Revert(ctx context.Context) (string, error) {
	if !f.killed {
		return "nothing to revert", nil
	}
	if err := f.n.proc.start(); err != nil {
		return "", err
	}
	f.killed = false
	if err := f.c.waitHealthy(ctx, f.n, 15*time.Second); err != nil {
		return "", err
	}
	return fmt.Sprintf("restarted %s (pid %d)", f.n.ID, f.n.PID()), nil
}

// nodePause freezes the node with SIGSTOP: its port stays open and its
// connections hang, unlike a kill.
type nodePause struct {
	n      *Node
	paused bool
}

func makeNodePause(s FaultSpec, c *Cluster) (Fault, error) {
	n, err := c.Node(s.Node)
	return &nodePause{n: n}, err
}

func (f *nodePause) Inject(context.Context) (string, error) {
	if err := f.n.proc.signal(syscall.SIGSTOP); err != nil {
		return "", err
	}
	f.paused = true
	return fmt.Sprintf("SIGSTOP %s (pid %d)", f.n.ID, f.n.PID()), nil
}

func (f *nodePause) Revert(context.Context) (string, error) {
	if !f.paused {
		return "nothing to revert", nil
	}
	if err := f.n.proc.signal(syscall.SIGCONT); err != nil {
		return "", err
	}
	f.paused = false
	return fmt.Sprintf("SIGCONT %s", f.n.ID), nil
}

// nodeDrain drains a node through the API, as a deploy would, and leaves
// it drained until the revert.
type nodeDrain struct {
	c        *Cluster
	n        *Node
	drainFor time.Duration
}

func makeNodeDrain(s FaultSpec, c *Cluster) (Fault, error) {
	n, err := c.Node(s.Node)
	return &nodeDrain{c: c, n: n, drainFor: s.DrainFor.Duration}, err
}

func (f *nodeDrain) url() string {
	return f.n.URL() + "/api/v1/nodes/" + url.PathEscape(f.n.ID) + "/drain"
}

func (f *nodeDrain) Inject(ctx context.Context) (string, error) {
	body := `{"by":"chaos","reason":"a drain left behind"}`
	if d := f.drainFor; d > 0 {
		body = fmt.Sprintf(`{"by":"chaos","reason":"planned maintenance","duration_seconds":%d}`, int64(d.Seconds()))
	}
	if err := f.c.send(ctx, "POST", f.url(), body); err != nil {
		return "", err
	}
	return "POST /api/v1/nodes/" + f.n.ID + "/drain " + body, nil
}

func (f *nodeDrain) Revert(ctx context.Context) (string, error) {
	if err := f.c.send(ctx, "DELETE", f.url(), ""); err != nil {
		return "", err
	}
	return "DELETE /api/v1/nodes/" + f.n.ID + "/drain", nil
}

// hotKey floods one key through the real load generator.
type hotKey struct {
	c    *Cluster
	spec FaultSpec

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan *loadgen.Report
}

func makeHotKey(s FaultSpec, c *Cluster) (Fault, error) { return &hotKey{c: c, spec: s}, nil }

func (f *hotKey) Inject(context.Context) (string, error) {
	lc := f.c.loadConfig(f.spec.Rate, 1, f.spec.Key) // until the revert
	lc.HotKeyShare = 1                               // every request to the one key "<Key>hot"…
	if err := lc.Validate(); err != nil {
		return "", err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan *loadgen.Report, 1)
	go func() {
		r, _ := loadgen.Run(ctx, lc, io.Discard, false, quiet)
		done <- r
	}()
	f.mu.Lock()
	f.cancel, f.done = cancel, done
	f.mu.Unlock()
	return fmt.Sprintf("flood key %q at %.0f checks/s over %d nodes", f.key(), f.spec.Rate, len(lc.Targets)), nil
}

// key is the flooded key: loadgen names its hot key "<prefix>hot".
func (f *hotKey) key() string { return f.spec.Key + "hot" }

func (f *hotKey) Revert(context.Context) (string, error) {
	f.mu.Lock()
	cancel, done := f.cancel, f.done
	f.cancel = nil
	f.mu.Unlock()
	if cancel == nil {
		return "nothing to revert", nil
	}
	cancel()
	r := <-done
	if r == nil {
		return "flood stopped", nil
	}
	return fmt.Sprintf("flood stopped: %d sent, %d allowed, %d denied", r.Sent, r.Allowed, r.Denied), nil
}

// limitChange sets or removes one limit through the API; the revert puts
// the original back unless it is already in force (the operator may have
// rolled it back itself).
type limitChange struct {
	c        *Cluster
	spec     FaultSpec
	original *limiter.Limit
}

func makeLimitChange(s FaultSpec, c *Cluster) (Fault, error) { return &limitChange{c: c, spec: s}, nil }

func (f *limitChange) Inject(ctx context.Context) (string, error) {
	cur, err := f.c.limit(ctx, f.spec.KeyPattern)
	if err != nil {
		return "", err
	}
	if cur == nil {
		return "", fmt.Errorf("no limit %q to change", f.spec.KeyPattern)
	}
	f.original = cur
	if f.spec.Kind == "limit_remove" {
		if err := f.c.send(ctx, "DELETE", f.c.anyURL()+"/api/v1/limits/"+url.PathEscape(f.spec.KeyPattern), ""); err != nil {
			return "", err
		}
		return "DELETE limit " + f.spec.KeyPattern, nil
	}
	bad := *cur
	bad.MaxRequests, bad.WindowSeconds, bad.Burst = f.spec.MaxRequests, f.spec.WindowSeconds, 0
	if err := f.c.putLimit(ctx, bad); err != nil {
		return "", err
	}
	return fmt.Sprintf("limit %s: max_requests %d/%ds -> %d/%ds", cur.KeyPattern, cur.MaxRequests, cur.WindowSeconds, bad.MaxRequests, bad.WindowSeconds), nil
}

func (f *limitChange) Revert(ctx context.Context) (string, error) {
	if f.original == nil {
		return "nothing to revert", nil
	}
	cur, err := f.c.limit(ctx, f.spec.KeyPattern)
	if err != nil {
		return "", err
	}
	if cur != nil && cur.MaxRequests == f.original.MaxRequests && cur.WindowSeconds == f.original.WindowSeconds &&
		cur.Algorithm == f.original.Algorithm && cur.Burst == f.original.Burst {
		return "limit " + f.spec.KeyPattern + " already restored", nil
	}
	if err := f.c.putLimit(ctx, *f.original); err != nil {
		return "", err
	}
	return "limit " + f.spec.KeyPattern + " restored", nil
}

// limit reads one limit by pattern from any live node; nil when absent.
func (c *Cluster) limit(ctx context.Context, pattern string) (*limiter.Limit, error) {
	var doc struct {
		Limits []limiter.Limit `json:"limits"`
	}
	if err := c.getJSON(ctx, c.anyURL()+"/api/v1/limits", &doc); err != nil {
		return nil, err
	}
	for _, l := range doc.Limits {
		if l.KeyPattern == pattern {
			return &l, nil
		}
	}
	return nil, nil
}

func (c *Cluster) putLimit(ctx context.Context, l limiter.Limit) error {
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	return c.send(ctx, "POST", c.anyURL()+"/api/v1/limits", string(b))
}

// anyURL is the first node that runs and is not paused; management calls
// go there.
func (c *Cluster) anyURL() string {
	for _, n := range c.Nodes {
		if n.proc.answering() {
			return n.URL()
		}
	}
	return c.Nodes[0].URL()
}
