package spf

import (
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/spf-milter/spf-milter/internal/lru"
)

// heapInUse returns the bytes of live heap objects after a full
// collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestDNSCacheBytesCoverHeap checks the estimates of msgBytes against the
// heap: keeping many answers of each shape must not take more than the
// cache accounts for them, or the byte bound would not bound memory. It
// also checks the estimate is not so pessimistic that the cache holds
// far fewer answers than its bound allows.
func TestDNSCacheBytesCoverHeap(t *testing.T) {
	owner := "x1234567.y.example."
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: owner, Rrtype: t, Class: dns.ClassINET, Ttl: 86400}
	}
	shapes := []struct {
		name string
		n    int // records in the answer
		rr   func(i int) dns.RR
	}{
		{"A", 1, func(i int) dns.RR { return &dns.A{Hdr: hdr(dns.TypeA), A: net.IPv4(10, 0, byte(i>>8), byte(i))} }},
		{"A", 3700, func(i int) dns.RR { return &dns.A{Hdr: hdr(dns.TypeA), A: net.IPv4(10, 0, byte(i>>8), byte(i))} }},
		{"AAAA", 1000, func(i int) dns.RR {
			return &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: net.ParseIP(fmt.Sprintf("2001:db8::%x", i))}
		}},
		{"MX", 20, func(i int) dns.RR {
			return &dns.MX{Hdr: hdr(dns.TypeMX), Preference: 10, Mx: fmt.Sprintf("mx%d.y.example.", i)}
		}},
		{"PTR", 200, func(i int) dns.RR { return &dns.PTR{Hdr: hdr(dns.TypePTR), Ptr: fmt.Sprintf("host%d.y.example.", i)} }},
		{"TXT", 1, func(i int) dns.RR { return &dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: []string{"v=spf1 -all"}} }},
		{"TXT", 300, func(i int) dns.RR {
			return &dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: []string{strings.Repeat("a", 100), "b", "c", strings.Repeat("d", 50)}}
		}},
		{"CNAME", 1, func(i int) dns.RR { return &dns.CNAME{Hdr: hdr(dns.TypeCNAME), Target: "target.example."} }},
	}
	for _, sh := range shapes {
		t.Run(fmt.Sprintf("%s×%d", sh.name, sh.n), func(t *testing.T) {
			m := new(dns.Msg)
			m.SetQuestion(owner, sh.rr(0).Header().Rrtype)
			m.Response, m.Compress = true, true
			for i := range sh.n {
				m.Answer = append(m.Answer, sh.rr(i))
			}
			wire, err := m.Pack()
			if err != nil {
				t.Fatal(err)
			}
			// Enough copies that the heap's own noise is lost in them,
			// few enough for a quick test.
			copies := max(10, 200_000/len(wire))
			c := newAnswerCache(copies, 1<<40)
			keys := make([]string, copies)
			for i := range keys {
				keys[i] = dnsKeyLike(i)
			}
			expires := time.Now().Add(time.Hour)
			before := heapInUse()
			for i := range copies {
				msg := new(dns.Msg)
				if err := msg.Unpack(wire); err != nil {
					t.Fatal(err)
				}
				k := cacheKey{keys[i], m.Question[0].Qtype}
				kept := cacheable(msg)
				if !c.Add(k, kept, msgBytes(k.name, kept), expires) {
					t.Fatal("not kept")
				}
			}
			heap := int64(heapInUse()) - int64(before)
			runtime.KeepAlive(c)
			accounted := c.Bytes()
			t.Logf("%d answers of %d octets: accounted %d bytes, heap %d", copies, len(wire), accounted, heap)
			if heap > accounted {
				t.Errorf("the answers take %d bytes of heap, more than the %d accounted", heap, accounted)
			}
			if accounted > 4*heap {
				t.Errorf("accounted %d bytes for %d of heap: the bound would keep too little", accounted, heap)
			}
		})
	}
}

// dnsKeyLike returns a distinct cache key of a usual length, made before
// the heap is measured.
func dnsKeyLike(i int) string { return fmt.Sprintf("\x08k%07d\x01y\x07example\x00", i) }

// TestRecordBytesCoverHeap checks recordBytes against the heap that
// parsed records of every shape take: terms as short as can be, macros,
// long lists, records that do not parse.
func TestRecordBytesCoverHeap(t *testing.T) {
	var ip4s, incs strings.Builder
	for i := range 40 {
		fmt.Fprintf(&ip4s, " ip4:10.%d.0.0/16", i)
		fmt.Fprintf(&incs, " include:%%{l}.x%d.example.com", i)
	}
	records := []string{
		"v=spf1 -all",
		"v=spf1 ip4:192.0.2.0/24 include:_spf.example.com ~all",
		"v=spf1" + ip4s.String() + " -all",
		"v=spf1" + incs.String() + " exp=%{d}.exp.example redirect=_spf.%{d2}",
		"v=spf1" + strings.Repeat(" a", 1000),
		"v=spf1" + strings.Repeat(" mx", 1000),
		"v=spf1" + strings.Repeat(" a:%{d}", 500),
		"v=spf1" + strings.Repeat(" ?exists:%{ir}.%{v}._spf.%{d}", 200),
		"v=spf1" + strings.Repeat(" ip6:2001:db8::/32", 500),
		"v=spf1 " + strings.Repeat("x", 3000) + "=1",
		"v=spf1 bogus:" + strings.Repeat("y", 2000),
	}
	for i, txt := range records {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			copies := max(20, 400_000/len(txt))
			// Distinct texts, as the cache keeps one per text: a space
			// more at the end parses the same.
			txts := make([]string, copies)
			for j := range txts {
				txts[j] = txt + strings.Repeat(" ", j%7) + fmt.Sprintf(" x%d=1", j)
			}
			c := newRecordCache(1 << 40)
			now := time.Now()
			before := heapInUse()
			for _, s := range txts {
				_, _ = c.parse(s, now.Add(time.Hour), now)
			}
			heap := int64(heapInUse()) - int64(before)
			n, accounted := c.size()
			runtime.KeepAlive(c)
			if n != copies {
				t.Fatalf("kept %d of %d records", n, copies)
			}
			// The texts were on the heap before: the cache keeps them,
			// and the bound must count them.
			var texts int64
			for _, s := range txts {
				texts += int64(len(s))
			}
			heap += texts
			t.Logf("%d records of %d octets: accounted %d bytes, heap %d", copies, len(txt), accounted, heap)
			if heap > accounted {
				t.Errorf("the records take %d bytes of heap, more than the %d accounted", heap, accounted)
			}
		})
	}
}

// TestRecordCacheLifetime checks that a parsed record is served no
// longer than the answer it came in, and that the byte bound holds.
func TestRecordCacheLifetime(t *testing.T) {
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	const a, b, c = "v=spf1 -all", "v=spf1 ?all", "v=spf1 +all"
	type step struct {
		txt     string
		until   time.Time
		now     time.Time
		same    bool // the record parsed at the previous step of txt is served
		records int  // kept after the step
	}
	tests := []struct {
		name     string
		maxBytes int64
		steps    []step
	}{
		{"served until its answer expires", 1 << 20, []step{
			{a, t0.Add(time.Minute), t0, false, 1},
			{a, t0.Add(time.Minute), t0.Add(59 * time.Second), true, 1},
			// The answer is gone: so is the record, parsed anew.
			{a, t0.Add(2 * time.Minute), t0.Add(time.Minute), false, 1},
		}},
		{"a fresher answer keeps it longer", 1 << 20, []step{
			{a, t0.Add(time.Minute), t0, false, 1},
			{a, t0.Add(time.Hour), t0.Add(30 * time.Second), true, 1},
			{a, t0.Add(time.Hour), t0.Add(30 * time.Minute), true, 1},
		}},
		{"an answer not kept leaves its record unkept", 1 << 20, []step{
			{a, t0, t0, false, 0},
			{a, t0, t0, false, 0},
		}},
		{"a record over its share of the bound is not kept", lru.EntryShare*recordBytes(a) - 1, []step{
			{a, t0.Add(time.Hour), t0, false, 0},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newRecordCache(tt.maxBytes)
			last := map[string]*Record{}
			for i, st := range tt.steps {
				rec, err := rc.parse(st.txt, st.until, st.now)
				if err != nil {
					t.Fatal(err)
				}
				if same := rec == last[st.txt]; same != st.same {
					t.Errorf("step %d: served the earlier parse = %v, want %v", i, same, st.same)
				}
				last[st.txt] = rec
				n, bytes := rc.size()
				if n != st.records {
					t.Errorf("step %d: %d records kept, want %d", i, n, st.records)
				}
				if bytes > tt.maxBytes {
					t.Errorf("step %d: %d bytes accounted, over %d", i, bytes, tt.maxBytes)
				}
			}
		})
	}
}

// TestAnswerCacheBytes checks the byte bound of the answer cache: the
// least recently used answers go while it is passed, and an answer over
// its share is not kept and leaves the cache as it was.
func TestAnswerCacheBytes(t *testing.T) {
	answer := func(n int) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion("n.example.", dns.TypeA)
		for i := range n {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: "n.example.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A: net.IPv4(192, 0, 2, byte(i))})
		}
		return m
	}
	key := func(i int) cacheKey { return cacheKey{fmt.Sprintf("k%02d", i), dns.TypeA} }
	one := msgBytes(key(0).name, answer(1))
	expires := time.Now().Add(time.Hour)
	// A bound of lru.EntryShare answers of one record: each may be kept,
	// and the bound holds lru.EntryShare of them.
	bound := lru.EntryShare * one
	tests := []struct {
		name string
		puts []int // keys put in order, each with one record; negative: -k with 100 records
		want int   // answers held after
		gone []int // keys not held after
	}{
		{"within the bound", []int{1, 2, 3}, 3, nil},
		{"past the bound, least recently used out", append(seq(0, lru.EntryShare), 0, lru.EntryShare), lru.EntryShare, []int{1}},
		{"replaced, not counted twice", []int{1, 2, 1, 1}, 2, nil},
		{"too big for its share, not kept", []int{1, -1, -2}, 1, []int{2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newAnswerCache(1000, bound)
			for _, k := range tt.puts {
				n := 1
				if k < 0 {
					k, n = -k, 100
				}
				msg := answer(n)
				c.Add(key(k), msg, msgBytes(key(k).name, msg), expires)
			}
			if c.Len() != tt.want {
				t.Errorf("held %d answers, want %d", c.Len(), tt.want)
			}
			for _, k := range tt.gone {
				if _, _, ok := c.Peek(key(k), time.Time{}); ok {
					t.Errorf("holds %v", key(k))
				}
			}
			if c.Bytes() > bound {
				t.Errorf("accounted %d bytes, bound %d", c.Bytes(), bound)
			}
		})
	}
}

// seq returns from, from+1, ..., to-1.
func seq(from, to int) []int {
	var s []int
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

// TestRecordCacheLRU checks that past its byte bound the record cache
// lets the least recently used record go.
func TestRecordCacheLRU(t *testing.T) {
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	txt := func(i int) string { return fmt.Sprintf("v=spf1 a:h%02d.example -all", i) }
	size := recordBytes(txt(0))
	rc := newRecordCache(lru.EntryShare * size)
	first, err := rc.parse(txt(0), t0.Add(time.Hour), t0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < lru.EntryShare; i++ {
		_, _ = rc.parse(txt(i), t0.Add(time.Hour), t0)
	}
	// The first is used again, and a new one comes: the second goes.
	if again, _ := rc.parse(txt(0), t0.Add(time.Hour), t0); again != first {
		t.Error("the first record was parsed anew while the bound held it")
	}
	_, _ = rc.parse(txt(lru.EntryShare), t0.Add(time.Hour), t0)
	n, bytes := rc.size()
	if n != lru.EntryShare || bytes > lru.EntryShare*size {
		t.Errorf("%d records in %d bytes, want %d within %d", n, bytes, lru.EntryShare, lru.EntryShare*size)
	}
	second, firstKept := rc.holds(txt(1)), rc.holds(txt(0))
	if second || !firstKept {
		t.Errorf("second kept %v, first kept %v; want the second gone, the first kept", second, firstKept)
	}
}
