// Package bench compares the speed of spf-milter's SPF evaluator with
// blitiri.com.ar/go/spf on one policy and one set of in-memory DNS answers.
//
// It is a module of its own so that the product never depends on the peer
// library; run it with `go test -bench . -benchmem` from this directory.
package bench

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/spf-milter/spf-milter/spf"
)

// policyTXT is the one data set both libraries are given: the TXT records of
// a realistic policy, a redirect to a record with three includes of ten
// ip4/ip6 terms each. Every address is from a documentation range
// (RFC 5737, RFC 3849). The extra TXT record at example.com is there because
// real domains publish verification tokens next to their SPF record, and an
// evaluator has to skip them.
//
// spf/bench_test.go in the main module serves the same policy through
// internal/dnstest; keep the two in step.
var policyTXT = map[string][]string{
	"example.com": {
		"site-verification=4f9c2d1e8b7a6c5d",
		"v=spf1 redirect=_spf.example.com",
	},
	"_spf.example.com": {
		"v=spf1 include:_a.example.com include:_b.example.com include:_c.example.com -all",
	},
	"_a.example.com": {
		"v=spf1 ip4:192.0.2.0/28 ip4:192.0.2.16/29 ip4:192.0.2.24 ip4:192.0.2.32/27 " +
			"ip6:2001:db8:a::/48 ip6:2001:db8:a1::/64 ip6:2001:db8:a2::1 ip4:192.0.2.64/26 " +
			"ip6:2001:db8:a300::/40 ip4:192.0.2.128/25 ~all",
	},
	"_b.example.com": {
		"v=spf1 ip4:198.51.100.0/26 ip4:198.51.100.64/27 ip4:198.51.100.96 ip4:198.51.100.97 " +
			"ip6:2001:db8:b::/48 ip6:2001:db8:b1::/64 ip6:2001:db8:b2::25 ip4:198.51.100.128/28 " +
			"ip6:2001:db8:b300::/40 ip4:198.51.100.144/28 ~all",
	},
	"_c.example.com": {
		"v=spf1 ip4:203.0.113.0/28 ip4:203.0.113.16/28 ip6:2001:db8:c::/48 ip4:203.0.113.32 " +
			"ip6:2001:db8:c1::/64 ip4:203.0.113.40/29 ip6:2001:db8:c2::10 ip4:203.0.113.48/28 " +
			"ip6:2001:db8:c300::/40 ip4:203.0.113.64/26 ~all",
	},
}

// benchCase is one check run against policyTXT.
type benchCase struct {
	name string
	ip   netip.Addr
	want spf.Result
}

// Sender, HELO name and receiver of every check.
const (
	sender   = "alice@example.com"
	helo     = "mail.example.com"
	receiver = "mx.example.net"
)

// cases cover both address families and both ways out of the policy: a match
// late in the last include (in its last term for IPv4, its ninth for IPv6),
// so that nearly every term is tried first, and no match at all, falling
// through every include's ~all to -all.
var cases = []benchCase{
	{name: "pass", ip: netip.MustParseAddr("203.0.113.100"), want: spf.Pass},
	{name: "pass6", ip: netip.MustParseAddr("2001:db8:c3ff::25"), want: spf.Pass},
	{name: "fail", ip: netip.MustParseAddr("203.0.113.200"), want: spf.Fail},
	{name: "fail6", ip: netip.MustParseAddr("2001:db8:ffff::1"), want: spf.Fail},
}

// canonical turns a query name into a policyTXT key.
func canonical(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

// serial makes every answer of a unique-records resolver new text.
var serial atomic.Uint64

// lookupTXT is the one TXT lookup both adapters make, so that both libraries
// pay the same for it. With unique set, every SPF record is answered with an
// unknown modifier holding a fresh number appended (RFC 7208 §6 says to
// ignore it): no two checks then see the same record text, which defeats
// any cache of parsed records keyed by text, such as ours. Otherwise the
// stored slices are returned as they are, without copying.
func lookupTXT(name string, unique bool) ([]string, bool) {
	txt, ok := policyTXT[canonical(name)]
	if !ok || !unique {
		return txt, ok
	}
	out := make([]string, len(txt))
	for i, t := range txt {
		if strings.HasPrefix(t, "v=spf1 ") {
			t += " n=" + strconv.FormatUint(serial.Add(1), 10)
		}
		out[i] = t
	}
	return out, true
}

// oursResolver presents policyTXT as an spf.Resolver.
type oursResolver struct{ unique bool }

var _ spf.Resolver = oursResolver{}

func (r oursResolver) LookupTXT(_ context.Context, name string) ([]string, error) {
	if txt, ok := lookupTXT(name, r.unique); ok {
		return txt, nil
	}
	return nil, &spf.DNSError{Name: name, Type: "TXT", Err: spf.ErrNXDomain}
}

// notFound answers a question policyTXT has no data for: "no data" at a name
// that exists, NXDOMAIN elsewhere.
func notFound(name, qtype string) error {
	if _, ok := policyTXT[canonical(name)]; ok {
		return &spf.DNSError{Name: name, Type: qtype, Err: spf.ErrNoData}
	}
	return &spf.DNSError{Name: name, Type: qtype, Err: spf.ErrNXDomain}
}

func (oursResolver) LookupA(_ context.Context, name string) ([]netip.Addr, error) {
	return nil, notFound(name, "A")
}

func (oursResolver) LookupAAAA(_ context.Context, name string) ([]netip.Addr, error) {
	return nil, notFound(name, "AAAA")
}

func (oursResolver) LookupMX(_ context.Context, name string) ([]string, error) {
	return nil, notFound(name, "MX")
}

func (oursResolver) LookupPTR(_ context.Context, addr netip.Addr) ([]string, error) {
	return nil, &spf.DNSError{Name: addr.String(), Type: "PTR", Err: spf.ErrNXDomain}
}

// blitiriResolver presents policyTXT through the DNSResolver interface of
// blitiri.com.ar/go/spf, which mirrors *net.Resolver: "no records" is a
// *net.DNSError with IsNotFound set.
type blitiriResolver struct{ unique bool }

// blitiriNotFound builds the error blitiri treats as NXDOMAIN or no data.
func blitiriNotFound(name string) error {
	return &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (r blitiriResolver) LookupTXT(_ context.Context, name string) ([]string, error) {
	if txt, ok := lookupTXT(name, r.unique); ok {
		return txt, nil
	}
	return nil, blitiriNotFound(name)
}

func (blitiriResolver) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	return nil, blitiriNotFound(name)
}

func (blitiriResolver) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	return nil, blitiriNotFound(host)
}

func (blitiriResolver) LookupAddr(_ context.Context, addr string) ([]string, error) {
	return nil, blitiriNotFound(addr)
}
