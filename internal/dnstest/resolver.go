package dnstest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/miekg/dns"

	"github.com/spf-milter/spf-milter/internal/dnsname"

	"github.com/spf-milter/spf-milter/spf"
)

// maxCNAMEChain is the longest CNAME chain a lookup follows, the same limit
// spf.DNSResolver applies.
const maxCNAMEChain = 10

// MapResolver answers spf.Resolver questions straight from a Zone, with the
// results spf.DNSResolver gives when it asks a Server for the same Zone,
// but without a network and without waiting: a Timeout name fails at once
// with a timeout error.
type MapResolver struct {
	zone *Zone

	mu      sync.Mutex
	queries []Query
}

var _ spf.Resolver = (*MapResolver)(nil)

// NewMapResolver returns a MapResolver for z.
func NewMapResolver(z *Zone) *MapResolver { return &MapResolver{zone: z} }

// Queries returns every lookup made so far, with Net "mem"; a lookup that
// follows a CNAME is one entry, as the caller sees one question.
func (m *MapResolver) Queries() []Query {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Query(nil), m.queries...)
}

// ResetQueries forgets the lookups made so far.
func (m *MapResolver) ResetQueries() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.queries = nil
}

// timeoutError is what a Timeout name yields; like a net.Error it says it
// is a timeout.
type timeoutError struct{}

func (timeoutError) Error() string   { return "no reply from server (timeout)" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// lookup finds the records of qtype at name, following CNAMEs, and
// classifies a failure the way spf.DNSResolver does.
func (m *MapResolver) lookup(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	typ := dns.TypeToString[qtype]
	m.mu.Lock()
	m.queries = append(m.queries, Query{Name: dns.Fqdn(name), Type: qtype, Net: "mem"})
	m.mu.Unlock()

	fail := func(err error) error {
		return &spf.DNSError{Name: strings.TrimSuffix(name, "."), Type: typ, Err: err}
	}
	if err := ctx.Err(); err != nil {
		return nil, fail(err)
	}
	if !dnsname.Queryable(name) {
		// A name that no query can carry does not exist (RFC 7208 §4.3,
		// and the suite's invalid-domain cases).
		return nil, fail(spf.ErrNXDomain)
	}

	out := m.zone.resolve(dnsname.Escape(name), qtype, maxCNAMEChain+1)
	cnames := 0
	for _, rr := range out.answer {
		if rr.Header().Rrtype == dns.TypeCNAME {
			cnames++
		}
	}
	switch {
	case out.noReply:
		return nil, fail(timeoutError{})
	case out.loop:
		return nil, fail(errors.New("CNAME loop"))
	case cnames > maxCNAMEChain:
		return nil, fail(fmt.Errorf("CNAME chain longer than %d", maxCNAMEChain))
	case out.stopped:
		// The chain ends at a Timeout or Rcode name: what a query there
		// would have given.
		stop := dnsname.Key(out.stopName)
		m.zone.mu.RLock()
		rc, isRcode := m.zone.rcode[stop]
		m.zone.mu.RUnlock()
		if isRcode {
			return nil, fail(rcodeError(rc))
		}
		return nil, fail(timeoutError{})
	case out.rcode == dns.RcodeNameError:
		return nil, fail(spf.ErrNXDomain)
	case out.rcode != dns.RcodeSuccess:
		return nil, fail(rcodeError(out.rcode))
	}
	var rrs []dns.RR
	for _, rr := range out.answer {
		if rr.Header().Rrtype == qtype {
			rrs = append(rrs, rr)
		}
	}
	if len(rrs) == 0 {
		return nil, fail(spf.ErrNoData)
	}
	return rrs, nil
}

// rcodeError reports an rcode other than NOERROR and NXDOMAIN.
func rcodeError(rc int) error {
	name, ok := dns.RcodeToString[rc]
	if !ok {
		name = fmt.Sprint(rc)
	}
	return fmt.Errorf("server answered %s", name)
}

// characterStrings decodes the rdata of a TXT or SPF record from its wire
// form, independently of how miekg/dns presents it as text.
func characterStrings(rr dns.RR) ([]string, error) {
	c := dns.Copy(rr)
	c.Header().Name = "."
	buf := make([]byte, 65536)
	end, err := dns.PackRR(c, buf, 0, nil, false)
	if err != nil {
		return nil, err
	}
	const headerLen = 1 + 10 // root name, type, class, TTL, rdlength
	rdata := buf[headerLen:end]
	var strs []string
	for len(rdata) > 0 {
		n := int(rdata[0])
		if 1+n > len(rdata) {
			return nil, errors.New("character-string overruns rdata")
		}
		strs = append(strs, string(rdata[1:1+n]))
		rdata = rdata[1+n:]
	}
	return strs, nil
}

// LookupTXT implements spf.Resolver.
func (m *MapResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	rrs, err := m.lookup(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	txts := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		strs, err := characterStrings(rr)
		if err != nil {
			return nil, &spf.DNSError{Name: strings.TrimSuffix(name, "."), Type: "TXT", Err: err}
		}
		txts = append(txts, strings.Join(strs, ""))
	}
	return txts, nil
}

// LookupA implements spf.Resolver.
func (m *MapResolver) LookupA(ctx context.Context, name string) ([]netip.Addr, error) {
	rrs, err := m.lookup(ctx, name, dns.TypeA)
	if err != nil {
		return nil, err
	}
	addrs := make([]netip.Addr, 0, len(rrs))
	for _, rr := range rrs {
		a, _ := netip.AddrFromSlice(rr.(*dns.A).A.To4())
		addrs = append(addrs, a)
	}
	return addrs, nil
}

// LookupAAAA implements spf.Resolver.
func (m *MapResolver) LookupAAAA(ctx context.Context, name string) ([]netip.Addr, error) {
	rrs, err := m.lookup(ctx, name, dns.TypeAAAA)
	if err != nil {
		return nil, err
	}
	addrs := make([]netip.Addr, 0, len(rrs))
	for _, rr := range rrs {
		a, _ := netip.AddrFromSlice(rr.(*dns.AAAA).AAAA.To16())
		addrs = append(addrs, a)
	}
	return addrs, nil
}

// LookupMX implements spf.Resolver.
func (m *MapResolver) LookupMX(ctx context.Context, name string) ([]string, error) {
	rrs, err := m.lookup(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	mxs := make([]*dns.MX, 0, len(rrs))
	for _, rr := range rrs {
		mxs = append(mxs, rr.(*dns.MX))
	}
	slices.SortStableFunc(mxs, func(a, b *dns.MX) int { return cmp.Compare(a.Preference, b.Preference) })
	hosts := make([]string, 0, len(mxs))
	for _, mx := range mxs {
		hosts = append(hosts, trimDot(mx.Mx))
	}
	return hosts, nil
}

// LookupPTR implements spf.Resolver.
func (m *MapResolver) LookupPTR(ctx context.Context, addr netip.Addr) ([]string, error) {
	rev, err := dns.ReverseAddr(addr.Unmap().String())
	if err != nil {
		return nil, &spf.DNSError{Name: addr.String(), Type: "PTR", Err: err}
	}
	rrs, err := m.lookup(ctx, strings.TrimSuffix(rev, "."), dns.TypePTR)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		names = append(names, trimDot(rr.(*dns.PTR).Ptr))
	}
	return names, nil
}

// trimDot turns a name from the zone into the form callers get: raw octets
// (decoded from wire form, independently of the text escapes), without the
// trailing dot; the root stays ".".
func trimDot(name string) string {
	buf := make([]byte, 256)
	n, err := dns.PackDomainName(dns.Fqdn(name), buf, 0, nil, false)
	if err != nil {
		return strings.TrimSuffix(name, ".")
	}
	var labels []string
	for off := 0; off < n && buf[off] != 0; off += 1 + int(buf[off]) {
		labels = append(labels, string(buf[off+1:off+1+int(buf[off])]))
	}
	if len(labels) == 0 {
		return "."
	}
	return strings.Join(labels, ".")
}
