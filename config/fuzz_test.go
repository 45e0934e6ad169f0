package config

import (
	"errors"
	"strings"
	"testing"
)

// billionLaughs is the YAML alias bomb: ten levels of lists of ten aliases
// of the level below, 10^10 leaves once expanded. yaml.v3 keeps aliases as
// pointers in a node tree, so only what walks the tree can expand them.
func billionLaughs(useAt string) string {
	var b strings.Builder
	b.WriteString("a: &a [x,x,x,x,x,x,x,x,x,x]\n")
	prev := "a"
	for _, n := range "bcdefghij" {
		b.WriteString(string(n) + ": &" + string(n) + " [" + strings.Repeat("*"+prev+",", 9) + "*" + prev + "]\n")
		prev = string(n)
	}
	if useAt != "" {
		b.WriteString(useAt + ": *j\n")
	}
	return b.String()
}

// TestParseHostileStructures feeds Parse the YAML shapes that make naive
// loaders explode (alias bombs, deep nesting, huge scalars, huge lists):
// each is refused with its own problem, every problem is one short line,
// and their number stays small whatever the expanded size would be.
func TestParseHostileStructures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		file string
		// want is a fragment of one of the problems.
		want string
		// maxProblems bounds the problems reported.
		maxProblems int
	}{
		{"alias bomb under unknown keys", billionLaughs(""), `f.yaml:10: j: unknown key`, 10},
		{"alias bomb as a list", billionLaughs("trusted_networks"), `trusted_networks: bad value "[[[[[[[[`, 20},
		{"alias bomb as a section", billionLaughs("dns"), `dns: bad value "[[[[[[[[[[`, 11},
		{"list holding itself", "trusted_networks: &x [*x]\n", `trusted_networks: bad value "[[[[[[[[[[`, 1},
		{"section holding itself", "policy: &x {mailfrom: *x, helo: *x}\n", `policy.mailfrom.mailfrom: unknown key`, 4},
		{"deep flow nesting", "x: " + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + "\n", `YAML syntax error: exceeded max depth of 10000`, 1},
		{"deep mapping nesting", strings.Repeat("{a: ", 20000) + "1" + strings.Repeat("}", 20000) + "\n", `YAML syntax error: exceeded max depth of 10000`, 1},
		{"huge count", "dns: {cache_size: " + strings.Repeat("9", 100000) + "}\n", `dns.cache_size: bad value "9999999999`, 1},
		{"huge duration", "dns: {timeout: " + strings.Repeat("9", 100000) + "h}\n", `dns.timeout: bad value "9999999999`, 1},
		{"huge key", strings.Repeat("k", 100000) + ": 1\n", `YAML syntax error`, 1},
		{"many anchors as the root", strings.Repeat("- &a x\n", 10000), "the file must be a mapping of keys", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse("f.yaml", []byte(tt.file))
			var cerr *Error
			if !errors.As(err, &cerr) || len(cerr.Problems) == 0 {
				t.Fatalf("Parse: %v, want problems", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("problems:\n%.2000s\nwant one containing %q", err, tt.want)
			}
			if n := len(cerr.Problems); n > tt.maxProblems {
				t.Errorf("%d problems, want at most %d", n, tt.maxProblems)
			}
			for _, p := range cerr.Problems {
				if s := p.String(); len(s) > 600 || strings.ContainsAny(s, "\r\n") {
					t.Errorf("problem of %d bytes, or not one line: %.200q", len(s), s)
				}
			}
		})
	}
}
