package load

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/spf-milter/spf-milter/internal/dnstest"
)

// DNSServer is an authoritative server for zoneText on 127.0.0.1, UDP and
// TCP on one port, with an optional delay before every answer to play a
// distant resolver.
type DNSServer struct {
	addr    string
	records map[string][]dns.RR // by lowercased owner name, with its dot
	// exists holds every owner name and every name above one up to its
	// apex (empty non-terminals), to tell NODATA from NXDOMAIN.
	exists  map[string]bool
	soas    map[string]*dns.SOA
	delay   atomic.Int64 // nanoseconds
	queries atomic.Int64
	udp     *dns.Server
	tcp     *dns.Server
	done    chan struct{}
}

// StartDNSServer parses the zone and starts serving it.
func StartDNSServer() (*DNSServer, error) {
	s := &DNSServer{
		records: map[string][]dns.RR{},
		exists:  map[string]bool{},
		soas:    map[string]*dns.SOA{},
		done:    make(chan struct{}),
	}
	zp := dns.NewZoneParser(strings.NewReader(zoneText), ".", "zone")
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		name := strings.ToLower(rr.Header().Name)
		s.records[name] = append(s.records[name], rr)
		if soa, ok := rr.(*dns.SOA); ok {
			s.soas[name] = soa
		}
	}
	if err := zp.Err(); err != nil {
		return nil, fmt.Errorf("zone: %w", err)
	}
	for name := range s.records {
		for n := name; n != "."; n = parent(n) {
			s.exists[n] = true
			if s.soas[n] != nil {
				break
			}
		}
	}

	ln, pc, err := dnstest.ListenPair()
	if err != nil {
		return nil, err
	}
	s.addr = ln.Addr().String()
	s.udp = &dns.Server{PacketConn: pc, Handler: s}
	s.tcp = &dns.Server{Listener: ln, Handler: s}
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		errc := make(chan error, 1)
		go func() { errc <- srv.ActivateAndServe() }()
		select {
		case <-started:
		case err := <-errc:
			s.Close()
			return nil, fmt.Errorf("dns server: %w", err)
		}
	}
	return s, nil
}

func parent(name string) string {
	i := strings.IndexByte(name, '.')
	if i < 0 || i == len(name)-1 {
		return "."
	}
	return name[i+1:]
}

// Addr is "127.0.0.1:PORT".
func (s *DNSServer) Addr() string { return s.addr }

// SetDelay makes every answer wait d.
func (s *DNSServer) SetDelay(d time.Duration) { s.delay.Store(int64(d)) }

// Queries returns how many queries were received so far.
func (s *DNSServer) Queries() int64 { return s.queries.Load() }

// Close stops the server.
func (s *DNSServer) Close() {
	select {
	case <-s.done:
		return
	default:
		close(s.done)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		if srv != nil {
			_ = srv.ShutdownContext(ctx)
		}
	}
}

// ServeDNS answers one query. miekg/dns runs each in a goroutine of its
// own, so a delay holds no other query back.
func (s *DNSServer) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	s.queries.Add(1)
	if d := time.Duration(s.delay.Load()); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-s.done:
			t.Stop()
			return
		}
	}
	resp := new(dns.Msg)
	if req.Opcode != dns.OpcodeQuery || len(req.Question) != 1 {
		resp.SetRcode(req, dns.RcodeFormatError)
		_ = w.WriteMsg(resp)
		return
	}
	resp.SetReply(req)
	resp.Authoritative = true
	s.answer(resp, req.Question[0])

	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		size = max(int(opt.UDPSize()), dns.MinMsgSize)
		resp.SetEdns0(uint16(size), false)
	}
	if _, tcp := w.LocalAddr().(*net.TCPAddr); !tcp {
		// Drops what does not fit and sets TC, for the client to ask
		// again over TCP.
		resp.Truncate(size)
	}
	_ = w.WriteMsg(resp)
}

// answer fills resp for q: the records of q's type, or an empty answer
// with the apex's SOA (NODATA when the name exists, NXDOMAIN otherwise).
func (s *DNSServer) answer(resp *dns.Msg, q dns.Question) {
	name := strings.ToLower(q.Name)
	for _, rr := range s.records[name] {
		if rr.Header().Rrtype == q.Qtype {
			c := dns.Copy(rr)
			c.Header().Name = q.Name
			resp.Answer = append(resp.Answer, c)
		}
	}
	if len(resp.Answer) > 0 {
		return
	}
	if !s.exists[name] {
		resp.Rcode = dns.RcodeNameError
	}
	for n := name; n != "."; n = parent(n) {
		if soa := s.soas[n]; soa != nil {
			c := dns.Copy(soa).(*dns.SOA)
			// RFC 2308 §5: the TTL of a negative answer is the lesser of
			// the SOA's TTL and its MINIMUM field.
			c.Hdr.Ttl = min(c.Hdr.Ttl, c.Minttl)
			resp.Ns = append(resp.Ns, c)
			return
		}
	}
}
