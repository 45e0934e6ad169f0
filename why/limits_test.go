package why

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/spf-milter/spf-milter/internal/lru"
)

// TestClientKey checks what a client is rate limited by.
func TestClientKey(t *testing.T) {
	tests := []struct{ remote, want string }{
		{"192.0.2.1:4000", "192.0.2.1/32"},
		{"[::ffff:192.0.2.1]:4000", "192.0.2.1/32"},
		{"[2001:db8:1:2:3:4:5:6]:4000", "2001:db8:1:2::/64"},
		{"[fe80::1%eth0]:4000", "fe80::/64"},
		{"192.0.2.1", "192.0.2.1/32"},
		{"pipe", "invalid Prefix"},
		{"", "invalid Prefix"},
	}
	for _, tt := range tests {
		if got := clientKey(tt.remote).String(); got != tt.want {
			t.Errorf("clientKey(%q) = %s, want %s", tt.remote, got, tt.want)
		}
	}
}

// TestRateLimiterRefill checks the bucket: a burst of rate, one token
// back per 60/rate seconds, never more than the burst.
func TestRateLimiterRefill(t *testing.T) {
	l := newRateLimiter(6, 10)
	k := netip.MustParsePrefix("192.0.2.1/32")
	t0 := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	for i := range 6 {
		if ok, _ := l.allow(k, t0); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	if ok, wait := l.allow(k, t0); ok || wait != 10*time.Second {
		t.Fatalf("over the burst: allowed %v, wait %v; want refused, 10s", ok, wait)
	}
	if ok, _ := l.allow(k, t0.Add(10*time.Second)); !ok {
		t.Error("refused after a token's time")
	}
	// An hour idle refills the burst and no more.
	t1 := t0.Add(time.Hour)
	n := 0
	for {
		if ok, _ := l.allow(k, t1); !ok {
			break
		}
		n++
	}
	if n != 6 {
		t.Errorf("%d requests after an hour idle, want the burst of 6", n)
	}
	// A clock going back takes nothing and gives nothing.
	if ok, _ := l.allow(k, t0); ok {
		t.Error("a clock going back refilled the bucket")
	}
}

// TestAnswerCacheExpiry checks that an answer is served until, not at,
// its expiry, and that an expired one is dropped.
func TestAnswerCacheExpiry(t *testing.T) {
	c := newAnswerCache(time.Minute, 10, DefaultCacheBytes)
	t0 := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	c.put("k", []byte("page"), t0)
	if a, ok := c.get("k", t0.Add(time.Minute-time.Nanosecond)); !ok || string(a.page) != "page" {
		t.Error("not served within the TTL")
	}
	if _, ok := c.get("k", t0.Add(time.Minute)); ok {
		t.Error("served at expiry")
	}
	if c.len() != 0 {
		t.Errorf("%d answers left after expiry", c.len())
	}
}

// TestSuggestRecord checks the record suggested with the client's term.
func TestSuggestRecord(t *testing.T) {
	tests := []struct{ record, want string }{
		{"v=spf1 mx -all", "v=spf1 mx ip4:192.0.2.1 -all"},
		{"v=spf1 mx ~ALL", "v=spf1 mx ip4:192.0.2.1 ~ALL"},
		{"v=spf1 all", "v=spf1 ip4:192.0.2.1 all"},
		{"v=spf1 mx -all exp=e.example", "v=spf1 mx ip4:192.0.2.1 -all exp=e.example"},
		{"v=spf1 mx redirect=r.example", ""},
		{"v=spf1 include:all.example -all", "v=spf1 include:all.example ip4:192.0.2.1 -all"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := suggestRecord(tt.record, "ip4:192.0.2.1"); got != tt.want {
			t.Errorf("suggestRecord(%q) = %q, want %q", tt.record, got, tt.want)
		}
	}
}

// TestAnswerCacheBytes checks the byte bound of the answer cache: a page
// quotes records their owners choose, so pages can be large, and a
// thousand of them must not take whatever their owners like.
func TestAnswerCacheBytes(t *testing.T) {
	const bound = 1 << 20
	t0 := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		pageSize int
		pages    int
		wantMax  int // answers held at most
		wantLast bool
	}{
		// 1,000 pages of 10 KB would take 10 MB: the bound keeps ~100.
		{"pages past the bound", 10_000, 1000, bound / 10_000, true},
		// A page over 1/64 of the bound is served, not kept.
		{"page over its share", bound/lru.EntryShare + 1, 10, 0, false},
		{"pages within the bound", 1000, 100, 100, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newAnswerCache(time.Minute, 1000, bound)
			for i := range tt.pages {
				a := c.put(fmt.Sprint("k", i), make([]byte, tt.pageSize), t0)
				if len(a.page) != tt.pageSize {
					t.Fatalf("put returned a page of %d bytes, want %d", len(a.page), tt.pageSize)
				}
				if c.size() > bound {
					t.Fatalf("after %d pages the cache counts %d bytes, over %d", i+1, c.size(), bound)
				}
			}
			if n := c.len(); n > tt.wantMax {
				t.Errorf("%d answers held, want at most %d", n, tt.wantMax)
			}
			if _, ok := c.get(fmt.Sprint("k", tt.pages-1), t0); ok != tt.wantLast {
				t.Errorf("last page held = %v, want %v", ok, tt.wantLast)
			}
		})
	}
}
