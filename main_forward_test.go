package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/ratelimiter/ratelimiter/node"
)

func TestForwardFlags(t *testing.T) {
	f := func(file string, args []string, check func(node.Config) bool) {
		t.Helper()
		path := filepath.Join(t.TempDir(), "c.toml")
		if err := os.WriteFile(path, []byte("[node]\n"+file), 0o600); err != nil {
			t.Fatal(err)
		}
		var got node.Config
		app := &cli.App{Commands: []*cli.Command{nodeCommand()}, ExitErrHandler: func(*cli.Context, error) {}}
		app.Commands[0].Action = func(c *cli.Context) error {
			fc, err := loadConfig(c.String("config"))
			if err != nil {
				return err
			}
			got = fc.Node
			applyNodeFlags(c, &got)
			return got.Validate()
		}
		if err := app.Run(append([]string{"x", "node", "--config", path}, args...)); err != nil {
			t.Fatalf("%q %q: %v", file, args, err)
		}
		if !check(got) {
			t.Errorf("%q %q: %+v", file, args, got)
		}
	}
	f("", nil, func(c node.Config) bool {
		return c.KeyFrom == "query" && c.ForwardAuthDenyStatus == 429 && !c.AdvertiseShadow
	})
	f("key_from = \"xff\"\ntrusted_proxies = [\"10.0.0.0/8\"]\nforward_auth_deny_status = 403\n", nil, func(c node.Config) bool {
		return c.KeyFrom == "xff" && slices.Equal(c.TrustedProxies.CIDRs, []string{"10.0.0.0/8"}) && c.ForwardAuthDenyStatus == 403
	})
	f("key_from = \"xff\"\ntrusted_proxies = 3\n", []string{"--key-from", "forwarded", "--trusted-proxies", "10.0.0.0/8, 127.0.0.1",
		"--key-prefix", "ip:", "--forward-auth-deny-status", "401", "--advertise-shadow"}, func(c node.Config) bool {
		return c.KeyFrom == "forwarded" && c.TrustedProxies.Hops == 0 && slices.Equal(c.TrustedProxies.CIDRs, []string{"10.0.0.0/8", "127.0.0.1"}) &&
			c.KeyPrefix == "ip:" && c.ForwardAuthDenyStatus == 401 && c.AdvertiseShadow
	})
	f("", []string{"--key-from", "xff", "--trusted-proxies", "2"}, func(c node.Config) bool { return c.TrustedProxies.Hops == 2 })
}
