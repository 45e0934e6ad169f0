package dnstest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/spf-milter/spf-milter/internal/dnsname"
)

// Fault is a way a FaultyServer treats a query. Some only make sense over
// one transport; SetBehaviour refuses them on the other.
type Fault int

// The faults a FaultyServer knows.
const (
	// Answer answers from the zone, as Server does. An answer too large
	// for the transport is cut with TC set: over UDP at the EDNS0 size of
	// the query (512 octets without EDNS0), over TCP at 65535 octets, the
	// most a TCP length prefix can announce. The latter is how a server
	// that checks its sizes returns an RRset too large for any DNS message.
	Answer Fault = iota
	// Silent sends nothing. Over TCP the connection is accepted and the
	// query read, then the connection stays open until the client closes
	// it or the server stops.
	Silent
	// ServFail answers SERVFAIL with no records.
	ServFail
	// Refused answers REFUSED with no records.
	Refused
	// Truncated answers with TC set and no records, over TCP too (where
	// no correct server does it: a TCP answer has nowhere else to go).
	Truncated
	// Garbage sends the query's ID followed by octets that do not unpack
	// as the rest of a DNS message: what a corrupting middlebox leaves.
	Garbage
	// WrongID sends the right answer under another ID.
	WrongID
	// WrongQuestion sends an answer, records included, for another name.
	WrongQuestion
	// CloseConn (TCP only) closes the connection once the query is read.
	CloseConn
	// ShortLength (TCP only) sends a length prefix of 65535, then the
	// answer, which is shorter, then closes the connection.
	ShortLength
	// LengthWrap (TCP only) sends the whole answer from the zone, however
	// large, after a length prefix of its size modulo 65536: what a server
	// that does not check sizes sends for an answer over 64 KB. The client
	// reads a cut-off message and then the rest as if it were another.
	LengthWrap
	// WrongPort (UDP only) sends the right answer from another port of the
	// server's address.
	WrongPort
	// WrongAddr (UDP only) sends the right answer from 127.0.0.2, another
	// address of the loopback network.
	WrongAddr
	// JunkThenAnswer (UDP only) sends three octets that are no DNS
	// message, then, JunkGap later, the right answer: what a client sees
	// when anyone able to reach its port races the server.
	JunkThenAnswer
	// GarbageThenAnswer (UDP only) sends the Garbage reply, which carries
	// the query's ID, then, JunkGap later, the right answer.
	GarbageThenAnswer
	// WrongQuestionThenAnswer (UDP only) sends the WrongQuestion reply,
	// then, JunkGap later, the right answer.
	WrongQuestionThenAnswer
)

// JunkGap is how long the faults that send something else first wait
// before the right answer.
const JunkGap = 50 * time.Millisecond

var faultNames = [...]string{
	"answer", "silent", "SERVFAIL", "REFUSED", "truncated", "garbage", "wrong ID",
	"wrong question", "close", "short length", "length wrap", "wrong port", "wrong address",
	"junk then answer", "garbage then answer", "wrong question then answer",
}

// String names the fault, for test names and messages.
func (f Fault) String() string {
	if f >= 0 && int(f) < len(faultNames) {
		return faultNames[f]
	}
	return fmt.Sprintf("Fault(%d)", int(f))
}

// tcpOnly and udpOnly report whether f is meaningless over the other
// transport: a mistake in a test, which SetBehaviour panics on.
func (f Fault) tcpOnly() bool { return f == CloseConn || f == ShortLength || f == LengthWrap }
func (f Fault) udpOnly() bool {
	return f == WrongPort || f == WrongAddr || f == JunkThenAnswer || f == GarbageThenAnswer || f == WrongQuestionThenAnswer
}

// Behaviour is how a FaultyServer treats the queries it applies to: a Fault
// over each transport, after waiting Delay.
type Behaviour struct {
	UDP, TCP Fault
	// Delay is waited before the fault or answer; the wait ends at once
	// when the server stops.
	Delay time.Duration
}

// garbageBody follows the query's ID in a Garbage reply: flags of a
// NOERROR response without TC, one question announced, and then a name
// whose first label claims 63 octets of which two follow.
var garbageBody = []byte{0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 63, 'n', 'o'}

// FaultyServer answers queries from a Zone on 127.0.0.1, UDP and TCP on the
// same port, and misbehaves as its Behaviours say. It runs its own sockets
// rather than a miekg/dns server, which would not send what a broken
// server sends. It counts every query it reads, so that a test can bound
// the queries a client sends. Close stops it and waits until all of its
// goroutines have ended, so that a test can then look for the client's
// goroutines left behind.
type FaultyServer struct {
	zone *Zone
	addr string
	udp  net.PacketConn
	done chan struct{} // closed by Close, to cut delays and silences short
	wg   sync.WaitGroup

	closeOnce sync.Once

	mu        sync.Mutex
	ln        net.Listener // nil once RefuseTCP or Close closed it
	conns     map[net.Conn]bool
	closed    bool
	def       Behaviour
	rules     map[string]Behaviour // by dnsname.Key of the query name
	hops      int
	queries   []Query
	connCount int
	altPort   net.PacketConn // for WrongPort, opened on first use
	altAddr   net.PacketConn // for WrongAddr, opened on first use
}

// StartFaultyServer starts a FaultyServer for z that answers every query
// correctly until told otherwise; tb's cleanup closes it.
func StartFaultyServer(tb testing.TB, z *Zone) *FaultyServer {
	tb.Helper()
	ln, pc, err := ListenPair()
	if err != nil {
		tb.Fatalf("dnstest: %v", err)
	}
	s := &FaultyServer{
		zone:  z,
		addr:  ln.Addr().String(),
		udp:   pc,
		ln:    ln,
		done:  make(chan struct{}),
		conns: make(map[net.Conn]bool),
		rules: make(map[string]Behaviour),
		hops:  maxServerCNAMEHops,
	}
	s.wg.Add(2)
	go s.serveUDP()
	go s.serveTCP(ln)
	tb.Cleanup(s.Close)
	return s
}

// Addr returns the address the server listens on, "127.0.0.1:PORT".
func (s *FaultyServer) Addr() string { return s.addr }

// SetBehaviour sets how queries are treated at names that have no
// behaviour of their own.
func (s *FaultyServer) SetBehaviour(b Behaviour) {
	b.check()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.def = b
}

// SetBehaviourAt sets how queries for name, of any type, are treated.
func (s *FaultyServer) SetBehaviourAt(name string, b Behaviour) {
	b.check()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rules[dnsname.Key(dns.Fqdn(name))] = b
}

func (b Behaviour) check() {
	if b.UDP.tcpOnly() || b.TCP.udpOnly() {
		panic(fmt.Sprintf("dnstest: behaviour %v over UDP, %v over TCP: fault on the wrong transport", b.UDP, b.TCP))
	}
}

// SetCNAMEHops sets how many CNAMEs one answer follows inside the zone
// (Server follows 8). With 1, every answer stops at the first CNAME, as
// when each name of a chain lives in another zone, and the client has to
// ask for each target itself.
func (s *FaultyServer) SetCNAMEHops(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hops = max(n, 1)
}

// RefuseTCP closes the TCP listener: connections to the server's port are
// refused from now on, while UDP is still served. Connections already
// accepted stay.
func (s *FaultyServer) RefuseTCP() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		s.ln.Close()
		s.ln = nil
	}
}

// Queries returns every query read so far, in order. A datagram or TCP
// message that is not a query is listed with an empty Name.
func (s *FaultyServer) Queries() []Query {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Query(nil), s.queries...)
}

// TCPConns returns how many TCP connections the server accepted.
func (s *FaultyServer) TCPConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connCount
}

// ResetQueries forgets the queries and connections counted so far.
func (s *FaultyServer) ResetQueries() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queries, s.connCount = nil, 0
}

// Close stops the server: its sockets and connections are closed, delays
// and silences end, and Close returns once every goroutine of the server
// has. It may be called more than once.
func (s *FaultyServer) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		s.udp.Close()
		s.mu.Lock()
		s.closed = true
		if s.ln != nil {
			s.ln.Close()
			s.ln = nil
		}
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
		// Only reply goroutines write on these, and they have all ended.
		for _, pc := range []net.PacketConn{s.altPort, s.altAddr} {
			if pc != nil {
				pc.Close()
			}
		}
	})
}

// received counts a query and returns how to treat it and how many CNAMEs
// to follow, or ok false when it does not parse.
func (s *FaultyServer) received(network string, wire []byte) (req *dns.Msg, b Behaviour, hops int, ok bool) {
	req = new(dns.Msg)
	err := req.Unpack(wire)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil || len(req.Question) != 1 {
		s.queries = append(s.queries, Query{Net: network})
		return nil, Behaviour{}, 0, false
	}
	q := req.Question[0]
	s.queries = append(s.queries, Query{Name: q.Name, Type: q.Qtype, Net: network})
	b, found := s.rules[dnsname.Key(q.Name)]
	if !found {
		b = s.def
	}
	return req, b, s.hops, true
}

// wait waits d, and reports false if the server stopped meanwhile.
func (s *FaultyServer) wait(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.done:
		return false
	}
}

func (s *FaultyServer) serveUDP() {
	defer s.wg.Done()
	buf := make([]byte, dns.MaxMsgSize)
	for {
		n, from, err := s.udp.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		req, b, hops, ok := s.received("udp", buf[:n])
		if !ok {
			continue
		}
		// Each query on its own goroutine: a delayed one must not hold
		// back the others.
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if s.wait(b.Delay) {
				s.replyUDP(req, b.UDP, hops, from)
			}
		}()
	}
}

func (s *FaultyServer) replyUDP(req *dns.Msg, f Fault, hops int, to net.Addr) {
	var out []byte
	send := s.udp
	switch f {
	case Silent:
		return
	case Garbage:
		out = garbage(req)
	case JunkThenAnswer, GarbageThenAnswer, WrongQuestionThenAnswer:
		var first []byte
		switch f {
		case JunkThenAnswer:
			first = []byte{0xde, 0xad, 0x00}
		case GarbageThenAnswer:
			first = garbage(req)
		default:
			resp := s.faultyReply(req, WrongQuestion, hops)
			if resp == nil {
				return
			}
			var err error
			if first, err = resp.Pack(); err != nil {
				return
			}
		}
		_, _ = send.WriteTo(first, to)
		if s.wait(JunkGap) {
			s.replyUDP(req, Answer, hops, to)
		}
		return
	default:
		resp := s.faultyReply(req, f, hops)
		if resp == nil {
			return
		}
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = max(int(opt.UDPSize()), dns.MinMsgSize)
		}
		resp.Truncate(size)
		var err error
		if out, err = resp.Pack(); err != nil {
			return
		}
		switch f {
		case WrongPort:
			if send = s.altSocket(&s.altPort, "127.0.0.1:0"); send == nil {
				return
			}
		case WrongAddr:
			if send = s.altSocket(&s.altAddr, "127.0.0.2:0"); send == nil {
				return
			}
		}
	}
	_, _ = send.WriteTo(out, to)
}

// altSocket returns the socket *pc, opening it on addr first if need be;
// nil if it cannot be opened.
func (s *FaultyServer) altSocket(pc *net.PacketConn, addr string) net.PacketConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if *pc == nil {
		c, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil
		}
		*pc = c
	}
	return *pc
}

func (s *FaultyServer) serveTCP(ln net.Listener) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = true
		s.connCount++
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

// serveConn reads queries from one TCP connection until the client closes
// it, a fault closes it, or the server stops.
func (s *FaultyServer) serveConn(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	for {
		var length uint16
		if err := binary.Read(c, binary.BigEndian, &length); err != nil {
			return
		}
		wire := make([]byte, length)
		if _, err := io.ReadFull(c, wire); err != nil {
			return
		}
		req, b, hops, ok := s.received("tcp", wire)
		if !ok {
			continue
		}
		if !s.wait(b.Delay) {
			return
		}
		if !s.replyTCP(c, req, b.TCP, hops) {
			return
		}
	}
}

// replyTCP acts on one query read from c, and reports whether to read on.
func (s *FaultyServer) replyTCP(c net.Conn, req *dns.Msg, f Fault, hops int) bool {
	switch f {
	case Silent:
		return true
	case CloseConn:
		return false
	case Garbage:
		return writeTCP(c, garbage(req), -1) == nil
	}
	resp := s.faultyReply(req, f, hops)
	if resp == nil {
		return true
	}
	if f != LengthWrap {
		resp.Truncate(dns.MaxMsgSize)
	}
	out, err := resp.Pack()
	if err != nil {
		return false
	}
	switch f {
	case ShortLength:
		_ = writeTCP(c, out, dns.MaxMsgSize)
		return false
	case LengthWrap:
		return writeTCP(c, out, len(out)%65536) == nil
	}
	return writeTCP(c, out, -1) == nil
}

// writeTCP writes msg after a length prefix of length, or of len(msg) when
// length is negative, in one write so that the client gets them together.
func writeTCP(c net.Conn, msg []byte, length int) error {
	if length < 0 {
		length = len(msg)
	}
	b := make([]byte, 2, 2+len(msg))
	binary.BigEndian.PutUint16(b, uint16(length))
	_, err := c.Write(append(b, msg...))
	return err
}

// faultyReply builds the reply to req for f from the zone, or nil when the
// zone leaves the name unanswered. Faults that are not about the message
// itself get the zone's answer.
func (s *FaultyServer) faultyReply(req *dns.Msg, f Fault, hops int) *dns.Msg {
	switch f {
	case ServFail, Refused:
		resp := new(dns.Msg)
		rcode := dns.RcodeServerFailure
		if f == Refused {
			rcode = dns.RcodeRefused
		}
		resp.SetRcode(req, rcode)
		return resp
	case Truncated:
		resp := new(dns.Msg)
		resp.SetReply(req)
		resp.Truncated = true
		return resp
	case WrongQuestion:
		other := req.Copy()
		other.Question[0].Name = "other." + req.Question[0].Name
		resp, ok := s.zone.reply(other, hops)
		if !ok {
			return nil
		}
		resp.Answer = append(resp.Answer, &dns.TXT{
			Hdr: dns.RR_Header{Name: other.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: defaultTTL},
			Txt: []string{"v=spf1 +all"},
		})
		return resp
	}
	resp, ok := s.zone.reply(req, hops)
	if !ok {
		return nil
	}
	if f == WrongID {
		resp.Id = req.Id + 1
	}
	return resp
}

// garbage is the Garbage reply to req.
func garbage(req *dns.Msg) []byte {
	out := binary.BigEndian.AppendUint16(nil, req.Id)
	return append(out, garbageBody...)
}

// reply returns the zone's answer to req, chasing at most hops CNAMEs,
// whatever its size; ok is false when the query must go unanswered (a
// Timeout name).
func (z *Zone) reply(req *dns.Msg, hops int) (resp *dns.Msg, ok bool) {
	resp = new(dns.Msg)
	if req.Opcode != dns.OpcodeQuery || len(req.Question) != 1 {
		resp.SetRcode(req, dns.RcodeFormatError)
		return resp, true
	}
	q := req.Question[0]
	out := z.resolve(q.Name, q.Qtype, hops)
	if out.noReply {
		return nil, false
	}
	resp.SetRcode(req, out.rcode)
	resp.Authoritative = true
	resp.Answer = out.answer
	if out.soa != nil {
		resp.Ns = []dns.RR{out.soa}
	}
	if opt := req.IsEdns0(); opt != nil {
		resp.SetEdns0(max(opt.UDPSize(), dns.MinMsgSize), false)
	}
	return resp, true
}
