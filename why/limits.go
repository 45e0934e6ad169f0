package why

import (
	"container/list"
	"net/netip"
	"sync"
	"time"

	"github.com/spf-milter/spf-milter/internal/lru"
)

// rateLimiter gives each client a token bucket of burst tokens refilled at
// perMinute a minute. It remembers at most max clients: past that the one
// seen least recently is forgotten, so that an attacker with many addresses
// can cost memory only up to that bound. Every client takes the same few
// hundred bytes (a bucket, its list element and map slot), so the bound
// in clients is one in bytes: about 2 MB for DefaultClients. A forgotten client comes back with
// a full bucket, which is no more than a new address would get.
type rateLimiter struct {
	perMinute float64
	burst     float64
	max       int

	mu      sync.Mutex
	clients map[netip.Prefix]*list.Element // of *bucket
	order   *list.List                     // most recently seen first
}

type bucket struct {
	key    netip.Prefix
	tokens float64
	last   time.Time
}

func newRateLimiter(perMinute, max int) *rateLimiter {
	return &rateLimiter{
		perMinute: float64(perMinute),
		burst:     float64(perMinute),
		max:       max,
		clients:   make(map[netip.Prefix]*list.Element),
		order:     list.New(),
	}
}

// allow takes a token from key's bucket. When there is none it reports
// false and how long until there is one.
func (l *rateLimiter) allow(key netip.Prefix, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	el, ok := l.clients[key]
	if !ok {
		b := &bucket{key: key, tokens: l.burst, last: now}
		el = l.order.PushFront(b)
		l.clients[key] = el
		for l.order.Len() > l.max {
			old := l.order.Back()
			l.order.Remove(old)
			delete(l.clients, old.Value.(*bucket).key)
		}
	} else {
		l.order.MoveToFront(el)
	}
	b := el.Value.(*bucket)
	if elapsed := now.Sub(b.last); elapsed > 0 {
		// A clock that steps back refills nothing, and the refill counts
		// from the latest time seen.
		b.tokens = min(l.burst, b.tokens+elapsed.Minutes()*l.perMinute)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / l.perMinute * float64(time.Minute))
	return false, wait
}

// len is the number of clients remembered.
func (l *rateLimiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.order.Len()
}

// clientKey is what a client is rate limited by: its IPv4 address, or the
// /64 of its IPv6 address, since one host commonly holds a whole /64 and
// could otherwise take a new address for every request. An unparsable
// peer address (not seen from net/http's listeners) shares one key.
func clientKey(remoteAddr string) netip.Prefix {
	var ip netip.Addr
	if ap, err := netip.ParseAddrPort(remoteAddr); err == nil {
		ip = ap.Addr()
	} else if a, err := netip.ParseAddr(remoteAddr); err == nil {
		ip = a
	} else {
		return netip.Prefix{}
	}
	ip = ip.Unmap().WithZone("")
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

// answerCache keeps rendered answers for ttl, at most max of them and
// maxBytes of them as answerBytes counts them; the one used least
// recently goes first. A page is as large as the records it quotes, which
// their owners choose: one over maxBytes/lru.EntryShare is served but not
// kept.
type answerCache struct {
	ttl time.Duration

	mu    sync.Mutex
	pages *lru.Cache[string, *answer]
}

// answer is a rendered page and when it stops being served.
type answer struct {
	key     string
	page    []byte
	expires time.Time
}

// answerOverhead covers an answer's struct, list element and map slot
// beside its key and page.
const answerOverhead = 256

// answerBytes is what keeping a counts against the byte bound: its page's
// capacity, which is what the heap holds, not only its length.
func answerBytes(a *answer) int64 {
	return answerOverhead + int64(len(a.key)+cap(a.page))
}

func newAnswerCache(ttl time.Duration, max int, maxBytes int64) *answerCache {
	return &answerCache{ttl: ttl, pages: lru.New[string, *answer](max, maxBytes)}
}

// get returns the answer for key if it has not expired.
func (c *answerCache) get(key string, now time.Time) (*answer, bool) {
	if c.ttl <= 0 {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	a, _, ok := c.pages.Get(key, now)
	return a, ok
}

// put stores page under key and returns the stored answer.
func (c *answerCache) put(key string, page []byte, now time.Time) *answer {
	a := &answer{key: key, page: page, expires: now.Add(c.ttl)}
	if c.ttl <= 0 {
		return a
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pages.Add(key, a, answerBytes(a), a.expires)
	return a
}

// len is the number of answers held, expired ones included.
func (c *answerCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pages.Len()
}

// size returns the bytes the answers held count for.
func (c *answerCache) size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pages.Bytes()
}
