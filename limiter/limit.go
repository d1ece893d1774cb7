// Package limiter holds the rate-limit policies and the four algorithms, each
// as an atomic Redis Lua script and its Go twin. It does no I/O: the stores
// that run the scripts or the twins live with the node.
package limiter

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Algorithm names one of the four decision algorithms.
type Algorithm string

const (
	SlidingLog    Algorithm = "sliding_log"    // exact: one sorted-set entry per admitted request
	SlidingWindow Algorithm = "sliding_window" // two counters, weighted: O(1) memory per key
	TokenBucket   Algorithm = "token_bucket"   // GCRA: rate plus burst in one timestamp
	FixedWindow   Algorithm = "fixed_window"   // one counter per aligned window
)

// Algorithms lists every algorithm, in the order the documentation gives them
// (the order of AlgorithmTable).
var Algorithms = func() []Algorithm {
	out := make([]Algorithm, len(AlgorithmTable))
	for i, row := range AlgorithmTable {
		out[i] = row.Name
	}
	return out
}()

// Valid reports whether a names a known algorithm.
func (a Algorithm) Valid() bool { return a.Index() >= 0 }

// Index is a's row in AlgorithmTable, or -1 for an unknown algorithm.
func (a Algorithm) Index() int {
	for i := range AlgorithmTable {
		if AlgorithmTable[i].Name == a {
			return i
		}
	}
	return -1
}

// algorithmList is "a, b, c or d", for error messages.
func algorithmList() string {
	var b strings.Builder
	for i, row := range AlgorithmTable {
		switch {
		case i == 0:
		case i == len(AlgorithmTable)-1:
			b.WriteString(" or ")
		default:
			b.WriteString(", ")
		}
		b.WriteString(string(row.Name))
	}
	return b.String()
}

// Failure modes decide what a check answers when the store cannot.
const (
	FailOpen   = "open"
	FailClosed = "closed"
)

// Bounds that keep every Lua computation exact in a double (2^53) and keys
// reasonable for Redis.
const (
	MaxKeyBytes      = 512
	MaxPatternBytes  = 512
	MaxRequestsLimit = 100_000_000
	MaxWindowSeconds = 86_400
)

// Limit is one policy: keys matching KeyPattern may use MaxRequests units per
// WindowSeconds, decided by Algorithm.
type Limit struct {
	// Name is the policy name in RateLimit headers; it defaults to KeyPattern.
	Name          string    `toml:"name" json:"name,omitempty"`
	KeyPattern    string    `toml:"key_pattern" json:"key_pattern"`
	MaxRequests   int64     `toml:"max_requests" json:"max_requests"`
	WindowSeconds int64     `toml:"window_seconds" json:"window_seconds"`
	Algorithm     Algorithm `toml:"algorithm" json:"algorithm"`
	// Burst is the token bucket's capacity; it defaults to MaxRequests and is
	// ignored by the other algorithms.
	Burst int64 `toml:"burst" json:"burst,omitempty"`
	// Shadow limits are decided and counted but never deny.
	Shadow bool `toml:"shadow" json:"shadow"`
	// FailureMode overrides the node's failure mode for this limit when set.
	FailureMode string `toml:"failure_mode" json:"failure_mode,omitempty"`
	// MaxCost is the largest cost one request may ask for; 0 means the
	// capacity. A larger cost is refused before anything is decided.
	MaxCost int64 `toml:"max_cost" json:"max_cost,omitempty"`
}

// Normalize fills defaults: the algorithm, the burst, the policy name.
func (l *Limit) Normalize() {
	if l.Algorithm == "" {
		l.Algorithm = SlidingLog
	}
	if l.Algorithm == TokenBucket {
		if l.Burst == 0 {
			l.Burst = l.MaxRequests
		}
	} else {
		l.Burst = 0
	}
	if l.Name == "" {
		l.Name = l.KeyPattern
	}
}

// Validate reports every problem of a normalized limit; paths are the TOML
// and JSON field names.
func (l *Limit) Validate() error {
	var p problems
	if err := ValidatePattern(l.KeyPattern); err != "" {
		p.Add("key_pattern", "%s", err)
	}
	if !printable(l.Name) || len(l.Name) > MaxPatternBytes {
		p.Add("name", "must be printable ASCII of at most %d bytes", MaxPatternBytes)
	}
	if l.MaxRequests <= 0 || l.MaxRequests > MaxRequestsLimit {
		p.Add("max_requests", "must be between 1 and %d, got %d", MaxRequestsLimit, l.MaxRequests)
	}
	if l.WindowSeconds <= 0 || l.WindowSeconds > MaxWindowSeconds {
		p.Add("window_seconds", "must be between 1 and %d, got %d", MaxWindowSeconds, l.WindowSeconds)
	}
	if !l.Algorithm.Valid() {
		p.Add("algorithm", "unknown algorithm %q (want %s)", l.Algorithm, algorithmList())
	}
	if l.Algorithm == TokenBucket && (l.Burst <= 0 || l.Burst > MaxRequestsLimit) {
		p.Add("burst", "must be between 1 and %d, got %d", MaxRequestsLimit, l.Burst)
	}
	if msg := bucketSpanProblem(l); msg != "" {
		p.Add("burst", "%s", msg)
	}
	if l.MaxCost < 0 || (l.MaxCost > 0 && l.MaxCost > l.Capacity()) {
		p.Add("max_cost", "must be between 1 and the capacity (%d), or 0 for the capacity; got %d", l.Capacity(), l.MaxCost)
	}
	if l.FailureMode != "" && l.FailureMode != FailOpen && l.FailureMode != FailClosed {
		p.Add("failure_mode", "must be %q or %q, got %q", FailOpen, FailClosed, l.FailureMode)
	}
	return p.Err()
}

// FieldError is a problem with one field of a limit. The config loader
// takes any error with a Field method as one at a TOML path, adding the
// section's prefix and the line; limiter keeps its own type so that it
// needs nothing of the TOML loader.
type FieldError struct{ Path, Msg string }

func (e *FieldError) Error() string             { return e.Path + ": " + e.Msg }
func (e *FieldError) Field() (path, msg string) { return e.Path, e.Msg }

// problems collects every problem of a limit, in the order found.
type problems []error

func (p *problems) Add(path, format string, args ...any) {
	*p = append(*p, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (p problems) Err() error { return errors.Join(p...) }

// Window is the limit's window as a duration.
func (l *Limit) Window() time.Duration { return time.Duration(l.WindowSeconds) * time.Second }

// Capacity is the largest cost one request may ask for: the burst for a
// token bucket, the limit otherwise.
func (l *Limit) Capacity() int64 {
	if l.Algorithm == TokenBucket {
		return l.Burst
	}
	return l.MaxRequests
}

// CostLimit is the largest cost a request may ask for: MaxCost, or the
// capacity when MaxCost is 0.
func (l *Limit) CostLimit() int64 {
	if l.MaxCost > 0 {
		return l.MaxCost
	}
	return l.Capacity()
}

// Params are the integer inputs of one decision under l.
func (l *Limit) Params(cost int64) Params {
	return Params{Limit: l.MaxRequests, Window: l.WindowSeconds * 1e6, Burst: l.Burst, Cost: cost}
}

// ValidateKey returns "" for a usable key, else why it is not.
func ValidateKey(key []byte) string {
	switch {
	case len(key) == 0:
		return "key must not be empty"
	case len(key) > MaxKeyBytes:
		return "key must be at most 512 bytes"
	case !utf8.Valid(key):
		return "key must be valid UTF-8"
	}
	for _, c := range key {
		if c < 0x20 || c == 0x7f {
			return "key must not contain control characters"
		}
	}
	return ""
}

// ValidatePattern returns "" for a usable key pattern, else why it is not.
// Patterns are printable ASCII so they can name a policy in headers.
func ValidatePattern(pattern string) string {
	switch {
	case pattern == "":
		return "must not be empty"
	case len(pattern) > MaxPatternBytes:
		return "must be at most 512 bytes"
	case !printable(pattern):
		return "must be printable ASCII"
	case strings.Contains(pattern, "**"):
		return "must not contain \"**\" (one * already matches any run of characters)"
	}
	return ""
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
