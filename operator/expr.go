package operator

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"text/template"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
)

// checkExpr compiles an expression the way evaluation will, so config
// errors surface at `operator check` instead of in the loop.
func checkExpr(src string) error {
	if strings.TrimSpace(src) == "" {
		return fmt.Errorf("must not be empty")
	}
	_, err := compileExpr(src)
	return err
}

func compileExpr(src string) (*vm.Program, error) {
	return expr.Compile(src, expr.AllowUndefinedVariables())
}

// programs holds expressions compiled once, by source, for the ones the
// loop evaluates every tick (observations' expr, SLOs' expr). It is filled
// at start and only read after. A source not in it, or one that did not
// compile, is compiled at use, so its error surfaces where it always did.
type programs map[string]*vm.Program

func compilePrograms(srcs ...string) programs {
	ps := programs{}
	for _, src := range srcs {
		if src == "" {
			continue // nothing to run
		}
		if p, err := compileExpr(src); err == nil {
			ps[src] = p
		}
	}
	return ps
}

func (ps programs) get(src string) (*vm.Program, error) {
	if p, ok := ps[src]; ok {
		return p, nil
	}
	return compileExpr(src)
}

// runExpr evaluates prog against env.
func runExpr(prog *vm.Program, env map[string]any) (any, error) {
	return expr.Run(prog, env)
}

// templateFuncs are available in every template: json encodes a value,
// path escapes one URL path segment.
var templateFuncs = template.FuncMap{
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
	"path": url.PathEscape,
}

func parseTemplate(text string) (*template.Template, error) {
	return template.New("").Funcs(templateFuncs).Option("missingkey=error").Parse(text)
}

// templates holds the subject's templates parsed once, by text, as
// programs holds its expressions: filled at start and only read after (a
// parsed template is safe to execute concurrently). A text not in it is
// parsed at use, so its error surfaces where it always did.
type templates map[string]*template.Template

// templates parses every template of the subject: invariants' messages,
// playbooks' summaries, root causes and action parameters, and actions'
// paths and bodies.
func (s *Subject) templates() templates {
	texts := []string{}
	for _, inv := range s.Invariants {
		texts = append(texts, inv.Message)
	}
	for _, pb := range s.Playbooks {
		texts = append(texts, pb.Summary, pb.RootCause)
		for _, pa := range pb.Actions {
			for _, text := range pa.Params {
				texts = append(texts, text)
			}
		}
	}
	for _, a := range s.Actions {
		texts = append(texts, a.Path, a.Body)
	}
	ts := templates{}
	for _, text := range texts {
		if t, err := parseTemplate(text); err == nil {
			ts[text] = t
		}
	}
	return ts
}

// render executes the template of text over data.
func (ts templates) render(text string, data any) (string, error) {
	t, ok := ts[text]
	if !ok {
		var err error
		if t, err = parseTemplate(text); err != nil {
			return "", err
		}
	}
	var b strings.Builder
	if err := t.Execute(&b, data); err != nil {
		return "", err
	}
	return b.String(), nil
}
