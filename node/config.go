package node

import (
	"net"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ratelimiter/ratelimiter/config"
	"github.com/ratelimiter/ratelimiter/limiter"
	"github.com/ratelimiter/ratelimiter/node/store"
)

// Config is the [node] section of the configuration file. Every field can
// also be set by a flag; main.go applies flags and environment on top.
type Config struct {
	ID         string `toml:"id"`
	Listen     string `toml:"listen"`
	Advertise  string `toml:"advertise"` // address other nodes and the operator use; defaults to Listen
	RedisURL   string `toml:"redis_url"` // empty: the in-process store
	AdminToken string `toml:"admin_token"`
	// AdminTokenFile holds the admin token instead, so that it shows in no
	// process list; AdminReads requires the token for management reads too.
	AdminTokenFile string `toml:"admin_token_file"`
	AdminReads     bool   `toml:"admin_reads"`
	// ManagementListen, when set, serves the management API and /metrics
	// there; Listen keeps only the checks (POST /json too) and /health.
	ManagementListen string `toml:"management_listen"`
	// RedisPrefix namespaces every Redis key, so clusters can share a Redis.
	RedisPrefix  string          `toml:"redis_prefix"`
	RedisTimeout config.Duration `toml:"redis_timeout"`
	// FailureMode answers checks while the store is unreachable: "open"
	// admits, "closed" denies. A limit may override it.
	FailureMode string `toml:"failure_mode"`
	// Unmatched decides keys that match no limit pattern: "allow" or "deny".
	// A "*" limit is the usual default instead.
	Unmatched         string          `toml:"unmatched"`
	HeartbeatInterval config.Duration `toml:"heartbeat_interval"`
	// UnhealthyAfter without a heartbeat a node is reported unhealthy;
	// ForgetAfter it leaves the registry.
	UnhealthyAfter config.Duration `toml:"unhealthy_after"`
	ForgetAfter    config.Duration `toml:"forget_after"`
	// SyncInterval is how often a node polls for limit, block and drain
	// changes made through other nodes.
	SyncInterval config.Duration `toml:"sync_interval"`
	// KeyHeader, when set, names a request header that carries the key for
	// GET /api/v1/check (forward-auth), e.g. X-Forwarded-For.
	KeyHeader string `toml:"key_header"`
	// KeyFrom picks where GET /api/v1/check finds its key: "query" (the
	// key parameter, else KeyHeader), "xff" or "forwarded" (the client
	// address, see TrustedProxies). KeyPrefix goes before header and
	// address keys so they can match a pattern such as "ip:*".
	KeyFrom        string         `toml:"key_from"`
	KeyPrefix      string         `toml:"key_prefix"`
	TrustedProxies TrustedProxies `toml:"trusted_proxies"`
	// ForwardAuthDenyStatus is the status of a denial to GET
	// /api/v1/check when the request names no deny_status: nginx's
	// auth_request accepts only 401 and 403.
	ForwardAuthDenyStatus int `toml:"forward_auth_deny_status"`
	// AdvertiseShadow sends RateLimit fields for shadow limits too; by
	// default a dry-run limit stays invisible to clients.
	AdvertiseShadow bool `toml:"advertise_shadow"`
	// HotKeyRatio is the default share of its limit at which a key is hot.
	HotKeyRatio float64 `toml:"hot_key_ratio"`
	// DenyCacheSize bounds the keys answered locally while over their limit.
	DenyCacheSize int `toml:"deny_cache_size"`
	MaxBodyBytes  int `toml:"max_body_bytes"`
	MaxBatch      int `toml:"max_batch"`
	// MaxLimits and MaxBlocks cap the limits and the live blocks the
	// management API may create: beyond them a new one is a 409, so no
	// client can make every node hold and scan an unbounded set.
	MaxLimits int `toml:"max_limits"`
	MaxBlocks int `toml:"max_blocks"`

	// GRPCListen, when set, serves Envoy's Rate Limit Service there.
	GRPCListen string `toml:"grpc_listen"`
	// EnvoyConfigDir holds envoyproxy/ratelimit descriptor files (*.yaml),
	// reloaded when they change.
	EnvoyConfigDir string `toml:"envoy_config_dir"`
	// EnvoyShadowMode never answers OVER_LIMIT overall (SHADOW_MODE).
	EnvoyShadowMode bool `toml:"envoy_shadow_mode"`
	// EnvoyHeaders picks response_headers_to_add: "draft10", "x-ratelimit" or "off".
	EnvoyHeaders string `toml:"envoy_headers"`
	// EnvoyStoreErrors answers a store failure with gRPC UNAVAILABLE (so
	// Envoy's failure_mode_deny decides) instead of by failure_mode.
	EnvoyStoreErrors bool `toml:"envoy_store_errors"`
	// EnvoyMergeDomains lets several files add to one domain (MERGE_DOMAIN_CONFIG).
	EnvoyMergeDomains bool `toml:"envoy_merge_domains"`
	// EnvoyOverrideMaxUnit is the longest unit a limit sent with a
	// descriptor may have ("second" … "year"): the unit is how long each of
	// its counter keys lives in Redis, and the request picks it.
	EnvoyOverrideMaxUnit string `toml:"envoy_override_max_unit"`
	// GRPCMaxConnectionAge closes a client's connection after this long
	// (0: never), with GRPCMaxConnectionAgeGrace for calls in flight, so
	// Envoys spread over new nodes (GRPC_MAX_CONNECTION_AGE).
	GRPCMaxConnectionAge      config.Duration `toml:"grpc_max_connection_age"`
	GRPCMaxConnectionAgeGrace config.Duration `toml:"grpc_max_connection_age_grace"`

	// Limits is the starting set of limits, from the file's [[limits]].
	Limits []limiter.Limit `toml:"-"`
}

// DefaultConfig is the configuration with every default filled in.
func DefaultConfig() Config {
	return Config{
		Listen:            "127.0.0.1:8080",
		RedisPrefix:       "rl",
		RedisTimeout:      config.Duration{Duration: 50 * time.Millisecond},
		FailureMode:       limiter.FailOpen,
		Unmatched:         "allow",
		HeartbeatInterval: config.Duration{Duration: time.Second},
		UnhealthyAfter:    config.Duration{Duration: 3 * time.Second},
		ForgetAfter:       config.Duration{Duration: 10 * time.Minute},
		SyncInterval:      config.Duration{Duration: 250 * time.Millisecond},
		HotKeyRatio:       0.8,
		DenyCacheSize:     10_000,
		MaxBodyBytes:      64 << 10,
		MaxBatch:          1000,
		EnvoyHeaders:      envoyHeadersDraft10,
		// envoyproxy/ratelimit takes any unit; docs/security.md says why
		// and when to lower it.
		EnvoyOverrideMaxUnit: "year",

		KeyFrom:               keyFromQuery,
		ForwardAuthDenyStatus: fasthttp.StatusTooManyRequests,
		MaxLimits:             1000,
		MaxBlocks:             100_000,
	}
}

// Validate reports every problem at once, with paths relative to [node].
func (c *Config) Validate() error {
	var p config.Problems
	if c.ID != "" && limiter.ValidateKey([]byte(c.ID)) != "" {
		p.Add("id", "must be printable and at most 512 bytes")
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		p.Add("listen", "must be host:port, got %q", c.Listen)
	}
	if c.ManagementListen != "" {
		if _, _, err := net.SplitHostPort(c.ManagementListen); err != nil {
			p.Add("management_listen", "must be host:port, got %q", c.ManagementListen)
		} else if c.ManagementListen == c.Listen && !strings.HasSuffix(c.Listen, ":0") {
			p.Add("management_listen", "must differ from listen (%q)", c.Listen)
		}
	}
	if c.AdminTokenFile != "" && c.AdminToken != "" {
		p.Add("admin_token_file", "set either admin_token or admin_token_file, not both")
	}
	if c.AdminReads && c.AdminToken == "" && c.AdminTokenFile == "" {
		p.Add("admin_reads", "requires admin_token or admin_token_file")
	}
	if c.Advertise != "" {
		if _, _, err := net.SplitHostPort(c.Advertise); err != nil {
			p.Add("advertise", "must be host:port, got %q", c.Advertise)
		}
	}
	if c.RedisURL != "" {
		if _, err := store.ParseRedisURL(c.RedisURL); err != nil {
			p.Add("redis_url", "%v", err)
		}
	}
	if c.RedisPrefix == "" {
		p.Add("redis_prefix", "must not be empty")
	}
	positive := func(path string, d config.Duration) {
		if d.Duration <= 0 {
			p.Add(path, "must be positive, got %s", d.Duration)
		}
	}
	positive("redis_timeout", c.RedisTimeout)
	positive("heartbeat_interval", c.HeartbeatInterval)
	positive("sync_interval", c.SyncInterval)
	if c.UnhealthyAfter.Duration <= c.HeartbeatInterval.Duration {
		p.Add("unhealthy_after", "must be longer than heartbeat_interval (%s)", c.HeartbeatInterval.Duration)
	}
	if c.ForgetAfter.Duration <= c.UnhealthyAfter.Duration {
		p.Add("forget_after", "must be longer than unhealthy_after (%s)", c.UnhealthyAfter.Duration)
	}
	if c.FailureMode != limiter.FailOpen && c.FailureMode != limiter.FailClosed {
		p.Add("failure_mode", "must be %q or %q, got %q", limiter.FailOpen, limiter.FailClosed, c.FailureMode)
	}
	if c.Unmatched != "allow" && c.Unmatched != "deny" {
		p.Add("unmatched", `must be "allow" or "deny", got %q`, c.Unmatched)
	}
	if c.HotKeyRatio <= 0 || c.HotKeyRatio > 1 {
		p.Add("hot_key_ratio", "must be in (0, 1], got %g", c.HotKeyRatio)
	}
	if c.DenyCacheSize < 0 {
		p.Add("deny_cache_size", "must not be negative")
	}
	if c.MaxBodyBytes < 1024 {
		p.Add("max_body_bytes", "must be at least 1024")
	}
	if c.MaxBatch < 1 {
		p.Add("max_batch", "must be at least 1")
	}
	c.validateEnvoy(&p)
	c.validateForward(&p)
	if c.MaxLimits < 1 {
		p.Add("max_limits", "must be at least 1")
	}
	if c.MaxBlocks < 1 {
		p.Add("max_blocks", "must be at least 1")
	}
	return p.Err()
}

// ValidateLimits normalizes limits in place and reports every problem, with
// paths like "[2].window_seconds" and duplicate patterns.
func ValidateLimits(limits []limiter.Limit) error {
	var p config.Problems
	seen := map[string]int{}
	for i := range limits {
		limits[i].Normalize()
		at := "[" + formatInt(int64(i)) + "]"
		p.Merge(at, limits[i].Validate())
		if j, dup := seen[limits[i].KeyPattern]; dup {
			p.Add(at+".key_pattern", "duplicates limits[%d]", j)
		}
		seen[limits[i].KeyPattern] = i
	}
	return p.Err()
}
