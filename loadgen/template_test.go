package loadgen

import "testing"

func TestTemplate(t *testing.T) {
	f := func(tpl, key, cost string, escape func(string) string, want string) {
		t.Helper()
		if got := string(parseTemplate(tpl).render(nil, key, cost, escape)); got != want {
			t.Errorf("template %q with key %q, cost %q = %q; want %q", tpl, key, cost, got, want)
		}
	}
	f(`{"key":"{key}","cost":{cost}}`, "user:7", "3", nil, `{"key":"user:7","cost":3}`)
	f("/check/{key}?n={cost}&again={key}", "a b/c&d=e", "1", escapeKey, "/check/a%20b%2Fc%26d%3De?n=1&again=a%20b%2Fc%26d%3De")
	f("{cost}{key}{cost}", "k", "2", nil, "2k2")
	f("no placeholders {here} or {Key}", "k", "1", nil, "no placeholders {here} or {Key}")
	f("", "k", "1", nil, "")
}
