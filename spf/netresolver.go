package spf

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
)

// NetLookuper is the part of *net.Resolver that NetResolver asks, with
// net.Resolver's own signatures: a *net.Resolver is one, and so is any
// resolver library or test fake shaped like it.
type NetLookuper interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupIP(ctx context.Context, network, host string) ([]net.IP, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

var _ NetLookuper = (*net.Resolver)(nil)

// NetResolver is a Resolver over a NetLookuper, for a program that
// already resolves through the Go resolver or the system's: checks then
// share its configuration and whatever caching it has. DNSResolver
// remains the one for a mail server: it caches answers by their TTLs
// within a bound in bytes, and keeps the parsed records with them.
//
// A *net.DNSError with IsNotFound set counts as "no records" (a void
// lookup); every other error is a temporary failure.
type NetResolver struct {
	Lookuper NetLookuper
}

var _ Resolver = NetResolver{}

// absolute makes name a fully qualified name, so that net.Resolver does
// not try it under the search domains of resolv.conf first.
func absolute(name string) string {
	return strings.TrimSuffix(name, ".") + "."
}

// netError classifies an error of the NetLookuper as Resolver documents.
func netError(name, qtype string, err error) error {
	var de *net.DNSError
	if errors.As(err, &de) && de.IsNotFound {
		err = ErrNXDomain
	}
	return &DNSError{Name: strings.TrimSuffix(name, "."), Type: qtype, Err: err}
}

// LookupTXT returns the TXT records at name; net.Resolver has already
// joined each one's character-strings.
func (r NetResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	txts, err := r.Lookuper.LookupTXT(ctx, absolute(name))
	if err != nil {
		return nil, netError(name, "TXT", err)
	}
	return txts, nil
}

// LookupA returns the IPv4 addresses of name.
func (r NetResolver) LookupA(ctx context.Context, name string) ([]netip.Addr, error) {
	return r.lookupIP(ctx, "ip4", "A", name)
}

// LookupAAAA returns the IPv6 addresses of name.
func (r NetResolver) LookupAAAA(ctx context.Context, name string) ([]netip.Addr, error) {
	return r.lookupIP(ctx, "ip6", "AAAA", name)
}

func (r NetResolver) lookupIP(ctx context.Context, network, qtype, name string) ([]netip.Addr, error) {
	if _, err := netip.ParseAddr(name); err == nil {
		// net.Resolver answers an address literal itself, without DNS:
		// a macro expanding to the client's address (exists:%{i}) must
		// not match that way.
		return nil, &DNSError{Name: name, Type: qtype, Err: ErrNXDomain}
	}
	ips, err := r.Lookuper.LookupIP(ctx, network, absolute(name))
	if err != nil {
		return nil, netError(name, qtype, err)
	}
	addrs := make([]netip.Addr, 0, len(ips))
	for _, ip := range ips {
		if a, ok := netip.AddrFromSlice(ip); ok {
			addrs = append(addrs, a.Unmap())
		}
	}
	if len(addrs) == 0 {
		return nil, &DNSError{Name: name, Type: qtype, Err: ErrNoData}
	}
	return addrs, nil
}

// LookupMX returns the exchanges of name's MX records in order of
// preference (net.Resolver sorts them), without trailing dots.
func (r NetResolver) LookupMX(ctx context.Context, name string) ([]string, error) {
	mxs, err := r.Lookuper.LookupMX(ctx, absolute(name))
	if err != nil {
		return nil, netError(name, "MX", err)
	}
	names := make([]string, len(mxs))
	for i, mx := range mxs {
		names[i] = strings.TrimSuffix(mx.Host, ".")
	}
	return names, nil
}

// LookupPTR returns the names of addr's PTR records, without trailing
// dots.
func (r NetResolver) LookupPTR(ctx context.Context, addr netip.Addr) ([]string, error) {
	names, err := r.Lookuper.LookupAddr(ctx, addr.String())
	if err != nil {
		return nil, netError(addr.String(), "PTR", err)
	}
	for i, n := range names {
		names[i] = strings.TrimSuffix(n, ".")
	}
	return names, nil
}
