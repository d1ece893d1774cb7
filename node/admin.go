package node

import (
	"context"
	"encoding/json"
	"sort"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"

	"github.com/ratelimiter/ratelimiter/limiter"
	"github.com/ratelimiter/ratelimiter/node/store"
)

const maxBlock = 30 * 24 * time.Hour

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
func (n *Node) changeShared(ctx context.Context, hash, field string, change func(now int64, raw string) (string, error)) error {
	return n.swapShared(ctx, hash, field, func(snap store.Snapshot, raw string) (string, error) { return change(snap.Now, raw) })
}

// swapShared is changeShared for a change that reads the whole hash too.
func (n *Node) swapShared(ctx context.Context, hash, field string, change func(snap store.Snapshot, raw string) (string, error)) error {
	ctx, cancel := context.WithTimeout(ctx, n.mgmtTimeout())
	defer cancel()
	for range 8 {
		n.metrics.redisOps["write"].Inc()
		snap, err := n.store.Read(ctx, hash)
		if err != nil {
			n.storeFailed("write", err)
			return err
		}
		raw := snap.Hashes[0][field]
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
	l := st.table.Match([]byte(key))
	if l == nil {
		n.problem(ctx, &problemError{status: fasthttp.StatusNotFound, typ: "not-found", detail: "no limit matches key " + strconvQuote(key)})
		return
	}
	p := st.policies[l.KeyPattern]
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

// handleBatch decides many checks with one store round trip. One invalid
// check fails the whole request, naming its index, so nothing is half done.
func (n *Node) handleBatch(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	if n.refuseDraining(ctx) {
		return
	}
	p := parsers.Get()
	defer parsers.Put(p)
	v, err := p.ParseBytes(ctx.PostBody())
	if err != nil {
		n.problem(ctx, badRequest("malformed JSON: "+err.Error()))
		return
	}
	cv := v.Get("checks")
	if cv == nil || cv.Type() != fastjson.TypeArray {
		n.problem(ctx, badRequest(`the body must be {"checks": [{"key": ..., "cost": ...}, ...]}`))
		return
	}
	arr, _ := cv.Array()
	if len(arr) == 0 || len(arr) > n.cfg.MaxBatch {
		n.problem(ctx, badRequest("a batch holds 1 to "+formatInt(int64(n.cfg.MaxBatch))+" checks"))
		return
	}
	st := n.state.Load()
	clock := n.now()
	now := clock.UnixMicro()
	ins := make([]checkInput, len(arr))
	out := make([]decision, len(arr))
	var items []store.Item
	var slots []int    // out index of each item
	var pols []*Policy // policy of each item
	for i, cv := range arr {
		in, perr := parseCheck(cv)
		var pol *Policy
		if perr == nil {
			if l := st.table.Match(in.key); l != nil {
				pol = st.policies[l.KeyPattern]
			}
			perr = in.validate(pol)
		}
		if perr != nil {
			perr.detail = "checks[" + formatInt(int64(i)) + "]: " + perr.detail
			n.problem(ctx, perr)
			return
		}
		ins[i] = in
		if pol == nil {
			out[i] = decision{reason: reasonNoLimit, allowed: n.cfg.Unmatched == "allow"}
			continue
		}
		if d, ok := n.localDecision(st, pol, in, now); ok {
			out[i] = d
			continue
		}
		items = append(items, store.Item{Key: string(in.key), Cost: in.cost, Limit: &pol.Limit})
		slots = append(slots, i)
		pols = append(pols, pol)
	}
	if len(items) > 0 {
		_ = n.decideStored(items, "check_batch", clock) // failures are per item
		for j, it := range items {
			out[slots[j]] = n.finish(pols[j], ins[slots[j]], it.Result, it.Err, now)
		}
	}
	body := append(make([]byte, 0, 128*len(out)), `{"results":[`...)
	for i := range out {
		if i > 0 {
			body = append(body, ',')
		}
		n.account(&out[i], ins[i].key, start, clock)
		body = appendDecision(body, &out[i], ins[i].key)
	}
	body = append(body, "]}"...)
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
}
