package loadgen

import "strings"

// Placeholders a template may hold; every other brace is literal text, so
// a JSON body needs no escaping.
const (
	placeKey  = "{key}"
	placeCost = "{cost}"
)

// template is text with {key} and {cost} in it, split once so that each
// request renders it without searching.
type template struct {
	lit  []string // lit[i] comes before slot[i]; one more literal than slots
	slot []string // placeKey or placeCost
}

func parseTemplate(s string) template {
	var t template
	for {
		i, k := strings.Index(s, placeKey), strings.Index(s, placeCost)
		p := placeKey
		if i < 0 || (k >= 0 && k < i) {
			i, p = k, placeCost
		}
		if i < 0 {
			t.lit = append(t.lit, s)
			return t
		}
		t.lit, t.slot = append(t.lit, s[:i]), append(t.slot, p)
		s = s[i+len(p):]
	}
}

// render appends the text with key and cost in place, key through escape
// when it is not nil.
func (t template) render(dst []byte, key, cost string, escape func(string) string) []byte {
	if escape != nil {
		key = escape(key)
	}
	for i, s := range t.slot {
		dst = append(dst, t.lit[i]...)
		if s == placeKey {
			dst = append(dst, key...)
		} else {
			dst = append(dst, cost...)
		}
	}
	return append(dst, t.lit[len(t.lit)-1]...)
}
