package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/config"
	"github.com/ratelimiter/ratelimiter/internal/nodetest"
	"github.com/ratelimiter/ratelimiter/internal/redistest"
	"github.com/ratelimiter/ratelimiter/limiter"
)

// loadgenNode runs one node on a fresh Redis until the test ends and
// returns its base URL once it serves limits.
func loadgenNode(t *testing.T, limits []limiter.Limit) string {
	t.Helper()
	cfg := nodetest.Config("lg", redistest.Start(t))
	cfg.Limits = limits
	// Under a loaded test machine a Redis call may outlive the default
	// 50 ms and be answered fail-open; --verify would rightly exclude it.
	cfg.RedisTimeout = config.Duration{Duration: time.Second}
	base := nodetest.Start(t, cfg).URL
	nodetest.WaitLimits(t, base, limits)
	return base
}

// runLoadgen runs the CLI in-process, bounded in time.
func runLoadgen(t *testing.T, args ...string) (stdout, stderr string, err error, took time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	start := time.Now()
	err = run(ctx, append([]string{"ratelimiter", "loadgen"}, args...), &out, &errOut)
	return out.String(), errOut.String(), err, time.Since(start)
}

// TestLoadgenDeadTargetExitsTwo: a run whose threshold is missed exits 2,
// on time, and says which threshold.
func TestLoadgenDeadTargetExitsTwo(t *testing.T) {
	t.Parallel()
	target := "http://" + nodetest.FreeAddr(t)
	stdout, stderr, err, took := runLoadgen(t, "--target", target, "--rate", "200", "--duration", "2s", "--max-error-rate", "0.5")
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 {
		t.Fatalf("loadgen against a dead target = %v (%T); want an *exitError with code 2\nstdout:\n%s\nstderr:\n%s", err, err, stdout, stderr)
	}
	if msg := ee.Error(); !strings.Contains(msg, "--max-error-rate 0.5") || !strings.Contains(msg, "error rate 1.000") {
		t.Errorf("exit message = %q; want it to name the --max-error-rate 0.5 threshold and the error rate", msg)
	}
	if took > 3*time.Second {
		t.Errorf("a 2s run against a dead target took %s; want at most 3s", took)
	}
	for _, want := range []string{"sent           400 ", "connection", "FAILED         error rate 1.000 > --max-error-rate 0.5"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("text report lacks %q:\n%s", want, stdout)
		}
	}
}

// TestLoadgenJSON checks the documented fields of --json, on a passing run
// and on one that misses a threshold (the report still comes out).
func TestLoadgenJSON(t *testing.T) {
	t.Parallel()
	base := loadgenNode(t, []limiter.Limit{{KeyPattern: "json:*", MaxRequests: 10, WindowSeconds: 10}})
	type report struct {
		Sent         *int64   `json:"sent"`
		AchievedRate *float64 `json:"achieved_rate"`
		Latency      *struct {
			P99 *float64 `json:"p99_ms"`
		} `json:"latency"`
		PerTarget []struct {
			URL  string `json:"url"`
			Sent int64  `json:"sent"`
		} `json:"per_target"`
		Failed   []string         `json:"failed_thresholds"`
		Errors   map[string]int64 `json:"errors"`
		Accuracy *struct {
			Checked        int64 `json:"checked"`
			OverAdmissions int64 `json:"over_admissions"`
		} `json:"accuracy"`
	}
	f := func(wantCode int, extra ...string) report {
		t.Helper()
		args := append([]string{"--target", base, "--rate", "300", "--duration", "1s", "--keys", "5",
			"--key-prefix", "json:", "--verify", "--json"}, extra...)
		stdout, stderr, err, _ := runLoadgen(t, args...)
		var ee *exitError
		switch {
		case wantCode == 0 && err != nil:
			t.Fatalf("loadgen %q = %v; want success\nstderr:\n%s", args, err, stderr)
		case wantCode != 0 && (!errors.As(err, &ee) || ee.code != wantCode):
			t.Fatalf("loadgen %q = %v; want exit code %d\nstderr:\n%s", args, err, wantCode, stderr)
		}
		// Every field is present, even the empty ones: null would break jq.
		var raw map[string]json.RawMessage
		if err := json.Unmarshal([]byte(stdout), &raw); err != nil {
			t.Fatalf("--json output is not JSON: %v\n%s", err, stdout)
		}
		for _, k := range []string{"sent", "achieved_rate", "latency", "per_target", "failed_thresholds", "errors", "accuracy"} {
			if v, ok := raw[k]; !ok || string(v) == "null" {
				t.Errorf("--json output field %q = %s; want a value", k, v)
			}
		}
		var r report
		if err := json.Unmarshal([]byte(stdout), &r); err != nil {
			t.Fatalf("--json output does not have the documented types: %v\n%s", err, stdout)
		}
		if r.Sent == nil || *r.Sent != 300 || r.AchievedRate == nil || *r.AchievedRate < 250 ||
			r.Latency == nil || r.Latency.P99 == nil || *r.Latency.P99 <= 0 {
			t.Errorf("--json = %s; want sent 300, achieved_rate about 300, latency.p99_ms > 0", stdout)
		}
		if len(r.PerTarget) != 1 || r.PerTarget[0].URL != base || r.PerTarget[0].Sent != 300 {
			t.Errorf("per_target = %+v; want all 300 to %s", r.PerTarget, base)
		}
		if r.Accuracy == nil || r.Accuracy.Checked != 300 || r.Accuracy.OverAdmissions != 0 {
			t.Errorf("accuracy = %+v; want 300 checked, 0 over-admissions", r.Accuracy)
		}
		return r
	}
	if r := f(0); r.Failed == nil || len(r.Failed) != 0 || len(r.Errors) != 0 {
		t.Errorf("passing run: failed_thresholds = %q, errors = %v; want [] and {}", r.Failed, r.Errors)
	}
	if r := f(2, "--min-rate", "1e9", "--key-prefix", "json:second:"); len(r.Failed) != 1 || !strings.Contains(r.Failed[0], "--min-rate") {
		t.Errorf("--min-rate 1e9: failed_thresholds = %q; want the --min-rate threshold", r.Failed)
	}
}
