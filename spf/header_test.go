package spf

import (
	"fmt"
	"net/mail"
	"net/netip"
	"net/textproto"
	"regexp"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/authres"
)

// headerOutcome builds the outcome of a check of joe@example.org (or, for
// the HELO identity, of mail.example.org) from 192.0.2.1 with result r.
func headerOutcome(id Identity, r Result) *Outcome {
	o := &Outcome{
		Result:   r,
		Identity: id,
		Domain:   "example.org",
		Sender:   "joe@example.org",
		IP:       netip.MustParseAddr("192.0.2.1"),
		HELO:     "mail.example.org",
	}
	if id == IdentityHELO {
		o.Domain = "mail.example.org"
		o.Sender = "postmaster@mail.example.org"
	}
	switch r {
	case Pass:
		o.Mechanism = "ip4:192.0.2.0/24"
	case Fail:
		o.Mechanism = "-all"
		o.Explanation = "example.org does not designate 192.0.2.1 as a permitted sender"
	case Softfail:
		o.Mechanism = "~all"
	case Neutral:
		o.Mechanism = "default"
	case TempError:
		o.Problem = "TXT " + o.Domain + ": i/o timeout"
	case PermError:
		o.Problem = "more than 10 DNS lookups"
	}
	return o
}

func TestReceivedSPF(t *testing.T) {
	const mf = `client-ip=192.0.2.1; envelope-from="joe@example.org"; helo=mail.example.org; receiver=mx.example.net`
	const hf = `client-ip=192.0.2.1; envelope-from="postmaster@mail.example.org"; helo=mail.example.org; receiver=mx.example.net`
	tests := []struct {
		id   Identity
		r    Result
		want string
	}{
		{IdentityMailFrom, Pass, `pass (mx.example.net: domain of joe@example.org designates 192.0.2.1 as permitted sender) ` + mf + `; mechanism="ip4:192.0.2.0/24"; identity=mailfrom`},
		{IdentityMailFrom, Fail, `fail (mx.example.net: domain of joe@example.org does not designate 192.0.2.1 as permitted sender) ` + mf + `; mechanism=-all; identity=mailfrom`},
		{IdentityMailFrom, Softfail, `softfail (mx.example.net: domain of transitioning joe@example.org does not designate 192.0.2.1 as permitted sender) ` + mf + `; mechanism=~all; identity=mailfrom`},
		{IdentityMailFrom, Neutral, `neutral (mx.example.net: 192.0.2.1 is neither permitted nor denied by domain of joe@example.org) ` + mf + `; mechanism=default; identity=mailfrom`},
		{IdentityMailFrom, None, `none (mx.example.net: example.org does not provide an SPF record) ` + mf + `; identity=mailfrom`},
		{IdentityMailFrom, TempError, `temperror (mx.example.net: temporary error while checking domain of joe@example.org) ` + mf + `; problem="TXT example.org: i/o timeout"; identity=mailfrom`},
		{IdentityMailFrom, PermError, `permerror (mx.example.net: permanent error in the SPF policy for domain of joe@example.org) ` + mf + `; problem="more than 10 DNS lookups"; identity=mailfrom`},
		{IdentityHELO, Pass, `pass (mx.example.net: domain of mail.example.org designates 192.0.2.1 as permitted sender) ` + hf + `; mechanism="ip4:192.0.2.0/24"; identity=helo`},
		{IdentityHELO, Fail, `fail (mx.example.net: domain of mail.example.org does not designate 192.0.2.1 as permitted sender) ` + hf + `; mechanism=-all; identity=helo`},
		{IdentityHELO, Softfail, `softfail (mx.example.net: domain of transitioning mail.example.org does not designate 192.0.2.1 as permitted sender) ` + hf + `; mechanism=~all; identity=helo`},
		{IdentityHELO, Neutral, `neutral (mx.example.net: 192.0.2.1 is neither permitted nor denied by domain of mail.example.org) ` + hf + `; mechanism=default; identity=helo`},
		{IdentityHELO, None, `none (mx.example.net: mail.example.org does not provide an SPF record) ` + hf + `; identity=helo`},
		{IdentityHELO, TempError, `temperror (mx.example.net: temporary error while checking domain of mail.example.org) ` + hf + `; problem="TXT mail.example.org: i/o timeout"; identity=helo`},
		{IdentityHELO, PermError, `permerror (mx.example.net: permanent error in the SPF policy for domain of mail.example.org) ` + hf + `; problem="more than 10 DNS lookups"; identity=helo`},
	}
	for _, tt := range tests {
		t.Run(string(tt.id)+"/"+string(tt.r), func(t *testing.T) {
			got := headerOutcome(tt.id, tt.r).ReceivedSPF("mx.example.net")
			if got != tt.want {
				t.Errorf("ReceivedSPF:\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestReceivedSPFForms(t *testing.T) {
	tests := []struct {
		name     string
		o        *Outcome
		receiver string
		want     string
	}{
		{
			name: "IPv6 client-ip is quoted, no receiver",
			o: &Outcome{Result: Pass, Identity: IdentityMailFrom, Domain: "example.org",
				Sender: "joe@example.org", IP: netip.MustParseAddr("2001:db8::1"), HELO: "[2001:db8::1]",
				Mechanism: "ip6:2001:db8::/32"},
			want: `pass (domain of joe@example.org designates 2001:db8::1 as permitted sender) client-ip="2001:db8::1"; envelope-from="joe@example.org"; helo="[2001:db8::1]"; mechanism="ip6:2001:db8::/32"; identity=mailfrom`,
		},
		{
			name:     "decision through include",
			o:        &Outcome{Result: Pass, Identity: IdentityMailFrom, Domain: "example.org", Sender: "joe@example.org", IP: netip.MustParseAddr("192.0.2.1"), HELO: "h.example.org", Mechanism: "include:_spf.example.com", MechanismDomain: "example.org"},
			receiver: "mx",
			want:     `pass (mx: domain of joe@example.org designates 192.0.2.1 as permitted sender) client-ip=192.0.2.1; envelope-from="joe@example.org"; helo=h.example.org; receiver=mx; mechanism="include:_spf.example.com"; identity=mailfrom`,
		},
		{
			name:     "unknown result is reported as permerror",
			o:        &Outcome{Result: Result("pass\r\nX-Evil: 1"), Identity: Identity("evil"), Sender: "joe@example.org"},
			receiver: "mx",
			want:     `permerror (mx: permanent error in the SPF policy for domain of joe@example.org) envelope-from="joe@example.org"; receiver=mx`,
		},
		{
			name: "zero outcome",
			o:    &Outcome{},
			want: `permerror (permanent error in the SPF policy for domain of the sender)`,
		},
		{
			name: "none without domain",
			o:    &Outcome{Result: None, Identity: IdentityMailFrom, Sender: "joe@-bad-", Problem: "invalid domain"},
			want: `none (domain of joe@-bad- does not provide an SPF record) envelope-from="joe@-bad-"; problem="invalid domain"; identity=mailfrom`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.o.ReceivedSPF(tt.receiver); got != tt.want {
				t.Errorf("ReceivedSPF:\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestAuthenticationResults(t *testing.T) {
	tests := []struct {
		id   Identity
		r    Result
		want string
	}{
		{IdentityMailFrom, Pass, `mx.example.net; spf=pass smtp.mailfrom=example.org`},
		{IdentityMailFrom, Fail, `mx.example.net; spf=fail smtp.mailfrom=example.org`},
		{IdentityMailFrom, Softfail, `mx.example.net; spf=softfail smtp.mailfrom=example.org`},
		{IdentityMailFrom, Neutral, `mx.example.net; spf=neutral smtp.mailfrom=example.org`},
		{IdentityMailFrom, None, `mx.example.net; spf=none smtp.mailfrom=example.org`},
		{IdentityMailFrom, TempError, `mx.example.net; spf=temperror reason="TXT example.org: i/o timeout" smtp.mailfrom=example.org`},
		{IdentityMailFrom, PermError, `mx.example.net; spf=permerror reason="more than 10 DNS lookups" smtp.mailfrom=example.org`},
		{IdentityHELO, Pass, `mx.example.net; spf=pass smtp.helo=mail.example.org`},
		{IdentityHELO, Fail, `mx.example.net; spf=fail smtp.helo=mail.example.org`},
		{IdentityHELO, Softfail, `mx.example.net; spf=softfail smtp.helo=mail.example.org`},
		{IdentityHELO, Neutral, `mx.example.net; spf=neutral smtp.helo=mail.example.org`},
		{IdentityHELO, None, `mx.example.net; spf=none smtp.helo=mail.example.org`},
		{IdentityHELO, TempError, `mx.example.net; spf=temperror reason="TXT mail.example.org: i/o timeout" smtp.helo=mail.example.org`},
		{IdentityHELO, PermError, `mx.example.net; spf=permerror reason="more than 10 DNS lookups" smtp.helo=mail.example.org`},
	}
	for _, tt := range tests {
		t.Run(string(tt.id)+"/"+string(tt.r), func(t *testing.T) {
			got := AuthenticationResults("mx.example.net", headerOutcome(tt.id, tt.r))
			if got != tt.want {
				t.Errorf("AuthenticationResults:\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

// TestRelayInHeaders: an outcome for the client a relay received the
// message from names the relay in a comment of both headers, which
// readers of the headers skip.
func TestRelayInHeaders(t *testing.T) {
	o := headerOutcome(IdentityMailFrom, Pass)
	o.IP, o.Relay = netip.MustParseAddr("203.0.113.5"), netip.MustParseAddr("198.51.100.7")
	want := `pass (mx.example.net: domain of joe@example.org designates 203.0.113.5 as permitted sender; received through relay 198.51.100.7) ` +
		`client-ip=203.0.113.5; envelope-from="joe@example.org"; helo=mail.example.org; receiver=mx.example.net; mechanism="ip4:192.0.2.0/24"; identity=mailfrom`
	if got := o.ReceivedSPF("mx.example.net"); got != want {
		t.Errorf("ReceivedSPF:\n got %s\nwant %s", got, want)
	}
	wantAR := `mx.example.net; spf=pass (client 203.0.113.5 received through relay 198.51.100.7) smtp.mailfrom=example.org`
	ar := AuthenticationResults("mx.example.net", o)
	if ar != wantAR {
		t.Errorf("AuthenticationResults:\n got %s\nwant %s", ar, wantAR)
	}
	id, results, err := authres.Parse(ar)
	if err != nil || id != "mx.example.net" || len(results) != 1 {
		t.Fatalf("authres.Parse(%q) = %q, %v, %v", ar, id, results, err)
	}
	if r, ok := results[0].(*authres.SPFResult); !ok || r.Value != authres.ResultPass || r.From != "example.org" {
		t.Errorf("authres.Parse(%q) = %+v", ar, results[0])
	}
	checkHeaderProperties(t, "mx.example.net", []*Outcome{o})

	// No client found behind the relay: none, saying why.
	none := &Outcome{Result: None, Identity: IdentityMailFrom, Domain: "example.org", Sender: "joe@example.org",
		Relay: netip.MustParseAddr("198.51.100.7"), ProblemKind: ProblemNoOrigin,
		Problem: "Received field 1: no from clause"}
	wantNone := `none (mx.example.net: no client to check: Received field 1: no from clause; received through relay 198.51.100.7) ` +
		`envelope-from="joe@example.org"; receiver=mx.example.net; problem="Received field 1: no from clause"; identity=mailfrom`
	if got := none.ReceivedSPF("mx.example.net"); got != wantNone {
		t.Errorf("ReceivedSPF without a client:\n got %s\nwant %s", got, wantNone)
	}
	wantNoneAR := `mx.example.net; spf=none (received through relay 198.51.100.7) reason="Received field 1: no from clause" smtp.mailfrom=example.org`
	if got := AuthenticationResults("mx.example.net", none); got != wantNoneAR {
		t.Errorf("AuthenticationResults without a client:\n got %s\nwant %s", got, wantNoneAR)
	}
	checkHeaderProperties(t, "mx.example.net", []*Outcome{none})
}

func TestAuthenticationResultsForms(t *testing.T) {
	helo := headerOutcome(IdentityHELO, Pass)
	mailFrom := headerOutcome(IdentityMailFrom, Fail)
	nullSender := &Outcome{Result: Pass, Identity: IdentityMailFrom, Sender: "postmaster@mail.example.org", HELO: "mail.example.org"}
	tests := []struct {
		name     string
		authserv string
		outcomes []*Outcome
		want     string
	}{
		{"no outcome", "mx.example.net", nil, `mx.example.net; none`},
		{"only nil", "mx.example.net", []*Outcome{nil}, `mx.example.net; none`},
		// SpamAssassin reads the last spf= entry: MAIL FROM must be last.
		{"helo before mailfrom", "mx.example.net", []*Outcome{mailFrom, nil, helo},
			`mx.example.net; spf=pass smtp.helo=mail.example.org; spf=fail smtp.mailfrom=example.org`},
		{"domain from sender when Domain is empty", "mx", []*Outcome{nullSender},
			`mx; spf=pass smtp.mailfrom=mail.example.org`},
		{"no properties leaves no trailing space", "mx", []*Outcome{{Result: Pass, Identity: IdentityMailFrom}},
			`mx; spf=pass`},
		{"authserv-id with space is quoted", "mx example", []*Outcome{mailFrom},
			`"mx example"; spf=fail smtp.mailfrom=example.org`},
		{"authserv-id injection", "mx\r\nX-Evil: 1", []*Outcome{mailFrom},
			`"mx??X-Evil: 1"; spf=fail smtp.mailfrom=example.org`},
		{"empty authserv-id", "", []*Outcome{mailFrom},
			`""; spf=fail smtp.mailfrom=example.org`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := AuthenticationResults(tt.authserv, tt.outcomes...); got != tt.want {
				t.Errorf("AuthenticationResults:\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestAuthEntry(t *testing.T) {
	tests := []struct {
		name string
		o    *Outcome
		want authEntry
	}{
		{"mailfrom with a problem", headerOutcome(IdentityMailFrom, PermError),
			authEntry{result: PermError, reason: "more than 10 DNS lookups", from: "example.org"}},
		{"helo", headerOutcome(IdentityHELO, Pass), authEntry{result: Pass, helo: "mail.example.org"}},
		{"domain from the sender", &Outcome{Result: Pass, Identity: IdentityMailFrom, Sender: "a@b.example"},
			authEntry{result: Pass, from: "b.example"}},
		// Readers that ignore quoting split at ';' and take key=value
		// words as properties (see cleanReason).
		{"structure in the reason", &Outcome{Result: PermError, Identity: IdentityHELO, HELO: "h;x=y",
			Problem: "2 records; spf=pass smtp.mailfrom=victim.example"},
			authEntry{result: PermError, reason: "2 records, spf:pass smtp.mailfrom:victim.example", helo: "h?x?y"}},
		{"unknown result", &Outcome{Result: "pass; x", Identity: IdentityMailFrom}, authEntry{result: PermError}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.o.authEntry(); got != tt.want {
				t.Errorf("authEntry() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestPvalue(t *testing.T) {
	tests := []struct{ in, want string }{
		{"example.org", "example.org"},
		{"mail.example.org", "mail.example.org"},
		{"_spf.example.org", "_spf.example.org"}, // a token
		{"joe@example.org", "joe@example.org"},
		{"@example.org", "@example.org"},
		{"a.b+c@x-y.example", "a.b+c@x-y.example"},
		// Each of these authres.Format would have written bare.
		{"[192.0.2.1]", `"[192.0.2.1]"`},
		{"a/b", `"a/b"`},
		{"a,b", `"a,b"`},
		{`a\b`, `"a\\b"`},
		{"a@b@c", `"a@b@c"`},
		{"joe@-bad-.example", `"joe@-bad-.example"`},
		{"joe@a..b", `"joe@a..b"`},
		{"a..b@example.org", `"a..b@example.org"`},
		{"a b", `"a b"`},
		{`"q"`, `"\"q\""`},
		{"", `""`},
	}
	for _, tt := range tests {
		if got := pvalue(tt.in); got != tt.want {
			t.Errorf("pvalue(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

// hostileValues are what a client or a DNS zone can put into an outcome,
// with the text each must become in a header value (before quoting).
var hostileValues = []struct {
	name, in, clean string
}{
	{"crlf injection", "a\r\nX-Evil: 1", "a??X-Evil: 1"},
	{"bare lf", "a\nX-Evil: 1", "a?X-Evil: 1"},
	{"nul", "a\x00b", "a?b"},
	{"tab and del", "a\tb\x7fc", "a?b?c"},
	{"escape sequence", "\x1b[31mred", "?[31mred"},
	{"8-bit latin-1", "caf\xe9", "caf?"},
	{"utf-8", "bücher.example", "b?cher.example"},
	{"quotes", `"joe smith"@example.org`, `"joe smith"@example.org`},
	{"backslashes", `a\b\"c\`, `a\b\"c\`},
	{"parentheses", "a) (b", "a) (b"},
	{"semicolons", "x; identity=helo; y=", "x; identity=helo; y="},
	{"commas", "a,b", "a,b"},
	{"very long", strings.Repeat("a", 5000), strings.Repeat("a", maxHeaderValue-3) + "..."},
	{"long 8-bit", strings.Repeat("\xff", 1000), strings.Repeat("?", maxHeaderValue-3) + "..."},
	{"bare cr", "a\rb", "a?b"},
	{"fold injection", "a\r\n b", "a?? b"},
	{"other controls", "\x01\x02\x1f\x08", "????"},
	{"del", "\x7f", "?"},
	{"invalid utf-8", "\xc3\x28\xa0\xa1\xe2\x82", "?(????"},
	{"utf-8 of every width", "\u00e9\u2603\U0001F600", "???"},
	{"10 KB", strings.Repeat("b", 10240), strings.Repeat("b", maxHeaderValue-3) + "..."},
	{"10 KB of quotes", strings.Repeat(`"`, 10240), strings.Repeat(`"`, maxHeaderValue-3) + "..."},
	{"10 KB of backslashes", strings.Repeat(`\`, 10240), strings.Repeat(`\`, maxHeaderValue-3) + "..."},
	{"10 KB of parentheses", strings.Repeat("(", 10240), strings.Repeat("(", maxHeaderValue-3) + "..."},
	{"10 KB of words", strings.Repeat("ab ", 3414), strings.Repeat("ab ", 85)[:maxHeaderValue-3] + "..."},
	{"10 KB of NUL", strings.Repeat("\x00", 10240), strings.Repeat("?", maxHeaderValue-3) + "..."},
	{"result injection", "x; spf=pass smtp.mailfrom=victim.example", "x; spf=pass smtp.mailfrom=victim.example"},
	{"property injection", "x smtp.helo=victim.example smtp.mailfrom=victim.example", "x smtp.helo=victim.example smtp.mailfrom=victim.example"},
	{"identity injection", "x; identity=mailfrom; envelope-from=victim.example", "x; identity=mailfrom; envelope-from=victim.example"},
	{"quoted-string breakout", `a" b; c="d`, `a" b; c="d`},
	{"comment breakout", `a\) b (c`, `a\) b (c`},
}

// hostileOutcome fills every text field of an outcome with v.
func hostileOutcome(id Identity, r Result, v string) *Outcome {
	return &Outcome{
		Result:          r,
		Identity:        id,
		Domain:          v,
		Sender:          v,
		IP:              netip.MustParseAddr("192.0.2.1"),
		HELO:            v,
		Record:          v,
		Mechanism:       v,
		MechanismDomain: v,
		Explanation:     v,
		Problem:         v,
	}
}

func TestReceivedSPFHostile(t *testing.T) {
	for _, hv := range hostileValues {
		for _, id := range []Identity{IdentityMailFrom, IdentityHELO} {
			for _, r := range Results {
				t.Run(fmt.Sprintf("%s/%s/%s", hv.name, id, r), func(t *testing.T) {
					got := hostileOutcome(id, r, hv.in).ReceivedSPF(hv.in)
					checkPrintable(t, got)
					checkOneHeader(t, "Received-SPF", got)
					res, comment, pairs, err := parseReceivedSPF(got)
					if err != nil {
						t.Fatalf("%v in %s", err, got)
					}
					if res != string(r) {
						t.Errorf("result %q, want %q", res, r)
					}
					if !strings.Contains(comment, hv.clean) {
						t.Errorf("comment %q does not contain %q", comment, hv.clean)
					}
					want := []string{
						"client-ip", "192.0.2.1",
						"envelope-from", hv.clean,
						"helo", hv.clean,
						"receiver", hv.clean,
						"mechanism", hv.clean,
						"problem", hv.clean,
						"identity", string(id),
					}
					if strings.Join(pairs, "\x00") != strings.Join(want, "\x00") {
						t.Errorf("pairs\n got %q\nwant %q\nfrom %s", pairs, want, got)
					}
					checkSpamAssassinReceivedSPF(t, got, r, id)
				})
			}
		}
	}
}

// TestReceivedSPFSpamAssassin: SpamAssassin takes the result from the start
// of the header and the identity from the last "identity=" (a greedy
// ".*\bidentity=", docs/interop.md), so text in earlier values must not fool it.
func TestReceivedSPFSpamAssassin(t *testing.T) {
	sa := regexp.MustCompile(`(?i)^received-spf:\s*(pass|neutral|(?:soft)?fail|(?:temp|perm)error|none)\b(?:.*\bidentity=([a-z]+))?`)
	for _, v := range []string{"identity=helo", "x; identity=helo", "a:x.identity=helo.example", "(identity=helo)"} {
		for _, id := range []Identity{IdentityMailFrom, IdentityHELO} {
			o := hostileOutcome(id, Fail, v)
			h := "Received-SPF: " + o.ReceivedSPF(v)
			m := sa.FindStringSubmatch(h)
			if m == nil || m[1] != "fail" || m[2] != string(id) {
				t.Errorf("SpamAssassin would read %q from %s", m, h)
			}
		}
	}
}

func TestAuthenticationResultsHostile(t *testing.T) {
	for _, hv := range hostileValues {
		for _, r := range Results {
			t.Run(hv.name+"/"+string(r), func(t *testing.T) {
				mf := hostileOutcome(IdentityMailFrom, r, hv.in)
				helo := hostileOutcome(IdentityHELO, r, hv.in)
				got := AuthenticationResults(hv.in, mf, helo)
				checkPrintable(t, got)
				checkOneHeader(t, "Authentication-Results", got)
				id, results, err := parseAuthResults(got)
				if err != nil {
					t.Fatalf("%v in %s", err, got)
				}
				if id != hv.clean {
					t.Errorf("authserv-id %q, want %q", id, hv.clean)
				}
				// ';' and '=' are replaced in reason and smtp.* values
				// (see cleanReason).
				reason := strings.NewReplacer(";", ",", "=", ":").Replace(hv.clean)
				pv := strings.NewReplacer(";", "?", "=", "?").Replace(hv.clean)
				want := []string{
					"spf=" + string(r), "reason=" + reason, "smtp.helo=" + pv,
					"spf=" + string(r), "reason=" + reason, "smtp.mailfrom=" + pv,
				}
				if strings.Join(results, "\x00") != strings.Join(want, "\x00") {
					t.Errorf("results\n got %q\nwant %q\nfrom %s", results, want, got)
				}
				// What go-msgauth and SpamAssassin make of it, with a
				// well-formed authserv-id.
				checkHeaderReaders(t, "mx.example.net", []*Outcome{mf, helo})
			})
		}
	}
}

// checkPrintable fails unless s is one line of printable ASCII.
func checkPrintable(t testing.TB, s string) {
	t.Helper()
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			t.Fatalf("byte %#02x at %d in %q", s[i], i, s)
		}
	}
}

// checkOneHeader parses name: value as a message header and fails unless
// exactly that one field comes out, with the same value.
func checkOneHeader(t testing.TB, name, value string) {
	t.Helper()
	m, err := mail.ReadMessage(strings.NewReader(name + ": " + value + "\r\n\r\n"))
	if err != nil {
		t.Fatalf("header does not parse: %v", err)
	}
	key := textproto.CanonicalMIMEHeaderKey(name)
	if len(m.Header) != 1 || len(m.Header[key]) != 1 || m.Header[key][0] != value {
		t.Fatalf("header parses as %q", m.Header)
	}
}

var (
	dotAtomRE = regexp.MustCompile("^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
	// RFC 2045 token: printable ASCII but space and tspecials.
	tokenRE = regexp.MustCompile("^[A-Za-z0-9!#$%&'*+.^_`{|}~-]+$")
	// RFC 8601 pvalue written bare: a token, or [local-part] "@"
	// domain-name with a dot-atom local part and RFC 6376 labels.
	pvalueRE = regexp.MustCompile("^(?:[A-Za-z0-9!#$%&'*+.^_`{|}~-]+|" +
		"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)?@" +
		"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)$")
)

// headerLexer reads the RFC 5322 / RFC 8601 lexical pieces the tests need,
// written independently of header.go so that they check its output.
type headerLexer struct {
	s string
	i int
}

// cfws skips white space and comments, returning the comments' text with
// quoted-pairs undone.
func (l *headerLexer) cfws() (string, error) {
	var comments strings.Builder
	for l.i < len(l.s) {
		switch l.s[l.i] {
		case ' ', '\t':
			l.i++
		case '(':
			if err := l.comment(&comments); err != nil {
				return "", err
			}
		default:
			return comments.String(), nil
		}
	}
	return comments.String(), nil
}

// comment reads one comment, nested ones included, into b.
func (l *headerLexer) comment(b *strings.Builder) error {
	depth := 0
	for l.i < len(l.s) {
		c := l.s[l.i]
		l.i++
		switch c {
		case '(':
			if depth > 0 {
				b.WriteByte(c)
			}
			depth++
		case ')':
			depth--
			if depth == 0 {
				return nil
			}
			b.WriteByte(c)
		case '\\':
			if l.i >= len(l.s) {
				return fmt.Errorf("backslash at end of comment")
			}
			b.WriteByte(l.s[l.i])
			l.i++
		default:
			b.WriteByte(c)
		}
	}
	return fmt.Errorf("unterminated comment")
}

// quoted reads a quoted-string and returns its content.
func (l *headerLexer) quoted() (string, error) {
	var b strings.Builder
	l.i++ // opening quote
	for l.i < len(l.s) {
		c := l.s[l.i]
		l.i++
		switch c {
		case '"':
			return b.String(), nil
		case '\\':
			if l.i >= len(l.s) {
				return "", fmt.Errorf("backslash at end of quoted-string")
			}
			b.WriteByte(l.s[l.i])
			l.i++
		default:
			b.WriteByte(c)
		}
	}
	return "", fmt.Errorf("unterminated quoted-string")
}

// bare reads characters up to white space, ';', '(' or '"'.
func (l *headerLexer) bare() string {
	start := l.i
	for l.i < len(l.s) && strings.IndexByte(" \t;(\"", l.s[l.i]) < 0 {
		l.i++
	}
	return l.s[start:l.i]
}

// value reads a quoted-string, or a bare word that must match re.
func (l *headerLexer) value(re *regexp.Regexp) (string, error) {
	if l.i < len(l.s) && l.s[l.i] == '"' {
		return l.quoted()
	}
	v := l.bare()
	if !re.MatchString(v) {
		return "", fmt.Errorf("bare value %q at %d is not allowed unquoted", v, l.i)
	}
	return v, nil
}

// parseReceivedSPF splits an RFC 7208 §9.1 header value into its result,
// its comment, and its key-value pairs as a flat key, value list.
func parseReceivedSPF(s string) (result, comment string, pairs []string, err error) {
	l := &headerLexer{s: s}
	result = l.bare()
	if comment, err = l.cfws(); err != nil {
		return
	}
	for l.i < len(l.s) {
		if len(pairs) > 0 {
			if l.s[l.i] != ';' {
				return "", "", nil, fmt.Errorf("want ';' at %d", l.i)
			}
			l.i++
			if _, err = l.cfws(); err != nil {
				return
			}
		}
		eq := strings.IndexByte(l.s[l.i:], '=')
		if eq <= 0 {
			return "", "", nil, fmt.Errorf("want key= at %d", l.i)
		}
		key := l.s[l.i : l.i+eq]
		if !regexp.MustCompile("^[a-z-]+$").MatchString(key) {
			return "", "", nil, fmt.Errorf("bad key %q", key)
		}
		l.i += eq + 1
		var v string
		if v, err = l.value(dotAtomRE); err != nil {
			return
		}
		pairs = append(pairs, key, v)
		if _, err = l.cfws(); err != nil {
			return
		}
	}
	return
}

// parseAuthResults splits an RFC 8601 header value into its authserv-id
// and a flat list of "method=result" and "property=value" entries.
func parseAuthResults(s string) (authserv string, entries []string, err error) {
	l := &headerLexer{s: s}
	if _, err = l.cfws(); err != nil {
		return
	}
	if authserv, err = l.value(tokenRE); err != nil {
		return
	}
	for {
		if _, err = l.cfws(); err != nil {
			return
		}
		if l.i >= len(l.s) {
			return
		}
		if l.s[l.i] != ';' {
			return "", nil, fmt.Errorf("want ';' at %d", l.i)
		}
		l.i++
		if _, err = l.cfws(); err != nil {
			return
		}
		// method=result, then properties until the next ';'.
		first := true
		for l.i < len(l.s) && l.s[l.i] != ';' {
			eq := strings.IndexByte(l.s[l.i:], '=')
			if eq <= 0 {
				return "", nil, fmt.Errorf("want name= at %d", l.i)
			}
			name := l.s[l.i : l.i+eq]
			l.i += eq + 1
			re := pvalueRE
			if first || name == "reason" {
				re = tokenRE
			}
			var v string
			if v, err = l.value(re); err != nil {
				return
			}
			entries = append(entries, name+"="+v)
			first = false
			if _, err = l.cfws(); err != nil {
				return
			}
		}
	}
}

// The regexes SpamAssassin 4.0 (Plugin/SPF.pm) reads our headers with.
var (
	saReceivedSPF = regexp.MustCompile(`(?i)^received-spf:\s*(pass|neutral|(?:soft)?fail|(?:temp|perm)error|none)\b(?:.*\bidentity=(\S+?);?\b)?`)
	saAuthResults = regexp.MustCompile(`(?i)^(?:Arc\-)?Authentication-Results:.*;\s*SPF\s*=\s*([^;]*)`)
	saAuthEntry   = regexp.MustCompile(`(?i)^(pass|neutral|(?:hard|soft)?fail|(?:temp|perm)error|none)(?:[^;]*?\bsmtp\.(\S+)\s*=[^;]+)?`)
)

// checkSpamAssassinReceivedSPF fails unless SpamAssassin reads result r
// and identity id (when it is one of ours) from the Received-SPF value v.
func checkSpamAssassinReceivedSPF(t testing.TB, v string, r Result, id Identity) {
	t.Helper()
	m := saReceivedSPF.FindStringSubmatch("Received-SPF: " + v)
	wantID := string(id)
	if id != IdentityMailFrom && id != IdentityHELO {
		wantID = ""
	}
	if m == nil || m[1] != string(headerResult(r)) || m[2] != wantID {
		t.Errorf("SpamAssassin reads %q from Received-SPF: %s; want %s, identity %q", m, v, headerResult(r), wantID)
	}
}

// checkHeaderReaders fails unless go-msgauth's authres.Parse and
// SpamAssassin, which both ignore quoting, read from the
// Authentication-Results of outcomes exactly our results: one entry per
// outcome, each with its result, and no property that another value
// smuggled in. authserv must be a well-formed authserv-id.
func checkHeaderReaders(t testing.TB, authserv string, outcomes []*Outcome) {
	t.Helper()
	ar := AuthenticationResults(authserv, outcomes...)
	var ordered []*Outcome
	for _, o := range outcomes {
		if o != nil && o.Identity == IdentityHELO {
			ordered = append(ordered, o)
		}
	}
	for _, o := range outcomes {
		if o != nil && o.Identity != IdentityHELO {
			ordered = append(ordered, o)
		}
	}

	id, results, err := authres.Parse(ar)
	if err != nil || id != authserv || len(results) != len(ordered) {
		t.Fatalf("authres.Parse(%s) = %q, %d results, %v; want %q, %d results", ar, id, len(results), err, authserv, len(ordered))
	}
	for i, o := range ordered {
		r, ok := results[i].(*authres.SPFResult)
		if !ok || string(r.Value) != string(headerResult(o.Result)) {
			t.Errorf("authres.Parse: result %d is %+v, want spf=%s in %s", i, results[i], headerResult(o.Result), ar)
			continue
		}
		e := o.authEntry()
		// authres.Parse splits at spaces and keeps quotes: only a bare
		// value comes back whole.
		for _, p := range []struct{ name, got, want string }{{"smtp.helo", r.Helo, e.helo}, {"smtp.mailfrom", r.From, e.from}} {
			if p.want == "" && p.got != "" {
				t.Errorf("authres.Parse: result %d has %s=%q, which we did not write, in %s", i, p.name, p.got, ar)
			}
			if p.want != "" && pvalue(p.want) == p.want && p.got != p.want {
				t.Errorf("authres.Parse: result %d has %s=%q, want %q, in %s", i, p.name, p.got, p.want, ar)
			}
		}
	}

	if len(ordered) == 0 {
		return
	}
	last := ordered[len(ordered)-1].authEntry()
	m := saAuthResults.FindStringSubmatch("Authentication-Results: " + ar)
	if m == nil {
		t.Fatalf("SpamAssassin finds no spf= in %s", ar)
	}
	e := saAuthEntry.FindStringSubmatch(m[1])
	wantID := ""
	switch {
	case last.from != "":
		wantID = "mailfrom"
	case last.helo != "":
		wantID = "helo"
	}
	if e == nil || !strings.EqualFold(e[1], string(last.result)) || e[2] != wantID {
		t.Errorf("SpamAssassin reads %q from %s; want %s, identity %q", e, ar, last.result, wantID)
	}
}

// isCleanValue reports whether s is a value that goes into a header
// unchanged: printable ASCII, not cut.
func isCleanValue(s string) bool {
	if len(s) > maxHeaderValue {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// checkHeaderProperties fails unless the headers of outcomes are each one
// well-formed header field that every parser here reads as the outcomes
// say, whatever text they hold. It knows nothing of the values but what
// the RFCs and the readers require, so a fuzzer can drive it.
func checkHeaderProperties(t testing.TB, receiver string, outcomes []*Outcome) {
	t.Helper()
	for _, o := range outcomes {
		v := o.ReceivedSPF(receiver)
		checkPrintable(t, v)
		checkOneHeader(t, "Received-SPF", v)
		checkFoldable(t, "Received-SPF", v)
		res, _, pairs, err := parseReceivedSPF(v)
		if err != nil {
			t.Fatalf("Received-SPF does not parse: %v in %s", err, v)
		}
		if res != string(headerResult(o.Result)) {
			t.Errorf("Received-SPF result %q, want %q", res, headerResult(o.Result))
		}
		ip := ""
		if o.IP.IsValid() {
			ip = o.IP.String()
		}
		id := string(o.Identity)
		if o.Identity != IdentityMailFrom && o.Identity != IdentityHELO {
			id = ""
		}
		// Each key at most once, in this order, with the value given when
		// that value was clean.
		order := []struct{ key, in string }{
			{"client-ip", ip}, {"envelope-from", o.Sender}, {"helo", o.HELO}, {"receiver", receiver},
			{"mechanism", o.Mechanism}, {"problem", o.Problem}, {"identity", id},
		}
		k := 0
		for i := 0; i < len(pairs); i += 2 {
			key, val := pairs[i], pairs[i+1]
			for k < len(order) && order[k].key != key {
				k++
			}
			if k == len(order) {
				t.Fatalf("Received-SPF key %q out of place in %s", key, v)
			}
			if len(val) > maxHeaderValue {
				t.Errorf("Received-SPF %s is %d bytes, over %d", key, len(val), maxHeaderValue)
			}
			if in := order[k].in; isCleanValue(in) && val != in {
				t.Errorf("Received-SPF %s=%q, want %q", key, val, in)
			}
			k++
		}
		checkSpamAssassinReceivedSPF(t, v, o.Result, o.Identity)
	}

	for _, authserv := range []string{"mx.example.net", receiver} {
		v := AuthenticationResults(authserv, outcomes...)
		checkPrintable(t, v)
		checkOneHeader(t, "Authentication-Results", v)
		checkFoldable(t, "Authentication-Results", v)
		id, entries, err := parseAuthResults(v)
		if err != nil {
			t.Fatalf("Authentication-Results does not parse: %v in %s", err, v)
		}
		if isCleanValue(authserv) && id != authserv {
			t.Errorf("authserv-id %q, want %q", id, authserv)
		}
		for _, e := range entries {
			if strings.ContainsAny(e, ";") || strings.Count(e, "=") != 1 {
				t.Errorf("entry %q holds ';' or '=' in its value", e)
			}
		}
	}
	checkHeaderReaders(t, "mx.example.net", outcomes)
}

// checkFoldable fails unless "name: value" has no run of visible
// characters too long to fit, with the field name or the folding space, in
// RFC 5322's 998-octet line (§2.1.1): folding can then keep every line
// within it.
func checkFoldable(t testing.TB, name, value string) {
	t.Helper()
	for _, w := range strings.Split(value, " ") {
		if len(name)+len(": ")+len(w) > 998 {
			t.Errorf("%s holds a %d-byte word that no folding can fit in a line: %.60q...", name, len(w), w)
		}
	}
}

func TestHeaderProperties(t *testing.T) {
	for _, hv := range hostileValues {
		for _, r := range append(Results[:len(Results):len(Results)], "bogus") {
			t.Run(hv.name+"/"+string(r), func(t *testing.T) {
				outcomes := []*Outcome{hostileOutcome(IdentityMailFrom, r, hv.in), hostileOutcome(IdentityHELO, r, hv.in)}
				checkHeaderProperties(t, hv.in, outcomes)
				checkHeaderProperties(t, hv.in, outcomes[:1])
				checkHeaderProperties(t, hv.in, outcomes[1:])
			})
		}
	}
}

// FuzzHeaders checks checkHeaderProperties on arbitrary outcome values:
// a MAIL FROM outcome and a HELO outcome, each header from them one
// well-formed field read the same by every reader.
func FuzzHeaders(f *testing.F) {
	f.Add("joe@example.org", "mail.example.org", "example.org", "-all", "", "mx.example.net", uint8(3), uint8(0))
	f.Add("\"a b\"@x\r\n", "[192.0.2.1]", "", "ip4:192.0.2.0/24", "x; spf=pass", "mx", uint8(6), uint8(1))
	f.Add("a\x00b", "h\xff", "d\u00e9", "(", `\`, "", uint8(7), uint8(2))
	f.Fuzz(func(t *testing.T, sender, helo, domain, mechanism, problem, receiver string, result, id uint8) {
		results := append(Results[:len(Results):len(Results)], "bogus")
		r := results[int(result)%len(results)]
		identities := []Identity{IdentityMailFrom, IdentityHELO, "bogus"}
		mf := &Outcome{
			Result: r, Identity: identities[int(id)%len(identities)], Domain: domain, Sender: sender,
			IP: netip.MustParseAddr("2001:db8::1"), HELO: helo, Mechanism: mechanism, Problem: problem,
		}
		if id&0x80 != 0 {
			mf.IP = netip.Addr{}
		}
		if id&0x40 != 0 {
			mf.Relay = netip.MustParseAddr("198.51.100.7")
		}
		h := &Outcome{
			Result: results[int(result>>4)%len(results)], Identity: IdentityHELO, Domain: helo,
			Sender: "postmaster@" + helo, IP: mf.IP, HELO: helo, Mechanism: mechanism, Problem: problem,
		}
		checkHeaderProperties(t, receiver, []*Outcome{mf, h})
	})
}
