package milter

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/spf"
)

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
				d := Decide(cfg, outcomeFor(res))
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
			if got := Decide(cfg, tt.o); got != tt.want {
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
