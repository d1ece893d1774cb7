package config

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
)

func TestFieldErrorError(t *testing.T) {
	f := func(e FieldError, want string) {
		t.Helper()
		if got := e.Error(); got != want {
			t.Errorf("%+v.Error() = %q; want %q", e, got, want)
		}
	}
	f(FieldError{File: "a.toml", Path: "node.listen", Line: 3, Msg: "bad"}, "a.toml:3: node.listen: bad")
	f(FieldError{File: "a.toml", Path: "node.listen", Msg: "bad"}, "a.toml: node.listen: bad")
	f(FieldError{Path: "node.listen", Line: 3, Msg: "bad"}, "line 3: node.listen: bad")
	f(FieldError{Path: "node.listen", Msg: "bad"}, "node.listen: bad")
	f(FieldError{File: "a.toml", Line: 3, Msg: "bad"}, "a.toml:3: bad")
	f(FieldError{Msg: "bad"}, "bad")
}

// paths lists the path and message of every problem in err.
func paths(err error) []string {
	var out []string
	for _, e := range split(err, nil) {
		var fe *FieldError
		if !errors.As(e, &fe) {
			out = append(out, "not a FieldError: "+e.Error())
			continue
		}
		out = append(out, fe.Path+"|"+fe.Msg)
	}
	return out
}

func TestProblems(t *testing.T) {
	f := func(err error, want ...string) {
		t.Helper()
		if got := paths(err); !reflect.DeepEqual(got, want) {
			t.Errorf("problems = %q; want %q", got, want)
		}
	}

	var empty Problems
	if err := empty.Err(); err != nil {
		t.Fatalf("empty Problems.Err() = %v; want nil", err)
	}

	var p Problems
	p.Add("a", "bad %d", 1)
	node := p.Under("node")
	node.Add("listen", "must be set")
	node.Add("", "whole table")
	limits := p.Under("limits")
	limits.Under("[2]").Add("window_seconds", "too big")
	f(p.Err(), "a|bad 1", "node.listen|must be set", "node|whole table", "limits[2].window_seconds|too big")
	// A sub-collector reports only its own part.
	f(node.Err(), "node.listen|must be set", "node|whole table")
	f(limits.Err(), "limits[2].window_seconds|too big")
	if err := p.Under("limit").Err(); err != nil {
		t.Errorf(`Under("limit").Err() = %v; want nil (limits is not below limit)`, err)
	}

	// Merge prefixes FieldErrors, splits joins however deep, keeps other
	// errors whole and skips nil.
	var inner Problems
	inner.Add("burst", "too small")
	inner.Add("", "whole")
	var m Problems
	m.Merge("[1]", inner.Err())
	m.Merge("x", nil)
	m.Merge("deep", errors.Join(errors.Join(&FieldError{Path: "a", Msg: "one"}), nil, &FieldError{Path: "[0]", Msg: "two"}))
	m.Merge("plain", errors.New("no path"))
	m.Merge("wrapped", fmt.Errorf("context: %w", &FieldError{Path: "y", Msg: "kept"}))
	m.Merge("multi", fmt.Errorf("%w and %w", errors.New("p"), errors.New("q")))
	m.Under("sub").Merge("", &FieldError{Path: "z", Msg: "under"})
	f(m.Err(),
		"[1].burst|too small",
		"[1]|whole",
		"deep.a|one",
		"deep[0]|two",
		"plain|no path",
		"wrapped|context: y: kept",
		"multi|p and q",
		"sub.z|under",
	)

	// Merge copies: the merged error is not changed under its owner.
	fe := &FieldError{Path: "a", Msg: "m"}
	var c Problems
	c.Merge("pre", fe)
	if fe.Path != "a" {
		t.Errorf("Merge changed the merged FieldError's path to %q", fe.Path)
	}
}

// fieldError is an error type of another package that config does not
// know, recognised by its Field method (as limiter's FieldError is).
type fieldError struct{ path, msg string }

func (e fieldError) Error() string             { return e.path + ": " + e.msg }
func (e fieldError) Field() (path, msg string) { return e.path, e.msg }

func TestMergeTakesForeignFieldErrors(t *testing.T) {
	var p Problems
	p.Merge("limits[3]", errors.Join(fieldError{"burst", "too big"}, errors.New("plain")))
	got := p.Err().Error()
	want := "limits[3].burst: too big\nlimits[3]: plain"
	if got != want {
		t.Fatalf("Merge = %q; want %q", got, want)
	}
}
