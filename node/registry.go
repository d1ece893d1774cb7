package node

import (
	"context"
	"encoding/json"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ratelimiter/ratelimiter/node/store"
)

// nodeRecord is what a node publishes with each heartbeat: who it is, how
// it is doing, and its rolling figures, so the cluster's metrics need no
// Prometheus.
type nodeRecord struct {
	ID             string    `json:"id"`
	Address        string    `json:"address"`
	StartedAt      time.Time `json:"started_at"`
	RedisConnected bool      `json:"redis_connected"`
	Figures        Figures   `json:"metrics"`
	HotKeys        []HotKey  `json:"hot_keys,omitempty"`
	Keys           []byte    `json:"keys,omitempty"` // distinct-key sketch registers
}

// Info is one node as GET /api/v1/nodes shows it.
type Info struct {
	ID             string    `json:"id"`
	Address        string    `json:"address"`
	State          string    `json:"state"`
	RedisConnected bool      `json:"redis_connected"`
	LastHeartbeat  time.Time `json:"last_heartbeat"`
	HeartbeatAgeMs int64     `json:"heartbeat_age_ms"`
	StartedAt      time.Time `json:"started_at"`
	Draining       bool      `json:"draining"`
	// The drain, when draining (drain.go): since when, by whom, why, until
	// when (null: no end given), how long ago it began and how far past its
	// until it is (negative before; 0 without until).
	DrainedAt      *time.Time `json:"drained_at"`
	DrainBy        string     `json:"drain_by"`
	DrainReason    string     `json:"drain_reason"`
	DrainUntil     *time.Time `json:"drain_until"`
	DrainAgeMs     int64      `json:"drain_age_ms"`
	DrainOverdueMs int64      `json:"drain_overdue_ms"`
	record         nodeRecord
}

// clusterView is the registry as last read, or as pieced together from
// the peers themselves while the store is unreachable.
type clusterView struct {
	Nodes []Info
	// Source is "store", or "peers" when the store did not answer and the
	// node asked the last known peers directly.
	Source string
}

const sketchRotate = time.Minute

func (n *Node) record() nodeRecord {
	now := n.now()
	m := n.stats.snapshot(now)
	m.NodeID = n.id
	m.ActiveKeys = n.activeKeys()
	return nodeRecord{ID: n.id, Address: n.addr, StartedAt: n.started.UTC(), RedisConnected: n.connected.Load(),
		Figures: m, HotKeys: n.hot.list(now.UnixMicro(), 50), Keys: n.keys[0].bytes(&n.keys[1])}
}

// heartbeat publishes this node's record, stamped with the store's clock,
// and rotates the distinct-key sketches.
func (n *Node) heartbeat(ctx context.Context) {
	// Two sketches take turns, so active keys means "seen in the last one
	// to two minutes" without ever forgetting everything at once.
	if now := n.now(); now.Sub(n.keysRotated) >= sketchRotate {
		next := 1 - n.keysCur.Load()
		n.keys[next].reset()
		n.keysCur.Store(next)
		n.keysRotated = now
	}
	enc, _ := json.Marshal(n.record())
	ctx, cancel := context.WithTimeout(ctx, n.mgmtTimeout())
	defer cancel()
	n.metrics.redisOps["heartbeat"].Inc()
	if _, err := n.store.Heartbeat(ctx, n.id, string(enc)); err != nil {
		n.storeFailed("heartbeat", err)
		return
	}
	n.storeOK()
}

// nodes reads the registry. A node whose heartbeat is older than
// unhealthy_after is unhealthy; one older than forget_after is removed.
func (n *Node) nodes(ctx context.Context) clusterView {
	rctx, cancel := context.WithTimeout(ctx, n.mgmtTimeout())
	defer cancel()
	n.metrics.redisOps["nodes"].Inc()
	snap, err := n.store.Read(rctx, store.HashNodes, store.HashBeats, store.HashDrain)
	if err != nil {
		n.storeFailed("nodes", err)
		return n.peerView()
	}
	view := clusterView{Source: "store"}
	for id, raw := range snap.Hashes[0] {
		var rec nodeRecord
		if json.Unmarshal([]byte(raw), &rec) != nil {
			continue
		}
		beat, _ := strconv.ParseInt(snap.Hashes[1][id], 10, 64)
		age := snap.Now - beat
		if age > n.cfg.ForgetAfter.Microseconds() {
			_ = n.store.Forget(rctx, id)
			continue
		}
		info := Info{ID: id, Address: rec.Address, RedisConnected: rec.RedisConnected,
			LastHeartbeat: time.UnixMicro(beat).UTC(), HeartbeatAgeMs: age / 1000, StartedAt: rec.StartedAt, record: rec}
		info.setDrain(snap.Hashes[2][id], snap.Now)
		switch {
		case age > n.cfg.UnhealthyAfter.Microseconds():
			info.State = stateUnhealthy
		case info.Draining:
			info.State = stateDraining
		default:
			info.State = stateHealthy
		}
		if id == n.id { // our own entry is live, not a heartbeat old
			info.State, info.RedisConnected, info.record = n.selfState(), n.connected.Load(), n.record()
		}
		view.Nodes = append(view.Nodes, info)
	}
	n.askStale(view.Nodes)
	sort.Slice(view.Nodes, func(i, j int) bool { return view.Nodes[i].ID < view.Nodes[j].ID })
	n.view.Store(&view)
	return view
}

// askStale asks each node whose heartbeat is stale for its /health before
// calling it unhealthy. A heartbeat can be late while the node is fine: its
// store, or the part of a Redis Cluster holding the registry, failed for a
// moment (a failover). A node that answers reports its own state and
// connection; one that does not answer stays unhealthy. Only recent
// silences are asked about (askStaleFor unhealthy_afters): a node gone for
// longer is not coming back from a failover, and asking it on every read
// of the registry would cost each read the probe's timeout on a network
// that drops its packets.
func (n *Node) askStale(nodes []Info) {
	recent := askStaleFor * n.cfg.UnhealthyAfter.Milliseconds()
	var wg sync.WaitGroup
	for i := range nodes {
		if nodes[i].State != stateUnhealthy || nodes[i].ID == n.id || nodes[i].HeartbeatAgeMs > recent {
			continue
		}
		wg.Add(1)
		go func(info *Info) {
			defer wg.Done()
			if h, ok := n.askHealth(info); ok {
				info.State, info.RedisConnected = h.State, h.RedisConnected
			}
		}(&nodes[i])
	}
	wg.Wait()
}

// askStaleFor bounds, in unhealthy_afters, the silences askStale asks
// about: with Redis' default cluster-node-timeout (15 s) a failover keeps
// the registry's heartbeats out for about 17 s, well under 10 × 3 s.
const askStaleFor = 10

// maxPeerBody bounds a peer's /health answer as askHealth reads it.
const maxPeerBody = 64 << 10

// askHealth asks a peer for its /health, briefly.
func (n *Node) askHealth(info *Info) (health, bool) {
	var h health
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + info.Address + "/health")
	ok := n.peers.DoTimeout(req, resp, 300*time.Millisecond) == nil && json.Unmarshal(resp.Body(), &h) == nil && h.ID == info.ID
	return h, ok
}

// health is this node's own report: GET /health, and what peers ask for
// when the store is unreachable.
type health struct {
	ID             string `json:"id"`
	Address        string `json:"address"`
	State          string `json:"state"`
	RedisConnected bool   `json:"redis_connected"`
}

// peerView answers for the cluster while the store is unreachable: this
// node reports itself, and asks each last-known peer for its own /health.
func (n *Node) peerView() clusterView {
	view := clusterView{Source: "peers"}
	var known []Info
	if v := n.view.Load(); v != nil {
		known = v.Nodes
	}
	view.Nodes = make([]Info, 0, len(known)+1)
	self := Info{ID: n.id, Address: n.addr, State: n.selfState(), RedisConnected: n.connected.Load(),
		StartedAt: n.started.UTC(), Draining: n.selfState() == stateDraining, record: n.record()}
	view.Nodes = append(view.Nodes, self)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, info := range known {
		if info.ID == n.id {
			continue
		}
		wg.Add(1)
		go func(info Info) {
			defer wg.Done()
			info.State, info.RedisConnected = stateUnhealthy, false
			if h, ok := n.askHealth(&info); ok {
				info.State, info.RedisConnected = h.State, h.RedisConnected
			}
			mu.Lock()
			view.Nodes = append(view.Nodes, info)
			mu.Unlock()
		}(info)
	}
	wg.Wait()
	sort.Slice(view.Nodes, func(i, j int) bool { return view.Nodes[i].ID < view.Nodes[j].ID })
	return view
}

func (n *Node) handleHealth(ctx *fasthttp.RequestCtx) {
	h := health{ID: n.id, Address: n.addr, State: n.selfState(), RedisConnected: n.connected.Load()}
	status := fasthttp.StatusOK
	if h.State != stateHealthy {
		status = fasthttp.StatusServiceUnavailable
	}
	writeJSON(ctx, status, h)
}

func (n *Node) handleNodes(ctx *fasthttp.RequestCtx) {
	v := n.nodes(ctx)
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"nodes": nonNil(v.Nodes), "source": v.Source})
}

func (n *Node) findNode(ctx *fasthttp.RequestCtx, id string) (Info, bool) {
	for _, info := range n.nodes(ctx).Nodes {
		if info.ID == id {
			return info, true
		}
	}
	n.problem(ctx, &problemError{status: fasthttp.StatusNotFound, typ: "not-found", detail: "no node " + strconvQuote(id) + " in the registry"})
	return Info{}, false
}

func (n *Node) handleNode(ctx *fasthttp.RequestCtx, id string) {
	if info, ok := n.findNode(ctx, id); ok {
		writeJSON(ctx, fasthttp.StatusOK, info)
	}
}

func (n *Node) handleNodeMetrics(ctx *fasthttp.RequestCtx, id string) {
	if info, ok := n.findNode(ctx, id); ok {
		m := info.record.Figures
		m.NodeID = id
		writeJSON(ctx, fasthttp.StatusOK, m)
	}
}

func (n *Node) handleDrain(ctx *fasthttp.RequestCtx, id string, on bool) {
	if _, ok := n.findNode(ctx, id); !ok {
		return
	}
	var rec drainRecord
	if on {
		var p *problemError
		if rec, p = parseDrain(ctx, n.now()); p != nil {
			n.problem(ctx, p)
			return
		}
	}
	err := n.changeShared(ctx, store.HashDrain, id, func(now int64, raw string) (string, error) {
		if !on {
			return "", nil
		}
		return rec.merge(raw, time.UnixMicro(now)), nil
	})
	if err != nil {
		n.storeProblem(ctx, err)
		return
	}
	n.afterWrite(ctx)
	info, _ := n.findNode(ctx, id)
	writeJSON(ctx, fasthttp.StatusOK, info)
}

// ClusterState is GET /api/v1/cluster/state: node counts, totals and limits.
type ClusterState struct {
	NodeCount              int           `json:"node_count"`
	HealthyNodes           int           `json:"healthy_nodes"`
	DrainingNodes          int           `json:"draining_nodes"`
	UnhealthyNodes         int           `json:"unhealthy_nodes"`
	TotalKeys              int64         `json:"total_keys"`
	TotalRequestsPerSecond float64       `json:"total_requests_per_second"`
	RedisConnected         bool          `json:"redis_connected"`
	Limits                 []limitRecord `json:"limits"`
	Source                 string        `json:"source"`
}

func (n *Node) handleClusterState(ctx *fasthttp.RequestCtx) {
	v := n.nodes(ctx)
	cs := ClusterState{NodeCount: len(v.Nodes), RedisConnected: n.connected.Load(), Source: v.Source, Limits: []limitRecord{}}
	var sketches [][]byte
	for _, info := range v.Nodes {
		switch info.State {
		case stateHealthy:
			cs.HealthyNodes++
		case stateDraining:
			cs.DrainingNodes++
		default:
			cs.UnhealthyNodes++
			continue
		}
		cs.TotalRequestsPerSecond += info.record.Figures.RequestsPerSecond
		sketches = append(sketches, info.record.Keys)
	}
	cs.TotalRequestsPerSecond = round2(cs.TotalRequestsPerSecond)
	cs.TotalKeys = estimate(sketches...)
	for _, r := range n.state.Load().limits {
		if !r.Deleted {
			cs.Limits = append(cs.Limits, r)
		}
	}
	sort.Slice(cs.Limits, func(i, j int) bool { return cs.Limits[i].KeyPattern < cs.Limits[j].KeyPattern })
	writeJSON(ctx, fasthttp.StatusOK, cs)
}

// handleHotKeys merges every live node's hot keys: the highest usage ratio
// seen for a key, and its denials summed over the nodes.
func (n *Node) handleHotKeys(ctx *fasthttp.RequestCtx) {
	args := ctx.QueryArgs()
	threshold := n.cfg.HotKeyRatio
	if r := args.Peek("ratio"); len(r) > 0 {
		v, err := strconv.ParseFloat(string(r), 64)
		if err != nil || !(v > 0 && v <= 1) { // so NaN fails too
			n.problem(ctx, badRequest("ratio must be a number in (0, 1]"))
			return
		}
		threshold = v
	}
	limit := 20
	if l := args.Peek("limit"); len(l) > 0 {
		v, err := strconv.Atoi(string(l))
		if err != nil || v < 1 || v > 1000 {
			n.problem(ctx, badRequest("limit must be an integer from 1 to 1000"))
			return
		}
		limit = v
	}
	merged := map[string]*HotKey{}
	for _, info := range n.nodes(ctx).Nodes {
		if info.State == stateUnhealthy {
			continue
		}
		for _, h := range info.record.HotKeys {
			m := merged[h.Key]
			if m == nil {
				c := h
				c.Nodes = 1
				merged[h.Key] = &c
				continue
			}
			m.Nodes++
			m.Denied += h.Denied
			m.LastSeen = min(m.LastSeen, h.LastSeen)
			if h.Ratio > m.Ratio {
				m.Ratio, m.Remaining, m.Limit, m.Policy = h.Ratio, h.Remaining, h.Limit, h.Policy
			}
		}
	}
	hot, denied := []HotKey{}, []HotKey{}
	for _, h := range merged {
		if h.Ratio >= threshold {
			hot = append(hot, *h)
		}
		if h.Denied > 0 {
			denied = append(denied, *h)
		}
	}
	sortHot(hot)
	sort.Slice(denied, func(i, j int) bool {
		if denied[i].Denied != denied[j].Denied {
			return denied[i].Denied > denied[j].Denied
		}
		return denied[i].Key < denied[j].Key
	})
	if len(hot) > limit {
		hot = hot[:limit]
	}
	if len(denied) > limit {
		denied = denied[:limit]
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"ratio": threshold, "hot_keys": hot, "top_denied": denied})
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
