package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

type testConfig struct {
	Title    string       `toml:"title"`
	Node     testNode     `toml:"node"`
	Limits   []testLimit  `toml:"limits"`
	Operator testOperator `toml:"operator"`
}

type testNode struct {
	Listen  string   `toml:"listen"`
	Port    int      `toml:"port"`
	Timeout Duration `toml:"timeout"`
	Tags    []string `toml:"tags"`
}

type testLimit struct {
	Name          string `toml:"name"`
	MaxRequests   int    `toml:"max_requests"`
	WindowSeconds int    `toml:"window_seconds"`
}

type testOperator struct {
	Invariants []testInvariant `toml:"invariants"`
}

type testInvariant struct {
	Name        string   `toml:"name"`
	GracePeriod Duration `toml:"grace_period"`
}

func defaultTestConfig() testConfig {
	return testConfig{Node: testNode{Listen: "127.0.0.1:1", Port: 1, Timeout: Duration{time.Second}}}
}

// Validate builds its problems the way the role packages do: Add, Under and
// Merge of a nested Validate.
func (c *testConfig) Validate() error {
	var p Problems
	if c.Node.Listen == "" {
		p.Add("node.listen", "must be set")
	}
	if c.Node.Port <= 0 {
		p.Add("node.port", "must be positive, got %d", c.Node.Port)
	}
	limits := p.Under("limits")
	for i := range c.Limits {
		limits.Merge(fmt.Sprintf("[%d]", i), c.Limits[i].Validate())
	}
	for i, inv := range c.Operator.Invariants {
		if inv.GracePeriod.Duration <= 0 {
			p.Add(fmt.Sprintf("operator.invariants[%d].grace_period", i), "must be positive, got %s", inv.GracePeriod)
		}
	}
	return p.Err()
}

func (l *testLimit) Validate() error {
	var p Problems
	if l.Name == "" {
		p.Add("", "has no name")
	}
	if l.MaxRequests <= 0 {
		p.Add("max_requests", "must be positive, got %d", l.MaxRequests)
	}
	if l.WindowSeconds <= 0 {
		p.Add("window_seconds", "must be positive, got %d", l.WindowSeconds)
	}
	return p.Err()
}

// problemLines returns the text of each problem in err.
func problemLines(err error) []string {
	if err == nil {
		return nil
	}
	var out []string
	for _, e := range split(err, nil) {
		out = append(out, e.Error())
	}
	return out
}

func TestLoadValid(t *testing.T) {
	cfg := defaultTestConfig()
	if err := Load(filepath.Join("testdata", "valid.toml"), &cfg); err != nil {
		t.Fatalf("Load(valid.toml) = %v; want nil", err)
	}
	want := testConfig{
		Title: "[not_a_table]\nnot_a_key = 1\n",
		Node: testNode{
			Listen:  "127.0.0.1:8080",
			Port:    8080,
			Timeout: Duration{90 * time.Second},
			Tags:    []string{"a", "b]"},
		},
		Limits: []testLimit{
			{Name: "login", MaxRequests: 10, WindowSeconds: 60},
			{Name: "search", MaxRequests: 100, WindowSeconds: 1},
		},
		Operator: testOperator{Invariants: []testInvariant{
			{Name: "ceiling", GracePeriod: Duration{30 * time.Second}},
			{Name: "fairness", GracePeriod: Duration{250 * time.Millisecond}},
		}},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("Load(valid.toml) decoded\n%+v\nwant\n%+v", cfg, want)
	}
}

func TestLoadKeepsDefaults(t *testing.T) {
	cfg := defaultTestConfig()
	if err := Decode("t.toml", []byte("[node]\nport = 9\n"), &cfg); err != nil {
		t.Fatalf("Decode = %v; want nil", err)
	}
	if cfg.Node.Listen != "127.0.0.1:1" || cfg.Node.Timeout.Duration != time.Second || cfg.Node.Port != 9 {
		t.Fatalf("Decode changed defaults it was not given: %+v", cfg.Node)
	}
}

func TestLoadMissingFile(t *testing.T) {
	cfg := defaultTestConfig()
	name := filepath.Join(t.TempDir(), "absent.toml")
	err := Load(name, &cfg)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), name) {
		t.Fatalf("Load(%q) = %v; want a not-exist error naming the file", name, err)
	}
}

func TestDecodeProblems(t *testing.T) {
	f := func(doc string, want ...string) {
		t.Helper()
		cfg := defaultTestConfig()
		got := problemLines(Decode("t.toml", []byte(doc), &cfg))
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Decode(%q) problems:\n%s\nwant:\n%s", doc, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}

	// Unknown keys: in a table, in the second element of an array of
	// tables, a whole unknown table (reported once, not per key).
	f("[node]\nlisten = \"a:1\"\nlisten_addr = \"x\"\n",
		"t.toml:3: node.listen_addr: unknown key")
	f("[[limits]]\nname = \"a\"\nmax_requests = 1\nwindow_seconds = 1\n\n[[limits]]\nname = \"b\"\nmax_reqests = 1\nmax_requests = 1\nwindow_seconds = 1\n",
		"t.toml:8: limits[1].max_reqests: unknown key")
	f("title = \"x\"\n\n[metrics]\nenabled = true\nport = 1\n",
		"t.toml:3: metrics: unknown key")
	f("top = 1\n", "t.toml:1: top: unknown key")
	// The same misspelling in two elements is reported in each.
	f("[[limits]]\nname = \"a\"\nmax_requests = 1\nwindow_seconds = 1\nburst = 1\n[[limits]]\nname = \"b\"\nmax_requests = 1\nwindow_seconds = 1\nburst = 2\n",
		"t.toml:5: limits[0].burst: unknown key",
		"t.toml:10: limits[1].burst: unknown key")
	// In an inline array of tables.
	f("[operator]\ninvariants = [\n  { name = \"a\", grace_period = \"1s\" },\n  { name = \"b\", grace = \"1s\", grace_period = \"1s\" },\n]\n",
		"t.toml:4: operator.invariants[1].grace: unknown key")
	// Quoted and dotted keys.
	f("node.\"listen addr\" = 1\n", `t.toml:1: node."listen addr": unknown key`)

	// Type errors name the path, also inside an array of tables.
	f("[node]\nport = \"eighty\"\n",
		"t.toml:2: node.port: incompatible types: TOML value has type string; destination has type integer")
	f("[[limits]]\nname = \"a\"\nmax_requests = 1\nwindow_seconds = 1\n\n[[limits]]\nname = \"b\"\nmax_requests = \"many\"\nwindow_seconds = 1\n",
		"t.toml:8: limits[1].max_requests: incompatible types: TOML value has type string; destination has type integer")
	// Every bad value is reported, not just the first.
	f("[[limits]]\nname = \"a\"\nmax_requests = \"x\"\nwindow_seconds = 1\n[[limits]]\nname = \"b\"\nmax_requests = 1\nwindow_seconds = \"60s\"\n",
		"t.toml:3: limits[0].max_requests: incompatible types: TOML value has type string; destination has type integer",
		"t.toml:8: limits[1].window_seconds: incompatible types: TOML value has type string; destination has type integer")
	// Unknown keys are still found after a type error, whatever TOML type
	// they hold (the document is re-encoded to carry on decoding).
	f("[node]\nport = \"x\"\nborn = 1979-05-27\nat = 07:32:00\ndt = 1979-05-27T07:32:00\nodt = 1979-05-27T07:32:00Z\nf = inf\nn = nan\nmixed = [1, \"a\", {b = 1}]\nt = {u = [[1], []]}\n",
		"t.toml:2: node.port: incompatible types: TOML value has type string; destination has type integer",
		"t.toml:3: node.born: unknown key",
		"t.toml:4: node.at: unknown key",
		"t.toml:5: node.dt: unknown key",
		"t.toml:6: node.odt: unknown key",
		"t.toml:7: node.f: unknown key",
		"t.toml:8: node.n: unknown key",
		"t.toml:9: node.mixed: unknown key",
		"t.toml:10: node.t: unknown key")
	f("node = 5\n",
		"t.toml:1: node: type mismatch for config.testNode: expected table but found int64")
	f("[node]\ntimeout = \"soon\"\n",
		`t.toml:2: node.timeout: invalid duration "soon": want a number with a unit, such as "250ms" or "1m30s"`)
	f("[operator]\ninvariants = [\n  { name = \"a\", grace_period = \"1s\" },\n  { name = \"b\", grace_period = 30 },\n]\n",
		`t.toml:4: operator.invariants[1].grace_period: invalid duration "30": want a number with a unit, such as "250ms" or "1m30s"`)

	// Validate's problems get lines: a value, an element as a whole, a
	// value missing from the file (the line of its table), a nested path.
	f("[node]\nlisten = \"\"\n", "t.toml:2: node.listen: must be set")
	f("[[limits]]\nname = \"a\"\nmax_requests = 1\nwindow_seconds = 1\n\n[[limits]]\nmax_requests = 1\nwindow_seconds = 1\n",
		"t.toml:6: limits[1]: has no name")
	f("[[limits]]\nname = \"a\"\nmax_requests = 1\n",
		"t.toml:1: limits[0].window_seconds: must be positive, got 0")
	f("[operator]\ninvariants = [\n  { name = \"a\", grace_period = \"1s\" },\n  { name = \"b\", grace_period = \"-1s\" },\n]\n",
		"t.toml:4: operator.invariants[1].grace_period: must be positive, got -1s")
	f("title = \"x\"\n[node]\nport = 0\n", "t.toml:3: node.port: must be positive, got 0")
	// A type error is not restated by Validate, which sees the default.
	f("[node]\nport = true\n",
		"t.toml:2: node.port: incompatible types: TOML value has type bool; destination has type integer")
}

func TestDecodeProblemOutsideFile(t *testing.T) {
	// No defaults: listen and port are missing and so is [node]. Problems
	// without a line come after those with one.
	var cfg testConfig
	got := problemLines(Decode("t.toml", []byte("title = \"x\"\n[[limits]]\nname = \"a\"\nmax_requests = 1\n"), &cfg))
	want := []string{
		"t.toml:2: limits[0].window_seconds: must be positive, got 0",
		"t.toml: node.listen: must be set",
		"t.toml: node.port: must be positive, got 0",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Decode problems = %q; want %q", got, want)
	}
}

func TestLoadEveryProblemAtOnce(t *testing.T) {
	cfg := defaultTestConfig()
	err := Load(filepath.Join("testdata", "problems.toml"), &cfg)
	name := filepath.Join("testdata", "problems.toml")
	want := []string{
		name + ":2: node.listen: must be set",
		name + ":3: node.port: incompatible types: TOML value has type string; destination has type integer",
		name + `:4: node.timeout: invalid duration "soon": want a number with a unit, such as "250ms" or "1m30s"`,
		name + ":11: limits[1].max_requests: must be positive, got 0",
		name + ":11: limits[1].window_seconds: must be positive, got 0",
		name + ":13: limits[1].max_reqests: unknown key",
		name + ":15: limits[2]: has no name",
		name + ":17: limits[2].window_seconds: must be positive, got 0",
		name + ":19: metrics: unknown key",
	}
	if got := problemLines(err); !reflect.DeepEqual(got, want) {
		t.Fatalf("Load(problems.toml) problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Callers can take the problems apart.
	var fe *FieldError
	if !errors.As(err, &fe) || fe.File != name || fe.Line != 2 || fe.Path != "node.listen" {
		t.Fatalf("errors.As(err, *FieldError) = %+v; want the node.listen problem", fe)
	}
}

func TestDecodeSyntaxError(t *testing.T) {
	f := func(doc string, line, col int, quoted string) {
		t.Helper()
		cfg := defaultTestConfig()
		err := Decode("t.toml", []byte(doc), &cfg)
		if err == nil {
			t.Fatalf("Decode(%q) = nil; want a syntax error", doc)
		}
		at := fmt.Sprintf("t.toml:%d:%d: toml: ", line, col)
		msg := err.Error()
		if !strings.HasPrefix(msg, at) {
			t.Errorf("Decode(%q) = %q; want it to start with %q", doc, msg, at)
		}
		if _, rest, _ := strings.Cut(msg, "\n"); rest != quoted {
			t.Errorf("Decode(%q): quoted source %q; want %q", doc, rest, quoted)
		}
		var pe toml.ParseError
		if !errors.As(err, &pe) || pe.Position.Line != line {
			t.Errorf("Decode(%q): errors.As(toml.ParseError) line = %d; want %d", doc, pe.Position.Line, line)
		}
	}
	f("[node]\nport = = 1\n", 2, 8, "    port = = 1\n           ^")
	f("title = \"x\"\n\n[node]\nlisten = \"unterminated\n", 4, 23, "    listen = \"unterminated\n                          ^")
	f("[node]\nport = 1\nport = 2\n", 3, 1, "    port = 2\n    ^")
	// The parser counts an error at a line's end on the next line; the
	// position is the offending byte's, the end of line 1.
	f("[node\nlisten = 1\n", 1, 6, "    [node\n         ^")
	// A byte-order mark, which the parser skips, does not shift the position.
	f("\xef\xbb\xbf[node]\nport = = 1\n", 2, 8, "    port = = 1\n           ^")
	f("[node]\r\n\tport = = 1\r\n", 2, 9, "    \tport = = 1\n    \t       ^")
	// The parser reports line 0 for this file; toml's own ErrorWithPosition
	// panics on it (found by FuzzDecode).
	f(`"\`, 1, 2, "    \"\\\n     ^")
	// Lines that are too long or not printable are not quoted.
	f("x = "+strings.Repeat("1", 200)+"z\n", 1, 5, "")
	f("x = \x1b[2J =\n", 1, 4, "")
}

func TestDecodeNotAPointer(t *testing.T) {
	err := Decode("t.toml", []byte("title = \"x\"\n"), testConfig{})
	if err == nil || !strings.HasPrefix(err.Error(), "t.toml: ") {
		t.Fatalf("Decode(non-pointer) = %v; want an error naming the file", err)
	}
}

func TestDuration(t *testing.T) {
	good := func(in string, want time.Duration) {
		t.Helper()
		var d Duration
		if err := d.UnmarshalText([]byte(in)); err != nil || d.Duration != want {
			t.Errorf("UnmarshalText(%q) = %v, %v; want %v, nil", in, d.Duration, err, want)
		}
		text, _ := d.MarshalText()
		var back Duration
		if err := back.UnmarshalText(text); err != nil || back != d {
			t.Errorf("UnmarshalText(MarshalText(%v)) = %v, %v; want it back", d, back, err)
		}
		j, err := json.Marshal(d)
		if err != nil || string(j) != `"`+want.String()+`"` {
			t.Errorf("json.Marshal(%v) = %s, %v; want %q", d, j, err, want.String())
		}
		back = Duration{}
		if err := json.Unmarshal(j, &back); err != nil || back != d {
			t.Errorf("json.Unmarshal(%s) = %v, %v; want %v", j, back, err, d)
		}
	}
	good("250ms", 250*time.Millisecond)
	good("1m30s", 90*time.Second)
	good("0s", 0)
	good("-5s", -5*time.Second)
	good("1h", time.Hour)

	bad := func(in string) {
		t.Helper()
		d := Duration{time.Minute}
		err := d.UnmarshalText([]byte(in))
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", in)) {
			t.Errorf("UnmarshalText(%q) = %v; want an error naming the value", in, err)
		}
		if d.Duration != time.Minute {
			t.Errorf("UnmarshalText(%q) changed the value to %v", in, d.Duration)
		}
	}
	bad("")
	bad("30")
	bad("soon")
	bad("1 m")
	bad("5y")

	badJSON := func(in string) {
		t.Helper()
		var d Duration
		if err := json.Unmarshal([]byte(in), &d); err == nil {
			t.Errorf("json.Unmarshal(%s) = %v, nil; want an error", in, d)
		}
	}
	badJSON(`30`)
	badJSON(`"soon"`)
	badJSON(`null1`)
}
