package why

import (
	"fmt"
	"net"
	"net/http"
	"runtime"
	"testing"

	"github.com/miekg/dns"

	"github.com/spf-milter/spf-milter/internal/dnstest"
	"github.com/spf-milter/spf-milter/spf"
)

// TestPageMemoryBounded sends the page what an attacker without mail can:
// GETs from many client addresses, each for a sender with a new local
// part at a zone that answers every such name with 150 address
// records (TTL a day). Every answer, page and client the page keeps is
// within its byte bound, and so is the heap: the rate limiter, the page
// cache and the resolver's cache all stay within what they account.
func TestPageMemoryBounded(t *testing.T) {
	z := dnstest.NewZone()
	if err := z.Add(`hostile.example. 86400 IN TXT "v=spf1 exists:%{l}.y.example -all"`); err != nil {
		t.Fatal(err)
	}
	rrs := make([]dns.RR, 150)
	for i := range rrs {
		rrs[i] = &dns.A{Hdr: dns.RR_Header{Name: "*.y.example.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 86400},
			A: net.IPv4(10, 0, byte(i>>8), byte(i))}
	}
	z.AddRR(rrs...)
	srv := dnstest.StartServer(t, z)
	srv.SetCompress(true)
	const dnsBytes, pageBytes = 2 << 20, 1 << 20
	r, err := spf.NewDNSResolver(spf.DNSOptions{Servers: []string{srv.Addr()}, CacheSize: spf.DefaultCacheSize, CacheBytes: dnsBytes})
	if err != nil {
		t.Fatal(err)
	}
	c := &spf.Checker{Resolver: r, Receiver: "mx.test"}
	h := NewHandler(Options{Checker: func() *spf.Checker { return c }, CacheBytes: pageBytes}).(*handler)

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	// Enough requests that, kept whole, the answers alone would take
	// some 25 MB, and the pages 6 MB more: 1,000 of ~25 KB, each under
	// 1/64 of dnsBytes and so kept until the byte bound pushes it out.
	const requests = 1000
	for i := range requests {
		client := fmt.Sprintf("198.51.%d.%d:4000", i/250, i%250+1)
		rec := get(h, whyURL(fmt.Sprintf("u%05d@hostile.example", i), "192.0.2.1", "mail.example"), client)
		if rec.Code != http.StatusOK {
			t.Fatalf("request %d: status %d", i, rec.Code)
		}
		if b := r.CacheBytes(); b > dnsBytes {
			t.Fatalf("after %d requests the DNS cache counts %d bytes, over %d", i+1, b, dnsBytes)
		}
		if b := h.cache.size(); b > pageBytes {
			t.Fatalf("after %d requests the page cache counts %d bytes, over %d", i+1, b, pageBytes)
		}
	}
	if n := h.limiter.len(); n != requests {
		t.Errorf("the rate limiter remembers %d clients, want %d", n, requests)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	// Twice the bounds, and 8 MB for the rest: the clients remembered
	// (a few hundred bytes each), the server's zone, the collector.
	limit := int64(2*(dnsBytes+pageBytes) + 8<<20)
	t.Logf("%d requests: DNS cache %d bytes, pages %d bytes in %d, heap grew %d (limit %d)",
		requests, r.CacheBytes(), h.cache.size(), h.cache.len(), grown, limit)
	if grown > limit {
		t.Errorf("the heap grew by %d bytes, more than %d", grown, limit)
	}
	runtime.KeepAlive(h)
	runtime.KeepAlive(r)
}
