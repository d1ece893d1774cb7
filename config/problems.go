// Package config loads the project's TOML file: it decodes, rejects keys that
// matched nothing, runs validation and names the TOML path and line of every
// problem at once. It knows nothing about what the sections mean.
package config

import (
	"errors"
	"fmt"
	"strings"
)

// FieldError is one problem with one TOML value. Path is the dotted TOML path
// with array indexes, for example "limits[2].window_seconds". Line is 1-based
// and 0 when unknown.
type FieldError struct {
	File string
	Path string
	Line int
	Msg  string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	switch {
	case e.File != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", e.File, e.Line)
	case e.File != "":
		b.WriteString(e.File + ": ")
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Problems collects every validation problem so that a user sees all of them
// in one run instead of fixing them one at a time. The zero value is ready to
// use.
type Problems struct {
	prefix string
	root   *Problems // where Add appends; nil means this collector itself
	errs   []error
}

func (p *Problems) sink() *Problems {
	if p.root != nil {
		return p.root
	}
	return p
}

// Add records a problem at path (relative to the collector's prefix).
func (p *Problems) Add(path, format string, args ...any) {
	s := p.sink()
	s.errs = append(s.errs, &FieldError{Path: join(p.prefix, path), Msg: fmt.Sprintf(format, args...)})
}

// Merge adds the problems of err, prefixing the paths of FieldErrors (and
// of any error with a Field method, such as limiter's) with path. An errors.Join of problems (nested or not) is split into its parts;
// any other error, including one that wraps a FieldError inside more text,
// becomes one problem at path carrying its whole text, so nothing is lost.
func (p *Problems) Merge(path string, err error) {
	at := join(p.prefix, path)
	s := p.sink()
	for _, e := range split(err, nil) {
		if fe, ok := e.(*FieldError); ok {
			c := *fe
			c.Path = join(at, fe.Path)
			s.errs = append(s.errs, &c)
			continue
		}
		if f, ok := e.(interface{ Field() (path, msg string) }); ok {
			path, msg := f.Field()
			s.errs = append(s.errs, &FieldError{Path: join(at, path), Msg: msg})
			continue
		}
		s.errs = append(s.errs, &FieldError{Path: at, Msg: e.Error()})
	}
}

// split appends the separate problems in err to out. An error with several
// causes is split only when its text is exactly its causes' texts joined by
// newlines, as errors.Join makes it: fmt.Errorf("a: %w, %w", x, y) has text
// of its own that splitting would drop.
func split(err error, out []error) []error {
	if err == nil {
		return out
	}
	multi, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return append(out, err)
	}
	var parts []error
	var texts []string
	for _, e := range multi.Unwrap() {
		if e != nil {
			parts = append(parts, e)
			texts = append(texts, e.Error())
		}
	}
	if err.Error() != strings.Join(texts, "\n") {
		return append(out, err)
	}
	for _, e := range parts {
		out = split(e, out)
	}
	return out
}

// Err returns nil when nothing was added, else every problem joined. For a
// collector made by Under it returns only the problems at or below its
// prefix, so a caller can ask whether one section is sound.
func (p *Problems) Err() error {
	s := p.sink()
	if s == p {
		return errors.Join(s.errs...)
	}
	var mine []error
	for _, e := range s.errs {
		if fe, ok := e.(*FieldError); ok && within(fe.Path, p.prefix) {
			mine = append(mine, e)
		}
	}
	return errors.Join(mine...)
}

// Under returns a collector whose paths are prefixed with path; its problems
// land in p.
func (p *Problems) Under(path string) *Problems {
	return &Problems{prefix: join(p.prefix, path), root: p.sink()}
}

func join(prefix, path string) string {
	switch {
	case prefix == "":
		return path
	case path == "":
		return prefix
	case path[0] == '[':
		return prefix + path
	}
	return prefix + "." + path
}

// within reports whether path is prefix or lies below it.
func within(path, prefix string) bool {
	if prefix == "" || path == prefix {
		return true
	}
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	c := path[len(prefix)]
	return c == '.' || c == '['
}
