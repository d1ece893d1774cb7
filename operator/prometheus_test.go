package operator

// A real Prometheus (Debian's binary, started by internal/promtest) scrapes
// two real nodes on a real redis-server while loadgen sends them a bounded
// load; the operator then reads the shipped config's PromQL through its Prometheus
// observation source, with the subject of deploy/ratelimiter.toml, the
// configuration compose.yaml mounts.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/nodetest"
	"github.com/ratelimiter/ratelimiter/internal/promtest"
	"github.com/ratelimiter/ratelimiter/internal/redistest"
	"github.com/ratelimiter/ratelimiter/internal/testkit"
	"github.com/ratelimiter/ratelimiter/loadgen"
)

const (
	promLoadRate     = 300.0 // requests/s over both nodes
	promLoadDuration = 10 * time.Second
	// promWindow is the range of the shipped PromQL queries. The test scrapes for
	// less than that, and no sample precedes the first scrape, so rate()
	// over the window is the window's increase over 60 s: the requests
	// decided, not the load's rate during the run.
	promWindow = time.Minute
)

func TestPrometheusObservations(t *testing.T) {
	subj := deploySubject(t)
	srv := redistest.Start(t)
	nodes := []*nodetest.Node{nodetest.Start(t, nodeConfig("prom-1", srv)), nodetest.Start(t, nodeConfig("prom-2", srv))}
	prom := promtest.Start(t, "ratelimiter", time.Second,
		strings.TrimPrefix(nodes[0].URL, "http://"), strings.TrimPrefix(nodes[1].URL, "http://"))
	// Every series' first sample is taken before the load, so rate() does
	// not extrapolate the first requests back to the window's start.
	prom.WaitScraped(t, 15*time.Second)

	lc := loadgen.DefaultConfig()
	lc.Targets = []string{nodes[0].URL, nodes[1].URL}
	lc.Rate, lc.Duration, lc.Keys, lc.KeyPrefix = promLoadRate, promLoadDuration, 200, "prom:"
	ctx, cancel := context.WithTimeout(context.Background(), 3*promLoadDuration)
	defer cancel()
	rep, err := loadgen.Run(ctx, lc, io.Discard, false, testkit.Logger(t, slog.LevelWarn))
	if err != nil {
		t.Fatalf("loadgen.Run: %v", err)
	}
	// Each node's own p99 covers its last 9 complete seconds: read it now,
	// while that window still lies inside the load.
	ownP99 := map[string]float64{}
	for _, n := range nodes {
		ownP99[n.ID] = nodeP99(t, n)
	}

	subj.PrometheusURL = prom.URL
	for i, n := range nodes {
		sel := fmt.Sprintf(`{node_id=%q}`, n.ID)
		subj.Observations = append(subj.Observations,
			Observation{Name: fmt.Sprintf("prom_decided_%d", i), PromQL: "sum(ratelimiter_requests_total" + sel + ")"},
			Observation{Name: fmt.Sprintf("prom_rate_%d", i), PromQL: "sum(rate(ratelimiter_requests_total" + sel + "[1m]))"},
			Observation{Name: fmt.Sprintf("prom_p99_%d", i),
				PromQL: "histogram_quantile(0.99, rate(ratelimiter_request_duration_seconds_bucket" + sel + "[1m]))"})
	}
	cfg := DefaultConfig()
	cfg.DB = t.TempDir() + "/operator.db"
	env := newOp(t, cfg, subj, lc.Targets, time.Now)

	// Wait for the scrape that saw the last request, then read once more:
	// the rate and the quantile must come from the same observation.
	var obs map[string]any
	testkit.WaitFor(t, 10*time.Second, "Prometheus to hold every decision", func() bool {
		var err error
		if obs, err = env.op.Observe(context.Background()); err != nil {
			t.Fatalf("Observe: %v", err)
		}
		for i, tr := range rep.PerTarget {
			if got := single(t, obs, fmt.Sprintf("prom_decided_%d", i)); got < float64(tr.Allowed+tr.Denied) {
				return false
			}
		}
		return true
	})

	for i, n := range nodes {
		tr := rep.PerTarget[i]
		decided := float64(tr.Allowed + tr.Denied)
		if decided < 0.8*promLoadRate/2*promLoadDuration.Seconds() || tr.Errors > 0 {
			t.Fatalf("%s: load decided %v requests with %d errors; want about %v and none",
				n.ID, decided, tr.Errors, promLoadRate/2*promLoadDuration.Seconds())
		}
		if got := single(t, obs, fmt.Sprintf("prom_decided_%d", i)); got > decided+float64(tr.Errors) {
			t.Errorf("%s: Prometheus counts %v requests; the load had %v decided", n.ID, got, decided)
		}
		rate := single(t, obs, fmt.Sprintf("prom_rate_%d", i))
		want := decided / promWindow.Seconds()
		t.Logf("%s: Prometheus rate %.2f/s over 1m; %v decided in %.1fs (%.1f/s while it ran, %.2f/s over 1m)",
			n.ID, rate, decided, rep.DurationS, decided/rep.DurationS, want)
		if rate < 0.8*want || rate > 1.25*want {
			t.Errorf("%s: rate over 1m = %.2f/s; want within 0.8-1.25 x %.2f/s", n.ID, rate, want)
		}

		p99 := single(t, obs, fmt.Sprintf("prom_p99_%d", i)) * 1000
		t.Logf("%s: p99 %.3f ms from Prometheus, %.3f ms from the node", n.ID, p99, ownP99[n.ID])
		if math.IsNaN(p99) || p99 <= 0 || ownP99[n.ID] <= 0 || p99 > 2*ownP99[n.ID] || p99 < ownP99[n.ID]/2 {
			t.Errorf("%s: p99 from Prometheus %.3f ms; want within 2x of the node's own %.3f ms", n.ID, p99, ownP99[n.ID])
		}
	}
	// The subject's HTTP observations ran in the same pass.
	if list, _ := obs["nodes"].([]any); len(list) != 2 {
		t.Errorf("nodes observation = %v; want the two nodes", obs["nodes"])
	}

	// Every query of the Grafana dashboard parses, and each over node
	// metrics finds series. The operator's own metrics are not scraped
	// here, so their panels may be empty.
	dash := Subject{BaseURLs: lc.Targets, PrometheusURL: prom.URL}
	queries := dashboardQueries(t)
	for i, q := range queries {
		dash.Observations = append(dash.Observations, Observation{Name: fmt.Sprintf("dashboard_%d", i), PromQL: q})
	}
	cfg.DB = t.TempDir() + "/dashboard.db"
	dobs, err := newOp(t, cfg, dash, lc.Targets, time.Now).op.Observe(context.Background())
	if err != nil {
		t.Fatalf("dashboard queries: %v", err)
	}
	for i, q := range queries {
		if rows, _ := dobs[fmt.Sprintf("dashboard_%d", i)].([]any); len(rows) == 0 && !strings.Contains(q, "ratelimiter_operator_") {
			t.Errorf("dashboard query %s found no series", q)
		}
	}
}

// dashboardQueries are the PromQL of every panel of the Grafana dashboard,
// after checking that each panel uses the provisioned data source.
func dashboardQueries(t testing.TB) []string {
	t.Helper()
	const dsUID = "prometheus"
	prov, err := os.ReadFile("../deploy/grafana/provisioning/datasources/prometheus.yml")
	if err != nil || !strings.Contains(string(prov), "uid: "+dsUID+"\n") {
		t.Fatalf("the provisioned data source does not have uid %s (%v)", dsUID, err)
	}
	raw, err := os.ReadFile("../deploy/grafana/dashboards/ratelimiter.json")
	if err != nil {
		t.Fatal(err)
	}
	type source struct{ UID string }
	var d struct {
		Panels []struct {
			Title      string
			Datasource source
			Targets    []struct {
				Expr       string
				Datasource source
			}
		}
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	var qs []string
	for _, p := range d.Panels {
		if p.Datasource.UID != dsUID || len(p.Targets) == 0 {
			t.Fatalf("panel %q: data source %q with %d queries; want %s and at least one", p.Title, p.Datasource.UID, len(p.Targets), dsUID)
		}
		for _, tg := range p.Targets {
			if tg.Datasource.UID != dsUID || tg.Expr == "" {
				t.Fatalf("panel %q: a query on %q is %q", p.Title, tg.Datasource.UID, tg.Expr)
			}
			qs = append(qs, tg.Expr)
		}
	}
	return qs
}

// single is the value of a one-series vector observation.
func single(t testing.TB, obs map[string]any, name string) float64 {
	t.Helper()
	rows, _ := obs[name].([]any)
	if len(rows) != 1 {
		t.Fatalf("%s = %v; want one series", name, obs[name])
	}
	row, _ := rows[0].(map[string]any)
	v, ok := row["value"].(float64)
	if !ok {
		t.Fatalf("%s = %v; want a number", name, rows[0])
	}
	return v
}

// nodeP99 is the node's own rolling p99 in ms, from its API.
func nodeP99(t testing.TB, n *nodetest.Node) float64 {
	t.Helper()
	code, body := httpDo(t, http.MethodGet, n.URL+"/api/v1/nodes/"+n.ID+"/metrics", "")
	var m struct {
		P99 float64 `json:"latency_p99_ms"`
	}
	if code != http.StatusOK || json.Unmarshal(body, &m) != nil {
		t.Fatalf("GET metrics of %s: %d %s", n.ID, code, body)
	}
	return m.P99
}

// deploySubject is the ratelimiter subject of deploy/ratelimiter.toml,
// after checking that the file is config.toml with only the compose
// addresses changed (deploy/gen-config.sh writes it).
func deploySubject(t testing.TB) Subject {
	t.Helper()
	shipped, deployed := loadFile(t, "../config.toml"), loadFile(t, "../deploy/ratelimiter.toml")
	s := deployed.Subjects["ratelimiter"]
	wantURLs := []string{"http://node1:8080", "http://node2:8080", "http://node3:8080"}
	if !reflect.DeepEqual(s.BaseURLs, wantURLs) || s.PrometheusURL != "http://prometheus:9090" {
		t.Fatalf("deploy/ratelimiter.toml: base_urls %v, prometheus_url %q; want %v and http://prometheus:9090 (run deploy/gen-config.sh)",
			s.BaseURLs, s.PrometheusURL, wantURLs)
	}
	same := *deployed
	same.Subjects = map[string]Subject{}
	for name, sub := range deployed.Subjects {
		same.Subjects[name] = sub
	}
	if orig, ok := shipped.Subjects["ratelimiter"]; ok {
		s2 := s
		s2.BaseURLs, s2.PrometheusURL = orig.BaseURLs, orig.PrometheusURL
		same.Subjects["ratelimiter"] = s2
	}
	parts := map[string][2]any{"[operator]": {same.Operator, shipped.Operator}, "[subjects]": {same.Subjects, shipped.Subjects},
		"[node]": {same.Node, shipped.Node}, "[[limits]]": {same.Limits, shipped.Limits}}
	for name, p := range parts {
		if !reflect.DeepEqual(p[0], p[1]) {
			t.Errorf("deploy/ratelimiter.toml: %s differs from config.toml's: run deploy/gen-config.sh", name)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return s
}

// TestDeployConfig keeps deploy/ratelimiter.toml in step with config.toml.
func TestDeployConfig(t *testing.T) { deploySubject(t) }
