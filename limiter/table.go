package limiter

import (
	"bytes"
	"slices"
	"strings"
)

// Table finds the limit of a key. Patterns use '*' to match any run of
// bytes, the empty run included; every other byte matches itself. When
// several patterns match, the most specific wins:
//  1. an exact pattern (no '*');
//  2. among globs, the one with more literal bytes;
//  3. then the one with fewer '*';
//  4. then the lexicographically smaller pattern, so the choice never depends
//     on the order of the configuration.
//
// "*" alone matches every key: it is the catch-all default. When two limits
// have the same pattern, the first one wins.
//
// A Table is immutable after NewTable and safe for concurrent use. Match
// allocates nothing and runs in time linear in the key per glob.
type Table struct {
	limits []Limit
	exact  map[string]*Limit
	globs  []glob // most specific first
}

// glob is a pattern split at its stars: a key matches when it starts with
// prefix, ends with suffix, and holds the middle segments in order between
// them.
type glob struct {
	pattern        string
	prefix, suffix []byte
	middle         [][]byte
	literal, stars int
	limit          *Limit
}

// NewTable builds the table of limits, which must be normalized and valid.
func NewTable(limits []Limit) *Table {
	t := &Table{limits: slices.Clone(limits), exact: make(map[string]*Limit)}
	for i := range t.limits {
		l := &t.limits[i]
		pat := l.KeyPattern
		if !strings.Contains(pat, "*") {
			if _, dup := t.exact[pat]; !dup {
				t.exact[pat] = l
			}
			continue
		}
		segs := strings.Split(pat, "*")
		g := glob{
			pattern: pat,
			prefix:  []byte(segs[0]),
			suffix:  []byte(segs[len(segs)-1]),
			literal: len(pat) - (len(segs) - 1),
			stars:   len(segs) - 1,
			limit:   l,
		}
		for _, s := range segs[1 : len(segs)-1] {
			if s != "" { // "a**b" is rejected by validation, but harmless
				g.middle = append(g.middle, []byte(s))
			}
		}
		t.globs = append(t.globs, g)
	}
	// Stable: of two limits with one pattern, the first stays first.
	slices.SortStableFunc(t.globs, func(a, b glob) int {
		switch {
		case a.literal != b.literal:
			return b.literal - a.literal
		case a.stars != b.stars:
			return a.stars - b.stars
		}
		return strings.Compare(a.pattern, b.pattern)
	})
	return t
}

// Match returns the limit of key, or nil when no pattern matches.
func (t *Table) Match(key []byte) *Limit {
	if l, ok := t.exact[string(key)]; ok { // this conversion does not allocate
		return l
	}
	for i := range t.globs {
		if t.globs[i].match(key) {
			return t.globs[i].limit
		}
	}
	return nil
}

// Limits returns a copy of the table's limits, in the order given to NewTable.
func (t *Table) Limits() []Limit { return slices.Clone(t.limits) }

// match is greedy: taking the leftmost occurrence of each middle segment
// leaves the most room for the ones after it, so it never needs to
// backtrack.
func (g *glob) match(key []byte) bool {
	if len(key) < len(g.prefix)+len(g.suffix) || !bytes.HasPrefix(key, g.prefix) || !bytes.HasSuffix(key, g.suffix) {
		return false
	}
	rest := key[len(g.prefix) : len(key)-len(g.suffix)]
	for _, seg := range g.middle {
		i := bytes.Index(rest, seg)
		if i < 0 {
			return false
		}
		rest = rest[i+len(seg):]
	}
	return true
}
