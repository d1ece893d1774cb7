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

// render executes a template over data.
func render(text string, data any) (string, error) {
	t, err := parseTemplate(text)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	if err := t.Execute(&b, data); err != nil {
		return "", err
	}
	return b.String(), nil
}
