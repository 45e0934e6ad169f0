package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestReadVersion(t *testing.T) {
	t.Parallel()
	rev := "0123456789abcdef0123456789abcdef01234567"
	vcs := func(modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	tests := []struct {
		name                 string
		ldVersion, ldCommit  string
		bi                   *debug.BuildInfo
		wantVersion, wantRev string
	}{
		{"linker values win", "1.2.3", "abc", &debug.BuildInfo{GoVersion: "go1.99", Main: debug.Module{Version: "v9.9.9"}, Settings: vcs("false")}, "1.2.3", "abc"},
		{"go install of a release", "", "", &debug.BuildInfo{GoVersion: "go1.99", Main: debug.Module{Version: "v1.4.0"}}, "1.4.0", "unknown"},
		{"pseudo-version and revision", "", "", &debug.BuildInfo{GoVersion: "go1.99", Main: debug.Module{Version: "v0.0.0-20261204134700-0123456789ab"}, Settings: vcs("false")}, "0.0.0-20261204134700-0123456789ab", rev},
		{"checkout without module version", "", "", &debug.BuildInfo{GoVersion: "go1.99", Main: debug.Module{Version: "(devel)"}, Settings: vcs("false")}, "0.0.0+0123456789ab", rev},
		{"modified checkout", "", "", &debug.BuildInfo{GoVersion: "go1.99", Main: debug.Module{Version: "(devel)"}, Settings: vcs("true")}, "0.0.0+0123456789ab.dirty", rev + "-dirty"},
		{"nothing known", "", "", &debug.BuildInfo{GoVersion: "go1.99", Main: debug.Module{Version: "(devel)"}}, "devel", "unknown"},
		{"no build information", "", "", nil, "devel", "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := readVersion(tt.ldVersion, tt.ldCommit, tt.bi)
			if v.version != tt.wantVersion || v.commit != tt.wantRev {
				t.Errorf("got version %q commit %q, want %q %q", v.version, v.commit, tt.wantVersion, tt.wantRev)
			}
			wantGo := runtime.Version()
			if tt.bi != nil {
				wantGo = tt.bi.GoVersion
			}
			if v.goVersion != wantGo {
				t.Errorf("go version %q, want %q", v.goVersion, wantGo)
			}
			out := v.String()
			for _, w := range []string{"spf-milter " + tt.wantVersion + "\n", "commit " + tt.wantRev + "\n", "built with " + wantGo + " "} {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// git runs git in dir and returns its trimmed output.
func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	// The clone's commits and tags need an author, whatever the machine's
	// git configuration.
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// buildAndVersion runs scripts/build.sh of the checkout dir and returns
// what the binary's version command prints.
func buildAndVersion(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "spf-milter")
	cmd := exec.Command(filepath.Join(dir, "scripts", "build.sh"))
	cmd.Env = append(os.Environ(), "OUT="+bin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/build.sh: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s version: %v\n%s", bin, err, out)
	}
	return string(out)
}

// TestBuildScriptVersion builds a clean clone of this repository's HEAD
// with the documented command, scripts/build.sh, and checks what "version"
// prints: never devel, the commit, the Go version; then the version of a
// release tag, and the mark of a tree with changes.
func TestBuildScriptVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary three times")
	}
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatal("git is needed to test the build of a checkout")
	}
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skip("not in a git checkout: nothing to clone")
	}
	head := git(t, ".", "rev-parse", "HEAD")
	dir := filepath.Join(t.TempDir(), "src")
	git(t, ".", "clone", "--quiet", "--shared", "--no-checkout", strings.TrimSpace(string(top)), dir)
	git(t, dir, "checkout", "--quiet", head)
	// Tags of the repository would change what describe says; the clone
	// gets its own below.
	if tags := git(t, dir, "tag", "--list"); tags != "" {
		for tag := range strings.FieldsSeq(tags) {
			git(t, dir, "tag", "-d", tag)
		}
	}

	out := buildAndVersion(t, dir)
	want := "spf-milter 0.0.0+" + head[:12] + "\ncommit " + head + "\nbuilt with " + runtime.Version() + " "
	if !strings.HasPrefix(out, want) || strings.Contains(out, "devel") {
		t.Errorf("untagged clean checkout prints\n%s\nwant it to begin with\n%s", out, want)
	}

	git(t, dir, "tag", "-a", "-m", "release", "v1.2.3")
	out = buildAndVersion(t, dir)
	if want := "spf-milter 1.2.3\ncommit " + head + "\n"; !strings.HasPrefix(out, want) {
		t.Errorf("checkout tagged v1.2.3 prints\n%s\nwant it to begin with\n%s", out, want)
	}

	if err := os.WriteFile(filepath.Join(dir, "README.md"), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out = buildAndVersion(t, dir)
	if !regexp.MustCompile(`^spf-milter 1\.2\.3-dirty\ncommit ` + head + `-dirty\n`).MatchString(out) {
		t.Errorf("changed checkout prints\n%s\nwant version 1.2.3-dirty and commit %s-dirty", out, head)
	}
}
