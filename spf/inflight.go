package spf

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"

	"github.com/miekg/dns"
)

// DefaultInflightBytes is the in-flight budget of a DNSResolver unless
// DNSOptions.InflightBytes says otherwise.
//
// The budget bounds the heap of the answers a resolver is receiving,
// unpacking and turning into what its lookups return, at any one moment.
// With the rest of what the daemon keeps, it bounds the whole heap by
// figures that depend neither on what zone owners publish nor on how
// many messages and why requests come:
//
//   - kept state: the DNS answer cache (dns.cache_bytes, 32 MiB by
//     default), the parsed records kept beside it (1/8 of that, 4 MiB),
//     the why page's rendered pages (16 MiB) and its rate limiter's
//     clients (about 2 MB): 54 MiB.
//   - answers in flight: this budget, 32 MiB. A lookup reserves its share
//     before it sends and gives it back once its answer is cached or
//     turned into addresses and names; when the budget is spent it waits,
//     within its context, as it would for a slow server.
//   - the SPF records checks hold: the record budget
//     (DefaultHeldRecordBytes), 24 MiB. A check charges the texts of its
//     TXT answers, the parsed records the cache does not keep for
//     everyone and the trace steps their terms may add, from the moment
//     it has them to its end; when the budget is spent it waits within
//     its context too. A zone owner may publish 64 KiB records that take
//     megabytes each once parsed (4 MB for one-letter terms, measured);
//     the checks reading them take turns.
//   - what each check holds beside, once the resolver has given its share
//     back: the answer its evaluation is reading, compact (addresses as
//     []netip.Addr, 24 bytes each: 3,700 addresses, the most a 64 KiB
//     answer carries, are 89 KiB; names and texts as strings, at most
//     about 200 KiB for answers of thousands of short records, among
//     them the texts of one TXT answer waiting for room in the record
//     budget), and its outcome: about 100 KiB for the length of a check.
//     The ten address lookups of an mx or ptr term run side by side and
//     keep only whether they matched, so ten such answers are alive
//     together only for the instant they are matched: 1 MiB at most.
//     Checks at once are bounded by the MTA, not by us: Postfix runs at
//     most default_process_limit (100) smtpd processes, each in one
//     session at a time, and the why page runs at most why.concurrent
//     (4) live checks: 104 checks, 10 MiB held, 104 MiB at the worst
//     instant.
//
// That is 54 + 32 + 24 + 10 = 120 MiB of live heap held, 214 MiB at the
// worst instant of every check matching ten hostile answers at once.
// Under a GOMEMLIMIT of 128 MiB the collector runs as often as it must to
// keep the heap near the limit rather than letting it double, and with
// the runtime's own memory, stacks and socket buffers (some 20 MB) the
// daemon stays under the 256 MB resident the project promises. The mail
// itself (headers, bodies) is bounded apart, by the milter layer. A
// check's trace stays in its Outcome after the check, as long as its
// caller keeps that: a session until its message ends, the why page in
// its bounded store of pages.
const DefaultInflightBytes = 32 << 20

// Shares of the budget, in bytes. A lookup cannot know what it will get
// before it asks, so it reserves the most that an answer it accepts may
// take: the read buffer and the unpacked message, which unpackBound
// limits to unpackBase + unpackFactor bytes a wire byte. Once the answer
// is read the share shrinks to what unpackBound found.
const (
	// udpReadSize is the largest datagram read: the size advertised in
	// queries. A larger one is taken as truncated and asked again over
	// TCP, as a datagram cut at the advertised size would be.
	udpReadSize = ednsSize
	// unpackBase covers the message, its question and a few records
	// whatever their size: an ordinary answer of a few hundred bytes
	// never reaches unpackFactor times its size.
	unpackBase = 4 << 10
	// unpackFactor is the most heap an accepted answer may take a wire
	// byte. The hostile zone of 3,700 A records under names of 20
	// octets takes 13; under names of 253 printable octets, the longest
	// there are, 30. Only names written in escapes (binary octets,
	// four bytes each once unpacked) repeated by compression go beyond,
	// and such an answer is refused, as malformed ones are.
	unpackFactor = 32

	udpShare = udpReadSize + 1 + unpackBase + unpackFactor*udpReadSize
	tcpShare = dns.MaxMsgSize + unpackBase + unpackFactor*dns.MaxMsgSize
)

// inflightBudget is a count of bytes that lookups reserve and give back,
// never above max, with at most max/2 of it for TCP shares: a zone owner
// whose answers all come over TCP, slowly, can hold that half for the
// timeout of each query, and the lookups of everyone else over UDP still
// find the other half. The record budget (held.go) is one too, its TCP
// class the large records, held to tcpMax.
type inflightBudget struct {
	mu      sync.Mutex
	max     int64
	tcpMax  int64 // the most TCP shares may take
	used    int64
	tcpUsed int64
	peak    int64
	// wake, made when a lookup first has to wait, is closed when bytes
	// are given back, to let the lookups waiting try again.
	wake chan struct{}
}

func newInflightBudget(bytes int64) *inflightBudget {
	return &inflightBudget{max: bytes, tcpMax: max(bytes/2, 1)}
}

// reservation is what one lookup holds of the budget.
type reservation struct {
	bytes int64
	tcp   bool
}

// reserve takes n bytes, waiting until they are free or ctx is done. A
// share larger than the budget allows takes all it allows, and waits for
// it to be free.
func (b *inflightBudget) reserve(ctx context.Context, n int64, tcp bool) (reservation, error) {
	limit := b.max
	if tcp {
		limit = b.tcpMax
	}
	n = min(n, limit)
	for {
		b.mu.Lock()
		if b.used+n <= b.max && (!tcp || b.tcpUsed+n <= limit) {
			b.used += n
			if tcp {
				b.tcpUsed += n
			}
			b.peak = max(b.peak, b.used)
			b.mu.Unlock()
			return reservation{bytes: n, tcp: tcp}, nil
		}
		if b.wake == nil {
			b.wake = make(chan struct{})
		}
		wake := b.wake
		b.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return reservation{}, ctx.Err()
		}
	}
}

// shrink gives back what res holds beyond n bytes.
func (b *inflightBudget) shrink(res *reservation, n int64) {
	if n >= res.bytes {
		return
	}
	b.give(res.bytes-n, res.tcp)
	res.bytes = n
}

// release gives back all res holds.
func (b *inflightBudget) release(res *reservation) {
	if res.bytes > 0 {
		b.give(res.bytes, res.tcp)
	}
	res.bytes = 0
}

func (b *inflightBudget) give(n int64, tcp bool) {
	b.mu.Lock()
	b.used -= n
	if tcp {
		b.tcpUsed -= n
	}
	if b.wake != nil {
		close(b.wake)
		b.wake = nil
	}
	b.mu.Unlock()
}

// InflightBytes returns the bytes of the in-flight budget that lookups
// hold now; 0 when none is running.
func (r *DNSResolver) InflightBytes() int64 {
	used, _ := r.budget.usage()
	return used
}

// InflightPeak returns the most bytes of the in-flight budget held at
// once since r was made: never more than the budget.
func (r *DNSResolver) InflightPeak() int64 {
	_, peak := r.budget.usage()
	return peak
}

// usage returns the bytes held now and the most held at once so far.
func (b *inflightBudget) usage() (used, peak int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used, b.peak
}

// errAnswerTooLarge is an answer that would take more heap once unpacked
// than its share allows.
var errAnswerTooLarge = errors.New("answer too large to unpack")

// Heap figures for unpackBound, in bytes: upper bounds of what miekg/dns
// allocates, checked against the heap by TestUnpackBoundCoversHeap.
const (
	// msgHeap covers the dns.Msg and its section slices.
	msgHeap = 256
	// questionHeap covers one question in its slice, grown by doubling.
	questionHeap = 64
	// rrHeap covers one record's struct and header (64 bytes for the
	// types read, 96 for SOA) and its slot in a section slice grown by
	// doubling.
	rrHeap = 128
	// opaqueType is what records of the types lookups never read are
	// unpacked as: a type of the private range, which miekg/dns keeps as
	// hex text (dns.RFC3597), two bytes an octet of data.
	opaqueType = 65534
)

// stringHeap bounds the allocation of a string or slice of n bytes,
// rounded up to a size class: at most 1/8 more, or 16 bytes for the
// smallest.
func stringHeap(n int) int64 { return int64(n + n/8 + 16) }

// unpackBound returns a bound of the heap miekg/dns takes to unpack the
// message p, and prepares p for it: records of types the resolver never
// reads (anything but A, AAAA, TXT, MX, PTR, CNAME, SOA and the OPT
// pseudo-record) get a private type, so that they unpack as opaque data
// whatever names their data would hold. Only names are followed as
// miekg/dns follows them (labels, compression pointers, 255 octets at
// most); where p stops making sense the walk stops too, and so will the
// unpacking, with an error, at that point or before.
func unpackBound(p []byte) int64 {
	bound := int64(msgHeap)
	if len(p) < 12 {
		return bound
	}
	counts := [4]int{}
	for i := range counts {
		counts[i] = int(binary.BigEndian.Uint16(p[4+2*i:]))
	}
	off := 12
	for range counts[0] {
		n, next, ok := nameHeap(p, off)
		if !ok || next+4 > len(p) {
			return bound + n + questionHeap
		}
		bound += n + questionHeap
		off = next + 4
	}
	for range counts[1] + counts[2] + counts[3] {
		n, next, ok := nameHeap(p, off)
		bound += n + rrHeap
		if !ok || next+10 > len(p) {
			return bound
		}
		typ := binary.BigEndian.Uint16(p[next:])
		rdlen := int(binary.BigEndian.Uint16(p[next+8:]))
		rdata := next + 10
		if rdata+rdlen > len(p) {
			return bound
		}
		switch typ {
		case dns.TypeA, dns.TypeAAAA:
			bound += stringHeap(16)
		case dns.TypeTXT:
			// Character-strings, each escaped into at most four bytes
			// an octet, in a slice grown by doubling.
			for i := rdata; i < rdata+rdlen; i += 1 + int(p[i]) {
				bound += 2*16 + stringHeap(4*int(p[i]))
			}
		case dns.TypeMX, dns.TypePTR, dns.TypeCNAME:
			at := rdata
			if typ == dns.TypeMX {
				at += 2
			}
			n, _, _ := nameHeap(p, at)
			bound += n
		case dns.TypeSOA:
			n1, next, ok := nameHeap(p, rdata)
			bound += n1
			if ok {
				n2, _, _ := nameHeap(p, next)
				bound += n2
			}
		case dns.TypeOPT:
			// EDNS options hold no names: a small struct each (four
			// octets at least), their data at most as hex text.
			bound += int64(96*(rdlen/4+1) + 2*rdlen)
		default:
			binary.BigEndian.PutUint16(p[next:], opaqueType)
			bound += stringHeap(2 * rdlen)
		}
		off = rdata + rdlen
	}
	return bound
}

// nameHeap returns the heap the name at off in p takes once unpacked (its
// presentation form, as miekg/dns writes it), the offset after it, and
// whether it is well formed as miekg/dns reads names.
func nameHeap(p []byte, off int) (int64, int, bool) {
	n, next, budget, pointers := 0, -1, 255, 0
	for {
		if off >= len(p) {
			return stringHeap(n), off, false
		}
		c := int(p[off])
		off++
		switch c & 0xC0 {
		case 0x00:
			if c == 0 {
				if next < 0 {
					next = off
				}
				if n == 0 {
					return 0, next, true // "." is a constant
				}
				return stringHeap(n), next, true
			}
			if off+c > len(p) {
				return stringHeap(n), off, false
			}
			if budget -= c + 1; budget <= 0 {
				return stringHeap(n), off, false
			}
			for _, b := range p[off : off+c] {
				switch {
				case b == '.' || b == ' ' || b == '\'' || b == '@' || b == ';' ||
					b == '(' || b == ')' || b == '"' || b == '\\':
					n += 2
				case b < ' ' || b > '~':
					n += 4
				default:
					n++
				}
			}
			n++ // the dot
			off += c
		case 0xC0:
			if off >= len(p) {
				return stringHeap(n), off, false
			}
			if next < 0 {
				next = off + 1
			}
			if pointers++; pointers > 126 {
				return stringHeap(n), off, false
			}
			off = (c&0x3F)<<8 | int(p[off])
		default:
			return stringHeap(n), off, false
		}
	}
}
