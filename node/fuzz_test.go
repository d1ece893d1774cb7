package node

import (
	"encoding/json"
	"testing"

	"github.com/ratelimiter/ratelimiter/limiter"
)

// FuzzCheckDecoding feeds arbitrary bodies through the check decoder and
// the response encoder: nothing may panic, whatever is accepted must be a
// valid key and cost, and the JSON answer must round-trip the key.
func FuzzCheckDecoding(f *testing.F) {
	for _, s := range []string{`{"key":"user:42","cost":1}`, `{"key":"a\"b\\c"}`, `{"key":"é✓","cost":3}`,
		`{"key":""}`, `{"key":"x","cost":-1}`, `{"cost":1}`, `[]`, `{"key":"\u0000"}`, `{"key":"k","cost":1e3}`, `nul`} {
		f.Add([]byte(s))
	}
	pol := compile(limiter.Limit{Name: "p", KeyPattern: "*", MaxRequests: 100, WindowSeconds: 1, Algorithm: limiter.SlidingLog}, "open")
	f.Fuzz(func(t *testing.T, body []byte) {
		p := parsers.Get()
		defer parsers.Put(p)
		v, err := p.ParseBytes(body)
		if err != nil {
			return
		}
		in, perr := parseCheck(v)
		if perr != nil {
			return
		}
		if perr = in.validate(pol); perr != nil {
			return
		}
		if limiter.ValidateKey(in.key) != "" || in.cost <= 0 || in.cost > 100 {
			t.Fatalf("accepted key %q cost %d", in.key, in.cost)
		}
		d := decision{policy: pol, reason: reasonWithin, allowed: true}
		out := appendDecision(nil, &d, in.key)
		var back checkResult
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("response %q is not JSON: %v", out, err)
		}
		if back.Key != string(in.key) {
			t.Fatalf("key %q came back as %q", in.key, back.Key)
		}
	})
}
