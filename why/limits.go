package why

import (
	"container/list"
	"net/netip"
	"sync"
	"time"
)

// rateLimiter gives each client a token bucket of burst tokens refilled at
// perMinute a minute. It remembers at most max clients: past that the one
// seen least recently is forgotten, so that an attacker with many addresses
// can cost memory only up to that bound. A forgotten client comes back with
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

// answerCache keeps rendered answers for ttl, at most max of them; the one
// used least recently goes first.
type answerCache struct {
	ttl time.Duration
	max int

	mu      sync.Mutex
	entries map[string]*list.Element // of *answer
	order   *list.List               // most recently used first
}

// answer is a rendered page and when it stops being served.
type answer struct {
	key     string
	page    []byte
	expires time.Time
}

func newAnswerCache(ttl time.Duration, max int) *answerCache {
	return &answerCache{ttl: ttl, max: max, entries: make(map[string]*list.Element), order: list.New()}
}

// get returns the answer for key if it has not expired.
func (c *answerCache) get(key string, now time.Time) (*answer, bool) {
	if c.ttl <= 0 {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[key]
	if !ok {
		return nil, false
	}
	a := el.Value.(*answer)
	if !now.Before(a.expires) {
		c.order.Remove(el)
		delete(c.entries, key)
		return nil, false
	}
	c.order.MoveToFront(el)
	return a, true
}

// put stores page under key and returns the stored answer.
func (c *answerCache) put(key string, page []byte, now time.Time) *answer {
	a := &answer{key: key, page: page, expires: now.Add(c.ttl)}
	if c.ttl <= 0 {
		return a
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[key]; ok {
		el.Value = a
		c.order.MoveToFront(el)
		return a
	}
	c.entries[key] = c.order.PushFront(a)
	for c.order.Len() > c.max {
		old := c.order.Back()
		c.order.Remove(old)
		delete(c.entries, old.Value.(*answer).key)
	}
	return a
}

// len is the number of answers held, expired ones included.
func (c *answerCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
