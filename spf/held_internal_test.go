package spf

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"testing"
)

// txtOnly answers TXT questions from a map and says every other name has
// no records: the checks of TestHeldRecordBytesCoverHeap spend no time
// and hold nothing in DNS beside their records.
type txtOnly map[string]string

func (m txtOnly) LookupTXT(_ context.Context, name string) ([]string, error) {
	if t, ok := m[name]; ok {
		return []string{t}, nil
	}
	return nil, &DNSError{Name: name, Type: "TXT", Err: ErrNXDomain}
}

func (txtOnly) LookupA(_ context.Context, name string) ([]netip.Addr, error) {
	return nil, &DNSError{Name: name, Type: "A", Err: ErrNXDomain}
}

func (txtOnly) LookupAAAA(_ context.Context, name string) ([]netip.Addr, error) {
	return nil, &DNSError{Name: name, Type: "AAAA", Err: ErrNXDomain}
}

func (txtOnly) LookupMX(_ context.Context, name string) ([]string, error) {
	return nil, &DNSError{Name: name, Type: "MX", Err: ErrNXDomain}
}

func (txtOnly) LookupPTR(_ context.Context, addr netip.Addr) ([]string, error) {
	return nil, &DNSError{Name: addr.String(), Type: "PTR", Err: ErrNXDomain}
}

// TestHeldRecordBytesCoverHeap checks heldTXTBytes against the heap that
// checks of records of every shape hold: the parsed record (kept here by
// the Checker's cache, as a check keeps it on its stack), its text and
// the trace its evaluation wrote. What any check holds whatever its
// record (the Outcome and the trace's first array) is measured on checks
// of a domain without a record and taken off: the estimate is for the
// records.
func TestHeldRecordBytesCoverHeap(t *testing.T) {
	var ip4s strings.Builder
	for i := 0; ip4s.Len() < 60<<10; i++ {
		fmt.Fprintf(&ip4s, " ip4:10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff)
	}
	records := []string{
		"v=spf1 -all",
		"v=spf1 ip4:192.0.2.0/24 include:_spf.example.com ~all",
		"v=spf1" + strings.Repeat(" ip4:10.0.0.0/16", 40) + " -all",
		// Every term evaluated, each a step of the trace.
		"v=spf1" + ip4s.String() + " -all",
		"v=spf1" + strings.Repeat(" ?ip6:2001:db8::/32", 3000),
		// One-letter terms: the most a parsed record takes an octet;
		// only ten are evaluated.
		"v=spf1" + strings.Repeat(" a", 30000),
		"v=spf1" + strings.Repeat(" a:%{d}", 500),
		"v=spf1 " + strings.Repeat("x", 3000) + "=1",
		"v=spf1 bogus:" + strings.Repeat("y", 2000),
	}
	ip := netip.MustParseAddr("192.0.2.1")
	for i, txt := range records {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			copies := max(6, 200_000/len(txt))
			zone := txtOnly{}
			for j := range copies {
				// Distinct texts, as a record parsed once is kept once.
				zone[fmt.Sprintf("d%d.example", j)] = txt + fmt.Sprintf(" x%d=1", j)
			}
			c := &Checker{Resolver: zone}
			c.records.Store(newRecordCache(1 << 40))
			bases, outs := make([]*Outcome, copies), make([]*Outcome, copies)

			before := heapInUse()
			for j := range bases {
				bases[j] = c.CheckMailFrom(context.Background(), ip, "u@none.example", "h.example")
			}
			middle := heapInUse()
			base := int64(middle) - int64(before)
			var accounted int64
			for j := range outs {
				d := fmt.Sprintf("d%d.example", j)
				outs[j] = c.CheckMailFrom(context.Background(), ip, "u@"+d, "h.example")
				// The texts were on the heap before: the check holds
				// them, and the estimate must count them.
				accounted += heldTXTBytes([]string{zone[d]}, func(string) bool { return false })
			}
			heap := int64(heapInUse()) - int64(middle) - base
			for _, t := range zone {
				heap += int64(len(t))
			}
			runtime.KeepAlive(bases)
			runtime.KeepAlive(outs)
			runtime.KeepAlive(c)
			t.Logf("%d checks of records of %d octets (%s): accounted %d bytes, heap %d",
				copies, len(txt), outs[0].Result, accounted, heap)
			if heap > accounted {
				t.Errorf("the records take %d bytes of heap, more than the %d accounted", heap, accounted)
			}
		})
	}
}

// TestHeldRecordBudgetAdmitsAnyAnswer checks that the default record
// budget admits what the worst TXT answer a DNS message can carry is
// charged: a check is never refused for the size of one record, only
// made to wait for others to end.
func TestHeldRecordBudgetAdmitsAnyAnswer(t *testing.T) {
	const size = 1 << 16 // more text than a DNS message can carry
	spf := func(body string) string { return "v=spf1" + body[:size-6] }
	answers := map[string][]string{
		"terms and macros":  {spf(strings.Repeat(" %", size))},
		"spaces":            {spf(strings.Repeat(" ", size))},
		"one-letter terms":  {spf(strings.Repeat(" a", size))},
		"macros":            {spf(" " + strings.Repeat("%%", size))},
		"records of v=spf1": slicesOf("v=spf1", size/6),
		"records of x":      slicesOf("x", size),
	}
	if b := newHeldBudget(DefaultHeldRecordBytes); maxHeldAnswer > b.tcpMax {
		t.Errorf("an answer may be charged %d bytes, over the %d the default budget gives large records", int64(maxHeldAnswer), b.tcpMax)
	}
	for name, txts := range answers {
		got := heldTXTBytes(txts, func(string) bool { return false })
		t.Logf("%s: %d bytes", name, got)
		if got > maxHeldAnswer {
			t.Errorf("%s: charged %d bytes, over maxHeldAnswer (%d)", name, got, int64(maxHeldAnswer))
		}
	}
}

func slicesOf(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}
