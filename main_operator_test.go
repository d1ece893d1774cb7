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
	"github.com/ratelimiter/ratelimiter/operator"
)

// runOperatorCLI runs `ratelimiter operator ARGS…` in-process, bounded in
// time, and returns its stdout, stderr and error.
func runOperatorCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errOut nodetest.Buffer
	err := run(ctx, append([]string{"ratelimiter", "operator"}, args...), &out, &errOut)
	return out.String(), errOut.String(), err
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
	)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
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

	db := filepath.Join(t.TempDir(), "cli.db")
	common := []string{"--config", "operator/testdata/queue.toml", "--db", db, "--subject-url", srv.URL}
	// `operator run` for a while, then stopped by its context. The runs and
	// the other commands take turns: urfave/cli v2 mutates package-level
	// flags (HelpFlag) in every run, so two run() calls must not overlap.
	var logs nodetest.Buffer
	loop := func(d time.Duration) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		args := append([]string{"ratelimiter", "operator", "run", "--mode", "approve", "--interval", "100ms", "--log-level", "debug"}, common...)
		if err := run(ctx, args, io.Discard, &logs); err != nil {
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

	loop(500 * time.Millisecond)
	pending := list()
	if len(pending) != 1 || pending[0].Action != "restart_worker" || pending[0].Status != operator.ProposalPending {
		t.Fatalf("proposals = %+v; want one pending restart_worker; log:\n%s", pending, logs.String())
	}
	loop(500 * time.Millisecond) // five more intervals: still waiting
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
	loop(500 * time.Millisecond)
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
