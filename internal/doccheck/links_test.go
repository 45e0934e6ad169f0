package doccheck

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// root is the repository's root, seen from this package's directory.
const root = "../.."

// pages lists the Markdown pages whose links are checked: the root's and
// docs/'s.
func pages(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, pattern := range []string{"*.md", filepath.Join("docs", "*.md")} {
		m, err := filepath.Glob(filepath.Join(root, pattern))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m...)
	}
	if len(out) == 0 {
		t.Fatal("no Markdown pages found")
	}
	return out
}

var (
	// inlineLink matches [text](target) and ![alt](target), with an
	// optional title after the target.
	inlineLink = regexp.MustCompile(`!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)
	// refLink matches a reference definition: [label]: target.
	refLink = regexp.MustCompile(`(?m)^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$`)
	// fence opens or closes a fenced code block.
	fence = regexp.MustCompile("^\\s{0,3}(```|~~~)")
	// codeSpan is inline code, whose brackets are not links.
	codeSpan = regexp.MustCompile("`[^`]*`")
	// heading is an ATX heading.
	heading = regexp.MustCompile(`^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$`)
)

// prose returns the page's lines outside fenced code blocks, with inline
// code removed.
func prose(text string) []string {
	var out []string
	inFence := false
	for _, line := range strings.Split(text, "\n") {
		if fence.MatchString(line) {
			inFence = !inFence
			continue
		}
		if inFence {
			continue
		}
		out = append(out, codeSpan.ReplaceAllString(line, ""))
	}
	return out
}

// links returns the targets of the page's links, in order.
func links(text string) []string {
	var out []string
	for _, line := range prose(text) {
		for _, m := range inlineLink.FindAllStringSubmatch(line, -1) {
			out = append(out, m[1])
		}
		for _, m := range refLink.FindAllStringSubmatch(line, -1) {
			out = append(out, m[1])
		}
	}
	return out
}

// slug is the anchor GitHub gives a heading: lower case, punctuation other
// than '-' and '_' dropped, spaces made '-'.
func slug(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_':
			b.WriteRune(r)
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r > 127:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// anchors returns the anchors of the page's headings; a repeated heading
// gets -1, -2, ... as on GitHub.
func anchors(text string) map[string]bool {
	out := map[string]bool{}
	seen := map[string]int{}
	for _, line := range prose(text) {
		m := heading.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		s := slug(m[1])
		if n := seen[s]; n > 0 {
			out[s+"-"+strconv.Itoa(n)] = true
		} else {
			out[s] = true
		}
		seen[s]++
	}
	return out
}

// external reports whether a link target leaves the repository: a URL with
// a scheme, or a mail address.
func external(target string) bool {
	return scheme.MatchString(target) || strings.HasPrefix(target, "//")
}

var scheme = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)

// problems returns what is wrong with the relative links of one page.
func problems(page, text string) []string {
	var out []string
	for _, target := range links(text) {
		if external(target) {
			continue
		}
		path, frag, _ := strings.Cut(target, "#")
		file := page
		if path != "" {
			if strings.HasPrefix(path, "/") {
				out = append(out, target+": absolute path; links must be relative")
				continue
			}
			file = filepath.Join(filepath.Dir(page), filepath.FromSlash(path))
			if _, err := os.Stat(file); err != nil {
				out = append(out, target+": no such file")
				continue
			}
		}
		if frag == "" || !strings.HasSuffix(file, ".md") {
			continue
		}
		body := text
		if path != "" {
			b, err := os.ReadFile(file)
			if err != nil {
				out = append(out, target+": "+err.Error())
				continue
			}
			body = string(b)
		}
		if !anchors(body)[frag] {
			out = append(out, target+": no heading with anchor #"+frag)
		}
	}
	return out
}

// TestRelativeLinks checks every relative link of every page.
func TestRelativeLinks(t *testing.T) {
	for _, page := range pages(t) {
		b, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, page)
		for _, p := range problems(page, string(b)) {
			t.Errorf("%s: %s", filepath.ToSlash(rel), p)
		}
	}
}

// TestProblemsFindsBrokenLinks holds the checker itself to account: on a
// page with a good and a bad link of each kind it reports exactly the bad
// ones.
func TestProblemsFindsBrokenLinks(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "docs"), 0o755); err != nil {
		t.Fatal(err)
	}
	other := "# Other page\n\n## Signals and reload\n\n## Signals and reload\n"
	if err := os.WriteFile(filepath.Join(dir, "docs", "other.md"), []byte(other), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pic.png"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	page := filepath.Join(dir, "README.md")
	text := strings.Join([]string{
		"# Top",
		"[good](docs/other.md) [good anchor](docs/other.md#signals-and-reload)",
		"[second anchor](docs/other.md#signals-and-reload-1) ![img](pic.png) [self](#top)",
		"[web](https://example.org/missing.md) [mail](mailto:a@example.org)",
		"[missing](docs/missing.md) ![missing img](missing.png \"title\")",
		"[bad anchor](docs/other.md#no-such) [bad self](#nowhere) [abs](/etc/passwd)",
		"`[not a link](code.md)`",
		"```",
		"[not a link either](fenced.md)",
		"```",
		"[ref]: docs/gone.md",
	}, "\n")
	got := problems(page, text)
	want := []string{
		"docs/missing.md: no such file",
		"missing.png: no such file",
		"docs/other.md#no-such: no heading with anchor #no-such",
		"#nowhere: no heading with anchor #nowhere",
		"/etc/passwd: absolute path; links must be relative",
		"docs/gone.md: no such file",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestSlug(t *testing.T) {
	for in, want := range map[string]string{
		"Signals, reload and drain":      "signals-reload-and-drain",
		"`spf-milter check`":             "spf-milter-check",
		"Scaling past one host":          "scaling-past-one-host",
		"OpenDMARC (Debian's 1.4.2)":     "opendmarc-debians-142",
		"What the filters after us read": "what-the-filters-after-us-read",
	} {
		if got := slug(in); got != want {
			t.Errorf("slug(%q) = %q, want %q", in, got, want)
		}
	}
}
