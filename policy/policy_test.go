package policy

import (
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/spf"
)

// ourAuthID names the receiving host in the tests.
const ourAuthID = "mx.example.net"

// testConfig is the default config with a fixed host name, so that
// replies do not depend on the machine running the tests.
func testConfig() *config.Config {
	cfg := config.Default()
	cfg.AuthservID = ourAuthID
	cfg.Receiver = ourAuthID
	return cfg
}

// outcomeFor builds the outcome of a MAIL FROM check of alice@example.org
// from 192.0.2.1 with result r.
func outcomeFor(r spf.Result) *spf.Outcome {
	o := &spf.Outcome{
		Result:   r,
		Identity: spf.IdentityMailFrom,
		Domain:   "example.org",
		Sender:   "alice@example.org",
		IP:       netip.MustParseAddr("192.0.2.1"),
		HELO:     "mx.example.org",
	}
	switch r {
	case spf.Fail:
		o.Explanation = "example.org does not designate 192.0.2.1 as a permitted sender"
	case spf.TempError:
		o.Problem = "DNS failure: TXT example.org: timeout"
	case spf.PermError:
		o.Problem = "SPF record of example.org: invalid term \"foo\": unknown mechanism"
	case spf.None:
		o.Problem = "no SPF record at example.org"
	}
	return o
}

func TestDecide(t *testing.T) {
	texts := map[spf.Result]string{
		spf.Pass:      "SPF pass: domain of alice@example.org designates 192.0.2.1 as permitted sender",
		spf.Fail:      "SPF fail: example.org does not designate 192.0.2.1 as a permitted sender",
		spf.Softfail:  "SPF softfail: domain of transitioning alice@example.org does not designate 192.0.2.1 as permitted sender",
		spf.Neutral:   "SPF neutral: 192.0.2.1 is neither permitted nor denied by domain of alice@example.org",
		spf.None:      "SPF none: no SPF record at example.org",
		spf.TempError: "SPF temperror: DNS failure: TXT example.org: timeout, try again later",
		spf.PermError: `SPF permerror: SPF record of example.org: invalid term "foo": unknown mechanism`,
	}
	rejectCodes := map[spf.Result]string{
		spf.Pass: "550 5.7.1", spf.Fail: "550 5.7.23", spf.Softfail: "550 5.7.1", spf.Neutral: "550 5.7.1",
		spf.None: "550 5.7.1", spf.TempError: "451 4.7.24", spf.PermError: "550 5.7.24",
	}
	for _, res := range spf.Results {
		for _, action := range []config.Action{config.Accept, config.Reject, config.Tempfail, config.Quarantine} {
			t.Run(string(res)+"/"+string(action), func(t *testing.T) {
				cfg := testConfig()
				cfg.Policy.MailFrom[res] = action
				d := New(cfg).Decide(Message{}, outcomeFor(res))
				if d.Action != action || d.DryRun {
					t.Errorf("decision %+v, want action %s, not a dry run", d, action)
				}
				var want string
				switch action {
				case config.Reject:
					want = rejectCodes[res] + " " + texts[res]
				case config.Tempfail:
					want = "451 4.7.1 " + texts[res]
					if res == spf.TempError {
						want = "451 4.7.24 " + texts[res]
					}
				}
				if got := d.Reply(); got != want {
					t.Errorf("reply %q, want %q", got, want)
				}
				if d.Refuses() != (want != "") {
					t.Errorf("Refuses() = %v with reply %q", d.Refuses(), want)
				}
				wantText := ""
				switch action {
				case config.Reject, config.Tempfail:
					wantText = texts[res]
				case config.Quarantine:
					wantText = "SPF " + string(res) + " for mailfrom alice@example.org from 192.0.2.1"
				}
				if d.Text != wantText {
					t.Errorf("text %q, want %q", d.Text, wantText)
				}
			})
		}
	}
}

func TestDecideSpecialCases(t *testing.T) {
	helo := &spf.Outcome{
		Result: spf.Fail, Identity: spf.IdentityHELO, Domain: "mx.example.org",
		Sender: "postmaster@mx.example.org", IP: netip.MustParseAddr("2001:db8::1"), HELO: "mx.example.org",
	}
	tests := []struct {
		name      string
		configure func(*config.Config)
		o         *spf.Outcome
		want      Decision
	}{
		{"nil outcome", nil, nil, Decision{Action: config.Accept}},
		{"HELO policy applies to the HELO identity",
			func(c *config.Config) { c.Policy.MailFrom[spf.Fail] = config.Accept },
			helo,
			Decision{Action: config.Reject, Code: 550, Enhanced: "5.7.23",
				Text: "SPF fail: domain of mx.example.org does not designate 2001:db8::1 as permitted sender"}},
		{"HELO quarantine reason names the HELO",
			func(c *config.Config) { c.Policy.HELO[spf.Fail] = config.Quarantine },
			helo,
			Decision{Action: config.Quarantine, Text: "SPF fail for helo mx.example.org from 2001:db8::1"}},
		{"result missing from the policy is accepted",
			func(c *config.Config) { delete(c.Policy.MailFrom, spf.Fail) },
			outcomeFor(spf.Fail), Decision{Action: config.Accept}},
		{"dry run keeps the decision",
			func(c *config.Config) { c.DryRun = true },
			outcomeFor(spf.Fail),
			Decision{Action: config.Reject, Code: 550, Enhanced: "5.7.23", DryRun: true,
				Text: "SPF fail: example.org does not designate 192.0.2.1 as a permitted sender"}},
		{"template with macros",
			func(c *config.Config) {
				c.Replies[spf.Fail] = "Please see http://www.open-spf.org/Why?s=%{S}&i=%{i}&r=%{r}: 100%% sure"
			},
			outcomeFor(spf.Fail),
			Decision{Action: config.Reject, Code: 550, Enhanced: "5.7.23",
				Text: "Please see http://www.open-spf.org/Why?s=alice%40example.org&i=192.0.2.1&r=mx.example.net: 100% sure"}},
		{"template that does not parse falls back",
			func(c *config.Config) { c.Replies[spf.Fail] = "bad %{" },
			outcomeFor(spf.Fail),
			Decision{Action: config.Reject, Code: 550, Enhanced: "5.7.23",
				Text: "SPF fail: example.org does not designate 192.0.2.1 as a permitted sender"}},
		{"template of another result is not used",
			func(c *config.Config) { c.Replies[spf.Softfail] = "softfail text" },
			outcomeFor(spf.Fail),
			Decision{Action: config.Reject, Code: 550, Enhanced: "5.7.23",
				Text: "SPF fail: example.org does not designate 192.0.2.1 as a permitted sender"}},
		{"fail without explanation", nil,
			&spf.Outcome{Result: spf.Fail, Identity: spf.IdentityMailFrom, Sender: "a@b.example", Domain: "b.example"},
			Decision{Action: config.Reject, Code: 550, Enhanced: "5.7.23",
				Text: "SPF fail: domain of a@b.example does not designate an unknown address as permitted sender"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			if tt.configure != nil {
				tt.configure(cfg)
			}
			if got := New(cfg).Decide(Message{}, tt.o); got != tt.want {
				t.Errorf("Decide:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestReply(t *testing.T) {
	tests := []struct {
		d    Decision
		want string
	}{
		{Decision{Action: config.Accept}, ""},
		{Decision{Action: config.Quarantine, Text: "held 100%"}, ""},
		{Decision{Action: config.Reject, Code: 550, Enhanced: "5.7.23", Text: "100% sure, 50%% off, %{s}"},
			"550 5.7.23 100%% sure, 50%%%% off, %%{s}"},
		{Decision{Action: config.Tempfail, Code: 451, Enhanced: "4.7.1", Text: "later", DryRun: true}, "451 4.7.1 later"},
	}
	for _, tt := range tests {
		if got := tt.d.Reply(); got != tt.want {
			t.Errorf("%+v: Reply() = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestSanitizeReply(t *testing.T) {
	long := strings.Repeat("abcdefghi ", 60)
	tests := []struct {
		name, in, want string
	}{
		{"plain", "SPF fail: nope", "SPF fail: nope"},
		{"CR LF injection", "line one\r\n250 OK\r\nline three", "line one 250 OK line three"},
		{"tabs and runs of space", "\t a \t\t b  ", "a b"},
		{"control characters and DEL", "a\x00b\x07c\x7fd\x1be", "a b c d e"},
		{"non-ASCII", "caf\u00e9 \u2603 na\u00efve", "caf? ? na?ve"},
		{"invalid UTF-8", "a\xff\xfeb", "a??b"},
		{"percent kept", "100% %{s}", "100% %{s}"},
		{"empty", "", ""},
		{"only control", "\r\n\t", ""},
		{"long cut", long, strings.Repeat("abcdefghi ", 39) + "abcdefg..."},
		{"percent counts twice", strings.Repeat("%", 500), strings.Repeat("%", 198) + "..."},
		{"no space before the dots", strings.Repeat("%", 198) + " abc" + strings.Repeat("x", 300), strings.Repeat("%", 198) + "..."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := sanitizeReply(tt.in)
			if got != tt.want {
				t.Errorf("sanitizeReply(%q)\n got %q\nwant %q", tt.in, got, tt.want)
			}
			if n := escapedLen(got); n > maxReplyText {
				t.Errorf("%d bytes with %% doubled, over %d", n, maxReplyText)
			}
		})
	}
}

// replyRE is one SMTP reply line as a milter may hand it to Postfix and
// Sendmail: a 4xx or 5xx code, an RFC 3463 enhanced code, and printable
// ASCII text, on one line (RFC 5321 §4.2, no continuation).
var replyRE = regexp.MustCompile(`^([45])[0-9]{2} ([45])\.[0-9]{1,3}\.[0-9]{1,3} ([ -~]+)$`)

// checkReply fails unless d's reply, decided on result r, is one valid
// reply line: 4xx for a tempfail or a temperror and 5xx otherwise, codes
// whose classes agree (Sendmail drops the text otherwise), text of printable
// ASCII with every '%' doubled for the MTA (docs/interop.md) and reading back as
// d.Text, and the whole line, CRLF included, within RFC 5321's 512
// octets (§4.5.3.1.5). A quarantine reason must be one printable line too.
func checkReply(t testing.TB, d Decision, r spf.Result) {
	t.Helper()
	checkText := func(what, s string) {
		t.Helper()
		if s == "" || strings.TrimSpace(s) != s || len(s) > maxReplyText {
			t.Errorf("%s %q: empty, padded or over %d bytes", what, s, maxReplyText)
		}
		for i := 0; i < len(s); i++ {
			if s[i] < 0x20 || s[i] > 0x7e {
				t.Fatalf("%s %q: byte %#02x", what, s, s[i])
			}
		}
	}
	reply := d.Reply()
	switch d.Action {
	case config.Accept:
		if reply != "" || d.Text != "" {
			t.Errorf("accept with reply %q, text %q", reply, d.Text)
		}
		return
	case config.Quarantine:
		if reply != "" {
			t.Errorf("quarantine with reply %q", reply)
		}
		checkText("hold reason", d.Text)
		return
	}
	m := replyRE.FindStringSubmatch(reply)
	if m == nil || m[1] != m[2] {
		t.Fatalf("reply %q is not one line of code, matching enhanced code and printable text", reply)
	}
	if want4 := d.Action == config.Tempfail || r == spf.TempError; want4 != (m[1] == "4") {
		t.Errorf("%s of %s answered %q", d.Action, r, reply)
	}
	if strings.Contains(strings.ReplaceAll(m[3], "%%", ""), "%") {
		t.Errorf("reply %q has a lone '%%'", reply)
	}
	if got := strings.ReplaceAll(m[3], "%%", "%"); got != d.Text {
		t.Errorf("reply text %q does not read back as %q", m[3], d.Text)
	}
	if len(reply)+len("\r\n") > 512 {
		t.Errorf("reply is %d octets with CRLF, over 512", len(reply)+2)
	}
	checkText("reply text", d.Text)
}

// hostileReplyText is what a DNS zone or a client can put into a reply.
var hostileReplyText = []struct{ name, v string }{
	{"CR", "a\rb"},
	{"LF", "a\nb"},
	{"CRLF and a fake reply", "no\r\n250 2.0.0 OK\r\n"},
	{"continuation line", "x\r\n550-5.7.23 more"},
	{"NUL", "a\x00b"},
	{"control bytes", "a\x01\x07\x1b[31m\x1fb"},
	{"DEL", "a\x7fb"},
	{"valid UTF-8", "b\u00fccher \u2603 \U0001F600"},
	{"invalid UTF-8", "a\xc3\x28\xff\xfe\xe2\x82b"},
	{"percent", "100% %s %n %{s} %%"},
	{"10 KB", strings.Repeat("a", 10240)},
	{"10 KB of words", strings.Repeat("ab ", 3414)},
	{"10 KB of percent", strings.Repeat("%", 10240)},
	{"10 KB of controls", strings.Repeat("\r\n\x00", 3414)},
	{"only control", "\r\n\t\x00"},
}

// TestReplyHostile puts hostile text into every part of an outcome that
// can reach a reply, under every refusing action and result, with and
// without a template.
func TestReplyHostile(t *testing.T) {
	templates := []string{"", "%{s} from %{i} at %{h}: see %{r}", "%{S}%{L}%{O}%{D}%{H}",
		"%{s}: see {why_url} or {why_url}", "{why_url}"}
	for _, hv := range hostileReplyText {
		for _, r := range spf.Results {
			for _, a := range []config.Action{config.Reject, config.Tempfail, config.Quarantine} {
				for ti, tmpl := range templates {
					t.Run(fmt.Sprintf("%s/%s/%s/%d", hv.name, r, a, ti), func(t *testing.T) {
						cfg := testConfig()
						cfg.Policy.MailFrom[r] = a
						cfg.Policy.HELO[r] = a
						if tmpl != "" {
							cfg.Replies[r] = tmpl
						}
						if ti%2 == 1 || strings.Contains(tmpl, config.WhyURLToken) {
							cfg.Why.URL = "https://mx.example.net/why"
						}
						o := &spf.Outcome{
							Result: r, Identity: spf.IdentityMailFrom, Domain: hv.v, Sender: hv.v + "@" + hv.v,
							IP: netip.MustParseAddr("192.0.2.1"), HELO: hv.v, Explanation: hv.v, Problem: hv.v,
						}
						checkReply(t, New(cfg).Decide(Message{}, o), r)
						o.Identity = spf.IdentityHELO
						checkReply(t, New(cfg).Decide(Message{}, o), r)
					})
				}
			}
		}
	}
}

// FuzzReply checks checkReply on decisions about arbitrary outcomes and
// reply templates.
func FuzzReply(f *testing.F) {
	f.Add("example.org does not allow 192.0.2.1", "", "alice@example.org", "mx.example.org", "", uint8(3), uint8(1))
	f.Add("100% sure\r\n250 OK", "x", "\"a b\"@x\x00", "\xff", "%{s} %{i} %%", uint8(0x15), uint8(2))
	f.Add(strings.Repeat("%", 300), "", "", "", "%{S}", uint8(4), uint8(3))
	f.Add("x", "", "\u00e9@\u00e9.example", "h%", "a {why_url} b {why_url}", uint8(3), uint8(0x11))
	f.Fuzz(func(t *testing.T, explanation, problem, sender, helo, tmpl string, result, action uint8) {
		r := spf.Results[int(result)%len(spf.Results)]
		actions := []config.Action{config.Accept, config.Reject, config.Tempfail, config.Quarantine}
		cfg := testConfig()
		if action&0x10 != 0 {
			cfg.Why.URL = "https://mx.example.net/why"
		}
		cfg.Policy.MailFrom[r] = actions[int(action)%len(actions)]
		cfg.Policy.HELO[r] = actions[int(action>>2)%len(actions)]
		cfg.Replies[r] = tmpl // one that does not parse falls back
		o := &spf.Outcome{
			Result: r, Identity: spf.IdentityMailFrom, Domain: helo, Sender: sender,
			IP: netip.MustParseAddr("2001:db8::1"), HELO: helo, Explanation: explanation, Problem: problem,
		}
		if result&0x80 != 0 {
			o.IP = netip.Addr{}
		}
		checkReply(t, New(cfg).Decide(Message{}, o), r)
		o.Identity = spf.IdentityHELO
		checkReply(t, New(cfg).Decide(Message{}, o), r)
	})
}

// TestWhyLink checks the link to the why page in refusals: URL-encoded
// values, '%' doubled once more for the MTA, the link never cut, and left
// out when it cannot fit.
func TestWhyLink(t *testing.T) {
	const base = "https://mx.example.net/why"
	long := strings.Repeat("x", 300)
	v6 := func(o *spf.Outcome) { o.IP = netip.MustParseAddr("2001:db8::25") }
	tests := []struct {
		name   string
		url    string
		result spf.Result
		tmpl   string
		change func(*spf.Outcome)
		// text is the whole reply text wanted, or "" to check only that
		// it ends with link (and holds it once).
		text, link string
	}{
		{name: "fail, default text", url: base, result: spf.Fail,
			text: "SPF fail: example.org does not designate 192.0.2.1 as a permitted sender. See " +
				base + "?s=alice%40example.org&i=192.0.2.1&h=mx.example.org"},
		{name: "no url, no link", result: spf.Fail,
			text: "SPF fail: example.org does not designate 192.0.2.1 as a permitted sender"},
		{name: "permerror keeps its problem", url: base, result: spf.PermError,
			text: `SPF permerror: SPF record of example.org: invalid term "foo": unknown mechanism. See ` +
				base + "?s=alice%40example.org&i=192.0.2.1&h=mx.example.org"},
		{name: "explanation ending in a dot", url: base, result: spf.Fail,
			change: func(o *spf.Outcome) { o.Explanation = "Not allowed." },
			text:   "SPF fail: Not allowed. See " + base + "?s=alice%40example.org&i=192.0.2.1&h=mx.example.org"},
		{name: "IPv6 written plainly, encoded", url: base, result: spf.Softfail, change: v6,
			link: base + "?s=alice%40example.org&i=2001%3Adb8%3A%3A25&h=mx.example.org"},
		{name: "hostile sender encoded", url: base, result: spf.Fail,
			change: func(o *spf.Outcome) { o.Sender = "\"a b\"&x=<y>%\r\n@example.org"; o.HELO = "h\u00e9" },
			link:   base + "?s=%22a+b%22%26x%3D%3Cy%3E%25%0D%0A%40example.org&i=192.0.2.1&h=h%C3%A9"},
		{name: "long explanation cut, link kept", url: base, result: spf.Fail,
			change: func(o *spf.Outcome) { o.Explanation = strings.Repeat("no %s ", 200) },
			link:   base + "?s=alice%40example.org&i=192.0.2.1&h=mx.example.org"},
		{name: "long HELO left out of the link", url: base, result: spf.Fail,
			change: func(o *spf.Outcome) { o.HELO = long },
			link:   base + "?s=alice%40example.org&i=192.0.2.1"},
		{name: "link too long for a reply", url: base, result: spf.Fail,
			change: func(o *spf.Outcome) { o.Sender = strings.Repeat("%", 100) + "@example.org" },
			text:   "SPF fail: example.org does not designate 192.0.2.1 as a permitted sender"},
		{name: "template with the token", url: base, result: spf.Fail, tmpl: "%{i} may not send for %{o}; details: {why_url}",
			text: "192.0.2.1 may not send for example.org; details: " + base + "?s=alice%40example.org&i=192.0.2.1&h=mx.example.org"},
		{name: "template without the token gets no link", url: base, result: spf.Fail, tmpl: "no %{o}",
			text: "no example.org"},
		{name: "token in the middle, text cut around it", url: base, result: spf.Fail,
			tmpl: "{why_url} %{o} " + strings.Repeat("w", 500),
			link: base + "?s=alice%40example.org&i=192.0.2.1&h=mx.example.org"},
		{name: "temperror links too", url: base, result: spf.TempError,
			text: "SPF temperror: DNS failure: TXT example.org: timeout, try again later. See " +
				base + "?s=alice%40example.org&i=192.0.2.1&h=mx.example.org"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Why.URL = tt.url
			cfg.Policy.MailFrom[tt.result] = config.Reject
			if tt.tmpl != "" {
				cfg.Replies[tt.result] = tt.tmpl
			}
			o := outcomeFor(tt.result)
			if tt.change != nil {
				tt.change(o)
			}
			d := New(cfg).Decide(Message{}, o)
			checkReply(t, d, tt.result)
			switch {
			case tt.text != "":
				if d.Text != tt.text {
					t.Errorf("text\n got %q\nwant %q", d.Text, tt.text)
				}
			case tt.tmpl != "":
				if strings.Count(d.Text, tt.link) != 1 {
					t.Errorf("text %q does not hold the link %q once", d.Text, tt.link)
				}
			default:
				if !strings.HasSuffix(d.Text, " See "+tt.link) || strings.Count(d.Text, base) != 1 {
					t.Errorf("text %q does not end with the link %q", d.Text, tt.link)
				}
			}
			// The MTA undoes the doubling: the client reads the link as made.
			if tt.link != "" && !strings.Contains(strings.ReplaceAll(d.Reply(), "%%", "%"), tt.link) {
				t.Errorf("reply %q does not read back to the link", d.Reply())
			}
		})
	}
}

// TestWhyLinkRoundTrip checks that the page reads the values back from a
// link exactly as the check saw them.
func TestWhyLinkRoundTrip(t *testing.T) {
	for _, hv := range hostileReplyText {
		if len(hv.v) > 40 {
			continue // too long for a link: left out, tested above
		}
		t.Run(hv.name, func(t *testing.T) {
			o := outcomeFor(spf.Fail)
			o.Sender, o.HELO = hv.v+"@example.org", hv.v
			link := whyLink("https://mx.example.net/why", o)
			u, err := url.Parse(link)
			if err != nil {
				t.Fatalf("link %q: %v", link, err)
			}
			q := u.Query()
			if q.Get("s") != o.Sender || q.Get("i") != "192.0.2.1" || q.Get("h") != o.HELO {
				t.Errorf("link %q reads back as %v", link, q)
			}
			for i := 0; i < len(link); i++ {
				if link[i] <= ' ' || link[i] > '~' {
					t.Fatalf("link %q has byte %#02x", link, link[i])
				}
			}
		})
	}
}
