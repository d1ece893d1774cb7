package node

import (
	"bytes"
	"context"
	"strconv"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"

	"github.com/ratelimiter/ratelimiter/limiter"
	"github.com/ratelimiter/ratelimiter/node/store"
)

// Reasons given with a decision.
const (
	reasonWithin     = "within_limit"
	reasonLimit      = "limit"
	reasonBlocked    = "blocked"
	reasonShadow     = "shadow"
	reasonFailOpen   = "fail_open"
	reasonFailClosed = "fail_closed"
	reasonNoLimit    = "no_limit"
)

var parsers fastjson.ParserPool

// decision is the outcome of one check, ready to be written out.
type decision struct {
	policy  *Policy // nil when no limit matched
	res     limiter.Result
	reason  string
	allowed bool
}

// checkInput is a validated check request.
type checkInput struct {
	key  []byte
	cost int64
	// denyStatus answers a denied GET (forward-auth); see checkQuery.
	denyStatus int
}

// problemError is a request problem to answer with application/problem+json.
type problemError struct {
	status int
	typ    string
	detail string
}

func (e *problemError) Error() string { return e.detail }

func badRequest(detail string) *problemError {
	return &problemError{status: fasthttp.StatusBadRequest, typ: "invalid-request", detail: detail}
}

// validate checks the key and the cost against the policy that matched it.
func (in *checkInput) validate(p *Policy) *problemError {
	if msg := limiter.ValidateKey(in.key); msg != "" {
		return badRequest(msg)
	}
	if bytes.HasPrefix(in.key, envoyKeyPrefixBytes) {
		// Envoy's counters count on the same Redis keys: under an HTTP
		// limit that matched it, a check on envoy:web|user=bob spent bob's
		// descriptor budget.
		return badRequest("a key starting with " + strconv.Quote(envoyKeyPrefix) + " is an Envoy descriptor's counter; an HTTP check may not spend it")
	}
	if in.cost <= 0 {
		return badRequest("cost must be a positive integer")
	}
	if p != nil && in.cost > p.CostLimit() {
		return badRequest("cost " + strconv.FormatInt(in.cost, 10) + " exceeds max_cost " +
			strconv.FormatInt(p.CostLimit(), 10) + " of policy " + strconv.Quote(p.Name))
	}
	return nil
}

// parseCheck reads one {"key": ..., "cost": ...} object.
func parseCheck(v *fastjson.Value) (checkInput, *problemError) {
	in := checkInput{cost: 1}
	if v.Type() != fastjson.TypeObject {
		return in, badRequest("a check must be a JSON object with a \"key\"")
	}
	kv := v.Get("key")
	if kv == nil || kv.Type() != fastjson.TypeString {
		return in, badRequest("\"key\" must be a JSON string")
	}
	in.key, _ = kv.StringBytes()
	if cv := v.Get("cost"); cv != nil {
		c, err := cv.Int64()
		if err != nil {
			return in, badRequest("\"cost\" must be an integer")
		}
		in.cost = c
	}
	return in, nil
}

// handleCheck serves POST and GET /api/v1/check. GET is the forward-auth
// form: the decision is in the status and headers, the body is empty.
func (n *Node) handleCheck(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	if n.refuseDraining(ctx) {
		return
	}
	var in checkInput
	var perr *problemError
	if ctx.IsPost() {
		p := parsers.Get()
		defer parsers.Put(p)
		v, err := p.ParseBytes(ctx.PostBody())
		if err != nil {
			perr = badRequest("malformed JSON: " + err.Error())
		} else {
			in, perr = parseCheck(v)
		}
	} else {
		in, perr = n.checkQuery(ctx)
	}
	if perr != nil {
		n.metrics.badRequests.Inc()
		n.problem(ctx, perr)
		return
	}
	st := n.state.Load()
	p := st.policyFor(in.key)
	if perr = in.validate(p); perr != nil {
		n.metrics.badRequests.Inc()
		n.problem(ctx, perr)
		return
	}
	now := n.now() // one reading of the node clock per check
	d := n.decide(st, p, in, now)
	n.account(&d, in.key, start, now)
	n.writeDecision(ctx, &d, in.key, ctx.IsPost())
	if !d.allowed && in.denyStatus != 0 {
		ctx.SetStatusCode(in.denyStatus)
	}
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
			pol = st.policyFor(in.key)
			perr = in.validate(pol)
		}
		if perr != nil {
			perr.detail = "checks[" + formatInt(int64(i)) + "]: " + perr.detail
			n.problem(ctx, perr)
			return
		}
		ins[i] = in
		if pol == nil {
			out[i] = n.unmatched()
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

// unmatched is the answer for a key no limit matches: unmatched = "allow"
// or "deny".
func (n *Node) unmatched() decision {
	return decision{reason: reasonNoLimit, allowed: n.cfg.Unmatched == "allow"}
}

// policyFor is the policy of the limit that matches key, nil for none.
func (st *sharedState) policyFor(key []byte) *Policy {
	if l := st.table.Match(key); l != nil {
		return st.policies[l.KeyPattern]
	}
	return nil
}

// refuseDraining answers a check with 503 while this node drains, so a load
// balancer moves the traffic elsewhere.
func (n *Node) refuseDraining(ctx *fasthttp.RequestCtx) bool {
	if n.selfState() != stateDraining {
		return false
	}
	n.problem(ctx, &problemError{status: fasthttp.StatusServiceUnavailable, typ: "temporary-reduced-capacity",
		detail: "node " + n.id + " is draining; send checks to another node"})
	return true
}

// decide answers one valid check: blocks and cached denials locally, the
// rest from the store, by the failure mode when the store fails.
func (n *Node) decide(st *sharedState, p *Policy, in checkInput, clock time.Time) decision {
	if p == nil {
		return n.unmatched()
	}
	now := clock.UnixMicro()
	if d, ok := n.localDecision(st, p, in, now); ok {
		return d
	}
	items := n.items.Get().(*[1]store.Item)
	items[0] = store.Item{Key: unsafeString(in.key), Cost: in.cost, Limit: &p.Limit}
	err := n.decideStored(items[:], "check", clock)
	res := items[0].Result
	items[0] = store.Item{}
	n.items.Put(items)
	return n.finish(p, in, res, err, now)
}

// localDecision answers blocked keys and keys known to be over their limit.
func (n *Node) localDecision(st *sharedState, p *Policy, in checkInput, now int64) (decision, bool) {
	if b, ok := st.blocks[unsafeString(in.key)]; ok && now < b.until {
		wait := b.until - now
		return decision{policy: p, reason: reasonBlocked, res: limiter.Result{ResetAfter: wait, RetryAfter: wait, NextAfter: wait}}, true
	}
	// A remembered denial answers until more quota comes, not until the
	// cost fits: after that the store knows the next moment, the cache not.
	if c, ok := n.denies.get(in.key, p, in.cost, now); ok && c.nextAt > now {
		n.metrics.localDenials.Inc()
		wait := c.until - now
		return decision{policy: p, reason: reasonLimit, res: limiter.Result{
			ResetAfter: max(c.resetAt-now, wait), RetryAfter: wait, NextAfter: c.nextAt - now}}, true
	}
	return decision{}, false
}

// decideStored asks the store, bounded by the Redis timeout (through a
// shared deadline; the in-process store never waits and needs none).
func (n *Node) decideStored(items []store.Item, op string, clock time.Time) error {
	ctx := context.Background()
	t0 := time.Now()
	if !n.inProcess {
		ctx = n.deadlines.Get(t0)
	}
	n.calls.Add(1)
	err := n.store.Decide(ctx, items)
	took := time.Since(t0)
	n.metrics.redisOps[op].Inc()
	n.metrics.redisLatency.Update(took.Seconds())
	sl := n.stats.slot(clock)
	sl.redisCalls.Add(1)
	sl.redisMicros.Add(took.Microseconds())
	if err != nil {
		n.storeFailed(op, err)
		sl.errors.Add(1)
		return err
	}
	if !n.connected.Load() {
		n.storeOK()
	}
	return nil
}

// finish turns a store result (or failure) into a decision, applying shadow
// mode and remembering denials.
func (n *Node) finish(p *Policy, in checkInput, res limiter.Result, err error, now int64) decision {
	if err != nil {
		if p.failOpen {
			return decision{policy: p, reason: reasonFailOpen, allowed: true}
		}
		return decision{policy: p, reason: reasonFailClosed, res: limiter.Result{RetryAfter: 1e6, ResetAfter: 1e6, NextAfter: 1e6}}
	}
	d := decision{policy: p, res: res, allowed: res.Allowed, reason: reasonWithin}
	if !res.Allowed {
		d.reason = reasonLimit
		if p.Shadow {
			d.allowed, d.reason = true, reasonShadow
		} else if res.RetryAfter > 0 && res.Remaining == 0 && !p.perRequest {
			// With nothing left, no node can admit anything before more
			// quota comes, so until then the answer stays exact, r and t
			// included. A denial with units left (a cost too large) is not
			// kept: a cheaper request may take them, here or elsewhere.
			// Nor is one of a policy compiled for its request, which no
			// other request could match: 100 such denials took 100 of
			// the cache's entries and answered nothing.
			n.denies.put(in.key, denial{policy: p, cost: in.cost, until: now + res.RetryAfter, resetAt: now + res.ResetAfter,
				nextAt: now + res.NextAfter})
		}
	}
	return d
}

// account updates the metrics, rolling stats, key sketch and hot keys.
func (n *Node) account(d *decision, key []byte, start, now time.Time) {
	took := time.Since(start)
	n.metrics.duration.Update(took.Seconds())
	sl := n.stats.slot(now)
	sl.requests.Add(1)
	sl.lat[latBucket(took.Microseconds())].Add(1)
	if d.allowed {
		n.metrics.allowed.Inc()
		sl.allowed.Add(1)
	} else {
		n.metrics.denied.Inc()
		sl.denied.Add(1)
	}
	switch d.reason {
	case reasonShadow:
		n.metrics.shadow.Inc()
		sl.shadow.Add(1)
	case reasonFailOpen:
		n.metrics.failOpen.Inc()
		sl.failOpen.Add(1)
	case reasonFailClosed:
		n.metrics.failCl.Inc()
		sl.failClosed.Add(1)
	}
	n.keys[n.keysCur.Load()].add(key)
	// Blocked keys are already handled; failure-mode answers say nothing of
	// the key; a shadow limit is a dry run, and none of its decisions may
	// get a key hard-blocked. None of them makes a key hot.
	if d.policy != nil && d.reason != reasonFailOpen && d.reason != reasonFailClosed && d.reason != reasonBlocked && !d.policy.Shadow {
		n.hot.record(key, d.policy, d.res.Remaining, d.reason != reasonWithin, now.UnixMicro())
	}
}

// writeDecision writes the status, the IETF RateLimit headers and, for
// POST, the JSON body, without allocating.
func (n *Node) writeDecision(ctx *fasthttp.RequestCtx, d *decision, key []byte, body bool) {
	status := fasthttp.StatusOK
	if !d.allowed {
		status = fasthttp.StatusTooManyRequests
	}
	ctx.SetStatusCode(status)
	h := &ctx.Response.Header
	var buf [64]byte
	if p := d.policy; p != nil && (!p.Shadow || n.cfg.AdvertiseShadow) {
		h.SetCanonical(hdrPolicy, p.policyHeader)
		if d.reason != reasonFailOpen { // nothing is known of the key then: no claim
			r, t := rateLimitFields(p, &d.res)
			b := append(buf[:0], p.quotedName...)
			b = append(b, ";r="...)
			b = strconv.AppendInt(b, r, 10)
			b = append(b, ";t="...)
			b = strconv.AppendInt(b, t, 10)
			h.SetCanonical(hdrRateLimit, b)
		}
	}
	if !d.allowed {
		h.SetCanonical(hdrRetryAfter, strconv.AppendInt(buf[:0], max(ceilSeconds(d.res.RetryAfter), 1), 10))
	}
	if !body {
		return
	}
	h.SetContentTypeBytes(ctJSON)
	// Append straight into the response's pooled body buffer.
	ctx.Response.SwapBody(appendDecision(ctx.Response.SwapBody(nil)[:0], d, key))
}

func appendDecision(b []byte, d *decision, key []byte) []byte {
	b = append(b, `{"allowed":`...)
	b = strconv.AppendBool(b, d.allowed)
	b = append(b, `,"key":`...)
	b = appendJSONString(b, key)
	b = append(b, `,"policy":`...)
	if d.policy != nil {
		b = appendJSONString(b, unsafeBytes(d.policy.Name))
		b = append(b, `,"limit":`...)
		b = strconv.AppendInt(b, d.policy.MaxRequests, 10)
	} else {
		b = append(b, `null,"limit":0`...)
	}
	b = append(b, `,"remaining":`...)
	b = strconv.AppendInt(b, d.res.Remaining, 10)
	b = append(b, `,"reset_after_ms":`...)
	b = strconv.AppendInt(b, ceilMillis(d.res.ResetAfter), 10)
	b = append(b, `,"retry_after_ms":`...)
	b = strconv.AppendInt(b, ceilMillis(d.res.RetryAfter), 10)
	b = append(b, `,"reason":"`...)
	b = append(b, d.reason...)
	return append(b, `"}`...)
}

var (
	hdrPolicy     = []byte("RateLimit-Policy")
	hdrRateLimit  = []byte("RateLimit")
	hdrRetryAfter = []byte("Retry-After")
	ctJSON        = []byte("application/json")
)

func ceilSeconds(us int64) int64 { return (max(us, 0) + 999_999) / 1_000_000 }
func ceilMillis(us int64) int64  { return (max(us, 0) + 999) / 1000 }

// appendJSONString quotes s; keys are valid UTF-8 without control bytes,
// so only quotes and backslashes need escaping.
func appendJSONString(b, s []byte) []byte {
	b = append(b, '"')
	for _, c := range s {
		if c == '"' || c == '\\' {
			b = append(b, '\\')
		}
		b = append(b, c)
	}
	return append(b, '"')
}

// unsafeString views b as a string without copying; the string must not
// outlive b's memory (a request buffer), so anything kept must be copied.
func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

func unsafeBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }
