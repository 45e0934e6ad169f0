package spf_test

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spf-milter/spf-milter/internal/dnstest"
	"github.com/spf-milter/spf-milter/spf"
)

// largeRecordZone is the zone of an owner who makes each check hold
// megabytes: s.example includes big.example, a record of about 60 KiB of
// ip4 terms (some 4,700, every one evaluated and traced: about 1 MB of
// heap once parsed, which the record budget is charged 1.9 MB for), which ends in an a term on a name of the sender's local
// part, so that every check waits for its own answer while it holds the
// record. Its addresses are 192.0.2.1 only. two.example includes that
// record twice, under two names.
func largeRecordZone(t testing.TB) *dnstest.Zone {
	t.Helper()
	var rec strings.Builder
	rec.WriteString("v=spf1")
	for i := 0; rec.Len() < 60<<10; i++ {
		fmt.Fprintf(&rec, " ip4:10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff)
	}
	rec.WriteString(" a:%{l}.w.example -all")
	var strs []string
	for s := rec.String(); s != ""; {
		n := min(len(s), 255)
		strs = append(strs, s[:n])
		s = s[n:]
	}
	z := dnstest.NewZone()
	z.AddTXT("big.example", strs...)
	z.AddTXT("big2.example", strs...)
	if err := z.Add(
		`s.example. 86400 IN TXT "v=spf1 include:big.example -all"`,
		`two.example. 86400 IN TXT "v=spf1 include:big.example include:big2.example -all"`,
		`*.w.example. 86400 IN A 192.0.2.1`,
	); err != nil {
		t.Fatal(err)
	}
	return z
}

// liveHeapPeak samples the live heap, as the last collection measured it,
// until stop is closed, and returns the most it saw.
func liveHeapPeak(stop <-chan struct{}) <-chan int64 {
	peak := make(chan int64, 1)
	go func() {
		s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		var most int64
		for {
			metrics.Read(s)
			most = max(most, int64(s[0].Value.Uint64()))
			select {
			case <-stop:
				peak <- most
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	return peak
}

// TestHeldRecordBudgetAgainstLargeRecords runs 150 checks at once whose
// include chain reaches a record of 60 KiB of short terms, each check
// waiting on DNS while it holds that record, with the cache and without
// (the record's parse is too large to keep either way), through a
// resolver with a small record budget. Every check gets its RFC 7208
// result; the budget accounts no more than it holds, and the live heap
// grows by no more than the budget and what a check waiting for it holds
// (the texts of one answer). Without the budget every check holds its
// parsed record and trace at the same moment: some 140 MB.
func TestHeldRecordBudgetAgainstLargeRecords(t *testing.T) {
	const (
		budget = 8 << 20
		checks = 150
		// waiting bounds what a check waiting for the budget holds: the
		// texts of the answer it waits to charge (60 KiB), its
		// goroutine and its own small state.
		waiting = 128 << 10
		// rest covers the test process beside the checks: the server's
		// zone and buffers, the in-flight answers, the collector.
		rest = 24 << 20
	)
	for _, cacheSize := range []int{0, spf.DefaultCacheSize} {
		t.Run(fmt.Sprintf("cache=%d", cacheSize), func(t *testing.T) {
			srv := dnstest.StartServer(t, largeRecordZone(t))
			srv.SetCompress(true)
			// Checks overlap, and wait on their own a term while they
			// hold the record, however fast the machine.
			srv.SetDelay(20 * time.Millisecond)
			r, err := spf.NewDNSResolver(spf.DNSOptions{Servers: []string{srv.Addr()},
				CacheSize: cacheSize, HeldRecordBytes: budget})
			if err != nil {
				t.Fatal(err)
			}
			// Generous: the checks wait for one another's records, slowly
			// under the race detector.
			c := &spf.Checker{Resolver: r, Receiver: "mx.example.net", Timeout: 5 * time.Minute}
			listed, unlisted := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")

			before := heapAfterGC()
			stop := make(chan struct{})
			peak := liveHeapPeak(stop)
			var wrong atomic.Int64
			var wg sync.WaitGroup
			for i := range checks {
				ip, want := listed, spf.Pass
				if i%2 == 1 {
					ip, want = unlisted, spf.Fail
				}
				wg.Go(func() {
					o := c.CheckMailFrom(context.Background(), ip, fmt.Sprintf("u%04d@s.example", i), "mail.example")
					if o.Result != want && wrong.Add(1) <= 5 {
						t.Errorf("check %d from %s: %s (%s), want %s", i, ip, o.Result, o.Problem, want)
					}
				})
			}
			wg.Wait()
			close(stop)
			grown := <-peak - before
			runtime.KeepAlive(r)

			if got := r.HeldRecordBytes(); got != 0 {
				t.Errorf("%d bytes of the record budget still held after every check returned", got)
			}
			held := r.HeldRecordPeak()
			limit := int64(budget + checks*waiting + rest)
			t.Logf("record budget peak %d bytes of %d; live heap grew by %d at most (limit %d)", held, budget, grown, limit)
			if held > budget {
				t.Errorf("checks held %d bytes of records at once, over the budget of %d", held, budget)
			}
			if held == 0 {
				t.Error("no check charged its records to the budget")
			}
			if grown > limit {
				t.Errorf("the live heap grew by %d bytes while the checks ran, more than %d", grown, limit)
			}
		})
	}
}

// TestHeldRecordBudgetWaitsWithinContext checks that a check finding the
// record budget spent waits, and that its deadline ends the wait with
// temperror, as a wait for a slow server ends; that what a check held is
// given back however it ended; and that a check whose records could never
// be held together ends temperror at once instead of waiting for room
// that cannot come.
func TestHeldRecordBudgetWaitsWithinContext(t *testing.T) {
	z := largeRecordZone(t)
	if err := z.Add(`small.example. 86400 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"`); err != nil {
		t.Fatal(err)
	}
	z.Timeout("hold.w.example")
	srv := dnstest.StartServer(t, z)
	srv.SetCompress(true)
	// A budget that one large record takes all it may of.
	r, err := spf.NewDNSResolver(spf.DNSOptions{Servers: []string{srv.Addr()}, Timeout: 10 * time.Minute,
		CacheSize: spf.DefaultCacheSize, HeldRecordBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	c := &spf.Checker{Resolver: r, Timeout: 10 * time.Minute}
	listed, unlisted := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")

	// This check holds the large record while its a term waits for a
	// server that never answers, until it is cancelled.
	holdCtx, release := context.WithCancel(context.Background())
	held := make(chan *spf.Outcome, 1)
	go func() { held <- c.CheckMailFrom(holdCtx, listed, "hold@s.example", "mail.example") }()
	for deadline := time.Now().Add(5 * time.Second); r.HeldRecordBytes() < 512<<10; {
		if time.Now().After(deadline) {
			select {
			case o := <-held:
				t.Fatalf("the first check ended: %s (%s)", o.Result, o.Problem)
			default:
			}
			t.Fatalf("the first check never charged the large record (%d bytes held)", r.HeldRecordBytes())
		}
		time.Sleep(time.Millisecond)
	}

	short := &spf.Checker{Resolver: r, Timeout: 200 * time.Millisecond}
	if o := short.CheckMailFrom(context.Background(), listed, "u@s.example", "mail.example"); o.Result != spf.TempError {
		t.Errorf("check with the budget spent: %s (%s), want temperror at its deadline", o.Result, o.Problem)
	}
	// Small records have their own part of the budget.
	if o := short.CheckMailFrom(context.Background(), listed, "u@small.example", "mail.example"); o.Result != spf.Pass {
		t.Errorf("check of a small record with the large part spent: %s (%s), want pass", o.Result, o.Problem)
	}
	release()
	if o := <-held; o.Result != spf.TempError {
		t.Errorf("cancelled check: %s (%s), want temperror", o.Result, o.Problem)
	}
	if got := r.HeldRecordBytes(); got != 0 {
		t.Errorf("%d bytes still held after the checks ended", got)
	}
	if o := c.CheckMailFrom(context.Background(), listed, "u@s.example", "mail.example"); o.Result != spf.Pass {
		t.Errorf("check with the budget free: %s (%s), want pass", o.Result, o.Problem)
	}
	// two.example needs both large records at once, and the budget has
	// room for one: waiting would last until the deadline, ten minutes.
	o := c.CheckMailFrom(context.Background(), unlisted, "u@two.example", "mail.example")
	if o.Result != spf.TempError || !strings.Contains(o.Problem, "would take more than") {
		t.Errorf("check of two large records: %s (%s), want temperror for their size", o.Result, o.Problem)
	}
	if got := r.HeldRecordBytes(); got != 0 {
		t.Errorf("%d bytes still held after every check ended", got)
	}
}
