package operator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ratelimiter/ratelimiter/operator/internal/jsonscan"
)

// Bounds on one answer of a subject or of Prometheus, which may be
// compromised or behind a broken proxy and answer anything.
const (
	// maxAnswerBytes bounds what is read of one answer. The largest a
	// rate-limiter node gives is GET /api/v1/blocks at max_blocks: 100,000
	// blocks of IPv4 keys with the shipped block_key's reason are 17.5 MB
	// (1.4x margin; keys of up to about 90 bytes fit). The largest the
	// shipped subject reads, GET /api/v1/limits at max_limits (1,000
	// limits of 512-byte patterns, each with its previous version), is
	// 2.6 MB.
	maxAnswerBytes = 24 << 20
	// maxAnswerValues bounds what one answer may cost once decoded into
	// generic values, where a value costs far more than its bytes: 16 MiB
	// of `{},` decoded into 794 MiB. At this count (jsonscan.Values) the
	// costliest answer decodes into about 70 MiB; the largest legitimate
	// ones count far fewer: 100,000 blocks 600,002 (1.7x margin), 1,000
	// limits 24,006.
	maxAnswerValues = 1 << 20
)

// Bounds on one pass over the subject: a tick's observe, or one read or
// lookup a model asks for. A hostile list multiplies the work of a
// for_each observation, which GETs once per element, and what the pass
// holds: every answer stays in memory until the pass ends.
const (
	// maxGetsPerPass bounds the GETs of one pass, for_each ones included.
	// The shipped subject makes 4 plus one per node: this is a cluster of
	// 1,000 nodes with room to spare. A GET on loopback takes about 145 µs,
	// so a pass of this many takes about 150 ms against a healthy subject.
	maxGetsPerPass = 1024
	// maxPassValues bounds the JSON values of all the answers of one pass,
	// so that up to maxGetsPerPass answers cannot each cost
	// maxAnswerValues: the costliest pass holds about 140 MiB. The
	// largest legitimate answer (100,000 blocks) counts 600,002.
	maxPassValues = 2 << 20
)

// A pass over the subject ends within its deadline, whatever the subject
// does: up to maxGetsPerPass GETs each allowed the subject's timeout (2 s),
// and failing over between base URLs, would hold one tick for over half an
// hour, with the loop and its lease stalled behind it. A running operator
// gives a pass half its lease (15 s by default), so a pass never outlives
// the lease it renews, but never less than one GET's timeout; a pass past
// its deadline fails like an unreachable subject, which is what it is to
// the loop.
func passDeadline(lease, getTimeout time.Duration) time.Duration { return max(lease/2, getTimeout) }

// pass is what one pass over the subject may still spend.
type pass struct {
	gets, values int
}

func newPass() *pass { return &pass{gets: maxGetsPerPass, values: maxPassValues} }

// observer reads a subject's observations over HTTP, failing over between
// its base URLs, and from Prometheus.
type observer struct {
	subj     *Subject
	urls     []string
	client   *http.Client
	good     atomic.Int32  // index of the base URL that last answered
	progs    programs      // every observation's expr
	deadline time.Duration // of one pass (passDeadline)
}

func newObserver(subj *Subject, urls []string, deadline time.Duration) *observer {
	var srcs []string
	for _, ob := range subj.Observations {
		srcs = append(srcs, ob.Expr)
	}
	return &observer{subj: subj, urls: urls, client: &http.Client{Timeout: subj.Timeout.Duration}, progs: compilePrograms(srcs...), deadline: deadline}
}

// observe reads every observation in order (a for_each or expr may use the
// ones before it). Any failure fails the whole observation: a partial view
// must not resolve tickets.
func (o *observer) observe(ctx context.Context) (map[string]any, error) {
	out, _, err := o.observeCounted(ctx)
	return out, err
}

// observeCounted is observe, also saying how many JSON values the answers
// it decoded had, for what keeps the observation (the history).
func (o *observer) observeCounted(ctx context.Context) (map[string]any, int, error) {
	ctx, cancel := o.passContext(ctx)
	defer cancel()
	out, p := map[string]any{}, newPass()
	for _, ob := range o.subj.Observations {
		v, err := o.one(ctx, p, ob, out)
		if err != nil {
			return nil, 0, o.passError(ctx, ob.Name, err)
		}
		out[ob.Name] = v
	}
	return out, maxPassValues - p.values, nil
}

// read reads one observation afresh, with the ones before it that a
// for_each or expr may use.
func (o *observer) read(ctx context.Context, name string) (any, error) {
	ctx, cancel := o.passContext(ctx)
	defer cancel()
	seen, p := map[string]any{}, newPass()
	for _, ob := range o.subj.Observations {
		v, err := o.one(ctx, p, ob, seen)
		if err != nil {
			return nil, o.passError(ctx, ob.Name, err)
		}
		if ob.Name == name {
			return v, nil
		}
		seen[ob.Name] = v
	}
	return nil, fmt.Errorf("no observation %q", name)
}

// lookup makes one on-demand read with validated parameters.
func (o *observer) lookup(ctx context.Context, l *Lookup, params map[string]any) (any, error) {
	p, err := validateParams(&Action{Name: l.Name, Params: l.Params}, params)
	if err != nil {
		return nil, err
	}
	path, err := fillPath(l.Path, p)
	if err != nil {
		return nil, err
	}
	v, err := o.getJSON(ctx, newPass(), path)
	if err != nil {
		return nil, err
	}
	return field(v, l.Field)
}

func (o *observer) one(ctx context.Context, p *pass, ob Observation, seen map[string]any) (any, error) {
	var v any
	var err error
	switch {
	case ob.PromQL != "":
		v, err = o.promql(ctx, p, ob.PromQL)
	case ob.ForEach != "":
		list, _ := seen[ob.ForEach].([]any)
		if len(list) > p.gets {
			// Refused whole, before the first GET: a partial list would
			// resolve the tickets of the entities left out.
			return nil, fmt.Errorf("for_each over %s: %d elements, more GETs than the %d this pass may still make (maxGetsPerPass %d)",
				ob.ForEach, len(list), p.gets, maxGetsPerPass)
		}
		results := make([]any, 0, len(list))
		for _, el := range list {
			m, _ := el.(map[string]any)
			path, err := fillPath(ob.Path, m)
			if err != nil {
				return nil, err
			}
			r, err := o.getJSON(ctx, p, path)
			if errors.Is(err, errGone) {
				continue // the entity left between the two reads
			}
			if err != nil {
				return nil, err
			}
			if r, err = field(r, ob.Field); err != nil {
				return nil, err
			}
			results = append(results, r)
		}
		v = results
	default:
		if v, err = o.getJSON(ctx, p, ob.Path); err == nil {
			v, err = field(v, ob.Field)
		}
	}
	if err != nil || ob.Expr == "" {
		return v, err
	}
	prog, err := o.progs.get(ob.Expr)
	if err != nil {
		return nil, err
	}
	env := map[string]any{"it": v}
	for k, x := range seen {
		env[k] = x
	}
	return runExpr(prog, env)
}

// errGone is a 404: for a per-entity read, the entity no longer exists.
var errGone = errors.New("not found")

var placeholder = regexp.MustCompile(`\{([A-Za-z0-9_]+)\}`)

// fillPath replaces {field} in path with el's URL-escaped field.
func fillPath(path string, el map[string]any) (string, error) {
	var missing string
	out := placeholder.ReplaceAllStringFunc(path, func(m string) string {
		name := m[1 : len(m)-1]
		v, ok := el[name]
		if !ok {
			missing = name
			return m
		}
		return url.PathEscape(fmt.Sprint(v))
	})
	if missing != "" {
		return "", fmt.Errorf("element has no field %q for %s", missing, path)
	}
	return out, nil
}

// field takes the value at a dotted path ("" is the whole value).
func field(v any, path string) (any, error) {
	if path == "" {
		return v, nil
	}
	for _, part := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("no field %q: not an object", path)
		}
		if v, ok = m[part]; !ok {
			return nil, fmt.Errorf("no field %q in the answer", path)
		}
	}
	return v, nil
}

// passContext is ctx ending at the pass's deadline too.
func (o *observer) passContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, o.deadline, errPassDeadline)
}

var errPassDeadline = errors.New("deadline of a pass over the subject")

// passError is err from observation name, saying so when the pass ran out
// of time rather than the one GET.
func (o *observer) passError(ctx context.Context, name string, err error) error {
	if context.Cause(ctx) == errPassDeadline {
		return fmt.Errorf("observation %s: the pass over the subject took over %v (half the operator's lease): %w", name, o.deadline, err)
	}
	return fmt.Errorf("observation %s: %w", name, err)
}

// getJSON GETs path from the first base URL that answers, starting with the
// one that answered last.
func (o *observer) getJSON(ctx context.Context, p *pass, path string) (any, error) {
	var lastErr error
	start := int(o.good.Load())
	for i := range o.urls {
		idx := (start + i) % len(o.urls)
		v, err := o.get(ctx, p, o.urls[idx]+path)
		if err == nil {
			o.good.Store(int32(idx))
			return v, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func (o *observer) get(ctx context.Context, p *pass, u string) (any, error) {
	if p.gets <= 0 {
		return nil, fmt.Errorf("GET %s: this pass made its %d GETs (maxGetsPerPass)", u, maxGetsPerPass)
	}
	p.gets--
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := o.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxAnswerBytes {
		// Cut, it would fail to decode as "unexpected end of JSON input".
		return nil, fmt.Errorf("GET %s: the answer is larger than %d MiB (maxAnswerBytes)", u, maxAnswerBytes>>20)
	}
	if resp.StatusCode == http.StatusNotFound {
		return nil, fmt.Errorf("GET %s: %w", u, errGone)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %d", u, resp.StatusCode)
	}
	n, err := jsonscan.Values(body, min(maxAnswerValues, p.values))
	switch {
	case err != nil && p.values < maxAnswerValues:
		return nil, fmt.Errorf("GET %s: the answers of this pass have %d JSON values and this one %w (maxPassValues %d), refused before decoding",
			u, maxPassValues-p.values, err, maxPassValues)
	case err != nil:
		return nil, fmt.Errorf("GET %s: the answer has %w (maxAnswerValues), refused before decoding", u, err)
	}
	p.values -= n
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	return v, nil
}

// promql runs an instant query; a vector becomes a list of its series'
// labels plus "value", a scalar a number.
func (o *observer) promql(ctx context.Context, p *pass, q string) (any, error) {
	v, err := o.get(ctx, p, strings.TrimRight(o.subj.PrometheusURL, "/")+"/api/v1/query?query="+url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	data, err := field(v, "data")
	if err != nil {
		return nil, err
	}
	m, _ := data.(map[string]any)
	switch m["resultType"] {
	case "scalar":
		pair, _ := m["result"].([]any)
		return sampleValue(pair)
	case "vector":
		series, _ := m["result"].([]any)
		out := make([]any, 0, len(series))
		for _, s := range series {
			sm, _ := s.(map[string]any)
			row := map[string]any{}
			if labels, ok := sm["metric"].(map[string]any); ok {
				for k, l := range labels {
					row[k] = l
				}
			}
			pair, _ := sm["value"].([]any)
			val, err := sampleValue(pair)
			if err != nil {
				return nil, err
			}
			row["value"] = val
			out = append(out, row)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unsupported PromQL result type %v", m["resultType"])
}

func sampleValue(pair []any) (float64, error) {
	if len(pair) != 2 {
		return 0, fmt.Errorf("malformed sample %v", pair)
	}
	s, _ := pair[1].(string)
	var f float64
	if _, err := fmt.Sscan(s, &f); err != nil {
		return 0, fmt.Errorf("malformed sample value %q", s)
	}
	return f, nil
}
