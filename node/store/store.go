// Package store keeps the cluster's state for the node: the Store interface,
// the Redis store (standalone, Sentinel or Cluster) with its batcher, the
// in-process twin, Redis URL parsing, and every Redis timeout (Timeouts,
// all derived from redis_timeout: a decision takes at most redis_timeout,
// connects and shared-hash calls 20 times that, at least 1 s, unless the
// URL's dial_timeout sets the connect's).
//
// It decides; it does not serve. It must not import node: what a decision
// needs of a limit arrives as a Limit (Compile), not as node's policy.
package store

import (
	"context"
	"errors"

	"github.com/ratelimiter/ratelimiter/limiter"
)

// Store is where the cluster's state lives: the per-key counters that the
// algorithms update, and a handful of small shared hashes (limits, blocks,
// drain requests, the node registry). Two implementations exist: Redis, for
// any number of nodes, and an in-process twin with the same semantics for one
// process (tests, the demo).
//
// Time for decisions and heartbeats comes from the store, never from the
// calling node, so nodes with skewed clocks still agree.
type Store interface {
	// Decide runs every item's decision in one round trip. Every item that
	// failed has its Err set; the first failure is also returned.
	Decide(ctx context.Context, items []Item) error
	// ResetCounter forgets every algorithm's state for key and bumps the
	// shared version so other nodes drop cached denials.
	ResetCounter(ctx context.Context, key string) error

	// Version changes whenever a shared hash changes (heartbeats excepted).
	Version(ctx context.Context) (int64, error)
	// Read returns the store's clock (µs), the version and the contents of
	// the named hashes, all from one round trip.
	Read(ctx context.Context, hashes ...string) (Snapshot, error)
	// ReadField returns the store's clock (µs) and one field of a hash
	// ("" when absent) from one round trip: a change to one block reads that
	// block, not all of max_blocks of them.
	ReadField(ctx context.Context, hash, field string) (now int64, raw string, err error)
	// Prune deletes each field of hash that still holds the value given for
	// it, and does not bump the version: it is for entries every node
	// already ignores (expired blocks), so their removal changes no node's
	// state and must not make every node read the shared hashes again.
	Prune(ctx context.Context, hash string, fields map[string]string) error
	// ReadShared is Read of hashes whole, with HashBlocks read whole too or,
	// when the store's log of block changes reaches back to version since
	// and is the log named by log, only the blocks changed after since.
	ReadShared(ctx context.Context, since int64, log string, hashes ...string) (Shared, error)
	// Swap sets hash[field] to new if its current value is old ("" means
	// absent), deleting the field when new is "", and bumps the version.
	// It reports whether the swap happened.
	Swap(ctx context.Context, hash, field, old, new string) (bool, error)
	// Heartbeat stores a node's record and stamps it with the store clock.
	Heartbeat(ctx context.Context, id, record string) (now int64, err error)
	// Forget removes a node from the registry and its drain request.
	Forget(ctx context.Context, id string) error

	// Ping checks that the store answers; for Redis it also (re)connects.
	Ping(ctx context.Context) error
	Close()
}

// Shared hashes.
const (
	HashLimits = "limits"
	HashBlocks = "blocks"
	HashDrain  = "drain"
	HashNodes  = "nodes"
	HashBeats  = "beats" // node id -> store time (µs) of its last heartbeat
)

// Snapshot is what Read returns.
type Snapshot struct {
	Now     int64 // store clock, µs since the Unix epoch
	Version int64
	Hashes  []map[string]string // in the order asked for
}

// Shared is what ReadShared returns.
type Shared struct {
	Snapshot
	// Log names the store's log of block changes ("" while there is none);
	// a node passes it back to ReadShared, so a log lost with the data
	// (or begun again) is never read as the continuation of the old one.
	Log string
	// Partial: Blocks holds only the blocks changed after since, "" for one
	// deleted. Otherwise Blocks is the whole hash.
	Partial bool
	Blocks  map[string]string
}

// MaxBlockChanges is how many block changes the store's log keeps (the
// oldest go first): a node that fell further behind reads every block.
// 10,000 changes of keys up to 512 bytes hold at most about 6 MB.
const MaxBlockChanges = 10_000

// Item is one decision to make.
type Item struct {
	// Key is the caller's key. It may alias request memory: a store that
	// keeps it must copy it.
	Key    string
	Cost   int64
	Limit  *Limit
	Result limiter.Result
	Err    error
}

// scriptArgs is the item's arguments to its algorithm's script, after its
// one key: limit, window (µs), burst, cost, and now (µs; "" for Redis TIME).
// Every script call builds them here.
func (it *Item) scriptArgs(now string) [5]string {
	l := it.Limit
	return [5]string{l.args[0], l.args[1], l.args[2], formatInt(it.Cost), now}
}

// Limit is what a decision needs of a limit, computed once per limit
// change instead of once per request.
type Limit struct {
	limiter.Limit
	alg  int       // index into limiter.AlgorithmTable
	args [3]string // limit, window (µs), burst: the scripts' first arguments
}

// Compile prepares l for decisions.
func Compile(l limiter.Limit) Limit {
	c := Limit{Limit: l, alg: max(l.Algorithm.Index(), 0)}
	pr := l.Params(0)
	c.args = [3]string{formatInt(pr.Limit), formatInt(pr.Window), formatInt(pr.Burst)}
	return c
}

// ErrUnavailable is returned while a store cannot be reached at all.
var ErrUnavailable = errors.New("store unavailable")
