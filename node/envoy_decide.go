package node

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rls "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ratelimiter/ratelimiter/limiter"
	"github.com/ratelimiter/ratelimiter/node/descriptors"
	"github.com/ratelimiter/ratelimiter/node/store"
)

// Bounds on one Envoy request, so a hostile request costs bounded memory.
// The descriptor files are held to the same bounds.
const (
	maxEnvoyEntries    = descriptors.MaxEntries    // entries of one descriptor
	maxEnvoyEntryBytes = descriptors.MaxEntryBytes // one key or value
	// maxOverrideNameKey cuts each key in the name of a limit sent with a
	// descriptor, as request values are cut in detailed series names.
	maxOverrideNameKey = 64
)

var unitEnums = map[string]rls.RateLimitResponse_RateLimit_Unit{
	"second": rls.RateLimitResponse_RateLimit_SECOND, "minute": rls.RateLimitResponse_RateLimit_MINUTE,
	"hour": rls.RateLimitResponse_RateLimit_HOUR, "day": rls.RateLimitResponse_RateLimit_DAY,
	"week": rls.RateLimitResponse_RateLimit_WEEK, "month": rls.RateLimitResponse_RateLimit_MONTH,
	"year": rls.RateLimitResponse_RateLimit_YEAR,
}

var unitSeconds = map[rls.RateLimitResponse_RateLimit_Unit]int64{
	rls.RateLimitResponse_RateLimit_SECOND: 1, rls.RateLimitResponse_RateLimit_MINUTE: 60,
	rls.RateLimitResponse_RateLimit_HOUR: 3600, rls.RateLimitResponse_RateLimit_DAY: 86400,
	rls.RateLimitResponse_RateLimit_WEEK: 7 * 86400, rls.RateLimitResponse_RateLimit_MONTH: 30 * 86400,
	rls.RateLimitResponse_RateLimit_YEAR: 365 * 86400,
}

// envoyItem is one descriptor of a request on its way to a decision.
type envoyItem struct {
	limit  *descriptors.Limit // nil: no limit applies
	policy *Policy            // nil for unlimited and zero limits
	unit   rls.RateLimitResponse_RateLimit_Unit
	key    []byte // counter key, in the request's scratch memory
	keyEnd int    // where key ends in the scratch keys while they grow
	metric string // descriptor series name
	cost   int64
	d      decision
	done   bool
}

// envoyScratch is one request's working memory, reused through a pool so
// that a decision allocates little more than its response. Nothing in it
// outlives the request: what the node keeps of a key (hot keys, the deny
// cache) it copies, as it must for HTTP keys, which alias fasthttp's
// buffers.
type envoyScratch struct {
	items   []envoyItem
	keys    []byte // every counter key of the request, back to back
	entries []descriptors.Entry
	batch   []store.Item
	slots   []int
}

var envoyScratches = sync.Pool{New: func() any { return new(envoyScratch) }}

// A pooled scratch keeps buffers up to these sizes; a larger request's
// (up to max_batch descriptors of 32 entries of 1 KiB) go to the garbage
// collector, so the pool never holds on to what a hostile request made.
const (
	maxScratchKeys  = 16 << 10 // bytes
	maxScratchItems = 64       // descriptors
)

func (sc *envoyScratch) release() {
	clear(sc.items) // the limits, policies and keys they point to
	clear(sc.batch)
	clear(sc.entries[:cap(sc.entries)]) // the request's strings
	if cap(sc.keys) > maxScratchKeys {
		sc.keys = nil
	}
	if cap(sc.items) > maxScratchItems {
		sc.items, sc.batch, sc.slots = nil, nil, nil
	}
	envoyScratches.Put(sc)
}

// envoyAnswer is a response with room for what it points to in the common
// case, one descriptor and at most three headers, allocated as one.
type envoyAnswer struct {
	resp     rls.RateLimitResponse
	statuses [1]*rls.RateLimitResponse_DescriptorStatus
	headers  [3]*corev3.HeaderValue
	values   [3]corev3.HeaderValue
}

// setHeaders sets the response's headers from key, value pairs.
func (a *envoyAnswer) setHeaders(kv ...string) []*corev3.HeaderValue {
	hs := a.headers[:0]
	for i := 0; i < len(kv); i += 2 {
		h := &a.values[i/2]
		h.Key, h.Value = kv[i], kv[i+1]
		hs = append(hs, h)
	}
	return hs
}

// envoyStatus is one descriptor's status with the messages it points to,
// allocated together.
type envoyStatus struct {
	status rls.RateLimitResponse_DescriptorStatus
	limit  rls.RateLimitResponse_RateLimit
	reset  durationpb.Duration
}

// shouldRateLimit decides one RateLimitRequest through the node's decision
// path: blocks, the deny cache, the store in one round trip for every
// descriptor, the failure mode and shadow mode, as for HTTP checks.
func (n *Node) shouldRateLimit(req *rls.RateLimitRequest) (*rls.RateLimitResponse, error) {
	start := time.Now()
	if n.selfState() == stateDraining {
		n.envoy.requests["error"].Inc()
		return nil, status.Error(codes.Unavailable, "node "+n.id+" is draining; send requests to another node")
	}
	if err := n.checkEnvoyRequest(req); err != nil {
		n.envoy.requests["error"].Inc()
		n.metrics.badRequests.Inc()
		return nil, err
	}
	es := n.envoy.state.Load()
	st := n.state.Load()
	clock := n.now()
	now := clock.UnixMicro()

	sc := envoyScratches.Get().(*envoyScratch)
	defer sc.release()
	items := slices.Grow(sc.items[:0], len(req.Descriptors))[:len(req.Descriptors)]
	sc.items = items
	keys := sc.keys[:0]
	replaced := map[string]bool{}
	for i, d := range req.Descriptors {
		it := &items[i]
		entries := sc.entries[:0]
		for _, e := range d.Entries {
			entries = append(entries, descriptors.Entry{Key: e.Key, Value: e.Value})
		}
		sc.entries = entries
		it.cost = int64(max(req.HitsAddend, 1)) // 0 means 1, as in Envoy
		if h := d.GetHitsAddend(); h != nil {
			it.cost = int64(min(h.Value, math.MaxInt32)) // set explicitly: 0 reads without consuming
		}
		// A limit sent with the descriptor applies only in a loaded domain,
		// as in envoyproxy/ratelimit: the domain goes into every counter
		// key and series name, and a request names it freely.
		if o := d.GetLimit(); o != nil && es.cfg.Domains[req.Domain] != nil {
			keys = n.overrideLimit(it, keys, req.Domain, entries, o)
			it.keyEnd = len(keys)
			continue
		}
		m, withKey, ok := es.cfg.AppendMatch(append(keys, envoyKeyPrefix...), req.Domain, entries)
		if !ok {
			continue
		}
		keys = withKey
		it.keyEnd = len(keys)
		it.limit, it.policy, it.unit = m.Limit, es.policies[m.Limit.ID], unitEnums[m.Limit.Unit]
		it.metric = m.Metric // "" unless request values name the series
		for _, r := range m.Limit.Replaces {
			replaced[r] = true
		}
	}
	sc.keys = keys
	// The keys are cut only now that the buffer no longer moves.
	from := 0
	for i := range items {
		if it := &items[i]; it.keyEnd > 0 {
			it.key = keys[from:it.keyEnd:it.keyEnd]
			from = it.keyEnd
		}
	}

	// A limit named by another matched limit's replaces is not evaluated.
	batch, slots := sc.batch[:0], sc.slots[:0]
	for i := range items {
		it := &items[i]
		if it.limit == nil {
			continue
		}
		if it.limit.Name != "" && replaced[it.limit.Name] {
			it.limit, it.policy = nil, nil
			continue
		}
		switch {
		case it.limit.Unlimited:
			it.d, it.done = decision{allowed: true, reason: reasonWithin}, true
		case it.policy == nil: // requests_per_unit: 0 denies everything
			w := it.limit.WindowSeconds * 1e6
			reset := w - now%w
			it.d, it.done = decision{reason: reasonLimit, res: limiter.Result{ResetAfter: reset, RetryAfter: reset}}, true
		default:
			// A cost beyond the capacity is denied either way; the clamp
			// keeps the store's arithmetic within its bounds.
			it.cost = min(it.cost, it.policy.Capacity()+1)
			in := checkInput{key: it.key, cost: it.cost}
			if d, ok := n.localDecision(st, it.policy, in, now); ok {
				it.d, it.done = d, true
				continue
			}
			batch = append(batch, store.Item{Key: unsafeString(it.key), Cost: it.cost, Limit: &it.policy.Limit})
			slots = append(slots, i)
		}
	}
	sc.batch, sc.slots = batch, slots
	if len(batch) > 0 {
		op := "check_batch"
		if len(batch) == 1 {
			op = "check"
		}
		err := n.decideStored(batch, op, clock)
		if err != nil && n.cfg.EnvoyStoreErrors {
			n.envoy.requests["error"].Inc()
			return nil, status.Error(codes.Unavailable, "the store did not answer: "+err.Error())
		}
		for j, b := range batch {
			it := &items[slots[j]]
			it.d = n.finish(it.policy, checkInput{key: it.key, cost: it.cost}, b.Result, b.Err, now)
			it.done = true
		}
	}
	return n.envoyResponse(req, items, start, clock), nil
}

// overrideLimit applies a limit Envoy sent with the descriptor itself,
// which takes the place of any configured one, as envoyproxy/ratelimit does.
// It appends the counter key to keys.
func (n *Node) overrideLimit(it *envoyItem, keys []byte, domain string, entries []descriptors.Entry, o *rlcommon.RateLimitDescriptor_RateLimitOverride) []byte {
	u := rls.RateLimitResponse_RateLimit_Unit(o.Unit)
	w, ok := unitSeconds[u]
	if !ok {
		return keys // an unknown unit limits nothing
	}
	// The domain and every entry are escaped as in a configured
	// descriptor's key, so no two overrides share a counter, and none shares
	// one with a configured descriptor: a configured key of domain
	// "override" has an unescaped = in its second part, an override's
	// second part (its escaped domain) never does. Before, [a="b|c=d"] and
	// [a=b, c=d] spent one budget.
	keys = append(keys, envoyKeyPrefix+"override|"...)
	keys = descriptors.AppendEscaped(keys, domain)
	// The name (its series, its RateLimit header item) holds each key cut
	// at maxOverrideNameKey bytes: 10,000 series named by 32 keys of 512
	// bytes held about 330 MiB.
	var name strings.Builder
	name.WriteString(domain)
	for _, e := range entries {
		keys = descriptors.AppendEscaped(append(descriptors.AppendEscaped(append(keys, '|'), e.Key), '='), e.Value)
		name.WriteByte('.')
		name.WriteString(e.Key[:min(len(e.Key), maxOverrideNameKey)])
	}
	keys = append(strconv.AppendUint(append(keys, '|'), uint64(o.RequestsPerUnit), 10), '/')
	keys = strconv.AppendInt(keys, w, 10)
	l := &descriptors.Limit{Domain: domain, FullKey: name.String(), RequestsPerUnit: o.RequestsPerUnit, WindowSeconds: w,
		Unit: strings.ToLower(u.String()), Algorithm: string(limiter.FixedWindow)}
	it.limit, it.unit = l, u
	if o.RequestsPerUnit > 0 {
		it.policy = compile(envoyLimit(l), n.cfg.FailureMode)
		it.policy.perRequest = true
	}
	return keys
}

func (n *Node) checkEnvoyRequest(req *rls.RateLimitRequest) error {
	switch {
	case req.Domain == "":
		return status.Error(codes.InvalidArgument, "rate limit domain must not be empty")
	case len(req.Descriptors) == 0:
		return status.Error(codes.InvalidArgument, "rate limit descriptor list must not be empty")
	case len(req.Descriptors) > n.cfg.MaxBatch:
		return status.Errorf(codes.InvalidArgument, "at most %d descriptors per request, got %d", n.cfg.MaxBatch, len(req.Descriptors))
	case len(req.Domain) > maxEnvoyEntryBytes:
		return status.Errorf(codes.InvalidArgument, "domain longer than %d bytes", maxEnvoyEntryBytes)
	}
	for i, d := range req.Descriptors {
		if len(d.GetEntries()) == 0 || len(d.Entries) > maxEnvoyEntries {
			return status.Errorf(codes.InvalidArgument, "descriptors[%d]: want 1 to %d entries, got %d", i, maxEnvoyEntries, len(d.GetEntries()))
		}
		for j, e := range d.Entries {
			if e == nil || len(e.Key) > maxEnvoyEntryBytes || len(e.Value) > maxEnvoyEntryBytes {
				return status.Errorf(codes.InvalidArgument, "descriptors[%d].entries[%d]: key and value must be at most %d bytes", i, j, maxEnvoyEntryBytes)
			}
		}
		// A limit sent with the descriptor sets how long its counter keys
		// live in Redis, one key per distinct descriptor: bounded, so that
		// what a client makes Redis hold ends within envoy_override_max_unit.
		if o := d.GetLimit(); o != nil {
			u := rls.RateLimitResponse_RateLimit_Unit(o.Unit)
			if w, ok := unitSeconds[u]; ok && w > unitSeconds[unitEnums[n.cfg.EnvoyOverrideMaxUnit]] {
				return status.Errorf(codes.InvalidArgument, "descriptors[%d].limit.unit: %s is longer than envoy_override_max_unit (%s)", i, u, n.cfg.EnvoyOverrideMaxUnit)
			}
		}
	}
	return nil
}

// envoyResponse turns the decisions into Envoy's answer, and accounts for
// them in the node's metrics as HTTP checks are.
func (n *Node) envoyResponse(req *rls.RateLimitRequest, items []envoyItem, start, clock time.Time) *rls.RateLimitResponse {
	a := new(envoyAnswer)
	resp := &a.resp
	resp.OverallCode = rls.RateLimitResponse_OK
	resp.Statuses = a.statuses[:0]
	parts := make([]envoyStatus, len(items))
	es := n.envoy.state.Load()
	for i := range items {
		it := &items[i]
		s := &parts[i].status
		s.Code = rls.RateLimitResponse_OK
		resp.Statuses = append(resp.Statuses, s)
		if it.limit == nil {
			domain := "(unknown)"
			if es.cfg.Domains[req.Domain] != nil {
				domain = req.Domain
			}
			n.envoy.descriptorCounter(n.metrics.set, n.id, domain, "(no_limit)", "", "no_limit", false).Inc()
			continue
		}
		l := it.limit
		result := resultOK
		if l.Unlimited {
			s.LimitRemaining = math.MaxUint32
			result = resultUnlimited
		} else {
			cl, reset := &parts[i].limit, &parts[i].reset
			cl.Name, cl.RequestsPerUnit, cl.Unit = l.Name, l.RequestsPerUnit, it.unit
			s.CurrentLimit = cl
			s.LimitRemaining = uint32(min(max(it.d.res.Remaining, 0), math.MaxUint32))
			us := max(it.d.res.ResetAfter, 0) // what durationpb.New makes of it, without its allocation
			reset.Seconds, reset.Nanos = us/1e6, int32(us%1e6*1e3)
			s.DurationUntilReset = reset
			if !it.d.allowed {
				s.Code = rls.RateLimitResponse_OVER_LIMIT
				resp.OverallCode = rls.RateLimitResponse_OVER_LIMIT
				result = resultOverLimit
			}
			switch it.d.reason {
			case reasonShadow:
				result = resultShadow
			case reasonFailOpen:
				result = resultFailOpen
			case reasonFailClosed:
				result = resultFailClosed
			case reasonBlocked:
				result = resultBlocked
			}
		}
		n.account(&it.d, it.key, start, clock)
		if it.metric == "" {
			n.limitCounter(es, l, result).Inc()
		} else {
			n.envoy.descriptorCounter(n.metrics.set, n.id, l.Domain, it.metric, l.FullKey, resultNames[result], true).Inc()
		}
	}
	if resp.OverallCode == rls.RateLimitResponse_OVER_LIMIT && n.cfg.EnvoyShadowMode {
		// Global shadow mode: every decision is made and counted, and the
		// statuses say what would have happened, but nothing is denied.
		resp.OverallCode = rls.RateLimitResponse_OK
		n.envoy.globalSh.Inc()
	}
	if resp.OverallCode == rls.RateLimitResponse_OK {
		n.envoy.requests["ok"].Inc()
	} else {
		n.envoy.requests["over_limit"].Inc()
	}
	resp.ResponseHeadersToAdd = n.envoyHeaders(a, items)
	return resp
}

// envoyHeaders builds response_headers_to_add in the configured style from
// the descriptors that had a limit.
func (n *Node) envoyHeaders(a *envoyAnswer, items []envoyItem) []*corev3.HeaderValue {
	if n.cfg.EnvoyHeaders == envoyHeadersOff {
		return nil
	}
	var tightest *envoyItem
	var pbuf, lbuf [128]byte
	policy, limit := pbuf[:0], lbuf[:0]
	for i := range items {
		it := &items[i]
		if it.limit == nil || it.limit.Unlimited {
			continue
		}
		if tightest == nil || it.d.res.Remaining < tightest.d.res.Remaining {
			tightest = it
		}
		if n.cfg.EnvoyHeaders != envoyHeadersDraft10 {
			continue
		}
		if len(policy) > 0 {
			policy, limit = append(policy, ", "...), append(limit, ", "...)
		}
		if p := it.policy; p != nil { // compiled once per load
			policy = append(policy, p.policyHeader...)
			limit = append(limit, p.quotedName...)
		} else {
			name := it.limit.Name
			if name == "" {
				name = it.limit.FullKey
			}
			name = printableName(name)
			policy = appendSFString(policy, name)
			policy = append(policy, ";q="...)
			policy = strconv.AppendInt(policy, int64(it.limit.RequestsPerUnit), 10)
			policy = append(policy, ";w="...)
			policy = strconv.AppendInt(policy, it.limit.WindowSeconds, 10)
			limit = appendSFString(limit, name)
		}
		limit = append(limit, ";r="...)
		limit = strconv.AppendInt(limit, max(it.d.res.Remaining, 0), 10)
		limit = append(limit, ";t="...)
		limit = strconv.AppendInt(limit, ceilSeconds(it.d.res.ResetAfter), 10)
	}
	if tightest == nil {
		return nil
	}
	if n.cfg.EnvoyHeaders == envoyHeadersDraft10 {
		both := string(append(policy, limit...)) // one allocation for the two values
		return a.setHeaders("RateLimit-Policy", both[:len(policy)], "RateLimit", both[len(policy):])
	}
	// The draft-03 fields envoyproxy/ratelimit and Envoy's own filter send:
	// the tightest limit, its window, what is left of it and when it resets.
	t := tightest
	b := pbuf[:0]
	b = strconv.AppendUint(b, uint64(t.limit.RequestsPerUnit), 10)
	lim := len(b)
	b = append(b, ", "...)
	b = append(b, b[:lim]...)
	b = strconv.AppendInt(append(b, ";w="...), t.limit.WindowSeconds, 10)
	limEnd := len(b)
	b = strconv.AppendInt(b, max(t.d.res.Remaining, 0), 10)
	remEnd := len(b)
	b = strconv.AppendInt(b, ceilSeconds(t.d.res.ResetAfter), 10)
	all := string(b) // one allocation for the three values
	return a.setHeaders("X-RateLimit-Limit", all[:limEnd], "X-RateLimit-Remaining", all[limEnd:remEnd], "X-RateLimit-Reset", all[remEnd:])
}
