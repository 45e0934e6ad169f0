package milter

import (
	"math/rand/v2"
	"net/mail"
	"net/netip"
	"net/textproto"
	"slices"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/authres"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/spf"
)

func TestFold(t *testing.T) {
	tests := []struct {
		name, field, value, want string
	}{
		{"short", "Received-SPF", "pass (x) client-ip=192.0.2.1", "pass (x) client-ip=192.0.2.1"},
		{"exactly 78", "X", strings.Repeat("a", 75), strings.Repeat("a", 75)},
		{"77 fits", "X", strings.Repeat("a", 70) + " bcd", strings.Repeat("a", 70) + " bcd"},
		{"81 breaks", "X", strings.Repeat("a", 74) + " bcd", strings.Repeat("a", 74) + "\n bcd"},
		{"several lines", "Received-SPF",
			"fail (mx.example.net: domain of alice@fail.example does not designate 192.0.2.1 as permitted sender) client-ip=192.0.2.1; envelope-from=\"alice@fail.example\"; helo=mx.pass.example; receiver=mx.example.net; mechanism=-all; identity=mailfrom",
			"fail (mx.example.net: domain of alice@fail.example does not\n" +
				" designate 192.0.2.1 as permitted sender) client-ip=192.0.2.1;\n" +
				" envelope-from=\"alice@fail.example\"; helo=mx.pass.example;\n" +
				" receiver=mx.example.net; mechanism=-all; identity=mailfrom"},
		{"unbreakable token stays whole", "X", "a " + strings.Repeat("b", 100) + " c",
			"a\n " + strings.Repeat("b", 100) + "\n c"},
		{"no break at a double space", "X", strings.Repeat("a", 74) + "  b", strings.Repeat("a", 74) + "  b"},
		{"no break at leading or trailing space", "X", " " + strings.Repeat("a", 80) + " ", " " + strings.Repeat("a", 80) + " "},
		{"empty", "X", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fold(tt.field, tt.value)
			if got != tt.want {
				t.Errorf("fold:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

// TestFoldUnfolds checks on random values that unfolding gives the value
// back and that every line that can be short is.
func TestFoldUnfolds(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := "abc  ;=\"()"
	for i := 0; i < 2000; i++ {
		b := make([]byte, rng.IntN(300))
		for j := range b {
			b[j] = alphabet[rng.IntN(len(alphabet))]
		}
		v := string(b)
		got := fold("Received-SPF", v)
		if strings.ReplaceAll(got, "\n", "") != v {
			t.Fatalf("fold(%q) = %q does not unfold to the value", v, got)
		}
		lines := strings.Split("Received-SPF: "+got, "\n")
		for k, line := range lines {
			if k > 0 && (!strings.HasPrefix(line, " ") || strings.TrimSpace(line) == "") {
				t.Fatalf("fold(%q): bad continuation line %q", v, line)
			}
			// A long line is allowed only when it has no place to break.
			if len(line) > maxLineLength && nextBreak(line, 1) < len(line) && k > 0 {
				t.Fatalf("fold(%q): line %q is long but could break", v, line)
			}
		}
	}
}

func TestParseAuthservID(t *testing.T) {
	tests := []struct {
		value  string
		want   string
		wantOK bool
	}{
		{"mx.example.net; spf=pass smtp.mailfrom=example.org", "mx.example.net", true},
		{"  MX.Example.NET;spf=pass", "MX.Example.NET", true},
		{"mx.example.net 1; spf=pass", "mx.example.net", true},
		{"mx.example.net; none", "mx.example.net", true},
		{"(comment) mx.example.net; spf=pass", "mx.example.net", true},
		{"(nested (comment) \\) here)\n\tmx.example.net;\n\tspf=pass", "mx.example.net", true},
		{"\n\tmx.example.net(trailing comment); dkim=pass", "mx.example.net", true},
		{"\"mx.example.net\"; spf=pass", "mx.example.net", true},
		{"\"mx.\\\"odd\\\".net\"; spf=pass", "mx.\"odd\".net", true},
		{"\"unterminated; spf=pass", "", false},
		{"", "", false},
		{"   ", "", false},
		{"(only a comment)", "", false},
		{"; spf=pass", "", false},
	}
	for _, tt := range tests {
		got, ok := parseAuthservID(tt.value)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("parseAuthservID(%q) = %q, %v; want %q, %v", tt.value, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestForgedHeaderChanges(t *testing.T) {
	var f forgedHeaders
	for _, h := range []hdr{
		{"Authentication-Results", "mx.example.net; spf=pass"},       // AR 1, ours
		{"received-spf", "pass"},                                     // RS 1
		{"Authentication-Results", "other.example; spf=pass"},        // AR 2
		{"AUTHENTICATION-RESULTS", "(x) Mx.Example.Net 1; spf=fail"}, // AR 3, ours
		{"Received-SPF", "fail"},                                     // RS 2
		{"Received", "from a by b"},
		{"Authentication-Results", "mx.example.net.evil; spf=pass"}, // AR 4
		{"Authentication-Results", "mx.example.net; dkim=pass"},     // AR 5, ours
	} {
		f.see(h.name, h.value, "mx.example.net")
	}
	want := []headerChange{
		{"Received-SPF", 2}, {"Received-SPF", 1},
		{"Authentication-Results", 5}, {"Authentication-Results", 3}, {"Authentication-Results", 1},
	}
	if got, err := f.changes(); err != nil || !slices.Equal(got, want) {
		t.Errorf("changes:\n got %v\nwant %v", got, want)
	}

	// Without an authserv-id of our own, no Authentication-Results is ours.
	var g forgedHeaders
	g.see("Authentication-Results", "; spf=pass", "")
	g.see("Authentication-Results", "mx.example.net; spf=pass", "")
	if got, err := g.changes(); err != nil || len(got) != 0 {
		t.Errorf("changes with no authserv-id: %v", got)
	}
}

// TestForgedHeaderBound checks that the record of one message stays small
// whatever its fields, and that a message with more forged fields than can
// be removed is told apart: removing some would pass it with the rest.
func TestForgedHeaderBound(t *testing.T) {
	tests := []struct {
		name        string
		rs, ours    int // Received-SPF fields; Authentication-Results of ours
		others      int // Authentication-Results of another authserv-id
		wantTooMany bool
	}{
		{"none", 0, 0, 0, false},
		{"at the bound", maxForgedFields, maxForgedFields, 0, false},
		{"Received-SPF over the bound", maxForgedFields + 1, 0, 0, true},
		{"ours over the bound", 0, maxForgedFields + 1, 0, true},
		// Another server's results are left in place, however many.
		{"many of another's", 0, 1, 100000, false},
		{"100,000 Received-SPF", 100000, 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f forgedHeaders
			for range tt.others {
				f.see("Authentication-Results", "other.example; spf=pass", ourAuthID)
			}
			for range tt.rs {
				f.see("Received-SPF", "pass", ourAuthID)
			}
			for range tt.ours {
				f.see("Authentication-Results", ourAuthID+"; spf=pass", ourAuthID)
			}
			if len(f.forgedAR) > maxForgedFields {
				t.Errorf("%d indices kept, want at most %d", len(f.forgedAR), maxForgedFields)
			}
			got, err := f.changes()
			if tt.wantTooMany {
				if err != errTooManyForged || got != nil {
					t.Errorf("changes() = %d changes, %v; want none, errTooManyForged", len(got), err)
				}
				return
			}
			if err != nil || len(got) != tt.rs+tt.ours {
				t.Errorf("changes() = %d changes, %v; want %d", len(got), err, tt.rs+tt.ours)
			}
		})
	}
}

func TestHeaderFields(t *testing.T) {
	mf := &spf.Outcome{
		Result: spf.Pass, Identity: spf.IdentityMailFrom, Domain: "example.org", Sender: "alice@example.org",
		IP: netip.MustParseAddr("192.0.2.1"), HELO: "mx.example.org", Mechanism: "mx",
	}
	helo := &spf.Outcome{
		Result: spf.Neutral, Identity: spf.IdentityHELO, Domain: "mx.example.org",
		Sender: "postmaster@mx.example.org", IP: mf.IP, HELO: "mx.example.org", Mechanism: "?all",
	}
	const (
		rsMailFrom = `pass (mx.example.net: domain of alice@example.org designates 192.0.2.1 as permitted sender) client-ip=192.0.2.1; envelope-from="alice@example.org"; helo=mx.example.org; receiver=mx.example.net; mechanism=mx; identity=mailfrom`
		rsHELO     = `neutral (mx.example.net: 192.0.2.1 is neither permitted nor denied by domain of mx.example.org) client-ip=192.0.2.1; envelope-from="postmaster@mx.example.org"; helo=mx.example.org; receiver=mx.example.net; mechanism=?all; identity=helo`
		arBoth     = `mx.example.net; spf=neutral smtp.helo=mx.example.org; spf=pass smtp.mailfrom=example.org`
	)
	tests := []struct {
		name     string
		rs, ar   bool
		outcomes []*spf.Outcome
		want     []hdr
	}{
		{"both, MAIL FROM first whatever the order given", true, true, []*spf.Outcome{helo, mf},
			[]hdr{{"Received-SPF", rsMailFrom}, {"Received-SPF", rsHELO}, {"Authentication-Results", arBoth}}},
		{"nil outcomes skipped", true, true, []*spf.Outcome{nil, mf, nil},
			[]hdr{{"Received-SPF", rsMailFrom}, {"Authentication-Results", "mx.example.net; spf=pass smtp.mailfrom=example.org"}}},
		{"Received-SPF only", true, false, []*spf.Outcome{mf, helo},
			[]hdr{{"Received-SPF", rsMailFrom}, {"Received-SPF", rsHELO}}},
		{"Authentication-Results only", false, true, []*spf.Outcome{mf, helo},
			[]hdr{{"Authentication-Results", arBoth}}},
		{"neither", false, false, []*spf.Outcome{mf}, nil},
		{"no outcome", true, true, []*spf.Outcome{nil}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Headers.ReceivedSPF = tt.rs
			cfg.Headers.AuthenticationResults = tt.ar
			var got []hdr
			for _, f := range HeaderFields(cfg, tt.outcomes...) {
				checkFolded(t, f.Name, f.Value)
				got = append(got, hdr{f.Name, strings.ReplaceAll(f.Value, "\n", "")})
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("HeaderFields:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

// checkField fails unless f is one well-formed RFC 5322 header field as
// the MTA will write it, folded with CRLF: printable ASCII only, no line
// over 998 octets (§2.1.1), continuation lines starting with the space
// they were folded at and never blank, no line over 78 characters when it
// has a place to fold (§2.2.3), and parsing back to one field whose value
// is the unfolded text. It returns that unfolded value.
func checkField(t testing.TB, f Field) string {
	t.Helper()
	if f.Name != headerReceivedSPF && f.Name != headerAuthResults {
		t.Fatalf("field name %q", f.Name)
	}
	lines := strings.Split(f.Name+": "+f.Value, "\n")
	for i, line := range lines {
		for j := 0; j < len(line); j++ {
			if c := line[j]; c < 0x20 || c > 0x7e {
				t.Fatalf("%s: byte %#02x in line %d: %q", f.Name, c, i+1, line)
			}
		}
		if len(line) > 998 {
			t.Errorf("%s: line %d is %d octets, over RFC 5322's 998", f.Name, i+1, len(line))
		}
		content := line // the part fold could have broken
		if i == 0 {
			content = line[len(f.Name)+len(": "):]
		} else if !strings.HasPrefix(line, " ") || strings.TrimSpace(line) == "" {
			t.Errorf("%s: bad continuation line %d: %q", f.Name, i+1, line)
		}
		if len(line) > maxLineLength && nextBreak(content, 0) < len(content) {
			t.Errorf("%s: line %d is %d characters and could have been folded: %q", f.Name, i+1, len(line), line)
		}
	}
	unfolded := strings.ReplaceAll(f.Value, "\n", "")
	raw := f.Name + ": " + strings.ReplaceAll(f.Value, "\n", "\r\n") + "\r\n\r\n"
	m, err := mail.ReadMessage(strings.NewReader(raw))
	if err != nil {
		t.Fatalf("%s does not parse: %v", f.Name, err)
	}
	key := textproto.CanonicalMIMEHeaderKey(f.Name)
	if len(m.Header) != 1 || len(m.Header[key]) != 1 || m.Header[key][0] != unfolded {
		t.Fatalf("%s parses as %q, want one field %q", f.Name, m.Header, unfolded)
	}
	return unfolded
}

// checkHeaderFields fails unless HeaderFields for outcomes is, field by
// field, what the spf package formats, each one well-formed (checkField),
// and read by go-msgauth as the outcomes' results.
func checkHeaderFields(t testing.TB, cfg *config.Config, outcomes ...*spf.Outcome) {
	t.Helper()
	var want []string
	var results []spf.Result // of Authentication-Results, HELO first
	for _, o := range outcomes {
		if o != nil && o.Identity == spf.IdentityMailFrom {
			want = append(want, o.ReceivedSPF(cfg.Receiver))
		}
	}
	for _, o := range outcomes {
		if o != nil && o.Identity != spf.IdentityMailFrom {
			want = append(want, o.ReceivedSPF(cfg.Receiver))
			results = append(results, o.Result)
		}
	}
	for _, o := range outcomes {
		if o != nil && o.Identity == spf.IdentityMailFrom {
			results = append(results, o.Result)
		}
	}
	want = append(want, spf.AuthenticationResults(cfg.AuthservID, outcomes...))
	fields := HeaderFields(cfg, outcomes...)
	if len(fields) != len(want) {
		t.Fatalf("%d fields, want %d", len(fields), len(want))
	}
	for i, f := range fields {
		if got := checkField(t, f); got != want[i] {
			t.Errorf("field %d unfolds to\n%q, want\n%q", i, got, want[i])
		}
	}
	ar := fields[len(fields)-1]
	id, got, err := authres.Parse(ar.Value)
	if err != nil || id != cfg.AuthservID || len(got) != len(results) {
		t.Fatalf("authres.Parse(%q) = %q, %d results, %v", ar.Value, id, len(got), err)
	}
	for i, r := range got {
		if s, ok := r.(*authres.SPFResult); !ok || string(s.Value) != string(results[i]) {
			t.Errorf("authres.Parse: result %d is %+v, want spf=%s", i, r, results[i])
		}
	}
}

// hostileText holds, for each kind of hostile input the milter can meet,
// a value of that kind.
var hostileText = []struct{ name, v string }{
	{"CR", "a\rb.example"},
	{"LF", "a\nb.example"},
	{"CRLF header injection", "a.example\r\nX-Injected: yes"},
	{"CRLF fold injection", "a.example\r\n\tx"},
	{"NUL", "a\x00b.example"},
	{"control bytes", "a\x01\x07\x08\x1b[0m\x1fb.example"},
	{"DEL", "a\x7fb.example"},
	{"valid UTF-8", "b\u00fccher.\u4f8b\u3048.example \u2603"},
	{"invalid UTF-8", "a\xc3\x28\xff\xfeb\xe2\x82.example"},
	{"10 KB", strings.Repeat("a", 10240)},
	{"10 KB of words", strings.Repeat("ab ", 3414)},
	{"10 KB of specials", strings.Repeat(`"\();=%`, 1463)},
	{"10 KB of controls", strings.Repeat("\r\n\x00", 3414)},
	{"structure", `x"; spf=pass smtp.mailfrom=victim.example (y\`},
}

func TestHeaderFieldsHostile(t *testing.T) {
	for _, hv := range hostileText {
		for _, r := range spf.Results {
			t.Run(hv.name+"/"+string(r), func(t *testing.T) {
				mf := &spf.Outcome{
					Result: r, Identity: spf.IdentityMailFrom, Domain: hv.v, Sender: hv.v + "@" + hv.v,
					IP: netip.MustParseAddr("2001:db8::1"), HELO: hv.v, Mechanism: hv.v, Problem: hv.v,
				}
				helo := &spf.Outcome{
					Result: r, Identity: spf.IdentityHELO, Domain: hv.v, Sender: "postmaster@" + hv.v,
					IP: mf.IP, HELO: hv.v, Mechanism: hv.v, Problem: hv.v,
				}
				cfg := testConfig()
				checkHeaderFields(t, cfg, mf, helo)
				checkHeaderFields(t, cfg, helo)
				// A receiver name is the admin's, but still text.
				cfg.Receiver = hv.v
				checkHeaderFields(t, cfg, mf)
			})
		}
	}
}

// FuzzHeaderFields checks checkHeaderFields on arbitrary outcome values.
func FuzzHeaderFields(f *testing.F) {
	f.Add("joe@example.org", "mail.example.org", "example.org", "-all", "", "mx.example.net", uint8(3))
	f.Add(strings.Repeat("a ", 60), strings.Repeat("b", 300), "", "", "x; y=z", "", uint8(6))
	f.Add("\r\n\x00", "\xff", "(", `\`, `"`, "\u2603", uint8(0x25))
	f.Fuzz(func(t *testing.T, sender, helo, domain, mechanism, problem, receiver string, result uint8) {
		mf := &spf.Outcome{
			Result: spf.Results[int(result)%len(spf.Results)], Identity: spf.IdentityMailFrom, Domain: domain,
			Sender: sender, IP: netip.MustParseAddr("192.0.2.1"), HELO: helo, Mechanism: mechanism, Problem: problem,
		}
		h := &spf.Outcome{
			Result: spf.Results[int(result>>4)%len(spf.Results)], Identity: spf.IdentityHELO, Domain: helo,
			Sender: "postmaster@" + helo, IP: mf.IP, HELO: helo, Mechanism: mechanism, Problem: problem,
		}
		cfg := testConfig()
		cfg.Receiver = receiver
		checkHeaderFields(t, cfg, mf, h)
	})
}
