package operator

import (
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// coerce converts a value (from TOML, JSON, a template or the command line)
// to the parameter's type, refusing anything that does not fit exactly.
func coerce(p Param, v any) (any, error) {
	switch p.Type {
	case "string":
		switch x := v.(type) {
		case string:
			return x, nil
		}
	case "int":
		switch x := v.(type) {
		case int64:
			return x, nil
		case int:
			return int64(x), nil
		case float64:
			if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
				return int64(x), nil
			}
		case string:
			if n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64); err == nil {
				return n, nil
			}
		}
	case "float":
		switch x := v.(type) {
		case float64:
			return x, nil
		case int64:
			return float64(x), nil
		case int:
			return float64(x), nil
		case string:
			if f, err := strconv.ParseFloat(strings.TrimSpace(x), 64); err == nil {
				return f, nil
			}
		}
	case "bool":
		switch x := v.(type) {
		case bool:
			return x, nil
		case string:
			if b, err := strconv.ParseBool(strings.TrimSpace(x)); err == nil {
				return b, nil
			}
		}
	case "duration":
		switch x := v.(type) {
		case string:
			if d, err := time.ParseDuration(strings.TrimSpace(x)); err == nil {
				return d.String(), nil
			}
		}
	}
	return nil, fmt.Errorf("%v (%T) is not a valid %s", v, v, p.Type)
}

// validateParams checks a proposal's parameters against an action's
// definition: every required one present, no unknown ones, each of the
// right type and within its range and pattern. It returns the parameters
// with defaults filled in and values converted, or every problem at once.
func validateParams(a *Action, in map[string]any) (map[string]any, error) {
	out := map[string]any{}
	var problems []string
	names := make([]string, 0, len(in))
	for n := range in {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if _, ok := a.Params[n]; !ok {
			problems = append(problems, fmt.Sprintf("unknown parameter %q", n))
		}
	}
	defs := make([]string, 0, len(a.Params))
	for n := range a.Params {
		defs = append(defs, n)
	}
	sort.Strings(defs)
	for _, n := range defs {
		p := a.Params[n]
		v, ok := in[n]
		if !ok || v == nil {
			if p.Default != nil {
				v, ok = p.Default, true
			} else if p.Required {
				problems = append(problems, fmt.Sprintf("missing required parameter %q", n))
				continue
			} else {
				continue
			}
		}
		c, err := coerce(p, v)
		if err != nil {
			problems = append(problems, fmt.Sprintf("parameter %q: %v", n, err))
			continue
		}
		if msg := checkRange(p, c); msg != "" {
			problems = append(problems, fmt.Sprintf("parameter %q: %s", n, msg))
			continue
		}
		out[n] = c
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("invalid parameters for %s: %s", a.Name, strings.Join(problems, "; "))
	}
	return out, nil
}

func checkRange(p Param, v any) string {
	var f float64
	switch x := v.(type) {
	case int64:
		f = float64(x)
	case float64:
		f = x
	case string:
		if p.Pattern != "" && !regexp.MustCompile(p.Pattern).MatchString(x) {
			return fmt.Sprintf("%q does not match %s", x, p.Pattern)
		}
		if p.Type == "string" && strings.TrimSpace(x) == "" && p.Required {
			return "must not be empty"
		}
		return ""
	default:
		return ""
	}
	if p.Min != nil && f < *p.Min {
		return fmt.Sprintf("%v is below the minimum %v", v, *p.Min)
	}
	if p.Max != nil && f > *p.Max {
		return fmt.Sprintf("%v is above the maximum %v", v, *p.Max)
	}
	return ""
}
