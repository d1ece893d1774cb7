package node

import (
	"context"
	"encoding/json"
	"sort"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ratelimiter/ratelimiter/limiter"
	"github.com/ratelimiter/ratelimiter/node/store"
)

const maxBlock = 30 * 24 * time.Hour

// maxBlockReason bounds a block's reason, as maxDrainText a drain's: every
// node holds every live block and reads them all again at each change, so
// at max_blocks (100,000) reasons of max_body_bytes (64 KiB) would be 6 GiB.
const maxBlockReason = 256

// BlockView is one entry of GET /api/v1/blocks.
type BlockView struct {
	Key         string    `json:"key"`
	ExpiresAt   time.Time `json:"expires_at"`
	RemainingMs int64     `json:"remaining_ms"`
	CreatedAt   time.Time `json:"created_at"`
	Reason      string    `json:"reason,omitempty"`
}

func (n *Node) handleBlocks(ctx *fasthttp.RequestCtx) {
	st := n.state.Load()
	now := n.now().UnixMicro()
	out := []BlockView{}
	for k, b := range st.blocks {
		if now < b.until {
			out = append(out, BlockView{Key: k, ExpiresAt: b.ExpiresAt, RemainingMs: ceilMillis(b.until - now), CreatedAt: b.CreatedAt, Reason: b.Reason})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"blocks": out})
}

func (n *Node) handleBlock(ctx *fasthttp.RequestCtx, key string, add bool) {
	if msg := limiter.ValidateKey([]byte(key)); msg != "" {
		n.problem(ctx, badRequest(msg))
		return
	}
	var req struct {
		DurationSeconds float64 `json:"duration_seconds"`
		Reason          string  `json:"reason"`
	}
	if add {
		if perr := decodeBody(ctx, &req); perr != nil {
			n.problem(ctx, perr)
			return
		}
		if d := time.Duration(req.DurationSeconds * float64(time.Second)); d <= 0 || d > maxBlock {
			n.problem(ctx, badRequest("duration_seconds must be positive and at most 30 days"))
			return
		}
		if len(req.Reason) > maxBlockReason {
			n.problem(ctx, badRequest("reason is at most "+formatInt(maxBlockReason)+" bytes, got "+formatInt(int64(len(req.Reason)))))
			return
		}
	}
	var view BlockView
	err := n.changeShared(ctx, store.HashBlocks, key, func(now int64, raw string) (string, error) {
		if add && raw == "" && len(n.state.Load().blocks) >= n.cfg.MaxBlocks {
			return "", &problemError{status: fasthttp.StatusConflict, typ: "too-many-blocks",
				detail: "the cluster has max_blocks (" + formatInt(int64(n.cfg.MaxBlocks)) + ") live blocks: unblock some, or let them expire"}
		}
		if !add {
			if raw == "" {
				return "", &problemError{status: fasthttp.StatusNotFound, typ: "not-found", detail: "key " + strconvQuote(key) + " is not blocked"}
			}
			return "", nil
		}
		b := block{CreatedAt: time.UnixMicro(now).UTC(), Reason: req.Reason,
			ExpiresAt: time.UnixMicro(now + int64(req.DurationSeconds*1e6)).UTC()}
		view = BlockView{Key: key, ExpiresAt: b.ExpiresAt, RemainingMs: int64(req.DurationSeconds * 1000), CreatedAt: b.CreatedAt, Reason: b.Reason}
		enc, _ := json.Marshal(b)
		return string(enc), nil
	})
	if err != nil {
		n.storeProblem(ctx, err)
		return
	}
	n.hot.forget(key)
	n.afterWrite(ctx)
	if add {
		writeJSON(ctx, fasthttp.StatusOK, view)
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"key": key, "unblocked": true})
}

// changeShared sets hash[field] to what change returns from the current
// value ("" deletes it), with a compare-and-swap retried when another node
// wrote in between. Returning the current value changes nothing.
// It reads only the field: a block's create or delete read all of
// max_blocks blocks before (170 ms at 100,000).
func (n *Node) changeShared(ctx context.Context, hash, field string, change func(now int64, raw string) (string, error)) error {
	return n.swapShared(ctx, hash, field, false, func(snap store.Snapshot, raw string) (string, error) {
		return change(snap.Now, raw)
	})
}

// swapShared is changeShared for a change that may need the whole hash
// too (snap.Hashes[0], read only when whole is set).
func (n *Node) swapShared(ctx context.Context, hash, field string, whole bool, change func(snap store.Snapshot, raw string) (string, error)) error {
	ctx, cancel := context.WithTimeout(ctx, n.mgmtTimeout())
	defer cancel()
	for range 8 {
		n.metrics.redisOps["write"].Inc()
		var snap store.Snapshot
		var raw string
		var err error
		if whole {
			if snap, err = n.store.Read(ctx, hash); err == nil {
				raw = snap.Hashes[0][field]
			}
		} else {
			snap.Now, raw, err = n.store.ReadField(ctx, hash, field)
		}
		if err != nil {
			n.storeFailed("write", err)
			return err
		}
		next, err := change(snap, raw)
		if err != nil || next == raw {
			return err
		}
		ok, err := n.store.Swap(ctx, hash, field, raw, next)
		if err != nil {
			n.storeFailed("write", err)
			return err
		}
		if ok {
			return nil
		}
	}
	return errConflict
}

// CounterView is GET /api/v1/counters/{key}: the key's state, read without
// consuming anything.
type CounterView struct {
	Key          string            `json:"key"`
	Policy       string            `json:"policy"`
	Algorithm    limiter.Algorithm `json:"algorithm"`
	Limit        int64             `json:"limit"`
	Used         int64             `json:"used"`
	Remaining    int64             `json:"remaining"`
	ResetAfterMs int64             `json:"reset_after_ms"`
	Blocked      bool              `json:"blocked"`
}

func (n *Node) handleCounter(ctx *fasthttp.RequestCtx, key string, reset bool) {
	if msg := limiter.ValidateKey([]byte(key)); msg != "" {
		n.problem(ctx, badRequest(msg))
		return
	}
	if reset {
		rctx, cancel := context.WithTimeout(ctx, n.mgmtTimeout())
		n.metrics.redisOps["reset"].Inc()
		err := n.store.ResetCounter(rctx, key)
		cancel()
		if err != nil {
			n.storeFailed("reset", err)
			n.storeProblem(ctx, err)
			return
		}
		n.hot.forget(key)
		n.afterWrite(ctx)
		writeJSON(ctx, fasthttp.StatusOK, map[string]any{"key": key, "reset": true})
		return
	}
	st := n.state.Load()
	p := st.policyFor([]byte(key))
	if p == nil {
		n.problem(ctx, &problemError{status: fasthttp.StatusNotFound, typ: "not-found", detail: "no limit matches key " + strconvQuote(key)})
		return
	}
	items := []store.Item{{Key: key, Cost: 0, Limit: &p.Limit}}
	if err := n.decideStored(items, "peek", n.now()); err != nil {
		n.storeProblem(ctx, err)
		return
	}
	r := items[0].Result
	b, blocked := st.blocks[key]
	writeJSON(ctx, fasthttp.StatusOK, CounterView{Key: key, Policy: p.Name, Algorithm: p.Algorithm, Limit: p.Capacity(),
		Used: p.Capacity() - r.Remaining, Remaining: r.Remaining, ResetAfterMs: ceilMillis(r.ResetAfter),
		Blocked: blocked && n.now().UnixMicro() < b.until})
}
