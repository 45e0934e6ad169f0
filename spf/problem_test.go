package spf_test

import (
	"context"
	"net/netip"
	"testing"

	"github.com/miekg/dns"

	"github.com/spf-milter/spf-milter/spf"
)

// TestProblemKind checks that each problem a check can meet is named by
// its kind, also when it arises inside an include: or a redirect=, and
// that the term and reason fields are set where they belong.
func TestProblemKind(t *testing.T) {
	z := zone(t,
		`pass.example. TXT "v=spf1 +all"`,
		`twice.example. TXT "v=spf1 -all"`,
		`twice.example. TXT "v=spf1 +all"`,
		`syntax.example. TXT "v=spf1 ip4:192.0.2.0/24 bogus:x -all"`,
		`inc-syntax.example. TXT "v=spf1 include:syntax.example -all"`,
		`lookups.example. TXT "v=spf1 a:a1.example a:a2.example a:a3.example a:a4.example a:a5.example a:a6.example a:a7.example a:a8.example a:a9.example a:a10.example a:a11.example -all"`,
		`inc-lookups.example. TXT "v=spf1 include:lookups.example -all"`,
		`voids.example. TXT "v=spf1 a:nx1.example a:nx2.example a:nx3.example -all"`,
		`redir-voids.example. TXT "v=spf1 redirect=voids.example"`,
		`mx.example. TXT "v=spf1 mx -all"`,
		`inc-none.example. TXT "v=spf1 include:none.example -all"`,
		`redir-none.example. TXT "v=spf1 redirect=none.example"`,
		`inc-bad.example. TXT "v=spf1 include:%{l}.example -all"`,
		`servfail.example. TXT "v=spf1 include:broken.example -all"`,
		`a1.example. A 192.0.2.1`, `a2.example. A 192.0.2.1`, `a3.example. A 192.0.2.1`, `a4.example. A 192.0.2.1`,
		`a5.example. A 192.0.2.1`, `a6.example. A 192.0.2.1`, `a7.example. A 192.0.2.1`, `a8.example. A 192.0.2.1`,
		`a9.example. A 192.0.2.1`, `a10.example. A 192.0.2.1`, `a11.example. A 192.0.2.1`,
	)
	for i := range 11 {
		if err := z.Add(`mx.example. MX 10 mx` + string(rune('a'+i)) + `.example.`); err != nil {
			t.Fatal(err)
		}
	}
	z.Rcode("broken.example", dns.RcodeServerFailure)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	tests := []struct {
		name   string
		ctx    context.Context
		ip     string
		sender string
		result spf.Result
		kind   spf.ProblemKind
		term   string
		reason string
	}{
		{"pass has none", ctx, "198.51.100.1", "a@pass.example", spf.Pass, "", "", ""},
		{"no client IP", ctx, "", "a@pass.example", spf.PermError, spf.ProblemNoClientIP, "", ""},
		{"not a domain", ctx, "198.51.100.1", "a@localhost", spf.None, spf.ProblemNotADomain, "", "not a multi-label domain name"},
		{"an address literal", ctx, "198.51.100.1", "a@[192.0.2.1]", spf.None, spf.ProblemNotADomain, "", "an address literal, not a domain name"},
		{"no record", ctx, "198.51.100.1", "a@none.example", spf.None, spf.ProblemNoRecord, "", ""},
		{"two records", ctx, "198.51.100.1", "a@twice.example", spf.PermError, spf.ProblemMultipleRecords, "", ""},
		{"syntax, with the term", ctx, "198.51.100.1", "a@syntax.example", spf.PermError, spf.ProblemSyntax, "bogus:x", ""},
		{"syntax in an include: names no term of Record", ctx, "198.51.100.1", "a@inc-syntax.example", spf.PermError, spf.ProblemSyntax, "", ""},
		{"lookup limit", ctx, "198.51.100.1", "a@lookups.example", spf.PermError, spf.ProblemLookupLimit, "", ""},
		{"lookup limit through include:", ctx, "198.51.100.1", "a@inc-lookups.example", spf.PermError, spf.ProblemLookupLimit, "", ""},
		{"void limit", ctx, "198.51.100.1", "a@voids.example", spf.PermError, spf.ProblemVoidLimit, "", ""},
		{"void limit through redirect=", ctx, "198.51.100.1", "a@redir-voids.example", spf.PermError, spf.ProblemVoidLimit, "", ""},
		{"too many MX", ctx, "198.51.100.1", "a@mx.example", spf.PermError, spf.ProblemTooManyMX, "", ""},
		{"include: of a domain without a record", ctx, "198.51.100.1", "a@inc-none.example", spf.PermError, spf.ProblemTargetNoRecord, "", ""},
		{"redirect= to a domain without a record", ctx, "198.51.100.1", "a@redir-none.example", spf.PermError, spf.ProblemTargetNoRecord, "", ""},
		{"include: of an invalid name", ctx, "198.51.100.1", "a..b@inc-bad.example", spf.PermError, spf.ProblemInvalidTarget, "", ""},
		{"DNS failure through include:", ctx, "198.51.100.1", "a@servfail.example", spf.TempError, spf.ProblemDNS, "", ""},
		{"deadline", cancelled, "198.51.100.1", "a@pass.example", spf.TempError, spf.ProblemDeadline, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ip netip.Addr
			if tt.ip != "" {
				ip = netip.MustParseAddr(tt.ip)
			}
			o := checker(z).CheckMailFrom(tt.ctx, ip, tt.sender, "mail.example")
			if o.Result != tt.result || o.ProblemKind != tt.kind || o.ProblemTerm != tt.term || o.ProblemReason != tt.reason {
				t.Errorf("got %s, kind %q, term %q, reason %q; want %s, %q, %q, %q\nproblem: %s\n%s",
					o.Result, o.ProblemKind, o.ProblemTerm, o.ProblemReason, tt.result, tt.kind, tt.term, tt.reason, o.Problem, trace(o))
			}
			if (o.ProblemKind == "") != (o.Problem == "") {
				t.Errorf("kind %q for problem %q: a problem has a kind, and only a problem", o.ProblemKind, o.Problem)
			}
		})
	}
}
