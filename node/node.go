// Package node is the rate-limiter node: a stateless fasthttp service that
// decides checks against a shared Store and serves the cluster's management
// API. Every node answers for the whole cluster. It must not import the
// other roles (operator, loadgen, chaos).
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"google.golang.org/grpc"

	"github.com/ratelimiter/ratelimiter/limiter"
	"github.com/ratelimiter/ratelimiter/node/store"
)

// Node states as reported by /api/v1/nodes.
const (
	stateHealthy   = "healthy"
	stateUnhealthy = "unhealthy"
	stateDraining  = "draining"
)

// Node is one rate-limiter node.
type Node struct {
	cfg      Config
	log      *slog.Logger
	now      func() time.Time
	store    store.Store
	ownStore bool
	// inProcess is set for the in-process store, which never waits on I/O.
	inProcess bool
	ln        net.Listener
	id, addr  string
	started   time.Time

	state     atomic.Pointer[sharedState] // limits, blocks and drains of the last sync
	version   atomic.Int64                // store version of that sync
	connected atomic.Bool
	// calls and failures count decisions asked of the store since the last
	// sync tick; lastFailure is when (node clock, µs) the store last failed
	// beyond a blip. See storeFailed.
	calls, failures atomic.Int64
	lastFailure     atomic.Int64
	// connMu orders the changes of connected: storeOK reads lastFailure
	// again under it before it reconnects, so a failure recorded meanwhile
	// is never overwritten by a stale "connected".
	connMu sync.Mutex
	seeded atomic.Bool // config limits have reached the store
	view   atomic.Pointer[clusterView]

	deadlines store.Deadlines
	timeouts  store.Timeouts // every Redis timeout, from redis_timeout
	denies    *denyCache
	hot       *hotKeys
	stats     stats
	keys      [2]sketch
	keysCur   atomic.Int32
	// keysRotated is touched only by the heartbeat goroutine.
	keysRotated time.Time
	metrics     *promMetrics
	server      *fasthttp.Server
	peers       *fasthttp.Client
	items       sync.Pool // *[1]store.Item for single checks
	envoy       envoyRuntime
	// lastPanicLog is when (UnixNano) a panic's stack was last logged.
	lastPanicLog atomic.Int64
	// mgmtLn and mgmtServer serve management_listen; nil without it.
	mgmtLn     net.Listener
	mgmtServer *fasthttp.Server
}

// New checks cfg, binds the listen address and prepares the node; Run
// serves. When store is nil the node makes its own from cfg: Redis when
// cfg.RedisURL is set, else the in-process store. now is the node's clock
// (time.Now outside tests); decisions never read it.
func New(cfg Config, st store.Store, log *slog.Logger, now func() time.Time) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	limits := append([]limiter.Limit(nil), cfg.Limits...)
	if err := ValidateLimits(limits); err != nil {
		return nil, err
	}
	cfg.Limits = limits
	if cfg.AdminTokenFile != "" {
		tok, err := readAdminToken(cfg.AdminTokenFile)
		if err != nil {
			return nil, err
		}
		cfg.AdminToken = tok
	}
	if cfg.ID == "" {
		host, _ := os.Hostname()
		cfg.ID = host
	}
	n := &Node{cfg: cfg, now: now, store: st, id: cfg.ID, started: now(), keysRotated: now(),
		timeouts: store.TimeoutsFor(cfg.RedisTimeout.Duration)}
	n.log = log.With("role", "node", "node_id", n.id)
	if n.store == nil {
		n.ownStore = true
		if cfg.RedisURL == "" {
			n.store = store.NewMemoryStore(now)
		} else {
			rs, err := store.NewRedisStore(cfg.RedisURL, cfg.RedisPrefix, n.timeouts)
			if err != nil {
				return nil, err
			}
			n.store = rs
		}
	}
	_, n.inProcess = n.store.(*store.MemoryStore)
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		if n.ownStore {
			n.store.Close()
		}
		return nil, fmt.Errorf("cannot listen on %s: %w", cfg.Listen, err)
	}
	n.ln = ln
	n.addr = cfg.Advertise
	if n.addr == "" {
		n.addr = ln.Addr().String()
	}
	n.deadlines = store.Deadlines{Timeout: n.timeouts.Decision, Slice: time.Millisecond}
	n.denies = newDenyCache(cfg.DenyCacheSize)
	n.hot = newHotKeys(10_000, min(0.5, cfg.HotKeyRatio), 10e6)
	n.metrics = newPromMetrics(n)
	n.items.New = func() any { return new([1]store.Item) }
	if err := n.setupEnvoy(); err != nil {
		ln.Close()
		if n.ownStore {
			n.store.Close()
		}
		return nil, err
	}
	// A peer's /health answer is about 100 bytes; its address comes from
	// the registry, so whatever answers there must not make this node read
	// without end (an answer of 2 GiB took 9 s and 2 GiB of heap before maxPeerBody).
	n.peers = &fasthttp.Client{ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond, MaxConnWaitTimeout: 300 * time.Millisecond,
		MaxResponseBodySize: maxPeerBody}
	n.server = &fasthttp.Server{
		Handler:               n.serve,
		ErrorHandler:          n.handleServerError,
		Name:                  "ratelimiter",
		MaxRequestBodySize:    cfg.MaxBodyBytes,
		ReadTimeout:           30 * time.Second,
		WriteTimeout:          30 * time.Second,
		IdleTimeout:           2 * time.Minute,
		NoDefaultServerHeader: true,
		CloseOnShutdown:       true,
		Logger:                fasthttpLogger{n.log},
	}
	if err := n.listenManagement(); err != nil {
		ln.Close()
		if n.ownStore {
			n.store.Close()
		}
		return nil, err
	}
	// Until the first sync the node decides with the file's limits.
	n.applyLimits(recordsFromConfig(cfg.Limits, n.now()), nil, map[string]string{}, -1)
	return n, nil
}

// Addr is the address the node listens on.
func (n *Node) Addr() string { return n.ln.Addr().String() }

// ID is the node's id.
func (n *Node) ID() string { return n.id }

// Run serves until ctx ends, then deregisters and stops. It returns only
// after every goroutine it started has ended.
func (n *Node) Run(ctx context.Context) error {
	if mgmt := n.ManagementAddr(); n.cfg.AdminToken == "" && !isLoopback(mgmt) {
		n.log.Warn("NO ADMIN TOKEN: anyone who can reach this address can change limits, blocks and drains; set --admin-token-file, --admin-token or ADMIN_TOKEN", "listen", mgmt)
	}
	n.startup(ctx)

	// The loops stop before the node deregisters, so no late heartbeat can
	// put it back in the registry; the server stops last.
	loops, stopLoops := context.WithCancel(ctx)
	var wg, served sync.WaitGroup
	serveErr := make(chan error, 2)
	served.Add(1)
	go func() { defer served.Done(); serveErr <- n.server.Serve(n.ln) }()
	if n.envoy.grpc != nil {
		served.Add(1)
		go func() { defer served.Done(); serveErr <- n.serveGRPC() }()
	}
	n.serveManagementUntilStopped(&served)
	wg.Add(4)
	go func() { defer wg.Done(); n.every(loops, n.cfg.HeartbeatInterval.Duration, n.heartbeat) }()
	go func() { defer wg.Done(); n.every(loops, n.cfg.SyncInterval.Duration, n.syncTick) }()
	go func() { defer wg.Done(); n.watchEnvoy(loops) }()
	go func() { defer wg.Done(); n.followHealth(loops) }()
	n.log.Info("node serving", "addr", n.Addr(), "store", n.storeKind())

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
	}
	stopLoops()
	wg.Wait()
	n.shutdown()
	served.Wait()
	if errors.Is(err, net.ErrClosed) || errors.Is(err, grpc.ErrServerStopped) {
		err = nil
	}
	return err
}

func (n *Node) storeKind() string {
	if _, ok := n.store.(*store.RedisStore); ok {
		return "redis"
	}
	return "memory"
}

// startup makes a best effort to join the cluster before serving: connect,
// seed the file's limits, sync, heartbeat. A failure here is not fatal:
// the loops keep trying and the node answers by its failure mode meanwhile.
func (n *Node) startup(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := n.store.Ping(ctx); err != nil {
		n.storeFailed("sync", err)
		n.log.Warn("store unreachable at start; deciding by failure mode until it answers", "err", err)
		return
	}
	n.storeOK()
	n.syncTick(ctx)
	n.heartbeat(ctx)
}

func (n *Node) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := n.store.Forget(ctx, n.id); err != nil {
		n.log.Warn("could not deregister", "err", err)
	} else {
		n.log.Info("deregistered")
	}
	n.stopGRPC(ctx)
	if err := n.server.ShutdownWithContext(ctx); err != nil {
		n.log.Warn("shutdown", "err", err)
	}
	n.stopManagement(ctx)
	if n.ownStore {
		n.store.Close()
	}
}

// every calls f at each tick until ctx ends.
func (n *Node) every(ctx context.Context, d time.Duration, f func(context.Context)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f(ctx)
		}
	}
}

// mgmtTimeout bounds management calls, which may move more data than a
// decision but must still never hang a loop.
func (n *Node) mgmtTimeout() time.Duration { return n.timeouts.Management }

// storeOK and storeFailed track whether the store answers. A failed
// background call marks it disconnected at once. Failed decisions do once
// at least three, and at least 1 % of the decisions, failed since the last
// sync tick: a lone timeout is a blip, while a dead master of a Redis
// Cluster fails its share of the keys in between successes on the other
// masters, and that is an outage. The store counts as connected again
// after two sync intervals without such a failure, so a partial outage
// reads as one disconnection rather than a flicker at every success, and
// recovery needs no restart.
func (n *Node) storeOK() {
	if n.connected.Load() {
		return
	}
	if n.now().UnixMicro()-n.lastFailure.Load() < 2*n.cfg.SyncInterval.Microseconds() {
		return
	}
	n.connMu.Lock()
	defer n.connMu.Unlock()
	// Again under the lock: a failure recorded since the read above (by a
	// storeFailed that found the store already disconnected) must win.
	if n.now().UnixMicro()-n.lastFailure.Load() < 2*n.cfg.SyncInterval.Microseconds() {
		return
	}
	if !n.connected.Swap(true) {
		n.log.Info("store connected")
	}
}

func (n *Node) storeFailed(op string, err error) {
	if errors.Is(err, context.Canceled) {
		return // our own shutdown or a client gone, not the store
	}
	n.metrics.redisErrs[op].Inc()
	if op == "check" || op == "check_batch" || op == "peek" {
		if f := n.failures.Add(1); f < 3 || f*100 < n.calls.Load() {
			return
		}
	}
	n.connMu.Lock()
	n.lastFailure.Store(n.now().UnixMicro())
	was := n.connected.Swap(false)
	n.connMu.Unlock()
	if was {
		n.log.Warn("store disconnected", "op", op, "err", err)
	}
}

func (n *Node) selfState() string {
	st := n.state.Load()
	switch {
	case st != nil && st.drain[n.id] != "":
		return stateDraining
	case !n.connected.Load() && n.cfg.FailureMode == limiter.FailClosed:
		return stateUnhealthy // cannot decide: every check would be denied
	}
	return stateHealthy
}

func (n *Node) activeKeys() int64 { return estimate(n.keys[0].bytes(&n.keys[1])) }

// fasthttpLogger sends fasthttp's own complaints (a client sending an
// oversized body, say) to the node's log at debug level: the client already
// got its answer, and an operator should not see one line per bad request.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...), "source", "fasthttp")
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
