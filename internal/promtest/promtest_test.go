package promtest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestScrapeAndQuery scrapes a fixed counter and reads it back through the
// query API, with the job label the config gave it.
func TestScrapeAndQuery(t *testing.T) {
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "promtest_probe_total 42")
	}))
	defer target.Close()
	s := Start(t, "probe", time.Second, strings.TrimPrefix(target.URL, "http://"))
	s.WaitScraped(t, 10*time.Second)

	var body struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := getJSON(s.URL+"/api/v1/query?query="+url.QueryEscape("promtest_probe_total"), &body); err != nil {
		t.Fatal(err)
	}
	r := body.Data.Result
	if len(r) != 1 || r[0].Value[1] != "42" || r[0].Metric["job"] != "probe" {
		t.Fatalf("promtest_probe_total = %+v; want one series of 42 with job=probe", r)
	}
}

func TestScrapeConfig(t *testing.T) {
	got := string(scrapeConfig("rl", 1500*time.Millisecond, []string{"127.0.0.1:1", "127.0.0.1:2"}))
	want := `global:
  scrape_interval: 1500ms
  scrape_timeout: 1500ms
  evaluation_interval: 1500ms
scrape_configs:
  - job_name: "rl"
    static_configs:
      - targets:
          - "127.0.0.1:1"
          - "127.0.0.1:2"
`
	if got != want {
		t.Fatalf("scrapeConfig = %q; want %q", got, want)
	}
}
