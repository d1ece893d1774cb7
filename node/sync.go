package node

import (
	"context"
	"encoding/json"
	"sort"
	"time"

	"github.com/ratelimiter/ratelimiter/limiter"
	"github.com/ratelimiter/ratelimiter/node/store"
)

// sharedState is what a node knows of the cluster's shared hashes as of its
// last sync. It is replaced whole, never mutated, so the hot path reads it
// with one atomic load.
type sharedState struct {
	table    *limiter.Table
	policies map[string]*Policy     // by pattern
	limits   map[string]limitRecord // by pattern, deleted ones included
	blocks   map[string]block
	drain    map[string]string // node id -> drain record
	// version, blockLog and fullAt say what a sync read blocks from: the
	// store's version and block log (store.Shared), and when (node clock,
	// µs) the blocks were last read whole.
	version  int64
	blockLog string
	fullAt   int64
}

// fullSyncEvery is how often a sync reads every block even when the
// store's log could tell it which changed: a change the log missed (made
// through a node of an older version, during an upgrade) shows within it.
const fullSyncEvery = time.Minute

// limitRecord is a limit as stored: with its history, so a bad change can
// be rolled back.
type limitRecord struct {
	limiter.Limit
	CreatedAt time.Time    `json:"created_at"`
	UpdatedAt time.Time    `json:"updated_at"`
	Source    string       `json:"source"` // "config" or "api"
	Deleted   bool         `json:"deleted,omitempty"`
	Previous  *limitRecord `json:"previous,omitempty"` // one level deep
}

// block is a blocked key. ExpiresAt is store time; until is the node clock.
type block struct {
	ExpiresAt time.Time `json:"expires_at"`
	CreatedAt time.Time `json:"created_at"`
	Reason    string    `json:"reason,omitempty"`
	until     int64
	raw       string // as stored: an unchanged block is not decoded again
}

func recordsFromConfig(limits []limiter.Limit, now time.Time) map[string]limitRecord {
	m := make(map[string]limitRecord, len(limits))
	for _, l := range limits {
		m[l.KeyPattern] = limitRecord{Limit: l, CreatedAt: now, UpdatedAt: now, Source: "config"}
	}
	return m
}

// syncTick polls the store's version and reloads the shared hashes when it
// moved. It doubles as the store probe: while the store is down it is what
// notices that it came back.
func (n *Node) syncTick(ctx context.Context) {
	// Each tick starts a new count of failed decisions (see storeFailed).
	n.calls.Store(0)
	n.failures.Store(0)
	if err := n.sync(ctx, false); err != nil {
		n.log.Debug("sync failed", "err", err)
	}
}

func (n *Node) sync(ctx context.Context, force bool) error {
	ctx, cancel := context.WithTimeout(ctx, n.mgmtTimeout())
	defer cancel()
	n.metrics.redisOps["sync"].Inc()
	v, err := n.store.Version(ctx)
	if err == store.ErrUnavailable {
		err = n.store.Ping(ctx) // (re)connect
		if err == nil {
			v, err = n.store.Version(ctx)
		}
	}
	if err != nil {
		n.storeFailed("sync", err)
		return err
	}
	n.storeOK()
	full := false
	if last := n.version.Load(); v < last {
		full = true // the store's log may be as stale as its version
		// The version only grows, so the store lost its data (a restart
		// without persistence, a failover to a stale replica). Put back what
		// this node knew; fields that survived are left alone.
		n.log.Warn("store lost the shared state; restoring this node's copy", "version", v, "last_seen", last)
		n.restore(ctx)
		force = true
	}
	if !n.seeded.Load() {
		if err := n.seedLimits(ctx); err != nil {
			n.log.Warn("could not seed limits from the config file", "err", err)
		} else {
			n.seeded.Store(true)
			force = true
		}
	}
	if !force && v == n.version.Load() {
		return nil
	}
	// Only the blocks changed since this node's last read, when the
	// store's log of changes reaches back that far; every block at least
	// every fullSyncEvery, so a change the log missed (one made through a
	// node of an older version during an upgrade) is never missed long.
	// Every block, too, once the store failed a call since the last full
	// read: a failover to a stale replica fails calls on the way, and the
	// new master's log may number other changes with versions this node
	// has already seen.
	prevState := n.state.Load()
	since, log := int64(0), ""
	if prevState != nil && !full && n.lastFailure.Load() < prevState.fullAt &&
		n.now().UnixMicro()-prevState.fullAt < fullSyncEvery.Microseconds() {
		since, log = prevState.version, prevState.blockLog
	}
	snap, err := n.store.ReadShared(ctx, since, log, store.HashLimits, store.HashDrain)
	if err != nil {
		n.storeFailed("sync", err)
		return err
	}
	limits := map[string]limitRecord{}
	for pattern, raw := range snap.Hashes[0] {
		var r limitRecord
		if err := json.Unmarshal([]byte(raw), &r); err != nil {
			n.log.Error("ignoring unreadable limit in store", "pattern", pattern, "err", err)
			continue
		}
		limits[pattern] = r
	}
	var prev map[string]block
	if prevState != nil {
		prev = prevState.blocks
	}
	local := n.now().UnixMicro()
	var blocks map[string]block
	fullAt := local
	if snap.Partial {
		// A sync read every block after every change anywhere: 430 ms at
		// 100,000 blocks, on every node. Now it reads the changed ones and
		// copies the rest from the last state.
		fullAt = prevState.fullAt
		blocks = make(map[string]block, len(prev)+len(snap.Blocks))
		for key, b := range prev {
			if _, changed := snap.Blocks[key]; !changed {
				blocks[key] = b
			}
		}
		for key, raw := range snap.Blocks {
			if raw != "" {
				blocks[key] = block{raw: raw}
			}
		}
	} else {
		blocks = make(map[string]block, len(snap.Blocks))
		for key, raw := range snap.Blocks {
			b, ok := prev[key]
			if !ok || b.raw != raw {
				b = block{raw: raw}
			}
			blocks[key] = b
		}
	}
	expired := map[string]string{}
	for key, b := range blocks {
		if b.ExpiresAt.IsZero() { // not decoded yet: new or changed
			if err := json.Unmarshal([]byte(b.raw), &b); err != nil {
				n.log.Error("ignoring unreadable block in store", "key", key, "err", err)
				delete(blocks, key)
				continue
			}
		}
		if b.ExpiresAt.UnixMicro() <= snap.Now {
			expired[key] = b.raw
			delete(blocks, key)
			continue
		}
		b.until = local + b.ExpiresAt.UnixMicro() - snap.Now
		blocks[key] = b
	}
	if len(expired) > 0 {
		// Tidy the expired blocks away in one round trip, without a new
		// version: one Swap each, each bumping the version, took 1.7 s for
		// 20,000 and made every node read every block again. Losing the
		// race to another node is fine.
		if err := n.store.Prune(ctx, store.HashBlocks, expired); err != nil {
			n.log.Warn("could not remove expired blocks", "count", len(expired), "err", err)
		}
	}
	n.applyShared(limits, blocks, snap.Hashes[1], snap.Version, snap.Log, fullAt)
	return nil
}

// restore writes this node's last known limits, blocks and drains back
// into the store, only where the store has nothing: with several nodes
// restoring at once, the first write of each field wins.
func (n *Node) restore(ctx context.Context) {
	st := n.state.Load()
	put := func(hash, field string, v any) {
		raw, ok := v.(string)
		if !ok {
			enc, _ := json.Marshal(v)
			raw = string(enc)
		}
		if _, err := n.store.Swap(ctx, hash, field, "", raw); err != nil {
			n.log.Warn("restore failed", "hash", hash, "field", field, "err", err)
		}
	}
	for pattern, r := range st.limits {
		put(store.HashLimits, pattern, r)
	}
	now := n.now().UnixMicro()
	for key, b := range st.blocks {
		if now < b.until {
			put(store.HashBlocks, key, b)
		}
	}
	for id, raw := range st.drain {
		put(store.HashDrain, id, raw)
	}
}

// applyLimits installs a new shared state and drops every cached denial,
// since any change (a limit, a block, a counter reset) may invalidate them.
func (n *Node) applyLimits(limits map[string]limitRecord, blocks map[string]block, drain map[string]string, version int64) {
	n.applyShared(limits, blocks, drain, version, "", 0)
}

// applyShared is applyLimits for a sync, which also records the version,
// the block log and the time of the last full read its blocks came from.
func (n *Node) applyShared(limits map[string]limitRecord, blocks map[string]block, drain map[string]string, version int64, blockLog string, fullAt int64) {
	live := make([]limiter.Limit, 0, len(limits))
	for _, r := range limits {
		if !r.Deleted {
			live = append(live, r.Limit)
		}
	}
	sort.Slice(live, func(i, j int) bool { return live[i].KeyPattern < live[j].KeyPattern })
	st := &sharedState{table: limiter.NewTable(live), policies: make(map[string]*Policy, len(live)),
		limits: limits, blocks: blocks, drain: drain, version: version, blockLog: blockLog, fullAt: fullAt}
	for _, l := range live {
		st.policies[l.KeyPattern] = compile(l, n.cfg.FailureMode)
	}
	if st.blocks == nil {
		st.blocks = map[string]block{}
	}
	old := n.state.Swap(st)
	n.version.Store(version)
	n.denies.clear()
	if old != nil && (old.drain[n.id] != "") != (drain[n.id] != "") {
		n.log.Info("drain state changed", "draining", drain[n.id] != "")
	}
}
