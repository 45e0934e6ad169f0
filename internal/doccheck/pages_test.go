package doccheck

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func read(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestReadmeIsShort holds README.md to a front page: about 8 KB, the rest
// being in docs/.
func TestReadmeIsShort(t *testing.T) {
	if n := len(read(t, "README.md")); n > 8*1024 {
		t.Errorf("README.md is %d bytes; keep it under 8 KiB and move the rest into docs/", n)
	}
}

// TestReadmeCommands checks that the README's first shell block is the two
// commands (run on defaults, run every test) and that what they run is in
// the repository: the command's main package and an executable test
// script.
func TestReadmeCommands(t *testing.T) {
	m := regexp.MustCompile("(?s)```sh\n(.*?)```").FindStringSubmatch(read(t, "README.md"))
	if m == nil {
		t.Fatal("README.md has no sh block")
	}
	if want := "go run ./cmd/spf-milter serve\nscripts/test.sh\n"; m[1] != want {
		t.Errorf("README.md's first sh block:\n%s\nwant:\n%s", m[1], want)
	}
	if !strings.Contains(read(t, "cmd/spf-milter/main.go"), "package main") {
		t.Error("cmd/spf-milter is not a main package")
	}
	fi, err := os.Stat(filepath.Join(root, "scripts", "test.sh"))
	if err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("scripts/test.sh is not an executable file: %v", err)
	}
}

// TestDocsIndex checks that docs/README.md links every page of docs/ and
// that README.md links the index, so no page is out of a reader's reach.
func TestDocsIndex(t *testing.T) {
	index := map[string]bool{}
	for _, l := range links(read(t, "docs/README.md")) {
		path, _, _ := strings.Cut(l, "#")
		index[path] = true
	}
	pages, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pages {
		name := filepath.Base(p)
		if name != "README.md" && !index[name] {
			t.Errorf("docs/README.md does not link docs/%s", name)
		}
	}
	if !strings.Contains(strings.Join(links(read(t, "README.md")), "\n"), "docs/README.md") {
		t.Error("README.md does not link docs/README.md")
	}
}
