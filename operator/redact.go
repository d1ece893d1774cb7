package operator

import (
	"encoding/json"
	"strings"
)

// redacted replaces what must not leave the process.
const redacted = "[redacted]"

// redactor removes secrets from data before it is sent to a model (and so
// from the audit log, which records what was sent). It works on two levels:
// a JSON field whose name contains a configured fragment loses its value
// whatever the value is, and any string that contains a secret the
// operator itself holds (the subject's token, the model's key) has it cut
// out, wherever it appears.
type redactor struct {
	fields  []string // lower case
	secrets []string
}

// minSecretLen keeps a short or empty "secret" from blanking ordinary text.
const minSecretLen = 6

func newRedactor(fields []string, secrets ...string) *redactor {
	r := &redactor{}
	for _, f := range fields {
		if f = strings.ToLower(strings.TrimSpace(f)); f != "" {
			r.fields = append(r.fields, f)
		}
	}
	for _, s := range secrets {
		if len(s) >= minSecretLen {
			r.secrets = append(r.secrets, s)
		}
	}
	return r
}

// secretField reports whether a field of that name is redacted.
func (r *redactor) secretField(name string) bool {
	n := strings.ToLower(name)
	for _, f := range r.fields {
		if strings.Contains(n, f) {
			return true
		}
	}
	return false
}

// text cuts the known secrets out of s.
func (r *redactor) text(s string) string {
	for _, sec := range r.secrets {
		s = strings.ReplaceAll(s, sec, redacted)
	}
	return s
}

// value returns a redacted deep copy of a decoded JSON value; v itself is
// not changed (the operator keeps using it).
func (r *redactor) value(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			if r.secretField(k) {
				out[r.text(k)] = redacted
				continue
			}
			out[r.text(k)] = r.value(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = r.value(e)
		}
		return out
	case string:
		return r.text(x)
	case nil, bool, float64, float32, int, int64, int32, uint, uint64, uint32:
		return v
	}
	// Anything else (a typed slice or map from an expr result): redact its
	// JSON form, so nothing goes out unexamined.
	b, err := json.Marshal(v)
	if err != nil {
		return redacted
	}
	return r.raw(b)
}

// raw redacts a JSON document; what is not JSON is treated as text.
func (r *redactor) raw(b json.RawMessage) any {
	if len(b) == 0 {
		return nil
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return r.text(string(b))
	}
	return r.value(v)
}
