package spf_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/spf-milter/spf-milter/internal/dnstest"
	"github.com/spf-milter/spf-milter/spf"
)

func zone(t *testing.T, rrs ...string) *dnstest.Zone {
	t.Helper()
	z := dnstest.NewZone()
	if err := z.Add(rrs...); err != nil {
		t.Fatal(err)
	}
	return z
}

func checker(z *dnstest.Zone) *spf.Checker {
	return &spf.Checker{Resolver: dnstest.NewMapResolver(z), Receiver: "mx.example.net"}
}

var ctx = context.Background()

// The Outcome carries the cause, not just the result.
func TestOutcomeFields(t *testing.T) {
	z := zone(t,
		`example.org. TXT "v=spf1 redirect=_spf.example.org"`,
		`_spf.example.org. TXT "v=spf1 include:a.example.net ip4:192.0.2.0/24 -all"`,
		`a.example.net. TXT "v=spf1 a:nx.example.net ip6:2001:db8::/32 ~all"`,
	)
	tests := []struct {
		ip, sender, helo string
		result           spf.Result
		mechanism        string
		mechDomain       string
		lookups, voids   int
	}{
		{"192.0.2.9", "joe@example.org", "mail.example.org", spf.Pass, "ip4:192.0.2.0/24", "_spf.example.org", 3, 1},
		{"2001:db8::9", "joe@example.org", "mail.example.org", spf.Pass, "include:a.example.net", "_spf.example.org", 3, 1},
		{"198.51.100.1", "joe@example.org", "mail.example.org", spf.Fail, "-all", "_spf.example.org", 3, 1},
		{"::ffff:198.51.100.1", "<joe@example.org>", "mail.example.org", spf.Fail, "-all", "_spf.example.org", 3, 1},
	}
	for _, tt := range tests {
		o := checker(z).CheckMailFrom(ctx, netip.MustParseAddr(tt.ip), tt.sender, tt.helo)
		if o.Result != tt.result || o.Mechanism != tt.mechanism || o.MechanismDomain != tt.mechDomain ||
			o.DNSLookups != tt.lookups || o.VoidLookups != tt.voids {
			t.Errorf("%s from %s: got %s by %q in %s, %d lookups, %d void; want %s by %q in %s, %d, %d\n%s",
				tt.sender, tt.ip, o.Result, o.Mechanism, o.MechanismDomain, o.DNSLookups, o.VoidLookups,
				tt.result, tt.mechanism, tt.mechDomain, tt.lookups, tt.voids, trace(o))
		}
		if o.Domain != "example.org" || o.Sender != "joe@example.org" || o.Identity != spf.IdentityMailFrom {
			t.Errorf("domain %q sender %q identity %q", o.Domain, o.Sender, o.Identity)
		}
		if o.Record != "v=spf1 redirect=_spf.example.org" {
			t.Errorf("record %q", o.Record)
		}
		if o.IP.Is4() != !strings.Contains(tt.ip, "2001") {
			t.Errorf("IP %v not normalised", o.IP)
		}
	}
}

func trace(o *spf.Outcome) string {
	var b strings.Builder
	for _, s := range o.Trace {
		b.WriteString(s.String())
		b.WriteByte('\n')
	}
	return b.String()
}

func TestTrace(t *testing.T) {
	z := zone(t,
		`example.org. TXT "v=spf1 include:inc.example.org a -all"`,
		`inc.example.org. TXT "v=spf1 ip4:198.51.100.0/24 -all"`,
		`example.org. A 192.0.2.1`,
	)
	o := checker(z).CheckMailFrom(ctx, netip.MustParseAddr("192.0.2.1"), "a@example.org", "h.example.org")
	want := []string{
		"record example.org: v=spf1 include:inc.example.org a -all",
		"include example.org: include:inc.example.org: checking inc.example.org",
		"  record inc.example.org: v=spf1 ip4:198.51.100.0/24 -all",
		"  term inc.example.org: ip4:198.51.100.0/24 (no match)",
		"  term inc.example.org: -all (match)",
		"  result inc.example.org: -all => fail",
		"return example.org: include:inc.example.org => fail",
		"term example.org: include:inc.example.org (no match): inc.example.org gave fail",
		"term example.org: a (match): example.org has 192.0.2.1",
		"result example.org: a => pass",
	}
	got := strings.Split(strings.TrimSpace(trace(o)), "\n")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("trace:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestIdentities(t *testing.T) {
	z := zone(t,
		`mail.example.org. TXT "v=spf1 a -all"`,
		`mail.example.org. A 192.0.2.1`,
		`example.org. TXT "v=spf1 -all exp=why.example.org"`,
		`why.example.org. TXT "%{l} at %{o} may not send from %{c}"`,
		`xn--bcher-kva.example. TXT "v=spf1 +all"`,
	)
	ip := netip.MustParseAddr("192.0.2.1")
	c := checker(z)
	tests := []struct {
		name        string
		o           *spf.Outcome
		result      spf.Result
		sender      string
		explanation string
	}{
		{"null sender uses HELO", c.CheckMailFrom(ctx, ip, "", "mail.example.org"), spf.Pass, "postmaster@mail.example.org", ""},
		{"<> is the null sender", c.CheckMailFrom(ctx, ip, "<>", "mail.example.org"), spf.Pass, "postmaster@mail.example.org", ""},
		{"HELO identity", c.CheckHELO(ctx, ip, "mail.example.org."), spf.Pass, "postmaster@mail.example.org", ""},
		{"empty local part", c.CheckMailFrom(ctx, ip, "@example.org", "x.example.org"), spf.Fail, "postmaster@example.org", "postmaster at example.org may not send from 192.0.2.1"},
		{"trailing dot", c.CheckMailFrom(ctx, ip, "joe@example.org.", "x.example.org"), spf.Fail, "joe@example.org", "joe at example.org may not send from 192.0.2.1"},
		{"IDN", c.CheckMailFrom(ctx, ip, "joe@bücher.example", "x.example.org"), spf.Pass, "joe@xn--bcher-kva.example", ""},
		{"single label HELO", c.CheckHELO(ctx, ip, "localhost"), spf.None, "postmaster@localhost", ""},
		{"address literal", c.CheckMailFrom(ctx, ip, "joe@[192.0.2.1]", "x"), spf.None, "joe@[192.0.2.1]", ""},
		{"numeric top label", c.CheckMailFrom(ctx, ip, "joe@192.0.2.1", "x"), spf.None, "joe@192.0.2.1", ""},
		{"long label", c.CheckMailFrom(ctx, ip, "joe@"+strings.Repeat("a", 64)+".example", "x"), spf.None, "joe@" + strings.Repeat("a", 64) + ".example", ""},
	}
	for _, tt := range tests {
		if tt.o.Result != tt.result || tt.o.Sender != tt.sender || tt.o.Explanation != tt.explanation {
			t.Errorf("%s: %s for %q (%q), want %s for %q (%q)\n%s", tt.name, tt.o.Result, tt.o.Sender, tt.o.Explanation,
				tt.result, tt.sender, tt.explanation, trace(tt.o))
		}
		if tt.o.Result == spf.None && tt.o.Problem == "" {
			t.Errorf("%s: none without a problem text", tt.name)
		}
	}
	if o := c.CheckHELO(ctx, ip, "mail.example.org"); o.Identity != spf.IdentityHELO || o.Domain != "mail.example.org" {
		t.Errorf("HELO check: identity %q domain %q", o.Identity, o.Domain)
	}
}

func TestDefaultExplanation(t *testing.T) {
	z := zone(t, `example.org. TXT "v=spf1 -all"`)
	ip := netip.MustParseAddr("2001:db8::7")
	o := checker(z).CheckMailFrom(ctx, ip, "joe@example.org", "h.example.org")
	if want := "example.org does not designate 2001:db8::7 as a permitted sender"; o.Explanation != want {
		t.Errorf("explanation %q, want %q", o.Explanation, want)
	}
	c := checker(z)
	c.Explanation = "See https://why.example.net/?s=%{S}&i=%{C}&r=%{r}"
	o = c.CheckMailFrom(ctx, ip, "joe@example.org", "h.example.org")
	if want := "See https://why.example.net/?s=joe%40example.org&i=2001%3Adb8%3A%3A7&r=mx.example.net"; o.Explanation != want {
		t.Errorf("explanation %q, want %q", o.Explanation, want)
	}
}

func TestLimits(t *testing.T) {
	var rrs []string
	// eleven includes: the eleventh DNS-querying term is permerror.
	inc := "v=spf1"
	for i := 0; i < 11; i++ {
		name := "i" + string(rune('a'+i)) + ".example.org"
		inc += " include:" + name
		rrs = append(rrs, name+`. TXT "v=spf1 -all"`)
	}
	rrs = append(rrs, `many.example.org. TXT "`+inc+` +all"`)
	rrs = append(rrs, `void.example.org. TXT "v=spf1 a:n1.example.org a:n2.example.org a:n3.example.org +all"`)
	rrs = append(rrs, `void2.example.org. TXT "v=spf1 a:n1.example.org a:n2.example.org +all"`)
	rrs = append(rrs, `loop.example.org. TXT "v=spf1 include:loop.example.org"`)
	mx := `mx.example.org. TXT "v=spf1 mx -all"`
	rrs = append(rrs, mx)
	for i := 0; i < 11; i++ {
		rrs = append(rrs, `mx.example.org. MX 10 m`+string(rune('a'+i))+`.example.org.`)
	}
	z := zone(t, rrs...)
	ip := netip.MustParseAddr("192.0.2.1")
	tests := []struct {
		domain  string
		result  spf.Result
		problem string
	}{
		{"many.example.org", spf.PermError, "more than 10 DNS-querying terms"},
		{"void.example.org", spf.PermError, "more than 2 lookups returned no records"},
		{"void2.example.org", spf.Pass, ""},
		{"loop.example.org", spf.PermError, "more than 10 DNS-querying terms"},
		{"mx.example.org", spf.PermError, "11 MX records"},
	}
	for _, tt := range tests {
		o := checker(z).CheckMailFrom(ctx, ip, "x@"+tt.domain, "h.example.org")
		if o.Result != tt.result || !strings.Contains(o.Problem, tt.problem) {
			t.Errorf("%s: %s %q, want %s %q\n%s", tt.domain, o.Result, o.Problem, tt.result, tt.problem, trace(o))
		}
	}
	o := checker(z).CheckMailFrom(ctx, ip, "x@many.example.org", "h")
	if o.DNSLookups != 11 {
		t.Errorf("counted %d lookups, want 11 (the one over the limit)", o.DNSLookups)
	}
	var limit bool
	for _, s := range o.Trace {
		limit = limit || s.Kind == spf.StepLimit
	}
	if !limit {
		t.Errorf("no limit step in trace:\n%s", trace(o))
	}
}

// A check never outlives its deadline; running out of time is temperror.
func TestCheckDeadline(t *testing.T) {
	z := zone(t, `example.org. TXT "v=spf1 a:slow.example.org -all"`)
	srv := dnstest.StartServer(t, z)
	r, err := spf.NewDNSResolver(spf.DNSOptions{Servers: []string{srv.Addr()}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	z.Timeout("slow.example.org")
	c := &spf.Checker{Resolver: r, Timeout: 300 * time.Millisecond}
	start := time.Now()
	o := c.CheckMailFrom(ctx, netip.MustParseAddr("192.0.2.1"), "a@example.org", "h.example.org")
	if o.Result != spf.TempError || !strings.Contains(o.Problem, "deadline") {
		t.Errorf("got %s %q, want temperror about the deadline", o.Result, o.Problem)
	}
	// Generous bound: it must be the check's 300ms, not the query's 5s.
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("check took %v", d)
	}
}

func TestDNSErrors(t *testing.T) {
	z := zone(t,
		`a.example.org. TXT "v=spf1 a:broken.example.org -all"`,
		`p.example.org. TXT "v=spf1 ptr -all"`,
		`m.example.org. TXT "v=spf1 mx:broken.example.org -all"`,
		`e.example.org. TXT "v=spf1 exists:broken.example.org -all"`,
	)
	z.Rcode("broken.example.org", 2) // SERVFAIL
	z.Rcode("1.2.0.192.in-addr.arpa", 2)
	z.Rcode("txt.example.org", 5) // REFUSED
	ip := netip.MustParseAddr("192.0.2.1")
	for domain, want := range map[string]spf.Result{
		"a.example.org":   spf.TempError,
		"m.example.org":   spf.TempError,
		"e.example.org":   spf.TempError,
		"txt.example.org": spf.TempError,
		"p.example.org":   spf.Fail, // a failed PTR lookup is no match (RFC 7208 §5.5)
	} {
		o := checker(z).CheckMailFrom(ctx, ip, "x@"+domain, "h.example.org")
		if o.Result != want {
			t.Errorf("%s: %s, want %s\n%s", domain, o.Result, want, trace(o))
		}
		if want == spf.TempError && o.Problem == "" {
			t.Errorf("%s: temperror without problem", domain)
		}
	}
}
