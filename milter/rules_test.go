package milter

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
	"github.com/miekg/dns"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/decisions"
	"github.com/spf-milter/spf-milter/internal/dnstest"
	"github.com/spf-milter/spf-milter/policy"
	"github.com/spf-milter/spf-milter/spf"
)

// rulesTestConfig has a rule per condition the daemon supplies: the
// listener, the sender domain, the confirmed client name, and a shadow
// policy stricter than the live one.
const rulesTestConfig = `authserv_id: mx.example.net
rules:
  - name: submission
    when: {listener: [submission]}
    skip: true
  - name: fail-grace
    when: {sender_domain: [fail.example]}
    mailfrom: {fail: accept}
  - name: forwarder
    when: {client_name: [.fwd.example]}
    mailfrom: {softfail: reject}
shadow:
  policy: {mailfrom: {softfail: reject}}
`

// TestRulesThroughDaemon drives the daemon with go-milter's client as
// Postfix does, the {daemon_name} macro sent with the connect data.
func TestRulesThroughDaemon(t *testing.T) {
	cfg, err := config.Parse("rules.yaml", []byte(rulesTestConfig))
	if err != nil {
		t.Fatal(err)
	}
	z := testZone(t)
	if err := z.Add(
		`77.2.0.192.in-addr.arpa. PTR mx.fwd.example.`,
		`mx.fwd.example. A 192.0.2.77`,
	); err != nil {
		t.Fatal(err)
	}
	z.Rcode("78.2.0.192.in-addr.arpa", dns.RcodeServerFailure)
	srv := dnstest.StartServer(t, z)
	r, err := spf.NewDNSResolver(spf.DNSOptions{Servers: []string{srv.Addr()}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	logs, rec, m := &logBuffer{}, &recorder{}, NewMetrics()
	rt := &Runtime{
		Config:    cfg,
		Checker:   &spf.Checker{Resolver: r, Receiver: cfg.Receiver, Timeout: 10 * time.Second},
		Log:       slog.New(slog.NewJSONHandler(logs, nil)),
		Metrics:   m,
		Decisions: rec,
	}
	h := startServer(t, func() *Runtime { return rt }, srv, logs)
	connect := func(ip, listener string) *gomilter.ClientSession {
		t.Helper()
		cs := h.open()
		if err := cs.Macros(gomilter.CodeConn, "{daemon_name}", listener, "j", "mx.example.net"); err != nil {
			t.Fatal(err)
		}
		h.mustContinue("connect", must(t)(cs.Conn("client.example", gomilter.FamilyInet, 40000, ip)))
		h.mustContinue("helo", must(t)(cs.Helo("mx.client.example")))
		return cs
	}

	tests := []struct {
		name, ip, listener, from string
		mail                     string // the MAIL FROM reply
		header                   bool   // an SPF header is inserted
		rule, shadow             string
		clientName               string
	}{
		{"submission skipped", clientIP, "submission", "alice@fail.example", "continue", false, "submission", "", ""},
		{"rule accepts fail", clientIP, "smtpd", "alice@fail.example", "continue", true, "fail-grace", "reject", ""},
		{"shadow stricter, live unchanged", clientIP, "smtpd", "alice@softfail.example", "continue", true, "", "reject", ""},
		{"global matrix", clientIP, "smtpd", "alice@pass.example", "continue", true, "", "accept", ""},
		{"confirmed name", "192.0.2.77", "smtpd", "alice@softfail.example", "550 5.7.1", false, "forwarder", "reject", "mx.fwd.example"},
		{"name lookup fails: no match", "192.0.2.78", "smtpd", "alice@softfail.example", "continue", true, "", "reject", ""},
	}
	for _, tt := range tests {
		cs := connect(tt.ip, tt.listener)
		o := h.send(cs, message{from: tt.from, rcpts: []string{"bob@example.net"}})
		if got := reply(o.mail); !strings.HasPrefix(got, tt.mail) {
			t.Errorf("%s: MAIL FROM answered %q, want %s", tt.name, got, tt.mail)
		}
		if tt.mail == "continue" && o.end == nil {
			t.Errorf("%s: message not finished", tt.name)
		}
		if got := len(inserted(t, o.mods)) > 0; got != tt.header {
			t.Errorf("%s: header inserted %v, want %v", tt.name, got, tt.header)
		}
		cs.Close()
	}
	// Let the last session finish its records.
	deadline := time.Now().Add(5 * time.Second)
	for len(rec.decisions()) < len(tests) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	got := rec.decisions()
	if len(got) != len(tests) {
		t.Fatalf("%d decisions recorded, want %d", len(got), len(tests))
	}
	for i, tt := range tests {
		d := got[i]
		if d.Rule != tt.rule || d.Shadow.Known != (tt.shadow != "") || string(d.Shadow.Action) != tt.shadow || d.Listener != tt.listener {
			t.Errorf("%s: recorded rule %q shadow %+v listener %q; want %q, %q, %q", tt.name, d.Rule, d.Shadow, d.Listener, tt.rule, tt.shadow, tt.listener)
		}
		if d.ClientName != tt.clientName {
			t.Errorf("%s: recorded client name %q, want %q", tt.name, d.ClientName, tt.clientName)
		}
	}
	if got[0].Skipped != policy.SkipRule {
		t.Errorf("submission: skipped %v", got[0].Skipped)
	}

	skipped := logs.lines(t, "spf skipped")
	if len(skipped) != 1 || skipped[0]["reason"] != "rule" || skipped[0]["rule"] != "submission" {
		t.Errorf("skip log lines %v", skipped)
	}
	var rules, shadows []string
	for _, l := range logs.lines(t, "spf decision") {
		rule, _ := l["rule"].(string)
		shadow, _ := l["shadow_action"].(string)
		rules, shadows = append(rules, rule), append(shadows, shadow)
	}
	if want := []string{"fail-grace", "", "", "forwarder", ""}; strings.Join(rules, ",") != strings.Join(want, ",") {
		t.Errorf("decision log lines' rules %q, want %q", rules, want)
	}
	if want := []string{"reject", "reject", "accept", "reject", "reject"}; strings.Join(shadows, ",") != strings.Join(want, ",") {
		t.Errorf("decision log lines' shadow actions %q, want %q", shadows, want)
	}
	if len(logs.lines(t, "client name lookup failed; client_name rules do not match")) != 1 {
		t.Error("the failed client name lookup is not logged once")
	}

	scrape(t, m.Handler()).check(t, map[string]float64{
		`spf_milter_actions_total{action="accept",rule="fail-grace"}`:      1,
		`spf_milter_actions_total{action="accept",rule=""}`:                3,
		`spf_milter_actions_total{action="reject",rule="forwarder"}`:       1,
		`spf_milter_skipped_total{reason="rule",rule="submission"}`:        1,
		`spf_milter_shadow_actions_total{action="reject",differs="true"}`:  3,
		`spf_milter_shadow_actions_total{action="reject",differs="false"}`: 1,
		`spf_milter_shadow_actions_total{action="accept",differs="false"}`: 1,
	})

	// The decision log of those messages, replayed under the same config,
	// gives the daemon's answers; without the rules, the messages they
	// decided change.
	var log bytes.Buffer
	enc := json.NewEncoder(&log)
	for _, d := range got {
		if err := enc.Encode(decisions.FromDecision(d)); err != nil {
			t.Fatal(err)
		}
	}
	replay := func(cfg *config.Config) *decisions.Report {
		t.Helper()
		rep, err := decisions.Replay(context.Background(), decisions.ReplayOptions{Config: cfg},
			decisions.Input{Name: "decisions.jsonl", R: bytes.NewReader(log.Bytes())})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := replay(cfg); rep.Replayed != len(tests) || rep.Changed != 0 || rep.Malformed != 0 {
		t.Errorf("replay under the same config: %d replayed, %d changed, %d malformed; want %d, 0, 0",
			rep.Replayed, rep.Changed, rep.Malformed, len(tests))
	}
	plain, err := config.Parse("plain.yaml", []byte("authserv_id: mx.example.net\n"))
	if err != nil {
		t.Fatal(err)
	}
	rep := replay(plain)
	var changes []string
	for _, tr := range rep.Transitions {
		changes = append(changes, fmt.Sprintf("%s->%s %d", tr.From, tr.To, tr.Count))
	}
	if want := "accept->reject 1,reject->accept 1"; strings.Join(changes, ",") != want || rep.Undecided != 1 {
		t.Errorf("replay without rules: transitions %q, %d undecided; want %q and the skipped message undecided", changes, rep.Undecided, want)
	}
}

// TestShadowNeverChangesReply: a shadow policy stricter on every result,
// HELO included (which the live policy here does not check), leaves every
// reply and header change as they are without it.
func TestShadowNeverChangesReply(t *testing.T) {
	live := func() *config.Config {
		cfg := testConfig()
		for r := range cfg.Policy.HELO {
			cfg.Policy.HELO[r] = config.Accept
		}
		return cfg
	}
	shadowed := live()
	shadowed.Shadow = config.Shadow{
		Policy: config.Policy{
			MailFrom: map[spf.Result]config.Action{spf.Softfail: config.Reject, spf.Neutral: config.Quarantine, spf.None: config.Reject, spf.PermError: config.Tempfail},
			HELO:     map[spf.Result]config.Action{spf.Fail: config.Reject},
		},
		Rules: []config.Rule{{Name: "strict", When: config.When{SenderDomain: []string{"pass.example"}}, MailFrom: map[spf.Result]config.Action{spf.Pass: config.Reject}}},
	}
	z := testZone(t)
	plain, shadow := newHarness(t, live(), z), newHarness(t, shadowed, z)
	for _, helo := range []string{failHELO, "mx.pass.example"} {
		for _, from := range []string{"a@pass.example", "a@fail.example", "a@softfail.example", "a@neutral.example", "a@none.example", "a@permerror.example", "a@temperror.example"} {
			var got [2]string
			for i, h := range []*harness{plain, shadow} {
				cs := h.connect(clientIP, helo)
				o := h.send(cs, message{from: from, rcpts: []string{"bob@example.net"}})
				got[i] = fmt.Sprintf("mail=%s end=%s mods=%v", reply(o.mail), reply(o.end), o.mods)
				cs.Close()
			}
			if got[0] != got[1] {
				t.Errorf("HELO %s, MAIL FROM %s: without a shadow\n%s\nwith one\n%s", helo, from, got[0], got[1])
			}
		}
	}
	differs := 0
	for _, l := range shadow.logs.lines(t, "spf decision") {
		if l["shadow_action"] != l["action"] {
			differs++
		}
		if _, ok := l["helo_result"]; ok {
			t.Errorf("a HELO result the live policy does not check is logged: %v", l)
		}
	}
	if differs == 0 {
		t.Error("the shadow never differed: the test proves nothing")
	}
}
