package limiter

import (
	"regexp"
	"strings"
	"testing"
)

// tableOf builds a table whose limits are named after their patterns.
func tableOf(patterns ...string) *Table {
	limits := make([]Limit, len(patterns))
	for i, p := range patterns {
		limits[i] = Limit{KeyPattern: p, MaxRequests: 1, WindowSeconds: 1}
		limits[i].Normalize()
	}
	return NewTable(limits)
}

func TestTableMatch(t *testing.T) {
	f := func(patterns []string, key, want string) {
		t.Helper()
		got := ""
		if l := tableOf(patterns...).Match([]byte(key)); l != nil {
			got = l.KeyPattern
		}
		if got != want {
			t.Errorf("Match(%q) in %q = %q; want %q", key, patterns, got, want)
		}
	}
	none := ""

	// Globs.
	f([]string{"user:*"}, "user:42", "user:*")
	f([]string{"user:*"}, "user:", "user:*") // * matches the empty run
	f([]string{"user:*"}, "user", none)
	f([]string{"user:*"}, "xuser:1", none)
	f([]string{"*:42"}, "user:42", "*:42")
	f([]string{"*:42"}, "user:421", none)
	f([]string{"a*b*c"}, "abc", "a*b*c")
	f([]string{"a*b*c"}, "a-b-b-c", "a*b*c")
	f([]string{"a*b*c"}, "acb", none)
	f([]string{"a*a"}, "a", none) // prefix and suffix may not overlap
	f([]string{"a*a"}, "aa", "a*a")
	f([]string{"*ab*ab*"}, "abab", "*ab*ab*")
	f([]string{"*ab*ab*"}, "aab", none)
	f([]string{"*x*"}, "", none)
	f([]string{"*"}, "", "*")
	f([]string{"*"}, "anything at all", "*")
	f([]string{"*"}, "\xff\x00", "*")
	f([]string{"k?y"}, "key", none) // only * is special
	f([]string{"k.y"}, "key", none)
	f([]string{"k?y"}, "k?y", "k?y")
	f([]string{}, "k", none)

	// Most specific wins.
	f([]string{"*", "user:*", "user:42"}, "user:42", "user:42")
	f([]string{"user:42", "user:*", "*"}, "user:42", "user:42")
	f([]string{"*", "user:*"}, "user:7", "user:*")
	f([]string{"*", "user:*"}, "admin:7", "*")
	f([]string{"user:*", "user:4*"}, "user:42", "user:4*") // more literal bytes
	f([]string{"*:42", "user:*"}, "user:42", "user:*")     // 5 literal bytes beat 3
	f([]string{"u*r:*", "user*"}, "user:1", "user*")       // 4 literal bytes beat 3
	f([]string{"a*b*", "ab*"}, "ab", "ab*")                // 2 each, fewer stars
	f([]string{"b*", "a*"}, "ab", "a*")                    // only one matches
	f([]string{"*b", "a*"}, "ab", "*b")                    // 1 and 1 byte, 1 star each: "*b" < "a*"
	f([]string{"a*", "*b"}, "ab", "*b")                    // whatever the order
	f([]string{"user:*:read", "user:1*"}, "user:1:read", "user:*:read")
}

func TestTableDuplicatePatterns(t *testing.T) {
	f := func(pattern, key string) {
		t.Helper()
		tb := NewTable([]Limit{
			{Name: "first", KeyPattern: pattern, MaxRequests: 1, WindowSeconds: 1},
			{Name: "second", KeyPattern: pattern, MaxRequests: 2, WindowSeconds: 1},
		})
		if l := tb.Match([]byte(key)); l == nil || l.Name != "first" {
			t.Errorf("Match(%q) with %q twice = %+v; want the first", key, pattern, l)
		}
	}
	f("k", "k")
	f("k*", "k1")
}

func TestTableLimits(t *testing.T) {
	in := []Limit{{KeyPattern: "b", MaxRequests: 1}, {KeyPattern: "a*", MaxRequests: 2}}
	tb := NewTable(in)
	in[0].MaxRequests = 99 // the table keeps its own copy
	got := tb.Limits()
	if len(got) != 2 || got[0].KeyPattern != "b" || got[0].MaxRequests != 1 || got[1].KeyPattern != "a*" {
		t.Fatalf("Limits() = %+v; want b then a*, as given", got)
	}
	got[1].MaxRequests = 99 // callers cannot change the table
	if l := tb.Match([]byte("ax")); l == nil || l.MaxRequests != 2 {
		t.Fatalf("Match after changing Limits()' result = %+v; want MaxRequests 2", l)
	}
}

func TestMatchAllocs(t *testing.T) {
	tb := tableOf("user:42", "user:*", "*:admin", "a*b*c*d", "*")
	for _, key := range []string{"user:42", "user:7", "x:admin", "a1b2c3d", "other"} {
		k := []byte(key)
		if n := testing.AllocsPerRun(100, func() { _ = tb.Match(k) }); n != 0 {
			t.Errorf("Match(%q) allocates %v times; want 0", key, n)
		}
	}
}

func TestMatchLinear(t *testing.T) {
	// A backtracking matcher takes exponential time here; the greedy one is
	// linear. This runs in microseconds, so a regression shows as a timeout.
	pattern := strings.Repeat("*a", 40) + "*b"
	key := []byte(strings.Repeat("a", 500))
	tb := tableOf(pattern)
	if tb.Match(key) != nil {
		t.Fatalf("Match(a…a) with %q matched; want no match", pattern)
	}
}

// refMatch is the reference for FuzzMatch: the pattern as an anchored
// regular expression, * as (?s:.*).
func refMatch(pattern, key string) bool {
	segs := strings.Split(pattern, "*")
	for i := range segs {
		segs[i] = regexp.QuoteMeta(segs[i])
	}
	return regexp.MustCompile(`\A` + strings.Join(segs, `(?s:.*)`) + `\z`).MatchString(key)
}

// refBetter reports whether pattern a beats b under the documented order.
func refBetter(a, b string) bool {
	sa, sb := strings.Count(a, "*"), strings.Count(b, "*")
	switch {
	case (sa == 0) != (sb == 0):
		return sa == 0
	case len(a)-sa != len(b)-sb:
		return len(a)-sa > len(b)-sb
	case sa != sb:
		return sa < sb
	}
	return a < b
}

func FuzzMatch(f *testing.F) {
	f.Add("user:42", "user:*", "*")
	f.Add("abab", "*ab*ab*", "a*b")
	f.Add("aab", "*ab*ab*", "*b")
	f.Add("a", "a*a", "a")
	f.Add("\xffx\xfe", "*x*", "\xff*")
	f.Add("", "*", "**")
	f.Fuzz(func(t *testing.T, key, p1, p2 string) {
		var patterns []string
		for _, p := range []string{p1, p2} {
			if ValidatePattern(p) == "" {
				patterns = append(patterns, p)
			}
		}
		limits := make([]Limit, len(patterns))
		want := -1
		for i, p := range patterns {
			limits[i] = Limit{Name: string(rune('0' + i)), KeyPattern: p}
			if refMatch(p, key) && (want < 0 || refBetter(p, patterns[want])) {
				want = i
			}
		}
		got := -1
		if l := NewTable(limits).Match([]byte(key)); l != nil {
			got = int(l.Name[0] - '0')
		}
		if got != want {
			t.Fatalf("Match(%q) in %q = pattern %d; want %d", key, patterns, got, want)
		}
	})
}
