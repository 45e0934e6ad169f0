package config

import (
	"bufio"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// update rewrites the key table of docs/configuration.md from the schema:
// go test ./config -run TestReference -update
var update = flag.Bool("update", false, "rewrite the key table of docs/configuration.md from the schema")

// The lines around the generated key table of the reference.
const (
	tableStart = "<!-- The table below is generated from config/schema.go: go test ./config -run TestReference -update -->"
	tableEnd   = "<!-- End of the generated table. -->"
)

// flowText writes a node on one line, as a value is written by hand in the
// file.
func flowText(t *testing.T, n *yaml.Node) string {
	t.Helper()
	var flow func(n *yaml.Node) *yaml.Node
	flow = func(n *yaml.Node) *yaml.Node {
		c := *n
		if c.Kind == yaml.MappingNode || c.Kind == yaml.SequenceNode {
			c.Style = yaml.FlowStyle
			c.Content = make([]*yaml.Node, len(n.Content))
			for i, sub := range n.Content {
				c.Content[i] = flow(sub)
			}
		}
		return &c
	}
	out, err := yaml.Marshal(flow(n))
	if err != nil {
		t.Fatalf("encoding %v: %v", n, err)
	}
	return strings.TrimSuffix(string(out), "\n")
}

// defaultText is a setting's default as the reference and the example
// show it.
func defaultText(t *testing.T, s *setting) string {
	if s.defaultDoc != "" {
		return s.defaultDoc
	}
	return "`" + flowText(t, s.print(Default())) + "`"
}

// referenceRow is the reference's table row of s.
func referenceRow(t *testing.T, s *setting) string {
	return "| `" + s.key + "` | " + s.kind + " | " + defaultText(t, s) + " | " + s.allowed + " | " + s.doc + " |"
}

// referenceTable is the reference's key table, generated from the schema.
func referenceTable(t *testing.T) string {
	lines := []string{
		tableStart,
		"",
		"| Section | What it holds |",
		"| --- | --- |",
	}
	for _, sec := range sections {
		lines = append(lines, "| `"+sec.name+"` | "+sec.doc+" |")
	}
	lines = append(lines,
		"",
		"| Key | Type | Default | Allowed | Meaning |",
		"| --- | --- | --- | --- | --- |",
	)
	for i := range schema {
		lines = append(lines, referenceRow(t, &schema[i]))
	}
	return strings.Join(append(lines, "", tableEnd), "\n")
}

// tableRow reads the key cell of a row of the reference's table.
var tableRow = regexp.MustCompile("^\\| `([a-z_.]+)` \\|")

// TestReference holds docs/configuration.md to the schema: its table has
// one row per key, in schema order, with the key's type, true default,
// allowed form and meaning, so that the reference cannot drift from what
// the loader does.
func TestReference(t *testing.T) {
	path := filepath.Join("..", "docs", "configuration.md")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	start, end := strings.Index(text, tableStart), strings.Index(text, tableEnd)
	if start < 0 || end < start {
		t.Fatalf("%s: no generated table between %q and %q", path, tableStart, tableEnd)
	}
	want := referenceTable(t)
	got := text[start : end+len(tableEnd)]
	if *update {
		if got != want {
			if err := os.WriteFile(path, []byte(text[:start]+want+text[end+len(tableEnd):]), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	rows := map[string]string{}
	var order []string
	_, keyRows, _ := strings.Cut(got, "| Key |")
	for line := range strings.SplitSeq(keyRows, "\n") {
		if m := tableRow.FindStringSubmatch(line); m != nil {
			if _, dup := rows[m[1]]; dup {
				t.Errorf("%s: key %s has two rows", path, m[1])
			}
			rows[m[1]] = line
			order = append(order, m[1])
		}
	}
	var keys []string
	for i := range schema {
		s := &schema[i]
		keys = append(keys, s.key)
		switch row, ok := rows[s.key]; {
		case !ok:
			t.Errorf("%s: no row for key %s", path, s.key)
		case row != referenceRow(t, s):
			t.Errorf("%s: row of %s is\n%s\nwant\n%s", path, s.key, row, referenceRow(t, s))
		}
	}
	for _, k := range order {
		if !slices.Contains(keys, k) {
			t.Errorf("%s: row for %s, which is not a key", path, k)
		}
	}
	if got != want && !t.Failed() {
		t.Errorf("%s: the table is not as generated (order or layout); run go test ./config -run TestReference -update", path)
	}
}

// commentedKey finds a commented-out key ("# key: value") in the example.
var commentedKey = regexp.MustCompile(`^( *)# ([a-z_]+):`)

// TestExampleNamesEveryKey holds examples/config.yaml to the schema: each
// key is set in it to its default, or, when the default depends on the
// machine, shown commented out after a comment saying the default.
func TestExampleNamesEveryKey(t *testing.T) {
	t.Parallel()
	path := filepath.Join("..", "examples", "config.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	active := map[string]*yaml.Node{}
	root := doc.Content[0]
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i].Value, root.Content[i+1]
		active[k] = v
		if v.Kind == yaml.MappingNode && slices.ContainsFunc(sections, func(s section) bool { return s.name == k }) {
			for j := 0; j+1 < len(v.Content); j += 2 {
				active[k+"."+v.Content[j].Value] = v.Content[j+1]
			}
		}
	}

	// The commented-out keys, with their section and the comment above.
	commented := map[string]string{}
	var sec string
	var comment []string
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		line := sc.Text()
		if m := commentedKey.FindStringSubmatch(line); m != nil {
			key := m[2]
			if m[1] != "" {
				key = sec + "." + key
			}
			commented[key] = strings.Join(comment, " ")
		}
		switch {
		case strings.HasPrefix(strings.TrimSpace(line), "#"):
			comment = append(comment, strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "#")))
		case line != "" && line[0] != ' ':
			sec, _, _ = strings.Cut(line, ":")
			comment = nil
		default:
			comment = nil
		}
	}

	for i := range schema {
		s := &schema[i]
		if s.defaultDoc != "" {
			c, ok := commented[s.key]
			switch {
			case !ok:
				t.Errorf("%s: %s, whose default is %s, is not shown commented out", path, s.key, s.defaultDoc)
			case !strings.Contains(c, "Default: "+s.defaultDoc+"."):
				t.Errorf("%s: the comment above %s does not say %q", path, s.key, "Default: "+s.defaultDoc+".")
			}
			if _, ok := active[s.key]; ok {
				t.Errorf("%s: %s is set, but its default depends on the machine", path, s.key)
			}
			continue
		}
		v, ok := active[s.key]
		if !ok {
			t.Errorf("%s: %s is not set to its default %s", path, s.key, defaultText(t, s))
			continue
		}
		l := &loader{file: path, cfg: Default()}
		s.parse(l, s.key, v)
		if len(l.problems) > 0 {
			t.Errorf("%s: %s: %v", path, s.key, (&Error{Problems: l.problems}).Error())
			continue
		}
		if got, want := flowText(t, s.print(l.cfg)), flowText(t, s.print(Default())); got != want {
			t.Errorf("%s: %s is %s, but its default is %s", path, s.key, got, want)
		}
	}
	for key := range active {
		if !slices.ContainsFunc(schema, func(s setting) bool { return s.key == key }) &&
			!slices.ContainsFunc(sections, func(s section) bool { return s.name == key }) {
			t.Errorf("%s: %s is not a key", path, key)
		}
	}
}

// TestSchemaShape checks what the loader, YAML() and the reference take
// for granted of the schema.
func TestSchemaShape(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for i := range schema {
		s := &schema[i]
		if seen[s.key] {
			t.Errorf("%s is in the schema twice", s.key)
		}
		seen[s.key] = true
		if strings.Count(s.key, ".") > 1 {
			t.Errorf("%s: a section holds keys, not sections", s.key)
		}
		if sec := s.section(); sec != "" && seen[sec] {
			t.Errorf("%s: section %s is also a key", s.key, sec)
		}
		for name, v := range map[string]string{"kind": s.kind, "allowed": s.allowed, "doc": s.doc} {
			if v == "" || strings.Contains(v, "|") {
				t.Errorf("%s: %s %q is empty or would break the reference's table", s.key, name, v)
			}
		}
	}
	for _, sec := range sections {
		if !slices.ContainsFunc(layout, func(e entry) bool { return e.section != nil && e.name == sec.name }) {
			t.Errorf("section %s has no key", sec.name)
		}
	}
}
