package chaos

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/operator"
)

func TestEmbeddedScenarios(t *testing.T) {
	all, err := LoadScenarios("")
	if err != nil {
		t.Fatal(err)
	}
	// The list: each must ship with an expectation.
	for _, name := range []string{"node-kill", "node-pause", "redis-down", "redis-latency", "redis-blackhole",
		"hot-key", "misconfigured-limit", "drain-stuck", "none", "maintenance-drain"} {
		sc, err := Select(all, []string{name})
		if err != nil {
			t.Fatal(err)
		}
		e := sc[0].Expect
		if name != "none" && name != "maintenance-drain" && (e.Invariant == "" || e.Entity == "" || e.Diagnosis == "") {
			t.Errorf("%s: expect %+v lacks invariant, entity or diagnosis", name, e)
		}
	}
	if _, err := Select(all, []string{"meteor-strike"}); err == nil || !strings.Contains(err.Error(), "node-kill") {
		t.Errorf("Select(unknown) = %v; want an error listing the scenarios", err)
	}
}

func TestScenarioErrorsNamePathAndLine(t *testing.T) {
	f := func(body string, want ...string) {
		t.Helper()
		path := filepath.Join(t.TempDir(), "s.toml")
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := LoadScenarios(path)
		if err == nil {
			t.Fatalf("LoadScenarios(%q) = nil; want an error", body)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("LoadScenarios(%q) = %v; want it to contain %q", body, err, w)
			}
		}
	}
	f("[[scenario]]\nname = \"a\"\nfault = { kind = \"meteor\" }\nrecover_within = \"1s\"\ndetect_within = \"1s\"\nexpect = { invariant = \"x\" }\n",
		"s.toml:3: scenario[0].fault.kind: unknown fault kind")
	f("[[scenario]]\nname = \"a\"\nfault = { kind = \"proxy\", proxy = { type = \"latency\" } }\nexpect = { invariant = \"x\", diagnosis = \"(\" }\nrecover_within = \"1s\"\ndetect_within = \"1s\"\n",
		"scenario[0].fault.proxy: latency_ms must be positive", "scenario[0].expect.diagnosis: invalid regular expression")
	f("[[scenario]]\nname = \"a\"\nfault = { kind = \"none\" }\nrecover_within = \"1s\"\n",
		"scenario[0].hold: a control needs a positive hold")
	f("[[scenario]]\nname = \"a\"\nfault = { kind = \"none\" }\nhold = \"1s\"\nrecover_within = \"1s\"\n[[scenario]]\nname = \"a\"\nfault = { kind = \"node_kill\" }\nexpect = { invariant = \"node_down\" }\nrecover_within = \"1s\"\n",
		"scenario[1].name: duplicate", "scenario[1].fault.node: required", "scenario[1].detect_within: must be positive")
	f("[[scenario]]\nname = \"a\"\nfault = { kind = \"hot_key\", key = \"k\", rate = 0 }\nhold = \"1s\"\nrecover_within = \"1s\"\ncolour = \"red\"\n",
		"scenario[0].colour", "scenario[0].fault.rate: must be in")
}

func TestScorecard(t *testing.T) {
	var b bytes.Buffer
	WriteScorecard(&b, []Result{
		{Scenario: "none", Passed: true, Recovered: true, control: true},
		{Scenario: "node-kill", Passed: true, Detected: true, RightInvariant: true, RightEntity: true, RightDiagnosis: true,
			RightAction: true, Recovered: true, DetectSeconds: 2.5, RecoverSeconds: 13.1},
		{Scenario: "redis-down", Detected: true, RightInvariant: true, RightEntity: false, Recovered: true, DetectSeconds: 1,
			Missed: []string{"detect_within (20s): no redis_disconnected ticket for \"node-*\" yet"}},
	}, 95*time.Second)
	out := b.String()
	for _, want := range []string{
		"SCENARIO", "none (ok)",
		"TOTAL 2/3 passed; of 2 faults: detected 2, right invariant 2, entity 1, diagnosis 1, action 1; recovered 3/3; 1m35s",
		"redis-down: missed detect_within (20s): no redis_disconnected ticket",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("scorecard lacks %q:\n%s", want, out)
		}
	}
	rows := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			rows[f[0]] = strings.Join(f[1:], " ")
		}
	}
	if got, want := rows["node-kill"], "yes yes yes yes yes yes 2.5s 13.1s PASS"; got != want {
		t.Errorf("node-kill row = %q; want %q", got, want)
	}
	if got, want := rows["redis-down"], "yes yes no no no yes 1.0s - FAIL"; got != want {
		t.Errorf("redis-down row = %q; want %q", got, want)
	}
}

// TestVerdictNeedsEveryDeadline: a scenario whose columns all came right by
// the end of the run still fails when a deadline was missed on the way.
func TestVerdictNeedsEveryDeadline(t *testing.T) {
	e := Expect{Invariant: "hot_key", Entity: "user:x", Diagnosis: "flooding", Action: "block_key", Remediates: true}
	ticket := operator.Ticket{ID: 1, Key: "hot_key:user:x", Invariant: "hot_key", Entity: "user:x", Status: operator.StatusResolved,
		Diagnosis: []byte(`{"diagnoser":"rules","summary":"user:x is flooding"}`)}
	f := func(status string, escalated bool, missed []string, wantRemediated, wantPass bool) {
		t.Helper()
		w := &watcher{tickets: map[int64]operator.Ticket{1: ticket}, opened: map[int64]time.Time{1: time.Now()},
			proposals: map[int64]operator.Proposal{7: {ID: 7, TicketID: 1, Action: "block_key", Status: status}},
			failed:    map[int64]string{}}
		if escalated {
			w.failed[1] = "remediation_failed"
		}
		if err := w.remediated(e); (err == nil) != wantRemediated {
			t.Errorf("remediated() with proposal %s, escalated %v = %v; want remediated %v", status, escalated, err, wantRemediated)
		}
		r := Result{Recovered: true, Missed: missed}
		w.score(&r, e, time.Now().Add(-time.Second))
		if r.Passed != wantPass {
			t.Errorf("score() with proposal %s, missed %q: passed %v; want %v (%+v)", status, missed, r.Passed, wantPass, r)
		}
		if got := verdict(r); wantPass != (got == "PASS") || (len(missed) > 0 && !strings.Contains(got, missed[0])) {
			t.Errorf("verdict = %q; want it to name %q", got, missed)
		}
	}
	f(operator.ProposalVerified, false, nil, true, true)
	// The ticket resolved, but the operator never ran its fix (it waited
	// for an approval): the fault went away on its own.
	f(operator.ProposalPending, false, []string{"remediation before the revert (recover_within 1m0s): the operator has not executed block_key"}, false, false)
	// The fix ran and failed to clear the violation: escalated, even if
	// the ticket resolved later.
	f(operator.ProposalVerifyFailed, true, []string{"remediation before the revert (recover_within 1m0s): escalated"}, false, false)
	// Every column right by the end, but the ticket came after detect_within.
	f(operator.ProposalVerified, false, []string{"detect_within (5s): no hot_key ticket"}, true, false)
}
