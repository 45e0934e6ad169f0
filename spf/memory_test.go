package spf_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

// hostileCheck is one check of TestInflightBudgetAgainstHostileZone.
type hostileCheck struct {
	domain string
	ip     netip.Addr
	want   spf.Result
}

// hostileMixZone is hostileZone with records that make a, mx and exists
// terms all reach names of addrs A records each: mx.hostile.example's
// names have three MX hosts, all under the wildcard.
func hostileMixZone(t testing.TB, addrs int) *dnstest.Zone {
	t.Helper()
	z := hostileZone(t, addrs)
	if err := z.Add(
		`a.hostile.example. 86400 IN TXT "v=spf1 a:%{l}.y.example -all"`,
		`mx.hostile.example. 86400 IN TXT "v=spf1 mx:%{l}.m.example -all"`,
		`*.m.example. 86400 IN MX 10 h0.y.example.`,
		`*.m.example. 86400 IN MX 20 h1.y.example.`,
		`*.m.example. 86400 IN MX 30 h2.y.example.`,
	); err != nil {
		t.Fatal(err)
	}
	return z
}

// TestInflightBudgetAgainstHostileZone runs many checks at once against
// names of 3,700 A records each (60 KB over TCP, some 700 KB once
// unpacked), through a resolver with a small in-flight budget. The
// budget must hold: the bytes it accounts never pass it, and the server
// never answers more TCP queries at once than TCP shares fit in the half
// of the budget they may take. Without the budget every check has its
// answers in flight at the same moment: the server answers well over a
// hundred at once, and the heap holds as many unpacked answers. Every
// check still gets its RFC 7208 result.
func TestInflightBudgetAgainstHostileZone(t *testing.T) {
	const (
		budget = 16 << 20
		checks = 200
	)
	srv := dnstest.StartServer(t, hostileMixZone(t, 3700))
	srv.SetCompress(true)
	// A few milliseconds an answer, so that checks overlap as they would
	// against a real server, however fast the machine.
	srv.SetDelay(5 * time.Millisecond)
	r, err := spf.NewDNSResolver(spf.DNSOptions{Servers: []string{srv.Addr()},
		CacheSize: spf.DefaultCacheSize, InflightBytes: budget})
	if err != nil {
		t.Fatal(err)
	}
	// Generous: the checks wait for one another's shares, slowly under
	// the race detector.
	c := &spf.Checker{Resolver: r, Receiver: "mx.example.net", Timeout: 5 * time.Minute}
	listed, unlisted := netip.MustParseAddr("10.0.0.7"), netip.MustParseAddr("192.0.2.1")
	kinds := []hostileCheck{
		{"hostile.example", unlisted, spf.Pass}, // exists: any address
		{"a.hostile.example", listed, spf.Pass},
		{"a.hostile.example", unlisted, spf.Fail},
		{"mx.hostile.example", listed, spf.Pass},
		{"mx.hostile.example", unlisted, spf.Fail},
	}
	before := heapAfterGC()
	var wg sync.WaitGroup
	errs := make(chan string, checks)
	for i := range checks {
		k := kinds[i%len(kinds)]
		wg.Go(func() {
			o := c.CheckMailFrom(context.Background(), k.ip, fmt.Sprintf("u%06d@%s", i, k.domain), "mail.example")
			if o.Result != k.want {
				errs <- fmt.Sprintf("check %d of %s from %s: %s (%s), want %s", i, k.domain, k.ip, o.Result, o.Problem, k.want)
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if got := r.InflightBytes(); got != 0 {
		t.Errorf("%d bytes of the budget still held after every check returned", got)
	}
	peak, tcpPeak := r.InflightPeak(), srv.TCPPeak()
	tcpMax := (budget / 2) / spf.TCPShareBytes
	t.Logf("in-flight peak %d bytes of %d; at most %d TCP queries answered at once (budget allows %d)",
		peak, budget, tcpPeak, tcpMax)
	if peak > budget {
		t.Errorf("the resolver held %d bytes in flight at once, over its budget of %d", peak, budget)
	}
	if tcpPeak > tcpMax {
		t.Errorf("the server answered %d TCP queries at once; the budget allows %d", tcpPeak, tcpMax)
	}
	grown := heapAfterGC() - before
	runtime.KeepAlive(r)
	// The cache's default bound, and 16 MB for the rest of the process.
	limit := int64(spf.DefaultCacheBytes + 16<<20)
	if grown > limit {
		t.Errorf("the heap grew by %d bytes over %d checks, more than %d", grown, checks, limit)
	}
}

// TestInflightBudgetWaitsWithinContext checks that a lookup that finds
// the in-flight budget spent sends nothing and waits, and that its
// context ends the wait with a temporary failure, as it ends a wait for a
// slow server: a check at its deadline gives temperror either way.
func TestInflightBudgetWaitsWithinContext(t *testing.T) {
	z := dnstest.NewZone()
	if err := z.Add(`slow.example. 60 IN A 192.0.2.1`, `other.example. 60 IN A 192.0.2.2`); err != nil {
		t.Fatal(err)
	}
	srv := dnstest.StartServer(t, z)
	// The first lookup holds its share until its context ends: the server
	// answers long after.
	srv.SetDelay(time.Minute)
	// A long timeout: the first query is not sent again while the test
	// counts queries.
	r, err := spf.NewDNSResolver(spf.DNSOptions{Servers: []string{srv.Addr()}, Timeout: 10 * time.Minute,
		InflightBytes: spf.UDPShareBytes})
	if err != nil {
		t.Fatal(err)
	}
	holdCtx, release := context.WithCancel(context.Background())
	held := make(chan error, 1)
	go func() {
		_, err := r.LookupA(holdCtx, "slow.example")
		held <- err
	}()
	for deadline := time.Now().Add(time.Minute); r.InflightBytes() == 0 || len(srv.Queries()) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the first lookup never sent its query")
		}
		runtime.Gosched()
	}

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = r.LookupA(ctx, "other.example")
	if !errors.Is(err, context.DeadlineExceeded) || spf.IsNotFound(err) {
		t.Errorf("lookup with the budget spent: %v, want a temporary failure at its deadline", err)
	}
	if n := len(srv.Queries()); n != 1 {
		t.Errorf("the server got %d queries; want 1, the lookup without a share sends none", n)
	}
	release()
	if err := <-held; !errors.Is(err, context.Canceled) {
		t.Errorf("lookup holding the budget: %v, want cancelled", err)
	}
	if got := r.InflightBytes(); got != 0 {
		t.Errorf("%d bytes still held after both lookups ended", got)
	}
}

// BenchmarkHostileZone runs checks against the hostile zone with the
// default bounds, each with a new local part, one at a time and then 100
// at once (Postfix's default_process_limit), and reports what the cache
// accounts, the most the in-flight and record budgets held at once, and
// how much the heap grew (after a collection) over the whole run, in MB:
// the figures the default bounds promise to hold whatever the number of
// messages. The last case, spf=60KiB, reads the 60 KiB record of
// largeRecordZone in every check instead.
func BenchmarkHostileZone(b *testing.B) {
	for _, bc := range []struct {
		addrs, parallel int
		large           bool
	}{{300, 1, false}, {3700, 1, false}, {3700, 100, false}, {0, 100, true}} {
		name := fmt.Sprintf("records=%d", bc.addrs)
		zone, domain := func() *dnstest.Zone { return hostileZone(b, bc.addrs) }, "hostile.example"
		if bc.large {
			name = "spf=60KiB"
			zone, domain = func() *dnstest.Zone { return largeRecordZone(b) }, "s.example"
		}
		if bc.parallel > 1 {
			name += fmt.Sprintf("/parallel=%d", bc.parallel)
		}
		b.Run(name, func(b *testing.B) {
			srv := dnstest.StartServer(b, zone())
			srv.SetCompress(true)
			r, err := spf.NewDNSResolver(spf.DNSOptions{Servers: []string{srv.Addr()}, CacheSize: spf.DefaultCacheSize})
			if err != nil {
				b.Fatal(err)
			}
			before := heapAfterGC()
			b.ResetTimer()
			if bc.parallel == 1 {
				hostileChecks(b, r, b.N, nil)
			} else {
				c := &spf.Checker{Resolver: r, Receiver: "mx.example.net", Timeout: 5 * time.Minute}
				ip := netip.MustParseAddr("192.0.2.1")
				var next atomic.Int64
				var wg sync.WaitGroup
				for range bc.parallel {
					wg.Go(func() {
						for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
							o := c.CheckMailFrom(context.Background(), ip, fmt.Sprintf("u%06d@%s", i, domain), "mail.example")
							if o.Result != spf.Pass {
								b.Errorf("check %d: %s (%s), want pass", i, o.Result, o.Problem)
							}
						}
					})
				}
				wg.Wait()
			}
			b.StopTimer()
			b.ReportMetric(float64(r.CacheBytes())/1e6, "cache-MB")
			b.ReportMetric(float64(r.InflightPeak())/1e6, "inflight-peak-MB")
			b.ReportMetric(float64(r.HeldRecordPeak())/1e6, "held-peak-MB")
			b.ReportMetric(float64(heapAfterGC()-before)/1e6, "heap-growth-MB")
			runtime.KeepAlive(r)
		})
	}
}
