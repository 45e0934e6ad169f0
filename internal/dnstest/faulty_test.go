package dnstest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/goleak"
)

// faultyZone has a small TXT record and one too large for any DNS message.
func faultyZone(t *testing.T) *Zone {
	t.Helper()
	z := NewZone()
	z.AddTXT("small.test", "v=spf1 -all")
	// 300 records of 255 octets: about 80 KB of answer.
	for i := range 300 {
		z.AddTXT("huge.test", fmt.Sprintf("%03d", i)+strings.Repeat("x", 252))
	}
	if err := z.Add(`alias.test. CNAME alias2.test.`, `alias2.test. CNAME small.test.`); err != nil {
		t.Fatal(err)
	}
	return z
}

func txtQuery(name string) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	m.SetEdns0(1232, false)
	return m
}

// rawUDP sends q from an unconnected socket, so that a reply from any
// address is seen, and returns the first datagram to come within 300ms
// and where it came from.
func rawUDP(t *testing.T, addr string, q *dns.Msg) ([]byte, net.Addr, error) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	wire, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	to, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.WriteTo(wire, to); err != nil {
		t.Fatal(err)
	}
	_ = pc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, dns.MaxMsgSize)
	n, from, err := pc.ReadFrom(buf)
	if err != nil {
		return nil, nil, err
	}
	return buf[:n], from, nil
}

// rawTCP sends q over a new connection and returns every octet that comes
// back until the server closes the connection (closed true) or 300ms pass
// without one.
func rawTCP(t *testing.T, addr string, q *dns.Msg) (got []byte, closed bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	wire, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	if err := writeTCP(c, wire, -1); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return got, errors.Is(err, io.EOF)
		}
	}
}

// tcpMessage splits what rawTCP got into the announced length and the
// message after it.
func tcpMessage(t *testing.T, got []byte) (int, []byte) {
	t.Helper()
	if len(got) < 2 {
		t.Fatalf("got %d octets over TCP, want a length prefix at least", len(got))
	}
	return int(binary.BigEndian.Uint16(got)), got[2:]
}

func unpack(t *testing.T, wire []byte) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	if err := m.Unpack(wire); err != nil {
		t.Fatalf("reply does not unpack: %v", err)
	}
	return m
}

// isAnswer fails unless m answers q with the record of small.test.
func isAnswer(t *testing.T, m, q *dns.Msg) {
	t.Helper()
	if m.Id != q.Id || !m.Response || m.Rcode != dns.RcodeSuccess || m.Truncated || len(m.Answer) != 1 ||
		m.Question[0].Name != q.Question[0].Name {
		t.Errorf("got %v, want the answer to %v", m, q.Question[0])
	}
}

func TestFaultyServerUDP(t *testing.T) {
	z := faultyZone(t)
	tests := []struct {
		fault Fault
		check func(t *testing.T, wire []byte, from net.Addr, err error, q *dns.Msg, server string)
	}{
		{Answer, func(t *testing.T, wire []byte, from net.Addr, err error, q *dns.Msg, server string) {
			if err != nil || from.String() != server {
				t.Fatalf("reply from %v, %v; want one from %s", from, err, server)
			}
			isAnswer(t, unpack(t, wire), q)
		}},
		{Silent, func(t *testing.T, wire []byte, from net.Addr, err error, q *dns.Msg, server string) {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Errorf("got %d octets, %v; want nothing", len(wire), err)
			}
		}},
		{ServFail, rcodeCheck(dns.RcodeServerFailure)},
		{Refused, rcodeCheck(dns.RcodeRefused)},
		{Truncated, func(t *testing.T, wire []byte, from net.Addr, err error, q *dns.Msg, server string) {
			if err != nil {
				t.Fatal(err)
			}
			if m := unpack(t, wire); !m.Truncated || len(m.Answer) != 0 || m.Id != q.Id {
				t.Errorf("got %v, want an empty answer with TC", m)
			}
		}},
		{Garbage, func(t *testing.T, wire []byte, from net.Addr, err error, q *dns.Msg, server string) {
			if err != nil {
				t.Fatal(err)
			}
			if m := new(dns.Msg); m.Unpack(wire) == nil || binary.BigEndian.Uint16(wire) != q.Id {
				t.Errorf("got % x, want octets that do not unpack after the query's ID", wire)
			}
		}},
		{WrongID, func(t *testing.T, wire []byte, from net.Addr, err error, q *dns.Msg, server string) {
			if err != nil {
				t.Fatal(err)
			}
			if m := unpack(t, wire); m.Id == q.Id || len(m.Answer) != 1 {
				t.Errorf("got %v, want the answer under another ID than %d", m, q.Id)
			}
		}},
		{WrongQuestion, func(t *testing.T, wire []byte, from net.Addr, err error, q *dns.Msg, server string) {
			if err != nil {
				t.Fatal(err)
			}
			if m := unpack(t, wire); m.Id != q.Id || m.Question[0].Name == q.Question[0].Name || len(m.Answer) == 0 {
				t.Errorf("got %v, want an answer for another name than %s", m, q.Question[0].Name)
			}
		}},
		{WrongPort, wrongSourceCheck(func(from, server *net.UDPAddr) bool { return from.IP.Equal(server.IP) && from.Port != server.Port })},
		{WrongAddr, wrongSourceCheck(func(from, server *net.UDPAddr) bool { return !from.IP.Equal(server.IP) })},
	}
	for _, tt := range tests {
		t.Run(tt.fault.String(), func(t *testing.T) {
			s := StartFaultyServer(t, z)
			s.SetBehaviour(Behaviour{UDP: tt.fault})
			q := txtQuery("small.test")
			wire, from, err := rawUDP(t, s.Addr(), q)
			tt.check(t, wire, from, err, q, s.Addr())
			if qs := s.Queries(); len(qs) != 1 || qs[0] != (Query{Name: "small.test.", Type: dns.TypeTXT, Net: "udp"}) {
				t.Errorf("server counted %v, want the one query", qs)
			}
		})
	}
}

func rcodeCheck(rcode int) func(*testing.T, []byte, net.Addr, error, *dns.Msg, string) {
	return func(t *testing.T, wire []byte, from net.Addr, err error, q *dns.Msg, server string) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if m := unpack(t, wire); m.Rcode != rcode || len(m.Answer) != 0 || m.Id != q.Id {
			t.Errorf("got %v, want %s", m, dns.RcodeToString[rcode])
		}
	}
}

// wrongSourceCheck wants the right answer from an address that ok accepts
// as wrong.
func wrongSourceCheck(ok func(from, server *net.UDPAddr) bool) func(*testing.T, []byte, net.Addr, error, *dns.Msg, string) {
	return func(t *testing.T, wire []byte, from net.Addr, err error, q *dns.Msg, server string) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		srv, _ := net.ResolveUDPAddr("udp", server)
		if f, _ := from.(*net.UDPAddr); f == nil || !ok(f, srv) {
			t.Errorf("reply from %v (server %s): not from the wrong source", from, server)
		}
		isAnswer(t, unpack(t, wire), q)
	}
}

func TestFaultyServerTCP(t *testing.T) {
	z := faultyZone(t)
	tests := []struct {
		fault Fault
		name  string // asked for
		check func(t *testing.T, got []byte, closed bool, q *dns.Msg)
	}{
		{Answer, "small.test", func(t *testing.T, got []byte, closed bool, q *dns.Msg) {
			n, msg := tcpMessage(t, got)
			if n != len(msg) || closed {
				t.Fatalf("length %d for %d octets, closed %v", n, len(msg), closed)
			}
			isAnswer(t, unpack(t, msg), q)
		}},
		{Answer, "huge.test", func(t *testing.T, got []byte, closed bool, q *dns.Msg) {
			n, msg := tcpMessage(t, got)
			m := unpack(t, msg)
			if n != len(msg) || n > dns.MaxMsgSize || !m.Truncated || len(m.Answer) == 0 || len(m.Answer) >= 300 {
				t.Errorf("length %d for %d octets, TC %v, %d records; want at most 65535 octets, TC, some records",
					n, len(msg), m.Truncated, len(m.Answer))
			}
		}},
		{Silent, "small.test", func(t *testing.T, got []byte, closed bool, q *dns.Msg) {
			if len(got) != 0 || closed {
				t.Errorf("got %d octets, closed %v; want an open, silent connection", len(got), closed)
			}
		}},
		{CloseConn, "small.test", func(t *testing.T, got []byte, closed bool, q *dns.Msg) {
			if len(got) != 0 || !closed {
				t.Errorf("got %d octets, closed %v; want the connection closed", len(got), closed)
			}
		}},
		{ShortLength, "small.test", func(t *testing.T, got []byte, closed bool, q *dns.Msg) {
			n, msg := tcpMessage(t, got)
			if n != dns.MaxMsgSize || len(msg) >= n || !closed {
				t.Fatalf("length %d, %d octets, closed %v; want 65535 announced, fewer sent, closed", n, len(msg), closed)
			}
			isAnswer(t, unpack(t, msg), q)
		}},
		{LengthWrap, "huge.test", func(t *testing.T, got []byte, closed bool, q *dns.Msg) {
			n, msg := tcpMessage(t, got)
			if len(msg) <= dns.MaxMsgSize || n != len(msg)%65536 || closed {
				t.Fatalf("length %d for %d octets; want an answer over 65535 octets, its size modulo 65536 announced", n, len(msg))
			}
			if m := unpack(t, msg); len(m.Answer) != 300 || m.Truncated {
				t.Errorf("%d records, TC %v; want all 300", len(m.Answer), m.Truncated)
			}
		}},
		{ServFail, "small.test", func(t *testing.T, got []byte, closed bool, q *dns.Msg) {
			if _, msg := tcpMessage(t, got); unpack(t, msg).Rcode != dns.RcodeServerFailure {
				t.Errorf("got %v, want SERVFAIL", unpack(t, msg))
			}
		}},
		{Truncated, "small.test", func(t *testing.T, got []byte, closed bool, q *dns.Msg) {
			if _, msg := tcpMessage(t, got); !unpack(t, msg).Truncated {
				t.Errorf("got %v, want TC", unpack(t, msg))
			}
		}},
		{Garbage, "small.test", func(t *testing.T, got []byte, closed bool, q *dns.Msg) {
			n, msg := tcpMessage(t, got)
			if n != len(msg) || new(dns.Msg).Unpack(msg) == nil {
				t.Errorf("got % x, want octets that do not unpack", msg)
			}
		}},
		{WrongID, "small.test", func(t *testing.T, got []byte, closed bool, q *dns.Msg) {
			if _, msg := tcpMessage(t, got); unpack(t, msg).Id == q.Id {
				t.Errorf("got the query's ID")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.fault.String()+" "+tt.name, func(t *testing.T) {
			s := StartFaultyServer(t, z)
			s.SetBehaviour(Behaviour{TCP: tt.fault})
			q := txtQuery(tt.name)
			got, closed := rawTCP(t, s.Addr(), q)
			tt.check(t, got, closed, q)
			if qs, n := s.Queries(), s.TCPConns(); len(qs) != 1 || qs[0].Net != "tcp" || n != 1 {
				t.Errorf("server counted %v on %d connections, want one TCP query on one", qs, n)
			}
		})
	}
}

// TestFaultyServerControls covers the rest: behaviours by name, delays,
// CNAME hops, refused connections, and that Close leaves no goroutine.
func TestFaultyServerControls(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	z := faultyZone(t)
	s := StartFaultyServer(t, z)

	s.SetBehaviourAt("SMALL.test", Behaviour{UDP: ServFail})
	c := &dns.Client{Net: "udp", Timeout: time.Second}
	if m, _, err := c.Exchange(txtQuery("small.test"), s.Addr()); err != nil || m.Rcode != dns.RcodeServerFailure {
		t.Errorf("small.test with its own behaviour: %v, %v; want SERVFAIL", m, err)
	}
	if m, _, err := c.Exchange(txtQuery("alias2.test"), s.Addr()); err != nil || m.Rcode != dns.RcodeSuccess {
		t.Errorf("alias2.test with the default: %v, %v; want an answer", m, err)
	}

	// A delay holds the answer back; a timer never fires early, so this
	// bound cannot fail on a slow machine.
	s.SetBehaviourAt("alias2.test", Behaviour{Delay: 200 * time.Millisecond})
	start := time.Now()
	if _, _, err := c.Exchange(txtQuery("alias2.test"), s.Addr()); err != nil || time.Since(start) < 200*time.Millisecond {
		t.Errorf("delayed answer after %v, %v; want it after 200ms", time.Since(start), err)
	}

	s.SetCNAMEHops(1)
	if m, _, err := c.Exchange(txtQuery("alias.test"), s.Addr()); err != nil || len(m.Answer) != 1 || m.Answer[0].Header().Rrtype != dns.TypeCNAME {
		t.Errorf("one CNAME hop: %v, %v; want the first CNAME alone", m, err)
	}

	// A query left unanswered by a long delay and a silent TCP connection
	// must not keep Close waiting.
	s.SetBehaviour(Behaviour{TCP: Silent, Delay: time.Hour})
	pc, err := net.Dial("udp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	wire, _ := txtQuery("huge.test").Pack()
	if _, err := pc.Write(wire); err != nil {
		t.Fatal(err)
	}
	tc, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if err := writeTCP(tc, wire, -1); err != nil {
		t.Fatal(err)
	}
	for start := time.Now(); len(s.Queries()) < 6; time.Sleep(time.Millisecond) {
		if time.Since(start) > time.Minute {
			t.Fatalf("the server counted %v, want 6 queries", s.Queries())
		}
	}

	s.RefuseTCP()
	if _, err := net.Dial("tcp", s.Addr()); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("TCP after RefuseTCP: %v, want connection refused", err)
	}
	s.Close()
	s.Close()

	defer func() {
		if recover() == nil {
			t.Error("LengthWrap over UDP was accepted")
		}
	}()
	s.SetBehaviour(Behaviour{UDP: LengthWrap})
}

// TestFaultyServerSomethingThenAnswer checks the faults that race the
// answer with something else: two datagrams, the first not the answer,
// the second the answer, for one query read.
func TestFaultyServerSomethingThenAnswer(t *testing.T) {
	z := faultyZone(t)
	tests := []struct {
		fault Fault
		first func(wire []byte, q *dns.Msg) bool // whether the first datagram is the expected one
	}{
		{JunkThenAnswer, func(wire []byte, q *dns.Msg) bool {
			return len(wire) == 3 && new(dns.Msg).Unpack(wire) != nil
		}},
		{GarbageThenAnswer, func(wire []byte, q *dns.Msg) bool {
			return new(dns.Msg).Unpack(wire) != nil && binary.BigEndian.Uint16(wire) == q.Id
		}},
		{WrongQuestionThenAnswer, func(wire []byte, q *dns.Msg) bool {
			m := new(dns.Msg)
			return m.Unpack(wire) == nil && m.Id == q.Id && m.Question[0].Name != q.Question[0].Name
		}},
	}
	for _, tt := range tests {
		t.Run(tt.fault.String(), func(t *testing.T) {
			s := StartFaultyServer(t, z)
			s.SetBehaviour(Behaviour{UDP: tt.fault})
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			q := txtQuery("small.test")
			wire, err := q.Pack()
			if err != nil {
				t.Fatal(err)
			}
			to, err := net.ResolveUDPAddr("udp", s.Addr())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := pc.WriteTo(wire, to); err != nil {
				t.Fatal(err)
			}
			// A deadline far beyond JunkGap: the bound is on what comes,
			// not on how fast.
			_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, dns.MaxMsgSize)
			var got [][]byte
			for range 2 {
				n, _, err := pc.ReadFrom(buf)
				if err != nil {
					t.Fatalf("after %d datagrams: %v", len(got), err)
				}
				got = append(got, append([]byte(nil), buf[:n]...))
			}
			if !tt.first(got[0], q) {
				t.Errorf("first datagram % x is not what %v sends first", got[0], tt.fault)
			}
			isAnswer(t, unpack(t, got[1]), q)
			if qs := s.Queries(); len(qs) != 1 {
				t.Errorf("server counted %v, want the one query", qs)
			}
		})
	}
}
