// Package loadgen is the load generator: an open loop at a constant or
// ramping arrival rate over one or more nodes, with latency measured from
// each request's intended send time, and an accuracy check of the
// cluster's decisions. It talks to nodes only through their HTTP API.
package loadgen

import (
	"fmt"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fastjson"

	"github.com/ratelimiter/ratelimiter/config"
)

// Config is one load run.
type Config struct {
	// Targets are node base URLs (methods post and get), whole URL
	// templates (http) or grpc://host:port (grpc).
	Targets  []string
	Rate     float64 // requests per second at the start
	RateEnd  float64 // requests per second at the end; 0 means constant Rate
	Duration time.Duration
	// Keys is the number of distinct keys; Distribution picks among them
	// ("uniform" or "zipf", with exponent ZipfS). HotKeyShare of the
	// requests go to one hot key instead.
	Keys         int
	Distribution string
	ZipfS        float64
	HotKeyShare  float64
	KeyPrefix    string
	Cost         int64
	// Method is how each request asks: MethodPost (a node's POST
	// /api/v1/check with a JSON body), MethodGet (its forward-auth form),
	// MethodHTTP (any URL, with HTTPMethod, Headers and Body) or MethodGRPC
	// (Envoy's ShouldRateLimit with Domain and Descriptors). The
	// templates of http and grpc may hold {key} and {cost}.
	Method      string
	HTTPMethod  string   // "" means GET, or POST with a Body
	Headers     []string // "Name: value"
	Body        string
	Domain      string
	Descriptors []string // one descriptor each: "key=value[,key=value…]"
	MaxInflight int
	Timeout     time.Duration // per request
	Seed        uint64
	// Verify keeps every decision and checks it against the cluster's
	// limits as read at the start.
	Verify bool
	// Thresholds; zero disables each.
	MaxP99       time.Duration
	MaxErrorRate float64 // share of requests, 0..1
	MinRate      float64 // achieved requests per second
	// MaxDropped is how many due requests may go unsent because the
	// generator fell behind. Unlike the thresholds above, 0 is a threshold
	// (the default): a truncated run fails.
	MaxDropped int64
	// With Verify: MaxOverAdmissions is how many over-admissions pass (0,
	// the default, is a threshold); MaxFalseBlocksRate, when set, is the
	// share of judged denials that may be false blocks (0..1).
	MaxOverAdmissions  int64
	MaxFalseBlocksRate *float64
}

// DefaultConfig is a one-minute run at 1000 requests/s over 1000 keys.
func DefaultConfig() Config {
	return Config{Rate: 1000, Duration: time.Minute, Keys: 1000, Distribution: "uniform", ZipfS: 1.1,
		KeyPrefix: "loadgen:", Cost: 1, Method: "post", MaxInflight: 10_000, Timeout: 2 * time.Second, Seed: 1}
}

// ParseRate reads "1000" or a ramp "1000:5000".
func ParseRate(s string) (start, end float64, err error) {
	bad := fmt.Errorf("invalid rate %q: want R or START:END requests per second, each positive and finite", s)
	a, b, ramp := strings.Cut(s, ":")
	if start, err = strconv.ParseFloat(a, 64); err != nil || !finitePositive(start) {
		return 0, 0, bad
	}
	if ramp {
		if end, err = strconv.ParseFloat(b, 64); err != nil || !finitePositive(end) {
			return 0, 0, bad
		}
	}
	return start, end, nil
}

func finitePositive(f float64) bool { return f > 0 && !math.IsInf(f, 0) && !math.IsNaN(f) }

// share reports whether f is a share, 0..1 (NaN is not).
func share(f float64) bool { return f >= 0 && f <= 1 }

// MaxBody is the largest --body or --body-file, in bytes: each request
// renders its own copy, and the generator keeps thousands in flight.
const MaxBody = 1 << 20

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var p config.Problems
	if len(c.Targets) == 0 {
		p.Add("target", "at least one --target URL is needed")
	}
	for _, t := range c.Targets {
		switch c.Method {
		case MethodHTTP:
			if _, _, _, err := splitURL(t); err != nil {
				p.Add("target", "%v", err)
			}
		case MethodGRPC:
			if _, err := grpcAddr(t); err != nil {
				p.Add("target", "%v", err)
			}
		default:
			u, err := url.Parse(t)
			if err != nil || u.Scheme != "http" || u.Host == "" {
				p.Add("target", "%q is not an http://host:port URL", t)
			}
		}
	}
	if c.Method == MethodHTTP {
		if c.HTTPMethod != "" && !validToken(c.HTTPMethod) {
			p.Add("http-method", "%q is not an HTTP method", c.HTTPMethod)
		}
		ctype := false
		for _, h := range c.Headers {
			name, _, err := splitHeader(h)
			if err != nil {
				p.Add("header", "%v", err)
			}
			ctype = ctype || strings.EqualFold(name, "Content-Type")
			if holdsKey(h) && strings.ContainsAny(c.KeyPrefix, "\r\n") {
				p.Add("key-prefix", "holds a line break, which {key} would put into the header %q", name)
			}
		}
		if len(c.Body) > MaxBody {
			p.Add("body", "--body or --body-file is larger than %d bytes", MaxBody)
		} else if looksJSON(c.Body) && !ctype {
			b := parseTemplate(c.Body).render(nil, c.KeyPrefix+"0", strconv.FormatInt(c.Cost, 10), nil)
			if err := fastjson.ValidateBytes(b); err != nil {
				p.Add("body", "is sent as application/json but is not JSON once {key} and {cost} are filled in (%v); give a Content-Type header to send it as it is", err)
			}
		}
		if c.Keys > 1 && !slices.ContainsFunc(c.Targets, holdsKey) && !slices.ContainsFunc(c.Headers, holdsKey) && !holdsKey(c.Body) {
			p.Add("target", "no --target, --header or --body holds {key}: every request would ask about one key (give --keys 1 to mean that)")
		}
	} else if c.HTTPMethod != "" || len(c.Headers) > 0 || c.Body != "" {
		p.Add("method", "--http-method, --header and --body need --method http")
	}
	if c.Method == MethodGRPC {
		if c.Domain == "" {
			p.Add("domain", "--method grpc needs the --domain of the descriptors")
		}
		if len(c.Descriptors) == 0 {
			p.Add("descriptor", "--method grpc needs at least one --descriptor key=value")
		}
		for _, d := range c.Descriptors {
			if _, err := parseDescriptor(d); err != nil {
				p.Add("descriptor", "%v", err)
			}
		}
		if c.Keys > 1 && !slices.ContainsFunc(c.Descriptors, holdsKey) {
			p.Add("descriptor", "no --descriptor holds {key}: every request would ask about one key (give --keys 1 to mean that)")
		}
		if c.Cost > math.MaxUint32 {
			p.Add("cost", "must fit hits_addend, a uint32")
		}
	} else if c.Domain != "" || len(c.Descriptors) > 0 {
		p.Add("method", "--domain and --descriptor need --method grpc")
	}
	if !finitePositive(c.Rate) || (c.RateEnd != 0 && !finitePositive(c.RateEnd)) {
		p.Add("rate", "must be positive and finite")
	}
	if c.Duration <= 0 {
		p.Add("duration", "must be positive")
	}
	if c.Keys < 1 {
		p.Add("keys", "must be at least 1")
	}
	if c.Distribution != "uniform" && c.Distribution != "zipf" {
		p.Add("distribution", "must be uniform or zipf, got %q", c.Distribution)
	}
	if c.Distribution == "zipf" && !(c.ZipfS > 1 && !math.IsInf(c.ZipfS, 1)) { // NaN made rand.Zipf loop forever
		p.Add("zipf-s", "must be finite and greater than 1")
	}
	if !share(c.HotKeyShare) {
		p.Add("hot-key-share", "must be between 0 and 1")
	}
	if c.Cost < 1 {
		p.Add("cost", "must be at least 1")
	}
	switch c.Method {
	case MethodPost, MethodGet, MethodHTTP, MethodGRPC:
	default:
		p.Add("method", "must be post, get, http or grpc, got %q", c.Method)
	}
	if c.Verify && c.Method != MethodPost {
		p.Add("verify", "needs --method post: only the node's JSON answer says why a request was denied")
	}
	if c.MaxInflight < 1 {
		p.Add("max-inflight", "must be at least 1")
	}
	if c.Timeout <= 0 {
		p.Add("timeout", "must be positive")
	}
	if !share(c.MaxErrorRate) {
		p.Add("max-error-rate", "must be between 0 and 1")
	}
	if !(c.MinRate >= 0 && !math.IsInf(c.MinRate, 1)) {
		p.Add("min-rate", "must be at least 0 and finite")
	}
	if c.MaxP99 < 0 {
		p.Add("max-p99", "must be at least 0")
	}
	if c.MaxDropped < 0 {
		p.Add("max-dropped", "must be at least 0")
	}
	if c.MaxOverAdmissions < 0 {
		p.Add("max-over-admissions", "must be at least 0")
	}
	if c.MaxOverAdmissions != 0 && !c.Verify {
		p.Add("max-over-admissions", "needs --verify")
	}
	if r := c.MaxFalseBlocksRate; r != nil {
		if !share(*r) {
			p.Add("max-false-blocks-rate", "must be between 0 and 1")
		}
		if !c.Verify {
			p.Add("max-false-blocks-rate", "needs --verify")
		}
	}
	return p.Err()
}

// httpMethod is the method of --method http's requests.
func (c *Config) httpMethod() string {
	switch {
	case c.HTTPMethod != "":
		return strings.ToUpper(c.HTTPMethod)
	case c.Body != "":
		return "POST"
	}
	return "GET"
}

// holdsKey reports whether a template holds {key}.
func holdsKey(t string) bool { return strings.Contains(t, placeKey) }

// looksJSON reports whether a body is sent as application/json (unless a
// header says otherwise).
func looksJSON(body string) bool {
	b := strings.TrimSpace(body)
	return strings.HasPrefix(b, "{") || strings.HasPrefix(b, "[")
}

// validToken reports whether s is an HTTP token (RFC 9110), as a method is.
func validToken(s string) bool {
	for _, r := range s {
		if r > 127 || !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", r)) {
			return false
		}
	}
	return s != ""
}
