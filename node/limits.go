package node

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ratelimiter/ratelimiter/limiter"
	"github.com/ratelimiter/ratelimiter/node/store"
)

var errConflict = errors.New("the value kept changing under concurrent writers; try again")

// changeLimit applies change to the stored record of pattern (see
// changeShared); change returns nil to leave the record alone.
func (n *Node) changeLimit(ctx context.Context, pattern string, change func(now time.Time, cur *limitRecord) (*limitRecord, error)) (*limitRecord, error) {
	var rec *limitRecord
	err := n.changeShared(ctx, store.HashLimits, pattern, func(now int64, raw string) (string, error) {
		var cur *limitRecord
		if raw != "" {
			cur = new(limitRecord)
			if err := json.Unmarshal([]byte(raw), cur); err != nil {
				return "", errors.New("stored limit is unreadable: " + err.Error())
			}
		}
		next, err := change(time.UnixMicro(now).UTC(), cur)
		if err != nil || next == nil {
			rec = cur
			return raw, err
		}
		rec = next
		enc, _ := json.Marshal(next)
		return string(enc), nil
	})
	return rec, err
}

// history returns cur without its own history, to become the next
// record's previous version.
func history(cur *limitRecord) *limitRecord {
	if cur == nil {
		return nil
	}
	h := *cur
	h.Previous = nil
	return &h
}

func putLimit(l limiter.Limit, source string) func(time.Time, *limitRecord) (*limitRecord, error) {
	return func(now time.Time, cur *limitRecord) (*limitRecord, error) {
		if cur != nil && !cur.Deleted && cur.Limit == l && cur.Source == source {
			return nil, nil // unchanged: keep the history meaningful
		}
		next := &limitRecord{Limit: l, CreatedAt: now, UpdatedAt: now, Source: source, Previous: history(cur)}
		if cur != nil && !cur.Deleted {
			next.CreatedAt = cur.CreatedAt
		}
		if cur == nil { // "did not exist" is a version too: rolling back a creation deletes
			next.Previous = &limitRecord{Limit: l, CreatedAt: now, UpdatedAt: now, Source: source, Deleted: true}
		}
		return next, nil
	}
}

// seedLimits writes the file's limits into the store. The file is the
// starting set: a limit changed or deleted through the API stays as the
// API left it; a limit that still comes from the file follows the file.
func (n *Node) seedLimits(ctx context.Context) error {
	for _, l := range n.cfg.Limits {
		_, err := n.changeLimit(ctx, l.KeyPattern, func(now time.Time, cur *limitRecord) (*limitRecord, error) {
			if cur != nil && (cur.Source != "config" || cur.Deleted) {
				return nil, nil
			}
			return putLimit(l, "config")(now, cur)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (n *Node) handleLimits(ctx *fasthttp.RequestCtx) {
	st := n.state.Load()
	out := make([]limitRecord, 0, len(st.limits))
	for _, r := range st.limits {
		if !r.Deleted || ctx.QueryArgs().GetBool("deleted") {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].KeyPattern < out[j].KeyPattern })
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"limits": out, "unmatched": n.cfg.Unmatched, "version": n.version.Load(),
		"descriptors": n.descriptorRecords()})
}

func (n *Node) handlePutLimit(ctx *fasthttp.RequestCtx) {
	var l limiter.Limit
	if perr := decodeBody(ctx, &l); perr != nil {
		n.problem(ctx, perr)
		return
	}
	l.Normalize()
	if err := l.Validate(); err != nil {
		n.problem(ctx, badRequest("invalid limit: "+err.Error()))
		return
	}
	var created bool
	rec, err := n.changeLimit(ctx, l.KeyPattern, func(now time.Time, cur *limitRecord) (*limitRecord, error) {
		created = cur == nil || cur.Deleted
		if created && n.liveLimits() >= n.cfg.MaxLimits {
			return nil, &problemError{status: fasthttp.StatusConflict, typ: "too-many-limits",
				detail: "the cluster has max_limits (" + formatInt(int64(n.cfg.MaxLimits)) + ") limits: delete one first"}
		}
		return putLimit(l, "api")(now, cur)
	})
	if err != nil {
		n.storeProblem(ctx, err)
		return
	}
	n.afterWrite(ctx)
	status := fasthttp.StatusOK
	if created {
		status = fasthttp.StatusCreated
	}
	writeJSON(ctx, status, rec)
}

// liveLimits counts the limits in force as of the last sync. Nodes sync
// within a second, so concurrent creations through several nodes may pass
// the cap by a few: it bounds memory, it is not an exact quota.
func (n *Node) liveLimits() int {
	c := 0
	for _, r := range n.state.Load().limits {
		if !r.Deleted {
			c++
		}
	}
	return c
}

func (n *Node) handleDeleteLimit(ctx *fasthttp.RequestCtx, pattern string) {
	rec, err := n.changeLimit(ctx, pattern, func(now time.Time, cur *limitRecord) (*limitRecord, error) {
		if cur == nil || cur.Deleted {
			return nil, &problemError{status: fasthttp.StatusNotFound, typ: "not-found", detail: "no limit with pattern " + strconvQuote(pattern)}
		}
		return &limitRecord{Limit: cur.Limit, CreatedAt: cur.CreatedAt, UpdatedAt: now, Source: "api", Deleted: true, Previous: history(cur)}, nil
	})
	if err != nil {
		n.storeProblem(ctx, err)
		return
	}
	n.afterWrite(ctx)
	writeJSON(ctx, fasthttp.StatusOK, rec)
}

// handleRollback restores a limit's previous version (which may be "it did
// not exist" or "it was deleted"); rolling back twice undoes the rollback.
// Because of that, ?if_updated_at=TIME makes the rollback conditional on
// the version the caller saw: two operators (or two tickets) that both saw
// a bad change roll it back once, and the second gets 412 instead of
// restoring the bad version.
func (n *Node) handleRollback(ctx *fasthttp.RequestCtx, pattern string) {
	var want time.Time
	if raw := string(ctx.QueryArgs().Peek("if_updated_at")); raw != "" {
		t, err := time.Parse(time.RFC3339Nano, raw)
		if err != nil {
			n.problem(ctx, badRequest("if_updated_at is not an RFC 3339 time: "+strconvQuote(raw)))
			return
		}
		want = t
	}
	rec, err := n.changeLimit(ctx, pattern, func(now time.Time, cur *limitRecord) (*limitRecord, error) {
		if cur == nil || cur.Previous == nil {
			return nil, &problemError{status: fasthttp.StatusConflict, typ: "no-previous-version", detail: "limit " + strconvQuote(pattern) + " has no previous version"}
		}
		if !want.IsZero() && !cur.UpdatedAt.Equal(want) {
			return nil, &problemError{status: fasthttp.StatusPreconditionFailed, typ: "version-changed",
				detail: "limit " + strconvQuote(pattern) + " was updated at " + cur.UpdatedAt.Format(time.RFC3339Nano) + ", not at " + want.Format(time.RFC3339Nano)}
		}
		p := cur.Previous
		return &limitRecord{Limit: p.Limit, CreatedAt: cur.CreatedAt, UpdatedAt: now, Source: "api", Deleted: p.Deleted, Previous: history(cur)}, nil
	})
	if err != nil {
		n.storeProblem(ctx, err)
		return
	}
	n.afterWrite(ctx)
	writeJSON(ctx, fasthttp.StatusOK, rec)
}

// afterWrite applies a change on this node at once; the others follow
// within a sync interval.
func (n *Node) afterWrite(ctx context.Context) {
	if err := n.sync(ctx, true); err != nil {
		n.log.Warn("sync after write failed", "err", err)
	}
}
