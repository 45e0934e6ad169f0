package spf

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
)

// Resolver is everything the evaluator needs from DNS. Names are given
// without a trailing dot and may be in any letter case.
//
// An implementation reports "no records" (NXDOMAIN, or NOERROR with no
// answer of the asked type after following CNAMEs) with an error that
// wraps ErrNXDomain or ErrNoData; the evaluator counts those as void
// lookups (RFC 7208 §4.6.4). Every other error is a temporary failure
// (SERVFAIL, REFUSED, a timeout, a network error, a CNAME loop) and leads to
// temperror where RFC 7208 says so.
type Resolver interface {
	// LookupTXT returns the TXT records at name, each one the
	// concatenation of its character-strings (RFC 7208 §3.3), unescaped.
	LookupTXT(ctx context.Context, name string) ([]string, error)
	// LookupA returns the IPv4 addresses of name.
	LookupA(ctx context.Context, name string) ([]netip.Addr, error)
	// LookupAAAA returns the IPv6 addresses of name.
	LookupAAAA(ctx context.Context, name string) ([]netip.Addr, error)
	// LookupMX returns the exchange names of the MX records at name, in
	// order of preference, without trailing dots.
	LookupMX(ctx context.Context, name string) ([]string, error)
	// LookupPTR returns the names in the PTR records of addr's reverse
	// name, without trailing dots.
	LookupPTR(ctx context.Context, addr netip.Addr) ([]string, error)
}

// Errors that a Resolver wraps to say "no records".
var (
	ErrNXDomain = errors.New("no such domain (NXDOMAIN)")
	ErrNoData   = errors.New("no records of that type")
)

// IsNotFound reports whether err says that a name has no records of the
// asked type, rather than that the lookup failed.
func IsNotFound(err error) bool {
	return errors.Is(err, ErrNXDomain) || errors.Is(err, ErrNoData)
}

// DNSError describes a failed lookup: which name and type, and why.
type DNSError struct {
	Name string // the name queried
	Type string // the query type: "TXT", "A", "AAAA", "MX" or "PTR"
	Err  error  // ErrNXDomain, ErrNoData, or the temporary failure
}

func (e *DNSError) Error() string {
	return fmt.Sprintf("%s %s: %v", e.Type, e.Name, e.Err)
}

func (e *DNSError) Unwrap() error { return e.Err }
