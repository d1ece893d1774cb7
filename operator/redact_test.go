package operator

import (
	"encoding/json"
	"testing"
)

// TestRedactor: names with a configured fragment lose their values at any
// depth and in any case; the operator's own secrets are cut out of any
// string, keys included; short "secrets" blank nothing; values of other
// Go types (an expr result) are examined through their JSON form; the
// input is left untouched.
func TestRedactor(t *testing.T) {
	r := newRedactor([]string{"Token", " password ", ""}, "s3cr3t-value", "abc")
	in := map[string]any{
		"id":           "n1",
		"api_TOKEN":    "x",
		"nested":       []any{map[string]any{"db_password": 42.0, "note": "uses s3cr3t-value here", "abc": "abc"}},
		"typed":        []map[string]string{{"refresh_token": "y", "ok": "s3cr3t-value"}},
		"s3cr3t-value": true,
		"count":        3,
	}
	f := func(got any, want string) {
		t.Helper()
		b, _ := json.Marshal(got)
		if string(b) != want {
			t.Errorf("redacted = %s; want %s", b, want)
		}
	}
	f(r.value(in), `{"[redacted]":true,"api_TOKEN":"[redacted]","count":3,"id":"n1",`+
		`"nested":[{"abc":"abc","db_password":"[redacted]","note":"uses [redacted] here"}],"typed":[{"ok":"[redacted]","refresh_token":"[redacted]"}]}`)
	if in["api_TOKEN"] != "x" {
		t.Errorf("the input was changed: %v", in)
	}
	f(r.raw(json.RawMessage(`{"Password":"p","k":"s3cr3t-value"}`)), `{"Password":"[redacted]","k":"[redacted]"}`)
	f(r.raw(json.RawMessage(`not json s3cr3t-value`)), `"not json [redacted]"`)
	f(r.raw(nil), `null`)
}
