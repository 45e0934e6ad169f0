// Package dnstest serves DNS data to tests: a Zone of records, an
// authoritative Server for it on loopback (UDP and TCP), and a MapResolver
// that answers spf.Resolver questions from the same Zone without a network.
package dnstest

import (
	"fmt"
	"strings"
	"sync"

	"github.com/miekg/dns"

	"github.com/spf-milter/spf-milter/internal/dnsname"
)

// defaultTTL is given to records whose text names no TTL, so that test
// zones need not repeat one on every line.
const defaultTTL = 300

// maxServerCNAMEHops bounds how many CNAMEs the Server chases inside the
// zone for one answer; a loop thus ends with just its CNAMEs, as a real
// authoritative server would give.
const maxServerCNAMEHops = 8

// Zone holds resource records by owner name. Names given to its methods
// are in presentation form, as miekg/dns reads them (a trailing dot is
// optional; "\\" is a backslash, "\DDD" an octet), and are matched without
// regard to ASCII letter case. A Zone is safe for concurrent use: a test
// may change it while a Server answers from it.
//
// A name with no records of its own is answered with those of the
// wildcard "*." + its parent, if the zone has one, under its own name.
//
// SOA records added to a zone are served like any other, and the Server
// also puts the SOA of the closest enclosing name that has one in the
// authority section of negative answers (NXDOMAIN and NODATA), as an
// authoritative server does: that is what resolvers cache negative answers
// by (RFC 2308). A zone without SOA records gives negative answers without
// one.
type Zone struct {
	mu      sync.RWMutex
	rrs     map[string][]dns.RR // by dnsname.Key of the owner
	timeout map[string]bool
	rcode   map[string]int
}

// NewZone returns an empty zone.
func NewZone() *Zone {
	return &Zone{
		rrs:     make(map[string][]dns.RR),
		timeout: make(map[string]bool),
		rcode:   make(map[string]int),
	}
}

// Add parses records in presentation format, for example
// `example.com. 300 IN TXT "v=spf1 -all"`, and adds them. A record without
// a TTL gets 300 seconds; relative names are taken relative to the root.
func (z *Zone) Add(rrs ...string) error {
	var parsed []dns.RR
	for _, s := range rrs {
		zp := dns.NewZoneParser(strings.NewReader(s+"\n"), ".", "")
		zp.SetDefaultTTL(defaultTTL)
		n := 0
		for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
			parsed = append(parsed, rr)
			n++
		}
		if err := zp.Err(); err != nil {
			return fmt.Errorf("dnstest: record %q: %w", s, err)
		}
		if n == 0 {
			return fmt.Errorf("dnstest: no record in %q", s)
		}
	}
	z.AddRR(parsed...)
	return nil
}

// AddRR adds records as they are.
func (z *Zone) AddRR(rrs ...dns.RR) {
	z.mu.Lock()
	defer z.mu.Unlock()
	for _, rr := range rrs {
		k := dnsname.Key(rr.Header().Name)
		z.rrs[k] = append(z.rrs[k], rr)
	}
}

// AddTXT adds one TXT record at name made of the given character-strings,
// each taken as raw bytes (quotes, backslashes, control and non-ASCII bytes
// included). With no strings the record has empty rdata. It panics if a
// string is longer than the 255 octets a character-string can hold, since
// that is a mistake in the test itself.
func (z *Zone) AddTXT(name string, strs ...string) {
	z.AddRR(&dns.TXT{Hdr: header(name, dns.TypeTXT), Txt: escapeStrings(strs)})
}

// AddSPF is AddTXT for the obsolete SPF record type (99), which the RFC 7208
// test suite still publishes.
func (z *Zone) AddSPF(name string, strs ...string) {
	z.AddRR(&dns.SPF{Hdr: header(name, dns.TypeSPF), Txt: escapeStrings(strs)})
}

func header(name string, rrtype uint16) dns.RR_Header {
	return dns.RR_Header{Name: dns.Fqdn(name), Rrtype: rrtype, Class: dns.ClassINET, Ttl: defaultTTL}
}

// escapeStrings turns raw character-strings into the presentation form that
// miekg/dns packs: it reads "\DDD" as one octet, so every byte that it would
// otherwise interpret, or that is not printable, is written that way.
func escapeStrings(strs []string) []string {
	out := make([]string, 0, len(strs))
	for _, s := range strs {
		if len(s) > 255 {
			panic(fmt.Sprintf("dnstest: character-string of %d octets (at most 255)", len(s)))
		}
		var b strings.Builder
		for i := 0; i < len(s); i++ {
			c := s[i]
			if c < 0x20 || c > 0x7e || c == '\\' || c == '"' {
				fmt.Fprintf(&b, "\\%03d", c)
			} else {
				b.WriteByte(c)
			}
		}
		out = append(out, b.String())
	}
	return out
}

// Timeout makes queries at name for a type that has no record there go
// unanswered, as a dead server would leave them.
func (z *Zone) Timeout(name string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.timeout[dnsname.Key(name)] = true
}

// Rcode makes every query at name be answered with rcode (for example
// dns.RcodeServerFailure or dns.RcodeRefused) and no records.
func (z *Zone) Rcode(name string, rcode int) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.rcode[dnsname.Key(name)] = rcode
}

// Remove drops everything at name: records, Timeout and Rcode.
func (z *Zone) Remove(name string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	k := dnsname.Key(name)
	delete(z.rrs, k)
	delete(z.timeout, k)
	delete(z.rcode, k)
}

// outcome is what the zone has to say about one name and type, after
// chasing CNAMEs inside the zone.
type outcome struct {
	rcode  int
	answer []dns.RR
	// stopped is set when the chain ended at a name that is not answered
	// normally (a Timeout name with nothing of the type, or an Rcode name)
	// or when the hop limit or a loop ended it; stopName is that name.
	stopped  bool
	stopName string
	// noReply is set when the asked name itself is a Timeout name without
	// records of the type: the query must go unanswered.
	noReply bool
	// loop is set when chasing ended because a CNAME led back to a name
	// already on the chain.
	loop bool
	// soa is set on a negative answer (NXDOMAIN, or NODATA at the end of
	// the chain) when a name at or above the last name of the chain has a
	// SOA record; it belongs in the authority section.
	soa dns.RR
}

// resolve answers qname/qtype from the zone as an authoritative server
// would, chasing CNAMEs for up to maxHops of them. Answer records carry the
// owner names as they appear on the chain, starting with qname as asked.
func (z *Zone) resolve(qname string, qtype uint16, maxHops int) outcome {
	z.mu.RLock()
	defer z.mu.RUnlock()

	var out outcome
	cur := dns.Fqdn(qname)
	seen := map[string]bool{}
	for hops := 0; ; hops++ {
		k := dnsname.Key(cur)
		seen[k] = true
		if rc, ok := z.rcode[k]; ok {
			if hops == 0 {
				out.rcode = rc
				return out
			}
			out.stopped, out.stopName = true, cur
			return out
		}
		rrs := z.rrs[k]
		if len(rrs) == 0 && !z.timeout[k] {
			rrs = z.wildcard(cur)
		}
		var cname *dns.CNAME
		matched := false
		for _, rr := range rrs {
			if rr.Header().Rrtype == qtype {
				c := dns.Copy(rr)
				c.Header().Name = cur
				out.answer = append(out.answer, c)
				matched = true
			} else if cn, ok := rr.(*dns.CNAME); ok && cname == nil {
				cname = cn
			}
		}
		if matched {
			return out
		}
		if cname != nil && qtype != dns.TypeCNAME {
			c := dns.Copy(cname)
			c.Header().Name = cur
			out.answer = append(out.answer, c)
			cur = cname.Target
			if seen[dnsname.Key(cur)] {
				out.stopped, out.stopName, out.loop = true, cur, true
				return out
			}
			if hops+1 >= maxHops {
				out.stopped, out.stopName = true, cur
				return out
			}
			continue
		}
		if z.timeout[k] {
			if hops == 0 {
				out.noReply = true
				return out
			}
			out.stopped, out.stopName = true, cur
			return out
		}
		if len(rrs) == 0 {
			// RFC 6604: the rcode speaks for the last name of the chain.
			out.rcode = dns.RcodeNameError
		}
		out.soa = z.enclosingSOA(cur)
		return out
	}
}

// wildcard returns the records of "*.PARENT" for name, PARENT being name
// without its first label: what a name that has no records of its own is
// answered with (RFC 4592, as far as tests need it: the closest
// enclosing wildcard only). The caller holds z.mu.
func (z *Zone) wildcard(name string) []dns.RR {
	off, end := dns.NextLabel(name, 0)
	if end {
		return nil
	}
	return z.rrs[dnsname.Key("*."+name[off:])]
}

// enclosingSOA returns a copy of the SOA record of the closest name at or
// above name that has one, or nil. The caller holds z.mu.
func (z *Zone) enclosingSOA(name string) dns.RR {
	name = dns.Fqdn(name)
	// dns.Split gives the offsets of the labels, the whole name first;
	// the last offset is that of the root.
	for _, off := range append(dns.Split(name), len(name)-1) {
		for _, rr := range z.rrs[dnsname.Key(name[off:])] {
			if rr.Header().Rrtype == dns.TypeSOA {
				return dns.Copy(rr)
			}
		}
	}
	return nil
}
