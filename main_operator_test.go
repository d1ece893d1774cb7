package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/nodetest"
	"github.com/ratelimiter/ratelimiter/internal/redistest"
	"github.com/ratelimiter/ratelimiter/internal/testkit"
	"github.com/ratelimiter/ratelimiter/operator"
	"github.com/ratelimiter/ratelimiter/operator/llm/llmtest"
)

// runOperatorCLI runs `ratelimiter operator ARGS…` in-process, bounded in
// time, and returns its stdout, stderr and error.
func runOperatorCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errOut testkit.Buffer
	err := run(ctx, append([]string{"ratelimiter", "operator"}, args...), &out, &errOut)
	return out.String(), errOut.String(), err
}

// runOperatorUntil runs `ratelimiter operator run ARGS…` until done holds
// (see nodetest.RunUntil). done must not call run() itself (see
// TestOperatorApproveThroughCLI).
func runOperatorUntil(t *testing.T, args []string, stderr io.Writer, what string, done func() bool) error {
	t.Helper()
	return nodetest.RunUntil(t, func(ctx context.Context) error {
		return run(ctx, append([]string{"ratelimiter", "operator", "run"}, args...), io.Discard, stderr)
	}, what, done)
}

// TestOperatorCheck: `operator check` reports every problem of a file at
// once, each with its TOML path, and passes the shipped configuration.
func TestOperatorCheck(t *testing.T) {
	_, _, err := runOperatorCLI(t, "check", "--config", "operator/testdata/bad_subject.toml")
	if err == nil {
		t.Fatal("check passed a file with four problems")
	}
	for _, want := range []string{
		"subjects.queue.retries",                        // unknown key in a subject
		"unknown key",                                   //
		"subjects.queue.invariants[0].over",             // an unknown observation
		`"wokers" is not an observation`,                //
		"subjects.queue.invariants[1].expr",             // a bad expression
		"subjects.queue.playbooks[0].actions[0].action", // an unknown action
		`"reboot_worker" is not an action`,              //
		"bad_subject.toml:9: subjects.queue.retries",    // with the file and line
		"bad_subject.toml:41: subjects.queue.playbooks", //
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("check error lacks %q:\n%v", want, err)
		}
	}

	for _, args := range [][]string{{"check", "--config", "config.toml"}, {"check"}, {"check", "--config", "operator/testdata/queue.toml"}} {
		out, _, err := runOperatorCLI(t, args...)
		if err != nil {
			t.Errorf("operator %s: %v", strings.Join(args, " "), err)
			continue
		}
		if !strings.Contains(out, "configuration valid") {
			t.Errorf("operator %s printed %q; want \"configuration valid\"", strings.Join(args, " "), out)
		}
	}
}

// TestOperatorApproveThroughCLI runs `operator run` in approve mode on the
// stand-in queue of operator/testdata/queue.toml: the proposal waits, and
// nothing is called, until `operator actions approve ID`; then the running
// loop executes it with the bearer token and the ticket resolves.
func TestOperatorApproveThroughCLI(t *testing.T) {
	const token = "cli-queue-token-93be1d"
	t.Setenv("QUEUE_OPERATOR_TEST_TOKEN", token)
	var (
		mu       sync.Mutex
		stuck    = true
		restarts []string // "AUTH BODY"
		gets     int      // of /status
	)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		gets++
		fmt.Fprintf(w, `{"workers":[{"name":"w1","stuck":%v}]}`, stuck)
	})
	mux.HandleFunc("POST /workers/{name}/restart", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		restarts = append(restarts, r.Header.Get("Authorization")+" "+string(body))
		if r.PathValue("name") == "w1" && r.Header.Get("Authorization") == "Bearer "+token {
			stuck = false
		}
		fmt.Fprint(w, `{"ok":true}`)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	calls := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), restarts...)
	}
	statusGets := func() int {
		mu.Lock()
		defer mu.Unlock()
		return gets
	}

	db := filepath.Join(t.TempDir(), "cli.db")
	common := []string{"--config", "operator/testdata/queue.toml", "--db", db, "--subject-url", srv.URL}
	// The test's own view of the DB, to see when a run got where a step
	// needs it to.
	st, err := operator.OpenStore(db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// `operator run` until done holds, then stopped by its context. The
	// runs and the other commands take turns: urfave/cli v2 mutates
	// package-level flags (HelpFlag) in every run, so two run() calls must
	// not overlap.
	var logs testkit.Buffer
	loop := func(what string, done func() bool) {
		t.Helper()
		args := append([]string{"--mode", "approve", "--interval", "100ms", "--log-level", "debug"}, common...)
		if err := runOperatorUntil(t, args, &logs, what, done); err != nil {
			t.Fatalf("operator run: %v; log:\n%s", err, logs.String())
		}
	}
	list := func() []operator.Proposal {
		t.Helper()
		out, _, err := runOperatorCLI(t, append([]string{"actions", "list", "--json"}, common...)...)
		if err != nil {
			t.Fatalf("actions list: %v", err)
		}
		var ps []operator.Proposal
		if err := json.Unmarshal([]byte(out), &ps); err != nil {
			t.Fatalf("actions list --json: %v in %q", err, out)
		}
		return ps
	}

	loop("a proposal", func() bool {
		ps, err := st.Proposals(context.Background(), operator.ProposalFilter{})
		return err == nil && len(ps) > 0
	})
	pending := list()
	if len(pending) != 1 || pending[0].Action != "restart_worker" || pending[0].Status != operator.ProposalPending {
		t.Fatalf("proposals = %+v; want one pending restart_worker; log:\n%s", pending, logs.String())
	}
	// Five more intervals: still waiting. Each tick reads /status once per
	// observation on it, twice: twelve reads take six ticks, five of them
	// whole.
	gets0 := statusGets()
	loop("five more ticks", func() bool { return statusGets() >= gets0+12 })
	if c := calls(); len(c) != 0 {
		t.Fatalf("the queue got %v before approval", c)
	}
	if ps := list(); len(ps) != 1 || ps[0].Status != operator.ProposalPending {
		t.Fatalf("proposals before approval = %+v; want the one, pending", ps)
	}

	out, _, err := runOperatorCLI(t, append(append([]string{"actions", "approve"}, common...), fmt.Sprint(pending[0].ID))...)
	if err != nil || !strings.Contains(out, "approved") {
		t.Fatalf("actions approve: %q, %v", out, err)
	}
	if _, _, err := runOperatorCLI(t, append(append([]string{"actions", "approve"}, common...), fmt.Sprint(pending[0].ID))...); err == nil {
		t.Errorf("approving a proposal twice succeeded")
	}
	if c := calls(); len(c) != 0 {
		t.Fatalf("the queue got %v with no loop running", c)
	}
	loop("the approved restart verified", func() bool {
		p, err := st.Proposal(context.Background(), pending[0].ID)
		return err == nil && p.Status == operator.ProposalVerified
	})
	if c := calls(); len(c) != 1 || c[0] != `Bearer `+token+` {"drain_first":true,"timeout":"5s","attempt":1}` {
		t.Errorf("restart calls = %q; want one with the token and the typed body", c)
	}

	var tickets []operator.Ticket
	out, _, err = runOperatorCLI(t, append([]string{"tickets", "list", "--all", "--json"}, common...)...)
	if err != nil {
		t.Fatalf("tickets list: %v", err)
	}
	if err := json.Unmarshal([]byte(out), &tickets); err != nil {
		t.Fatalf("tickets list --json: %v in %q", err, out)
	}
	if len(tickets) != 1 || tickets[0].Key != "worker_stuck:w1" || tickets[0].Status != operator.StatusResolved {
		t.Fatalf("tickets %+v; want worker_stuck:w1 resolved", tickets)
	}
	show, _, err := runOperatorCLI(t, append(append([]string{"tickets", "show"}, common...), fmt.Sprint(tickets[0].ID))...)
	if err != nil {
		t.Fatalf("tickets show: %v", err)
	}
	for _, want := range []string{"worker_stuck:w1", "restart_worker", "verified", "approved", "cli", "resolved"} {
		if !strings.Contains(show, want) {
			t.Errorf("tickets show lacks %q:\n%s", want, show)
		}
	}
	if strings.Contains(logs.String(), token) || strings.Contains(show, token) {
		t.Errorf("the token is in the operator's output")
	}
	raw, _ := os.ReadFile(db)
	wal, _ := os.ReadFile(db + "-wal")
	if bytes.Contains(append(raw, wal...), []byte(token)) {
		t.Errorf("the token is in the database")
	}
}

// TestOperatorFlagsAfterID: `operator actions approve ID --db FILE` must
// not quietly act on another database. urfave/cli stops parsing flags at
// the first argument, so the command must refuse the extra arguments
// rather than approve (or fail to find) the proposal in ./operator.db.
func TestOperatorFlagsAfterID(t *testing.T) {
	config, err := filepath.Abs("operator/testdata/queue.toml")
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	db := filepath.Join(t.TempDir(), "real.db")
	st, err := operator.OpenStore(db)
	if err != nil {
		t.Fatal(err)
	}
	p, err := st.AddProposal(context.Background(), operator.Proposal{Action: "restart_worker", Source: "test",
		Params: map[string]any{"name": "w1", "attempt": 1}, RiskLevel: "low"})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = runOperatorCLI(t, "actions", "approve", fmt.Sprint(p.ID), "--config", config, "--db", db)
	if _, statErr := os.Stat("operator.db"); statErr == nil {
		t.Errorf("approve %d --db %s created ./operator.db and worked on it instead (error: %v)", p.ID, db, err)
	}
	if err == nil {
		st, _ := operator.OpenStore(db)
		defer st.Close()
		if got, _ := st.Proposal(context.Background(), p.ID); got.Status != operator.ProposalApproved {
			t.Errorf("approve reported success but proposal %d in %s is %s", p.ID, db, got.Status)
		}
	} else if !strings.Contains(err.Error(), "--db") && !strings.Contains(err.Error(), "flag") && !strings.Contains(err.Error(), "argument") {
		t.Errorf("approve ID --db FILE failed with %q, which does not say the flags were ignored", err)
	}

	// Worse with the kill switch: it reports success.
	os.Remove("operator.db")
	out, _, err := runOperatorCLI(t, "mode", "observe", "--config", config, "--db", db)
	st, openErr := operator.OpenStore(db)
	if openErr != nil {
		t.Fatal(openErr)
	}
	defer st.Close()
	if m, ok, _ := st.Mode(context.Background()); err == nil && (!ok || m != operator.ModeObserve) {
		t.Errorf("`operator mode observe --db %s` printed %q and succeeded, but the mode in %s is %q (set: %v): the kill switch went to ./operator.db",
			db, strings.TrimSpace(out), db, m, ok)
	}
}

// TestOperatorCheckLLM: `operator check` reports every problem of
// [operator.llm] and of a subject's lookups with its TOML path and line.
func TestOperatorCheckLLM(t *testing.T) {
	_, _, err := runOperatorCLI(t, "check", "--config", "operator/testdata/bad_llm.toml")
	if err == nil {
		t.Fatal("check passed a file with eight problems")
	}
	for _, want := range []string{
		`bad_llm.toml:9: operator.llm.provider: must be anthropic or openai (any OpenAI-compatible endpoint), got "gemini"`,
		"operator.llm.model: must name the model",
		"bad_llm.toml:10: operator.llm.api_key_env: must be the name of an environment variable, not the key itself",
		"bad_llm.toml:11: operator.llm.max_turns: must be at least 1",
		`bad_llm.toml:12: operator.llm.max_risk: must be low, medium or high, got "extreme"`,
		"subjects.queue.lookups[0].path: {name} is not a parameter of this lookup",
		`subjects.queue.lookups[0].params.id.type: must be string, int, float, bool or duration, got "text"`,
		"subjects.queue.lookups[0].params.id: is not used in path",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("check error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "sk-ant-api03-abcdef") {
		t.Errorf("the error repeats what looks like a key:\n%v", err)
	}
}

// TestOperatorDiagnoserFlag: --diagnoser picks the diagnoser of `operator
// run`; a choice the configuration cannot serve is refused with the TOML
// path to fix; with the key's variable empty the operator says so at start
// and diagnoses with the playbooks.
func TestOperatorDiagnoserFlag(t *testing.T) {
	const keyEnv = "RATELIMITER_CLI_TEST_LLM_KEY"
	var (
		mu    sync.Mutex
		asked []string // Authorization of each request to the model
	)
	model := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked = append(asked, r.Header.Get("Authorization"))
		mu.Unlock()
		raw, _ := io.ReadAll(r.Body)
		if err := llmtest.CheckOpenAI(r.Header, raw, false); err != nil { // refused as a real server would
			t.Errorf("a real OpenAI-compatible server would refuse this request: %v", err)
			llmtest.Reject(w, "openai", err)
			return
		}
		args, _ := json.Marshal(`{"summary":"the model's view of w1","root_cause":"w1 hangs","cause_invariant":"worker_stuck",` +
			`"cause_entity":"w1","confidence":0.6,"evidence":[],"alternatives":[],"recommended_actions":[]}`)
		fmt.Fprintf(w, `{"choices":[{"message":{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function",`+
			`"function":{"name":"submit_diagnosis","arguments":%s}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":900,"completion_tokens":60}}`, args)
	}))
	defer model.Close()
	queue := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"workers":[{"name":"w1","stuck":true}]}`)
	}))
	defer queue.Close()
	base, err := os.ReadFile("operator/testdata/queue.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(t.TempDir(), "llm.toml")
	llmSection := fmt.Sprintf("\n[operator.llm]\nprovider = \"openai\"\nbase_url = %q\nmodel = \"test-model\"\napi_key_env = %q\n", model.URL+"/v1", keyEnv)
	if err := os.WriteFile(cfgPath, append(base, llmSection...), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct{ config, diagnoser, want string }{
		{"operator/testdata/queue.toml", "bogus", `operator.diagnoser: must be rules, llm or both, got "bogus"`},
		{"operator/testdata/queue.toml", "llm", "operator.llm.provider: the llm and both diagnosers need a provider"},
	} {
		_, _, err := runOperatorCLI(t, "run", "--config", c.config, "--diagnoser", c.diagnoser, "--db", filepath.Join(t.TempDir(), "x.db"))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("run --diagnoser %s: %v; want %q", c.diagnoser, err, c.want)
		}
	}

	// run for a while on a fresh DB, then show the ticket.
	f := func(diagnoser string) (logs, show string) {
		t.Helper()
		db := filepath.Join(t.TempDir(), "op.db")
		common := []string{"--config", cfgPath, "--db", db, "--subject-url", queue.URL}
		st, err := operator.OpenStore(db)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		var errOut testkit.Buffer
		args := append([]string{"--mode", "observe", "--interval", "100ms", "--diagnoser", diagnoser}, common...)
		// Until ticket 1 is diagnosed: its diagnosis is stored first.
		if err := runOperatorUntil(t, args, &errOut, "ticket 1 diagnosed", func() bool {
			tk, err := st.Ticket(context.Background(), 1)
			return err == nil && tk.Status == operator.StatusDiagnosed
		}); err != nil {
			t.Fatalf("operator run --diagnoser %s: %v; log:\n%s", diagnoser, err, errOut.String())
		}
		out, _, err := runOperatorCLI(t, append(append([]string{"tickets", "show"}, common...), "1")...)
		if err != nil {
			t.Fatalf("tickets show: %v", err)
		}
		return errOut.String(), out
	}
	t.Setenv(keyEnv, "sk-cli-test-4b1e")
	_, show := f("llm")
	if !strings.Contains(show, "diagnosis (llm, confidence 0.60): the model's view of w1") || !strings.Contains(show, "model: 1 turns, 960 tokens") {
		t.Errorf("tickets show after --diagnoser llm:\n%s", show)
	}
	_, show = f("both")
	for _, want := range []string{"diagnosis (llm", "  rules (confidence 0.90): Worker w1 stopped taking jobs", "  llm (confidence 0.60): the model's view of w1"} {
		if !strings.Contains(show, want) {
			t.Errorf("tickets show after --diagnoser both lacks %q:\n%s", want, show)
		}
	}
	mu.Lock()
	if len(asked) != 2 || asked[0] != "Bearer sk-cli-test-4b1e" {
		t.Errorf("the model was asked %q; want twice with the key", asked)
	}
	mu.Unlock()

	t.Setenv(keyEnv, "")
	logs, show := f("llm")
	if !strings.Contains(logs, "diagnoser llm asked for, but $"+keyEnv+" is empty: diagnosing with the playbooks only") ||
		!strings.Contains(logs, "diagnoser=rules") {
		t.Errorf("start-up log without a key:\n%s", logs)
	}
	if !strings.Contains(show, "diagnosis (rules") {
		t.Errorf("tickets show without a key:\n%s", show)
	}
	mu.Lock()
	if len(asked) != 2 {
		t.Errorf("the model was asked without a key")
	}
	mu.Unlock()
}

// TestOperatorJSONListsEmpty: every --json list prints [] when it has
// nothing to list, never null.
func TestOperatorJSONListsEmpty(t *testing.T) {
	db := filepath.Join(t.TempDir(), "empty.db")
	for _, args := range [][]string{{"tickets", "list"}, {"tickets", "list", "--all"}, {"actions", "list"}, {"actions", "list", "--all"}} {
		out, _, err := runOperatorCLI(t, append(args, "--json", "--config", "operator/testdata/queue.toml", "--db", db)...)
		if err != nil {
			t.Fatalf("operator %s --json: %v", strings.Join(args, " "), err)
		}
		if got := strings.TrimSpace(out); got != "[]" {
			t.Errorf("operator %s --json on an empty database printed %q; want []", strings.Join(args, " "), got)
		}
	}
}

// TestOperatorCheckNames: `operator check` rejects an expression naming a
// field its observation does not declare, with the TOML path; with
// --subject-url it checks one that declares nothing against the live
// subject.
func TestOperatorCheckNames(t *testing.T) {
	queue, err := os.ReadFile("operator/testdata/queue.toml")
	if err != nil {
		t.Fatal(err)
	}
	write := func(body string) string {
		p := filepath.Join(t.TempDir(), "q.toml")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	typo := strings.Replace(string(queue), "expr = 'stuck'", "expr = 'stuk'", 1)
	declared := strings.Replace(typo, `field = "workers"`, `field = "workers"`+"\nfields = [\"name\", \"stuck\"]", 1)
	_, _, err = runOperatorCLI(t, "check", "--config", write(declared))
	if err == nil || !strings.Contains(err.Error(), `subjects.queue.invariants[0].expr: unknown name "stuk"`) {
		t.Errorf("check of a typo against declared fields = %v; want subjects.queue.invariants[0].expr: unknown name \"stuk\"", err)
	}

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"workers":[{"name":"w1","stuck":false}]}`)
	}))
	defer srv.Close()
	undeclared := write(typo)
	if _, _, err := runOperatorCLI(t, "check", "--config", undeclared); err != nil {
		t.Errorf("check without fields or a sample = %v; want it to pass (nothing to check the name against)", err)
	}
	_, _, err = runOperatorCLI(t, "check", "--config", undeclared, "--subject-url", srv.URL)
	if err == nil || !strings.Contains(err.Error(), `subjects.queue.invariants[0].expr: unknown name "stuk"`) {
		t.Errorf("check --subject-url of a typo = %v; want subjects.queue.invariants[0].expr: unknown name \"stuk\"", err)
	}
	out, _, err := runOperatorCLI(t, "check", "--config", "operator/testdata/queue.toml", "--subject-url", srv.URL)
	if err != nil || !strings.Contains(out, "checked against the live subject") {
		t.Errorf("check --subject-url of queue.toml = %q, %v; want it to pass against the live subject", out, err)
	}
}

// TestOperatorCheckShippedAgainstLiveNode: every expression of the shipped
// configuration names only fields a real node reports.
func TestOperatorCheckShippedAgainstLiveNode(t *testing.T) {
	srv := redistest.Start(t)
	n := nodetest.Start(t, nodetest.Config("n1", srv))
	out, _, err := runOperatorCLI(t, "check", "--subject-url", n.URL)
	if err != nil || !strings.Contains(out, "checked against the live subject") {
		t.Fatalf("check --subject-url of the shipped config against a live node = %q, %v", out, err)
	}
}
