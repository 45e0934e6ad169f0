package spf

import (
	"fmt"
	"net/mail"
	"net/netip"
	"net/textproto"
	"regexp"
	"strings"
	"testing"
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

func TestAuthResult(t *testing.T) {
	o := headerOutcome(IdentityMailFrom, PermError)
	r := o.AuthResult()
	if r.Value != "permerror" || r.Reason != "more than 10 DNS lookups" || r.From != "example.org" || r.Helo != "" {
		t.Errorf("AuthResult(mailfrom) = %+v", *r)
	}
	h := headerOutcome(IdentityHELO, Pass).AuthResult()
	if h.Value != "pass" || h.Reason != "" || h.From != "" || h.Helo != "mail.example.org" {
		t.Errorf("AuthResult(helo) = %+v", *h)
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
				})
			}
		}
	}
}

// TestReceivedSPFSpamAssassin: SpamAssassin takes the result from the start
// of the header and the identity from the last "identity=" (a greedy
// ".*\bidentity=", NOTES.md), so text in earlier values must not fool it.
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
				// In smtp.* values ',' and '\' are replaced (see cleanPvalue).
				pv := strings.NewReplacer(",", "?", `\`, "?").Replace(hv.clean)
				want := []string{
					"spf=" + string(r), "reason=" + hv.clean, "smtp.helo=" + pv,
					"spf=" + string(r), "reason=" + hv.clean, "smtp.mailfrom=" + pv,
				}
				if strings.Join(results, "\x00") != strings.Join(want, "\x00") {
					t.Errorf("results\n got %q\nwant %q\nfrom %s", results, want, got)
				}
			})
		}
	}
}

// checkPrintable fails unless s is one line of printable ASCII.
func checkPrintable(t *testing.T, s string) {
	t.Helper()
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			t.Fatalf("byte %#02x at %d in %q", s[i], i, s)
		}
	}
}

// checkOneHeader parses name: value as a message header and fails unless
// exactly that one field comes out, with the same value.
func checkOneHeader(t *testing.T, name, value string) {
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
	// RFC 8601 pvalue written bare: [[local-part] "@"] domain-name.
	addrRE = regexp.MustCompile("^([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]*@)?([A-Za-z0-9.-]+|\\[[0-9A-Fa-f:.]+\\])$")
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
			re := addrRE
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
