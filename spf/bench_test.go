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

// parseBenchRecords are records as published in the wild, with documentation
// names and addresses: one that uses every kind of term, the long address
// list of a mail provider, and the short record of a small domain.
var parseBenchRecords = []struct {
	name, text string
}{
	{"long", "v=spf1 ip4:192.0.2.0/24 ip4:198.51.100.17 ip6:2001:db8::/32 ip6:2001:db8:1::25 " +
		"a a:mail.example.com/28 mx mx:example.net/24//64 include:_spf.example.net " +
		"?exists:%{ir}.%{l1r+-}._spf.%{d2} ~ptr:example.org " +
		"redirect=_spf.example.com exp=explain._spf.%{d}"},
	{"provider", "v=spf1 ip4:192.0.2.0/25 ip4:192.0.2.128/26 ip4:198.51.100.0/24 " +
		"ip4:203.0.113.0/25 ip4:203.0.113.192/27 ip6:2001:db8:4000::/36 ip6:2001:db8:8000::/33 " +
		"ip6:2001:db8:c800::/37 include:spf2.provider.example -all"},
	{"simple", "v=spf1 mx include:_spf.provider.example ~all"},
}

// BenchmarkParse measures parsing a record into its terms. The setup checks
// that each record parses and that its printed form parses back to the same
// text, so that a parser which gives up early cannot look fast.
func BenchmarkParse(b *testing.B) {
	for _, rec := range parseBenchRecords {
		b.Run(rec.name, func(b *testing.B) {
			r, err := spf.Parse(rec.text)
			if err != nil {
				b.Fatalf("Parse(%q): %v", rec.text, err)
			}
			again, err := spf.Parse(r.String())
			if err != nil || again.String() != r.String() {
				b.Fatalf("Parse(%q).String() = %q does not parse back to itself (%v)", rec.text, r.String(), err)
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(rec.text)))
			for b.Loop() {
				if _, err := spf.Parse(rec.text); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// warmPolicy is a realistic policy: a redirect to a record with three
// includes of ten ip4/ip6 terms each, all in documentation ranges
// (RFC 5737, RFC 3849), next to a verification token the evaluator must
// skip. bench/zone.go serves the same policy to compare with another
// library; keep the two in step. A TXT character-string holds at most 255
// octets, so the long records are given as two strings, which a resolver
// joins with nothing between them.
var warmPolicy = []struct {
	name string
	txt  []string
}{
	{"example.com", []string{"site-verification=4f9c2d1e8b7a6c5d"}},
	{"example.com", []string{"v=spf1 redirect=_spf.example.com"}},
	{"_spf.example.com", []string{"v=spf1 include:_a.example.com include:_b.example.com include:_c.example.com -all"}},
	{"_a.example.com", []string{
		"v=spf1 ip4:192.0.2.0/28 ip4:192.0.2.16/29 ip4:192.0.2.24 ip4:192.0.2.32/27 ",
		"ip6:2001:db8:a::/48 ip6:2001:db8:a1::/64 ip6:2001:db8:a2::1 ip4:192.0.2.64/26 " +
			"ip6:2001:db8:a300::/40 ip4:192.0.2.128/25 ~all",
	}},
	{"_b.example.com", []string{
		"v=spf1 ip4:198.51.100.0/26 ip4:198.51.100.64/27 ip4:198.51.100.96 ip4:198.51.100.97 ",
		"ip6:2001:db8:b::/48 ip6:2001:db8:b1::/64 ip6:2001:db8:b2::25 ip4:198.51.100.128/28 " +
			"ip6:2001:db8:b300::/40 ip4:198.51.100.144/28 ~all",
	}},
	{"_c.example.com", []string{
		"v=spf1 ip4:203.0.113.0/28 ip4:203.0.113.16/28 ip6:2001:db8:c::/48 ip4:203.0.113.32 ",
		"ip6:2001:db8:c1::/64 ip4:203.0.113.40/29 ip6:2001:db8:c2::10 ip4:203.0.113.48/28 " +
			"ip6:2001:db8:c300::/40 ip4:203.0.113.64/26 ~all",
	}},
}

// memoTXT answers TXT questions from answers fetched once, and passes every
// other question on. dnstest.MapResolver builds each answer anew from the
// zone (it packs the record to wire form to read its character-strings), so
// without the memo a benchmark would mostly time the test resolver rather
// than the evaluator.
type memoTXT struct {
	spf.Resolver
	txt map[string][]string
}

func (m memoTXT) LookupTXT(ctx context.Context, name string) ([]string, error) {
	if txt, ok := m.txt[strings.ToLower(name)]; ok {
		return txt, nil
	}
	return m.Resolver.LookupTXT(ctx, name)
}

// BenchmarkCheckWarm measures a whole MAIL FROM check of warmPolicy with
// every DNS answer in memory, so that it shows the evaluator's own cost
// rather than the network's. The answers are those dnstest.MapResolver gives
// for the zone, fetched once. The cases match late in the last include (in
// its last term for IPv4, its ninth for IPv6), so that nearly every term is
// tried first, or match nothing and fall through each include's ~all (which
// counts as no match, RFC 7208 §5.2) to the final -all.
func BenchmarkCheckWarm(b *testing.B) {
	z := dnstest.NewZone()
	for _, rr := range warmPolicy {
		z.AddTXT(rr.name, rr.txt...)
	}
	ctx := context.Background()
	mr := dnstest.NewMapResolver(z)
	memo := memoTXT{Resolver: mr, txt: make(map[string][]string)}
	for _, rr := range warmPolicy {
		txt, err := mr.LookupTXT(ctx, rr.name)
		if err != nil {
			b.Fatalf("LookupTXT(%s): %v", rr.name, err)
		}
		memo.txt[rr.name] = txt
	}
	c := &spf.Checker{Resolver: memo, Receiver: "mx.example.net"}
	const sender, helo = "alice@example.com", "mail.example.com"

	for _, tc := range []struct {
		name string
		ip   netip.Addr
		want spf.Result
	}{
		{"pass", netip.MustParseAddr("203.0.113.100"), spf.Pass},
		{"pass6", netip.MustParseAddr("2001:db8:c3ff::25"), spf.Pass},
		{"fail", netip.MustParseAddr("203.0.113.200"), spf.Fail},
		{"fail6", netip.MustParseAddr("2001:db8:ffff::1"), spf.Fail},
	} {
		b.Run(tc.name, func(b *testing.B) {
			out := c.CheckMailFrom(ctx, tc.ip, sender, helo)
			if out.Result != tc.want {
				b.Fatalf("CheckMailFrom(%s) = %s, want %s (problem %q)", tc.ip, out.Result, tc.want, out.Problem)
			}
			// redirect= and the three include: terms (RFC 7208 §4.6.4).
			if out.DNSLookups != 4 || out.VoidLookups != 0 {
				b.Fatalf("CheckMailFrom(%s): %d DNS lookups and %d void, want 4 and 0", tc.ip, out.DNSLookups, out.VoidLookups)
			}
			b.ReportAllocs()
			for b.Loop() {
				c.CheckMailFrom(ctx, tc.ip, sender, helo)
			}
		})
	}
}

// coldDelay is how long the server of BenchmarkColdRedirectIncludes waits
// before each answer: a round trip to a distant resolver that has nothing
// cached either.
const coldDelay = 20 * time.Millisecond

// BenchmarkColdRedirectIncludes measures a cold check of warmPolicy (a
// redirect= to a record of three include: terms) against a DNS server on
// loopback that answers every query after coldDelay, through a resolver
// without a cache, so that the time is almost all spent waiting for
// answers. The "round-trips" metric is the time of one check in units of
// coldDelay. A sequential check waits for five answers, one after the
// other: the domain's record, the redirect target's and each include's.
// Fetching the targets ahead overlaps the three includes: three.
func BenchmarkColdRedirectIncludes(b *testing.B) {
	z := dnstest.NewZone()
	for _, rr := range warmPolicy {
		z.AddTXT(rr.name, rr.txt...)
	}
	srv := dnstest.StartServer(b, z)
	srv.SetDelay(coldDelay)
	r, err := spf.NewDNSResolver(spf.DNSOptions{Servers: []string{srv.Addr()}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	// Matched by the last include, so that every record is needed.
	ip := netip.MustParseAddr("203.0.113.100")
	const sender, helo = "alice@example.com", "mail.example.com"

	// One query alone, to read the others by: it shows what a round trip
	// costs beyond coldDelay (the server's timer, the two sockets).
	b.Run("one-query", func(b *testing.B) {
		for b.Loop() {
			if _, err := r.LookupTXT(ctx, "_spf.example.com"); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed())/float64(b.N)/float64(coldDelay), "round-trips")
	})
	for _, mode := range []struct {
		name       string
		sequential bool
	}{{"sequential", true}, {"concurrent", false}} {
		b.Run(mode.name, func(b *testing.B) {
			c := &spf.Checker{Resolver: r, Receiver: "mx.example.net", Sequential: mode.sequential}
			for b.Loop() {
				out := c.CheckMailFrom(ctx, ip, sender, helo)
				if out.Result != spf.Pass || out.DNSLookups != 4 {
					b.Fatalf("CheckMailFrom(%s) = %s with %d lookups, want pass with 4 (problem %q)", ip, out.Result, out.DNSLookups, out.Problem)
				}
			}
			b.ReportMetric(float64(b.Elapsed())/float64(b.N)/float64(coldDelay), "round-trips")
		})
	}
}

// BenchmarkCheckCached measures what the daemon does for a sender it has
// seen before: a check of warmPolicy through a DNSResolver whose cache holds
// every answer (the server on loopback is only asked while warming up),
// concurrent and sequential. Concurrent checks fetch nothing ahead that the
// cache holds, so the two should cost about the same.
func BenchmarkCheckCached(b *testing.B) {
	z := dnstest.NewZone()
	for _, rr := range warmPolicy {
		z.AddTXT(rr.name, rr.txt...)
	}
	srv := dnstest.StartServer(b, z)
	r, err := spf.NewDNSResolver(spf.DNSOptions{Servers: []string{srv.Addr()}, CacheSize: spf.DefaultCacheSize})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	const sender, helo = "alice@example.com", "mail.example.com"
	for _, tc := range []struct {
		name string
		ip   netip.Addr
		want spf.Result
	}{
		{"pass", netip.MustParseAddr("203.0.113.100"), spf.Pass},
		{"fail", netip.MustParseAddr("203.0.113.200"), spf.Fail},
	} {
		for _, sequential := range []bool{false, true} {
			name := tc.name + "/concurrent"
			if sequential {
				name = tc.name + "/sequential"
			}
			b.Run(name, func(b *testing.B) {
				c := &spf.Checker{Resolver: r, Receiver: "mx.example.net", Sequential: sequential}
				out := c.CheckMailFrom(ctx, tc.ip, sender, helo)
				if out.Result != tc.want {
					b.Fatalf("CheckMailFrom(%s) = %s, want %s (problem %q)", tc.ip, out.Result, tc.want, out.Problem)
				}
				srv.ResetQueries()
				b.ReportAllocs()
				for b.Loop() {
					c.CheckMailFrom(ctx, tc.ip, sender, helo)
				}
				if q := srv.Queries(); len(q) != 0 {
					b.Fatalf("a warm check asked the server %d times: %v", len(q), q)
				}
			})
		}
	}
}
