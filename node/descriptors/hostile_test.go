package descriptors

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ratelimiter/ratelimiter/internal/testkit"
)

// nested is a file whose descriptors nest depth levels, each key of keyLen
// bytes, with a limit at the bottom.
func nested(depth, keyLen int) []byte {
	key := strings.Repeat("k", keyLen)
	return []byte("domain: d\ndescriptors: " +
		strings.Repeat("[{key: "+key+", descriptors: ", depth-1) +
		"[{key: " + key + ", rate_limit: {unit: second, requests_per_unit: 1}}]" +
		strings.Repeat("}]", depth-1) + "\n")
}

func TestParseDepthBound(t *testing.T) {
	// The deepest file a request can reach loads and matches.
	c, err := Parse(map[string][]byte{"ok.yaml": nested(MaxEntries, 8)}, Options{})
	if err != nil {
		t.Fatalf("Parse(%d levels) = %v", MaxEntries, err)
	}
	entries := make([]Entry, MaxEntries)
	for i := range entries {
		entries[i] = Entry{Key: "kkkkkkkk"}
	}
	if m, ok := c.Match("d", entries); !ok || m.Limit == nil {
		t.Fatalf("Match(%d entries) = %+v, %v; want the limit", MaxEntries, m, ok)
	}

	// One level more is refused, naming where.
	_, err = Parse(map[string][]byte{"deep.yaml": nested(MaxEntries+1, 8)}, Options{})
	want := "deep.yaml:2: descriptors" + strings.Repeat("[0].descriptors", MaxEntries) + ": nested deeper than 32 levels"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("Parse(%d levels) = %v; want %q", MaxEntries+1, err, want)
	}

	// YAML's own limit is 10,000 levels. Before the bound, every level's
	// path and counter key extended its parent's: this 120 KB file allocated
	// 957 MB, and with 1 KB keys a 5 MB file would have held about 12 GB at
	// once. Now it costs what yaml.v3 spends on the file.
	doc := nested(4900, 8)
	grew, _ := testkit.Allocated(func() { _, err = Parse(map[string][]byte{"bomb.yaml": doc}, Options{}) })
	if err == nil {
		t.Fatal("Parse(4,900 levels) = nil error")
	}
	if grew > 100*int64(len(doc)) {
		t.Errorf("Parse(%d-byte file nested 4,900 levels) allocated %d KB; want at most 100× the file (yaml.v3's node tree alone takes about 50×)", len(doc), grew>>10)
	}
}

func TestParseRefusesWhatNoRequestCanMatch(t *testing.T) {
	long := strings.Repeat("x", MaxEntryBytes+1)
	for _, tc := range []struct{ doc, want string }{
		{"domain: " + long + "\n", "f.yaml:1: domain: longer than 512 bytes"},
		{"domain: d\ndescriptors:\n  - key: " + long + "\n", "f.yaml:3: descriptors[0]: key or value longer than 512 bytes"},
		{"domain: d\ndescriptors:\n  - key: a\n    value: " + long + "\n", "f.yaml:3: descriptors[0]: key or value longer than 512 bytes"},
	} {
		_, err := Parse(map[string][]byte{"f.yaml": []byte(tc.doc)}, Options{})
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("Parse(%.40q…) = %v; want %q", tc.doc, err, tc.want)
		}
	}
	// Exactly the bound is fine.
	ok := strings.Repeat("x", MaxEntryBytes)
	if _, err := Parse(map[string][]byte{"f.yaml": []byte("domain: d\ndescriptors:\n  - key: " + ok + "\n    value: " + ok + "\n")}, Options{}); err != nil {
		t.Errorf("Parse(512-byte key and value) = %v", err)
	}
}

// TestParseAliases: anchors, aliases and merge keys read as
// envoyproxy/ratelimit's YAML library reads them.
func TestParseAliases(t *testing.T) {
	doc := `domain: d
descriptors:
  - key: tenant
    value: a
    descriptors: &paths
      - key: path
        value: /login
        rate_limit: &strict {unit: minute, requests_per_unit: 5}
      - key: path
        rate_limit:
          <<: *strict
          requests_per_unit: 50
  - key: tenant
    value: b
    descriptors: *paths
  - key: user
    rate_limit:
      <<: [{unit: hour, name: first}, {unit: day, name: second, requests_per_unit: 7}]
`
	c, err := Parse(map[string][]byte{"f.yaml": []byte(doc)}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		req        []Entry
		full, unit string
		rpu        uint32
		name       string
	}{
		{[]Entry{{"tenant", "a"}, {"path", "/login"}}, "d.tenant_a.path_/login", "minute", 5, ""},
		{[]Entry{{"tenant", "b"}, {"path", "/login"}}, "d.tenant_b.path_/login", "minute", 5, ""},
		// The mapping's own key wins over the merged one.
		{[]Entry{{"tenant", "b"}, {"path", "/x"}}, "d.tenant_b.path", "minute", 50, ""},
		// Of merged mappings, the first to set a key wins.
		{[]Entry{{"user", "u"}}, "d.user", "hour", 7, "first"},
	} {
		m, ok := c.Match("d", tc.req)
		if !ok || m.Limit == nil {
			t.Errorf("Match(%v): no limit", tc.req)
			continue
		}
		l := m.Limit
		if l.FullKey != tc.full || l.Unit != tc.unit || l.RequestsPerUnit != tc.rpu || l.Name != tc.name {
			t.Errorf("Match(%v) = %s %d/%s name %q; want %s %d/%s name %q", tc.req, l.FullKey, l.RequestsPerUnit, l.Unit, l.Name, tc.full, tc.rpu, tc.unit, tc.name)
		}
	}
	if len(c.Limits) != 5 {
		t.Errorf("%d limits; want 5 (each alias is a limit of its own)", len(c.Limits))
	}

	// What an alias brings in is checked where it lands: the same
	// descriptors twice under one parent are duplicates.
	_, err = Parse(map[string][]byte{"f.yaml": []byte("domain: d\ndescriptors:\n  - &a {key: a}\n  - *a\n")}, Options{})
	if err == nil || !strings.Contains(err.Error(), `f.yaml:3: descriptors[1]: duplicate descriptor "d.a"`) {
		t.Errorf("Parse(a descriptor and its alias side by side) = %v; want the duplicate refused", err)
	}
	_, err = Parse(map[string][]byte{"f.yaml": []byte("domain: d\ndescriptors:\n  - key: a\n    <<: 5\n")}, Options{})
	if err == nil || !strings.Contains(err.Error(), "f.yaml:4: descriptors[0].<<: a merge key takes a mapping") {
		t.Errorf("Parse(<<: 5) = %v; want the merge key refused", err)
	}
}

// TestParseAliasBomb: nested aliases ("billion laughs") would make a
// kilobyte expand to 10^9 descriptors; they stop at maxAliasNodes, with the
// line and path where the budget ran out, at a bounded cost.
func TestParseAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("domain: d\ndescriptors:\n  - &l0 {key: k, rate_limit: {unit: second, requests_per_unit: 1}}\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&b, "  - &l%d {key: k%d, descriptors: [", i, i)
		for j := range 10 {
			fmt.Fprintf(&b, "{key: x%d, descriptors: [*l%d]}, ", j, i-1)
		}
		b.WriteString("]}\n")
	}
	doc := []byte(b.String())
	var err error
	total, _ := testkit.Allocated(func() { _, err = Parse(map[string][]byte{"bomb.yaml": doc}, Options{}) })
	if err == nil || !strings.Contains(err.Error(), "YAML aliases expand to more than 200000 nodes beyond the file's own") ||
		!strings.HasPrefix(err.Error(), "bomb.yaml:") {
		t.Fatalf("Parse(%d-byte alias bomb) = %v; want the expansion refused", len(doc), err)
	}
	if total > 256<<20 {
		t.Errorf("Parse(alias bomb) allocated %d MB; want at most 256 MB", total>>20)
	}
	t.Logf("%d-byte alias bomb refused after allocating %d MB: %v", len(doc), total>>20, err)
}

// TestParseNameBound: every descriptor's full name extends its parent's,
// so 1 MiB of short descriptors under a 31-level chain of 512-byte keys
// held 280 MiB of names. Names now stop at maxNameBytes in all.
func TestParseNameBound(t *testing.T) {
	key := strings.Repeat("k", MaxEntryBytes)
	var b strings.Builder
	b.WriteString("domain: d\ndescriptors: " + strings.Repeat("[{key: "+key+", descriptors: ", MaxEntries-1) + "[")
	for i := range 17_000 {
		fmt.Fprintf(&b, "{key: a%d, rate_limit: {unit: day, requests_per_unit: 1}},", i)
	}
	b.WriteString("]" + strings.Repeat("}]", MaxEntries-1) + "\n")
	doc := []byte(b.String())
	var err error
	_, live := testkit.Allocated(func() { _, err = Parse(map[string][]byte{"wide.yaml": doc}, Options{}) })
	if err == nil || !strings.Contains(err.Error(), "full names (domain.key_value…) add up to more than 64 MiB") {
		t.Fatalf("Parse(%d-byte file of long names) = %v; want the names refused", len(doc), err)
	}
	if live > 8<<20 {
		t.Errorf("a refused file left %d MB live", live>>20)
	}
	// The budget spans files: two files of half the names each add up.
	half := func(domain string) []byte {
		var b strings.Builder
		b.WriteString("domain: " + domain + "\ndescriptors: " + strings.Repeat("[{key: "+key+", descriptors: ", MaxEntries-1) + "[")
		for i := range 2_200 {
			fmt.Fprintf(&b, "{key: a%d},", i)
		}
		b.WriteString("]" + strings.Repeat("}]", MaxEntries-1) + "\n")
		return []byte(b.String())
	}
	if _, err := Parse(map[string][]byte{"a.yaml": half("a")}, Options{}); err != nil {
		t.Fatalf("Parse(one half) = %v", err)
	}
	_, err = Parse(map[string][]byte{"a.yaml": half("a"), "b.yaml": half("b")}, Options{})
	if err == nil || !strings.HasPrefix(err.Error(), "b.yaml:") || !strings.Contains(err.Error(), "add up to more than 64 MiB") {
		t.Errorf("Parse(two halves) = %v; want b.yaml refused", err)
	}
}

func TestLoadRefusesHugeFile(t *testing.T) {
	dir := t.TempDir()
	big := make([]byte, MaxFileBytes+1)
	copy(big, "domain: d\n")
	if err := os.WriteFile(filepath.Join(dir, "big.yaml"), big, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(dir, Options{})
	if err == nil || !strings.Contains(err.Error(), "big.yaml: larger than 16 MiB") {
		t.Fatalf("Load(16 MiB + 1 byte) = %v; want the file refused by name", err)
	}
}

// FuzzParse feeds arbitrary files to the loader and matches the request
// the input also encodes: it returns a config or an error naming the file,
// never panics, and a config answers every request.
func FuzzParse(f *testing.F) {
	f.Add([]byte("domain: kv\ndescriptors:\n  - key: table\n    value: orders\n    rate_limit: {unit: second, requests_per_unit: 300}\n  - key: kind\n    value: promo\n    descriptors:\n      - key: phone\n        rate_limit: {unit: day, requests_per_unit: 3, name: p}\n  - key: phone\n    rate_limit: {unit: day, requests_per_unit: 5, replaces: [{name: p}]}\n"), "kind=promo|phone=1")
	f.Add(nested(MaxEntries+1, 3), "kkk")
	f.Add([]byte("domain: d\ndescriptors:\n  - &x {key: a}\n  - *x\n"), "a")
	f.Add([]byte("domain: d\ndescriptors:\n  - key: a\n    value: b*\n    share_threshold: true\n    rate_limit: {unit: second, requests_per_unit: 0}\n"), "a=bc")
	f.Add([]byte("domain: d\ndescriptors:\n  - {key: a, rate_limit: {unlimited: true, name: n, replaces: [{name: n}]}}\n"), "a")
	f.Add([]byte("domain: d\n<<: {x: 1}\n"), "")
	f.Add([]byte("domain: d\ndescriptors:\n  - key: a\n    rate_limit: &r {unit: hour, requests_per_unit: 2}\n  - key: b\n    rate_limit: {<<: [*r, {name: n}], requests_per_unit: 3}\n"), "b")
	f.Add([]byte("domain: d\ndescriptors: &l [{key: a, descriptors: [{key: b, rate_limit: {unit: day, requests_per_unit: 1}}]}]\nx: *l\n"), "a|b")
	f.Add([]byte("domain: !!binary ZA==\n"), "")
	f.Fuzz(func(t *testing.T, doc []byte, request string) {
		c, err := Parse(map[string][]byte{"f.yaml": doc}, Options{})
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "f.yaml") {
					t.Fatalf("error line %q does not name the file", line)
				}
			}
			return
		}
		var entries []Entry
		for _, kv := range strings.Split(request, "|") {
			k, v, _ := strings.Cut(kv, "=")
			entries = append(entries, Entry{Key: k, Value: v})
		}
		for domain := range c.Domains {
			if m, ok := c.Match(domain, entries); ok && m.Limit == nil {
				t.Fatalf("Match(%q, %q) = ok without a limit", domain, request)
			}
		}
	})
}
