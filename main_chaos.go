package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ratelimiter/ratelimiter/chaos"
	"github.com/ratelimiter/ratelimiter/chaos/proxy"
	"github.com/ratelimiter/ratelimiter/operator"
)

// childEnv marks a process this binary started to run one of its own
// commands; a test binary reads it in TestMain and runs the command
// instead of its tests.
const childEnv = "RATELIMITER_CHILD"

// selfCommand runs this binary with args: how chaos and demo start nodes
// they can kill and pause.
func selfCommand(args ...string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	return cmd
}

func chaosCommand() *cli.Command {
	return &cli.Command{
		Name:  "chaos",
		Usage: "inject real faults into a local cluster and score the operator",
		Subcommands: []*cli.Command{
			{
				Name:  "proxy",
				Usage: "run the TCP fault proxy (latency, bandwidth, blackhole, reset_peer, down) with its HTTP API",
				Flags: append(logFlags(),
					&cli.StringFlag{Name: "listen", Usage: "address clients (nodes) connect to", Required: true},
					&cli.StringFlag{Name: "upstream", Usage: "address forwarded to (Redis)", Required: true},
					&cli.StringFlag{Name: "api", Usage: "address of the HTTP API", Required: true},
				),
				Action: chaosProxy,
			},
			{
				Name:  "list",
				Usage: "list the scenarios",
				Flags: []cli.Flag{&cli.StringFlag{Name: "scenarios", Usage: "scenarios TOML (default: the embedded set)"}},
				Action: func(c *cli.Context) error {
					all, err := chaos.LoadScenarios(c.String("scenarios"))
					if err != nil {
						return err
					}
					for _, sc := range all {
						fmt.Fprintf(c.App.Writer, "%-20s %s\n", sc.Name, sc.Description)
					}
					return nil
				},
			},
			{
				Name:  "run",
				Usage: "run scenarios on a fresh local cluster each and print the scorecard",
				Flags: append(logFlags(),
					&cli.StringSliceFlag{Name: "scenario", Aliases: []string{"s"}, Usage: "scenario to run (repeatable)"},
					&cli.BoolFlag{Name: "all", Usage: "run every scenario"},
					&cli.StringFlag{Name: "scenarios", Usage: "scenarios TOML (default: the embedded set)"},
					&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "TOML for the nodes and the operator (default: the embedded config.toml)"},
					&cli.StringFlag{Name: "dir", Usage: "where the journal, logs and databases go (default: a new temporary directory, kept)"},
					&cli.Float64Flag{Name: "load", Value: 150, Usage: "background checks per second over all nodes"},
					&cli.DurationFlag{Name: "interval", Value: time.Second, Usage: "operator loop interval"},
					&cli.BoolFlag{Name: "json", Usage: "print the results as JSON instead of the scorecard"},
					&cli.StringFlag{Name: "diagnoser", Usage: "rules, llm or both (default: [operator] diagnoser); llm and both need [operator.llm]"},
				),
				Action: chaosRun,
			},
		},
	}
}

func chaosProxy(c *cli.Context) error {
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	p, err := proxy.New(c.String("listen"), c.String("upstream"), log.With("role", "proxy"))
	if err != nil {
		return err
	}
	log.Info("proxy running", "listen", p.Addr(), "upstream", p.Upstream(), "api", c.String("api"))
	return serveWhile(c.Context, c.String("api"), p.Handler(), p.Run)
}

func chaosRun(c *cli.Context) error {
	all, err := chaos.LoadScenarios(c.String("scenarios"))
	if err != nil {
		return err
	}
	scenarios := all
	switch {
	case c.Bool("all") && c.IsSet("scenario"):
		return errors.New("give --all or --scenario, not both")
	case c.IsSet("scenario"):
		if scenarios, err = chaos.Select(all, c.StringSlice("scenario")); err != nil {
			return err
		}
	case !c.Bool("all"):
		return errors.New("give --scenario NAME (repeatable) or --all; `chaos list` shows them")
	}
	f, err := loadConfig(c.String("config"))
	if err != nil {
		return err
	}
	if c.IsSet("diagnoser") {
		f.Operator.Diagnoser = c.String("diagnoser")
		if err := f.Operator.Validate(); err != nil {
			return fmt.Errorf("invalid --diagnoser: %w", err)
		}
	}
	subj, ok := f.Subjects[f.Operator.Subject]
	if !ok {
		return fmt.Errorf("no subject %q in the configuration", f.Operator.Subject)
	}
	dir, err := workDir(c.String("dir"), "ratelimiter-chaos-")
	if err != nil {
		return err
	}
	journal, err := os.Create(filepath.Join(dir, "journal.jsonl"))
	if err != nil {
		return err
	}
	defer journal.Close()
	runLog, err := os.Create(filepath.Join(dir, "runner.log"))
	if err != nil {
		return err
	}
	defer runLog.Close()
	out := c.App.Writer
	timeline := out
	if c.Bool("json") {
		timeline = c.App.ErrWriter
	}
	fmt.Fprintf(timeline, "chaos: %d scenario(s); journal, logs and databases in %s\n", len(scenarios), dir)
	start := time.Now()
	results, runErr := chaos.Run(c.Context, chaos.Config{
		Cluster: chaos.ClusterConfig{
			Command: selfCommand, NodeConfig: c.String("config"), Nodes: 3,
			Operator: f.Operator, Subject: subj, Interval: c.Duration("interval"),
			Secrets: operator.ResolveSecrets(f.Operator, subj, os.Getenv),
			Load:    c.Float64("load"), LoadKeys: 1000, LoadPrefix: "api:bg-",
			Dir: dir, Log: slog.New(slog.NewJSONHandler(runLog, nil)),
		},
		Journal: journal, Timeline: timeline,
	}, scenarios)
	if err := printResults(out, c.Bool("json"), results, time.Since(start)); err != nil {
		return err
	}
	if runErr != nil {
		return fmt.Errorf("chaos run stopped: %w", runErr)
	}
	for _, r := range results {
		if !r.Passed {
			return &exitError{code: 2, msg: "scenario " + r.Scenario + " missed its expectation (journal: " + journal.Name() + ")"}
		}
	}
	return nil
}

func printResults(w io.Writer, asJSON bool, results []chaos.Result, took time.Duration) error {
	if asJSON {
		if results == nil {
			results = []chaos.Result{} // [] when empty, never null
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"results": results, "took_s": took.Seconds()})
	}
	fmt.Fprintln(w)
	chaos.WriteScorecard(w, results, took)
	return nil
}

// workDir makes dir, or a new temporary directory when dir is empty, for
// the logs, journal and database of a chaos run or demo.
func workDir(dir, pattern string) (string, error) {
	if dir == "" {
		return os.MkdirTemp("", pattern)
	}
	return dir, os.MkdirAll(dir, 0o755)
}
