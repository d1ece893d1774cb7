package main

import (
	"github.com/urfave/cli/v2"

	"github.com/ratelimiter/ratelimiter/node"
)

// applyForwardFlags lays the forward-auth flags (docs/proxies.md) over the file.
func applyForwardFlags(c *cli.Context, cfg *node.Config) {
	if c.IsSet("key-from") {
		cfg.KeyFrom = c.String("key-from")
	}
	if c.IsSet("key-prefix") {
		cfg.KeyPrefix = c.String("key-prefix")
	}
	if c.IsSet("trusted-proxies") {
		cfg.TrustedProxies = node.ParseTrustedProxies(c.String("trusted-proxies"))
	}
	if c.IsSet("forward-auth-deny-status") {
		cfg.ForwardAuthDenyStatus = c.Int("forward-auth-deny-status")
	}
	if c.IsSet("advertise-shadow") {
		cfg.AdvertiseShadow = c.Bool("advertise-shadow")
	}
}
