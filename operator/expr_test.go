package operator

import (
	"testing"
	"time"
)

// TestProgramsCompileOnce: the expressions the loop runs every tick are
// compiled at start; one that did not compile is compiled at use, with its
// error.
func TestProgramsCompileOnce(t *testing.T) {
	ps := compilePrograms("it * 2", "", "it +")
	if len(ps) != 1 {
		t.Fatalf("compilePrograms kept %d programs; want 1 (empty and broken ones are left out)", len(ps))
	}
	a, err := ps.get("it * 2")
	b, _ := ps.get("it * 2")
	if err != nil || a != b || a != ps["it * 2"] {
		t.Errorf("get returned a new program for a compiled source: %p %p %v", a, b, err)
	}
	if _, err := ps.get("it +"); err == nil {
		t.Errorf("get of a broken expression succeeded; want its compile error")
	}
	obs := newObserver(&Subject{Observations: []Observation{{Name: "x", Expr: "len(it)"}}}, nil, time.Minute)
	if obs.progs["len(it)"] == nil {
		t.Errorf("newObserver did not compile the observation's expr")
	}
}

// TestTemplatesParseOnce: every template of the shipped subject is parsed
// at start, so no tick parses one; a text not among them is parsed at use,
// with its error.
func TestTemplatesParseOnce(t *testing.T) {
	_, subj := shipped(t)
	ts := subj.templates()
	want := 0
	check := func(where, text string) {
		t.Helper()
		want++
		if ts[text] == nil {
			t.Errorf("%s template %q was not parsed at start", where, text)
		}
	}
	for _, inv := range subj.Invariants {
		check("invariant "+inv.Name+" message", inv.Message)
	}
	for _, pb := range subj.Playbooks {
		check("playbook "+pb.Invariant+" summary", pb.Summary)
		check("playbook "+pb.Invariant+" root_cause", pb.RootCause)
		for _, pa := range pb.Actions {
			for name, text := range pa.Params {
				check("playbook "+pb.Invariant+" param "+name, text)
			}
		}
	}
	for _, a := range subj.Actions {
		check("action "+a.Name+" path", a.Path)
	}
	if want < 20 {
		t.Fatalf("the shipped subject has %d templates; the test expects a full subject", want)
	}
	out, err := ts.render("{{.entity}} is slow", map[string]any{"entity": "n1"})
	if err != nil || out != "n1 is slow" {
		t.Errorf("render of a text parsed at use = %q, %v", out, err)
	}
	if _, err := ts.render("{{.entity", nil); err == nil {
		t.Errorf("render of a broken template succeeded; want its parse error")
	}
}
