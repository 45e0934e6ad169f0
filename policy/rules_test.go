package policy

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/internal/dnstest"
	"github.com/spf-milter/spf-milter/spf"
)

// rulesConfig parses a config file of rules, failing the test on a
// problem: the rules the policy compiles are the loader's.
func rulesConfig(t *testing.T, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("t.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	cfg.AuthservID, cfg.Receiver = ourAuthID, ourAuthID
	return cfg
}

// TestRuleMatching is the table of what each condition matches.
func TestRuleMatching(t *testing.T) {
	t.Parallel()
	cfg := rulesConfig(t, `rules:
  - name: exact
    when: {sender_domain: [partner.example]}
    mailfrom: {permerror: accept}
  - name: below
    when: {sender_domain: [.example.com, xn--bcher-kva.example]}
    mailfrom: {permerror: accept}
  - name: helo
    when: {helo: [MX.Helo.Example]}
    mailfrom: {permerror: accept}
  - name: v4
    when: {client: [192.0.2.0/24, 198.51.100.7]}
    mailfrom: {permerror: accept}
  - name: v6
    when: {client: ["2001:db8::/32"]}
    mailfrom: {permerror: accept}
  - name: both
    when: {sender_domain: [both.example], client: [203.0.113.0/24]}
    mailfrom: {permerror: accept}
  - name: listener
    when: {listener: [submission]}
    skip: true
  - name: named
    when: {client_name: [.forwarder.example]}
    mailfrom: {fail: accept}
  - name: dated
    when: {sender_domain: [dated.example]}
    until: 2027-03-01
    mailfrom: {fail: accept}
`)
	p := New(cfg)
	other := netip.MustParseAddr("203.0.113.9")
	beforeUntil := time.Date(2027, 2, 28, 23, 59, 59, 0, time.UTC)
	tests := []struct {
		name string
		m    Message
		want string
	}{
		{"exact name", Message{Sender: "a@partner.example"}, "exact"},
		{"exact name, any case, final dot", Message{Sender: "a@PARTNER.Example."}, "exact"},
		{"exact name is not its subdomain", Message{Sender: "a@mx.partner.example"}, ""},
		{"label boundary", Message{Sender: "a@notpartner.example"}, ""},
		{"subdomain", Message{Sender: "a@mail.example.com"}, "below"},
		{"deep subdomain", Message{Sender: "a@a.b.Example.COM"}, "below"},
		{"leading dot is not the name itself", Message{Sender: "a@example.com"}, ""},
		{"suffix without a dot", Message{Sender: "a@badexample.com"}, ""},
		{"A-label", Message{Sender: "a@XN--BCHER-KVA.example"}, "below"},
		{"null sender has no domain", Message{Sender: "", HELO: "partner.example"}, ""},
		{"helo, any case", Message{Sender: "a@x.test", HELO: "mx.helo.example"}, "helo"},
		{"helo label boundary", Message{Sender: "a@x.test", HELO: "xmx.helo.example"}, ""},
		{"v4 prefix", Message{Sender: "a@x.test", ClientIP: netip.MustParseAddr("192.0.2.200")}, "v4"},
		{"v4 bare address", Message{Sender: "a@x.test", ClientIP: netip.MustParseAddr("198.51.100.7")}, "v4"},
		{"v4 next address", Message{Sender: "a@x.test", ClientIP: netip.MustParseAddr("198.51.100.8")}, ""},
		{"v6 prefix", Message{Sender: "a@x.test", ClientIP: netip.MustParseAddr("2001:db8:1::25")}, "v6"},
		{"v6 outside", Message{Sender: "a@x.test", ClientIP: netip.MustParseAddr("2001:db9::25")}, ""},
		{"all conditions hold", Message{Sender: "a@both.example", ClientIP: netip.MustParseAddr("203.0.113.5")}, "both"},
		{"one condition fails", Message{Sender: "a@both.example", ClientIP: netip.MustParseAddr("192.168.0.1")}, ""},
		{"listener", Message{Sender: "a@x.test", ClientIP: other, Listener: "submission"}, "listener"},
		{"other listener", Message{Sender: "a@x.test", ClientIP: other, Listener: "smtpd"}, ""},
		{"first rule wins", Message{Sender: "a@partner.example", Listener: "submission"}, "exact"},
		{"confirmed name", Message{Sender: "a@x.test", ConfirmedName: "mx1.Forwarder.example"}, "named"},
		{"looked-up name", Message{Sender: "a@x.test", LookupName: func() string { return "mx1.forwarder.example" }}, "named"},
		{"no name", Message{Sender: "a@x.test", LookupName: func() string { return "" }}, ""},
		{"until: the day before", Message{Sender: "a@dated.example", Time: beforeUntil}, "dated"},
		{"until: from 00:00 UTC", Message{Sender: "a@dated.example", Time: time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)}, ""},
		{"until: after", Message{Sender: "a@dated.example", Time: time.Date(2027, 3, 1, 0, 30, 0, 0, time.FixedZone("CET", 3600))}, "dated"},
	}
	for _, tt := range tests {
		r := p.Rule(tt.m)
		got := ""
		if r != nil {
			got = r.Name
		}
		if got != tt.want {
			t.Errorf("%s: rule %q, want %q", tt.name, got, tt.want)
		}
	}
}

// TestRuleLookupOnlyWhenNeeded: the client name is looked up only when a
// rule with a client_name condition is tried, and once.
func TestRuleLookupOnlyWhenNeeded(t *testing.T) {
	t.Parallel()
	cfg := rulesConfig(t, `rules:
  - name: first
    when: {sender_domain: [first.example]}
    skip: true
  - name: named
    when: {client_name: [fwd.example]}
    mailfrom: {fail: accept}
`)
	p := New(cfg)
	if !p.NeedsClientName() || p.NeedsListener() {
		t.Errorf("NeedsClientName %v NeedsListener %v", p.NeedsClientName(), p.NeedsListener())
	}
	calls := 0
	lookup := func() string { calls++; return "fwd.example" }
	if r := p.Rule(Message{Sender: "a@first.example", LookupName: lookup}); r == nil || r.Name != "first" || calls != 0 {
		t.Errorf("rule %v after %d lookups", r, calls)
	}
	if r := p.Rule(Message{Sender: "a@x.test", LookupName: lookup}); r == nil || r.Name != "named" || calls != 1 {
		t.Errorf("rule %v after %d lookups", r, calls)
	}
	if New(testConfig()).NeedsClientName() {
		t.Error("a config without rules needs the client name")
	}
}

// TestRuleDecisions: a rule replaces the matrix for the results it names
// only, and a skip rule skips after the skip lists.
func TestRuleDecisions(t *testing.T) {
	t.Parallel()
	cfg := rulesConfig(t, `skip_senders: [listed.example]
rules:
  - name: partner-grace
    when: {sender_domain: [example.org]}
    until: 2027-03-01
    mailfrom: {permerror: accept, softfail: quarantine}
    helo: {fail: accept}
  - name: submission
    when: {listener: [submission]}
    skip: true
`)
	cfg.Policy.MailFrom[spf.PermError] = config.Reject
	p := New(cfg)
	m := Message{Sender: "alice@example.org", ClientIP: netip.MustParseAddr("192.0.2.1"), Time: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	for _, tt := range []struct {
		r      spf.Result
		action config.Action
		byRule bool
	}{
		{spf.PermError, config.Accept, true},
		{spf.Softfail, config.Quarantine, true},
		{spf.Fail, config.Reject, false},
		{spf.Pass, config.Accept, false},
	} {
		d := p.Decide(m, outcomeFor(tt.r))
		if d.Action != tt.action || d.Rule != "partner-grace" || d.ByRule != tt.byRule {
			t.Errorf("%s: %+v, want %s by rule %v", tt.r, d, tt.action, tt.byRule)
		}
	}
	// HELO overrides act on HELO outcomes only.
	helo := outcomeFor(spf.Fail)
	helo.Identity = spf.IdentityHELO
	if d, by := p.DecideMessage(m, outcomeFor(spf.Pass), helo); d.Action != config.Accept || by != outcomeFor(spf.Pass) && by.Identity != spf.IdentityMailFrom {
		t.Errorf("helo fail overridden: %+v by %v", d, by.Identity)
	}
	if note := RuleNote(p.Decide(m, outcomeFor(spf.PermError)), outcomeFor(spf.PermError)); note != "this site accepts permerror from example.org (rule partner-grace) until 2027-03-01" {
		t.Errorf("note %q", note)
	}
	if note := RuleNote(p.Decide(m, outcomeFor(spf.Fail)), outcomeFor(spf.Fail)); note != "" {
		t.Errorf("note %q for a result the rule does not name", note)
	}
	// Expired: the global matrix again.
	late := m
	late.Time = time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)
	if d := p.Decide(late, outcomeFor(spf.PermError)); d.Action != config.Reject || d.Rule != "" {
		t.Errorf("after until: %+v", d)
	}
	sub := Message{Sender: "bob@x.test", Listener: "submission"}
	if s := p.Skip(sub); s != SkipRule || s.Key() != "rule" || p.Rule(sub).Name != "submission" {
		t.Errorf("skip %v", s)
	}
	sub.Sender = "bob@listed.example"
	if s := p.Skip(sub); s != SkipSenders {
		t.Errorf("skip lists first: %v", s)
	}
}

// TestShadow: the shadow is the global matrix with its overrides and its
// own rules, never the live rules.
func TestShadow(t *testing.T) {
	t.Parallel()
	cfg := rulesConfig(t, `rules:
  - name: live-grace
    when: {sender_domain: [example.org]}
    mailfrom: {softfail: accept, fail: accept}
shadow:
  policy: {mailfrom: {softfail: reject}}
  rules:
    - name: shadow-skip
      when: {listener: [submission]}
      skip: true
    - name: bank
      when: {sender_domain: [bank.example]}
      mailfrom: {neutral: quarantine}
`)
	p := New(cfg)
	if !p.ShadowEnabled() || !p.NeedsListener() {
		t.Fatal("no shadow")
	}
	m := Message{Sender: "alice@example.org", ClientIP: netip.MustParseAddr("192.0.2.1")}
	if d := p.Shadow(m, outcomeFor(spf.Softfail), nil); !d.Known || d.Action != config.Reject || d.Rule != "" {
		t.Errorf("softfail: %+v", d)
	}
	if d := p.Shadow(m, outcomeFor(spf.Fail), nil); d.Action != config.Reject {
		t.Errorf("fail, live rule not in the shadow: %+v", d)
	}
	bank := Message{Sender: "a@bank.example"}
	if d := p.Shadow(bank, outcomeFor(spf.Neutral), nil); d.Action != config.Quarantine || d.Rule != "bank" {
		t.Errorf("bank: %+v", d)
	}
	sub := Message{Sender: "a@x.test", Listener: "submission"}
	if d := p.Shadow(sub, nil, nil); !d.Known || !d.Skipped || d.Rule != "shadow-skip" || d.Action != config.Accept {
		t.Errorf("shadow skip: %+v", d)
	}
	if d := p.Shadow(Message{Sender: "a@x.test"}, nil, nil); d.Known {
		t.Errorf("no checks, yet known: %+v", d)
	}
	local := Message{Sender: "a@x.test", ClientIP: netip.MustParseAddr("127.0.0.1")}
	if d := p.Shadow(local, nil, nil); !d.Known || !d.Skipped {
		t.Errorf("trusted network: %+v", d)
	}
	if New(testConfig()).Shadow(m, outcomeFor(spf.Fail), nil).Known {
		t.Error("a shadow without a shadow policy")
	}
}

// TestExpiring lists the rules within a week of their until.
func TestExpiring(t *testing.T) {
	t.Parallel()
	cfg := rulesConfig(t, `rules:
  - {name: soon, until: 2027-03-01, skip: true, when: {listener: [a]}}
  - {name: gone, until: 2027-02-20, skip: true, when: {listener: [b]}}
  - {name: far, until: 2028-01-01, skip: true, when: {listener: [c]}}
  - {name: long-gone, until: 2027-01-01, skip: true, when: {listener: [d]}}
shadow:
  rules:
    - {name: shadow-soon, until: 2027-03-02, skip: true}
`)
	got := New(cfg).Expiring(time.Date(2027, 2, 25, 12, 0, 0, 0, time.UTC))
	want := []Expiry{
		{Rule: "soon", Until: time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)},
		{Rule: "gone", Until: time.Date(2027, 2, 20, 0, 0, 0, 0, time.UTC), Expired: true},
		{Rule: "shadow-soon", Until: time.Date(2027, 3, 2, 0, 0, 0, 0, time.UTC), Shadow: true},
	}
	if len(got) != len(want) {
		t.Fatalf("Expiring = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Expiring[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestConfirmName: PTR, then A or AAAA back to the client.
func TestConfirmName(t *testing.T) {
	t.Parallel()
	z := dnstest.NewZone()
	if err := z.Add(
		`1.2.0.192.in-addr.arpa. PTR spoof.example.`,
		`1.2.0.192.in-addr.arpa. PTR MX1.Forwarder.example.`,
		`spoof.example. A 192.0.2.99`,
		`mx1.forwarder.example. A 192.0.2.1`,
		`2.2.0.192.in-addr.arpa. PTR liar.example.`,
		`liar.example. A 192.0.2.3`,
		`5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. PTR v6.forwarder.example.`,
		`v6.forwarder.example. AAAA 2001:db8::25`,
	); err != nil {
		t.Fatal(err)
	}
	z.Rcode("3.2.0.192.in-addr.arpa", dns.RcodeServerFailure)
	r := dnstest.NewMapResolver(z)
	for _, tt := range []struct {
		ip, want string
		err      bool
	}{
		{"192.0.2.1", "mx1.forwarder.example", false},
		{"192.0.2.2", "", false},
		{"192.0.2.4", "", false},
		{"192.0.2.3", "", true},
		{"2001:db8::25", "v6.forwarder.example", false},
	} {
		got, err := ConfirmName(context.Background(), r, netip.MustParseAddr(tt.ip))
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("ConfirmName(%s) = %q, %v; want %q, error %v", tt.ip, got, err, tt.want, tt.err)
		}
	}
}
