package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ratelimiter/ratelimiter/node/store"
)

// Idempotency-Key on mutating management calls: a client that lost the
// answer to a call (a timeout, a node that died after applying it) may send
// it again, to any node, and the cluster applies it once. The first node
// claims the key in the shared store before it applies the call and keeps
// the answer there; a repeat within idempotencyTTL gets that answer back
// (with Idempotent-Replayed: true) and changes nothing.

const (
	hashIdempotency = "idempotency"
	// idempotencyTTL is how long a key is honoured.
	idempotencyTTL = 10 * time.Minute
	// idempotencyPending is how long a claim without an answer stands: the
	// node holding it is applying the call. After that the node is taken
	// for dead before it applied anything it could answer for, and a repeat
	// may apply the call.
	idempotencyPending = 30 * time.Second
	maxIdempotencyKey  = 255
)

// idemRecord is one key in the shared idempotency hash.
type idemRecord struct {
	Fingerprint string `json:"fp"` // method, path and body of the first call
	At          int64  `json:"at"` // store clock (µs) of the claim, or of the answer
	Node        string `json:"node"`
	Done        bool   `json:"done"`
	Status      int    `json:"status,omitempty"`
	Type        string `json:"type,omitempty"`
	Body        string `json:"body,omitempty"`
}

// idempotent runs apply at most once per Idempotency-Key across the
// cluster; without the header it just runs it.
func (n *Node) idempotent(ctx *fasthttp.RequestCtx, apply func()) {
	key := string(ctx.Request.Header.Peek("Idempotency-Key"))
	if key == "" {
		apply()
		return
	}
	if len(key) > maxIdempotencyKey {
		n.problem(ctx, badRequest("Idempotency-Key is longer than "+strconv.Itoa(maxIdempotencyKey)+" bytes"))
		return
	}
	h := sha256.New()
	h.Write(ctx.Method())
	h.Write([]byte{0})
	h.Write(ctx.URI().RequestURI())
	h.Write([]byte{0})
	h.Write(ctx.PostBody())
	fp := hex.EncodeToString(h.Sum(nil))

	raw, p := n.claimIdempotency(ctx, key, fp)
	if p != nil {
		n.problem(ctx, p)
		return
	}
	if raw == "" { // answered from the first call
		return
	}
	apply()

	// Keep the answer for repeats; a 5xx (the store was away) is not an
	// answer: the claim goes, so a repeat applies the call.
	status := ctx.Response.StatusCode()
	next := ""
	if status < 500 {
		rec := idemRecord{Fingerprint: fp, At: n.now().UnixMicro(), Node: n.id, Done: true, Status: status,
			Type: string(ctx.Response.Header.ContentType()), Body: string(ctx.Response.Body())}
		b, _ := json.Marshal(rec)
		next = string(b)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.mgmtTimeout())
	defer cancel()
	if _, err := n.store.Swap(sctx, hashIdempotency, key, raw, next); err != nil {
		n.log.Warn("cannot store the answer of an idempotent call: a repeat within 30 s gets 409, later ones apply it again",
			"key", key, "err", err)
	}
}

// claimIdempotency claims key for this node, or answers ctx from an
// earlier call. It returns the stored claim (to swap for the answer), ""
// when it answered, or a problem.
func (n *Node) claimIdempotency(ctx *fasthttp.RequestCtx, key, fp string) (string, *problemError) {
	var claim string
	var replay *idemRecord
	var last store.Snapshot
	err := n.swapShared(ctx, hashIdempotency, key, true, func(snap store.Snapshot, old string) (string, error) {
		last, claim, replay = snap, "", nil
		var rec idemRecord
		if old != "" && json.Unmarshal([]byte(old), &rec) == nil && !rec.expired(snap.Now) {
			if rec.Fingerprint != fp {
				return "", &problemError{status: fasthttp.StatusUnprocessableEntity, typ: "idempotency-key-reused",
					detail: "this Idempotency-Key was used for a different request (method, path or body) in the last " + idempotencyTTL.String()}
			}
			if !rec.Done {
				return "", &problemError{status: fasthttp.StatusConflict, typ: "idempotency-in-progress",
					detail: "a request with this Idempotency-Key is being applied by node " + rec.Node + "; repeat it shortly for its answer"}
			}
			replay = &rec
			return old, nil // unchanged: no write
		}
		b, _ := json.Marshal(idemRecord{Fingerprint: fp, At: snap.Now, Node: n.id})
		claim = string(b)
		return claim, nil
	})
	if last.Hashes != nil {
		pctx, cancel := context.WithTimeout(ctx, n.mgmtTimeout())
		n.pruneIdempotency(pctx, last)
		cancel()
	}
	var p *problemError
	switch {
	case errors.As(err, &p):
		return "", p
	case errors.Is(err, errConflict):
		return "", &problemError{status: fasthttp.StatusConflict, typ: "idempotency-in-progress",
			detail: "the Idempotency-Key is contended; repeat the request"}
	case err != nil:
		return "", &problemError{status: fasthttp.StatusServiceUnavailable, typ: "store-unavailable",
			detail: "cannot claim the Idempotency-Key in the shared store: " + err.Error()}
	case replay != nil:
		ctx.SetStatusCode(replay.Status)
		ctx.SetContentType(replay.Type)
		ctx.Response.Header.Set("Idempotent-Replayed", "true")
		ctx.SetBodyString(replay.Body)
		return "", nil
	}
	return claim, nil
}

func (r idemRecord) expired(now int64) bool {
	ttl := idempotencyTTL
	if !r.Done {
		ttl = idempotencyPending
	}
	return now-r.At > ttl.Microseconds()
}

// pruneIdempotency drops every expired key it was shown, so the hash stays
// about as large as the mutating calls of the last ten minutes.
func (n *Node) pruneIdempotency(ctx context.Context, snap store.Snapshot) {
	// In one round trip and without a new version, as expired blocks: no
	// node's state holds these records. One compare-and-swap each (at
	// most 16 a write) bumped the version each time, so every node read
	// the shared hashes again: 50 expired records cost one write 16 more
	// versions and 34 were left.
	expired := map[string]string{}
	for k, v := range snap.Hashes[0] {
		var rec idemRecord
		if json.Unmarshal([]byte(v), &rec) == nil && !rec.expired(snap.Now) {
			continue
		}
		expired[k] = v
	}
	if len(expired) > 0 {
		_ = n.store.Prune(ctx, hashIdempotency, expired)
	}
}
