package operator

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// statusEnv is an operator on the queue stand-in after one tick with a
// stuck worker: one ticket, one executed restart.
func statusEnv(t *testing.T) (*opEnv, *httptest.Server) {
	t.Helper()
	q := startQueue(t, map[string]bool{"w1": false, "w2": true})
	cfg, subj := queueSubject(t)
	cfg.Mode = ModeAuto
	e := newOp(t, cfg, subj, []string{q.URL}, time.Now)
	e.tick(t)
	srv := httptest.NewServer(e.op.StatusHandler())
	t.Cleanup(srv.Close)
	return e, srv
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestStatusAPIAndMetrics(t *testing.T) {
	_, srv := statusEnv(t)
	code, body := get(t, srv.URL+"/api/v1/status")
	if code != 200 {
		t.Fatalf("GET /api/v1/status: %d %s", code, body)
	}
	var st Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Tickets) != 1 || st.Tickets[0].Key != "worker_stuck:w2" || st.Mode != ModeAuto || st.ObservedAt == nil {
		t.Fatalf("status: mode %q, observed %v, tickets %+v; want auto, a time and worker_stuck:w2", st.Mode, st.ObservedAt, st.Tickets)
	}
	if len(st.Actions) != 1 || st.Actions[0].Action != "restart_worker" || st.Actions[0].Status != ProposalSucceeded {
		t.Fatalf("status actions: %+v; want one succeeded restart_worker", st.Actions)
	}
	if len(st.SLOs) != 1 || st.SLOs[0].Name != "healthy_workers" || st.SLOs[0].Value != 50 || st.SLOs[0].Met {
		t.Fatalf("status SLOs: %+v; want healthy_workers at 50, not met", st.SLOs)
	}
	if len(st.Tables) != 1 || st.Tables[0].Name != "workers" || len(st.Tables[0].Rows) != 2 || st.Tables[0].Columns[0] != "name" {
		t.Fatalf("status tables: %+v; want the workers, name first", st.Tables)
	}

	code, body = get(t, srv.URL+"/metrics")
	for _, want := range []string{
		`ratelimiter_operator_tickets{state="remediating"} 1`,
		`ratelimiter_operator_tickets{state="resolved"} 0`,
		`ratelimiter_operator_actions_total{result="succeeded"} 1`,
		`ratelimiter_operator_loop_duration_seconds_count 1`,
		`ratelimiter_operator_mode{mode="auto"} 1`,
	} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/metrics (%d) lacks %q:\n%s", code, want, body)
		}
	}

	id := st.Tickets[0].ID
	code, body = get(t, srv.URL+"/api/v1/tickets/"+jsonNumber(id))
	if code != 200 || !strings.Contains(body, `"audit"`) || !strings.Contains(body, "restart_worker") {
		t.Fatalf("GET ticket: %d %s", code, body)
	}
	if code, _ := get(t, srv.URL+"/api/v1/tickets/999"); code != 404 {
		t.Errorf("GET an absent ticket: %d; want 404", code)
	}
	if code, _ := get(t, srv.URL+"/api/v1/tickets/x"); code != 400 {
		t.Errorf("GET ticket x: %d; want 400", code)
	}
	// Read-only: nothing but GET is served.
	resp, err := http.Post(srv.URL+"/api/v1/status", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /api/v1/status: %d; want 405", resp.StatusCode)
	}
}

func jsonNumber(id int64) string { b, _ := json.Marshal(id); return string(b) }

// TestStatusPageInChromium loads the page in headless Chromium, scripts
// and all, and finds the ticket the test made and its diagnosis.
func TestStatusPageInChromium(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not on PATH (scripts/test.sh installs Debian's chromium): %v", err)
	}
	_, srv := statusEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--user-data-dir="+t.TempDir(), "--virtual-time-budget=2000", "--dump-dom", srv.URL+"/")
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	dom := string(out)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`<code>worker_stuck:w2</code>`),
		regexp.MustCompile(`Worker w2 is stuck`),
		regexp.MustCompile(`Worker w2 stopped taking jobs`), // the diagnosis summary
		regexp.MustCompile(`<td class="violated">violated</td>`),
		regexp.MustCompile(`restart_worker`),
		regexp.MustCompile(`<b id="mode">auto</b>`),
		// The script ran: it counts down to the next refresh.
		regexp.MustCompile(`<span id="countdown">in \d s</span>`),
	} {
		if !want.MatchString(dom) {
			t.Errorf("the page as Chromium rendered it lacks %s:\n%s", want, dom)
		}
	}
}
