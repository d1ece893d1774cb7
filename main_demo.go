package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ratelimiter/ratelimiter/chaos"
	"github.com/ratelimiter/ratelimiter/operator"
)

const defaultTour = "node-kill,hot-key,redis-slow"

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run three nodes, the operator and load on this machine, tour some faults and print the scorecard",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "tour", Value: defaultTour, Usage: "comma-separated scenarios to play (`chaos list` shows them)"},
			&cli.BoolFlag{Name: "keep", Usage: "leave the cluster running after the tour, until Ctrl-C"},
			&cli.Float64Flag{Name: "load", Value: 150, Usage: "background checks per second over all nodes"},
			&cli.StringFlag{Name: "dir", Usage: "where logs and the operator database go (default: a new temporary directory)"},
		},
		Action: demo,
	}
}

func demo(c *cli.Context) error {
	all, err := chaos.LoadScenarios("")
	if err != nil {
		return err
	}
	var names []string
	for _, n := range strings.Split(c.String("tour"), ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	tour, err := chaos.Select(all, names)
	if err != nil {
		return err
	}
	f, err := loadConfig("")
	if err != nil {
		return err
	}
	dir, err := workDir(c.String("dir"), "ratelimiter-demo-")
	if err != nil {
		return err
	}
	runLog, err := os.Create(filepath.Join(dir, "demo.log"))
	if err != nil {
		return err
	}
	defer runLog.Close()
	out := c.App.Writer
	fmt.Fprintf(out, "ratelimiter demo: three nodes, the operator in auto mode and %.0f checks/s of load; logs in %s\n", c.Float64("load"), dir)
	cluster, err := chaos.StartCluster(c.Context, chaos.ClusterConfig{
		Command: selfCommand, Nodes: 3, InProcessOK: true,
		Operator: f.Operator, Subject: f.Subjects[f.Operator.Subject], Interval: time.Second,
		Secrets: operator.ResolveSecrets(f.Operator, f.Subjects[f.Operator.Subject], os.Getenv),
		Load:    c.Float64("load"), LoadKeys: 1000, LoadPrefix: "api:bg-",
		Dir: dir, Log: slog.New(slog.NewJSONHandler(runLog, nil)), StatusAddr: "127.0.0.1:0",
	})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(out, "stopping the cluster")
		cluster.Close()
	}()
	if cluster.Proxy != nil {
		fmt.Fprintf(out, "store: a private redis-server on %s, which the nodes reach through the fault proxy on %s\n", cluster.RedisAddr, cluster.Proxy.Addr())
	} else {
		fmt.Fprintln(out, "store: in-process (no redis-server on PATH), so each node counts alone and faults that need a shared Redis are skipped;\n       install redis-server (apt-get install -y redis-server) for the whole tour")
	}
	for _, n := range cluster.Nodes {
		fmt.Fprintf(out, "node %s: %s\n", n.ID, n.URL())
	}
	fmt.Fprintf(out, "operator status page: %s\n", cluster.StatusURL)
	fmt.Fprintln(out, "\ntimeline (seconds since the tour began):")
	start := time.Now()
	results, err := chaos.Tour(c.Context, chaos.Config{Timeline: out}, cluster, tour)
	fmt.Fprintln(out)
	chaos.WriteScorecard(out, results, time.Since(start))
	if err != nil {
		return fmt.Errorf("demo stopped: %w", err)
	}
	if c.Bool("keep") {
		if err := keepRunning(c.Context, out, cluster); err != nil {
			return err
		}
	}
	for _, r := range results {
		if !r.Passed && r.Skipped == "" {
			return &exitError{code: 2, msg: "the tour's scenario " + r.Scenario + " missed its expectation"}
		}
	}
	return nil
}

// keepRunning serves the proxy's API, prints what to try, and waits for
// Ctrl-C.
func keepRunning(ctx context.Context, out io.Writer, c *chaos.Cluster) error {
	n := c.Nodes[0].URL()
	fmt.Fprintf(out, "\nthe cluster keeps running; try:\n")
	fmt.Fprintf(out, "  curl -s -X POST %s/api/v1/check -d '{\"key\":\"user:alice\"}'\n", n)
	fmt.Fprintf(out, "  curl -s %s/api/v1/nodes\n  curl -s %s/api/v1/limits\n  curl -s %s/api/v1/hot-keys\n  curl -s %s/metrics\n", n, n, n, n)
	if c.Proxy != nil {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: c.Proxy.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
		fmt.Fprintf(out, "  curl -s -X PUT http://%s/faults/slow -d '{\"type\":\"latency\",\"latency_ms\":20}'   # slow Redis down\n", ln.Addr())
		fmt.Fprintf(out, "  curl -s -X DELETE http://%s/faults                                         # and clear it\n", ln.Addr())
	}
	fmt.Fprintf(out, "Ctrl-C stops everything.\n")
	<-ctx.Done()
	if !errors.Is(context.Cause(ctx), context.Canceled) {
		return context.Cause(ctx)
	}
	return nil
}
