package policy_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/spf-milter/spf-milter/"

// TestPackageGraph holds the packages to the layering
// cmd -> {milter, why, decisions} -> policy -> {config, spf}: a package
// may import those below it, never those above it or beside it, so that
// the decision stays written once, here, and the decision log and the
// why page do not drag the milter protocol or Prometheus in with them.
// Tests are not held to it: their DNS helpers may import anything.
func TestPackageGraph(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list the packages with")
	}
	cmd := exec.Command(goBin, "list", "-f", "{{.ImportPath}}|{{join .Imports \",\"}}|{{join .Deps \",\"}}", "./...")
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	imports, deps := map[string][]string{}, map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "|")
		if len(f) != 3 {
			t.Fatalf("go list line %q", line)
		}
		name := strings.TrimPrefix(f[0], module)
		imports[name], deps[name] = strings.Split(f[1], ","), strings.Split(f[2], ",")
	}

	tests := []struct {
		pkg string
		// uses are module packages pkg must import itself; never are
		// packages (of the module or not) it must not depend on at all.
		uses, never []string
	}{
		{"cmd/spf-milter", []string{"milter", "why", "decisions"}, nil},
		{"milter", []string{"policy"}, []string{"why", "decisions", "cmd/spf-milter"}},
		{"why", []string{"policy"}, []string{"milter", "decisions", "cmd/spf-milter",
			"github.com/emersion/go-milter"}},
		{"decisions", []string{"policy"}, []string{"milter", "why", "cmd/spf-milter",
			"github.com/emersion/go-milter", "github.com/prometheus/client_golang/prometheus"}},
		{"policy", []string{"config", "spf"}, []string{"milter", "why", "decisions", "cmd/spf-milter",
			"github.com/emersion/go-milter", "github.com/prometheus/client_golang/prometheus"}},
		{"config", []string{"spf"}, []string{"policy", "milter", "why", "decisions", "cmd/spf-milter"}},
		{"spf", nil, []string{"config", "policy", "milter", "why", "decisions", "cmd/spf-milter"}},
	}
	for _, tt := range tests {
		t.Run(tt.pkg, func(t *testing.T) {
			if _, ok := deps[tt.pkg]; !ok {
				t.Fatalf("go list does not name the package %s", tt.pkg)
			}
			for _, u := range tt.uses {
				if !slices.Contains(imports[tt.pkg], module+u) {
					t.Errorf("%s does not import %s", tt.pkg, u)
				}
			}
			for _, n := range tt.never {
				path := n
				if !strings.Contains(n, ".") {
					path = module + n
				}
				if slices.Contains(deps[tt.pkg], path) {
					t.Errorf("%s depends on %s", tt.pkg, n)
				}
			}
		})
	}
}
