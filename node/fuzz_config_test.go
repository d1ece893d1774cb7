package node

import (
	"os"
	"testing"

	"github.com/ratelimiter/ratelimiter/config"
	"github.com/ratelimiter/ratelimiter/limiter"
)

// nodeFile is the part of config.toml a node reads; the other roles'
// sections are kept opaque.
type nodeFile struct {
	Node     Config          `toml:"node"`
	Limits   []limiter.Limit `toml:"limits"`
	Operator map[string]any  `toml:"operator"`
	Subjects map[string]any  `toml:"subjects"`
}

func (f *nodeFile) Validate() error {
	var p config.Problems
	p.Merge("node", f.Node.Validate())
	p.Merge("limits", ValidateLimits(f.Limits))
	return p.Err()
}

// FuzzNodeConfig loads arbitrary files as a node's configuration: an error
// or a configuration, never a panic; and what loads is usable: its limits
// compile into a table that matches keys.
func FuzzNodeConfig(f *testing.F) {
	for _, file := range []string{"../config.toml", "../config/testdata/valid.toml", "../config/testdata/problems.toml"} {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("[node]\nmax_batch = -1\nredis_url = \"redis://[::1\"\n[[limits]]\nkey_pattern = \"a*a*a*b\"\nmax_requests = 1\nwindow_seconds = 1\nmax_cost = 2\n"))
	f.Add([]byte("[node]\nkey_from = \"forwarded\"\ntrusted_proxies = [\"10.0.0.0/8\", \"::ffff:10.0.0.0/104\", \"\"]\nkey_prefix = \"ip:\"\n" +
		"forward_auth_deny_status = 403\nmax_limits = 0\nmax_blocks = -1\nmanagement_listen = \":0\"\nadmin_token_file = \"/nonexistent\"\nadmin_reads = true\n"))
	f.Add([]byte("[node]\nkey_from = \"xff\"\ntrusted_proxies = 9223372036854775807\nkey_prefix = \"\\u0000\"\n"))
	f.Add([]byte("[node]\nredis_url = \"redis://a:1?dial_timeout=-1s\"\nredis_timeout = \"-1ns\"\n"))
	for _, unit := range []string{`""`, `"YEAR"`, `"fortnight"`, `7`, `["day"]`} {
		f.Add([]byte("[node]\nenvoy_override_max_unit = " + unit + "\n"))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fc := nodeFile{Node: DefaultConfig()}
		if err := config.Decode("fuzz.toml", data, &fc); err != nil {
			return
		}
		tb := limiter.NewTable(fc.Limits)
		for _, l := range fc.Limits {
			p := compile(l, fc.Node.FailureMode)
			if p.CostLimit() < 1 || p.CostLimit() > p.Capacity() {
				t.Fatalf("limit %+v loaded with cost limit %d", l, p.CostLimit())
			}
			if tb.Match([]byte(l.KeyPattern)) == nil {
				t.Fatalf("pattern %q does not match itself", l.KeyPattern)
			}
		}
	})
}
