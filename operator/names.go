package operator

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/parser"

	"github.com/ratelimiter/ratelimiter/config"
)

// Expressions are compiled with undefined names allowed (an element may
// lack an optional field), so a typo ("stat" for "state") would be false
// forever. These checks close that gap: every name an expression uses must
// be an observation, one of the fields its observation declares (or a live
// sample has), or a name the expression itself binds (let).

// usedNames are the names an expression reads: free identifiers, and
// observation.field member reads.
type usedNames struct {
	idents  []string
	members [][2]string // {observation, field}
}

type nameCollector struct {
	used usedNames
	lets map[string]bool
}

func (c *nameCollector) Visit(n *ast.Node) {
	switch n := (*n).(type) {
	case *ast.IdentifierNode:
		c.used.idents = append(c.used.idents, n.Value)
	case *ast.VariableDeclaratorNode:
		c.lets[n.Name] = true
	case *ast.MemberNode:
		id, ok1 := n.Node.(*ast.IdentifierNode)
		prop, ok2 := n.Property.(*ast.StringNode)
		if ok1 && ok2 {
			c.used.members = append(c.used.members, [2]string{id.Value, prop.Value})
		}
	}
}

// exprNames parses src and returns the names it reads.
func exprNames(src string) (usedNames, error) {
	tree, err := parser.Parse(src)
	if err != nil {
		return usedNames{}, err
	}
	c := &nameCollector{lets: map[string]bool{}}
	ast.Walk(&tree.Node, c)
	var out usedNames
	for _, id := range c.used.idents {
		if !c.lets[id] && id != "$env" {
			out.idents = append(out.idents, id)
		}
	}
	for _, m := range c.used.members {
		if !c.lets[m[0]] {
			out.members = append(out.members, m)
		}
	}
	return out, nil
}

// nameScope is what an expression may name.
type nameScope struct {
	names map[string]bool
	// fields are the known fields of observations whose value is one
	// object (cluster.healthy_nodes); an observation absent here is not
	// checked member by member.
	fields map[string]map[string]bool
	// open: element fields are not known (no declaration, no sample), so
	// a free name may be one of them and is not reported.
	open bool
}

// unknown lists the names src uses that the scope does not have, each
// once, in order of first use.
func (s nameScope) unknown(src string) ([]string, error) {
	used, err := exprNames(src)
	if err != nil {
		return nil, err
	}
	var out []string
	seen := map[string]bool{}
	add := func(n string) {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	if !s.open {
		for _, id := range used.idents {
			if !s.names[id] {
				add(id)
			}
		}
	}
	for _, m := range used.members {
		if f, ok := s.fields[m[0]]; ok && s.names[m[0]] && !f[m[1]] {
			add(m[0] + "." + m[1])
		}
	}
	return out, nil
}

// explain is the error for unknown names, listing what is known.
func (s nameScope) explain(unknown []string) error {
	known := make([]string, 0, len(s.names))
	for n := range s.names {
		known = append(known, n)
	}
	sort.Strings(known)
	return fmt.Errorf("unknown name %s: the observation has no such field (known: %s)",
		quoteJoin(unknown), strings.Join(known, ", "))
}

func quoteJoin(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}

// fieldSource says where an observation's fields come from: its
// declaration, or a live sample (nil: none).
type fieldSource func(obs string) (fields []string, known bool)

// declaredFields is the fieldSource of the TOML alone.
func (s *Subject) declaredFields(obs string) ([]string, bool) {
	for _, o := range s.Observations {
		if o.Name == obs && len(o.Fields) > 0 {
			return o.Fields, true
		}
	}
	return nil, false
}

// sampledFields is a fieldSource from one observation of the subject: the
// union of the keys of its elements (or of the object itself). What the
// subject really reports wins over what the TOML declares, so a declared
// field the subject lacks is caught too; an empty list says nothing of
// fields, and the declared ones stand in.
func (s *Subject) sampledFields(obs map[string]any) fieldSource {
	return func(name string) ([]string, bool) {
		set := map[string]bool{}
		switch v := obs[name].(type) {
		case []any:
			for _, el := range v {
				if m, isMap := el.(map[string]any); isMap {
					for k := range m {
						set[k] = true
					}
				}
			}
		case map[string]any:
			for k := range v {
				set[k] = true
			}
		}
		if len(set) == 0 {
			return s.declaredFields(name)
		}
		return sortedKeys(set), true
	}
}

// scopedExpr is one expression of the subject with what it may name.
type scopedExpr struct {
	path  string // TOML path under the subject: "invariants[2].expr"
	src   string
	scope nameScope
}

// scopes lists every expression of the subject with its name scope, from
// fields.
func (s *Subject) scopes(fields fieldSource) []scopedExpr {
	obsNames := map[string]bool{}
	objFields := map[string]map[string]bool{}
	for _, o := range s.Observations {
		obsNames[o.Name] = true
		if f, ok := fields(o.Name); ok && !usedAsList(s, o.Name) {
			objFields[o.Name] = toSet(f)
		}
	}
	withNames := func() map[string]bool {
		m := make(map[string]bool, len(obsNames)+1)
		for n := range obsNames {
			m[n] = true
		}
		return m
	}
	var out []scopedExpr
	for i, o := range s.Observations {
		if o.Expr == "" {
			continue
		}
		// An observation's expr sees "it" and the observations before it.
		m := map[string]bool{"it": true}
		for _, prev := range s.Observations[:i] {
			m[prev.Name] = true
		}
		out = append(out, scopedExpr{fmt.Sprintf("observations[%d].expr", i), o.Expr, nameScope{names: m, fields: objFields}})
	}
	for i, o := range s.SLOs {
		out = append(out, scopedExpr{fmt.Sprintf("slos[%d].expr", i), o.Expr, nameScope{names: withNames(), fields: objFields}})
	}
	for i, inv := range s.Invariants {
		if inv.Name == SubjectUnreachable || inv.Expr == "" {
			continue
		}
		out = append(out, scopedExpr{fmt.Sprintf("invariants[%d].expr", i), inv.Expr, s.invariantScope(inv, fields, withNames(), objFields)})
	}
	for i, pb := range s.Playbooks {
		if pb.When == "" {
			continue
		}
		for _, inv := range s.Invariants {
			if inv.Name == pb.Invariant {
				sc := s.invariantScope(inv, fields, withNames(), objFields)
				sc.names["began"] = true
				out = append(out, scopedExpr{fmt.Sprintf("playbooks[%d].when", i), pb.When, sc})
			}
		}
	}
	return out
}

// invariantScope: the observations by name and, with over, "entity" and
// the fields of the observation's elements.
func (s *Subject) invariantScope(inv Invariant, fields fieldSource, names map[string]bool, objFields map[string]map[string]bool) nameScope {
	sc := nameScope{names: names, fields: objFields}
	for _, n := range historyNames {
		sc.names[n] = true
	}
	if inv.Over != "" {
		sc.names["entity"] = true
		f, ok := fields(inv.Over)
		sc.open = !ok
		for _, n := range f {
			sc.names[n] = true
		}
	}
	return sc
}

// usedAsList: an observation some invariant or for_each iterates over is a
// list; its fields are its elements', not members of the observation.
func usedAsList(s *Subject, name string) bool {
	for _, inv := range s.Invariants {
		if inv.Over == name {
			return true
		}
	}
	for _, o := range s.Observations {
		if o.ForEach == name {
			return true
		}
	}
	return false
}

func toSet(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// CheckNames reports, each under its TOML path, every expression that
// names something its scope does not have: with sample nil, against the
// declared fields; with a sample (one observation of the live subject,
// `operator check --subject-url`), against the fields it has as well.
func (s *Subject) CheckNames(sample map[string]any) error {
	fields := s.declaredFields
	if sample != nil {
		fields = s.sampledFields(sample)
	}
	var p config.Problems
	for _, e := range s.scopes(fields) {
		unknown, err := e.scope.unknown(e.src)
		if err != nil || len(unknown) == 0 {
			continue // a syntax error is checkExpr's to report
		}
		p.Add(e.path, "%v", e.scope.explain(unknown))
	}
	return p.Err()
}

// Sample observes the subject once at urls (its base URLs when empty): the
// live sample `operator check --subject-url` checks expressions against.
func Sample(ctx context.Context, subj Subject, urls []string) (map[string]any, error) {
	if len(urls) == 0 {
		urls = subj.BaseURLs
	}
	if subj.Timeout.Duration == 0 {
		subj.Timeout.Duration = 2 * time.Second
	}
	return newObserver(&subj, urls, passDeadline(DefaultConfig().Lease.Duration, subj.Timeout.Duration)).observe(ctx)
}
