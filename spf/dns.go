package spf

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
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

// query asks the servers in turn until one gives a usable answer (NOERROR or
// NXDOMAIN) and returns it, with the share of the in-flight budget it
// holds, which the caller releases. The error is the last server's, or the
// context's once it is done.
func (r *DNSResolver) query(ctx context.Context, qname string, qtype uint16) (*dns.Msg, reservation, error) {
	var lastErr error
	for _, server := range r.servers {
		if err := ctx.Err(); err != nil {
			return nil, reservation{}, err
		}
		resp, res, err := r.queryServer(ctx, server, qname, qtype)
		if err == nil {
			return resp, res, nil
		}
		if ctx.Err() != nil {
			return nil, reservation{}, ctx.Err()
		}
		lastErr = err
	}
	return nil, reservation{}, lastErr
}

// queryServer asks one server over UDP, then over TCP if the answer is
// truncated, and checks that the answer is usable. Each exchange first
// reserves its share of the in-flight budget, waiting for it within ctx;
// a usable answer keeps what unpacking it takes, and the caller releases
// that.
func (r *DNSResolver) queryServer(ctx context.Context, server, qname string, qtype uint16) (*dns.Msg, reservation, error) {
	m := new(dns.Msg)
	m.SetQuestion(qname, qtype)
	m.SetEdns0(ednsSize, false)

	res, err := r.budget.reserve(ctx, udpShare, false)
	if err != nil {
		return nil, reservation{}, err
	}
	resp, used, err := r.ask(ctx, "udp", server, m)
	if err == nil && resp.Truncated {
		// The datagram is read and dropped: its share goes back before
		// the larger one is asked for, so no lookup holds one share
		// while it waits for another.
		r.budget.release(&res)
		if res, err = r.budget.reserve(ctx, tcpShare, true); err != nil {
			return nil, reservation{}, err
		}
		m.Id = dns.Id()
		resp, used, err = r.ask(ctx, "tcp", server, m)
	}
	if err != nil {
		r.budget.release(&res)
		return nil, reservation{}, err
	}
	switch resp.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
		r.budget.shrink(&res, used)
		return resp, res, nil
	default:
		r.budget.release(&res)
		return nil, reservation{}, &ServerError{Server: server, text: "server answered " + dnsRcodeName(resp.Rcode)}
	}
}

// ask makes one exchange with server, checks that the answer is for the
// question asked, and tells the observer how it went. used is what
// unpacking the answer takes of the heap, as unpackBound bounds it.
func (r *DNSResolver) ask(ctx context.Context, network, server string, m *dns.Msg) (_ *dns.Msg, used int64, _ error) {
	start := time.Now()
	resp, used, err := r.exchange(ctx, network, server, m)
	var outcome string
	switch {
	case err != nil:
		text := "network error"
		var ne net.Error
		switch {
		case errors.Is(err, context.Canceled):
			outcome = "cancelled"
		case errors.As(err, &ne) && ne.Timeout():
			outcome, text = "timeout", "no answer (timeout)"
		case errors.Is(err, errWrongID):
			outcome, text = "bad_answer", "answer for another query"
		case errors.Is(err, errAnswerTooLarge):
			outcome, text = "bad_answer", errAnswerTooLarge.Error()
		case errors.As(err, new(*dns.Error)):
			// miekg/dns could not unpack it: say so, rather than blame
			// the network in the problem text an admin reads.
			outcome, text = "bad_answer", "malformed answer"
		default:
			outcome = "network_error"
		}
		err = &ServerError{Server: server, Err: err, text: text}
	case network == "udp" && resp.Truncated:
		// TCP asks again, and its answer is the one checked.
		outcome = rcodeOutcome(resp.Rcode)
	case resp.Truncated:
		// Over TCP there is no larger answer to ask for: the records
		// that came may not be all there are (an RRset over 64 KB, cut
		// at 65535 octets), and a result drawn from part of them could
		// be none, or one record where there are two.
		outcome = "bad_answer"
		err = &ServerError{Server: server, text: "answer truncated over TCP"}
	case !sameQuestion(resp, m):
		outcome = "bad_answer"
		err = &ServerError{Server: server, text: "answer is for another question"}
	default:
		outcome = rcodeOutcome(resp.Rcode)
	}
	if r.observer != nil {
		r.observer.DNSQuery(dns.TypeToString[m.Question[0].Qtype], outcome, time.Since(start))
	}
	if err != nil {
		return nil, 0, err
	}
	return resp, used, nil
}

// sameQuestion reports whether resp answers the one question of query.
func sameQuestion(resp, query *dns.Msg) bool {
	return len(resp.Question) == 1 && sameName(resp.Question[0].Name, query.Question[0].Name) &&
		resp.Question[0].Qtype == query.Question[0].Qtype && resp.Question[0].Qclass == dns.ClassINET
}

// rcodeOutcome names an answer's rcode as DNSObserver.DNSQuery does.
func rcodeOutcome(rcode int) string {
	switch rcode {
	case dns.RcodeSuccess:
		return "noerror"
	case dns.RcodeNameError:
		return "nxdomain"
	case dns.RcodeServerFailure:
		return "servfail"
	case dns.RcodeRefused:
		return "refused"
	default:
		return "other_rcode"
	}
}

// errWrongID is an answer over TCP that is not for our query: a stream
// carries nothing else, so the server is confused.
var errWrongID = errors.New("answer with wrong ID")

// ServerError is a failure of one DNS server. Its message says only what
// happened, never which server or socket: the problem text of a temperror
// reaches SMTP replies and headers seen outside, and the addresses of our
// resolvers are nobody's business there. Server and Err keep the details
// for logs.
type ServerError struct {
	Server string // "host:port" of the server asked
	Err    error  // the network error, if any
	text   string
}

func (e *ServerError) Error() string { return e.text }

// Unwrap returns the network error, if any.
func (e *ServerError) Unwrap() error { return e.Err }

func dnsRcodeName(rc int) string {
	if s, ok := dns.RcodeToString[rc]; ok {
		return s
	}
	return strconv.Itoa(rc)
}

// udpSends is how many times a UDP query is sent, a third of the timeout
// apart, before its server is given up for this query.
const udpSends = 3

// exchange sends m to server over network and reads the answer. The
// deadline is the earlier of the per-query timeout and ctx's deadline, and
// cancelling ctx cuts the exchange short: miekg/dns would otherwise block in
// a read that only a deadline interrupts. Over UDP the same query is sent
// again, on the same socket, when a third of the timeout passes without
// the answer: a lost datagram costs that much rather than the whole
// timeout, and an answer to any of the sends will do. A datagram that is
// not that answer (it does not unpack, or its ID or question is another)
// is passed over, and the wait goes on until the deadline.
func (r *DNSResolver) exchange(ctx context.Context, network, server string, m *dns.Msg) (*dns.Msg, int64, error) {
	start := time.Now()
	deadline := start.Add(r.timeout)
	ctxDeadline, hasCtxDeadline := ctx.Deadline()
	if hasCtxDeadline && ctxDeadline.Before(deadline) {
		deadline = ctxDeadline
	}
	// ctxErr reports the context's own error when the deadline that fired
	// was the context's, even before the context's timer has run.
	ctxErr := func(err error) error {
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		var ne net.Error
		if hasCtxDeadline && !deadline.Before(ctxDeadline) && errors.As(err, &ne) && ne.Timeout() {
			return context.DeadlineExceeded
		}
		return err
	}

	dialCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(dialCtx, network, server)
	if err != nil {
		return nil, 0, ctxErr(err)
	}
	defer c.Close()

	// Cancelling ctx puts the deadline in the past. The deadline moves at
	// each retransmission, and must never move back once cancelled: both
	// go under mu.
	var mu sync.Mutex
	cancelled := false
	setDeadline := func(t time.Time) error {
		mu.Lock()
		defer mu.Unlock()
		if cancelled {
			return nil
		}
		return c.SetDeadline(t)
	}
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		cancelled = true
		_ = c.SetDeadline(time.Unix(1, 0))
	})
	defer stop()

	// A datagram is read into a buffer one octet over the advertised
	// size, so that readAnswer can tell one that does not fit.
	conn := &dns.Conn{Conn: c, UDPSize: udpReadSize + 1}
	sends := 0
	var readUntil time.Time
	send := func() error {
		sends++
		readUntil = deadline
		if network == "udp" && sends < udpSends {
			// Sends are spaced from the start, not from each other, so
			// that a slow loop does not push the last one past the end.
			if next := start.Add(time.Duration(sends) * r.timeout / udpSends); next.Before(deadline) {
				readUntil = next
			}
		}
		if err := setDeadline(readUntil); err != nil {
			return err
		}
		return conn.WriteMsg(m)
	}
	if err := send(); err != nil {
		return nil, 0, ctxErr(err)
	}
	for {
		resp, used, err := readAnswer(conn, network == "udp", m.Id)
		if err != nil && network == "udp" && errors.As(err, new(*dns.Error)) {
			// A datagram that does not unpack (or is too short to hold a
			// header) proves nothing: anyone who can reach our port can
			// send one. Stub resolvers pass it over and keep waiting for
			// the server's answer until the deadline.
			continue
		}
		if err != nil {
			var ne net.Error
			if readUntil.Before(deadline) && ctx.Err() == nil && errors.As(err, &ne) && ne.Timeout() {
				// Nothing yet: the query or its answer may be lost.
				if err := send(); err != nil {
					return nil, 0, ctxErr(err)
				}
				continue
			}
			return nil, 0, ctxErr(err)
		}
		if resp.Id != m.Id || !resp.Response {
			if network == "udp" {
				// A late answer to an earlier query, or a forgery: keep
				// waiting for ours until the deadline.
				continue
			}
			return nil, 0, errWrongID
		}
		if network == "udp" && !resp.Truncated && !sameQuestion(resp, m) {
			// Right ID, wrong question: a forgery or a confused
			// middlebox, not an answer; ours may still come. Over TCP
			// ask reports it, as the stream carries nothing else.
			continue
		}
		return resp, used, nil
	}
}

// readAnswer reads one message from conn, a UDP socket when udp is set,
// and unpacks it unless unpacking would take more than its share of the
// in-flight budget; used is what unpacking takes, as unpackBound bounds
// it.
//
// A truncated answer to the query of ID id comes back with its header
// alone: it is only read to ask again over TCP (or, over TCP, to fail),
// and may be cut mid-record. A datagram over udpReadSize, which the
// buffer cuts, or one that would unpack beyond its share, is taken as
// truncated when it is that answer, and as junk otherwise. Over TCP an
// answer beyond its share is errAnswerTooLarge.
func readAnswer(conn *dns.Conn, udp bool, id uint16) (_ *dns.Msg, used int64, _ error) {
	p, err := conn.ReadMsgHeader(nil)
	if err != nil {
		return nil, 0, err
	}
	hdr := dns.MsgHdr{
		Id:        binary.BigEndian.Uint16(p),
		Response:  p[2]&0x80 != 0,
		Opcode:    int(p[2]>>3) & 0xF,
		Truncated: p[2]&0x02 != 0,
		Rcode:     int(p[3] & 0xF),
	}
	ours := hdr.Id == id && hdr.Response
	tooLarge := udp && len(p) > udpReadSize
	if !tooLarge {
		used = unpackBound(p)
		tooLarge = used > unpackBase+unpackFactor*int64(len(p))
	}
	switch {
	case ours && (hdr.Truncated || udp && tooLarge):
		hdr.Truncated = true
		return &dns.Msg{MsgHdr: hdr}, 0, nil
	case tooLarge && udp:
		return nil, 0, dns.ErrBuf
	case tooLarge:
		return nil, 0, errAnswerTooLarge
	}
	m := new(dns.Msg)
	if err := m.Unpack(p); err != nil {
		return m, used, err
	}
	if m.IsTsig() != nil {
		// We sign nothing and hold no key: as miekg/dns's own reading
		// says when it has none.
		return m, used, dns.ErrSecret
	}
	return m, used, nil
}

// unescapeDNSText undoes the presentation form miekg/dns gives character-
// strings and names: "\DDD" is the octet DDD (decimal), "\X" is X.
func unescapeDNSText(s string) string {
	if strings.IndexByte(s, '\\') < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 == len(s) {
			b = append(b, c)
			continue
		}
		if i+3 < len(s) && isDecimalDigit(s[i+1]) && isDecimalDigit(s[i+2]) && isDecimalDigit(s[i+3]) {
			n := int(s[i+1]-'0')*100 + int(s[i+2]-'0')*10 + int(s[i+3]-'0')
			if n <= 255 {
				b = append(b, byte(n))
				i += 3
				continue
			}
		}
		b = append(b, s[i+1])
		i++
	}
	return string(b)
}

func isDecimalDigit(c byte) bool { return '0' <= c && c <= '9' }
