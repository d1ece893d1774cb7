package main

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/ratelimiter/ratelimiter"

// codeMapRow is one row of README.md's code map.
type codeMapRow struct {
	role   string
	mayUse []string // roles besides its own and "shared"
}

// readCodeMap parses the table under "## Code map" in README.md.
func readCodeMap(t *testing.T) map[string]codeMapRow {
	t.Helper()
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Code map\n")
	if !ok {
		t.Fatal(`README.md has no "## Code map" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	rows := map[string]codeMapRow{}
	for line := range strings.Lines(section) {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(line, "|")
		if len(cells) < 5 {
			t.Fatalf("code map row %q: want 4 cells", line)
		}
		pkg := strings.Trim(strings.TrimSpace(cells[1]), "`")
		row := codeMapRow{role: strings.TrimSpace(cells[2])}
		for r := range strings.SplitSeq(cells[3], ",") {
			if r = strings.TrimSpace(r); r != "" {
				row.mayUse = append(row.mayUse, r)
			}
		}
		if _, dup := rows[pkg]; dup {
			t.Fatalf("code map lists %s twice", pkg)
		}
		rows[pkg] = row
	}
	return rows
}

// TestCodeMap holds the import graph to README.md's code map: every
// package of the module has a row, and no package depends, directly or
// through others (go list's Deps, what `go list -deps` prints), on a package
// of a role its row does not allow. So node never pulls in the operator,
// and no production package pulls in a test helper.
func TestCodeMap(t *testing.T) {
	rows := readCodeMap(t)
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}{{range .Deps}} {{.}}{{end}}", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	name := func(path string) (string, bool) {
		if path == module {
			return ".", true
		}
		rest, ok := strings.CutPrefix(path, module+"/")
		return rest, ok
	}
	seen := map[string]bool{}
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		pkg, _ := name(fields[0])
		seen[pkg] = true
		row, ok := rows[pkg]
		if !ok {
			t.Errorf("%s is not in README.md's code map", pkg)
			continue
		}
		for _, dep := range fields[1:] {
			d, ours := name(dep)
			if !ours {
				continue
			}
			drow, ok := rows[d]
			if !ok {
				continue // reported on its own line
			}
			if drow.role != row.role && drow.role != "shared" && !slices.Contains(row.mayUse, drow.role) {
				t.Errorf("%s (%s) depends on %s (%s); its code map row allows only %s", pkg, row.role, d, drow.role, strings.Join(append([]string{row.role, "shared"}, row.mayUse...), ", "))
			}
		}
	}
	for pkg := range rows {
		if !seen[pkg] {
			t.Errorf("README.md's code map lists %s, which go list does not find", pkg)
		}
	}
}
