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
	// Metric is the limit's stat name, envoyproxy/ratelimit style
	// (domain.key_value.key), with request values only where
	// detailed_metric or value_to_metric asks for them.
	Metric string
}

// maxMetricValue bounds a request value copied into a metric name.
const maxMetricValue = 64

// Match finds the limit for one descriptor, as envoyproxy/ratelimit does:
// level by level, key and value first, then the first wildcard of that key
// whose prefix the value has, then the key alone; the limit applies only
// when the request has exactly as many entries as the depth it sits at.
func (c *Config) Match(domain string, entries []Entry) (Match, bool) {
	d := c.Domains[domain]
	if d == nil || len(entries) == 0 {
		return Match{}, false
	}
	var key, metric strings.Builder
	key.WriteString(escape(domain))
	metric.WriteString(domain)
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
			next = level.children[e.Key]
		}
		if next == nil {
			return Match{}, false
		}
		value := e.Value
		if next.shareThreshold {
			value = next.value
		}
		key.WriteByte('|')
		key.WriteString(escape(e.Key))
		key.WriteByte('=')
		key.WriteString(escape(value))

		metric.WriteByte('.')
		metric.WriteString(e.Key)
		last := i == len(entries)-1
		switch {
		case next.valueToMetric || (last && next.detailedMetric && (next.value == "" || next.wildcard)):
			metric.WriteByte('_')
			metric.WriteString(clip(e.Value))
		case next.value != "":
			metric.WriteByte('_')
			metric.WriteString(next.value)
		}
		if last {
			if next.limit == nil {
				return Match{}, false
			}
			return Match{Limit: next.limit, Key: key.String(), Metric: metric.String()}, true
		}
		if len(next.children) == 0 {
			return Match{}, false
		}
		level = next
	}
	return Match{}, false
}

// escape keeps the counter key unambiguous whatever the entries hold.
func escape(s string) string {
	if !strings.ContainsAny(s, `|=\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '|' || s[i] == '=' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func clip(s string) string {
	if len(s) > maxMetricValue {
		return s[:maxMetricValue]
	}
	return s
}
