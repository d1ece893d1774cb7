package descriptors

import "strings"

// Entry is one key/value pair of a request's descriptor.
type Entry struct{ Key, Value string }

// Match is what decides one descriptor of a request.
type Match struct {
	Limit *Limit
	// Key names the counter: the domain and every entry of the request, so
	// every node that loaded the same files counts on the same key. A
	// share_threshold wildcard puts its pattern in place of the value, so
	// every value it matches shares one counter.
	Key string
	// Metric is the limit's stat name with request values where
	// detailed_metric or value_to_metric asks for them; "" when it is just
	// Limit.FullKey (domain.key_value.key, envoyproxy/ratelimit style).
	Metric string
}

// maxMetricValue bounds a request value copied into a metric name.
const maxMetricValue = 64

// Match finds the limit for one descriptor, as envoyproxy/ratelimit does:
// level by level, key and value first, then the first wildcard of that key
// whose prefix the value has, then the key alone; the limit applies only
// when the request has exactly as many entries as the depth it sits at.
func (c *Config) Match(domain string, entries []Entry) (Match, bool) {
	m, key, ok := c.AppendMatch(nil, domain, entries)
	m.Key = string(key)
	return m, ok
}

// AppendMatch is Match for the request path: it appends the counter key to
// dst and returns it instead of setting m.Key, so a caller with a buffer
// builds the key without allocating.
func (c *Config) AppendMatch(dst []byte, domain string, entries []Entry) (m Match, key []byte, ok bool) {
	d := c.Domains[domain]
	if d == nil || len(entries) == 0 {
		return Match{}, dst, false
	}
	var buf [8]*descriptor
	path := buf[:0] // the descriptor matched at each level
	valued := false // a request value goes into the metric name
	level := &d.root
	for i, e := range entries {
		next := level.children[childKey(e.Key, e.Value, true)]
		if next == nil {
			for _, w := range level.wildcards {
				if w.key == e.Key && strings.HasPrefix(e.Value, w.prefix) {
					next = w
					break
				}
			}
		}
		if next == nil {
			next = level.children[childID{key: e.Key}]
		}
		if next == nil {
			return Match{}, dst, false
		}
		path = append(path, next)
		last := i == len(entries)-1
		if next.valueToMetric || (last && next.detailedMetric && (next.value == "" || next.wildcard)) {
			valued = true
		}
		if last {
			if next.limit == nil {
				return Match{}, dst, false
			}
			m := Match{Limit: next.limit}
			if valued {
				m.Metric = metricName(domain, entries, path)
			}
			return m, appendCounterKey(dst, domain, entries, path), true
		}
		if len(next.children) == 0 {
			return Match{}, dst, false
		}
		level = next
	}
	return Match{}, dst, false
}

// appendCounterKey appends the counter key of a match: the domain and every
// entry, escaped, with a share_threshold wildcard's pattern in place of the
// value it matched.
func appendCounterKey(dst []byte, domain string, entries []Entry, path []*descriptor) []byte {
	dst = AppendEscaped(dst, domain)
	for i, e := range entries {
		value := e.Value
		if path[i].shareThreshold {
			value = path[i].value
		}
		dst = append(dst, '|')
		dst = AppendEscaped(dst, e.Key)
		dst = append(dst, '=')
		dst = AppendEscaped(dst, value)
	}
	return dst
}

func metricName(domain string, entries []Entry, path []*descriptor) string {
	var metric strings.Builder
	metric.WriteString(domain)
	for i, e := range entries {
		next := path[i]
		metric.WriteByte('.')
		metric.WriteString(e.Key)
		switch {
		case next.valueToMetric || (i == len(entries)-1 && next.detailedMetric && (next.value == "" || next.wildcard)):
			metric.WriteByte('_')
			metric.WriteString(clip(e.Value))
		case next.value != "":
			metric.WriteByte('_')
			metric.WriteString(next.value)
		}
	}
	return metric.String()
}

// AppendEscaped appends s with a backslash before each |, = and \, so a
// counter key built of escaped parts joined by | and = reads back one way
// only, whatever a request's entries hold: no two descriptors share a
// counter. A part without those bytes is appended as it is, so ordinary
// keys stay readable (and kept their value when escaping came in).
func AppendEscaped(dst []byte, s string) []byte {
	if !strings.ContainsAny(s, `|=\`) {
		return append(dst, s...)
	}
	for i := 0; i < len(s); i++ {
		if s[i] == '|' || s[i] == '=' || s[i] == '\\' {
			dst = append(dst, '\\')
		}
		dst = append(dst, s[i])
	}
	return dst
}

func clip(s string) string {
	if len(s) > maxMetricValue {
		return s[:maxMetricValue]
	}
	return s
}
