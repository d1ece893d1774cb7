// Package promtest runs a throwaway Prometheus for tests: Debian's
// prometheus binary on a free loopback port, with a generated scrape config
// and its storage in the test's temporary directory, stopped at cleanup.
// It never skips: a machine without prometheus fails the test, so CI cannot
// go green without having run the tests that need it.
package promtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/testkit"
)

const (
	readyTimeout = 20 * time.Second // from exec to /-/ready; the TSDB opens first
	stopTimeout  = 10 * time.Second // from SIGTERM to exit, then SIGKILL
	portAttempts = 5                // fresh ports tried when the one picked is taken
)

// Server is one prometheus process.
type Server struct {
	URL string // http://127.0.0.1:PORT, the query API's base

	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has exited
	logPath string        // its stderr
}

// Start runs prometheus scraping /metrics of every target (host:port) every
// interval, as job "job", and returns once it is ready. Call WaitScraped
// before relying on a first sample. The process is stopped at cleanup.
func Start(t testing.TB, job string, interval time.Duration, targets ...string) *Server {
	t.Helper()
	path, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("promtest: prometheus is not on PATH (apt-get install prometheus; these tests must not be skipped): %v", err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, scrapeConfig(job, interval, targets), 0o600); err != nil {
		t.Fatal(err)
	}
	var lastErr error
	for attempt := range portAttempts {
		port, err := testkit.FreePort()
		if err != nil {
			t.Fatalf("promtest: cannot find a free port: %v", err)
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		s := &Server{URL: "http://" + addr, logPath: filepath.Join(dir, fmt.Sprintf("prometheus-%d.log", attempt))}
		err = s.start(path, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, fmt.Sprintf("data-%d", attempt)),
			"--web.listen-address="+addr, "--log.level=warn")
		if err == nil {
			t.Cleanup(func() {
				s.stop()
				if t.Failed() {
					t.Logf("promtest: last lines of prometheus on %s:\n%s", addr, tail(s.output(), 20))
				}
			})
			return s
		}
		lastErr = err
		if !errors.Is(err, errPortTaken) {
			break
		}
	}
	t.Fatalf("promtest: %v", lastErr)
	return nil
}

// scrapeConfig is prometheus.yml for one job over targets. The timeout may
// not exceed the interval. Durations are whole milliseconds: Prometheus
// reads no fractions ("1.5s").
func scrapeConfig(job string, interval time.Duration, targets []string) []byte {
	var b strings.Builder
	d := fmt.Sprintf("%dms", interval.Milliseconds())
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  scrape_timeout: %s\n  evaluation_interval: %s\n", d, d, d)
	fmt.Fprintf(&b, "scrape_configs:\n  - job_name: %q\n    static_configs:\n      - targets:\n", job)
	for _, t := range targets {
		fmt.Fprintf(&b, "          - %q\n", t)
	}
	return []byte(b.String())
}

var errPortTaken = errors.New("port already in use")

// start runs the process and waits until /-/ready answers 200.
func (s *Server) start(path string, args ...string) error {
	logf, err := os.Create(s.logPath)
	if err != nil {
		return err
	}
	defer logf.Close() // the child holds its own descriptor
	s.cmd = exec.Command(path, args...)
	s.cmd.Stdout = logf
	s.cmd.Stderr = logf
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("cannot start %s: %w", path, err)
	}
	s.done = make(chan struct{})
	go func() {
		_ = s.cmd.Wait() // an exit status is expected after stop
		close(s.done)
	}()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(readyTimeout)
	for {
		select {
		case <-s.done:
			if strings.Contains(s.output(), "address already in use") {
				return fmt.Errorf("%s: %w", s.URL, errPortTaken)
			}
			return fmt.Errorf("prometheus on %s exited at start-up:\n%s", s.URL, tail(s.output(), 20))
		default:
		}
		if resp, err := client.Get(s.URL + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			s.stop()
			return fmt.Errorf("prometheus on %s was not ready within %v:\n%s", s.URL, readyTimeout, tail(s.output(), 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for the exit, killing the process after
// stopTimeout.
func (s *Server) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM) // fails only when it is already gone
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// WaitScraped waits until Prometheus has scraped every target successfully
// at least once, and fails the test after timeout with each target's last
// error.
func (s *Server) WaitScraped(t testing.TB, timeout time.Duration) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var body struct {
			Data struct {
				ActiveTargets []struct {
					ScrapeURL  string    `json:"scrapeUrl"`
					Health     string    `json:"health"`
					LastError  string    `json:"lastError"`
					LastScrape time.Time `json:"lastScrape"`
				} `json:"activeTargets"`
			} `json:"data"`
		}
		if err := getJSON(s.URL+"/api/v1/targets?state=active", &body); err != nil {
			last = err.Error()
			continue
		}
		up, states := 0, []string{}
		for _, tg := range body.Data.ActiveTargets {
			states = append(states, fmt.Sprintf("%s: %s %s", tg.ScrapeURL, tg.Health, tg.LastError))
			if tg.Health == "up" && !tg.LastScrape.IsZero() {
				up++
			}
		}
		last = strings.Join(states, "; ")
		if up > 0 && up == len(body.Data.ActiveTargets) {
			return
		}
	}
	t.Fatalf("promtest: targets not all scraped within %v: %s", timeout, last)
}

func getJSON(u string, v any) error {
	client := &http.Client{Timeout: time.Second}
	resp, err := client.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func (s *Server) output() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// CheckMetrics runs `promtool check metrics` on text, a /metrics answer,
// and fails the test for every problem it reports that explained does not
// list (a problem line as promtool prints it, mapped to why it stays). It
// also fails unless every sample belongs to a family with a TYPE and a
// non-empty HELP, which promtool alone does not insist on.
func CheckMetrics(t testing.TB, text []byte, explained map[string]string) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtest: promtool is not on PATH (apt-get install prometheus): %v", err)
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = strings.NewReader(string(text))
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("promtest: promtool: %v", err)
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line == "" {
			continue
		}
		seen[line] = true
		if _, ok := explained[line]; !ok {
			t.Errorf("promtool check metrics: %s", line)
		}
	}
	if err != nil && len(seen) == 0 {
		t.Errorf("promtool check metrics failed with no problem listed: %v", err)
	}
	for line := range explained {
		if !seen[line] {
			t.Errorf("promtool no longer reports %q: drop it from the explained problems", line)
		}
	}
	checkMetadata(t, string(text))
}

func checkMetadata(t testing.TB, text string) {
	t.Helper()
	help, typ := map[string]string{}, map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		switch f := strings.Fields(line); {
		case len(f) >= 3 && f[0] == "#" && f[1] == "HELP":
			help[f[2]] = strings.Join(f[3:], " ")
		case len(f) == 4 && f[0] == "#" && f[1] == "TYPE":
			typ[f[2]] = f[3]
		case len(f) == 0 || f[0] == "#":
		default:
			name := f[0]
			if i := strings.IndexByte(name, '{'); i >= 0 {
				name = name[:i]
			}
			fam := name
			if _, ok := typ[fam]; !ok {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					if base, cut := strings.CutSuffix(name, s); cut && (typ[base] == "histogram" || typ[base] == "summary") {
						fam = base
					}
				}
			}
			if typ[fam] == "" || help[fam] == "" {
				t.Errorf("metric %s has no TYPE or an empty HELP before it", name)
				typ[fam], help[fam] = "reported", "reported" // once per family
			}
		}
	}
}
