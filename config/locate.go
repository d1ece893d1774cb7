package config

import (
	"bytes"
	"strconv"
	"strings"
)

// BurntSushi's MetaData keeps key positions to itself and forgets array
// indexes, so the loader finds lines with this scanner of its own. It runs
// only on input the TOML parser has accepted, so it can be forgiving: on
// anything it does not understand it gives up on the rest of the line rather
// than fail.

// maxDepth bounds nesting of inline arrays and tables; deeper input is not
// located (its lines read as 0) rather than risk the stack.
const maxDepth = 256

// lineMap maps a TOML path ("limits[1].burst", "node") to its 1-based line.
type lineMap map[string]int

// locate scans src once and records the line of every table, key and array
// element: a table's line is that of its header (or of the first key that
// made it implicitly), an element of an array of tables that of its [[...]]
// header, an element of an inline array the line where the element starts.
func locate(src []byte) lineMap {
	s := &scanner{
		src:    src,
		line:   1,
		lines:  lineMap{},
		arrays: map[string]int{},
	}
	if bytes.HasPrefix(src, []byte("\xef\xbb\xbf")) { // a byte-order mark is not part of the first key
		s.i = 3
	}
	s.document()
	return s.lines
}

// find returns the line of path or, when path is not in the file (a value
// left at its default), that of the nearest enclosing table or element that
// is; 0 when none is.
func (m lineMap) find(path string) int {
	for path != "" {
		if n, ok := m[path]; ok {
			return n
		}
		path = parent(path)
	}
	return 0
}

// parent strips the last key or index from path; quoted keys may contain
// dots and brackets.
func parent(path string) string {
	cut, quoted := 0, false
	for i := 0; i < len(path); i++ {
		switch c := path[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && (c == '.' || c == '['):
			cut = i
		}
	}
	return path[:cut]
}

// keyPath appends one key to a path, quoting it unless it is a bare key.
func keyPath(prefix, key string) string {
	if !isBare(key) {
		key = strconv.Quote(key)
	}
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

func indexPath(prefix string, i int) string {
	return prefix + "[" + strconv.Itoa(i) + "]"
}

func isBare(key string) bool {
	if key == "" {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

type scanner struct {
	src    []byte
	i      int
	line   int
	lines  lineMap
	arrays map[string]int // [[array]] path → elements seen so far
}

// mark records the line of path. A header or key that names path itself
// (explicit) wins over an earlier mention as the parent of something else,
// so that [a.b] followed by [a] gives "a" the line of [a]; valid TOML names
// a path explicitly only once.
func (s *scanner) mark(path string, explicit bool) {
	if _, seen := s.lines[path]; explicit || !seen {
		s.lines[path] = s.line
	}
}

func (s *scanner) more() bool { return s.i < len(s.src) }

func (s *scanner) at(c byte) bool { return s.i < len(s.src) && s.src[s.i] == c }

// blank skips spaces and comments, and newlines too when lines is set.
func (s *scanner) blank(lines bool) {
	for s.more() {
		switch s.src[s.i] {
		case ' ', '\t', '\r':
			s.i++
		case '#':
			for s.more() && s.src[s.i] != '\n' {
				s.i++
			}
		case '\n':
			if !lines {
				return
			}
			s.line++
			s.i++
		default:
			return
		}
	}
}

// endLine skips what is left of the line, newline included.
func (s *scanner) endLine() {
	for s.more() && s.src[s.i] != '\n' {
		s.i++
	}
	if s.more() {
		s.line++
		s.i++
	}
}

func (s *scanner) document() {
	table := ""
	for {
		s.blank(true)
		if !s.more() {
			return
		}
		if s.at('[') {
			table = s.header()
		} else {
			s.keyValue(table)
		}
		s.endLine()
	}
}

// header reads [a.b] or [[a.b]] and returns the path of the table it opens,
// with the index of the current element of every array of tables on the way.
func (s *scanner) header() string {
	s.i++
	array := s.at('[')
	if array {
		s.i++
	}
	keys := s.keys()
	path := ""
	for n, k := range keys {
		path = keyPath(path, k)
		last := n == len(keys)-1
		if last && array {
			i := s.arrays[path]
			s.arrays[path] = i + 1
			s.mark(path, false)
			path = indexPath(path, i)
			s.mark(path, true)
			break
		}
		if i, ok := s.arrays[path]; ok && !last {
			path = indexPath(path, i-1)
		}
		s.mark(path, last)
	}
	return path
}

// keyValue reads key = value inside table.
func (s *scanner) keyValue(table string) {
	keys := s.keys()
	if len(keys) == 0 || !s.at('=') {
		return
	}
	s.i++
	path := s.dotted(table, keys)
	s.blank(false)
	s.value(path, 0)
}

// dotted marks and returns the path of a dotted key a.b.c under table.
func (s *scanner) dotted(table string, keys []string) string {
	path := table
	for n, k := range keys {
		path = keyPath(path, k)
		s.mark(path, n == len(keys)-1)
	}
	return path
}

// keys reads a dotted key and stops before whatever follows it.
func (s *scanner) keys() []string {
	var out []string
	for {
		s.blank(false)
		if !s.more() {
			return out
		}
		switch c := s.src[s.i]; {
		case c == '"':
			out = append(out, unescape(s.basic()))
		case c == '\'':
			out = append(out, string(s.literal()))
		case bareKeyByte(c):
			start := s.i
			for s.more() && bareKeyByte(s.src[s.i]) {
				s.i++
			}
			out = append(out, string(s.src[start:s.i]))
		default:
			return out
		}
		s.blank(false)
		if !s.at('.') {
			return out
		}
		s.i++
	}
}

// bareKeyByte accepts more than TOML 1.0 bare keys (UTF-8 bytes among them)
// so that TOML 1.1 keys are read whole; the input is already known valid.
func bareKeyByte(c byte) bool {
	return !strings.ContainsRune(" \t\r\n.=[]{},#\"'", rune(c))
}

// value skips one value, marking the elements of arrays and the keys of
// inline tables under path.
func (s *scanner) value(path string, depth int) {
	if !s.more() {
		return
	}
	if depth > maxDepth {
		s.i = len(s.src)
		return
	}
	switch rest := s.src[s.i:]; {
	case bytes.HasPrefix(rest, []byte(`"""`)):
		s.multiline(`"""`, true)
	case bytes.HasPrefix(rest, []byte(`'''`)):
		s.multiline(`'''`, false)
	case rest[0] == '"':
		s.basic()
	case rest[0] == '\'':
		s.literal()
	case rest[0] == '[':
		s.array(path, depth)
	case rest[0] == '{':
		s.inline(path, depth)
	default: // numbers, booleans, dates: none holds these bytes
		for s.more() && !strings.ContainsRune(",]}#\r\n", rune(s.src[s.i])) {
			s.i++
		}
	}
}

func (s *scanner) array(path string, depth int) {
	s.i++
	for n := 0; ; n++ {
		s.blank(true)
		if !s.more() {
			return
		}
		if s.at(']') {
			s.i++
			return
		}
		elem := indexPath(path, n)
		s.mark(elem, true)
		s.value(elem, depth+1)
		s.blank(true)
		if !s.at(',') {
			if s.at(']') {
				s.i++
			}
			return
		}
		s.i++
	}
}

// inline reads { k = v, ... }; it tolerates newlines, which TOML 1.1 allows.
func (s *scanner) inline(path string, depth int) {
	s.i++
	for {
		s.blank(true)
		if !s.more() {
			return
		}
		if s.at('}') {
			s.i++
			return
		}
		keys := s.keys()
		if len(keys) == 0 || !s.at('=') {
			return
		}
		s.i++
		at := s.dotted(path, keys)
		s.blank(false)
		s.value(at, depth+1)
		s.blank(true)
		if !s.at(',') {
			if s.at('}') {
				s.i++
			}
			return
		}
		s.i++
	}
}

// basic reads a one-line "string" and returns its raw, still escaped text.
func (s *scanner) basic() []byte {
	s.i++
	start := s.i
	for s.more() {
		switch s.src[s.i] {
		case '\\':
			if s.i+1 < len(s.src) && s.src[s.i+1] != '\n' {
				s.i++
			}
		case '"':
			raw := s.src[start:s.i]
			s.i++
			return raw
		case '\n':
			return s.src[start:s.i]
		}
		s.i++
	}
	return s.src[start:]
}

// literal reads a one-line 'string'.
func (s *scanner) literal() []byte {
	s.i++
	start := s.i
	for s.more() && s.src[s.i] != '\'' && s.src[s.i] != '\n' {
		s.i++
	}
	raw := s.src[start:s.i]
	if s.at('\'') {
		s.i++
	}
	return raw
}

// multiline skips a """ or ”' string, counting its lines. Up to two quotes
// right before the closing delimiter belong to the string.
func (s *scanner) multiline(delim string, escapes bool) {
	s.i += 3
	for s.more() {
		c := s.src[s.i]
		switch {
		case escapes && c == '\\':
			s.i++
			if s.at('\n') {
				s.line++
			}
		case bytes.HasPrefix(s.src[s.i:], []byte(delim)):
			s.i += 3
			for n := 0; n < 2 && s.at(delim[0]); n++ {
				s.i++
			}
			return
		case c == '\n':
			s.line++
		}
		s.i++
	}
}

// unescape decodes a quoted key; Go's escapes cover TOML's but for \e, and a
// key using that is left as written.
func unescape(raw []byte) string {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw)
	}
	if k, err := strconv.Unquote(`"` + string(raw) + `"`); err == nil {
		return k
	}
	return string(raw)
}

// splitKey parses a dotted key as MetaData prints it, e.g. `a."b.c".d`.
func splitKey(key string) []string {
	s := &scanner{src: []byte(key)}
	return s.keys()
}
