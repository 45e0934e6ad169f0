package spf

// The mechanisms that ask DNS (RFC 7208 §5), and what they share: the
// expansion of a target domain-spec, the client's addresses, the
// validated names of %{p} and ptr.

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
)

func (e *evaluation) evalA(d *Directive, domain string) (bool, string, error) {
	target, ok := e.target(d.Domain, domain)
	if !ok {
		return false, invalidTarget(target), nil
	}
	addrs, err := e.lookupAddrs(target, true)
	if err != nil {
		return false, "", err
	}
	match := e.matchAny(addrs, d)
	return match, target + " has " + addrList(addrs), nil
}

func (e *evaluation) evalMX(d *Directive, domain string) (bool, string, error) {
	target, ok := e.target(d.Domain, domain)
	if !ok {
		return false, invalidTarget(target), nil
	}
	names, err := e.c.Resolver.LookupMX(e.ctx, target)
	if err != nil {
		if IsNotFound(err) {
			return false, "no MX records at " + target, e.void()
		}
		return false, "", e.temperror(err)
	}
	if len(names) > maxMXNames {
		return false, "", permerror(ProblemTooManyMX, "%s has %d MX records; at most %d may be looked up", target, len(names), maxMXNames)
	}
	hosts := mxHosts(names)
	lookups := e.startAddrLookups(hosts, func(addrs []netip.Addr) bool { return e.matchAny(addrs, d) })
	defer lookups.stop()
	// The first host in MX order that fails or matches decides, whichever
	// answer came first.
	for i, n := range hosts {
		match, err := lookups.get(i)
		if err != nil {
			if IsNotFound(err) {
				continue // no match, and not a void lookup: only the MX query can be
			}
			return false, "", e.temperror(err)
		}
		if match {
			return true, "MX " + n + " has " + e.ip.String(), nil
		}
	}
	return false, "no MX host of " + target + " has " + e.ip.String(), nil
}

// mxHosts returns the host names of MX records as names to query.
func mxHosts(names []string) []string {
	hosts := make([]string, 0, len(names))
	for _, n := range names {
		n = strings.TrimSuffix(n, ".")
		if n == "" {
			continue // a null MX (RFC 7505) names no host
		}
		hosts = append(hosts, n)
	}
	return hosts
}

func (e *evaluation) evalPTR(d *Directive, domain string) (bool, string, error) {
	target, ok := e.target(d.Domain, domain)
	if !ok {
		return false, invalidTarget(target), nil
	}
	names, err := e.c.Resolver.LookupPTR(e.ctx, e.ip)
	if err != nil {
		// RFC 7208 §5.5: a DNS error on the PTR lookup is no match.
		if IsNotFound(err) {
			return false, "no PTR records for " + e.ip.String(), e.void()
		}
		return false, "PTR lookup failed: " + err.Error(), nil
	}
	if n := e.validated(names, target, true); n != "" {
		return true, "validated name " + n, nil
	}
	return false, "no validated name in " + target, nil
}

// validated returns the first of the (at most 10) PTR names that resolves
// back to the client IP, considering only names at or under target when
// suffixOnly is set (RFC 7208 §5.5). A name whose lookup fails is skipped.
func (e *evaluation) validated(names []string, target string, suffixOnly bool) string {
	if len(names) > maxPTRNames {
		names = names[:maxPTRNames]
	}
	candidates := make([]string, 0, len(names))
	for _, n := range names {
		n = strings.TrimSuffix(n, ".")
		if suffixOnly && !isSubdomain(n, target) {
			continue
		}
		candidates = append(candidates, n)
	}
	lookups := e.startAddrLookups(candidates, func(addrs []netip.Addr) bool {
		for _, a := range addrs {
			if a.Unmap() == e.ip {
				return true
			}
		}
		return false
	})
	defer lookups.stop()
	for i, n := range candidates {
		if match, err := lookups.get(i); err == nil && match {
			return n
		}
	}
	return ""
}

func (e *evaluation) evalExists(d *Directive, domain string) (bool, string, error) {
	target, ok := e.target(d.Domain, domain)
	if !ok {
		return false, invalidTarget(target), nil
	}
	// exists always asks for A records, whatever the client's family.
	addrs, err := e.c.Resolver.LookupA(e.ctx, target)
	if err != nil {
		if IsNotFound(err) {
			return false, target + " does not exist", e.void()
		}
		return false, "", e.temperror(err)
	}
	return len(addrs) > 0, target + " has " + addrList(addrs), nil
}

// lookupAddrs fetches the addresses of name in the client's family; a void
// answer counts against the void limit when countVoid is set.
func (e *evaluation) lookupAddrs(name string, countVoid bool) ([]netip.Addr, error) {
	addrs, err := e.addrs(name)
	if err != nil {
		if IsNotFound(err) {
			if countVoid {
				return nil, e.void()
			}
			return nil, nil
		}
		return nil, e.temperror(err)
	}
	return addrs, nil
}

func (e *evaluation) addrs(name string) ([]netip.Addr, error) {
	return e.addrsIn(e.ctx, name)
}

// addrsIn is addrs under ctx, which may end before the check does.
func (e *evaluation) addrsIn(ctx context.Context, name string) ([]netip.Addr, error) {
	if e.ip.Is4() {
		return e.c.Resolver.LookupA(ctx, name)
	}
	return e.c.Resolver.LookupAAAA(ctx, name)
}

func (e *evaluation) matchAny(addrs []netip.Addr, d *Directive) bool {
	bits := d.CIDR6
	if e.ip.Is4() {
		bits = d.CIDR4
	}
	for _, a := range addrs {
		a = a.Unmap()
		if a.Is4() != e.ip.Is4() {
			continue
		}
		if p, err := a.Prefix(bits); err == nil && p.Contains(e.ip) {
			return true
		}
	}
	return false
}

// target expands a mechanism's domain-spec (or takes the current domain)
// into a name to query. ok is false when the name cannot be queried; such
// a name is treated as one that does not exist.
func (e *evaluation) target(spec *MacroString, domain string) (name string, ok bool) {
	if spec == nil {
		return domain, true
	}
	name = strings.TrimSuffix(spec.Expand(e.env(domain)), ".")
	// RFC 7208 §7.3: an over-long expansion loses labels from the left.
	for len(name) > maxNameLength {
		i := strings.IndexByte(name, '.')
		if i < 0 {
			break
		}
		name = name[i+1:]
	}
	return name, badName(name) == ""
}

func invalidTarget(name string) string {
	return quoteTerm(name) + " is not a valid domain name; treated as not existing"
}

func (e *evaluation) env(domain string) *MacroEnv {
	return &MacroEnv{
		Sender:   e.sender,
		Domain:   domain,
		IP:       e.ip,
		HELO:     e.out.HELO,
		Receiver: e.c.Receiver,
		PTR:      func() string { return e.ptrMacro(domain) },
	}
}

// ptrMacro finds %{p}: a validated name of the client, preferring one at or
// under domain (RFC 7208 §7.3).
func (e *evaluation) ptrMacro(domain string) string {
	if e.ptrName != nil {
		return *e.ptrName
	}
	name := "unknown"
	if names, err := e.c.Resolver.LookupPTR(e.ctx, e.ip); err == nil {
		if n := e.validated(names, domain, true); n != "" {
			name = n
		} else if n := e.validated(names, "", false); n != "" {
			name = n
		}
	}
	e.ptrName = &name
	return name
}

func isSubdomain(name, parent string) bool {
	if len(name) < len(parent) {
		return false
	}
	tail := name[len(name)-len(parent):]
	return strings.EqualFold(tail, parent) && (len(name) == len(parent) || name[len(name)-len(parent)-1] == '.')
}

func addrList(addrs []netip.Addr) string {
	if len(addrs) == 0 {
		return "no addresses"
	}
	var b strings.Builder
	for i, a := range addrs {
		if i > 0 {
			b.WriteString(", ")
		}
		if i == 5 {
			b.WriteString("and " + strconv.Itoa(len(addrs)-5) + " more")
			break
		}
		b.WriteString(a.String())
	}
	return b.String()
}
