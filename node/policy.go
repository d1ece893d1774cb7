package node

import (
	"strconv"

	"github.com/ratelimiter/ratelimiter/limiter"
	"github.com/ratelimiter/ratelimiter/node/store"
)

// Policy is a limit compiled for the hot path: everything a decision needs
// that can be computed once per limit change instead of once per request.
type Policy struct {
	store.Limit
	failOpen bool // the limit's failure mode, or the node's
	// policyHeader is the RateLimit-Policy item, `"name";q=100;w=60`;
	// quotedName starts the RateLimit item.
	policyHeader []byte
	quotedName   []byte
	// perRequest: compiled for one request (a limit Envoy sent with the
	// descriptor), so no later request can match a denial cached with it.
	perRequest bool
}

func compile(l limiter.Limit, nodeFailureMode string) *Policy {
	p := &Policy{Limit: store.Compile(l)}
	mode := l.FailureMode
	if mode == "" {
		mode = nodeFailureMode
	}
	p.failOpen = mode != limiter.FailClosed
	p.quotedName = appendSFString(nil, l.Name)
	h := append([]byte(nil), p.quotedName...)
	h = append(h, ";q="...)
	h = strconv.AppendInt(h, l.MaxRequests, 10)
	h = append(h, ";w="...)
	h = strconv.AppendInt(h, l.WindowSeconds, 10)
	if l.Algorithm == limiter.TokenBucket && l.Burst != l.MaxRequests {
		// q is the sustained quota; the burst is no draft parameter, so it
		// carries our prefix (clients ignore unknown ones, RFC 9651).
		h = append(h, ";ratelimiter-burst="...)
		h = strconv.AppendInt(h, l.Burst, 10)
	}
	p.policyHeader = h
	return p
}

// appendSFString appends s as a structured-field string (RFC 8941 §3.3.3);
// names are validated as printable ASCII, so escaping is all it needs.
func appendSFString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return append(b, '"')
}

func formatInt(v int64) string { return strconv.FormatInt(v, 10) }
