package milter

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"

	gomilter "github.com/emersion/go-milter"
	"github.com/emersion/go-msgauth/authres"
	"github.com/miekg/dns"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/internal/dnstest"
	"github.com/spf-milter/spf-milter/spf"
)

// This file sends hostile input through real go-milter sessions: every
// place an SMTP client or a DNS zone can put text that reaches a header or
// a reply, and forged copies of our headers.

// ptrBase is the network of the clients whose PTR names are hostile; each
// case of hostilePTRs gets its own address in it.
const ptrBase = "198.51.100."

// hostilePTRs are PTR names as raw octets, one per kind of hostile input
// that fits a DNS name (at most 255 octets, labels of at most 63). Each is
// published for its client with an A record back to it, so that %{p}
// validates it.
var hostilePTRs = []struct{ name, label string }{
	{"CR", "a\rb"},
	{"LF", "a\nb"},
	{"CRLF header injection", "a\r\nX-Injected: yes"},
	{"NUL", "a\x00b"},
	{"control bytes", "\x01\x07\x1b[0m"},
	{"DEL", "a\x7fb"},
	{"valid UTF-8", "b\xc3\xbccher"},
	{"invalid UTF-8", "\xff\xfe\xc3\x28"},
	{"percent", "100%%s"},
	{"structure", "x; spf=pass"},
	{"longest name", strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63)},
}

// presentation writes raw label octets as miekg/dns reads a name: "\DDD"
// for every octet but letters, digits and hyphens, and '.' kept as the
// label separator.
func presentation(raw string) string {
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c == '.', c == '-', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "\\%03d", c)
		}
	}
	return b.String()
}

// hostileZone is testZone plus the domains the hostile tests use:
// expN.example fails with the explanation hostileText[N] (a valid
// explain-string only when it is printable ASCII), and mexp.example fails
// with an explanation made of macros that carry the client's text.
func hostileZone(t *testing.T) *dnstest.Zone {
	t.Helper()
	z := testZone(t)
	if err := z.Add(
		`mexp.example. TXT "v=spf1 -all exp=why.mexp.example"`,
		`why.mexp.example. TXT "ptr=%{p} sender=%{s} local=%{l} helo=%{h} 100%% sure"`,
	); err != nil {
		t.Fatal(err)
	}
	for i, hv := range hostileText {
		domain := fmt.Sprintf("exp%d.example", i)
		if err := z.Add(domain + `. TXT "v=spf1 -all exp=why.` + domain + `"`); err != nil {
			t.Fatal(err)
		}
		// A TXT record is made of character-strings of at most 255 octets,
		// concatenated (RFC 7208 §3.3); 10 KB needs TCP.
		var chunks []string
		for s := hv.v; len(s) > 0; {
			n := min(len(s), 250)
			chunks = append(chunks, s[:n])
			s = s[n:]
		}
		z.AddTXT("why."+domain, chunks...)
	}
	for i, p := range hostilePTRs {
		ip := netip.MustParseAddr(fmt.Sprintf("%s%d", ptrBase, 10+i))
		rev, err := dns.ReverseAddr(ip.String())
		if err != nil {
			t.Fatal(err)
		}
		name := presentation(p.label) + ".ptr.example."
		if err := z.Add(rev+" PTR "+name, name+" A "+ip.String()); err != nil {
			t.Fatalf("PTR %s: %v", p.name, err)
		}
	}
	return z
}

// replyRE is one SMTP reply line as a milter may hand it to Postfix and
// Sendmail: a 4xx or 5xx code, an RFC 3463 enhanced code, and printable
// ASCII text, on one line (RFC 5321 §4.2, no continuation).
var replyRE = regexp.MustCompile(`^([45])[0-9]{2} ([45])\.[0-9]{1,3}\.[0-9]{1,3} ([ -~]+)$`)

// checkReplyLine fails unless r (as reply renders it) is one valid SMTP
// reply line for the MTA, as the policy package's checkReply asks of a
// decision's reply.
func checkReplyLine(t testing.TB, r string) {
	t.Helper()
	m := replyRE.FindStringSubmatch(r)
	if m == nil || m[1] != m[2] {
		t.Fatalf("reply %q is not one line of code, matching enhanced code and printable text", r)
	}
	if strings.Contains(strings.ReplaceAll(m[3], "%%", ""), "%") {
		t.Errorf("reply %q has a lone '%%'", r)
	}
	if len(r)+len("\r\n") > 512 {
		t.Errorf("reply is %d octets with CRLF, over 512", len(r)+2)
	}
}

// checkInserted fails unless the fields the milter inserted are well-formed
// (checkField), one Received-SPF per identity checked, MAIL FROM first,
// each read by SpamAssassin with its identity, and an
// Authentication-Results that go-msgauth reads as that many spf results.
// It returns the fields unfolded.
func checkInserted(t *testing.T, mods []gomilter.ModifyAction, identities ...spf.Identity) []hdr {
	t.Helper()
	var fields []hdr
	for _, m := range mods {
		if m.Code != gomilter.ActInsertHeader {
			continue
		}
		if m.HeaderIndex != 0 {
			t.Errorf("%s inserted at %d, want 0", m.HeaderName, m.HeaderIndex)
		}
		fields = append(fields, hdr{m.HeaderName, checkField(t, Field{m.HeaderName, m.HeaderValue})})
	}
	slices.Reverse(fields)
	if len(fields) != len(identities)+1 {
		t.Fatalf("inserted %q, want %d Received-SPF and an Authentication-Results", fields, len(identities))
	}
	for i, id := range identities {
		f := fields[i]
		sa := spamAssassinRE.FindStringSubmatch(f.name + ": " + f.value)
		if f.name != headerReceivedSPF || sa == nil || sa[2] != string(id) {
			t.Errorf("field %d %s: %s is read by SpamAssassin as %q, want identity %s", i, f.name, f.value, sa, id)
		}
	}
	ar := fields[len(fields)-1]
	if id, results, err := authres.Parse(ar.value); ar.name != headerAuthResults || err != nil || id != ourAuthID || len(results) != len(identities) {
		t.Errorf("%s: %s parses as %q, %d results, %v", ar.name, ar.value, id, len(results), err)
	}
	return fields
}

// hostileCase is one place for hostile text in a session.
type hostileCase struct {
	name     string
	hostname string // the client host name the MTA passes at connect
	ip       string
	helo     string
	from     string
	// want is text the refusal must carry, proof that the hostile value
	// reached the reply ("" when nothing particular must).
	want string
}

// hostileCases returns, for every kind of hostile text, a case per place
// it can come from: the HELO name, the MAIL FROM local part and domain, an
// exp= explanation, the client host name; and one per hostile PTR name.
func hostileCases() []hostileCase {
	var cases []hostileCase
	for i, hv := range hostileText {
		// The milter protocol ends MAIL FROM at a NUL: what follows never
		// reaches us.
		// A NUL in the host name makes go-milter's client send a connect
		// packet whose address cannot be read (no MTA can: the protocol's
		// strings are C strings); with no client IP, the message is
		// deferred.
		local, host := "sender=", "sender=alice@mexp.example"
		if strings.Contains(hv.v, "\x00") {
			local, host = "", ""
		}
		// An exp= text that is not a valid explain-string (RFC 7208 §6.2:
		// printable ASCII and macros) is ignored for the default one.
		exp := "does not designate"
		if _, err := spf.ParseMacroString(hv.v, true); err == nil {
			exp = hv.v[:min(len(hv.v), 20)]
		}
		cases = append(cases,
			hostileCase{name: "HELO/" + hv.name, hostname: "client.example", ip: clientIP, helo: hv.v, from: "alice@mexp.example", want: "helo="},
			hostileCase{name: "local part/" + hv.name, hostname: "client.example", ip: clientIP, helo: passHELO, from: hv.v + "@mexp.example", want: local},
			hostileCase{name: "domain/" + hv.name, hostname: "client.example", ip: clientIP, helo: passHELO, from: "alice@" + hv.v},
			hostileCase{name: "exp/" + hv.name, hostname: "client.example", ip: clientIP, helo: passHELO, from: fmt.Sprintf("alice@exp%d.example", i), want: exp},
			hostileCase{name: "client hostname/" + hv.name, hostname: hv.v, ip: clientIP, helo: passHELO, from: "alice@mexp.example", want: host},
		)
	}
	for i, p := range hostilePTRs {
		cases = append(cases, hostileCase{name: "PTR/" + p.name, hostname: "client.example",
			ip: fmt.Sprintf("%s%d", ptrBase, 10+i), helo: passHELO, from: "alice@mexp.example", want: ".ptr.example"})
	}
	return cases
}

// with returns the harness for use by the (sub)test t.
func (h *harness) with(t *testing.T) *harness {
	c := *h
	c.t = t
	return &c
}

// connectAs opens a session for the client of c.
func (h *harness) connectAs(c hostileCase) *gomilter.ClientSession {
	h.t.Helper()
	cs := h.open()
	h.mustContinue("connect", must(h.t)(cs.Conn(c.hostname, gomilter.FamilyInet, 40000, c.ip)))
	h.mustContinue("helo", must(h.t)(cs.Helo(c.helo)))
	return cs
}

// TestHostileInput sends every hostileCases case three times: refused with
// the built-in text (which carries the explanation), refused with a reply
// template holding every macro, and accepted with its headers. The reply
// must stay one valid reply line and the headers well-formed fields that
// the downstream readers parse.
func TestHostileInput(t *testing.T) {
	z := hostileZone(t)
	reject := testConfig()
	for _, r := range spf.Results {
		reject.Policy.MailFrom[r] = config.Reject
	}
	template := testConfig()
	for _, r := range spf.Results {
		template.Policy.MailFrom[r] = config.Reject
		template.Replies[r] = "%{s} %{l} %{o} %{d} %{h} %{i} %{c} %{r} %{S} %{H} 100%% sure"
	}
	accept := testConfig()
	for _, r := range spf.Results {
		accept.Policy.MailFrom[r] = config.Accept
		// Any HELO result but pass is quarantined, so that the HELO
		// identity is checked and has its header too.
		accept.Policy.HELO[r] = config.Quarantine
	}
	accept.Policy.HELO[spf.Pass] = config.Accept
	rejecting, templated, accepting := newHarness(t, reject, z), newHarness(t, template, z), newHarness(t, accept, z)

	for _, c := range hostileCases() {
		t.Run(c.name, func(t *testing.T) {
			// The servers are shared; the sessions and their failures
			// belong to the subtest.
			rejecting, templated, accepting := rejecting.with(t), templated.with(t), accepting.with(t)
			msg := message{from: c.from, rcpts: []string{"bob@example.net"}}

			o := rejecting.send(rejecting.connectAs(c), msg)
			r := reply(o.mail)
			t.Logf("reply: %s", r)
			checkReplyLine(t, r)
			if !strings.Contains(r, c.want) {
				t.Errorf("reply %q does not carry %q", r, c.want)
			}

			o = templated.send(templated.connectAs(c), msg)
			checkReplyLine(t, reply(o.mail))

			o = accepting.send(accepting.connectAs(c), msg)
			if strings.Contains(c.hostname, "\x00") {
				// No address to check: deferred, whatever the policy.
				if reply(o.mail) != internalErrorReply {
					t.Fatalf("message from an unreadable address answered %s", reply(o.mail))
				}
				return
			}
			if reply(o.mail) != "continue" || reply(o.end) != "continue" {
				t.Fatalf("accepted message answered %s, %s", reply(o.mail), reply(o.end))
			}
			fields := checkInserted(t, o.mods, spf.IdentityMailFrom, spf.IdentityHELO)
			for _, reason := range quarantineReasons(o.mods) {
				checkReplyLine(t, "550 5.7.1 "+strings.ReplaceAll(reason, "%", "%%"))
			}
			// The client host name is used nowhere.
			if c.hostname != "client.example" {
				for _, f := range fields {
					if strings.Contains(f.value, c.hostname) {
						t.Errorf("%s holds the client host name: %s", f.name, f.value)
					}
				}
			}
		})
	}
}

// saAuthResultsRE is how SpamAssassin 4.0 (Plugin/SPF.pm) finds the SPF
// result in Authentication-Results: after the last "; spf=".
var saAuthResultsRE = regexp.MustCompile(`(?i)^(?:Arc\-)?Authentication-Results:.*;\s*SPF\s*=\s*([^;]*)`)

// TestHostileSemicolonDomain: a MAIL FROM domain that reads as a result to
// readers that ignore quoting must not turn a none into a pass for
// SpamAssassin, which takes the last "; spf=" of Authentication-Results.
func TestHostileSemicolonDomain(t *testing.T) {
	h := newHarness(t, testConfig(), testZone(t))
	cs := h.connect(clientIP, passHELO)
	o := h.send(cs, message{from: "x@a;spf=pass", rcpts: []string{"bob@example.net"}})
	fields := checkInserted(t, o.mods, spf.IdentityMailFrom, spf.IdentityHELO)
	ar := headerAuthResults + ": " + fields[2].value
	// SpamAssassin 4.0 Plugin/SPF.pm.
	m := saAuthResultsRE.FindStringSubmatch(ar)
	if m == nil || !strings.HasPrefix(m[1], "none ") {
		t.Errorf("SpamAssassin reads %q from %s, want none", m, ar)
	}
}

// TestForgedHeaderVariants sends copies of our headers that arrive with a
// message, in every form an attacker or a broken upstream can give them,
// among fields that are not ours, and checks the exact header changes:
// every Received-SPF and every Authentication-Results carrying our
// authserv-id (in any letter case, quoted, after comments or folding,
// with a version) deleted by its 1-based index among the fields of that
// name, from the highest index down; everything else kept.
func TestForgedHeaderVariants(t *testing.T) {
	ours := func(v string) hdr { return hdr{"Authentication-Results", v} }
	type forgedCase struct {
		name      string
		configure func(*config.Config)
		in        []hdr
		// removed lists the indices into in of the fields to delete.
		removed []int
		// want is the header changes, as changes renders them.
		want []string
	}
	tests := []forgedCase{
		{
			name: "ours in any letter case",
			in: []hdr{
				ours("mx.example.net; spf=pass smtp.mailfrom=pass.example"),
				ours("MX.EXAMPLE.NET; spf=pass"),
				{"authentication-results", "Mx.Example.Net; dkim=pass"},
				{"AUTHENTICATION-RESULTS", "mx.example.NET; none"},
			},
			removed: []int{0, 1, 2, 3},
			want:    []string{"Authentication-Results#4", "Authentication-Results#3", "Authentication-Results#2", "Authentication-Results#1"},
		},
		{
			name: "others kept",
			in: []hdr{
				ours("other.example; spf=pass"),
				ours("mx.example.net.evil; spf=pass"),
				ours("evil.mx.example.net; spf=pass"),
				ours("xmx.example.net; spf=pass"),
				ours("mx.example.ne; spf=pass"),
				ours("(mx.example.net) other.example; spf=pass"),
				ours("\"mx.example.net \"; spf=pass"),
				ours(""),
				ours("; spf=pass mx.example.net"),
				{"ARC-Authentication-Results", "i=1; mx.example.net; spf=pass"},
				{"X-Authentication-Results", "mx.example.net; spf=pass"},
				{"Authentication-Results-Original", "mx.example.net; spf=pass"},
				{"X-Received-SPF", "pass"},
			},
		},
		{
			name: "several copies among others",
			in: []hdr{
				{"Received", "from a by b"},
				ours("mx.example.net; spf=pass"),   // AR 1
				ours("other.example; spf=fail"),    // AR 2
				{"Received-SPF", "pass (forged)"},  // RS 1
				ours("mx.example.net; spf=pass"),   // AR 3
				ours("mx.example.net; dkim=pass"),  // AR 4
				ours("other.example; dkim=pass"),   // AR 5
				{"received-spf", "pass"},           // RS 2
				ours("MX.example.net; dmarc=pass"), // AR 6
				{"Subject", "hi"},
			},
			removed: []int{1, 3, 4, 5, 7, 8},
			want: []string{"Received-SPF#2", "Received-SPF#1",
				"Authentication-Results#6", "Authentication-Results#4", "Authentication-Results#3", "Authentication-Results#1"},
		},
		{
			name: "folded",
			in: []hdr{
				ours("mx.example.net;\r\n\tspf=pass smtp.mailfrom=pass.example"),
				ours("\r\n mx.example.net; spf=pass"),
				ours("\n\tmx.example.net\n\t1; spf=pass"),
				ours("other.example;\r\n\tspf=pass; x=mx.example.net"),
				ours("\r\n\t\r\n mx.example.net;\r\n spf=pass"),
			},
			removed: []int{0, 1, 2, 4},
			want:    []string{"Authentication-Results#5", "Authentication-Results#3", "Authentication-Results#2", "Authentication-Results#1"},
		},
		{
			name: "comments before the authserv-id",
			in: []hdr{
				ours("(forged) mx.example.net; spf=pass"),
				ours("(a (nested) \\) comment)\r\n\t(two) mx.example.net; spf=pass"),
				ours("(mx.example.net) other.example; spf=pass"),
				ours("mx.example.net(trailing); spf=pass"),
				ours("(unterminated mx.example.net; spf=pass"),
			},
			removed: []int{0, 1, 3},
			want:    []string{"Authentication-Results#4", "Authentication-Results#2", "Authentication-Results#1"},
		},
		{
			name: "version and quoting",
			in: []hdr{
				ours("mx.example.net 1; spf=pass"),
				ours("mx.example.net 1 ; spf=pass"),
				ours("mx.example.net (comment) 1; spf=pass"),
				ours("\"mx.example.net\"; spf=pass"),
				ours("\"MX.\\example.net\" 1; spf=pass"),
				ours("mx.example.net"),
				ours("other.example 1; spf=pass"),
			},
			removed: []int{0, 1, 2, 3, 4, 5},
			want: []string{"Authentication-Results#6", "Authentication-Results#5", "Authentication-Results#4",
				"Authentication-Results#3", "Authentication-Results#2", "Authentication-Results#1"},
		},
		{
			name: "every Received-SPF",
			in: []hdr{
				{"Received-SPF", "pass (mx.example.net: forged) identity=mailfrom"},
				{"received-spf", "fail (other.example: theirs)"},
				{"RECEIVED-SPF", "pass\r\n\t(folded) client-ip=192.0.2.1"},
				{"Received-SPF", ""},
			},
			removed: []int{0, 1, 2, 3},
			want:    []string{"Received-SPF#4", "Received-SPF#3", "Received-SPF#2", "Received-SPF#1"},
		},
		{
			name:      "our authserv-id configured in another letter case",
			configure: func(c *config.Config) { c.AuthservID = "MX.Example.NET" },
			in:        []hdr{ours("mx.example.net; spf=pass"), ours("other.example; spf=pass")},
			removed:   []int{0},
			want:      []string{"Authentication-Results#1"},
		},
		{
			name:      "nothing removed when remove_forged is off",
			configure: func(c *config.Config) { c.Headers.RemoveForged = false },
			in:        []hdr{ours("mx.example.net; spf=pass"), {"Received-SPF", "pass"}},
		},
	}
	// A hundred copies: one deletion each, from the last.
	var many []hdr
	var manyRemoved []int
	var manyWant []string
	for i := range 100 {
		many = append(many, ours("mx.example.net; spf=pass"))
		manyRemoved = append(manyRemoved, i)
		manyWant = append(manyWant, fmt.Sprintf("Authentication-Results#%d", 100-i))
	}
	tests = append(tests, forgedCase{name: "a hundred copies", in: many, removed: manyRemoved, want: manyWant})

	z := testZone(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			if tt.configure != nil {
				tt.configure(cfg)
			}
			h := newHarness(t, cfg, z)
			cs := h.connect(clientIP, passHELO)
			// Two messages on one connection: the second must be counted
			// afresh.
			for range 2 {
				o := h.send(cs, message{from: "alice@pass.example", rcpts: []string{"bob@example.net"}, headers: tt.in})
				if got := changes(o.mods); !slices.Equal(got, tt.want) {
					t.Errorf("header changes\n got %q\nwant %q", got, tt.want)
				}
				// What the MTA is left with: our fields on top, then every
				// field not removed, in order.
				var kept []hdr
				for i, f := range tt.in {
					if !slices.Contains(tt.removed, i) {
						kept = append(kept, f)
					}
				}
				if len(o.final) < 3 || !slices.Equal(o.final[3:], kept) {
					t.Errorf("header after the changes\n got %q\nwant our 3 fields, then %q", o.final, kept)
				}
			}
		})
	}
}
