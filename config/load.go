package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"github.com/BurntSushi/toml"
)

// Load reads the TOML file at path into dst, a pointer to a struct whose
// fields have `toml:"..."` tags and which already holds the defaults. It
// fails with every problem at once:
//   - a syntax error: "file:line:col: toml: message" and the line itself
//     (nothing else can be checked then);
//   - every key that matched no field, as a *FieldError "unknown key";
//   - every value of the wrong type (a string where an int is wanted), as a
//     *FieldError naming its path;
//   - then, if dst implements interface{ Validate() error }, every problem
//     Validate returns. Errors built with Problems or *FieldError keep their
//     paths; a problem at the path of a value already reported as of the
//     wrong type is dropped, as it only restates that.
//
// Every *FieldError gets File = path and Line = the line of its TOML path, or
// of the nearest enclosing table when the value is not in the file, or 0.
// The problems are joined with errors.Join, ordered by line; every error Load
// returns names the file. On error dst may be partly filled.
func Load(path string, dst any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err // *PathError names the file
	}
	return Decode(path, data, dst)
}

// Decode is Load for data already read; name stands for the file in errors.
func Decode(name string, data []byte, dst any) error {
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return newSyntaxError(name, data, pe)
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	l := &loader{file: name, raw: raw, lines: locate(data), dst: dst}
	undecoded, complete, err := l.decode(data)
	if err != nil {
		return err
	}
	if complete {
		l.unknown(undecoded)
		if v, ok := dst.(interface{ Validate() error }); ok {
			l.validate(v.Validate())
		}
	}
	return l.err()
}

// syntaxError is a file the TOML parser rejected. Unwrap gives the
// toml.ParseError for its Position.
//
// The message is formatted here rather than by ParseError.ErrorWithPosition,
// which indexes the file's lines by the reported position without checking
// it: for the two-byte file `"\` the parser reports line 0 and that method
// panics. Here the line is clamped into the file, and the source line is
// quoted only when it is short and printable, so a hostile file cannot make
// the message huge or garble a terminal.
type syntaxError struct {
	file string
	line int    // 1-based, within the file
	col  int    // 1-based byte column
	src  string // the line quoted under the message, or ""
	err  toml.ParseError
}

const maxQuotedLine = 160

func newSyntaxError(file string, data []byte, pe toml.ParseError) *syntaxError {
	// The line and column come from the error's byte offset: the parser's
	// own line can be one past it (an error at a line's end is counted on
	// the next line, or on line 0 for the file's first) while its column
	// is the offset's. The offset counts from after a byte-order mark,
	// which the parser skips.
	start := pe.Position.Start
	switch {
	case bytes.HasPrefix(data, []byte("\xef\xbb\xbf")):
		start += 3
	case bytes.HasPrefix(data, []byte("\xff\xfe")), bytes.HasPrefix(data, []byte("\xfe\xff")):
		start += 2
	}
	start = min(max(start, 0), len(data))
	bol := bytes.LastIndexByte(data[:start], '\n') + 1
	line, col := bytes.Count(data[:start], []byte("\n"))+1, start-bol+1
	pe.Position.Line, pe.Position.Col = line, col
	e := &syntaxError{file: file, line: line, col: col, err: pe}
	// The line is quoted only when short and printable: a hostile file
	// makes neither a huge message nor terminal escapes, and a huge line
	// is never copied.
	raw, _, _ := bytes.Cut(data[bol:], []byte("\n"))
	raw = bytes.TrimSuffix(raw, []byte("\r"))
	if len(raw) > maxQuotedLine || e.col > len(raw)+1 {
		return e
	}
	src := string(raw)
	if strings.IndexFunc(src, func(r rune) bool { return r != '\t' && !unicode.IsPrint(r) }) < 0 {
		e.src = src
	}
	return e
}

// Error reads "file:line:col: message", then the line with a caret under the
// column, e.g.
//
//	t.toml:2:8: toml: expected value but found '=' instead
//	    port = = 1
//	           ^
func (e *syntaxError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s:%d:%d: toml: %s", e.file, e.line, e.col, e.err.Message)
	if e.err.LastKey != "" {
		fmt.Fprintf(&b, " (after key %q)", e.err.LastKey)
	}
	if e.src != "" {
		// Keep the line's tabs in the caret's indent so it lines up.
		indent := strings.Map(func(r rune) rune {
			if r == '\t' {
				return r
			}
			return ' '
		}, e.src[:e.col-1])
		fmt.Fprintf(&b, "\n    %s\n    %s^", e.src, indent)
	}
	return b.String()
}

func (e *syntaxError) Unwrap() error { return e.err }

type loader struct {
	file  string
	raw   map[string]any // the document, less the values found of the wrong type
	lines lineMap
	dst   any
	probs []*FieldError
	bad   []string // paths of values of the wrong type
}

func (l *loader) add(path, msg string) {
	l.probs = append(l.probs, &FieldError{Path: path, Msg: msg})
}

// decode decodes into dst. BurntSushi stops at the first value of the wrong
// type and its MetaData is then incomplete, so decode reports that value,
// drops it from the document and decodes again until the rest fits. complete
// is false when a failure could not be pinned on one value; the keys left
// undecoded are then unreliable.
func (l *loader) decode(data []byte) (undecoded []toml.Key, complete bool, err error) {
	doc := data
	for {
		md, err := toml.NewDecoder(bytes.NewReader(doc)).Decode(l.dst)
		if err == nil {
			return md.Undecoded(), true, nil
		}
		key, msg, ok := failure(err)
		if !ok { // not about a value: dst itself cannot take a TOML document
			return nil, false, fmt.Errorf("%s: %w", l.file, err)
		}
		at := l.culprit(key)
		if at == nil {
			l.add(plainPath(key).String(), msg)
			return nil, false, nil
		}
		l.add(at.String(), msg)
		l.bad = append(l.bad, at.String())
		if !remove(l.raw, at) {
			return nil, false, nil
		}
		var buf bytes.Buffer
		if err := toml.NewEncoder(&buf).Encode(l.raw); err != nil {
			return nil, false, nil
		}
		doc = buf.Bytes()
	}
}

// failure extracts the key and message of a decoding error. The key is
// BurntSushi's: it names no array index.
func failure(err error) (key []string, msg string, ok bool) {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return splitKey(pe.LastKey), pe.Message, pe.LastKey != ""
	}
	// The others are fmt.Errorf("toml: line 3 (last key \"a.b\"): ...").
	s := err.Error()
	const mark = "(last key "
	i := strings.Index(s, mark)
	if i < 0 {
		return nil, s, false
	}
	q, qerr := strconv.QuotedPrefix(s[i+len(mark):])
	if qerr != nil {
		return nil, s, false
	}
	k, _ := strconv.Unquote(q)
	msg = strings.TrimPrefix(s[i+len(mark)+len(q):], "): ")
	return splitKey(k), msg, k != ""
}

// culprit finds which element of the arrays along key holds the value that
// failed. Elements decode in order, so it is the first whose value fails on
// its own.
func (l *loader) culprit(key []string) tomlPath {
	var cands []tomlPath
	candidates(l.raw, key, nil, &cands)
	switch len(cands) {
	case 0:
		return nil
	case 1:
		return cands[0]
	}
	for _, c := range cands {
		if l.fails(c) {
			return c
		}
	}
	return cands[0]
}

// fails decodes a document holding only the value at p into a fresh value
// of dst's type.
func (l *loader) fails(p tomlPath) bool {
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(only(l.raw, p)); err != nil {
		return false
	}
	fresh := reflect.New(reflect.TypeOf(l.dst).Elem()).Interface()
	_, err := toml.NewDecoder(&buf).Decode(fresh)
	return err != nil
}

// unknown reports the keys that matched no field. A table that matched
// nothing is reported once, not with each of its keys.
func (l *loader) unknown(keys []toml.Key) {
	undecoded := make(map[string]bool, len(keys))
	for _, k := range keys {
		undecoded[k.String()] = true
	}
	seen := map[string]int{}      // how often a key was met: the nth names the nth element holding it
	reported := map[string]bool{} // a table split over several headers is listed once per header
outer:
	for _, k := range keys {
		for i := 1; i < len(k); i++ {
			if undecoded[k[:i].String()] {
				continue outer
			}
		}
		n := seen[k.String()]
		seen[k.String()]++
		var cands []tomlPath
		candidates(l.raw, k, nil, &cands)
		at := plainPath(k)
		if n < len(cands) {
			at = cands[n]
		} else if len(cands) > 0 {
			at = cands[0]
		}
		if s := at.String(); !reported[s] {
			reported[s] = true
			l.add(s, "unknown key")
		}
	}
}

func (l *loader) validate(err error) {
	var p Problems
	p.Merge("", err)
	for _, e := range p.errs {
		fe := e.(*FieldError)
		if l.restates(fe.Path) {
			continue
		}
		l.probs = append(l.probs, fe)
	}
}

// restates reports whether path is, or lies below, a value already reported
// as of the wrong type: dst holds the default there, which Validate may well
// reject too.
func (l *loader) restates(path string) bool {
	for _, b := range l.bad {
		if path != "" && within(path, b) {
			return true
		}
	}
	return false
}

func (l *loader) err() error {
	for _, p := range l.probs {
		if p.File == "" {
			p.File = l.file
		}
		if p.Line == 0 {
			p.Line = l.lines.find(p.Path)
		}
	}
	sort.SliceStable(l.probs, func(i, j int) bool {
		a, b := l.probs[i].Line, l.probs[j].Line
		return a != 0 && (b == 0 || a < b)
	})
	errs := make([]error, len(l.probs))
	for i, p := range l.probs {
		errs[i] = p
	}
	return errors.Join(errs...)
}

// tomlPath is a path into the decoded document: keys and array indexes.
type tomlPath []step

type step struct {
	key   string
	index int // -1 for a key
}

func (p tomlPath) String() string {
	s := ""
	for _, st := range p {
		if st.index < 0 {
			s = keyPath(s, st.key)
		} else {
			s = indexPath(s, st.index)
		}
	}
	return s
}

func plainPath(key []string) tomlPath {
	p := make(tomlPath, len(key))
	for i, k := range key {
		p[i] = step{key: k, index: -1}
	}
	return p
}

// candidates appends to out every path in v that matches key once an index
// is chosen for each array of tables on the way, in document order.
func candidates(v any, key []string, at tomlPath, out *[]tomlPath) {
	if len(key) == 0 {
		*out = append(*out, append(tomlPath(nil), at...))
		return
	}
	m, ok := v.(map[string]any)
	if !ok {
		return
	}
	next, ok := m[key[0]]
	if !ok {
		return
	}
	at = append(at[:len(at):len(at)], step{key: key[0], index: -1})
	if len(key) > 1 {
		switch a := next.(type) {
		case []map[string]any:
			for i, e := range a {
				candidates(e, key[1:], append(at[:len(at):len(at)], step{index: i}), out)
			}
			return
		case []any:
			for i, e := range a {
				candidates(e, key[1:], append(at[:len(at):len(at)], step{index: i}), out)
			}
			return
		}
	}
	candidates(next, key[1:], at, out)
}

// only returns the part of v on path p: other keys are left out and other
// array elements become empty tables, so indexes and lengths stay as they
// were.
func only(v any, p tomlPath) any {
	if len(p) == 0 {
		return v
	}
	st := p[0]
	switch a := v.(type) {
	case map[string]any:
		if st.index < 0 {
			return map[string]any{st.key: only(a[st.key], p[1:])}
		}
	case []map[string]any:
		if st.index >= 0 && st.index < len(a) {
			out := make([]map[string]any, len(a))
			for i := range out {
				out[i] = map[string]any{}
			}
			if m, ok := only(a[st.index], p[1:]).(map[string]any); ok {
				out[st.index] = m
			}
			return out
		}
	case []any:
		if st.index >= 0 && st.index < len(a) {
			out := make([]any, len(a))
			for i := range out {
				out[i] = map[string]any{}
			}
			out[st.index] = only(a[st.index], p[1:])
			return out
		}
	}
	return v
}

// remove deletes the value at p, which ends in a key, from doc.
func remove(doc map[string]any, p tomlPath) bool {
	var v any = doc
	for n, st := range p {
		last := n == len(p)-1
		switch a := v.(type) {
		case map[string]any:
			if st.index >= 0 {
				return false
			}
			if last {
				_, ok := a[st.key]
				delete(a, st.key)
				return ok
			}
			v = a[st.key]
		case []map[string]any:
			if last || st.index < 0 || st.index >= len(a) {
				return false
			}
			v = a[st.index]
		case []any:
			if last || st.index < 0 || st.index >= len(a) {
				return false
			}
			v = a[st.index]
		default:
			return false
		}
	}
	return false
}
