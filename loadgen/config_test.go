package loadgen

import (
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
