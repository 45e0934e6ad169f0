package integration

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// No Docker engine runs here: the deployment files are checked with the
// tools that read them (docker-compose, the spf-milter binary, NSD's and
// Postfix's checkers, systemd-analyze), and the demo's zone is served by a
// real NSD to show that it gives the results the demo promises.

// repoRoot is the checkout's top directory; go test runs in the package's.
const repoRoot = ".."

// TestComposeConfig validates docker-compose.yml with Debian's
// docker-compose, as "docker compose up" would read it.
func TestComposeConfig(t *testing.T) {
	if _, err := exec.LookPath("docker-compose"); err != nil {
		missingPrereq(t, "missing docker-compose: install the Debian package docker-compose")
	}
	cmd := exec.Command("docker-compose", "-f", "docker-compose.yml", "config", "-q")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker-compose -f docker-compose.yml config -q: %v\n%s", err, out)
	}
}

// composeFile is the part of docker-compose.yml the wiring checks read.
type composeFile struct {
	Services map[string]struct {
		Build   any      `yaml:"build"` // a context path, or {context, dockerfile}
		Volumes []string `yaml:"volumes"`
		Ports   []string `yaml:"ports"`
		Command any      `yaml:"command"`
		// Networks maps a network to the service's settings on it.
		Networks map[string]struct {
			IPv4Address string `yaml:"ipv4_address"`
		} `yaml:"networks"`
	} `yaml:"services"`
	Networks map[string]struct {
		IPAM struct {
			Config []struct {
				Subnet string `yaml:"subnet"`
			} `yaml:"config"`
		} `yaml:"ipam"`
	} `yaml:"networks"`
}

// TestComposeWiring checks that the files docker-compose.yml names exist
// and agree with each other: the milter's config names the dns service's
// fixed IP as its resolver and listens where Postfix's smtpd_milters
// points, and every fixed IP is in the network's subnet.
func TestComposeWiring(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var cf composeFile
	if err := yaml.Unmarshal(data, &cf); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	for _, name := range []string{"spf-milter", "dns", "postfix"} {
		if _, ok := cf.Services[name]; !ok {
			t.Errorf("docker-compose.yml: no service %q", name)
		}
	}

	// Every file the services are built from or mount must be in the
	// checkout: "docker compose up" would mount an empty directory
	// instead of a missing file.
	mounts := map[string]string{} // container path -> checkout path, per service "name:path"
	for name, svc := range cf.Services {
		context, dockerfile := ".", "Dockerfile"
		switch b := svc.Build.(type) {
		case string:
			context = b
		case map[string]any:
			if c, ok := b["context"].(string); ok {
				context = c
			}
			if d, ok := b["dockerfile"].(string); ok {
				dockerfile = d
			}
		case nil:
			t.Errorf("service %s: no build", name)
		}
		if _, err := os.Stat(filepath.Join(repoRoot, context, dockerfile)); err != nil {
			t.Errorf("service %s: %v", name, err)
		}
		for _, v := range svc.Volumes {
			parts := strings.Split(v, ":")
			if len(parts) < 2 || !strings.HasPrefix(parts[0], "./") {
				t.Errorf("service %s: volume %q: want a ./file:/path bind mount", name, v)
				continue
			}
			src := filepath.Join(repoRoot, parts[0])
			if fi, err := os.Stat(src); err != nil || !fi.Mode().IsRegular() {
				t.Errorf("service %s: volume %q: the source is not a file in the checkout (%v)", name, v, err)
			}
			mounts[name+":"+parts[1]] = src
		}
	}

	var subnet *net.IPNet
	for _, n := range cf.Networks {
		for _, c := range n.IPAM.Config {
			_, subnet, err = net.ParseCIDR(c.Subnet)
			if err != nil {
				t.Errorf("network subnet %q: %v", c.Subnet, err)
			}
		}
	}
	ip := func(service string) string {
		for _, n := range cf.Services[service].Networks {
			if n.IPv4Address != "" {
				if subnet != nil && !subnet.Contains(net.ParseIP(n.IPv4Address)) {
					t.Errorf("service %s: ipv4_address %s outside the network's subnet %s", service, n.IPv4Address, subnet)
				}
				return n.IPv4Address
			}
		}
		t.Errorf("service %s: no fixed ipv4_address (the milter's config needs the resolver's IP)", service)
		return ""
	}

	// The milter's config: mounted where the image's ENTRYPOINT reads it,
	// listening on every interface, asking the dns service.
	milterConf := mounts["spf-milter:/etc/spf-milter/config.yaml"]
	if milterConf == "" {
		t.Fatalf("service spf-milter does not mount a config at /etc/spf-milter/config.yaml")
	}
	var mc struct {
		Listen string `yaml:"listen"`
		DNS    struct {
			Servers []string `yaml:"servers"`
		} `yaml:"dns"`
	}
	data, err = os.ReadFile(milterConf)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &mc); err != nil {
		t.Fatalf("%s: %v", milterConf, err)
	}
	if dnsIP := ip("dns"); !slices.Contains(mc.DNS.Servers, dnsIP) {
		t.Errorf("%s: dns.servers %q does not name the dns service's IP %s", milterConf, mc.DNS.Servers, dnsIP)
	}
	ip("spf-milter")
	ip("postfix")
	const wantListen = "inet:0.0.0.0:8895"
	if mc.Listen != wantListen {
		t.Errorf("%s: listen %q, want %q (reachable from the postfix container, on the EXPOSEd port)", milterConf, mc.Listen, wantListen)
	}

	// Postfix's main.cf: mounted, and wired to the milter service the way
	// the issue asks.
	mainCF := mounts["postfix:/etc/postfix/main.cf"]
	if mainCF == "" {
		t.Fatalf("service postfix does not mount /etc/postfix/main.cf")
	}
	params := postfixParams(t, mainCF)
	for name, want := range map[string]string{
		"smtpd_milters":         "inet:spf-milter:8895",
		"milter_default_action": "tempfail",
	} {
		if got := params[name]; got != want {
			t.Errorf("%s: %s = %q, want %q", mainCF, name, got, want)
		}
	}

	// NSD's config serves the zone file that is mounted.
	nsdConf := mounts["dns:/etc/nsd/nsd.conf"]
	if nsdConf == "" {
		t.Fatalf("service dns does not mount /etc/nsd/nsd.conf")
	}
	data, err = os.ReadFile(nsdConf)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`(?m)^\s*zonefile:\s*"?([^"\s]+)`).FindAllStringSubmatch(string(data), -1) {
		if mounts["dns:"+m[1]] == "" {
			t.Errorf("%s: zonefile %s is not mounted into the dns service", nsdConf, m[1])
		}
	}
}

// postfixParams reads the name = value lines of a main.cf, continuation
// lines (starting with white space) joined.
func postfixParams(t testing.TB, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	params := map[string]string{}
	last := ""
	for line := range strings.SplitSeq(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "" || strings.HasPrefix(trimmed, "#"):
			last = ""
		case line[0] == ' ' || line[0] == '\t':
			if last != "" {
				params[last] += " " + trimmed
			}
		default:
			name, value, ok := strings.Cut(line, "=")
			if !ok {
				t.Errorf("%s: not a name = value line: %q", path, line)
				continue
			}
			last = strings.TrimSpace(name)
			params[last] = strings.TrimSpace(value)
		}
	}
	return params
}

// TestDemoFiles checks the demo's files with the programs that read them:
// the milter's config with "spf-milter validate", Postfix's main.cf with
// postconf (no unknown parameter), NSD's config and zone with
// nsd-checkconf and nsd-checkzone.
func TestDemoFiles(t *testing.T) {
	demo := filepath.Join(repoRoot, "deploy", "demo")
	t.Run("spf-milter validate", func(t *testing.T) {
		out, err := exec.Command(spfMilterBin, "validate", "--config", filepath.Join(demo, "config.yaml")).CombinedOutput()
		if err != nil {
			t.Fatalf("spf-milter validate --config deploy/demo/config.yaml: %v\n%s", err, out)
		}
	})
	t.Run("postconf", func(t *testing.T) {
		need(t, "postconf")
		// postconf reads master.cf next to main.cf too: Debian's stands in
		// for the image's, which the postfix package installs.
		dir := workDir(t)
		copyFile(t, filepath.Join(demo, "main.cf"), filepath.Join(dir, "main.cf"))
		copyFile(t, "/etc/postfix/master.cf", filepath.Join(dir, "master.cf"))
		cmd := exec.Command("postconf", "-c", dir, "-n")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 {
			t.Errorf("postconf -c deploy/demo -n: %v\n%s", err, stderr.Bytes())
		}
	})
	t.Run("nsd", func(t *testing.T) {
		need(t, "nsd-checkconf", "nsd-checkzone")
		if out, err := exec.Command("nsd-checkconf", filepath.Join(demo, "nsd.conf")).CombinedOutput(); err != nil {
			t.Errorf("nsd-checkconf deploy/demo/nsd.conf: %v\n%s", err, out)
		}
		if out, err := exec.Command("nsd-checkzone", "demo.example", filepath.Join(demo, "demo.example.zone")).CombinedOutput(); err != nil {
			t.Errorf("nsd-checkzone demo.example: %v\n%s", err, out)
		}
	})
}

// copyFile copies src to dst, mode 0644.
func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestDemoZone serves the demo's zone with NSD and checks that each
// sender domain the compose file's comments suggest gives the result and
// action it promises, under the demo's milter config, for mail from the
// demo network's gateway (where mail sent through the published port
// comes from). The check asks the test's NSD, never the demo's IP.
func TestDemoZone(t *testing.T) {
	need(t, "nsd")
	zone, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "demo", "demo.example.zone"))
	if err != nil {
		t.Fatal(err)
	}
	n := startNSD(t, "demo.example", string(zone))
	config := filepath.Join(repoRoot, "deploy", "demo", "config.yaml")
	tests := []struct {
		sender, ip, wantResult, wantAction string
	}{
		{"someone@pass.demo.example", "172.30.53.1", "pass", "accept"},
		{"someone@fail.demo.example", "172.30.53.1", "fail", "reject"},
		{"someone@fail.demo.example", "192.0.2.10", "pass", "accept"}, // an XCLIENT address
		{"someone@softfail.demo.example", "172.30.53.1", "softfail", "accept"},
		{"someone@neutral.demo.example", "172.30.53.1", "neutral", "accept"},
		{"someone@permerror.demo.example", "172.30.53.1", "permerror", "accept"},
		{"someone@temperror.demo.example", "172.30.53.1", "temperror", "tempfail"},
		{"someone@none.demo.example", "172.30.53.1", "none", "accept"},
	}
	for _, tc := range tests {
		t.Run(tc.sender+" from "+tc.ip, func(t *testing.T) {
			// --dns overrides the config's dns.servers.
			out, err := exec.Command(spfMilterBin, "check", "--config", config, "--dns", n.Addr,
				"--ip", tc.ip, "--sender", tc.sender, "--helo", "client.example", "--json").Output()
			if err != nil {
				t.Fatalf("spf-milter check: %v\n%s%s", err, out, sendmailStderr(err))
			}
			var got struct{ Result, Action, Reply string }
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("spf-milter check --json: %v\n%s", err, out)
			}
			if got.Result != tc.wantResult || got.Action != tc.wantAction {
				t.Errorf("got %s, %s (%s); want %s, %s", got.Result, got.Action, got.Reply, tc.wantResult, tc.wantAction)
			}
		})
	}
}

// TestSystemdUnit checks deploy/spf-milter.service with "systemd-analyze
// verify" where systemd is installed; the ExecStart binary is this
// checkout's, since verify wants it to exist. Unknown keys are only
// warnings to verify, so any word about the unit fails the test.
func TestSystemdUnit(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze is not installed (Debian package systemd): the unit is not checked")
	}
	unit, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "spf-milter.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"ExecStart=/usr/bin/spf-milter serve --config /etc/spf-milter/config.yaml\n",
		"ExecReload=/bin/kill -HUP $MAINPID\n",
		"User=spf-milter\n",
		"Restart=on-failure\n",
		"RuntimeDirectory=spf-milter\n",
		"NoNewPrivileges=yes\n",
		"ProtectSystem=strict\n",
	} {
		if !bytes.Contains(unit, []byte(want)) {
			t.Errorf("deploy/spf-milter.service lacks %q", strings.TrimSpace(want))
		}
	}
	dir := workDir(t)
	path := filepath.Join(dir, "spf-milter.service")
	unit = bytes.ReplaceAll(unit, []byte("/usr/bin/spf-milter"), []byte(spfMilterBin))
	if err := os.WriteFile(path, unit, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("spf-milter.service")) {
		t.Errorf("systemd-analyze verify deploy/spf-milter.service: %v\n%s", err, out)
	}
}

// TestDockerfile checks what the image build relies on and can be checked
// without Docker: the sed edit of examples/config.yaml still finds its
// listen line and gives a valid config, and .dockerignore keeps the files
// the build copies.
func TestDockerfile(t *testing.T) {
	dockerfile, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	const from, to = "listen: inet:127.0.0.1:8895", "listen: inet:0.0.0.0:8895"
	if !bytes.Contains(dockerfile, []byte(`s/^listen: inet:127\.0\.0\.1:8895$/listen: inet:0.0.0.0:8895/`)) {
		t.Fatalf("Dockerfile: the sed edit of the listen line changed; update this test with it")
	}
	example, err := os.ReadFile(filepath.Join(repoRoot, "examples", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(example), "\n")
	if i := slices.Index(lines, from); i < 0 {
		t.Fatalf("examples/config.yaml has no line %q, which the Dockerfile edits", from)
	} else {
		lines[i] = to
	}
	path := filepath.Join(workDir(t), "config.yaml")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(spfMilterBin, "validate", "--config", path).CombinedOutput(); err != nil {
		t.Errorf("the image's config does not validate: %v\n%s", err, out)
	}

	ignore, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(ignore), "\n") {
		pattern := strings.TrimPrefix(strings.TrimSpace(line), "/")
		if pattern == "" || strings.HasPrefix(pattern, "#") {
			continue
		}
		for _, needed := range []string{"go.mod", "go.sum", "cmd", "cmd/spf-milter", "examples", "examples/config.yaml", "config", "milter", "spf", "internal"} {
			if ok, _ := filepath.Match(pattern, needed); ok {
				t.Errorf(".dockerignore: %q excludes %s, which the build needs", line, needed)
			}
		}
	}
}
