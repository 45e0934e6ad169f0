package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf-milter/spf-milter/internal/dnstest"
)

// testDNS serves a small zone on loopback and returns its address for --dns.
func testDNS(t *testing.T) string {
	t.Helper()
	z := dnstest.NewZone()
	err := z.Add(
		`example.org. IN TXT "v=spf1 ip4:192.0.2.0/24 -all"`,
		`mail.example.org. IN TXT "v=spf1 a -all"`,
		`mail.example.org. IN A 192.0.2.10`,
		`soft.example.org. IN TXT "v=spf1 ~all"`,
		`inc.example.org. IN TXT "v=spf1 include:example.org ?all"`,
		`broken.example.org. IN TXT "v=spf1 frobnicate -all"`,
		`nospf.example.org. IN TXT "some other text"`,
		`redir.example.org. IN TXT "v=spf1 redirect=example.org"`,
	)
	if err != nil {
		t.Fatal(err)
	}
	// Hostile zone data: terminal escapes in the record and the explanation.
	z.AddTXT("evil.example.org", "v=spf1 -all exp=exp.evil.example.org \x1b[2J")
	z.AddTXT("evilexp.example.org", "v=spf1 -all exp=exp.evil.example.org")
	z.AddTXT("exp.evil.example.org", "go away\x1b]0;owned\x07\r\nnow")
	z.Timeout("slow.example.org")
	return dnstest.StartServer(t, z).Addr()
}

// runCmd runs the program in-process and returns its exit status and output.
func runCmd(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// checkArgs is the start of a check command line against server.
func checkArgs(server string, args ...string) []string {
	return append([]string{"check", "--dns", server, "--receiver", "mx.test"}, args...)
}

func TestCheckText(t *testing.T) {
	t.Parallel()
	server := testDNS(t)
	tests := []struct {
		name    string
		args    []string
		want    []string // lines or fragments stdout must contain
		notWant []string
	}{
		{
			name: "pass",
			args: []string{"--ip", "192.0.2.1", "--sender", "joe@example.org", "--helo", "mail.example.org"},
			want: []string{
				"Result: pass\n",
				"example.org allows 192.0.2.1 to send mail from joe@example.org.",
				"Checked:     MAIL FROM joe@example.org from 192.0.2.1, HELO mail.example.org\n",
				`Record:      example.org has "v=spf1 ip4:192.0.2.0/24 -all"` + "\n",
				`Decision:    "ip4:192.0.2.0/24" in the record of example.org matched 192.0.2.1, giving pass.` + "\n",
				"Lookups:     0 DNS (limit 10), 0 void (limit 2)",
				"\nReceived-SPF: pass (mx.test: domain of joe@example.org designates 192.0.2.1 as permitted sender) client-ip=192.0.2.1; envelope-from=\"joe@example.org\"; helo=mail.example.org; receiver=mx.test; mechanism=\"ip4:192.0.2.0/24\"; identity=mailfrom\n",
			},
			notWant: []string{"Trace:", "Explanation:", "Problem:"},
		},
		{
			name: "fail with explanation",
			args: []string{"--ip", "198.51.100.7", "--sender", "joe@example.org"},
			want: []string{
				"Result: fail\n",
				"example.org does not allow 198.51.100.7 to send mail from joe@example.org",
				`Decision:    "-all" in the record of example.org matched 198.51.100.7, giving fail.`,
				"Explanation: example.org does not designate 198.51.100.7 as a permitted sender\n",
				"\nReceived-SPF: fail (mx.test: domain of joe@example.org does not designate 198.51.100.7 as permitted sender)",
			},
		},
		{
			name: "softfail",
			args: []string{"--ip", "198.51.100.7", "--sender", "joe@soft.example.org"},
			want: []string{"Result: softfail\n", `"~all" in the record of soft.example.org`},
		},
		{
			name: "neutral through include",
			args: []string{"--ip", "198.51.100.7", "--sender", "joe@inc.example.org"},
			want: []string{"Result: neutral\n", `Decision:    "?all" in the record of inc.example.org matched`, "Lookups:     1 DNS"},
		},
		{
			name: "pass through include",
			args: []string{"--ip", "192.0.2.1", "--sender", "joe@inc.example.org"},
			want: []string{"Result: pass\n", `Decision:    "include:example.org" in the record of inc.example.org matched 192.0.2.1, giving pass.`},
		},
		{
			name: "fail through redirect",
			args: []string{"--ip", "198.51.100.7", "--sender", "joe@redir.example.org"},
			want: []string{"Result: fail\n", `Decision:    "-all" in the record of example.org (reached from redir.example.org through redirect= or include:) matched 198.51.100.7, giving fail.`},
		},
		{
			name: "none",
			args: []string{"--ip", "192.0.2.1", "--sender", "joe@nospf.example.org"},
			want: []string{"Result: none\n", "nospf.example.org publishes no SPF policy", "Record:      none found for nospf.example.org\n"},
		},
		{
			name: "permerror",
			args: []string{"--ip", "192.0.2.1", "--sender", "joe@broken.example.org"},
			want: []string{"Result: permerror\n", `Record:      broken.example.org has "v=spf1 frobnicate -all"`, "Problem:     "},
		},
		{
			name: "trace",
			args: []string{"--ip", "192.0.2.1", "--sender", "joe@inc.example.org", "--trace"},
			want: []string{"\nTrace:\n", "  include", "=> pass"},
		},
		{
			name: "null sender",
			args: []string{"--ip", "192.0.2.10", "--sender", "", "--helo", "mail.example.org"},
			want: []string{
				"Result: pass\n",
				"MAIL FROM <> (null sender, checked as postmaster@mail.example.org) from 192.0.2.10",
				`envelope-from="postmaster@mail.example.org"`,
			},
		},
		{
			name: "null sender in brackets",
			args: []string{"--ip", "192.0.2.99", "--sender", "<>", "--helo", "mail.example.org"},
			want: []string{"Result: fail\n", "checked as postmaster@mail.example.org"},
		},
		{
			name: "helo identity",
			args: []string{"--ip", "192.0.2.10", "--identity", "helo", "--helo", "mail.example.org"},
			want: []string{
				"Result: pass\n",
				"mail.example.org allows 192.0.2.10 to use the HELO name mail.example.org.",
				"Checked:     HELO mail.example.org (as postmaster@mail.example.org) from 192.0.2.10\n",
				"; identity=helo\n",
			},
		},
		{
			name: "hostile record and explanation",
			args: []string{"--ip", "192.0.2.1", "--sender", "joe@evil.example.org"},
			want: []string{`\x1b[2J`},
		},
		{
			name: "hostile explanation",
			args: []string{"--ip", "192.0.2.1", "--sender", "joe@evilexp.example.org", "--trace"},
			want: []string{"Result: fail\n", "Explanation: "},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runCmd(checkArgs(server, tt.args...)...)
			if code != 0 || stderr != "" {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("output lacks %q:\n%s", w, stdout)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(stdout, w) {
					t.Errorf("output has %q:\n%s", w, stdout)
				}
			}
			// Nothing from DNS may reach the terminal raw.
			for i, c := range []byte(stdout) {
				if (c < 0x20 && c != '\n') || c == 0x7f {
					t.Fatalf("control byte %#02x at %d in output:\n%q", c, i, stdout)
				}
			}
		})
	}
}

func TestCheckJSON(t *testing.T) {
	t.Parallel()
	server := testDNS(t)
	code, stdout, stderr := runCmd(checkArgs(server, "--json", "--ip", "192.0.2.1",
		"--sender", "joe@inc.example.org", "--helo", "mail.example.org")...)
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	var got map[string]any
	dec := json.NewDecoder(strings.NewReader(stdout))
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, stdout)
	}
	if dec.More() {
		t.Errorf("more than one JSON value in output:\n%s", stdout)
	}
	want := map[string]any{
		"result":                 "pass",
		"identity":               "mailfrom",
		"domain":                 "inc.example.org",
		"sender":                 "joe@inc.example.org",
		"null_sender":            false,
		"ip":                     "192.0.2.1",
		"helo":                   "mail.example.org",
		"receiver":               "mx.test",
		"record":                 "v=spf1 include:example.org ?all",
		"mechanism":              "include:example.org",
		"mechanism_domain":       "inc.example.org",
		"explanation":            "",
		"problem":                "",
		"dns_lookups":            1.0,
		"void_lookups":           0.0,
		"received_spf":           `pass (mx.test: domain of joe@inc.example.org designates 192.0.2.1 as permitted sender) client-ip=192.0.2.1; envelope-from="joe@inc.example.org"; helo=mail.example.org; receiver=mx.test; mechanism="include:example.org"; identity=mailfrom`,
		"authentication_results": "mx.test; spf=pass smtp.mailfrom=inc.example.org",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %#v, want %#v", k, got[k], v)
		}
	}
	if d, ok := got["duration_ms"].(float64); !ok || d < 0 {
		t.Errorf("duration_ms = %#v", got["duration_ms"])
	}
	trace, ok := got["trace"].([]any)
	if !ok || len(trace) == 0 {
		t.Fatalf("trace = %#v, want a non-empty array", got["trace"])
	}
	kinds := map[string]bool{}
	for _, s := range trace {
		step, ok := s.(map[string]any)
		if !ok {
			t.Fatalf("trace step %#v is not an object", s)
		}
		kind, _ := step["kind"].(string)
		kinds[kind] = true
	}
	if !kinds["include"] || !kinds["record"] {
		t.Errorf("trace kinds %v lack include or record", kinds)
	}
}

func TestCheckJSONNullSender(t *testing.T) {
	t.Parallel()
	server := testDNS(t)
	code, stdout, stderr := runCmd(checkArgs(server, "--json", "--ip", "192.0.2.10",
		"--sender", "<>", "--helo", "mail.example.org")...)
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	var got struct {
		Result     string `json:"result"`
		Sender     string `json:"sender"`
		NullSender bool   `json:"null_sender"`
		Trace      []any  `json:"trace"`
	}
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatal(err)
	}
	if got.Result != "pass" || got.Sender != "postmaster@mail.example.org" || !got.NullSender {
		t.Errorf("got %+v", got)
	}
}

// TestCheckTimeout: a server that never answers gives temperror within
// --timeout, and the command still succeeds: the check ran.
func TestCheckTimeout(t *testing.T) {
	t.Parallel()
	server := testDNS(t)
	start := time.Now()
	code, stdout, stderr := runCmd(checkArgs(server, "--json", "--timeout", "500ms",
		"--ip", "192.0.2.1", "--sender", "joe@slow.example.org")...)
	elapsed := time.Since(start)
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	var got struct {
		Result  string `json:"result"`
		Problem string `json:"problem"`
	}
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatal(err)
	}
	if got.Result != "temperror" || got.Problem == "" {
		t.Errorf("result %q, problem %q; want temperror with a problem", got.Result, got.Problem)
	}
	if elapsed > 3*time.Second {
		t.Errorf("check took %v with --timeout 500ms", elapsed)
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string // in the one line of stderr
	}{
		{"no command", nil, "Usage: spf-milter"},
		{"unknown command", []string{"frob"}, `spf-milter: unknown command "frob"`},
		{"unknown flag", []string{"check", "--frob", "--ip", "192.0.2.1", "--sender", "a@b.example"}, "flag provided but not defined: -frob"},
		{"missing ip", []string{"check", "--sender", "a@example.org"}, "--ip is required"},
		{"bad ip", []string{"check", "--ip", "192.0.2.300", "--sender", "a@example.org"}, `bad --ip "192.0.2.300"`},
		{"ip with zone", []string{"check", "--ip", "fe80::1%eth0", "--sender", "a@example.org"}, "zone"},
		{"ip with newline", []string{"check", "--ip", "192.0.2.1\nX", "--sender", "a@example.org"}, `bad --ip "192.0.2.1\nX"`},
		{"bad identity", []string{"check", "--ip", "192.0.2.1", "--sender", "a@example.org", "--identity", "from"}, `bad --identity "from"`},
		{"helo identity without helo", []string{"check", "--ip", "192.0.2.1", "--identity", "helo"}, "--identity helo needs --helo"},
		{"mailfrom without sender or helo", []string{"check", "--ip", "192.0.2.1"}, "needs --sender"},
		{"bad timeout", []string{"check", "--ip", "192.0.2.1", "--sender", "a@example.org", "--timeout", "soon"}, `invalid value "soon" for flag -timeout`},
		{"zero timeout", []string{"check", "--ip", "192.0.2.1", "--sender", "a@example.org", "--timeout", "0s"}, "bad --timeout 0s"},
		{"negative timeout", []string{"check", "--ip", "192.0.2.1", "--sender", "a@example.org", "--timeout", "-1s"}, "bad --timeout -1s"},
		{"extra argument", []string{"check", "--ip", "192.0.2.1", "--sender", "a@example.org", "extra"}, `unexpected argument "extra"`},
		{"bad dns server", []string{"check", "--ip", "192.0.2.1", "--sender", "a@example.org", "--dns", "resolver.example"}, "bad --dns"},
		{"empty dns server", []string{"check", "--ip", "192.0.2.1", "--sender", "a@example.org", "--dns", ""}, "empty server address"},
		{"help for unknown command", []string{"help", "frob"}, `unknown command "frob"`},
		{"version with argument", []string{"version", "x"}, `unexpected argument "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCmd(tt.args...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d", code, exitUsage)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr %q lacks %q", stderr, tt.want)
			}
			if len(tt.args) > 0 && strings.Count(stderr, "\n") != 1 {
				t.Errorf("stderr is not one line: %q", stderr)
			}
		})
	}
}

func TestHelpAndVersion(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"help"}, []string{"Usage: spf-milter <command>", "  check ", "  version "}},
		{[]string{"--help"}, []string{"Usage: spf-milter <command>"}},
		{[]string{"-h"}, []string{"Usage: spf-milter <command>"}},
		{[]string{"help", "check"}, []string{"Usage: spf-milter check", "-dns HOST:PORT", "-timeout duration"}},
		{[]string{"check", "-h"}, []string{"Usage: spf-milter check", "-identity mailfrom"}},
		{[]string{"check", "--help"}, []string{"Usage: spf-milter check"}},
		{[]string{"version"}, []string{"spf-milter "}},
		{[]string{"--version"}, []string{"spf-milter "}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := runCmd(tt.args...)
			if code != 0 || stderr != "" {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout)
				}
			}
		})
	}
}

// checkConfigFile writes a config file naming dns as its only server and
// mx.test as authserv-id (and so receiver), plus extra lines.
func checkConfigFile(t *testing.T, dns string, extra ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	content := "authserv_id: mx.test\ndns:\n  servers: [\"" + dns + "\"]\n" + strings.Join(extra, "\n") + "\n"
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// checkConfigJSON is the part of the --json output that --config adds.
type checkConfigJSON struct {
	Result      string `json:"result"`
	Receiver    string `json:"receiver"`
	Explanation string `json:"explanation"`
	Action      string `json:"action"`
	Reply       string `json:"reply"`
	DryRun      bool   `json:"dry_run"`
	HoldReason  string `json:"hold_reason"`
	Headers     []struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	} `json:"headers"`
}

// TestCheckConfig: with --config the check takes its DNS servers, receiver,
// explanation and timeouts from the file (no --dns here) and shows the
// action, reply and headers the milter would produce.
func TestCheckConfig(t *testing.T) {
	t.Parallel()
	dns := testDNS(t)
	fail := []string{"--ip", "198.51.100.7", "--sender", "joe@example.org"}
	pass := []string{"--ip", "192.0.2.1", "--sender", "joe@example.org"}
	const (
		rsFail = "fail (mx.test: domain of joe@example.org does not designate\n 198.51.100.7 as permitted sender) client-ip=198.51.100.7;\n envelope-from=\"joe@example.org\"; receiver=mx.test; mechanism=-all;\n identity=mailfrom"
		arFail = "mx.test; spf=fail smtp.mailfrom=example.org"
	)
	tests := []struct {
		name       string
		config     []string
		args       []string
		action     string
		reply      string
		replyStart bool // reply is only the start of the reply
		dryRun     bool
		hold       string   // hold reason, for quarantine
		headers    []string // "Name: value", in order
		receiver   string   // "" means mx.test
		explan     string   // the outcome's explanation, when it matters
		textAction string   // the Action line of the text output
	}{
		{
			name:       "default policy rejects a fail",
			args:       fail,
			action:     "reject",
			reply:      "550 5.7.23 SPF fail: example.org does not designate 198.51.100.7 as a permitted sender",
			headers:    []string{"Received-SPF: " + rsFail, "Authentication-Results: " + arFail},
			textAction: "Action: reject\n",
		},
		{
			name:       "fail: tempfail",
			config:     []string{"policy: {mailfrom: {fail: tempfail}}"},
			args:       fail,
			action:     "tempfail",
			reply:      "451 4.7.1 SPF fail: example.org does not designate 198.51.100.7 as a permitted sender",
			headers:    []string{"Received-SPF: " + rsFail, "Authentication-Results: " + arFail},
			textAction: "Action: tempfail\n",
		},
		{
			name:       "pass is accepted with headers",
			args:       pass,
			action:     "accept",
			reply:      "",
			headers:    []string{"Received-SPF: pass (mx.test: domain of joe@example.org designates 192.0.2.1 as\n permitted sender) client-ip=192.0.2.1; envelope-from=\"joe@example.org\";\n receiver=mx.test; mechanism=\"ip4:192.0.2.0/24\"; identity=mailfrom", "Authentication-Results: mx.test; spf=pass smtp.mailfrom=example.org"},
			textAction: "Action: accept\n",
		},
		{
			name:       "headers disabled",
			config:     []string{"headers: {received_spf: false, authentication_results: false}"},
			args:       pass,
			action:     "accept",
			headers:    []string{},
			textAction: "Action: accept\n",
		},
		{
			name:       "dry run",
			config:     []string{"dry_run: true"},
			args:       fail,
			action:     "reject",
			reply:      "550 5.7.23 SPF fail: example.org does not designate 198.51.100.7 as a permitted sender",
			dryRun:     true,
			headers:    []string{"Received-SPF: " + rsFail, "Authentication-Results: " + arFail},
			textAction: "Action: reject (dry run: only logged, the message is accepted)\n",
		},
		{
			name:       "quarantine",
			config:     []string{"policy: {mailfrom: {fail: quarantine}}"},
			args:       fail,
			action:     "quarantine",
			hold:       "SPF fail for mailfrom joe@example.org from 198.51.100.7",
			headers:    []string{"Received-SPF: " + rsFail, "Authentication-Results: " + arFail},
			textAction: "Action: quarantine\n",
		},
		{
			name:       "the config's explanation, with % for the MTA",
			config:     []string{`explanation: "go away %{s}, 100%% sure"`},
			args:       fail,
			action:     "reject",
			reply:      "550 5.7.23 SPF fail: go away joe@example.org, 100% sure",
			explan:     "go away joe@example.org, 100% sure",
			headers:    []string{"Received-SPF: " + rsFail, "Authentication-Results: " + arFail},
			textAction: "Action: reject\n",
		},
		{
			name:     "--receiver overrides the file",
			args:     append([]string{"--receiver", "mx2.test"}, pass...),
			action:   "accept",
			receiver: "mx2.test",
			headers: []string{
				"Received-SPF: pass (mx2.test: domain of joe@example.org designates 192.0.2.1\n as permitted sender) client-ip=192.0.2.1; envelope-from=\"joe@example.org\";\n receiver=mx2.test; mechanism=\"ip4:192.0.2.0/24\"; identity=mailfrom",
				// The authserv-id is the file's, not the receiver.
				"Authentication-Results: mx.test; spf=pass smtp.mailfrom=example.org",
			},
			textAction: "Action: accept\n",
		},
		{
			name:   "the config's check timeout gives temperror",
			config: []string{"  timeout: 200ms", "  check_timeout: 500ms"},
			args:   []string{"--ip", "192.0.2.1", "--sender", "joe@slow.example.org"},
			action: "tempfail",
			// The rest is the resolver's problem text, with port numbers.
			reply:      "451 4.7.24 SPF temperror: DNS failure: TXT slow.example.org: ",
			replyStart: true,
			headers:    nil, // not compared: they hold the problem text too
			textAction: "Action: tempfail\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := checkConfigFile(t, dns, tt.config...)
			args := append([]string{"check", "--config", path}, tt.args...)

			start := time.Now()
			code, stdout, stderr := runCmd(append(args, "--json")...)
			if code != 0 || stderr != "" {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			if elapsed := time.Since(start); elapsed > 10*time.Second {
				t.Errorf("check took %v", elapsed)
			}
			var got checkConfigJSON
			if err := json.Unmarshal([]byte(stdout), &got); err != nil {
				t.Fatalf("output is not JSON: %v\n%s", err, stdout)
			}
			receiver := cmp.Or(tt.receiver, "mx.test")
			if got.Action != tt.action || got.DryRun != tt.dryRun || got.HoldReason != tt.hold || got.Receiver != receiver {
				t.Errorf("action %q, dry_run %v, hold_reason %q, receiver %q; want %q, %v, %q, %q",
					got.Action, got.DryRun, got.HoldReason, got.Receiver, tt.action, tt.dryRun, tt.hold, receiver)
			}
			if tt.replyStart && !strings.HasPrefix(got.Reply, tt.reply) {
				t.Errorf("reply %q, want %q...", got.Reply, tt.reply)
			} else if !tt.replyStart && got.Reply != tt.reply {
				t.Errorf("reply %q, want %q", got.Reply, tt.reply)
			}
			if tt.explan != "" && got.Explanation != tt.explan {
				t.Errorf("explanation %q, want %q", got.Explanation, tt.explan)
			}
			var headers []string
			for _, h := range got.Headers {
				headers = append(headers, h.Name+": "+h.Value)
			}
			if got.Headers == nil {
				t.Error(`"headers" is missing or null, want an array`)
			}
			if tt.headers != nil && strings.Join(headers, "\n--\n") != strings.Join(tt.headers, "\n--\n") {
				t.Errorf("headers:\n%s\nwant:\n%s", strings.Join(headers, "\n--\n"), strings.Join(tt.headers, "\n--\n"))
			}

			// The text output says the same.
			code, stdout, stderr = runCmd(args...)
			if code != 0 || stderr != "" {
				t.Fatalf("text: exit %d, stderr %q", code, stderr)
			}
			want := []string{"\n" + tt.textAction}
			switch {
			case tt.replyStart:
				want = append(want, "\nReply: "+tt.reply)
			case got.Reply != "":
				want = append(want, "\nReply: "+got.Reply+"\n")
			default:
				want = append(want, "\nReply: (none: the message is not refused)\n")
			}
			if tt.hold != "" {
				want = append(want, "\nHold reason: "+tt.hold+"\n")
			}
			for _, h := range tt.headers {
				want = append(want, "\n"+h+"\n")
			}
			if tt.headers != nil && len(tt.headers) == 0 {
				want = append(want, "\nHeaders: none")
			}
			for _, w := range want {
				if !strings.Contains(stdout, w) {
					t.Errorf("text output lacks %q:\n%s", w, stdout)
				}
			}
		})
	}
}

// TestCheckWithoutConfig: the --config fields are absent without it.
func TestCheckWithoutConfig(t *testing.T) {
	t.Parallel()
	server := testDNS(t)
	code, stdout, stderr := runCmd(checkArgs(server, "--json", "--ip", "198.51.100.7", "--sender", "joe@example.org")...)
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"action", "reply", "headers", "dry_run"} {
		if _, ok := got[k]; ok {
			t.Errorf("%q present without --config", k)
		}
	}
	code, stdout, _ = runCmd(checkArgs(server, "--ip", "198.51.100.7", "--sender", "joe@example.org")...)
	if code != 0 || strings.Contains(stdout, "Action:") {
		t.Errorf("exit %d; text output has an Action line without --config:\n%s", code, stdout)
	}
}

func TestCheckConfigErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	broken := filepath.Join(dir, "broken.yaml")
	if err := os.WriteFile(broken, []byte("policy:\n  mailfrom: {fail: rejectt}\nfrobnicate: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
		want []string // in the one line of stderr
	}{
		{"missing file", []string{"--config", filepath.Join(dir, "nope.yaml")}, 1, []string{"spf-milter check: ", "nope.yaml", "no such file"}},
		{"every problem", []string{"--config", broken}, 1, []string{
			"spf-milter check: ",
			`broken.yaml:2: policy.mailfrom.fail: bad value "rejectt"`,
			"; " + broken + ":3: frobnicate: unknown key",
		}},
		{"empty path", []string{"--config", ""}, exitUsage, []string{"--config needs a path"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"check", "--ip", "192.0.2.1", "--sender", "joe@example.org"}, tt.args...)
			code, stdout, stderr := runCmd(args...)
			if code != tt.code || stdout != "" || strings.Count(stderr, "\n") != 1 {
				t.Fatalf("exit %d, stdout %q, stderr %q; want %d and one line on stderr", code, stdout, stderr, tt.code)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q: %q", w, stderr)
				}
			}
		})
	}
}
