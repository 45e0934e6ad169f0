package config

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf-milter/spf-milter/spf"
)

// TestRulesParse reads a file with rules and a shadow policy, and brings
// it back through YAML() unchanged.
func TestRulesParse(t *testing.T) {
	t.Parallel()
	file := `rules:
  - name: partner-grace
    when:
      sender_domain: [Partner.Example., .partner.example]
      helo: [mx.partner.example]
      client: [192.0.2.0/24, "2001:db8::/32", 198.51.100.7]
      client_name: [.forwarder.example]
      listener: [smtpd]
    until: 2027-03-01
    mailfrom: {permerror: accept, fail: quarantine}
    helo: {fail: accept}
  - name: submission
    when: {listener: [submission]}
    skip: true
  - name: catch-all
    mailfrom: {softfail: quarantine}
shadow:
  policy: {mailfrom: {softfail: reject}}
  rules:
    - name: strict
      when: {sender_domain: [bank.example]}
      mailfrom: {softfail: reject, neutral: reject}
`
	cfg, err := Parse("t.yaml", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	want := []Rule{
		{
			Name: "partner-grace",
			When: When{
				SenderDomain: []string{"partner.example", ".partner.example"},
				HELO:         []string{"mx.partner.example"},
				Client:       []netipPrefix{mustPrefix("192.0.2.0/24"), mustPrefix("2001:db8::/32"), mustPrefix("198.51.100.7/32")},
				ClientName:   []string{".forwarder.example"},
				Listener:     []string{"smtpd"},
			},
			Until:    time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC),
			MailFrom: map[spf.Result]Action{spf.PermError: Accept, spf.Fail: Quarantine},
			HELO:     map[spf.Result]Action{spf.Fail: Accept},
		},
		{Name: "submission", When: When{Listener: []string{"submission"}}, Skip: true},
		{Name: "catch-all", MailFrom: map[spf.Result]Action{spf.Softfail: Quarantine}},
	}
	if !reflect.DeepEqual(cfg.Rules, want) {
		t.Errorf("rules:\n%+v\nwant\n%+v", cfg.Rules, want)
	}
	if got := cfg.Shadow.Policy.MailFrom; !reflect.DeepEqual(got, map[spf.Result]Action{spf.Softfail: Reject}) || cfg.Shadow.Policy.HELO != nil {
		t.Errorf("shadow.policy = %+v", cfg.Shadow.Policy)
	}
	if len(cfg.Shadow.Rules) != 1 || cfg.Shadow.Rules[0].Name != "strict" || !cfg.Shadow.Enabled() {
		t.Errorf("shadow.rules = %+v", cfg.Shadow.Rules)
	}
	back, err := Parse("effective.yaml", cfg.YAML())
	if err != nil {
		t.Fatalf("%v\n%s", err, cfg.YAML())
	}
	if !reflect.DeepEqual(back, cfg) {
		t.Errorf("round trip changed the config:\n%s\nback:\n%s", cfg.YAML(), back.YAML())
	}
	if Default().Shadow.Enabled() {
		t.Error("the default config has a shadow policy")
	}
}

// TestRulesErrors holds each mistake in a rule to its line, key, bad
// value and allowed values.
func TestRulesErrors(t *testing.T) {
	t.Parallel()
	const top = "rules:\n"
	tests := []struct {
		name, file, want string
	}{
		{"empty condition list", top + "  - name: a\n    when:\n      client: []\n    skip: true\n",
			`t.yaml:4: rules[1].when.client: bad value "[]": an empty list can never match; leave the condition out to match any (allowed: a list, each item ` + allowedNetwork + ")"},
		{"null condition", top + "  - name: a\n    when:\n      listener:\n    skip: true\n",
			`t.yaml:4: rules[1].when.listener: bad value "": an empty list can never match`},
		{"unknown condition", top + "  - name: a\n    when: {sender: [a.example]}\n    skip: true\n",
			`t.yaml:3: rules[1].when.sender: unknown key (allowed: sender_domain, helo, client, client_name, listener)`},
		{"duplicate name", top + "  - name: a\n    skip: true\n    when: {listener: [x]}\n  - name: a\n    skip: true\n",
			`t.yaml:5: rules[2].name: bad value "a": duplicate rule name (first at line 2)`},
		{"bad date", top + "  - name: a\n    until: 2027-02-30\n    skip: true\n",
			`t.yaml:3: rules[1].until: bad value "2027-02-30": not a date YYYY-MM-DD (allowed: ` + allowedDate + ")"},
		{"skip and overrides", top + "  - name: a\n    skip: true\n    mailfrom: {fail: accept}\n",
			`t.yaml:3: rules[1].skip: bad value "true": skip: true with mailfrom or helo overrides`},
		{"neither skip nor overrides", top + "  - name: a\n    when: {listener: [x]}\n",
			`t.yaml:2: rules[1]: bad value "{name: a, when: {listener: [x]}}": neither skip: true nor mailfrom or helo overrides: the rule would do nothing (allowed: ` + allowedRule + ")"},
		{"no name", top + "  - skip: true\n",
			`t.yaml:2: rules[1]: bad value "{skip: true}": no name`},
		{"bad action", top + "  - name: a\n    mailfrom: {fail: drop}\n",
			`t.yaml:3: rules[1].mailfrom.fail: bad value "drop": unknown value (allowed: accept, reject, tempfail, quarantine)`},
		{"U-label", top + "  - name: a\n    when: {sender_domain: [.bücher.example]}\n    skip: true\n",
			`t.yaml:3: rules[1].when.sender_domain: bad value ".bücher.example": not ASCII; write the international name in its A-label form, .xn--bcher-kva.example`},
		{"bad network", top + "  - name: a\n    when:\n      client: [10.1.2.3/8]\n    skip: true\n",
			`t.yaml:4: rules[1].when.client: bad value "10.1.2.3/8": bits set after the prefix length; the network is 10.0.0.0/8`},
		{"unreachable after a catch-all", top + "  - name: a\n    skip: true\n  - name: b\n    when: {listener: [x]}\n    skip: true\n",
			`t.yaml:4: rules[2]: can never match: the rule at line 2 before it matches every message (no when, no until)`},
		{"rule not a mapping", top + "  - a\n",
			`t.yaml:2: rules[1]: bad value "a": a single value, where a rule (a mapping) is needed`},
		{"bad name", top + "  - name: a b\n    skip: true\n",
			`t.yaml:2: rules[1].name: bad value "a b": character ' ' not allowed in a rule name`},
		{"shadow rules", "shadow:\n  rules:\n    - name: a\n      when: {helo: []}\n      skip: true\n",
			`t.yaml:4: shadow.rules[1].when.helo: bad value "[]": an empty list can never match`},
		{"shadow policy key", "shadow:\n  policy: {mailfrom: {fail: accept}, ehlo: {fail: accept}}\n",
			`t.yaml:2: shadow.policy.ehlo: unknown key; did you mean "helo"? (allowed: mailfrom, helo)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse("t.yaml", []byte(tt.file))
			if err == nil {
				t.Fatalf("Parse succeeded; want %s", tt.want)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error:\n got: %v\nwant: %s...", err, tt.want)
			}
		})
	}
}

type netipPrefix = netip.Prefix

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
