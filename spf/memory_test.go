package spf_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"testing"

	"github.com/miekg/dns"

	"github.com/spf-milter/spf-milter/internal/dnstest"
	"github.com/spf-milter/spf-milter/spf"
)

// hostileZone is the zone of an owner who makes every message cost the
// receiver memory: its record asks for an address of a name made of the
// sender's local part, and every such name has records addrs A records
// (3,700 come to some 60 KB, over TCP after TC over UDP), all with a TTL
// of a day.
func hostileZone(t testing.TB, addrs int) *dnstest.Zone {
	t.Helper()
	z := dnstest.NewZone()
	if err := z.Add(`hostile.example. 86400 IN TXT "v=spf1 exists:%{l}.y.example -all"`); err != nil {
		t.Fatal(err)
	}
	rrs := make([]dns.RR, addrs)
	for i := range rrs {
		rrs[i] = &dns.A{
			Hdr: dns.RR_Header{Name: "*.y.example.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 86400},
			A:   net.IPv4(10, byte(i>>16), byte(i>>8), byte(i)),
		}
	}
	z.AddRR(rrs...)
	return z
}

// heapAfterGC returns the bytes of live heap objects after a full
// collection.
func heapAfterGC() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// hostileChecks runs n checks of senders with distinct local parts
// against the hostile zone served by srv, through r; each must pass (the
// exists term matches). It calls after with the number of checks done
// after each one.
func hostileChecks(tb testing.TB, r *spf.DNSResolver, n int, after func(done int)) {
	tb.Helper()
	c := &spf.Checker{Resolver: r, Receiver: "mx.example.net"}
	ip := netip.MustParseAddr("192.0.2.1")
	for i := range n {
		o := c.CheckMailFrom(context.Background(), ip, fmt.Sprintf("u%06d@hostile.example", i), "mail.example")
		if o.Result != spf.Pass {
			tb.Fatalf("check %d: %s (%s), want pass", i, o.Result, o.Problem)
		}
		if after != nil {
			after(i + 1)
		}
	}
}

// TestDNSCacheBoundedAgainstHostileZone runs checks against the hostile
// zone, each with a new local part, and checks that the cache stays
// within its byte bound and the heap with it. Before the bound, the cache
// kept every answer whole up to its 10,000 entries: the checks below
// would hold well over 50 MB.
func TestDNSCacheBoundedAgainstHostileZone(t *testing.T) {
	const cacheBytes = 4 << 20
	tests := []struct {
		name   string
		addrs  int // A records of each name
		checks int
		// kept is whether answers of that size fit under the cache's
		// bound for one answer (1/64 of cacheBytes).
		kept bool
	}{
		// The zone of the report: each answer is far over the bound for
		// one answer, used by its check and never kept.
		{"3,700 records an answer", 3700, 120, false},
		// Answers under the bound for one answer: kept, until the byte
		// bound pushes the oldest out.
		{"300 records an answer", 300, 400, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := dnstest.StartServer(t, hostileZone(t, tt.addrs))
			srv.SetCompress(true)
			r, err := spf.NewDNSResolver(spf.DNSOptions{Servers: []string{srv.Addr()},
				CacheSize: spf.DefaultCacheSize, CacheBytes: cacheBytes})
			if err != nil {
				t.Fatal(err)
			}
			before := heapAfterGC()
			maxLen := 0
			hostileChecks(t, r, tt.checks, func(done int) {
				if b := r.CacheBytes(); b > cacheBytes {
					t.Fatalf("after %d checks the cache accounts %d bytes, over its bound of %d", done, b, cacheBytes)
				}
				maxLen = max(maxLen, r.CacheLen())
			})
			// The TXT answer of hostile.example stays; the A answers are
			// kept or not by their size.
			if kept := maxLen > 1; kept != tt.kept {
				t.Errorf("the cache held at most %d answers: A answers kept = %v, want %v", maxLen, kept, tt.kept)
			}
			grown := heapAfterGC() - before
			runtime.KeepAlive(r)
			// Generous: twice the bound, and 16 MB for the rest of the
			// test process (the server's zone, buffers, the collector's
			// own state).
			limit := int64(2*cacheBytes + 16<<20)
			t.Logf("%d checks: cache %d bytes in %d answers, heap grew %d bytes (limit %d)",
				tt.checks, r.CacheBytes(), r.CacheLen(), grown, limit)
			if grown > limit {
				t.Errorf("the heap grew by %d bytes over %d checks, more than %d", grown, tt.checks, limit)
			}
		})
	}
}

// BenchmarkHostileZone runs checks against the hostile zone with the
// default cache bounds, each with a new local part, and reports what the
// cache accounts and how much the heap grew (after a collection) per the
// whole run, in MB: the figures the default bound promises to hold
// whatever the number of messages.
func BenchmarkHostileZone(b *testing.B) {
	for _, addrs := range []int{300, 3700} {
		b.Run(fmt.Sprintf("records=%d", addrs), func(b *testing.B) {
			srv := dnstest.StartServer(b, hostileZone(b, addrs))
			srv.SetCompress(true)
			r, err := spf.NewDNSResolver(spf.DNSOptions{Servers: []string{srv.Addr()}, CacheSize: spf.DefaultCacheSize})
			if err != nil {
				b.Fatal(err)
			}
			before := heapAfterGC()
			b.ResetTimer()
			hostileChecks(b, r, b.N, nil)
			b.StopTimer()
			b.ReportMetric(float64(r.CacheBytes())/1e6, "cache-MB")
			b.ReportMetric(float64(heapAfterGC()-before)/1e6, "heap-growth-MB")
			runtime.KeepAlive(r)
		})
	}
}
