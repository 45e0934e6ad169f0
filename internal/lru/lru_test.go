package lru

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// op is one step of a cache test: add key with size, or get key at an
// offset from t0.
type op struct {
	add  bool
	key  string
	size int64
	at   time.Duration // get: when; add: the entry expires at t0+at
	want bool          // add: kept; get: found
}

func TestCache(t *testing.T) {
	tests := []struct {
		name      string
		maxLen    int
		maxBytes  int64
		ops       []op
		wantLen   int
		wantBytes int64
	}{
		{
			name: "get what was added", maxLen: 10, maxBytes: 6400,
			ops: []op{
				{add: true, key: "a", size: 10, at: time.Hour, want: true},
				{key: "a", at: time.Minute, want: true},
				{key: "b", at: time.Minute, want: false},
			},
			wantLen: 1, wantBytes: 10,
		},
		{
			name: "served until, not at, its expiry", maxLen: 10, maxBytes: 6400,
			ops: []op{
				{add: true, key: "a", size: 10, at: time.Minute, want: true},
				{key: "a", at: time.Minute - 1, want: true},
				{key: "a", at: time.Minute, want: false},
			},
			wantLen: 0, wantBytes: 0,
		},
		{
			name: "count bound evicts the least recently used", maxLen: 2, maxBytes: 6400,
			ops: []op{
				{add: true, key: "a", size: 10, at: time.Hour, want: true},
				{add: true, key: "b", size: 10, at: time.Hour, want: true},
				{key: "a", want: true}, // b is now the least recently used
				{add: true, key: "c", size: 10, at: time.Hour, want: true},
				{key: "b", want: false},
				{key: "a", want: true},
				{key: "c", want: true},
			},
			wantLen: 2, wantBytes: 20,
		},
		{
			name: "byte bound evicts the least recently used", maxLen: 0, maxBytes: 6400,
			ops: []op{
				{add: true, key: "a", size: 100, at: time.Hour, want: true},
				{add: true, key: "b", size: 100, at: time.Hour, want: true},
				{add: true, key: "c", size: 100, at: time.Hour, want: true},
				{key: "a", want: true},
				{add: true, key: "d", size: 100, at: time.Hour, want: true},
				{add: true, key: "e", size: 100, at: time.Hour, want: true},
				{add: true, key: "f", size: 100, at: time.Hour, want: true},
				{add: true, key: "g", size: 100, at: time.Hour, want: true},
				{add: true, key: "h", size: 100, at: time.Hour, want: true},
				{add: true, key: "i", size: 6000, at: time.Hour, want: false}, // over 6400/64
			},
			wantLen: 8, wantBytes: 800,
		},
		{
			name: "an entry over its share is not kept and evicts nothing", maxLen: 10, maxBytes: 6400,
			ops: []op{
				{add: true, key: "a", size: 100, at: time.Hour, want: true},
				{add: true, key: "b", size: 101, at: time.Hour, want: false},
				{key: "a", want: true},
				{key: "b", want: false},
			},
			wantLen: 1, wantBytes: 100,
		},
		{
			name: "adding again replaces, counting the new size", maxLen: 10, maxBytes: 6400,
			ops: []op{
				{add: true, key: "a", size: 100, at: time.Hour, want: true},
				{add: true, key: "a", size: 30, at: time.Hour, want: true},
				{key: "a", want: true},
			},
			wantLen: 1, wantBytes: 30,
		},
		{
			name: "many small entries stay within the byte bound", maxLen: 0, maxBytes: 640,
			ops: func() []op {
				var ops []op
				for i := range 100 {
					ops = append(ops, op{add: true, key: string(rune('A' + i)), size: 10, at: time.Hour, want: true})
				}
				return ops
			}(),
			wantLen: 64, wantBytes: 640,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New[string, int](tt.maxLen, tt.maxBytes)
			for i, o := range tt.ops {
				if o.add {
					if got := c.Add(o.key, i, o.size, t0.Add(o.at)); got != o.want {
						t.Errorf("op %d: Add(%q, size %d) = %v, want %v", i, o.key, o.size, got, o.want)
					}
				} else if _, _, got := c.Get(o.key, t0.Add(o.at)); got != o.want {
					t.Errorf("op %d: Get(%q) found %v, want %v", i, o.key, got, o.want)
				}
				checkAccounts(t, c)
				if c.Bytes() > tt.maxBytes || (tt.maxLen > 0 && c.Len() > tt.maxLen) {
					t.Fatalf("op %d: %d entries of %d bytes, over the bounds %d and %d", i, c.Len(), c.Bytes(), tt.maxLen, tt.maxBytes)
				}
			}
			if c.Len() != tt.wantLen || c.Bytes() != tt.wantBytes {
				t.Errorf("holds %d entries of %d bytes, want %d of %d", c.Len(), c.Bytes(), tt.wantLen, tt.wantBytes)
			}
		})
	}
}

// TestCacheGetReturnsExpiry checks that Get gives the value and the
// expiry it was added with, and that Extend only ever makes it later.
func TestCacheGetReturnsExpiry(t *testing.T) {
	c := New[string, string](0, 6400)
	c.Add("k", "v", 10, t0.Add(time.Hour))
	v, exp, ok := c.Get("k", t0)
	if !ok || v != "v" || !exp.Equal(t0.Add(time.Hour)) {
		t.Fatalf("Get = %q, %v, %v; want v, %v, true", v, exp, ok, t0.Add(time.Hour))
	}
	c.Extend("k", t0.Add(time.Minute))
	if _, exp, _ := c.Get("k", t0); !exp.Equal(t0.Add(time.Hour)) {
		t.Errorf("an earlier Extend moved the expiry to %v", exp)
	}
	c.Extend("k", t0.Add(2*time.Hour))
	if _, exp, _ := c.Get("k", t0); !exp.Equal(t0.Add(2 * time.Hour)) {
		t.Errorf("a later Extend left the expiry at %v", exp)
	}
	if c.Extend("missing", t0) {
		t.Error("Extend of a missing key reported it held")
	}
	c.Remove("k")
	if c.Len() != 0 || c.Bytes() != 0 {
		t.Errorf("after Remove: %d entries of %d bytes", c.Len(), c.Bytes())
	}
}

// checkAccounts fails t unless the bytes and the index agree with the
// entries held.
func checkAccounts[K comparable, V any](t *testing.T, c *Cache[K, V]) {
	t.Helper()
	var sum int64
	for el := c.order.Front(); el != nil; el = el.Next() {
		e := el.Value.(*entry[K, V])
		sum += e.bytes
		if c.entries[e.key] != el {
			t.Fatalf("entry %v is not indexed", e.key)
		}
	}
	if sum != c.bytes || len(c.entries) != c.order.Len() {
		t.Fatalf("accounts %d bytes in %d entries; they sum to %d in %d", c.bytes, len(c.entries), sum, c.order.Len())
	}
}

// TestPeek checks that Peek finds what Get would, without using it: the
// entry peeked at is still the least recently used, and an expired one
// stays until a Get drops it.
func TestPeek(t *testing.T) {
	c := New[string, int](2, 6400)
	c.Add("a", 1, 10, t0.Add(time.Hour))
	c.Add("b", 2, 10, t0.Add(time.Minute))
	if v, _, ok := c.Peek("a", t0); !ok || v != 1 {
		t.Fatalf("Peek(a) = %v, %v", v, ok)
	}
	if _, _, ok := c.Peek("b", t0.Add(time.Minute)); ok {
		t.Error("Peek found an expired entry")
	}
	if c.Len() != 2 {
		t.Errorf("Peek dropped an entry: %d held", c.Len())
	}
	c.Add("c", 3, 10, t0.Add(time.Hour))
	if _, _, ok := c.Peek("a", t0); ok {
		t.Error("a peeked-at entry was kept over one used later")
	}
	checkAccounts(t, c)
}

// TestFits checks that Fits and Add agree on the largest entry kept.
func TestFits(t *testing.T) {
	const maxBytes = 64 * EntryShare
	tests := []struct {
		size int64
		want bool
	}{
		{0, true},
		{maxBytes / EntryShare, true},
		{maxBytes/EntryShare + 1, false},
	}
	for _, tt := range tests {
		c := New[string, int](0, maxBytes)
		if got := c.Fits(tt.size); got != tt.want {
			t.Errorf("Fits(%d) = %v, want %v", tt.size, got, tt.want)
		}
		if got := c.Add("k", 1, tt.size, time.Unix(100, 0)); got != tt.want {
			t.Errorf("Add of size %d kept = %v, want %v", tt.size, got, tt.want)
		}
	}
}
