package node

import (
	"net"
	"net/netip"
	"testing"

	"github.com/valyala/fasthttp"
)

// FuzzClientAddr feeds arbitrary X-Forwarded-For and Forwarded values to
// clientAddr, trusting hops by count or by network. Whatever arrives:
// nothing panics, the answer is a valid address without a zone or a 400,
// and a hop a client forges to the left of a real entry changes nothing.
func FuzzClientAddr(f *testing.F) {
	for _, s := range []string{"203.0.113.7", "6.6.6.6, 203.0.113.7:4711", "[2001:db8::7]:443", "::ffff:1.2.3.4",
		"fe80::1%eth0", "", " , ,", "bogus", `for=6.6.6.6, for="[2001:db8::7]:443";proto=https`, `for="a\"b,c";by=x`,
		`For=10.0.0.1;by=10.0.0.2, for=unknown`, `for="unterminated`, `for=\`, ";;=,=;"} {
		f.Add(s, false, uint8(1), false)
		f.Add(s, true, uint8(2), true)
	}
	peer := netip.MustParseAddrPort("10.0.0.9:1")
	f.Fuzz(func(t *testing.T, hdr string, forwarded bool, hops uint8, nets bool) {
		cfg := DefaultConfig()
		cfg.KeyFrom, cfg.TrustedProxies = keyFromXFF, TrustedProxies{Hops: int(hops%4) + 1}
		name, forged := "X-Forwarded-For", "6.6.6.6, "
		if forwarded {
			cfg.KeyFrom, name, forged = keyFromForwarded, "Forwarded", "for=6.6.6.6, "
		}
		if nets {
			cfg.TrustedProxies = TrustedProxies{CIDRs: []string{"10.0.0.0/8", "2001:db8:1::/48"}}
		}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		n := &Node{cfg: cfg}
		addr := func(v string) (netip.Addr, *problemError) {
			var req fasthttp.Request
			req.SetRequestURI("/api/v1/check")
			req.Header.Set(name, v)
			var ctx fasthttp.RequestCtx
			ctx.Init(&req, net.TCPAddrFromAddrPort(peer), nil)
			return n.clientAddr(&ctx)
		}
		a, perr := addr(hdr)
		if perr != nil {
			if perr.status != fasthttp.StatusBadRequest {
				t.Fatalf("%q: status %d; want 400", hdr, perr.status)
			}
			return
		}
		if !a.IsValid() || a.Zone() != "" || a.Is4In6() {
			t.Fatalf("%q: client %v; want a plain valid address", hdr, a)
		}
		// With one trusted hop, the rightmost entry decides: what a client
		// writes before it is never read.
		if !nets && hops%4 == 0 && a != peer.Addr() {
			if b, perr := addr(forged + hdr); perr != nil || b != a {
				t.Fatalf("%q: client %v, but %v (%v) with a forged hop before it", hdr, a, b, perr)
			}
		}
	})
}
