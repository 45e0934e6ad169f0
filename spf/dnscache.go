package spf

import (
	"context"
	"errors"
	"time"

	"github.com/miekg/dns"

	"github.com/spf-milter/spf-milter/internal/dnsname"
	"github.com/spf-milter/spf-milter/internal/lru"
)

// maxCacheTTL caps how long an answer is kept, whatever its TTL says: a
// record published with a TTL of weeks would otherwise outlive any change
// its owner makes, and RFC 2308 §5 suggests about a day for negative
// answers too.
const maxCacheTTL = 24 * time.Hour

// cacheKey identifies a question: the query name as dnsname.Key gives it
// (wire form, ASCII lowercased) and the query type.
type cacheKey struct {
	name  string
	qtype uint16
}

// newAnswerCache returns the cache of a DNSResolver: whole server
// answers (NOERROR and NXDOMAIN messages) by question, so that the CNAME
// chase in lookup works the same on a kept answer as on a fresh one. It
// holds at most size answers and maxBytes of them as msgBytes accounts
// them. An answer over lru.EntryShare of maxBytes (512 KiB of the default
// 32 MiB, some 3,000 address records, far more than any real SPF setup
// publishes at one name) is not kept at all: one zone owner answering with
// thousands of records must not push everyone else's answers out. It is
// used with DNSResolver.mu held.
func newAnswerCache(size int, maxBytes int64) *lru.Cache[cacheKey, *dns.Msg] {
	return lru.New[cacheKey, *dns.Msg](size, maxBytes)
}

// Estimates of the heap an answer kept by the cache takes, as msgBytes
// sums them. They were measured with the heap profile of a test that
// unpacks and keeps many copies of answers of each type (1 to 3,700
// records of A, AAAA, MX, TXT) and rounded up; TestDNSCacheBytesCoverHeap
// checks that they still do not fall below what the heap shows.
const (
	// entryOverhead covers the dns.Msg, its question, the cache's entry,
	// its list element and map slot, beside the key's name.
	entryOverhead = 512
	// rrOverhead covers one record's struct, its header and its slot in
	// the answer slice, beside the owner name and the data counted apart.
	rrOverhead = 128
	// stringOverhead covers a string or slice header and the rounding of
	// its bytes up to an allocation class.
	stringOverhead = 24
)

// msgBytes estimates the heap that keeping msg under a key of name takes.
func msgBytes(name string, msg *dns.Msg) int64 {
	n := int64(entryOverhead + len(name))
	for _, q := range msg.Question {
		n += int64(len(q.Name))
	}
	for _, rr := range msg.Answer {
		n += rrOverhead + int64(len(rr.Header().Name))
		switch rr := rr.(type) {
		case *dns.A, *dns.AAAA:
			n += stringOverhead + 16
		case *dns.TXT:
			for _, t := range rr.Txt {
				n += stringOverhead + int64(len(t))
			}
		case *dns.MX:
			n += int64(len(rr.Mx))
		case *dns.PTR:
			n += int64(len(rr.Ptr))
		case *dns.CNAME:
			n += int64(len(rr.Target))
		default:
			// A type lookup never reads, kept all the same: its wire
			// length twice over is more than its unpacked form.
			n += 2 * int64(dns.Len(rr))
		}
	}
	return n
}

// cacheTTL returns how long msg may be kept; 0 means not at all.
//
// A NOERROR answer with records is kept for the smallest TTL of its answer
// records. That holds for one that ends in CNAMEs too: lookup then asks
// for the last target, and that answer is kept by its own TTL. A negative
// answer, NXDOMAIN (possibly after CNAMEs) or NOERROR with no records
// (NODATA), is kept for the smallest of the TTL and the MINIMUM field of
// the SOA in its authority section (RFC 2308 §5), and not at all without
// a SOA. Failures never reach here: query only returns NOERROR and
// NXDOMAIN answers.
func cacheTTL(msg *dns.Msg) time.Duration {
	ttl := uint32(maxCacheTTL / time.Second)
	for _, rr := range msg.Answer {
		ttl = min(ttl, rr.Header().Ttl)
	}
	if msg.Rcode != dns.RcodeSuccess || len(msg.Answer) == 0 {
		var soa *dns.SOA
		for _, rr := range msg.Ns {
			if s, ok := rr.(*dns.SOA); ok {
				soa = s
				break
			}
		}
		if soa == nil {
			return 0
		}
		ttl = min(ttl, soa.Hdr.Ttl, soa.Minttl)
	}
	return time.Duration(ttl) * time.Second
}

// cacheable returns the part of msg the cache keeps: what lookup reads
// (rcode, answer records), without the authority and additional sections
// that would only take memory.
func cacheable(msg *dns.Msg) *dns.Msg {
	return &dns.Msg{MsgHdr: msg.MsgHdr, Question: msg.Question, Answer: msg.Answer}
}

// flight is a query in flight, which callers asking the same question at
// the same time wait for instead of sending their own.
type flight struct {
	done chan struct{} // closed when msg, expires and err are set
	msg  *dns.Msg
	err  error
	// expires is when the answer stops being kept; not after the time
	// the query ended when it is not kept at all.
	expires time.Time
	// leaderCtxDone is set when the query failed while the context of
	// the caller that ran it was done: the failure may be that caller's
	// alone, and a waiter whose context is alive must ask again.
	leaderCtxDone bool
	waiters       int // callers waiting, for tests
	// users counts the callers that may still read msg: the one that
	// runs the query and those waiting. The last to be done with it
	// releases held, the share of the in-flight budget of an answer not
	// kept by the cache. Both under DNSResolver.mu.
	users int
	held  reservation
}

// sharedQuery is query behind the cache and the sharing of queries in
// flight. key is dnsname.Key(qname). Unless it is nil, the caller hands
// the flight it returns to doneWith once it is done reading the answer.
//
// No goroutine is started: the first caller runs the query itself, and
// callers that come while it runs wait for its result or for their own
// context, whichever ends first. A result that only says the first
// caller's context ended is not taken: the waiter asks again, running the
// query itself unless another waiter already does.
func (r *DNSResolver) sharedQuery(ctx context.Context, qname, key string, qtype uint16) (*dns.Msg, time.Time, *flight, error) {
	k := cacheKey{key, qtype}
	for {
		r.mu.Lock()
		if r.cache != nil {
			msg, expires, hit := r.cache.Get(k, r.now())
			if hit {
				r.mu.Unlock()
				r.observeCache(qtype, true)
				return msg, expires, nil, nil
			}
		}
		if f := r.flights[k]; f != nil {
			f.waiters++
			f.users++
			r.mu.Unlock()
			r.observeCache(qtype, false)
			select {
			case <-f.done:
			case <-ctx.Done():
				r.doneWith(f)
				return nil, time.Time{}, nil, ctx.Err()
			}
			if f.leaderCtxDone && ctx.Err() == nil {
				r.doneWith(f)
				continue
			}
			if f.err != nil {
				r.doneWith(f)
				return nil, time.Time{}, nil, f.err
			}
			return f.msg, f.expires, f, nil
		}
		f := &flight{done: make(chan struct{}), users: 1}
		r.flights[k] = f
		r.mu.Unlock()
		r.observeCache(qtype, false)
		msg, expires, err := r.lead(ctx, f, k, qname, qtype)
		if err != nil {
			r.doneWith(f)
			return nil, time.Time{}, nil, err
		}
		return msg, expires, f, nil
	}
}

// doneWith tells that a caller of sharedQuery is done reading the answer
// of f; the last one gives back its share of the in-flight budget.
func (r *DNSResolver) doneWith(f *flight) {
	if f == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if f.users--; f.users == 0 {
		r.budget.release(&f.held)
	}
}

// lead runs the query of flight f and hands its result to the cache and
// to the callers waiting. The flight ends even if query panics, so that
// no waiter is left behind. expires is when the answer leaves the cache;
// the time it came when it was not kept.
func (r *DNSResolver) lead(ctx context.Context, f *flight, k cacheKey, qname string, qtype uint16) (msg *dns.Msg, expires time.Time, err error) {
	var res reservation
	defer func() {
		f.msg, f.err = msg, err
		if msg == nil && err == nil {
			f.err = errQueryAborted // query panicked; the panic goes on
		}
		f.leaderCtxDone = f.err != nil && contextDone(ctx)
		r.mu.Lock()
		now := r.now()
		expires = now
		if f.err == nil && r.cache != nil {
			if ttl := cacheTTL(msg); ttl > 0 {
				kept := cacheable(msg)
				if r.cache.Add(k, kept, msgBytes(k.name, kept), now.Add(ttl)) {
					msg, expires = kept, now.Add(ttl)
					// The cache accounts for it now.
					r.budget.release(&res)
				}
			}
		}
		f.msg, f.expires, f.held = msg, expires, res
		// The answer is in the cache before the flight ends: a caller
		// coming now finds one or the other, and never asks again.
		delete(r.flights, k)
		r.mu.Unlock()
		close(f.done)
	}()
	msg, res, err = r.query(ctx, qname, qtype)
	return msg, time.Time{}, err
}

// errQueryAborted is what callers waiting for a query get when the query
// ended without a result.
var errQueryAborted = errors.New("query aborted")

// contextDone reports whether ctx is done or its deadline has passed; the
// latter may be seen before ctx's own timer has run.
func contextDone(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

func (r *DNSResolver) observeCache(qtype uint16, hit bool) {
	if r.observer != nil && r.cache != nil {
		r.observer.DNSCache(dns.TypeToString[qtype], hit)
	}
}

// CacheLen returns the number of answers the cache holds now, expired ones
// included until they are looked up or evicted; 0 without a cache.
func (r *DNSResolver) CacheLen() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cache == nil {
		return 0
	}
	return r.cache.Len()
}

// CacheBytes returns the accounted size of the answers the cache holds
// now, as the byte bound counts it; 0 without a cache.
func (r *DNSResolver) CacheBytes() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cache == nil {
		return 0
	}
	return r.cache.Bytes()
}

// holdsTXT reports whether the cache holds an unexpired answer to the TXT
// question for name. It is a peek: no hit or miss is counted, and the
// entry keeps its place. The evaluation uses it not to fetch ahead what a
// lookup will find at once anyway.
func (r *DNSResolver) holdsTXT(name string) bool {
	if r.cache == nil || !dnsname.Queryable(name) {
		return false
	}
	k := cacheKey{dnsname.Key(dnsname.Escape(name)), dns.TypeTXT}
	r.mu.Lock()
	defer r.mu.Unlock()
	_, _, ok := r.cache.Peek(k, r.now())
	return ok
}
