package spf

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/spf-milter/spf-milter/internal/dnsname"
	"github.com/spf-milter/spf-milter/internal/lru"
)

// Defaults of DNSOptions.
const (
	DefaultResolvConf = "/etc/resolv.conf"
	DefaultDNSTimeout = 5 * time.Second
)

// ednsSize is the UDP payload size advertised in queries: the size the DNS
// flag day 2020 settled on, which avoids IP fragmentation on common paths.
const ednsSize = 1232

// maxCNAMEChain is the longest CNAME chain a lookup follows before it gives
// up with a temporary error.
const maxCNAMEChain = 10

// DNSOptions configures a DNSResolver.
type DNSOptions struct {
	// Servers are the recursive servers to ask, in order, as "host:port"
	// with an IP address for host ("[::1]:53" for IPv6). A bare address
	// gets port 53. Empty means the nameservers of ResolvConf.
	Servers []string
	// ResolvConf is the file read when Servers is empty;
	// empty means DefaultResolvConf.
	ResolvConf string
	// Timeout bounds one query to one server; 0 means DefaultDNSTimeout.
	// The context of a lookup can only shorten it. A UDP query that gets
	// no answer within a third of it is sent again, up to three times in
	// all, as stub resolvers do: a lost datagram then costs a third of
	// the timeout rather than all of it.
	Timeout time.Duration
	// CacheSize bounds the number of answers kept; 0 means no cache.
	CacheSize int
	// CacheBytes bounds the memory the kept answers take, as the cache
	// accounts it (an estimate of each answer's unpacked size, checked
	// against the heap by the tests); 0 means DefaultCacheBytes. An
	// answer over 1/64 of it is used but not kept. The parsed SPF
	// records kept beside the answers take at most 1/8 of it more.
	CacheBytes int64
	// InflightBytes bounds the heap of the answers being received and
	// unpacked at once, as DefaultInflightBytes explains; 0 means
	// DefaultInflightBytes. A lookup that finds it spent waits, within
	// its context, for others to end.
	InflightBytes int64
	// HeldRecordBytes bounds the heap of the SPF records that checks
	// through this resolver hold while they run (texts, parsed forms not
	// kept by the cache, trace steps), as DefaultHeldRecordBytes
	// explains; 0 means DefaultHeldRecordBytes. A check that finds it
	// spent waits, within its context, for others to end. A budget too
	// small for one answer's records lets that answer take it all.
	HeldRecordBytes int64
	// Observer, if set, is told of every query sent and every cache lookup.
	Observer DNSObserver
}

// DefaultCacheSize is the cache size the daemon uses unless configured.
const DefaultCacheSize = 10000

// DefaultCacheBytes is the byte bound of the cache unless configured.
const DefaultCacheBytes = 32 << 20

// DNSObserver receives a DNSResolver's events, for metrics. Calls come from
// many goroutines, and from inside lookups: they must be quick.
type DNSObserver interface {
	// DNSQuery reports one query sent to a server: its type ("TXT", "A",
	// "AAAA", "MX", "PTR"), its outcome ("noerror", "nxdomain",
	// "servfail", "refused", "other_rcode", "timeout", "network_error",
	// "bad_answer", or "cancelled" when the lookup was abandoned before
	// the answer came) and how long it took. A query repeated over TCP
	// after a truncated UDP answer is reported as a query of its own;
	// UDP retransmissions of one query are not.
	DNSQuery(qtype, outcome string, elapsed time.Duration)
	// DNSCache reports one lookup of the cache: hit or miss. A resolver
	// without a cache reports none.
	DNSCache(qtype string, hit bool)
}

// DNSResolver implements Resolver over real DNS, asking recursive servers
// with github.com/miekg/dns. It is safe for concurrent use.
//
// A query goes over UDP with EDNS0, is sent again when no answer comes
// within a third of the timeout, and is repeated over TCP when the answer
// is truncated or larger than the size the query advertised; a TCP answer
// truncated too is a failure. Each exchange holds a share of the
// in-flight budget (DefaultInflightBytes) while its answer is read and
// used, and waits for one within its context when the budget is spent;
// an answer that would take more than its share once unpacked (only
// names of escaped octets, repeated by compression, do that) is refused
// as a bad answer. A server that does not answer, fails on the network, or
// answers with an rcode other than NOERROR and NXDOMAIN is skipped for the
// next one. CNAME chains are followed, within the answer and by asking for
// the target again. A name that cannot be put in a query at all (an empty
// label, a label over 63 octets, over 255 octets in all) is reported as
// not existing without asking, as RFC 7208 §4.3 treats it.
//
// With a CacheSize, the servers' answers are kept for every caller: for
// their TTL, negative answers (NXDOMAIN, NODATA) for the SOA minimum of
// RFC 2308 §5, never more than a day, failures never. Identical queries in
// flight at the same time go out once, cache or not.
type DNSResolver struct {
	servers  []string
	timeout  time.Duration
	observer DNSObserver

	// now is the clock the cache's expiry times are read from; tests
	// replace it to age entries without waiting.
	now func() time.Time

	// records keeps the parsed SPF records of the TXT answers, each no
	// longer than the answer it came in; nil without a cache.
	records *recordCache

	// budget bounds the answers in flight.
	budget *inflightBudget
	// heldBudget bounds the records checks hold (held.go).
	heldBudget *inflightBudget

	mu      sync.Mutex
	cache   *lru.Cache[cacheKey, *dns.Msg] // nil without a cache; newAnswerCache
	flights map[cacheKey]*flight           // queries in flight, by question
}

var _ Resolver = (*DNSResolver)(nil)

// NewDNSResolver returns a resolver configured by opts. It fails when a
// server address is malformed or no server can be found.
func NewDNSResolver(opts DNSOptions) (*DNSResolver, error) {
	r := &DNSResolver{
		timeout:  opts.Timeout,
		observer: opts.Observer,
		now:      time.Now,
		flights:  make(map[cacheKey]*flight),
	}
	if r.timeout <= 0 {
		r.timeout = DefaultDNSTimeout
	}
	if opts.CacheSize < 0 {
		return nil, fmt.Errorf("DNS cache size %d: must not be negative", opts.CacheSize)
	}
	if opts.CacheBytes < 0 {
		return nil, fmt.Errorf("DNS cache bytes %d: must not be negative", opts.CacheBytes)
	}
	if opts.InflightBytes < 0 {
		return nil, fmt.Errorf("DNS in-flight bytes %d: must not be negative", opts.InflightBytes)
	}
	if opts.HeldRecordBytes < 0 {
		return nil, fmt.Errorf("DNS held record bytes %d: must not be negative", opts.HeldRecordBytes)
	}
	r.budget = newInflightBudget(cmp.Or(opts.InflightBytes, DefaultInflightBytes))
	r.heldBudget = newHeldBudget(cmp.Or(opts.HeldRecordBytes, DefaultHeldRecordBytes))
	if opts.CacheSize > 0 {
		maxBytes := cmp.Or(opts.CacheBytes, DefaultCacheBytes)
		r.cache = newAnswerCache(opts.CacheSize, maxBytes)
		r.records = newRecordCache(maxBytes / recordShare)
	}
	servers, port := opts.Servers, "53"
	if len(servers) == 0 {
		path := opts.ResolvConf
		if path == "" {
			path = DefaultResolvConf
		}
		conf, err := dns.ClientConfigFromFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading DNS servers: %w", err)
		}
		if len(conf.Servers) == 0 {
			return nil, fmt.Errorf("reading DNS servers: no nameserver in %s", path)
		}
		servers, port = conf.Servers, conf.Port
	}
	for _, s := range servers {
		addr, err := serverAddr(s, port)
		if err != nil {
			return nil, err
		}
		r.servers = append(r.servers, addr)
	}
	return r, nil
}

// serverAddr validates a server given as "ip:port", "[ipv6]:port", "ip" or
// "[ipv6]" and returns it as "ip:port", with defaultPort when none is given.
func serverAddr(s, defaultPort string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		// No port: a bare address, possibly in brackets.
		host, port = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"), defaultPort
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return "", fmt.Errorf("DNS server %q: not an IP address", s)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return "", fmt.Errorf("DNS server %q: bad port %q", s, port)
	}
	return net.JoinHostPort(ip.String(), port), nil
}

// Servers returns the addresses of the servers asked, in order, as
// "host:port".
func (r *DNSResolver) Servers() []string { return slices.Clone(r.servers) }

// LookupTXT implements Resolver.
func (r *DNSResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	txts, _, err := r.lookupTXTUntil(ctx, name)
	return txts, err
}

// lookupTXTUntil is LookupTXT, and tells until when the answer is kept:
// a parsed record may be kept no longer.
func (r *DNSResolver) lookupTXTUntil(ctx context.Context, name string) ([]string, time.Time, error) {
	rrs, f, until, err := r.lookupUntil(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, time.Time{}, err
	}
	defer r.doneWith(f)
	txts := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		var b strings.Builder
		for _, s := range rr.(*dns.TXT).Txt {
			b.WriteString(unescapeDNSText(s))
		}
		txts = append(txts, b.String())
	}
	return txts, until, nil
}

// parseRecord is Parse, remembered beside the answer txt came in until
// that answer leaves the cache.
func (r *DNSResolver) parseRecord(txt string, until time.Time) (*Record, error) {
	if r.records == nil {
		return Parse(txt)
	}
	return r.records.parse(txt, until, r.now())
}

// LookupA implements Resolver.
func (r *DNSResolver) LookupA(ctx context.Context, name string) ([]netip.Addr, error) {
	rrs, f, _, err := r.lookupUntil(ctx, name, dns.TypeA)
	if err != nil {
		return nil, err
	}
	defer r.doneWith(f)
	addrs := make([]netip.Addr, 0, len(rrs))
	for _, rr := range rrs {
		if a, ok := netip.AddrFromSlice(rr.(*dns.A).A.To4()); ok {
			addrs = append(addrs, a)
		}
	}
	return addrs, nil
}

// LookupAAAA implements Resolver.
func (r *DNSResolver) LookupAAAA(ctx context.Context, name string) ([]netip.Addr, error) {
	rrs, f, _, err := r.lookupUntil(ctx, name, dns.TypeAAAA)
	if err != nil {
		return nil, err
	}
	defer r.doneWith(f)
	addrs := make([]netip.Addr, 0, len(rrs))
	for _, rr := range rrs {
		if a, ok := netip.AddrFromSlice(rr.(*dns.AAAA).AAAA.To16()); ok {
			addrs = append(addrs, a)
		}
	}
	return addrs, nil
}

// LookupMX implements Resolver. Records of equal preference keep the order
// of the answer.
func (r *DNSResolver) LookupMX(ctx context.Context, name string) ([]string, error) {
	rrs, f, _, err := r.lookupUntil(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	defer r.doneWith(f)
	mxs := make([]*dns.MX, 0, len(rrs))
	for _, rr := range rrs {
		mxs = append(mxs, rr.(*dns.MX))
	}
	slices.SortStableFunc(mxs, func(a, b *dns.MX) int { return cmp.Compare(a.Preference, b.Preference) })
	hosts := make([]string, 0, len(mxs))
	for _, mx := range mxs {
		hosts = append(hosts, answerName(mx.Mx))
	}
	return hosts, nil
}

// LookupPTR implements Resolver. An IPv4-mapped IPv6 address is looked up
// under in-addr.arpa, as the IPv4 address it stands for.
func (r *DNSResolver) LookupPTR(ctx context.Context, addr netip.Addr) ([]string, error) {
	rev, err := dns.ReverseAddr(addr.Unmap().WithZone("").String())
	if err != nil {
		return nil, &DNSError{Name: addr.String(), Type: "PTR", Err: err}
	}
	rrs, f, _, err := r.lookupUntil(ctx, strings.TrimSuffix(rev, "."), dns.TypePTR)
	if err != nil {
		return nil, err
	}
	defer r.doneWith(f)
	names := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		names = append(names, answerName(rr.(*dns.PTR).Ptr))
	}
	return names, nil
}

// sameName is dnsname.Same, made quick for the usual case of one text up to
// ASCII letter case: a lookup answered from the cache compares names and
// nothing else, and dnsname.Key allocates.
func sameName(a, b string) bool {
	if len(a) == len(b) {
		i := 0
		for ; i < len(a); i++ {
			ca, cb := a[i], b[i]
			if ca != cb && (ca|0x20 != cb|0x20 || ca|0x20 < 'a' || ca|0x20 > 'z') {
				break
			}
		}
		if i == len(a) {
			return true
		}
	}
	return dnsname.Same(a, b)
}

// answerName turns a name from an answer into the form callers get: raw
// octets, without the trailing dot (the root stays ".").
func answerName(name string) string {
	if name == "." {
		return name
	}
	return strings.TrimSuffix(unescapeDNSText(name), ".")
}

// lookupUntil returns the records of type qtype that answer name, after
// following CNAMEs, and the flight of the answer they came in: the caller
// turns them into what the lookup returns, and then hands the flight to
// doneWith, which gives up the answer and the share of the in-flight
// budget it holds. The error is a *DNSError. until tells until when every
// answer read stays in the cache.
func (r *DNSResolver) lookupUntil(ctx context.Context, name string, qtype uint16) (_ []dns.RR, _ *flight, until time.Time, _ error) {
	fail := func(err error) error {
		return &DNSError{Name: strings.TrimSuffix(name, "."), Type: dns.TypeToString[qtype], Err: err}
	}
	if !dnsname.Queryable(name) {
		return nil, nil, until, fail(ErrNXDomain)
	}
	qname := dnsname.Escape(name)
	key := dnsname.Key(qname)
	// seen holds the names of the chain, made only once a CNAME is met:
	// most lookups meet none.
	var seen map[string]bool
	cnames := 0
	for {
		// resp may be shared with other lookups and the cache: it is only
		// read here, and the records returned are only read by callers.
		resp, expires, f, err := r.sharedQuery(ctx, qname, key, qtype)
		if err != nil {
			return nil, nil, until, fail(err)
		}
		if until.IsZero() || expires.Before(until) {
			until = expires
		}
		rrs, cur, err := walkChain(resp, qname, key, qtype, &cnames, &seen)
		if len(rrs) > 0 {
			return rrs, f, until, nil
		}
		// Only the name the chain stops at is needed now, a string of
		// its own: the answer can go before the next one comes.
		r.doneWith(f)
		if err != nil {
			return nil, nil, until, fail(err)
		}
		if resp.Rcode == dns.RcodeNameError {
			return nil, nil, until, fail(ErrNXDomain)
		}
		if cur == qname {
			return nil, nil, until, fail(ErrNoData)
		}
		// The answer stops at a CNAME whose target it does not resolve
		// (another zone, or a server that does not chase): ask for it.
		qname, key = cur, dnsname.Key(cur)
	}
}

// walkChain walks the CNAME chain in resp from qname, whose key is key,
// and returns the records of type qtype that end it, or else the name the
// chain stops at; the error is a CNAME chain too long or looping. cnames
// and seen carry the chain from answer to answer: seen holds its names,
// made only once a CNAME is met, as most lookups meet none.
func walkChain(resp *dns.Msg, qname, key string, qtype uint16, cnames *int, seen *map[string]bool) ([]dns.RR, string, error) {
	// Records owned by names off the chain are ignored, whatever the
	// server put there.
	cur := qname
	for {
		var rrs []dns.RR
		target := ""
		for _, rr := range resp.Answer {
			h := rr.Header()
			if !sameName(h.Name, cur) {
				continue
			}
			if h.Rrtype == qtype {
				rrs = append(rrs, rr)
			} else if cn, ok := rr.(*dns.CNAME); ok && target == "" {
				target = cn.Target
			}
		}
		if len(rrs) > 0 {
			return rrs, "", nil
		}
		if target == "" {
			return nil, cur, nil
		}
		*cnames++
		if *cnames > maxCNAMEChain {
			return nil, "", fmt.Errorf("CNAME chain longer than %d", maxCNAMEChain)
		}
		if *seen == nil {
			*seen = map[string]bool{key: true}
		}
		if (*seen)[dnsname.Key(target)] {
			return nil, "", fmt.Errorf("CNAME loop at %s", target)
		}
		(*seen)[dnsname.Key(target)] = true
		cur = target
	}
}
