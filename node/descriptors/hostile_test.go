package descriptors

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
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
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if _, err := Parse(map[string][]byte{"bomb.yaml": doc}, Options{}); err == nil {
		t.Fatal("Parse(4,900 levels) = nil error")
	}
	runtime.ReadMemStats(&after)
	grew := after.TotalAlloc - before.TotalAlloc
	if grew > 100*uint64(len(doc)) {
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

func TestParseRefusesAliases(t *testing.T) {
	// A billion-laughs shape: each level lists the one before it ten times.
	doc := `domain: d
descriptors:
  - &a {key: a, rate_limit: {unit: second, requests_per_unit: 1}}
  - key: b
    descriptors: [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
`
	_, err := Parse(map[string][]byte{"f.yaml": []byte(doc)}, Options{})
	if err == nil || !strings.HasPrefix(err.Error(), "f.yaml:5: YAML alias *a: aliases and merge keys are not supported") {
		t.Fatalf("Parse(aliases) = %v; want the alias refused with its line", err)
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != 10 {
		t.Errorf("Parse(aliases) reported %d problems; want one per alias (10):\n%v", n, err)
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
