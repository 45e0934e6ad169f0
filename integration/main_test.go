package integration

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// spfMilterBin is the spf-milter binary built from this checkout by
// TestMain, once for the whole package.
var spfMilterBin string

// baseDir is the package's work directory, mode 0755 so that programs
// dropping privileges (Postfix's postfix user) can traverse it; t.TempDir
// makes 0700 directories.
var baseDir string

// raceEnabled is set under "go test -race" (race_test.go).
var raceEnabled bool

// packageCleanups are run by TestMain after every test, last registered
// first: they stop the fixtures shared by the whole package.
var (
	packageCleanupsMu sync.Mutex
	packageCleanups   []func() error
)

// addPackageCleanup registers f to run once all the tests have finished;
// an error from it fails the package.
func addPackageCleanup(f func() error) {
	packageCleanupsMu.Lock()
	defer packageCleanupsMu.Unlock()
	packageCleanups = append(packageCleanups, f)
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

// runMain is TestMain with defers: it builds the binary, runs the tests and
// stops the shared fixtures whatever happened.
func runMain(m *testing.M) int {
	flag.Parse()
	if f := flag.Lookup("test.list"); f != nil && f.Value.String() != "" {
		// Only listing tests (scripts/test.sh looks for fuzz targets):
		// nothing to build.
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "spf-milter-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	baseDir = dir

	// nsd and postfix live in /usr/sbin, which a non-root PATH may lack.
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		if !strings.Contains(":"+os.Getenv("PATH")+":", ":"+d+":") {
			os.Setenv("PATH", os.Getenv("PATH")+":"+d)
		}
	}

	// Under "go test -race" the daemon is built with the race detector
	// too: real MTA traffic and reloads under load are where its races
	// would show. A race makes it exit with status 66, which Stop reports.
	spfMilterBin = filepath.Join(dir, "spf-milter")
	args := []string{"build", "-o", spfMilterBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "github.com/spf-milter/spf-milter/cmd/spf-milter")...)
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "integration: building spf-milter: %v\n%s", err, out)
		return 1
	}

	code := m.Run()

	packageCleanupsMu.Lock()
	cleanups := packageCleanups
	packageCleanups = nil
	packageCleanupsMu.Unlock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		if err := cleanups[i](); err != nil {
			fmt.Fprintln(os.Stderr, "integration: stopping a shared fixture:", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// workDir returns a fresh directory of mode 0755 under the package's work
// directory, removed when the test ends.
func workDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp(baseDir, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())+"-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// freePort returns a loopback port that is free for both TCP and UDP at
// the time of the call (NSD needs both on the same number).
func freePort(t testing.TB) int {
	t.Helper()
	port, err := findFreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// handedOut holds the ports findFreePort has returned: a port is free
// only until its fixture binds it, and parallel fixtures must never be
// given the same one in between (a Postfix whose port a milter took
// accepts connections that never get a greeting).
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: make(map[int]bool)}

// findFreePort is freePort without a test, for the package's fixtures.
func findFreePort() (int, error) {
	handedOut.Lock()
	defer handedOut.Unlock()
	var lastErr error
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		ln.Close()
		if err != nil {
			lastErr = err
			continue
		}
		pc.Close()
		if handedOut.ports[port] {
			lastErr = fmt.Errorf("port %d given out already", port)
			continue
		}
		handedOut.ports[port] = true
		return port, nil
	}
	return 0, fmt.Errorf("no free loopback port for TCP and UDP: %v", lastErr)
}

// debianPackages names the Debian package providing each program the
// tests run, for the skip message.
var debianPackages = map[string]string{
	"nsd":               "nsd",
	"nsd-checkconf":     "nsd",
	"nsd-checkzone":     "nsd",
	"postfix":           "postfix",
	"postconf":          "postfix",
	"swaks":             "swaks",
	"dig":               "dnsutils",
	"go":                "golang",
	"unshare":           "util-linux",
	"mount":             "mount",
	"m4":                "m4",
	"opendmarc":         "opendmarc",
	"spamassassin":      "spamassassin",
	"docker-compose":    "docker-compose",
	"unbound-checkconf": "unbound",
	"unbound-control":   "unbound",
}

// need skips the test when one of programs is not on PATH, naming the
// Debian packages to install, or fails it in CI (CI=true), where
// scripts/test.sh must have installed them.
func need(t testing.TB, programs ...string) {
	t.Helper()
	var missing, pkgs []string
	seen := map[string]bool{}
	for _, p := range programs {
		if _, err := exec.LookPath(p); err == nil {
			continue
		}
		missing = append(missing, p)
		pkg := debianPackages[p]
		if pkg == "" {
			pkg = p
		}
		if !seen[pkg] {
			seen[pkg] = true
			pkgs = append(pkgs, pkg)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("missing %s: install the Debian packages %s (scripts/test.sh does, as root)",
		strings.Join(missing, ", "), strings.Join(pkgs, " "))
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}
