package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// reSpamRule matches a line of the report spamassassin -t appends to the
// message ("Content analysis details"): points, then the rule's name.
var reSpamRule = regexp.MustCompile(`(?m)^ ?-?\d+\.\d+ ([A-Z][A-Z0-9_]+) `)

// TestSpamAssassin delivers an SPF pass and an SPF fail (accepted by our
// policy) through Postfix and our milter, and runs `spamassassin -t` on
// each delivered message with DNS off (dns_available no: its SPF plugin
// cannot check for itself, and net rules such as SPF_PASS still run, which
// -L would turn off). Our headers must make SPF_PASS or SPF_FAIL hit, read
// from Received-SPF (use_newest_received_spf_header 1: our fields at the
// top, mailfrom first) or, by SpamAssassin's default order (the bottom-most
// internal field first), from our Authentication-Results.
func TestSpamAssassin(t *testing.T) {
	need(t, "spamassassin")
	e := startDownstream(t, false)

	msgs := map[string]delivered{}
	for _, from := range []string{"user@pass.example.test", "user@fail.example.test"} {
		m := newMessage(t.Name(), from)
		r, err := e.sendOne("192.0.2.10", "helo.example.test", m)
		if err != nil {
			t.Fatal(err)
		}
		if r.Stage != "" {
			t.Fatalf("from %s refused: %s", from, r)
		}
		msgs[from] = e.waitDelivered(t, m.ID)
	}

	for _, tc := range []struct {
		name   string
		from   string
		newest bool // use_newest_received_spf_header
		// hit and miss are rules that must and must not hit; debug are
		// lines of its SPF debug output (-D spf) that must be there.
		hit, miss, debug []string
	}{
		{
			name: "pass from Received-SPF", from: "user@pass.example.test", newest: true,
			hit:  []string{"SPF_PASS", "SPF_HELO_PASS"},
			miss: []string{"SPF_FAIL", "SPF_SOFTFAIL", "SPF_NEUTRAL", "SPF_NONE"},
			debug: []string{
				"spf: re-using mfrom result from Received-SPF header: pass",
				"spf: re-using helo result from Received-SPF header: pass",
			},
		},
		{
			name: "fail from Received-SPF", from: "user@fail.example.test", newest: true,
			hit:  []string{"SPF_FAIL", "SPF_HELO_PASS"},
			miss: []string{"SPF_PASS", "SPF_SOFTFAIL"},
			debug: []string{
				"spf: re-using mfrom result from Received-SPF header: fail",
				"spf: re-using helo result from Received-SPF header: pass",
			},
		},
		{
			name: "pass from Authentication-Results", from: "user@pass.example.test",
			hit:  []string{"SPF_PASS", "SPF_HELO_PASS"},
			miss: []string{"SPF_FAIL"},
			debug: []string{
				"spf: re-using mfrom result from Authentication-Results header: pass",
			},
		},
		{
			name: "fail from Authentication-Results", from: "user@fail.example.test",
			hit:  []string{"SPF_FAIL", "SPF_HELO_PASS"},
			miss: []string{"SPF_PASS"},
			debug: []string{
				"spf: re-using mfrom result from Authentication-Results header: fail",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := msgs[tc.from]
			out, debug := runSpamAssassin(t, d, tc.newest)
			_, report, ok := strings.Cut(out, "Content analysis details:")
			if !ok {
				t.Fatalf("no report in spamassassin's output:\n%s", out)
			}
			var rules []string
			for _, m := range reSpamRule.FindAllStringSubmatch(report, -1) {
				rules = append(rules, m[1])
			}
			for _, r := range tc.hit {
				if !slices.Contains(rules, r) {
					t.Errorf("rule %s did not hit; rules hit: %q", r, rules)
				}
			}
			for _, r := range tc.miss {
				if slices.Contains(rules, r) {
					t.Errorf("rule %s hit; rules hit: %q", r, rules)
				}
			}
			for _, l := range tc.debug {
				if !strings.Contains(debug, "dbg: "+l+"\n") {
					t.Errorf("no debug line %q", l)
				}
			}
			if t.Failed() {
				t.Logf("message:\n%s\nspamassassin -D spf:\n%s", d.Raw, debug)
			}
		})
	}
}

// runSpamAssassin runs `spamassassin -t -D spf` on the delivered message
// and returns its output (the message with its report) and its debug
// output. Its site config is a directory of the test's own: Debian's .pre
// files (which load the plugins, SPF among them) and a local.cf with DNS
// and Bayes off and Received-SPF reuse on.
func runSpamAssassin(t *testing.T, d delivered, newest bool) (out, debug string) {
	t.Helper()
	dir := workDir(t)
	site := filepath.Join(dir, "site")
	if err := os.Mkdir(site, 0o755); err != nil {
		t.Fatal(err)
	}
	pres, _ := filepath.Glob("/etc/spamassassin/*.pre")
	if len(pres) == 0 {
		t.Fatal("no /etc/spamassassin/*.pre: is the Debian package spamassassin installed?")
	}
	for _, p := range pres {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(site, filepath.Base(p)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	newestFlag := 0
	if newest {
		newestFlag = 1
	}
	localCF := fmt.Sprintf(`dns_available no
use_bayes 0
bayes_auto_learn 0
# No trusted_networks or internal_networks: SpamAssassin takes the host
# that wrote the topmost Received (mx.example.test) as internal, and the
# client it names (192.0.2.10) as external, so the fields above that
# Received, ours, count as written by the internal MX.
ignore_received_spf_header 0
use_newest_received_spf_header %d
`, newestFlag)
	if err := os.WriteFile(filepath.Join(site, "local.cf"), []byte(localCF), 0o644); err != nil {
		t.Fatal(err)
	}

	// Without the mbox "From " line: the message as the MTA handed it over.
	_, msg, _ := strings.Cut(d.Raw, "\n")
	cmd := exec.Command("spamassassin", "-x", "--siteconfigpath="+site, "-D", "spf", "-t")
	// HOME: its per-user directory goes into the test's work directory.
	cmd.Env = append(os.Environ(), "HOME="+dir)
	cmd.Stdin = strings.NewReader(msg)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("spamassassin: %v\n%s", err, stderr.String())
	}
	// Debug lines carry a timestamp and PID before "dbg: ".
	return stdout.String(), stderr.String()
}
