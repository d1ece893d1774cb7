package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// healthCommand is the container HEALTHCHECK. The image is built FROM
// scratch, so there is no shell or curl to probe with: the binary probes
// itself, and exits 0 when the URL answers 200 and 1 otherwise.
func healthCommand() *cli.Command {
	return &cli.Command{
		Name:  "health",
		Usage: "exit 0 when --url answers 200, else 1 (a container health check)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "url", EnvVars: []string{"HEALTH_URL"}, Value: "http://127.0.0.1:8080/health", Usage: "URL to GET"},
			&cli.DurationFlag{Name: "timeout", Value: 2 * time.Second, Usage: "bound of the whole probe"},
		},
		Action: func(c *cli.Context) error {
			status, err := probe(c.Context, c.String("url"), c.Duration("timeout"))
			if err != nil {
				return err
			}
			fmt.Fprintln(c.App.Writer, status)
			return nil
		},
	}
}

// probe GETs u once. It returns the status line on 200, and otherwise an
// error carrying the start of the body, which for a node says why it is
// not serving (draining, no store).
func probe(ctx context.Context, u string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", fmt.Errorf("invalid --url: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("unhealthy: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("unhealthy: GET %s: %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	return "healthy: " + resp.Status, nil
}
