package loadgen

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestParseRate(t *testing.T) {
	f := func(in string, start, end float64) {
		t.Helper()
		s, e, err := ParseRate(in)
		if err != nil || s != start || e != end {
			t.Errorf("ParseRate(%q) = %g, %g, %v; want %g, %g, nil", in, s, e, err, start, end)
		}
	}
	f("1000", 1000, 0)
	f("2.5", 2.5, 0)
	f("1000:5000", 1000, 5000)
	f("5000:1000", 5000, 1000)
}

// TestBadRateRefused: a rate that is not a finite number, or has anything
// after it, is refused by ParseRate or by Validate, not run. NaN and Inf
// used to pass both and "run" with sent 0 and dropped -9223372036854775808.
func TestBadRateRefused(t *testing.T) {
	for _, in := range []string{"", "fast", "1000:", ":5000", "NaN", "Inf", "+Inf", "1000:Inf", "1000abc", "1000/s", "1000:5000:9000"} {
		start, end, err := ParseRate(in)
		if err == nil {
			c := DefaultConfig()
			c.Targets, c.Rate, c.RateEnd = []string{"http://127.0.0.1:1"}, start, end
			err = c.Validate()
		}
		if err == nil {
			t.Errorf("--rate %q: ParseRate = %g, %g and Validate = nil; want one of them to refuse it", in, start, end)
		} else if !strings.Contains(err.Error(), "rate") {
			t.Errorf("--rate %q: error %q does not name the rate", in, err)
		}
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := Config{Targets: []string{"ftp://x"}, Rate: -1, Duration: 0, Keys: 0, Distribution: "zipf", ZipfS: 1,
		HotKeyShare: 2, Cost: 0, Method: "put", MaxInflight: 0, Timeout: 0, MaxErrorRate: 2}
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate of a config wrong in every field = nil")
	}
	for _, want := range []string{"target", "rate", "duration", "keys", "zipf-s", "hot-key-share", "cost", "method", "max-inflight", "timeout", "max-error-rate"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error lacks %q:\n%v", want, err)
		}
	}
	good := DefaultConfig()
	good.Targets, good.Duration = []string{"http://127.0.0.1:8080"}, time.Second
	if err := good.Validate(); err != nil {
		t.Errorf("Validate(DefaultConfig with a target) = %v; want nil", err)
	}
}

// TestBadThresholdsRefused: a threshold or share that is NaN, negative or
// infinite is refused before the run. NaN passed every "< 0 || > 1" test:
// --max-error-rate NaN silently disabled the threshold and --zipf-s NaN
// made rand.Zipf loop forever.
func TestBadThresholdsRefused(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	for _, tc := range []struct {
		name string
		edit func(c *Config)
	}{
		{"max-error-rate", func(c *Config) { c.MaxErrorRate = nan }},
		{"max-error-rate", func(c *Config) { c.MaxErrorRate = -0.1 }},
		{"hot-key-share", func(c *Config) { c.HotKeyShare = nan }},
		{"zipf-s", func(c *Config) { c.Distribution, c.ZipfS = "zipf", nan }},
		{"zipf-s", func(c *Config) { c.Distribution, c.ZipfS = "zipf", inf }},
		{"min-rate", func(c *Config) { c.MinRate = nan }},
		{"min-rate", func(c *Config) { c.MinRate = -1 }},
		{"min-rate", func(c *Config) { c.MinRate = inf }},
		{"max-p99", func(c *Config) { c.MaxP99 = -time.Second }},
		{"max-dropped", func(c *Config) { c.MaxDropped = -1 }},
		{"max-over-admissions", func(c *Config) { c.Verify, c.MaxOverAdmissions = true, -1 }},
		{"max-false-blocks-rate", func(c *Config) { c.Verify, c.MaxFalseBlocksRate = true, &nan }},
		{"max-false-blocks-rate", func(c *Config) { r := -0.5; c.Verify, c.MaxFalseBlocksRate = true, &r }},
		{"max-false-blocks-rate", func(c *Config) { c.Verify, c.MaxFalseBlocksRate = true, &inf }},
	} {
		c := DefaultConfig()
		c.Targets, c.Duration = []string{"http://127.0.0.1:1"}, time.Second
		tc.edit(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.name) {
			t.Errorf("--%s: Validate = %v; want an error naming it", tc.name, err)
		}
	}
}
