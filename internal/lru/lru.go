// Package lru is the one least-recently-used cache of the project: the DNS
// answers of the spf package and the pages of the why page are both kept
// in one, bounded twice. A count alone does not bound memory when the
// owners of the zones we are asked about choose how large an entry is, so
// every entry also carries its size in bytes as its owner estimates it,
// and the cache holds at most maxBytes of them.
//
// Entries also expire: each is kept until the time it was given, and an
// expired entry is never returned.
//
// A Cache is not safe for concurrent use: its users already hold a lock
// around more than the cache (the DNS resolver's in-flight queries), and
// a second lock inside would only cost.
package lru

import (
	"container/list"
	"time"
)

// EntryShare is the part of the byte bound one entry may take at most: an
// entry over maxBytes/EntryShare is not kept, so that one zone owner
// publishing huge answers cannot push everyone else's entries out.
const EntryShare = 64

// Cache keeps values by key, each until its expiry, within a bound on
// their number and on their bytes; past either bound the entry used least
// recently goes first.
type Cache[K comparable, V any] struct {
	maxLen   int
	maxBytes int64

	bytes   int64
	order   *list.List // of *entry[K, V], most recently used first
	entries map[K]*list.Element
}

type entry[K comparable, V any] struct {
	key     K
	value   V
	expires time.Time
	bytes   int64
}

// New returns an empty cache holding at most maxLen entries (no bound on
// their number when maxLen <= 0) and at most maxBytes of them.
func New[K comparable, V any](maxLen int, maxBytes int64) *Cache[K, V] {
	return &Cache[K, V]{maxLen: maxLen, maxBytes: maxBytes, order: list.New(), entries: make(map[K]*list.Element)}
}

// Get returns the value kept for k and until when it is kept, if it has
// not expired at now, and marks it used. An expired entry is dropped: it
// can never be returned again.
func (c *Cache[K, V]) Get(k K, now time.Time) (v V, expires time.Time, ok bool) {
	el, ok := c.entries[k]
	if !ok {
		return v, time.Time{}, false
	}
	e := el.Value.(*entry[K, V])
	if !now.Before(e.expires) {
		c.remove(el)
		return v, time.Time{}, false
	}
	c.order.MoveToFront(el)
	return e.value, e.expires, true
}

// Peek is Get without using the entry: it neither marks it used nor
// drops it when expired, for a caller that only asks whether a later Get
// would find it.
func (c *Cache[K, V]) Peek(k K, now time.Time) (v V, expires time.Time, ok bool) {
	el, ok := c.entries[k]
	if !ok {
		return v, time.Time{}, false
	}
	e := el.Value.(*entry[K, V])
	if !now.Before(e.expires) {
		return v, time.Time{}, false
	}
	return e.value, e.expires, true
}

// Extend keeps the entry of k until expires, if that is later than its
// expiry now. It reports whether k is held.
func (c *Cache[K, V]) Extend(k K, expires time.Time) bool {
	el, ok := c.entries[k]
	if !ok {
		return false
	}
	if e := el.Value.(*entry[K, V]); expires.After(e.expires) {
		e.expires = expires
	}
	return true
}

// Add keeps v for k until expires, counting size bytes for it, in place of
// any value k had, and evicts the entries used least recently while a
// bound is passed. It reports whether v is kept: one over
// maxBytes/EntryShare is not, and leaves what the cache holds as it was.
func (c *Cache[K, V]) Add(k K, v V, size int64, expires time.Time) bool {
	if !c.Fits(size) {
		return false
	}
	if el, ok := c.entries[k]; ok {
		c.remove(el)
	}
	c.entries[k] = c.order.PushFront(&entry[K, V]{key: k, value: v, expires: expires, bytes: size})
	c.bytes += size
	for (c.maxLen > 0 && c.order.Len() > c.maxLen) || c.bytes > c.maxBytes {
		c.remove(c.order.Back())
	}
	return true
}

// Remove drops the entry of k, if any.
func (c *Cache[K, V]) Remove(k K) {
	if el, ok := c.entries[k]; ok {
		c.remove(el)
	}
}

func (c *Cache[K, V]) remove(el *list.Element) {
	e := el.Value.(*entry[K, V])
	c.order.Remove(el)
	delete(c.entries, e.key)
	c.bytes -= e.bytes
}

// Len is the number of entries held, expired ones not yet dropped
// included.
func (c *Cache[K, V]) Len() int { return c.order.Len() }

// Bytes is the sum of the sizes of the entries held.
func (c *Cache[K, V]) Bytes() int64 { return c.bytes }

// Fits reports whether an entry of size bytes may be kept at all: one over
// maxBytes/EntryShare never is.
func (c *Cache[K, V]) Fits(size int64) bool { return size <= c.maxBytes/EntryShare }
