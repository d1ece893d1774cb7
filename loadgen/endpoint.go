package loadgen

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
)

// Methods: how a request asks for a decision.
const (
	MethodPost = "post" // a node's POST /api/v1/check, JSON in and out
	MethodGet  = "get"  // a node's forward-auth GET /api/v1/check
	MethodHTTP = "http" // any URL, with method, headers and body from templates
	MethodGRPC = "grpc" // Envoy's RateLimitService/ShouldRateLimit
)

// endpoint sends a run's requests to one target.
type endpoint interface {
	// do sends the request for o, records when it left and when its answer
	// came (offsets from start) and what the answer was.
	do(o *outcome, start time.Time)
	close()
}

func newEndpoint(cfg Config, target string) (endpoint, error) {
	switch cfg.Method {
	case MethodHTTP:
		return newHTTPEndpoint(cfg, target)
	case MethodGRPC:
		return newGRPCEndpoint(cfg, target)
	}
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("target %q: %w", target, err)
	}
	return &nodeEndpoint{c: hostClient(cfg, u.Host, false), cfg: cfg, cost: strconv.FormatInt(cfg.Cost, 10)}, nil
}

func hostClient(cfg Config, addr string, tls bool) *fasthttp.HostClient {
	return &fasthttp.HostClient{Addr: addr, IsTLS: tls, MaxConns: cfg.MaxInflight, ReadTimeout: cfg.Timeout,
		WriteTimeout: cfg.Timeout, MaxIdemponentCallAttempts: 1, NoDefaultUserAgentHeader: true,
		MaxConnWaitTimeout: cfg.Timeout}
}

// nodeEndpoint asks a node's own API.
type nodeEndpoint struct {
	c    *fasthttp.HostClient
	cfg  Config
	cost string
}

var jsonParsers fastjson.ParserPool

func (e *nodeEndpoint) do(o *outcome, start time.Time) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetHost(e.c.Addr)
	if e.cfg.Method == MethodGet {
		req.SetRequestURI("/api/v1/check?key=" + url.QueryEscape(o.key) + "&cost=" + e.cost)
	} else {
		req.Header.SetMethod("POST")
		req.SetRequestURI("/api/v1/check")
		req.Header.SetContentType("application/json")
		req.SetBodyRaw(o.body)
	}
	o.sent = time.Since(start)
	err := e.c.DoTimeout(req, resp, e.cfg.Timeout)
	o.done = time.Since(start)
	if err != nil {
		o.errKind = errorKind(err)
		return
	}
	switch code := resp.StatusCode(); code {
	case fasthttp.StatusOK, fasthttp.StatusTooManyRequests:
		o.allowed = code == fasthttp.StatusOK
		if e.cfg.Method == MethodPost {
			p := jsonParsers.Get()
			if v, err := p.ParseBytes(resp.Body()); err == nil {
				o.reason = string(v.GetStringBytes("reason"))
				o.resetMs = v.GetInt64("reset_after_ms")
			}
			jsonParsers.Put(p)
		}
	default:
		o.errKind = "status_" + strconv.Itoa(code)
	}
}

func (e *nodeEndpoint) close() { e.c.CloseIdleConnections() }

// httpEndpoint asks any HTTP server: a 2xx answer is an admission, a 429 a
// denial, and anything else an error, as a proxy in front of the limiter
// (or the limiter's forward-auth) answers.
type httpEndpoint struct {
	c       *fasthttp.HostClient
	host    string
	timeout time.Duration
	method  string
	uri     template // path and query; {key} goes in through escapeKey
	headers []header
	body    template
	hasBody bool
	ctype   string // the body's Content-Type unless a header gives one
	cost    string
}

type header struct {
	name  string
	value template
}

// splitURL cuts an http(s) URL template into its scheme, host and the
// rest (path and query, "/" when empty). The host holds no placeholder.
func splitURL(t string) (scheme, host, rest string, err error) {
	scheme, after, ok := strings.Cut(t, "://")
	if !ok || (scheme != "http" && scheme != "https") {
		return "", "", "", fmt.Errorf("%q is not an http:// or https:// URL", t)
	}
	i := strings.IndexAny(after, "/?")
	if i < 0 {
		i = len(after)
	}
	host, rest = after[:i], after[i:]
	if u, err := url.Parse(scheme + "://" + host); err != nil || u.Host != host || host == "" || strings.ContainsAny(host, "{}@") {
		return "", "", "", fmt.Errorf("%q has no valid host", t)
	}
	if !strings.HasPrefix(rest, "/") {
		rest = "/" + rest
	}
	return scheme, host, rest, nil
}

// splitHeader reads "Name: value".
func splitHeader(h string) (name, value string, err error) {
	name, value, ok := strings.Cut(h, ":")
	name, value = strings.TrimSpace(name), strings.TrimSpace(value)
	if !ok || name == "" || strings.ContainsAny(name, " \t\r\n{}") || strings.ContainsAny(value, "\r\n") {
		return "", "", fmt.Errorf("%q is not a Name: value header", h)
	}
	return name, value, nil
}

func newHTTPEndpoint(cfg Config, target string) (*httpEndpoint, error) {
	scheme, host, rest, err := splitURL(target)
	if err != nil {
		return nil, err
	}
	addr := host
	if _, _, err := net.SplitHostPort(host); err != nil {
		addr = net.JoinHostPort(strings.Trim(host, "[]"), map[string]string{"http": "80", "https": "443"}[scheme])
	}
	e := &httpEndpoint{c: hostClient(cfg, addr, scheme == "https"), host: host, timeout: cfg.Timeout,
		method: cfg.httpMethod(), uri: parseTemplate(rest), body: parseTemplate(cfg.Body), hasBody: cfg.Body != "",
		cost: strconv.FormatInt(cfg.Cost, 10)}
	if looksJSON(cfg.Body) {
		e.ctype = "application/json" // what a JSON body is sent as, unless told otherwise
	}
	for _, h := range cfg.Headers {
		name, value, err := splitHeader(h)
		if err != nil {
			return nil, err
		}
		e.headers = append(e.headers, header{name: name, value: parseTemplate(value)})
	}
	return e, nil
}

func (e *httpEndpoint) do(o *outcome, start time.Time) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	buf := e.uri.render(make([]byte, 0, 128), o.key, e.cost, escapeKey)
	req.SetRequestURIBytes(buf)
	req.Header.SetHost(e.host)
	req.Header.SetMethod(e.method)
	if e.ctype != "" {
		req.Header.SetContentType(e.ctype)
	}
	// The headers and the body are copied into req (pooled), so one
	// buffer renders them all.
	for _, h := range e.headers {
		buf = h.value.render(buf[:0], o.key, e.cost, nil)
		req.Header.SetBytesV(h.name, buf)
	}
	if e.hasBody {
		req.SetBody(e.body.render(buf[:0], o.key, e.cost, nil))
	}
	o.sent = time.Since(start)
	err := e.c.DoTimeout(req, resp, e.timeout)
	o.done = time.Since(start)
	if err != nil {
		o.errKind = errorKind(err)
		return
	}
	switch code := resp.StatusCode(); {
	case code >= 200 && code < 300:
		o.allowed = true
	case code == fasthttp.StatusTooManyRequests:
	default:
		o.errKind = "status_" + strconv.Itoa(code)
	}
}

// escapeKey percent-encodes all but unreserved characters, so a key is
// one path segment or one query value wherever the URL template puts it.
func escapeKey(k string) string { return strings.ReplaceAll(url.QueryEscape(k), "+", "%20") }

func (e *httpEndpoint) close() { e.c.CloseIdleConnections() }
