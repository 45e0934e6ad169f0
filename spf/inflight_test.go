package spf

import (
	"context"
	"errors"
	"net"
	"runtime"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// longName returns a name of four labels and 253 octets in presentation
// form, the most there is, each octet label (a letter, or \001 in the
// escaped form miekg/dns reads).
func longName(label string) string {
	var b strings.Builder
	for i, n := range []int{63, 63, 63, 61} {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(strings.Repeat(label, n))
	}
	return b.String() + "."
}

// TestUnpackBoundCoversHeap checks unpackBound against the heap that
// unpacking answers of every shape takes, and that it lets through the
// largest answers of plain names: without a true bound, the in-flight
// budget would bound nothing; with too large a one, it would refuse
// answers that RFC 7208 checks need.
func TestUnpackBoundCoversHeap(t *testing.T) {
	aRR := func(owner string) func(i int) dns.RR {
		return func(i int) dns.RR {
			return &dns.A{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A: net.IPv4(10, 0, byte(i>>8), byte(i))}
		}
	}
	short, long, binary := "x1234567.y.example.", longName("a"), longName(`\001`)
	tests := []struct {
		name   string
		qname  string
		n      int
		answer func(i int) dns.RR
		ns     func(i int) dns.RR // in the authority section
		// accepted is whether the answer is within what unpacking may
		// take of its share.
		accepted bool
	}{
		{"3,700 A", short, 3700, aRR(short), nil, true},
		{"3,700 A under a name of 253 octets", long, 3700, aRR(long), nil, true},
		{"TXT", short, 300, func(i int) dns.RR {
			return &dns.TXT{Hdr: dns.RR_Header{Name: short, Rrtype: dns.TypeTXT, Class: dns.ClassINET},
				Txt: []string{strings.Repeat("a", 100), "", `\001\002"`, strings.Repeat("d", 50)}}
		}, nil, true},
		{"MX", short, 20, func(i int) dns.RR {
			return &dns.MX{Hdr: dns.RR_Header{Name: short, Rrtype: dns.TypeMX, Class: dns.ClassINET},
				Preference: uint16(i), Mx: long}
		}, nil, true},
		{"CNAME and SOA", short, 1, func(i int) dns.RR {
			return &dns.CNAME{Hdr: dns.RR_Header{Name: short, Rrtype: dns.TypeCNAME, Class: dns.ClassINET}, Target: long}
		}, func(i int) dns.RR {
			return &dns.SOA{Hdr: dns.RR_Header{Name: "y.example.", Rrtype: dns.TypeSOA, Class: dns.ClassINET},
				Ns: long, Mbox: "hostmaster." + short, Minttl: 60}
		}, true},
		// NS records are never read: their names, pointers to a name of
		// escapes four bytes an octet, are not unpacked at all.
		{"NS to a name of escapes", binary, 1, aRR(binary), func(i int) dns.RR {
			return &dns.NS{Hdr: dns.RR_Header{Name: "y.example.", Rrtype: dns.TypeNS, Class: dns.ClassINET}, Ns: binary}
		}, true},
		// 2 octets of wire for 1,000 bytes of heap, record after record.
		{"A under a name of escapes", binary, 2000, aRR(binary), nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := new(dns.Msg)
			m.SetQuestion(tt.qname, tt.answer(0).Header().Rrtype)
			m.Response, m.Compress = true, true
			m.SetEdns0(ednsSize, false)
			for i := range tt.n {
				m.Answer = append(m.Answer, tt.answer(i))
				if tt.ns != nil {
					m.Ns = append(m.Ns, tt.ns(i))
				}
			}
			wire, err := m.Pack()
			if err != nil {
				t.Fatal(err)
			}
			bound := unpackBound(wire)
			allowed := unpackBase + unpackFactor*int64(len(wire))
			if accepted := bound <= allowed; accepted != tt.accepted {
				t.Errorf("%d octets bound to %d bytes, %d allowed: accepted = %v, want %v",
					len(wire), bound, allowed, accepted, tt.accepted)
			}
			// Enough copies that the heap's own noise is lost in them.
			copies := max(10, 400_000/len(wire))
			msgs := make([]*dns.Msg, copies)
			before := heapInUse()
			for i := range msgs {
				msgs[i] = new(dns.Msg)
				if err := msgs[i].Unpack(wire); err != nil {
					t.Fatal(err)
				}
			}
			heap := (int64(heapInUse()) - int64(before)) / int64(copies)
			runtime.KeepAlive(msgs)
			t.Logf("%d octets: bound %d bytes, heap %d, allowed %d", len(wire), bound, heap, allowed)
			if heap > bound {
				t.Errorf("unpacking takes %d bytes of heap, more than the bound of %d", heap, bound)
			}
		})
	}
}

// TestReadAnswerShares checks what readAnswer does with answers that do
// not fit their share: a datagram over the advertised size, or one that
// would unpack to more than its share, is asked again over TCP when it is
// the answer and passed over when it is not; over TCP an answer that
// would unpack beyond its share is refused.
func TestReadAnswerShares(t *testing.T) {
	const id = 4242
	msg := func(id uint16, qname string, n int) []byte {
		m := new(dns.Msg)
		m.SetQuestion(qname, dns.TypeA)
		m.Id, m.Response, m.Compress = id, true, true
		for i := range n {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: qname, Rrtype: dns.TypeA, Class: dns.ClassINET},
				A: net.IPv4(10, 0, byte(i>>8), byte(i))})
		}
		wire, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return wire
	}
	binary := longName(`\001`)
	tests := []struct {
		name      string
		udp       bool
		wire      []byte
		truncated bool // read as a truncated answer, to ask over TCP
		err       error
	}{
		{"small datagram", true, msg(id, "a.example.", 3), false, nil},
		{"datagram over the advertised size", true, msg(id, "a.example.", 200), true, nil},
		{"someone else's datagram over the size", true, msg(id+1, "a.example.", 200), false, dns.ErrBuf},
		{"datagram that unpacks too large", true, msg(id, binary, 60), true, nil},
		{"TCP answer", false, msg(id, "a.example.", 3700), false, nil},
		{"TCP answer that unpacks too large", false, msg(id, binary, 3000), false, errAnswerTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.udp {
				client, server := net.Pipe()
				defer client.Close()
				go func() {
					defer server.Close()
					_, _ = server.Write(append([]byte{byte(len(tt.wire) >> 8), byte(len(tt.wire))}, tt.wire...))
				}()
				resp, _, err := readAnswer(&dns.Conn{Conn: client}, false, id)
				check(t, resp, err, tt.truncated, tt.err)
				return
			}
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			c, err := net.Dial("udp", pc.LocalAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := pc.WriteTo(tt.wire, c.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			resp, _, err := readAnswer(&dns.Conn{Conn: c, UDPSize: udpReadSize + 1}, true, id)
			check(t, resp, err, tt.truncated, tt.err)
		})
	}
}

func check(t *testing.T, resp *dns.Msg, err error, truncated bool, wantErr error) {
	t.Helper()
	if wantErr != nil {
		if !errors.Is(err, wantErr) {
			t.Fatalf("err = %v, want %v", err, wantErr)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if resp.Truncated != truncated {
		t.Errorf("truncated = %v, want %v", resp.Truncated, truncated)
	}
}

// TestInflightBudget checks the budget's accounting: shares are taken
// while they fit, TCP shares within half of it, a share larger than
// allowed takes all that is, and a reservation waits for bytes given
// back, or gives up with its context.
func TestInflightBudget(t *testing.T) {
	b := newInflightBudget(1000)
	ctx := context.Background()
	r1, err := b.reserve(ctx, 400, true)
	if err != nil {
		t.Fatal(err)
	}
	// The TCP half is spent: another TCP share waits, and gives up with
	// its context.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b.reserve(cancelled, 200, true); !errors.Is(err, context.Canceled) {
		t.Fatalf("TCP share past half the budget: %v, want to wait", err)
	}
	// UDP shares take the rest.
	r2, err := b.reserve(ctx, 600, false)
	if err != nil {
		t.Fatal(err)
	}
	if b.used != 1000 || b.peak != 1000 {
		t.Fatalf("used %d, peak %d; want 1000, 1000", b.used, b.peak)
	}
	// A share over the budget takes all of it, once all is free.
	got := make(chan reservation)
	go func() {
		r, err := b.reserve(ctx, 5000, false)
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	b.shrink(&r1, 100)
	b.release(&r2)
	b.release(&r1)
	r3 := <-got
	if r3.bytes != 1000 || b.used != 1000 {
		t.Errorf("share over the budget took %d, %d used; want 1000", r3.bytes, b.used)
	}
	b.release(&r3)
	if b.used != 0 || b.tcpUsed != 0 || b.peak != 1000 {
		t.Errorf("after release: used %d, TCP %d, peak %d; want 0, 0, 1000", b.used, b.tcpUsed, b.peak)
	}
}

// FuzzUnpackBound checks that unpackBound never reads outside its input,
// and never stops short of what miekg/dns unpacks: every question and
// record that comes out is within the bound, or the bound would let a
// crafted answer take more than its share.
func FuzzUnpackBound(f *testing.F) {
	for _, qname := range []string{"a.example.", longName("b"), longName(`\001`)} {
		m := new(dns.Msg)
		m.SetQuestion(qname, dns.TypeA)
		m.Response, m.Compress = true, true
		m.SetEdns0(ednsSize, false)
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: qname, Rrtype: dns.TypeA, Class: dns.ClassINET}, A: net.IPv4(192, 0, 2, 1)},
			&dns.CNAME{Hdr: dns.RR_Header{Name: qname, Rrtype: dns.TypeCNAME, Class: dns.ClassINET}, Target: qname},
			&dns.TXT{Hdr: dns.RR_Header{Name: qname, Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: []string{"v=spf1", "\x00\xff"}},
			&dns.SRV{Hdr: dns.RR_Header{Name: qname, Rrtype: dns.TypeSRV, Class: dns.ClassINET}, Target: qname})
		m.Ns = append(m.Ns, &dns.SOA{Hdr: dns.RR_Header{Name: "example.", Rrtype: dns.TypeSOA, Class: dns.ClassINET}, Ns: qname, Mbox: qname})
		wire, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(wire)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		p = append([]byte(nil), p...)
		bound := unpackBound(p)
		m := new(dns.Msg)
		if err := m.Unpack(p); err != nil {
			return
		}
		sum := int64(msgHeap)
		for _, q := range m.Question {
			sum += int64(len(q.Name))
		}
		for _, section := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
			for _, rr := range section {
				sum += rrHeap + int64(len(rr.Header().Name))
			}
		}
		if sum > bound {
			t.Errorf("%d questions and %d records unpacked, %d bytes at least; bound %d",
				len(m.Question), len(m.Answer)+len(m.Ns)+len(m.Extra), sum, bound)
		}
	})
}
