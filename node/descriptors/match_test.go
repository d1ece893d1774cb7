package descriptors

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func mustParse(t *testing.T, files map[string]string) *Config {
	t.Helper()
	in := map[string][]byte{}
	for k, v := range files {
		in[k] = []byte(v)
	}
	c, err := Parse(in, Options{})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

// e builds entries from "k=v" pairs; "k" alone has an empty value.
func e(pairs ...string) []Entry {
	out := make([]Entry, len(pairs))
	for i, p := range pairs {
		k, v, _ := strings.Cut(p, "=")
		out[i] = Entry{Key: k, Value: v}
	}
	return out
}

// The configuration examples of envoyproxy/ratelimit's README, restated with
// our own domains, keys and numbers, and the outcome the README gives.
func TestMatchReadmeExamples(t *testing.T) {
	c := mustParse(t, map[string]string{
		// Two values of one key, each with its own limit.
		"flat.yaml": `
domain: kv_store
descriptors:
  - key: table
    value: orders
    rate_limit: {unit: second, requests_per_unit: 300}
  - key: table
    value: fallback
    rate_limit: {unit: second, requests_per_unit: 40}
`,
		// A nested, value-less key under a placeholder, and a top-level
		// value-less key: one counter per phone number in each.
		"nested.yaml": `
domain: sms
descriptors:
  - key: kind
    value: promo
    descriptors:
      - key: phone
        rate_limit:
          unit: day
          requests_per_unit: 3
  - key: phone
    rate_limit:
      unit: day
      requests_per_unit: 50
`,
		// Key and value is tried before the key alone.
		"specific.yaml": `
domain: per_ip
descriptors:
  - key: client_ip
    rate_limit: {unit: second, requests_per_unit: 25}
  - key: client_ip
    value: 192.0.2.66
    rate_limit: {unit: second, requests_per_unit: 0}
`,
		// Depth must match: a two-entry request does not match a one-level rule.
		"depth.yaml": `
domain: depth_one
descriptors:
  - key: tenant
    value: acme
    rate_limit: {unit: minute, requests_per_unit: 7}
  - key: team
    value: red
    descriptors:
      - key: member
        rate_limit: {unit: minute, requests_per_unit: 9}
`,
		"unlimited.yaml": `
domain: internal_tools
descriptors:
  - key: backup_job
    rate_limit:
      unlimited: true
  - key: report_job
    rate_limit: {unit: hour, requests_per_unit: 12}
`,
		"shadow.yaml": `
domain: trial
descriptors:
  - key: app
    descriptors:
      - key: account
        value: alice
        shadow_mode: true
        rate_limit: {unit: second, requests_per_unit: 4}
      - key: account
        value: bob
        rate_limit: {unit: second, requests_per_unit: 6}
`,
		"detailed.yaml": `
domain: metrics_demo
descriptors:
  - key: route
    detailed_metric: true
    rate_limit: {unit: minute, requests_per_unit: 30}
  - key: route
    value: home
    rate_limit: {unit: minute, requests_per_unit: 60}
`,
		"wildcard.yaml": `
domain: files
descriptors:
  - key: path
    value: /img/*
    rate_limit: {unit: minute, requests_per_unit: 15}
  - key: path
    value: /doc/*
    share_threshold: true
    rate_limit: {unit: minute, requests_per_unit: 8}
`,
	})
	f := func(domain string, entries []Entry, wantLimit int64, wantKey, wantMetric string) {
		t.Helper()
		m, ok := c.Match(domain, entries)
		if wantLimit < 0 {
			if ok {
				t.Errorf("Match(%s, %v) = %s; want no limit", domain, entries, m.Limit.FullKey)
			}
			return
		}
		if !ok {
			t.Errorf("Match(%s, %v): no limit; want %d", domain, entries, wantLimit)
			return
		}
		if got := int64(m.Limit.RequestsPerUnit); got != wantLimit && !m.Limit.Unlimited {
			t.Errorf("Match(%s, %v) limit = %d; want %d", domain, entries, got, wantLimit)
		}
		if wantKey != "" && m.Key != wantKey {
			t.Errorf("Match(%s, %v) key = %q; want %q", domain, entries, m.Key, wantKey)
		}
		metric := m.Metric
		if metric == "" {
			metric = m.Limit.FullKey
		}
		if wantMetric != "" && metric != wantMetric {
			t.Errorf("Match(%s, %v) metric = %q; want %q", domain, entries, m.Metric, wantMetric)
		}
	}
	f("kv_store", e("table=orders"), 300, "kv_store|table=orders", "kv_store.table_orders")
	f("kv_store", e("table=fallback"), 40, "", "")
	f("kv_store", e("table=users"), -1, "", "")

	f("sms", e("kind=promo", "phone=5550100"), 3, "sms|kind=promo|phone=5550100", "sms.kind_promo.phone")
	f("sms", e("kind=promo", "phone=5550199"), 3, "sms|kind=promo|phone=5550199", "")
	f("sms", e("phone=5550100"), 50, "sms|phone=5550100", "sms.phone")
	f("sms", e("kind=promo"), -1, "", "") // a placeholder without a limit

	f("per_ip", e("client_ip=192.0.2.10"), 25, "", "per_ip.client_ip")
	f("per_ip", e("client_ip=192.0.2.66"), 0, "", "per_ip.client_ip_192.0.2.66")

	f("depth_one", e("tenant=acme", "member=x"), -1, "", "")
	f("depth_one", e("tenant=acme"), 7, "", "")
	f("depth_one", e("team=red", "member=x"), 9, "", "")
	f("depth_one", e("team=red"), -1, "", "")

	f("internal_tools", e("backup_job=nightly"), 0, "", "")
	if m, _ := c.Match("internal_tools", e("backup_job=nightly")); !m.Limit.Unlimited {
		t.Errorf("backup_job is not unlimited")
	}

	m, _ := c.Match("trial", e("app=login", "account=alice"))
	if m.Limit == nil || !m.Limit.Shadow || m.Limit.RequestsPerUnit != 4 {
		t.Errorf("alice: %+v; want a shadow limit of 4", m.Limit)
	}
	m, _ = c.Match("trial", e("app=login", "account=bob"))
	if m.Limit == nil || m.Limit.Shadow || m.Limit.RequestsPerUnit != 6 {
		t.Errorf("bob: %+v; want an enforced limit of 6", m.Limit)
	}

	f("metrics_demo", e("route=cart"), 30, "", "metrics_demo.route_cart")
	f("metrics_demo", e("route=search"), 30, "", "metrics_demo.route_search")
	f("metrics_demo", e("route=home"), 60, "", "metrics_demo.route_home")

	// Without share_threshold each value has its own counter; with it,
	// every matching value shares the wildcard's.
	f("files", e("path=/img/a.png"), 15, "files|path=/img/a.png", "files.path_/img/*")
	f("files", e("path=/img/b.png"), 15, "files|path=/img/b.png", "")
	f("files", e("path=/doc/a.pdf"), 8, "files|path=/doc/*", "")
	f("files", e("path=/doc/b.pdf"), 8, "files|path=/doc/*", "")
	f("files", e("path=/css/site.css"), -1, "", "")

	f("no_such_domain", e("table=orders"), -1, "", "")
}

func TestMatchKeysAreUnambiguous(t *testing.T) {
	c := mustParse(t, map[string]string{"a.yaml": `
domain: d
descriptors:
  - key: a
    rate_limit: {unit: second, requests_per_unit: 1}
    descriptors:
      - key: b
        rate_limit: {unit: second, requests_per_unit: 1}
`})
	m1, _ := c.Match("d", e("a=x|b=y"))
	m2, ok := c.Match("d", e("a=x", "b=y"))
	if m1.Key == "" || !ok || m1.Key == m2.Key {
		t.Errorf("one-entry and two-entry requests share the counter key %q", m1.Key)
	}
}

func TestValueToMetric(t *testing.T) {
	c := mustParse(t, map[string]string{"a.yaml": `
domain: api
descriptors:
  - key: tenant
    value_to_metric: true
    descriptors:
      - key: method
        rate_limit: {unit: second, requests_per_unit: 5}
`})
	m, ok := c.Match("api", e("tenant=acme", "method=GET"))
	if !ok || m.Metric != "api.tenant_acme.method" {
		t.Errorf("metric = %q, %v; want api.tenant_acme.method", m.Metric, ok)
	}
}

func TestParseErrorsNameFileLineAndPath(t *testing.T) {
	f := func(yaml string, want ...string) {
		t.Helper()
		_, err := Parse(map[string][]byte{"bad.yaml": []byte(yaml)}, Options{})
		if err == nil {
			t.Errorf("Parse(%q) = nil error; want %q", yaml, want)
			return
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Parse(%q) = %q; want it to contain %q", yaml, err, w)
			}
		}
	}
	f("domain: d\ndescriptors:\n  - key: a\n    rate_limit:\n      unit: fortnight\n      requests_per_unit: 3\n",
		`bad.yaml:5: descriptors[0].rate_limit.unit: invalid unit "fortnight"`)
	f("domain: d\ndescriptors:\n  - value: x\n", "bad.yaml:3: descriptors[0].key: descriptor has no key")
	f("domain: d\ndescriptors:\n  - key: a\n    colour: red\n", "bad.yaml:4: descriptors[0].colour: unknown key")
	f("descriptors: []\n", "bad.yaml:1: domain: must be a non-empty string")
	f("domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unlimited: true, unit: second}\n",
		"bad.yaml:4: descriptors[0].rate_limit.unit: must not be set when unlimited is true")
	f("domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, requests_per_unit: -1}\n",
		"bad.yaml:4: descriptors[0].rate_limit.requests_per_unit: must be an integer")
	f("domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: second}\n",
		"descriptors[0].rate_limit.requests_per_unit: missing")
	f("domain: d\ndescriptors:\n  - key: a\n    value: v\n    share_threshold: true\n    rate_limit: {unit: second, requests_per_unit: 1}\n",
		"bad.yaml:3: descriptors[0].share_threshold: applies only to a wildcard value")
	f("domain: d\ndescriptors:\n  - key: a\n  - key: a\n", `bad.yaml:4: descriptors[1]: duplicate descriptor "d.a" (first at bad.yaml:3)`)
	f("domain: d\ndescriptors:\n  - key: a\n    descriptors:\n      - key: b\n        rate_limit: {unit: hour, requests_per_unit: 1, algorithm: leaky}\n",
		`bad.yaml:6: descriptors[0].descriptors[0].rate_limit.algorithm: unknown algorithm "leaky"`)
	f("domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: week, requests_per_unit: 1, algorithm: sliding_window}\n",
		"descriptors[0].rate_limit.unit: algorithm sliding_window supports windows up to a day")
	f("domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, requests_per_unit: 1, name: n, replaces: [{name: n}]}\n",
		"descriptors[0].rate_limit.replaces: must not name this rate_limit itself")
	f("domain: d\ndescriptors:\n  - key: a\n    shadow_mode: maybe\n", `descriptors[0].shadow_mode: must be true or false, got "maybe"`)
	f("domain: d\n  bad indent: [\n", "bad.yaml: line")
	// Every problem at once.
	f("domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n  - key: b\n    oops: 1\n",
		"bad.yaml:4:", "bad.yaml:6:")
}

func TestParseDuplicateDomainAcrossFiles(t *testing.T) {
	_, err := Parse(map[string][]byte{
		"a.yaml": []byte("domain: shared\n"),
		"b.yaml": []byte("descriptors: []\ndomain: shared\n"),
	}, Options{})
	if err == nil || !strings.Contains(err.Error(), `b.yaml:2: domain: duplicate domain "shared", already defined in a.yaml`) {
		t.Errorf("err = %v; want the duplicate named with both files", err)
	}
}

func TestParseMergeDomains(t *testing.T) {
	files := map[string][]byte{
		"a.yaml": []byte("domain: shared\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, requests_per_unit: 1}\n"),
		"b.yaml": []byte("domain: shared\ndescriptors:\n  - key: b\n    rate_limit: {unit: second, requests_per_unit: 2}\n"),
	}
	c, err := Parse(files, Options{MergeDomains: true})
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]uint32{"a": 1, "b": 2} {
		if m, ok := c.Match("shared", e(k+"=x")); !ok || m.Limit.RequestsPerUnit != want {
			t.Errorf("merged %s: %v %v; want %d", k, m.Limit, ok, want)
		}
	}
	files["c.yaml"] = []byte("domain: shared\ndescriptors:\n  - key: a\n")
	if _, err := Parse(files, Options{MergeDomains: true}); err == nil || !strings.Contains(err.Error(), `c.yaml:3: descriptors[0]: duplicate descriptor "shared.a" (first at a.yaml:3)`) {
		t.Errorf("merge with a duplicate descriptor: %v", err)
	}
}

func TestUnitsAndDefaults(t *testing.T) {
	c := mustParse(t, map[string]string{"u.yaml": `
domain: u
descriptors:
  - {key: s, rate_limit: {unit: SECOND, requests_per_unit: 1}}
  - {key: w, rate_limit: {unit: week, requests_per_unit: 1}}
  - {key: m, rate_limit: {unit: month, requests_per_unit: 1}}
  - {key: y, rate_limit: {unit: year, requests_per_unit: 1}}
  - {key: t, rate_limit: {unit: minute, requests_per_unit: 1, algorithm: token_bucket}}
`})
	want := map[string]int64{"s": 1, "w": 604800, "m": 2592000, "y": 31536000, "t": 60}
	for k, w := range want {
		m, ok := c.Match("u", e(k+"=x"))
		if !ok || m.Limit.WindowSeconds != w {
			t.Errorf("%s: window %d; want %d", k, m.Limit.WindowSeconds, w)
		}
		alg := "fixed_window"
		if k == "t" {
			alg = "token_bucket"
		}
		if m.Limit.Algorithm != alg {
			t.Errorf("%s: algorithm %q; want %q", k, m.Limit.Algorithm, alg)
		}
	}
}

func TestLoadSkipsDotFilesAndOtherExtensions(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("good.yaml", "domain: good\n")
	write(".good.yaml.swp.yaml", "not: [valid")
	write("notes.txt", "not: [valid")
	c, err := Load(dir, Options{})
	if err != nil || len(c.Files) != 1 || c.Domains["good"] == nil {
		t.Fatalf("Load = %v, %v; want only good.yaml", c, err)
	}
}
