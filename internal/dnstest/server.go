package dnstest

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Query is one question the Server received.
type Query struct {
	Name string // as asked, in presentation form, with its trailing dot
	Type uint16
	Net  string // "udp" or "tcp"
}

// Server is an authoritative DNS server for a Zone, listening on 127.0.0.1
// with UDP and TCP on the same port, so that a client falling back to TCP
// after a truncated answer reaches it at the same address.
type Server struct {
	zone *Zone
	addr string
	done chan struct{} // closed at shutdown, to cut delays short

	mu          sync.Mutex
	delay       time.Duration
	truncateUDP bool
	compress    bool
	queries     []Query
	// tcpActive counts the TCP queries read and not yet answered;
	// tcpPeak is the most there were at once.
	tcpActive, tcpPeak int
}

// StartServer starts a Server for z; tb's cleanup stops it.
func StartServer(tb testing.TB, z *Zone) *Server {
	tb.Helper()
	s := &Server{zone: z, done: make(chan struct{})}

	ln, pc, err := ListenPair()
	if err != nil {
		tb.Fatalf("dnstest: %v", err)
	}
	s.addr = ln.Addr().String()

	udp := &dns.Server{PacketConn: pc, Handler: s}
	tcp := &dns.Server{Listener: ln, Handler: s}
	for _, srv := range []*dns.Server{udp, tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		errc := make(chan error, 1)
		go func() { errc <- srv.ActivateAndServe() }()
		select {
		case <-started:
		case err := <-errc:
			tb.Fatalf("dnstest: serving: %v", err)
		}
	}
	tb.Cleanup(func() {
		close(s.done)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = udp.ShutdownContext(ctx)
		_ = tcp.ShutdownContext(ctx)
	})
	return s
}

// ListenPair finds a port free for both TCP and UDP on 127.0.0.1, as a DNS
// server needs: a resolver falling back to TCP after a truncated answer
// asks the same address. The kernel picks the TCP port; the UDP one may be
// taken by someone else, so it tries a few times.
func ListenPair() (net.Listener, net.PacketConn, error) {
	var lastErr error
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		pc, err := net.ListenPacket("udp", ln.Addr().String())
		if err == nil {
			return ln, pc, nil
		}
		ln.Close()
		lastErr = err
	}
	return nil, nil, fmt.Errorf("no port free for both UDP and TCP: %v", lastErr)
}

// Addr returns the address the server listens on, "127.0.0.1:PORT".
func (s *Server) Addr() string { return s.addr }

// SetDelay delays every answer by d.
func (s *Server) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// SetTruncateUDP makes every UDP answer an empty one with TC set, so that
// only TCP gets the records.
func (s *Server) SetTruncateUDP(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.truncateUDP = on
}

// SetCompress makes answers use name compression, as real servers do;
// without it an answer repeats every owner name whole, and one of a few
// thousand records does not fit in a DNS message.
func (s *Server) SetCompress(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.compress = on
}

// Queries returns every query received so far, in order.
func (s *Server) Queries() []Query {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Query(nil), s.queries...)
}

// TCPPeak returns the most TCP queries the server has been answering at
// once: read, and their answer not yet being written. A client that holds
// something from sending a query until it has read the answer holds it
// over the whole of each such span, so this bounds from below how many
// such holds it had at once.
func (s *Server) TCPPeak() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tcpPeak
}

// ResetQueries forgets the queries received so far.
func (s *Server) ResetQueries() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queries = nil
}

// ServeDNS answers one query from the zone; it is the dns.Handler of both
// listeners.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	network := "udp"
	if _, ok := w.LocalAddr().(*net.TCPAddr); ok {
		network = "tcp"
	}
	s.mu.Lock()
	for _, q := range req.Question {
		s.queries = append(s.queries, Query{Name: q.Name, Type: q.Qtype, Net: network})
	}
	delay, truncate, compress := s.delay, s.truncateUDP, s.compress
	if network == "tcp" {
		s.tcpActive++
		s.tcpPeak = max(s.tcpPeak, s.tcpActive)
	}
	s.mu.Unlock()
	answering := true
	answered := func() {
		if network == "tcp" && answering {
			answering = false
			s.mu.Lock()
			s.tcpActive--
			s.mu.Unlock()
		}
	}
	defer answered()

	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-s.done:
			t.Stop()
			return
		}
	}

	resp, ok := s.zone.reply(req, maxServerCNAMEHops)
	if !ok {
		return
	}
	resp.Compress = compress
	if req.Opcode != dns.OpcodeQuery || len(req.Question) != 1 {
		answered()
		_ = w.WriteMsg(resp) // FORMERR
		return
	}
	if network == "udp" && truncate {
		resp.Answer, resp.Ns = nil, nil
		resp.Truncated = true
	}
	opt := req.IsEdns0()
	if network == "udp" && !truncate {
		size := dns.MinMsgSize
		if opt != nil {
			size = int(opt.UDPSize())
		}
		// Truncate drops what does not fit and sets TC.
		resp.Truncate(size)
	}
	answered()
	_ = w.WriteMsg(resp)
}
