package config

import (
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// tricky holds what could fool a line-based scanner: brackets and = in
// comments and strings, multi-line strings and arrays, quoted and dotted
// keys, nested arrays of tables and inline tables.
const tricky = `# comment [x] = 1
a = 1
"quoted.key" = 2
b . c = 'x' # dotted, with spaces
s = """
[fake] \
fake = "\"""
"""
arr = [
  1, # ]
  [2, 3],
  { k = "v" },
  '''q'''', "z",
]
[t]
u = '''
''''
v = 1
[[x]]
[[x.y]]
z = 1
[[x.y]]
[[x]]
[x.w]
[[x.y]]
z = { a = 1, b.c = [ {d = "}"} ] }
`

func TestLocate(t *testing.T) {
	var v map[string]any
	if _, err := toml.Decode(tricky, &v); err != nil {
		t.Fatalf("the test document is not valid TOML: %v", err)
	}
	want := lineMap{
		"a": 2, `"quoted.key"`: 3, "b": 4, "b.c": 4, "s": 5,
		"arr": 9, "arr[0]": 10, "arr[1]": 11, "arr[1][0]": 11, "arr[1][1]": 11, "arr[2]": 12, "arr[2].k": 12,
		"arr[3]": 13, "arr[4]": 13,
		"t": 15, "t.u": 16, "t.v": 18,
		"x": 19, "x[0]": 19, "x[0].y": 20, "x[0].y[0]": 20, "x[0].y[0].z": 21, "x[0].y[1]": 22,
		"x[1]": 23, "x[1].w": 24, "x[1].y": 25, "x[1].y[0]": 25,
		"x[1].y[0].z": 26, "x[1].y[0].z.a": 26, "x[1].y[0].z.b": 26, "x[1].y[0].z.b.c": 26,
		"x[1].y[0].z.b.c[0]": 26, "x[1].y[0].z.b.c[0].d": 26,
	}
	f := func(src string) {
		t.Helper()
		if got := locate([]byte(src)); !reflect.DeepEqual(got, want) {
			t.Errorf("locate() =\n%v\nwant\n%v", got, want)
		}
	}
	f(tricky)
	f(strings.ReplaceAll(tricky, "\n", "\r\n"))
}

func TestLocateByteOrderMark(t *testing.T) {
	got := locate([]byte("\xef\xbb\xbfa = 1\n[b]\n"))
	if want := (lineMap{"a": 1, "b": 2}); !reflect.DeepEqual(got, want) {
		t.Fatalf("locate() = %v; want %v", got, want)
	}
}

func TestLocateExplicitTableWins(t *testing.T) {
	got := locate([]byte("[a.b]\nk = 1\n\n[a]\nj = 2\n"))
	if got["a"] != 4 || got["a.b"] != 1 || got["a.j"] != 5 {
		t.Fatalf("locate() = %v; want a at 4, a.b at 1, a.j at 5", got)
	}
}

func TestLocateNoPanic(t *testing.T) {
	// Cut anywhere, the document is invalid; the scanner must cope.
	for i := range len(tricky) {
		locate([]byte(tricky[:i]))
	}
	for _, src := range []string{"[", "[[", "a = [", "a = {", `a = "`, `a = """`, "a = '''", `"a`, "a.", strings.Repeat("[", 100000)} {
		locate([]byte(src))
	}
}

func TestLineMapFind(t *testing.T) {
	m := lineMap{"x": 1, "x[1]": 5, "x[1].y": 6, `a."b.c[1]"`: 9}
	f := func(path string, want int) {
		t.Helper()
		if got := m.find(path); got != want {
			t.Errorf("find(%q) = %d; want %d", path, got, want)
		}
	}
	f("x[1].y", 6)
	f("x[1].z", 5)
	f("x[1].y.z[3].w", 6)
	f("x[2]", 1)
	f(`a."b.c[1]".d`, 9)
	f(`a."b.c[1]"`, 9)
	f("other.y", 0)
	f("", 0)
}

func TestParent(t *testing.T) {
	f := func(path, want string) {
		t.Helper()
		if got := parent(path); got != want {
			t.Errorf("parent(%q) = %q; want %q", path, got, want)
		}
	}
	f("a.b", "a")
	f("a[2]", "a")
	f("a[2].b", "a[2]")
	f("a", "")
	f(`a."b.c[1]"`, "a")
	f(`a."q\"[x]".c`, `a."q\"[x]"`)
}

func TestSplitKey(t *testing.T) {
	f := func(in string, want ...string) {
		t.Helper()
		if got := splitKey(in); !reflect.DeepEqual(got, want) {
			t.Errorf("splitKey(%q) = %q; want %q", in, got, want)
		}
	}
	f("a", "a")
	f("a.b.c", "a", "b", "c")
	f(`a."b.c".d`, "a", "b.c", "d")
	f(`"with \"quote\"".x`, `with "quote"`, "x")
	f(`'lit.key'.y`, "lit.key", "y")
	f(`""`, "")
}
