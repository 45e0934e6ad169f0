package spf

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

// The examples of RFC 7208 §7.4.
func TestMacroRFCExamples(t *testing.T) {
	env4 := &MacroEnv{
		Sender: "strong-bad@email.example.com",
		Domain: "email.example.com",
		IP:     netip.MustParseAddr("192.0.2.3"),
		HELO:   "mx.example.org",
	}
	env6 := *env4
	env6.IP = netip.MustParseAddr("2001:db8::cb01")
	tests := []struct {
		env  *MacroEnv
		in   string
		want string
	}{
		{env4, "%{s}", "strong-bad@email.example.com"},
		{env4, "%{o}", "email.example.com"},
		{env4, "%{d}", "email.example.com"},
		{env4, "%{d4}", "email.example.com"},
		{env4, "%{d3}", "email.example.com"},
		{env4, "%{d2}", "example.com"},
		{env4, "%{d1}", "com"},
		{env4, "%{dr}", "com.example.email"},
		{env4, "%{d2r}", "example.email"},
		{env4, "%{l}", "strong-bad"},
		{env4, "%{l-}", "strong.bad"},
		{env4, "%{lr}", "strong-bad"},
		{env4, "%{lr-}", "bad.strong"},
		{env4, "%{l1r-}", "strong"},
		{env4, "%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"},
		{env4, "%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"},
		{env4, "%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"},
		{env4, "%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"},
		{env4, "%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"},
		// The RFC writes the nibbles in lower case, the test suite in upper
		// case; DNS does not care, and we follow the suite.
		{&env6, "%{ir}.%{v}._spf.%{d2}", "1.0.B.C.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.B.D.0.1.0.0.2.ip6._spf.example.com"},
	}
	for _, tt := range tests {
		m, err := ParseMacroString(tt.in, false)
		if err != nil {
			t.Errorf("ParseMacroString(%q): %v", tt.in, err)
			continue
		}
		if got := m.Expand(tt.env); got != tt.want {
			t.Errorf("%q expands to %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestMacroExpansion(t *testing.T) {
	env := &MacroEnv{
		Sender:   "Joe.Q+tag@Example.org",
		Domain:   "example.org",
		IP:       netip.MustParseAddr("2001:db8::1"),
		HELO:     "mail.example.org",
		Receiver: "mx.example.net",
		Now:      time.Unix(1700000000, 0),
		PTR:      func() string { return "host.example.org" },
	}
	tests := []struct {
		in   string
		want string
	}{
		{"%%", "%"},
		{"%_", " "},
		{"%-", "%20"},
		{"a%%b%_c%-d", "a%b c%20d"},
		{"%{S}", "Joe.Q%2Btag%40Example.org"},
		{"%{L}", "Joe.Q%2Btag"},
		{"%{l+}", "Joe.Q.tag"},
		{"%{l.+}", "Joe.Q.tag"},
		{"%{l1.+}", "tag"},
		{"%{l2r.+}", "Q.Joe"},
		{"%{lr+.}", "tag.Q.Joe"},
		{"%{d99}", "example.org"},
		{"%{d99999999999999999999}", "example.org"},
		{"%{c}", "2001:db8::1"},
		{"%{r}", "mx.example.net"},
		{"%{t}", "1700000000"},
		{"%{p}", "host.example.org"},
		{"%{v}", "ip6"},
		{"%{h}", "mail.example.org"},
		{"%{H}", "mail.example.org"},
		{"%{i}", "2.0.0.1.0.D.B.8.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1"},
		{"%{l=}", "Joe.Q+tag"},
		{"%{o-}", "Example.org"},
		{"%{d1r}", "example"},
		{"The %{s} was sent from %{c}", "The Joe.Q+tag@Example.org was sent from 2001:db8::1"},
	}
	for _, tt := range tests {
		m, err := ParseMacroString(tt.in, true)
		if err != nil {
			t.Errorf("ParseMacroString(%q): %v", tt.in, err)
			continue
		}
		if got := m.Expand(env); got != tt.want {
			t.Errorf("%q expands to %q, want %q", tt.in, got, tt.want)
		}
		if m.String() != tt.in {
			t.Errorf("String() = %q, want %q", m.String(), tt.in)
		}
	}
}

func TestMacroUnknownValues(t *testing.T) {
	env := &MacroEnv{Sender: "a@b.example", IP: netip.MustParseAddr("192.0.2.1")}
	for in, want := range map[string]string{"%{p}": "unknown", "%{r}": "unknown", "%{v}": "in-addr", "%{i}": "192.0.2.1"} {
		m, err := ParseMacroString(in, true)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Expand(env); got != want {
			t.Errorf("%s = %q, want %q", in, got, want)
		}
	}
}

func TestMacroInvalid(t *testing.T) {
	tests := []struct {
		in          string
		explanation bool
		problem     string
	}{
		{"%", false, "lone"},
		{"%x", false, "must be followed by"},
		{"%{", false, "unterminated"},
		{"%{}", false, "no macro letter"},
		{"%{q}", false, "unknown macro letter"},
		{"%{d0}", false, "must not be zero"},
		{"%{d00}", false, "must not be zero"},
		{"%{d2x}", false, "bad delimiter"},
		{"%{dr2}", false, "bad delimiter"},
		{"%{c}", false, "only allowed in explanations"},
		{"%{r}", false, "only allowed in explanations"},
		{"%{t}", false, "only allowed in explanations"},
		{"a b", false, "not allowed"},
		{"caf\xc3\xa9", true, "not allowed"},
		{"tab\there", true, "not allowed"},
		{"The %{x}-files.", true, "unknown macro letter"},
	}
	for _, tt := range tests {
		_, err := ParseMacroString(tt.in, tt.explanation)
		if err == nil || !strings.Contains(err.Error(), tt.problem) {
			t.Errorf("ParseMacroString(%q, %v) error %v, want one mentioning %q", tt.in, tt.explanation, err, tt.problem)
		}
	}
}
