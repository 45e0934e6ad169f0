package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Load reads and validates the config file at path. A file that cannot be
// read gives ReadFile's error (errors.Is(err, fs.ErrNotExist) tells a
// missing file; ErrNotRegular and ErrTooLarge a file refused unread); a
// file with problems gives an *Error listing them all.
func Load(path string) (*Config, error) {
	data, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// Parse validates data, the content of the config file name (used in the
// error lines only), and returns the configuration with defaults filled in.
// An empty file gives the defaults. On any problem it returns an *Error
// with every problem found.
func Parse(name string, data []byte) (*Config, error) {
	l := &loader{file: name, cfg: Default()}
	l.parse(data)
	if len(l.problems) > 0 {
		// The walk reports in document order, but a second document is
		// found before the first is walked; a stable sort keeps the
		// order of problems on one line.
		slices.SortStableFunc(l.problems, func(a, b Problem) int { return cmp.Compare(a.Line, b.Line) })
		return nil, &Error{Problems: l.problems}
	}
	return l.cfg, nil
}

// loader walks the YAML node tree into a Config, collecting problems
// instead of stopping at the first, so that one run shows them all.
type loader struct {
	file     string
	cfg      *Config
	problems []Problem

	authservGiven, receiverGiven bool
	// whyLinks are the replies that use WhyURLToken, and whyListen the
	// why.listen value: both are checked against other keys once the
	// whole file is read.
	whyLinks  []whyLink
	whyListen *yaml.Node
	// whyURLBad is set when why.url has a bad value, which is reported on
	// its own rather than again at each reply that needs it.
	whyURLBad bool
}

// whyLink is a reply template that links to the why page.
type whyLink struct {
	key string
	v   *yaml.Node
}

// valueProblem records a bad value at node n.
func (l *loader) valueProblem(n *yaml.Node, key, reason, allowed string) {
	l.problems = append(l.problems, Problem{
		File: l.file, Line: n.Line, Key: key, Value: render(n), Reason: reason, Allowed: allowed,
	})
}

// keyProblem records a problem with the key itself at node k.
func (l *loader) keyProblem(k *yaml.Node, key, reason, allowed string) {
	l.problems = append(l.problems, Problem{
		File: l.file, Line: k.Line, Key: key, Reason: reason, Allowed: allowed, keyOnly: true,
	})
}

// fileProblem records a problem with the file as a whole.
func (l *loader) fileProblem(line int, reason string) {
	l.problems = append(l.problems, Problem{File: l.file, Line: line, Reason: reason, keyOnly: true})
}

// yamlLine finds the line number in an error of the YAML parser
// ("yaml: line 3: did not find expected key").
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

func (l *loader) parse(data []byte) {
	if line, reason := checkText(data); reason != "" {
		// The YAML parser reports these without a line number.
		l.fileProblem(line, reason)
		return
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	err := dec.Decode(&doc)
	if errors.Is(err, io.EOF) {
		return // nothing but comments and blank lines: the defaults
	}
	if err != nil {
		l.syntaxProblem(data, err)
		return
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		l.fileProblem(extra.Line, "a second YAML document: the file must hold one")
	case !errors.Is(err, io.EOF):
		l.syntaxProblem(data, err)
	}
	if len(doc.Content) == 0 {
		return
	}
	root := resolve(doc.Content[0])
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return // "---" alone, or "~": the defaults
	}
	l.mapping(root, "", l.topFields())
	l.checkWhy()
	// Without either, both are the host name already, from Default.
	if l.authservGiven && !l.receiverGiven {
		l.cfg.Receiver = l.cfg.AuthservID
	}
}

// syntaxProblem records an error of the YAML parser. The line the parser
// names is where the enclosing block or flow collection started, or none
// at all on the first line; the line after the longest prefix of the file
// that still parses is where the text went wrong, and that is the one
// reported.
func (l *loader) syntaxProblem(data []byte, err error) {
	msg, line := err.Error(), 1
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = msg[len(m[0]):]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	budget := maxSyntaxScan
	for k, end := len(lines)-1, len(data); k >= 0 && budget >= end; k-- {
		end -= len(lines[k])
		budget -= end
		if parses(data[:end]) {
			line = k + 1
			break
		}
	}
	l.fileProblem(line, "YAML syntax error: "+msg)
}

// maxSyntaxScan bounds the bytes parsed in the search for the line of a
// syntax error, as it parses prefix after prefix: ample for any real config
// file, and no more than a moment for a hostile one, which then gets the
// parser's own line number.
const maxSyntaxScan = 4 << 20

// parses reports whether data is well-formed YAML.
func parses(data []byte) bool {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		switch err := dec.Decode(&n); {
		case errors.Is(err, io.EOF):
			return true
		case err != nil:
			return false
		}
	}
}

// checkText finds what the YAML parser refuses without saying where: bytes
// that are not UTF-8 and control characters. It returns the 1-based line
// and a reason, or "" when the text is fine.
func checkText(data []byte) (int, string) {
	line := 1
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			return line, fmt.Sprintf("byte 0x%02x is not UTF-8 (the file must be UTF-8 text)", data[i])
		case r == '\n':
			line++
		case r == '\t' || r == '\r' || r == 0xFEFF:
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			return line, fmt.Sprintf("control character %U (the file must be text)", r)
		}
		i += size
	}
	return 0, ""
}

// resolve follows an alias to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// render shows a node as it could be written on one line. It stops soon
// after the length an error line shows, so that aliases nested into a
// "billion laughs" cannot make it run for ever.
func render(n *yaml.Node) string {
	const max = 100
	var b strings.Builder
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if b.Len() > max {
			return
		}
		n = resolve(n)
		switch n.Kind {
		case yaml.SequenceNode, yaml.MappingNode:
			open, end, step := "[", "]", 1
			if n.Kind == yaml.MappingNode {
				open, end, step = "{", "}", 2
			}
			b.WriteString(open)
			for i := 0; i+step-1 < len(n.Content) && b.Len() <= max; i += step {
				if i > 0 {
					b.WriteString(", ")
				}
				walk(n.Content[i])
				if step == 2 {
					b.WriteString(": ")
					walk(n.Content[i+1])
				}
			}
			b.WriteString(end)
		default:
			if n.Tag != "!!null" {
				b.WriteString(n.Value)
			}
		}
	}
	walk(n)
	return b.String()
}

// kindName names what a node is, for a wrong-type message.
func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	}
	if n.Tag == "!!null" {
		return "empty"
	}
	return "a single value"
}

// topFields are the keys of the file itself, as the schema lays them out.
func (l *loader) topFields() []field {
	fields := make([]field, len(layout))
	for i, e := range layout {
		if e.setting != nil {
			fields[i] = l.settingField(e.setting)
			continue
		}
		keys := e.keys
		fields[i] = field{e.name, func(key string, v *yaml.Node) {
			sub := make([]field, len(keys))
			for j, s := range keys {
				sub[j] = l.settingField(s)
			}
			l.mapping(v, key, sub)
		}}
	}
	return fields
}

// settingField is the field of one setting within its mapping.
func (l *loader) settingField(s *setting) field {
	return field{s.name(), func(key string, v *yaml.Node) { s.parse(l, key, v) }}
}

// field is one key of a mapping and what to do with its value.
type field struct {
	name string
	set  func(key string, v *yaml.Node)
}

// mapping walks the mapping n at path, giving each known key's value to
// its field. A null value stands for an empty mapping, so that a section
// whose keys are all commented out keeps its defaults.
func (l *loader) mapping(n *yaml.Node, path string, fields []field) {
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.name
	}
	allowed := strings.Join(names, ", ")
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	switch {
	case n.Kind != yaml.MappingNode && path == "":
		l.valueProblem(n, path, "the file must be a mapping of keys such as listen:", "")
		return
	case n.Kind != yaml.MappingNode:
		l.valueProblem(n, path, kindName(n)+", where a mapping of keys is needed", allowed)
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		name := render(k)
		key := join(path, name)
		if k.Kind != yaml.ScalarNode {
			l.keyProblem(k, key, "a key must be a single word", allowed)
			continue
		}
		if first, dup := seen[name]; dup {
			l.keyProblem(k, key, fmt.Sprintf("duplicate key (first at line %d)", first), "")
			continue
		}
		seen[name] = k.Line
		idx := slices.Index(names, name)
		if idx < 0 {
			reason := "unknown key"
			if s := suggest(name, names); s != "" {
				reason += fmt.Sprintf("; did you mean %q?", s)
			}
			l.keyProblem(k, key, reason, allowed)
			continue
		}
		fields[idx].set(key, v)
	}
}

// join makes a dotted key path.
func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// suggest returns the known name closest to a misspelt one, if any is
// close enough to be a likely typo.
func suggest(name string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if d := editDistance(strings.ToLower(name), k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// checkWhy checks the why keys against the rest of the file: a link in a
// reply needs why.url, and the page's own listener cannot be the metrics
// one (leaving why.listen empty shares it).
func (l *loader) checkWhy() {
	c := l.cfg
	if c.Why.URL == "" && !l.whyURLBad {
		for _, w := range l.whyLinks {
			l.valueProblem(w.v, w.key, WhyURLToken+" needs why.url, the address of the page", "")
		}
	}
	if l.whyListen != nil && c.Why.Listen != "" && sameHTTPListen(c.Why.Listen, c.Metrics.Listen) {
		l.valueProblem(l.whyListen, "why.listen", "the same as metrics.listen; leave why.listen empty to serve the page there", allowedHTTPListen)
	}
}
