package node

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"unsafe"

	"github.com/valyala/fasthttp"

	"github.com/ratelimiter/ratelimiter/config"
)

// Where GET /api/v1/check (forward-auth) finds its key: see Config.KeyFrom.
const (
	keyFromQuery     = "query"
	keyFromXFF       = "xff"
	keyFromForwarded = "forwarded"
)

// TrustedProxies says which hops at the right end of X-Forwarded-For (or
// Forwarded) are proxies of ours: either a count of hops, the node's own
// peer included, or the networks the proxies live in. In TOML it is an
// integer (trusted_proxies = 1) or a list of CIDRs or addresses
// (trusted_proxies = ["10.0.0.0/8", "127.0.0.1"]).
type TrustedProxies struct {
	Hops  int      `json:"hops,omitempty"`
	CIDRs []string `json:"cidrs,omitempty"`
	nets  []netip.Prefix
}

// UnmarshalTOML takes either form; the CIDRs are checked by Validate, so
// that every bad one is reported with its path.
func (tp *TrustedProxies) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case int64:
		tp.Hops, tp.CIDRs = int(v), nil
		if int64(tp.Hops) != v {
			tp.Hops = -1
		}
		return nil
	case []any:
		tp.Hops, tp.CIDRs = 0, make([]string, 0, len(v))
		for i, e := range v {
			s, ok := e.(string)
			if !ok {
				return fmt.Errorf("trusted_proxies[%d] must be a string (a CIDR or an address), got %T", i, e)
			}
			tp.CIDRs = append(tp.CIDRs, s)
		}
		return nil
	}
	return fmt.Errorf("trusted_proxies must be a count of proxy hops or a list of CIDRs, got %T", v)
}

// ParseTrustedProxies reads the flag form: a count ("2") or CIDRs and
// addresses separated by commas. Validate reports what is wrong with it.
func ParseTrustedProxies(s string) TrustedProxies {
	if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil {
		return TrustedProxies{Hops: n}
	}
	var tp TrustedProxies
	for _, c := range strings.Split(s, ",") {
		tp.CIDRs = append(tp.CIDRs, strings.TrimSpace(c))
	}
	return tp
}

// parse fills nets from CIDRs and reports every problem.
func (tp *TrustedProxies) parse(p *config.Problems) {
	tp.nets = tp.nets[:0]
	if tp.Hops < 0 {
		p.Add("trusted_proxies", "must not be negative, got %d", tp.Hops)
	}
	for i, s := range tp.CIDRs {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				p.Add("trusted_proxies["+strconv.Itoa(i)+"]", "must be a CIDR (10.0.0.0/8) or an address, got %q", s)
				continue
			}
			a = a.Unmap()
			pfx = netip.PrefixFrom(a, a.BitLen())
		}
		tp.nets = append(tp.nets, netip.PrefixFrom(pfx.Addr().Unmap(), pfx.Bits()-unmappedBits(pfx.Addr())).Masked())
	}
}

// unmappedBits is what Unmap takes off a prefix length: an IPv4-mapped
// ::ffff:10.0.0.0/104 is 10.0.0.0/8.
func unmappedBits(a netip.Addr) int {
	if a.Is4In6() {
		return 96
	}
	return 0
}

func (tp *TrustedProxies) trusts(a netip.Addr) bool {
	for _, n := range tp.nets {
		if n.Contains(a) {
			return true
		}
	}
	return false
}

func (c *Config) validateForward(p *config.Problems) {
	switch c.KeyFrom {
	case keyFromQuery:
	case keyFromXFF, keyFromForwarded:
		if c.TrustedProxies.Hops == 0 && len(c.TrustedProxies.CIDRs) == 0 {
			p.Add("trusted_proxies", "must be set with key_from = %q: the number of proxies in front of the node, or their networks; "+
				"without it any client could choose its own key", c.KeyFrom)
		}
	default:
		p.Add("key_from", `must be "query", "xff" or "forwarded", got %q`, c.KeyFrom)
	}
	c.TrustedProxies.parse(p)
	if badKeyPrefix(c.KeyPrefix) {
		p.Add("key_prefix", "must be printable and at most 64 bytes")
	}
	if !denyStatusOK(c.ForwardAuthDenyStatus) {
		p.Add("forward_auth_deny_status", "must be 401, 403 or 429, got %d", c.ForwardAuthDenyStatus)
	}
}

func badKeyPrefix(prefix string) bool {
	if len(prefix) > 64 {
		return true
	}
	for i := 0; i < len(prefix); i++ {
		if prefix[i] < 0x20 || prefix[i] == 0x7f {
			return true
		}
	}
	return false
}

// denyStatusOK accepts the statuses a proxy can act on: nginx's
// auth_request passes 401 and 403 and turns anything else into a 500;
// Caddy and Traefik pass any status, so 429 is the default.
func denyStatusOK(s int) bool {
	return s == fasthttp.StatusUnauthorized || s == fasthttp.StatusForbidden || s == fasthttp.StatusTooManyRequests
}

// checkQuery reads a GET check (forward-auth): the key as key_from says,
// the cost, and the status to deny with.
func (n *Node) checkQuery(ctx *fasthttp.RequestCtx) (checkInput, *problemError) {
	in := checkInput{cost: 1, denyStatus: n.cfg.ForwardAuthDenyStatus}
	args := ctx.QueryArgs()
	if c := args.Peek("cost"); len(c) > 0 {
		v, err := strconv.ParseInt(unsafeString(c), 10, 64)
		if err != nil {
			return in, badRequest("cost must be an integer")
		}
		in.cost = v
	}
	if s := args.Peek("deny_status"); len(s) > 0 {
		v, err := strconv.Atoi(unsafeString(s))
		if err != nil || !denyStatusOK(v) {
			return in, badRequest("deny_status must be 401, 403 or 429")
		}
		in.denyStatus = v
	}
	key := args.Peek("key")
	switch n.cfg.KeyFrom {
	case keyFromXFF, keyFromForwarded:
		if len(key) > 0 {
			return in, badRequest("key_from is " + strconv.Quote(n.cfg.KeyFrom) +
				": the key is the client's address, so the request must not name one")
		}
		addr, perr := n.clientAddr(ctx)
		if perr != nil {
			return in, perr
		}
		in.key = addr.AppendTo(append(make([]byte, 0, len(n.cfg.KeyPrefix)+len("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")), n.cfg.KeyPrefix...))
	default:
		in.key = key
		if len(key) == 0 && n.cfg.KeyHeader != "" {
			in.key = ctx.Request.Header.Peek(n.cfg.KeyHeader)
			if n.cfg.KeyPrefix != "" && len(in.key) > 0 {
				in.key = append(append(make([]byte, 0, len(n.cfg.KeyPrefix)+len(in.key)), n.cfg.KeyPrefix...), in.key...)
			}
		}
	}
	return in, nil
}

// clientAddr is the first address from the right of the forwarding chain
// that is not one of our proxies. The chain is X-Forwarded-For (or
// Forwarded) with the node's own peer appended: a client can write
// anything into the header, but only to the left of what our proxies
// append, so counting or matching from the right never reaches a forged
// entry unless every hop after it is trusted.
func (n *Node) clientAddr(ctx *fasthttp.RequestCtx) (netip.Addr, *problemError) {
	var stack [16][]byte // most chains are short: no allocation for them
	hops := stack[:0]
	name := "X-Forwarded-For"
	if n.cfg.KeyFrom == keyFromForwarded {
		name = "Forwarded"
	}
	for _, v := range ctx.Request.Header.PeekAll(name) {
		if n.cfg.KeyFrom == keyFromForwarded {
			hops = appendForwardedFor(hops, v)
		} else {
			hops = appendXFF(hops, v)
		}
	}
	peer := peerAddr(ctx)
	tp := &n.cfg.TrustedProxies
	// i walks the chain from the right (the peer is hop len(hops)) to the
	// hop that is the client.
	var i int
	if tp.Hops > 0 {
		i = max(len(hops)-tp.Hops, 0)
	} else {
		if !tp.trusts(peer) {
			return peer, nil
		}
		for i = len(hops) - 1; i > 0; i-- {
			a, ok := parseHop(hops[i])
			if !ok || !tp.trusts(a) {
				break
			}
		}
		if i < 0 {
			i = 0
		}
	}
	if i == len(hops) {
		return peer, nil
	}
	a, ok := parseHop(hops[i])
	if !ok {
		return a, badRequest(name + ": the client's entry " + strconv.Quote(string(hops[i])) + " is not an IP address")
	}
	return a, nil
}

// appendXFF splits one X-Forwarded-For line: "a, b, c".
func appendXFF(hops [][]byte, v []byte) [][]byte {
	for len(v) > 0 {
		h := v
		if i := bytes.IndexByte(v, ','); i >= 0 {
			h, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		if h = bytes.TrimSpace(h); len(h) > 0 {
			hops = append(hops, h)
		}
	}
	return hops
}

// appendForwardedFor takes the for= of each element of one Forwarded line
// (RFC 7239): `for=192.0.2.60;proto=http, for="[2001:db8::1]:4711"`. An
// element without for= still is a hop, of unknown address. It walks the
// line in place: no allocation unless the chain outgrows hops.
func appendForwardedFor(hops [][]byte, v []byte) [][]byte {
	for more := true; more; {
		var elem, pair []byte
		elem, v, more = cutOutsideQuotes(v, ',')
		hop := unknownHop
		for pairs := true; pairs; {
			pair, elem, pairs = cutOutsideQuotes(elem, ';')
			k, val, ok := bytes.Cut(bytes.TrimSpace(pair), []byte{'='})
			if ok && bytes.EqualFold(bytes.TrimSpace(k), []byte("for")) {
				hop = bytes.Trim(bytes.TrimSpace(val), `"`)
			}
		}
		hops = append(hops, hop)
	}
	return hops
}

// unknownHop stands for an element without for=: parseHop rejects it.
var unknownHop = []byte("unknown")

// cutOutsideQuotes splits v at its first sep outside a quoted string;
// found is false when there is none (field is then all of v).
func cutOutsideQuotes(v []byte, sep byte) (field, rest []byte, found bool) {
	quoted := false
	for i := 0; i < len(v); i++ {
		switch {
		case v[i] == '\\' && quoted:
			i++
		case v[i] == '"':
			quoted = !quoted
		case v[i] == sep && !quoted:
			return v[:i], v[i+1:], true
		}
	}
	return v, nil, false
}

// parseHop reads one hop: an address, with or without a port, IPv6 with
// or without brackets.
func parseHop(h []byte) (netip.Addr, bool) {
	s := unsafe.String(unsafe.SliceData(h), len(h))
	// A hop with a port is tried as one first: a failed parse allocates
	// its error, and "203.0.113.7:4711" would fail ParseAddr every time.
	if i := strings.LastIndexByte(s, ':'); i > 0 && (s[i-1] == ']' || strings.IndexByte(s, ':') == i) {
		if ap, err := netip.ParseAddrPort(s); err == nil {
			return ap.Addr().Unmap().WithZone(""), true
		}
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone(""), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil {
			return a.Unmap().WithZone(""), true
		}
	}
	return netip.Addr{}, false
}

func peerAddr(ctx *fasthttp.RequestCtx) netip.Addr {
	if ta, ok := ctx.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap().WithZone("")
	}
	a, _ := netip.AddrFromSlice(ctx.RemoteIP())
	return a.Unmap()
}
