package node

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"google.golang.org/grpc"
	grpchealth "google.golang.org/grpc/health"

	"github.com/ratelimiter/ratelimiter/config"
	"github.com/ratelimiter/ratelimiter/limiter"
	"github.com/ratelimiter/ratelimiter/node/descriptors"
)

// Envoy header styles for response_headers_to_add.
const (
	envoyHeadersDraft10 = "draft10"     // RateLimit and RateLimit-Policy
	envoyHeadersX       = "x-ratelimit" // X-RateLimit-Limit, -Remaining, -Reset
	envoyHeadersOff     = "off"
)

// envoyReloadPoll is how often the descriptor directory is checked for
// changes: well inside the 2 s a change must take to apply.
const envoyReloadPoll = 500 * time.Millisecond

// envoyKeyPrefix starts every counter key decided for Envoy, so descriptor
// counters stay apart from the keys of the HTTP API, whose checks refuse
// keys with it.
const envoyKeyPrefix = "envoy:"

var envoyKeyPrefixBytes = []byte(envoyKeyPrefix)

// maxDetailedSeries bounds the descriptor series that detailed_metric and
// value_to_metric may create on one node; beyond it new values count under
// the limit's own name.
const maxDetailedSeries = 10_000

// validateEnvoy adds the problems of the Envoy settings of [node].
func (c *Config) validateEnvoy(p *config.Problems) {
	if c.GRPCListen != "" {
		if _, _, err := net.SplitHostPort(c.GRPCListen); err != nil {
			p.Add("grpc_listen", "must be host:port, got %q", c.GRPCListen)
		}
	}
	switch c.EnvoyHeaders {
	case envoyHeadersDraft10, envoyHeadersX, envoyHeadersOff:
	default:
		p.Add("envoy_headers", "must be %q, %q or %q, got %q", envoyHeadersDraft10, envoyHeadersX, envoyHeadersOff, c.EnvoyHeaders)
	}
	if _, ok := unitEnums[c.EnvoyOverrideMaxUnit]; !ok {
		p.Add("envoy_override_max_unit", "must be second, minute, hour, day, week, month or year, got %q", c.EnvoyOverrideMaxUnit)
	}
	if c.GRPCMaxConnectionAge.Duration < 0 {
		p.Add("grpc_max_connection_age", "must not be negative")
	}
	if c.GRPCMaxConnectionAgeGrace.Duration < 0 {
		p.Add("grpc_max_connection_age_grace", "must not be negative")
	}
	if c.EnvoyConfigDir != "" {
		if fi, err := os.Stat(c.EnvoyConfigDir); err != nil || !fi.IsDir() {
			p.Add("envoy_config_dir", "must be a readable directory, got %q", c.EnvoyConfigDir)
		}
	}
}

// envoyState is the descriptor files as loaded, compiled for the hot path.
// Like sharedState it is replaced whole, never changed.
type envoyState struct {
	cfg      *descriptors.Config
	policies []*Policy // by descriptors.Limit.ID; nil for unlimited and zero limits
	// counters are each limit's decision series, made on first use so a
	// large file costs no series it never decides.
	counters [][numResults]atomic.Pointer[metrics.Counter]
	files    map[string]fileStamp
	loadedAt time.Time
}

type fileStamp struct {
	size    int64
	modTime time.Time
}

// envoyRuntime is the node's Envoy side: the loaded descriptors, the gRPC
// server and their metrics.
type envoyRuntime struct {
	state    atomic.Pointer[envoyState]
	grpc     *grpc.Server
	grpcLn   net.Listener
	health   *grpchealth.Server
	reloads  *metrics.Counter
	reloadEr *metrics.Counter
	globalSh *metrics.Counter
	requests map[string]*metrics.Counter // by overall code: ok, over_limit, error

	mu       sync.Mutex
	series   map[string]*metrics.Counter // descriptor decision counters by full name
	detailed int                         // series created for request values
	// maxDetailed is maxDetailedSeries; tests lower it.
	maxDetailed int
}

// setupEnvoy loads the descriptor directory and binds the gRPC address.
// A bad directory at start is fatal, like a bad TOML file.
func (n *Node) setupEnvoy() error {
	e := &n.envoy
	id := strconv.Quote(n.id)
	s := n.metrics.set
	e.reloads = s.NewCounter(`ratelimiter_config_reloads_total{node_id=` + id + `}`)
	e.reloadEr = s.NewCounter(`ratelimiter_config_reload_errors_total{node_id=` + id + `}`)
	e.globalSh = s.NewCounter(`ratelimiter_envoy_global_shadow_total{node_id=` + id + `}`)
	e.requests = map[string]*metrics.Counter{}
	for _, c := range []string{"ok", "over_limit", "error"} {
		e.requests[c] = s.NewCounter(`ratelimiter_envoy_requests_total{node_id=` + id + `,code="` + c + `"}`)
	}
	e.series = map[string]*metrics.Counter{}
	e.maxDetailed = maxDetailedSeries
	empty := &envoyState{cfg: &descriptors.Config{Domains: map[string]*descriptors.Domain{}}}
	e.state.Store(empty)
	if n.cfg.EnvoyConfigDir != "" {
		st, err := n.loadEnvoy()
		if err != nil {
			return fmt.Errorf("cannot load envoy_config_dir %s: %w", n.cfg.EnvoyConfigDir, err)
		}
		e.state.Store(st)
		n.log.Info("envoy descriptors loaded", "dir", n.cfg.EnvoyConfigDir, "files", len(st.cfg.Files), "limits", len(st.cfg.Limits))
	}
	if n.cfg.GRPCListen != "" {
		ln, err := net.Listen("tcp", n.cfg.GRPCListen)
		if err != nil {
			return fmt.Errorf("cannot listen on %s: %w", n.cfg.GRPCListen, err)
		}
		e.grpcLn = ln
		n.newGRPCServer()
	}
	return nil
}

// GRPCAddr is the address the gRPC server listens on, "" without one.
func (n *Node) GRPCAddr() string {
	if n.envoy.grpcLn == nil {
		return ""
	}
	return n.envoy.grpcLn.Addr().String()
}

// stamps lists the *.yaml files of the directory with their size and
// modification time (of the target, through symlinks, so a Kubernetes
// ConfigMap's symlink swap is a change).
func stamps(dir string) (map[string]fileStamp, error) {
	names, err := descriptors.Files(dir)
	if err != nil {
		return nil, err
	}
	out := make(map[string]fileStamp, len(names))
	for _, name := range names {
		fi, err := os.Stat(name)
		if err != nil {
			return nil, err
		}
		out[filepath.Base(name)] = fileStamp{size: fi.Size(), modTime: fi.ModTime()}
	}
	return out, nil
}

func (n *Node) loadEnvoy() (*envoyState, error) {
	files, err := stamps(n.cfg.EnvoyConfigDir)
	if err != nil {
		return nil, err
	}
	cfg, err := descriptors.Load(n.cfg.EnvoyConfigDir, descriptors.Options{MergeDomains: n.cfg.EnvoyMergeDomains})
	if err != nil {
		return &envoyState{files: files}, err
	}
	st := &envoyState{cfg: cfg, files: files, policies: make([]*Policy, len(cfg.Limits)), loadedAt: n.now(),
		counters: make([][numResults]atomic.Pointer[metrics.Counter], len(cfg.Limits))}
	for _, l := range cfg.Limits {
		if l.Unlimited || l.RequestsPerUnit == 0 {
			continue
		}
		st.policies[l.ID] = compile(envoyLimit(l), n.cfg.FailureMode)
	}
	return st, nil
}

// envoyLimit is the limiter.Limit a descriptor's rate_limit decides by.
func envoyLimit(l *descriptors.Limit) limiter.Limit {
	name := l.Name
	if name == "" {
		name = l.FullKey
	}
	ll := limiter.Limit{Name: printableName(name), KeyPattern: envoyKeyPrefix + l.FullKey, MaxRequests: int64(l.RequestsPerUnit),
		WindowSeconds: l.WindowSeconds, Algorithm: limiter.Algorithm(l.Algorithm), Shadow: l.Shadow}
	ll.Normalize()
	return ll
}

// printableName keeps a policy name to printable ASCII, as the RateLimit
// headers need; YAML values may hold anything.
func printableName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '_'
		}
	}
	return string(b)
}

// watchEnvoy polls the descriptor directory and reloads it when a file
// changed, appeared or went away. A bad set of files keeps the last good
// one: decisions never see a half-loaded configuration, since the new
// state replaces the old in one atomic store.
func (n *Node) watchEnvoy(ctx context.Context) {
	if n.cfg.EnvoyConfigDir == "" {
		return
	}
	n.every(ctx, envoyReloadPoll, func(context.Context) { n.reloadEnvoy(false) })
}

// reloadEnvoy reloads when the files changed (or always, with force) and
// reports whether a new configuration is in force.
func (n *Node) reloadEnvoy(force bool) bool {
	cur := n.envoy.state.Load()
	files, err := stamps(n.cfg.EnvoyConfigDir)
	if err == nil && !force && sameStamps(files, cur.files) {
		return false
	}
	st, err := n.loadEnvoy()
	if err != nil {
		if st != nil && sameStamps(st.files, cur.files) && !force {
			return false // the same bad files, already reported
		}
		n.envoy.reloadEr.Inc()
		n.log.Error("envoy descriptor reload failed; keeping the last good configuration", "dir", n.cfg.EnvoyConfigDir, "err", err)
		if st != nil {
			// Remember the bad files so the error is reported once, not
			// at every poll; the good configuration stays in force.
			kept := *cur
			kept.files = st.files
			n.envoy.state.Store(&kept)
		}
		return false
	}
	n.envoy.state.Store(st)
	n.envoy.reloads.Inc()
	n.denies.clear()
	n.log.Info("envoy descriptors reloaded", "dir", n.cfg.EnvoyConfigDir, "files", len(st.cfg.Files), "limits", len(st.cfg.Limits))
	return true
}

func sameStamps(a, b map[string]fileStamp) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w.size != v.size || !w.modTime.Equal(v.modTime) {
			return false
		}
	}
	return true
}

// Results of one descriptor's decision, as the result label says them.
const (
	resultOK = iota
	resultOverLimit
	resultShadow
	resultUnlimited
	resultFailOpen
	resultFailClosed
	resultBlocked
	numResults
)

var resultNames = [numResults]string{"ok", "over_limit", "shadow", "unlimited", "fail_open", "fail_closed", "blocked"}

// limitCounter is the decision counter of a limit under its own name.
func (n *Node) limitCounter(st *envoyState, l *descriptors.Limit, result int) *metrics.Counter {
	if l.ID >= len(st.counters) || st.cfg.Limits[l.ID] != l {
		// A request's own override is named by the request's keys, so its
		// series count against the cap on series named by requests.
		return n.envoy.descriptorCounter(n.metrics.set, n.id, l.Domain, l.FullKey, l.Domain+".(override)", resultNames[result], true)
	}
	slot := &st.counters[l.ID][result]
	if c := slot.Load(); c != nil {
		return c
	}
	c := n.envoy.descriptorCounter(n.metrics.set, n.id, l.Domain, l.FullKey, l.FullKey, resultNames[result], false)
	slot.Store(c)
	return c
}

// descriptorCounter returns the decision counter of one descriptor series,
// creating it on first use. Series named after request values (detailed
// metrics) are capped: past the cap they count under the limit's name.
func (e *envoyRuntime) descriptorCounter(set *metrics.Set, nodeID, domain, name, fallback, result string, detailed bool) *metrics.Counter {
	full := domain + "\x00" + name + "\x00" + result
	e.mu.Lock()
	defer e.mu.Unlock()
	if c, ok := e.series[full]; ok {
		return c
	}
	if detailed {
		if e.detailed >= e.maxDetailed {
			name = fallback
			full = domain + "\x00" + name + "\x00" + result
			if c, ok := e.series[full]; ok {
				return c
			}
		} else {
			e.detailed++
		}
	}
	c := set.GetOrCreateCounter(`ratelimiter_envoy_decisions_total{node_id=` + strconv.Quote(nodeID) +
		`,domain=` + strconv.Quote(domain) + `,descriptor=` + strconv.Quote(name) + `,result="` + result + `"}`)
	e.series[full] = c
	return c
}

// descriptorRecord is one descriptor limit as GET /api/v1/limits lists it:
// read-only, with the file it comes from.
type descriptorRecord struct {
	Domain        string   `json:"domain"`
	Descriptor    string   `json:"descriptor"`
	Name          string   `json:"name,omitempty"`
	Replaces      []string `json:"replaces,omitempty"`
	KeyPattern    string   `json:"key_pattern"`
	MaxRequests   uint32   `json:"max_requests"`
	WindowSeconds int64    `json:"window_seconds,omitempty"`
	Unit          string   `json:"unit,omitempty"`
	Unlimited     bool     `json:"unlimited,omitempty"`
	Algorithm     string   `json:"algorithm,omitempty"`
	Shadow        bool     `json:"shadow"`
	Source        string   `json:"source"`
	File          string   `json:"file"`
	Line          int      `json:"line"`
	ReadOnly      bool     `json:"read_only"`
}

// descriptorRecords lists the loaded descriptor limits, in file order.
func (n *Node) descriptorRecords() []descriptorRecord {
	st := n.envoy.state.Load()
	out := make([]descriptorRecord, 0, len(st.cfg.Limits))
	for _, l := range st.cfg.Limits {
		r := descriptorRecord{Domain: l.Domain, Descriptor: l.FullKey, Name: l.Name, Replaces: l.Replaces,
			KeyPattern: envoyKeyPrefix + l.FullKey, MaxRequests: l.RequestsPerUnit, WindowSeconds: l.WindowSeconds,
			Unit: l.Unit, Unlimited: l.Unlimited, Shadow: l.Shadow, Source: "envoy_config",
			File: filepath.Join(n.cfg.EnvoyConfigDir, l.File), Line: l.Line, ReadOnly: true}
		if !l.Unlimited {
			r.Algorithm = l.Algorithm
		}
		out = append(out, r)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].File < out[j].File })
	return out
}
