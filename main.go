// Command ratelimiter is one binary for every role: the rate-limiter node
// (Redis or in-process), the operator that keeps a cluster of them healthy,
// the load generator that measures both, the chaos fault injector, and the
// demo that runs them together. main wires flags to package configs; the
// packages work.
package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/urfave/cli/v2"

	"github.com/ratelimiter/ratelimiter/config"
	"github.com/ratelimiter/ratelimiter/limiter"
	"github.com/ratelimiter/ratelimiter/loadgen"
	"github.com/ratelimiter/ratelimiter/node"
	"github.com/ratelimiter/ratelimiter/operator"
)

//go:embed config.toml
var defaultConfig []byte

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "ratelimiter:", err)
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}

// exitError carries an exit status other than 1: loadgen exits 2 when a
// run misses a threshold, so scripts can tell that from a usage error.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// fileConfig is the layout of the configuration file; each role owns its
// section and its validation.
type fileConfig struct {
	Node     node.Config                 `toml:"node"`
	Limits   []limiter.Limit             `toml:"limits"`
	Operator operator.Config             `toml:"operator"`
	Subjects map[string]operator.Subject `toml:"subjects"`
}

func (f *fileConfig) Validate() error {
	var p config.Problems
	p.Merge("node", f.Node.Validate())
	p.Merge("limits", node.ValidateLimits(f.Limits))
	p.Merge("operator", f.Operator.Validate())
	for _, name := range subjectNames(f) {
		s := f.Subjects[name]
		p.Merge("subjects."+name, s.Validate())
	}
	if _, ok := f.Subjects[f.Operator.Subject]; !ok && len(f.Subjects) > 0 {
		p.Add("operator.subject", "%q is not defined under [subjects]", f.Operator.Subject)
	}
	return p.Err()
}

// loadConfig reads path, or the embedded config.toml when path is empty.
func loadConfig(path string) (*fileConfig, error) {
	f := &fileConfig{Node: node.DefaultConfig(), Operator: operator.DefaultConfig()}
	var err error
	if path == "" {
		err = config.Decode("config.toml (embedded)", defaultConfig, f)
	} else {
		err = config.Load(path, f)
	}
	if err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	f.Node.Limits = f.Limits
	return f, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	app := &cli.App{
		Name:           "ratelimiter",
		Usage:          "a distributed rate limiter on Redis",
		Writer:         stdout,
		ErrWriter:      stderr,
		ExitErrHandler: func(*cli.Context, error) {}, // main reports errors once
		Commands:       []*cli.Command{nodeCommand(), operatorCommand(), loadgenCommand(), chaosCommand(), demoCommand(), healthCommand()},
	}
	return app.RunContext(ctx, args)
}

func newLogger(c *cli.Context) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return nil, fmt.Errorf("invalid --log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.String("log-format") {
	case "text":
		return slog.New(slog.NewTextHandler(c.App.ErrWriter, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(c.App.ErrWriter, opts)), nil
	}
	return nil, errors.New("invalid --log-format: want text or json")
}

// logFlags are accepted by every command, after its name.
func logFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
		&cli.StringFlag{Name: "log-format", Value: "text", Usage: "text or json"},
	}
}

func nodeCommand() *cli.Command {
	d := node.DefaultConfig()
	return &cli.Command{
		Name:  "node",
		Usage: "run a rate-limiter node",
		Flags: append(logFlags(),
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "TOML file (default: the embedded config.toml)"},
			&cli.StringFlag{Name: "listen", EnvVars: []string{"LISTEN_ADDR"}, Value: d.Listen, Usage: "address to serve on"},
			&cli.StringFlag{Name: "node-id", EnvVars: []string{"NODE_ID"}, Usage: "node id (default: host name)"},
			&cli.StringFlag{Name: "redis-url", EnvVars: []string{"REDIS_URL"}, Usage: "redis://host:port, comma-separated seeds, or ?master_set= for Sentinel; empty: in-process store"},
			&cli.StringFlag{Name: "admin-token", EnvVars: []string{"ADMIN_TOKEN"}, Usage: "bearer token for mutating management calls (visible in ps: prefer --admin-token-file)"},
			&cli.StringFlag{Name: "admin-token-file", Usage: "file holding the admin token"},
			&cli.BoolFlag{Name: "admin-reads", Usage: "require the admin token for management reads too"},
			&cli.StringFlag{Name: "management-listen", Usage: "serve the management API and /metrics on this address; --listen keeps the checks and /health"},
			&cli.StringFlag{Name: "advertise", Usage: "address peers use to reach this node"},
			&cli.StringFlag{Name: "redis-prefix", Value: d.RedisPrefix, Usage: "prefix of every Redis key"},
			&cli.DurationFlag{Name: "redis-timeout", Value: d.RedisTimeout.Duration, Usage: "bound of one Redis call"},
			&cli.StringFlag{Name: "failure-mode", Value: d.FailureMode, Usage: "open or closed while Redis is unreachable"},
			&cli.StringFlag{Name: "unmatched", Value: d.Unmatched, Usage: "allow or deny keys that match no limit"},
			&cli.DurationFlag{Name: "heartbeat-interval", Value: d.HeartbeatInterval.Duration},
			&cli.DurationFlag{Name: "unhealthy-after", Value: d.UnhealthyAfter.Duration, Usage: "report a silent node unhealthy after this"},
			&cli.DurationFlag{Name: "forget-after", Value: d.ForgetAfter.Duration, Usage: "drop a silent node from the registry after this"},
			&cli.DurationFlag{Name: "sync-interval", Value: d.SyncInterval.Duration, Usage: "poll for limit, block and drain changes this often"},
			&cli.StringFlag{Name: "key-header", Usage: "request header holding the key for GET /api/v1/check"},
			&cli.StringFlag{Name: "key-from", Value: d.KeyFrom, Usage: "where GET /api/v1/check finds its key: query, xff or forwarded (see docs/proxies.md)"},
			&cli.StringFlag{Name: "key-prefix", Usage: "prefix of keys taken from a header or the client address, e.g. ip:"},
			&cli.StringFlag{Name: "trusted-proxies", Usage: "proxies in front of the node: a count of hops, or comma-separated CIDRs"},
			&cli.IntFlag{Name: "forward-auth-deny-status", Value: d.ForwardAuthDenyStatus, Usage: "status of a denied GET /api/v1/check: 429, 403 (nginx) or 401"},
			&cli.BoolFlag{Name: "advertise-shadow", Usage: "send RateLimit fields for shadow limits too"},
			&cli.Float64Flag{Name: "hot-key-ratio", Value: d.HotKeyRatio, Usage: "share of its limit at which a key is hot"},
			&cli.IntFlag{Name: "deny-cache-size", Value: d.DenyCacheSize, Usage: "keys answered locally while over their limit"},
			&cli.IntFlag{Name: "max-body-bytes", Value: d.MaxBodyBytes},
			&cli.IntFlag{Name: "max-batch", Value: d.MaxBatch, Usage: "most checks in one batch request"},
			&cli.StringFlag{Name: "grpc-listen", Usage: "serve Envoy's Rate Limit Service (gRPC) on this address"},
			&cli.StringFlag{Name: "envoy-config", Usage: "directory of envoyproxy/ratelimit descriptor files (*.yaml), reloaded on change"},
		),
		Action: func(c *cli.Context) error {
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			f, err := loadConfig(c.String("config"))
			if err != nil {
				return err
			}
			cfg := f.Node
			applyNodeFlags(c, &cfg)
			n, err := node.New(cfg, nil, log, time.Now)
			if err != nil {
				return fmt.Errorf("cannot start node: %w", err)
			}
			return n.Run(c.Context)
		},
	}
}

// applyNodeFlags lays flags (and their environment variables) over the file.
func applyNodeFlags(c *cli.Context, cfg *node.Config) {
	str := map[string]*string{"listen": &cfg.Listen, "node-id": &cfg.ID, "redis-url": &cfg.RedisURL,
		"admin-token": &cfg.AdminToken, "advertise": &cfg.Advertise, "redis-prefix": &cfg.RedisPrefix,
		"failure-mode": &cfg.FailureMode, "unmatched": &cfg.Unmatched, "key-header": &cfg.KeyHeader,
		"grpc-listen": &cfg.GRPCListen, "envoy-config": &cfg.EnvoyConfigDir,
		"admin-token-file": &cfg.AdminTokenFile, "management-listen": &cfg.ManagementListen,
		"key-from": &cfg.KeyFrom, "key-prefix": &cfg.KeyPrefix}
	for name, dst := range str {
		if c.IsSet(name) {
			*dst = c.String(name)
		}
	}
	dur := map[string]*config.Duration{"redis-timeout": &cfg.RedisTimeout, "heartbeat-interval": &cfg.HeartbeatInterval,
		"unhealthy-after": &cfg.UnhealthyAfter, "forget-after": &cfg.ForgetAfter, "sync-interval": &cfg.SyncInterval}
	for name, dst := range dur {
		if c.IsSet(name) {
			dst.Duration = c.Duration(name)
		}
	}
	ints := map[string]*int{"deny-cache-size": &cfg.DenyCacheSize, "max-body-bytes": &cfg.MaxBodyBytes, "max-batch": &cfg.MaxBatch,
		"forward-auth-deny-status": &cfg.ForwardAuthDenyStatus}
	for name, dst := range ints {
		if c.IsSet(name) {
			*dst = c.Int(name)
		}
	}
	bools := map[string]*bool{"admin-reads": &cfg.AdminReads, "advertise-shadow": &cfg.AdvertiseShadow}
	for name, dst := range bools {
		if c.IsSet(name) {
			*dst = c.Bool(name)
		}
	}
	if c.IsSet("hot-key-ratio") {
		cfg.HotKeyRatio = c.Float64("hot-key-ratio")
	}
	if c.IsSet("trusted-proxies") {
		cfg.TrustedProxies = node.ParseTrustedProxies(c.String("trusted-proxies"))
	}
}

func loadgenCommand() *cli.Command {
	d := loadgen.DefaultConfig()
	return &cli.Command{
		Name:  "loadgen",
		Usage: "send open-loop load to nodes and report latency, decisions and accuracy",
		Flags: slices.Concat(logFlags(), []cli.Flag{
			&cli.GenericFlag{Name: "target", Aliases: []string{"t"}, Value: &repeated{}, Required: true,
				Usage: "node base URL; with --method http a URL template ({key}, {cost}); with --method grpc grpc://host:port (repeatable)"},
			&cli.StringFlag{Name: "rate", Value: "1000", Usage: "requests per second, or START:END to ramp"},
			&cli.DurationFlag{Name: "duration", Aliases: []string{"d"}, Value: d.Duration},
			&cli.IntFlag{Name: "keys", Value: d.Keys, Usage: "distinct keys"},
			&cli.StringFlag{Name: "distribution", Value: d.Distribution, Usage: "uniform or zipf"},
			&cli.Float64Flag{Name: "zipf-s", Value: d.ZipfS, Usage: "zipf exponent (> 1)"},
			&cli.Float64Flag{Name: "hot-key-share", Usage: "share of requests sent to one hot key"},
			&cli.StringFlag{Name: "key-prefix", Value: d.KeyPrefix},
			&cli.Int64Flag{Name: "cost", Value: d.Cost},
			&cli.StringFlag{Name: "method", Value: d.Method, Usage: "post (node JSON API), get (node forward-auth), http (any URL: --http-method, --header, --body) or grpc (Envoy ShouldRateLimit: --domain, --descriptor)"},
			&cli.IntFlag{Name: "max-inflight", Value: d.MaxInflight, Usage: "bound on requests awaiting an answer"},
			&cli.DurationFlag{Name: "timeout", Value: d.Timeout, Usage: "per request"},
			&cli.Uint64Flag{Name: "seed", Value: d.Seed},
			&cli.BoolFlag{Name: "verify", Usage: "check every decision against the cluster's limits"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
			&cli.DurationFlag{Name: "max-p99", Usage: "exit 2 when p99 latency is above this"},
			&cli.Float64Flag{Name: "max-error-rate", Usage: "exit 2 when the share of errors is above this (0..1)"},
			&cli.Float64Flag{Name: "min-rate", Usage: "exit 2 when the achieved rate (req/s) is below this"},
			&cli.Int64Flag{Name: "max-dropped", Usage: "exit 2 when more due requests than this were never sent (the generator fell behind)"},
			&cli.Int64Flag{Name: "max-over-admissions", Usage: "with --verify: exit 2 when more requests than this were admitted beyond their limit"},
			&cli.Float64Flag{Name: "max-false-blocks-rate", DefaultText: "none", Usage: "with --verify: exit 2 when more than this share of the judged denials (0..1) were false blocks"},
		}, loadgenTargetFlags()),
		Action: func(c *cli.Context) error {
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			cfg := loadgen.Config{Targets: repeatedValues(c, "target"), Duration: c.Duration("duration"), Keys: c.Int("keys"),
				Distribution: c.String("distribution"), ZipfS: c.Float64("zipf-s"), HotKeyShare: c.Float64("hot-key-share"),
				KeyPrefix: c.String("key-prefix"), Cost: c.Int64("cost"), Method: c.String("method"),
				MaxInflight: c.Int("max-inflight"), Timeout: c.Duration("timeout"), Seed: c.Uint64("seed"),
				Verify: c.Bool("verify"), MaxP99: c.Duration("max-p99"), MaxErrorRate: c.Float64("max-error-rate"),
				MinRate: c.Float64("min-rate"), MaxDropped: c.Int64("max-dropped"), MaxOverAdmissions: c.Int64("max-over-admissions")}
			if c.IsSet("max-false-blocks-rate") {
				v := c.Float64("max-false-blocks-rate")
				cfg.MaxFalseBlocksRate = &v
			}
			if cfg.Rate, cfg.RateEnd, err = loadgen.ParseRate(c.String("rate")); err != nil {
				return err
			}
			if err := loadgenTargetConfig(c, &cfg); err != nil {
				return err
			}
			stderr := c.App.ErrWriter
			r, err := loadgen.Run(c.Context, cfg, stderr, isTerminal(stderr), log)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				if err := enc.Encode(r); err != nil {
					return err
				}
			} else {
				r.WriteText(c.App.Writer)
			}
			if len(r.Failed) > 0 {
				return &exitError{code: 2, msg: "thresholds missed: " + strings.Join(r.Failed, "; ")}
			}
			return nil
		},
	}
}

// isTerminal reports whether w is a terminal, for live progress lines.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
