package config

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The lines around the generated key list of the spf-milter.yaml(5) man
// page, an mdoc source.
const (
	manStart = `.\" The key list below is generated from config/schema.go: go test ./config -run TestManPage -update`
	manEnd   = `.\" End of the generated key list.`
)

// sentenceEnd is where a sentence ends inside a line: roff wants each
// sentence on a line of its own.
var sentenceEnd = regexp.MustCompile(`([.?!]) +([A-Z(])`)

// manWidth is the longest line the generated source has, as mandoc's lint
// wants.
const manWidth = 80

// roffText turns one paragraph of plain text into text lines of a roff
// source: a backslash escaped, each sentence on its own line, lines
// wrapped at manWidth, and a line that would start with a control
// character guarded.
func roffText(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = sentenceEnd.ReplaceAllString(s, "$1\n$2")
	var lines []string
	for sentence := range strings.SplitSeq(s, "\n") {
		line := ""
		for _, w := range strings.Fields(sentence) {
			if line != "" && len(line)+1+len(w) > manWidth {
				lines = append(lines, line)
				line = ""
			}
			if line != "" {
				line += " "
			}
			line += w
		}
		lines = append(lines, line)
	}
	for i, l := range lines {
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
			lines[i] = `\&` + l
		}
	}
	return strings.Join(lines, "\n")
}

// roffArg is s as one quoted argument of a macro line, where a macro's
// name is never looked for.
func roffArg(s string) string {
	return `"` + strings.NewReplacer(`\`, `\e`, `"`, `\(dq`).Replace(s) + `"`
}

// manDefault is a setting's default as the man page shows it: literal
// when it is a value of the file, plain text when it stands for one.
func manDefault(t *testing.T, s *setting) string {
	if s.defaultDoc != "" {
		return roffText("Default: " + s.defaultDoc + ".")
	}
	return "Default:\n.Ql " + roffArg(flowText(t, s.print(Default()))) + " ."
}

// manKeyList is the man page's list of sections and keys, generated from
// the schema.
func manKeyList(t *testing.T) string {
	lines := []string{manStart, ".Ss Sections", ".Bl -tag -width Ds"}
	for _, sec := range sections {
		lines = append(lines, ".It Ic "+sec.name, roffText(sec.doc))
	}
	lines = append(lines, ".El", ".Ss Keys", ".Bl -tag -width Ds")
	for i := range schema {
		s := &schema[i]
		lines = append(lines,
			".It Ic "+s.key+" Pq "+roffArg(s.kind),
			roffText(s.doc),
			manDefault(t, s),
			roffText("Allowed: "+s.allowed+"."),
		)
	}
	return strings.Join(append(lines, ".El", manEnd), "\n")
}

// TestManPage holds the key list of docs/man/spf-milter.yaml.5 to the
// schema, as TestReference holds docs/configuration.md: every key, in
// schema order, with its type, default, allowed form and meaning.
func TestManPage(t *testing.T) {
	path := filepath.Join("..", "docs", "man", "spf-milter.yaml.5")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	start, end := strings.Index(text, manStart), strings.Index(text, manEnd)
	if start < 0 || end < start {
		t.Fatalf("%s: no generated key list between %q and %q", path, manStart, manEnd)
	}
	want := manKeyList(t)
	got := text[start : end+len(manEnd)]
	if *update {
		if got != want {
			if err := os.WriteFile(path, []byte(text[:start]+want+text[end+len(manEnd):]), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	for i := range schema {
		if !strings.Contains(got, "\n.It Ic "+schema[i].key+" Pq ") {
			t.Errorf("%s: no entry for key %s", path, schema[i].key)
		}
	}
	if got != want {
		t.Errorf("%s: the key list is not as generated from the schema; run go test ./config -run TestManPage -update", path)
	}
}

func TestRoffText(t *testing.T) {
	for in, want := range map[string]string{
		`plain`:                       `plain`,
		`One. Two (three).`:           "One.\nTwo (three).",
		`a\b`:                         `a\eb`,
		`end. .dot starts`:            "end. .dot starts",
		`First. 'quoted' second`:      "First. 'quoted' second",
		`A 5s or 1m30s. "" for none.`: "A 5s or 1m30s. \"\" for none.",
	} {
		if got := roffText(in); got != want {
			t.Errorf("roffText(%q) = %q, want %q", in, got, want)
		}
	}
	if got := roffText("x.\n.y"); got != "x.\n\\&.y" {
		t.Errorf("a line starting with a dot is not guarded: %q", got)
	}
	long := strings.Repeat("word ", 16) + ".dot"
	got := roffText(long)
	for l := range strings.SplitSeq(got, "\n") {
		if len(l) > manWidth {
			t.Errorf("line longer than %d: %q", manWidth, l)
		}
	}
	if !strings.HasSuffix(got, "\n\\&.dot") || strings.Join(strings.Fields(strings.ReplaceAll(got, `\&`, "")), " ") != strings.TrimSpace(long) {
		t.Errorf("wrapping %q lost or left unguarded a word: %q", long, got)
	}
}
