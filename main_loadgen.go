package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/ratelimiter/ratelimiter/loadgen"
)

// repeated is a flag given once per value that keeps each value whole: a
// URL template, a header or a descriptor may hold commas, on which
// cli.StringSliceFlag would split it.
type repeated []string

// repeatedCopy marks the whole list as cli copies it from a flag's name
// to its alias (through Serialize and Set): that copy replaces the list
// instead of adding to it.
const repeatedCopy = "\x00repeated:"

func (r *repeated) Set(v string) error {
	if s, ok := strings.CutPrefix(v, repeatedCopy); ok {
		return json.Unmarshal([]byte(s), (*[]string)(r))
	}
	*r = append(*r, v)
	return nil
}

func (r *repeated) String() string { return strings.Join(*r, " ") }

func (r *repeated) Serialize() string {
	b, _ := json.Marshal([]string(*r))
	return repeatedCopy + string(b)
}

func repeatedValues(c *cli.Context, name string) []string {
	if r, ok := c.Generic(name).(*repeated); ok {
		return *r
	}
	return nil
}

// loadgenTargetFlags are the flags of loadgen's other targets: any HTTP
// URL and Envoy's gRPC API.
func loadgenTargetFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "http-method", Usage: "with --method http: the request method (default GET, or POST with a body)"},
		&cli.GenericFlag{Name: "header", Aliases: []string{"H"}, Value: &repeated{}, Usage: "with --method http: a header 'Name: value', {key} and {cost} replaced (repeatable)"},
		&cli.StringFlag{Name: "body", Usage: "with --method http: the request body, {key} and {cost} replaced"},
		&cli.StringFlag{Name: "body-file", Usage: "with --method http: read the body template from this file"},
		&cli.StringFlag{Name: "domain", Usage: "with --method grpc: the rate limit domain of every request"},
		&cli.GenericFlag{Name: "descriptor", Value: &repeated{}, Usage: "with --method grpc: one descriptor 'key=value[,key=value…]', {key} and {cost} replaced (repeatable)"},
	}
}

// loadgenTargetConfig reads loadgenTargetFlags into cfg.
func loadgenTargetConfig(c *cli.Context, cfg *loadgen.Config) error {
	cfg.HTTPMethod, cfg.Body, cfg.Domain = c.String("http-method"), c.String("body"), c.String("domain")
	cfg.Headers, cfg.Descriptors = repeatedValues(c, "header"), repeatedValues(c, "descriptor")
	if f := c.String("body-file"); f != "" {
		if cfg.Body != "" {
			return fmt.Errorf("give --body or --body-file, not both")
		}
		// Read one byte past the limit, so that Validate names a file too
		// large and /dev/zero does not fill the memory.
		fh, err := os.Open(f)
		if err != nil {
			return fmt.Errorf("cannot read --body-file: %w", err)
		}
		defer fh.Close()
		b, err := io.ReadAll(io.LimitReader(fh, loadgen.MaxBody+1))
		if err != nil {
			return fmt.Errorf("cannot read --body-file: %w", err)
		}
		cfg.Body = string(b)
	}
	return nil
}
