package operator

import "testing"

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
	obs := newObserver(&Subject{Observations: []Observation{{Name: "x", Expr: "len(it)"}}}, nil)
	if obs.progs["len(it)"] == nil {
		t.Errorf("newObserver did not compile the observation's expr")
	}
}
