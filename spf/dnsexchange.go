package spf

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// query asks the servers in turn until one gives a usable answer (NOERROR or
// NXDOMAIN) and returns it, with the share of the in-flight budget it
// holds, which the caller releases. The error is the last server's, or the
// context's once it is done.
func (r *DNSResolver) query(ctx context.Context, qname string, qtype uint16) (*dns.Msg, reservation, error) {
	var lastErr error
	for _, server := range r.servers {
		if err := ctx.Err(); err != nil {
			return nil, reservation{}, err
		}
		resp, res, err := r.queryServer(ctx, server, qname, qtype)
		if err == nil {
			return resp, res, nil
		}
		if ctx.Err() != nil {
			return nil, reservation{}, ctx.Err()
		}
		lastErr = err
	}
	return nil, reservation{}, lastErr
}

// queryServer asks one server over UDP, then over TCP if the answer is
// truncated, and checks that the answer is usable. Each exchange first
// reserves its share of the in-flight budget, waiting for it within ctx;
// a usable answer keeps what unpacking it takes, and the caller releases
// that.
func (r *DNSResolver) queryServer(ctx context.Context, server, qname string, qtype uint16) (*dns.Msg, reservation, error) {
	m := new(dns.Msg)
	m.SetQuestion(qname, qtype)
	m.SetEdns0(ednsSize, false)

	res, err := r.budget.reserve(ctx, udpShare, false)
	if err != nil {
		return nil, reservation{}, err
	}
	resp, used, err := r.ask(ctx, "udp", server, m)
	if err == nil && resp.Truncated {
		// The datagram is read and dropped: its share goes back before
		// the larger one is asked for, so no lookup holds one share
		// while it waits for another.
		r.budget.release(&res)
		if res, err = r.budget.reserve(ctx, tcpShare, true); err != nil {
			return nil, reservation{}, err
		}
		m.Id = dns.Id()
		resp, used, err = r.ask(ctx, "tcp", server, m)
	}
	if err != nil {
		r.budget.release(&res)
		return nil, reservation{}, err
	}
	switch resp.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
		r.budget.shrink(&res, used)
		return resp, res, nil
	default:
		r.budget.release(&res)
		return nil, reservation{}, &ServerError{Server: server, text: "server answered " + dnsRcodeName(resp.Rcode)}
	}
}

// ask makes one exchange with server, checks that the answer is for the
// question asked, and tells the observer how it went. used is what
// unpacking the answer takes of the heap, as unpackBound bounds it.
func (r *DNSResolver) ask(ctx context.Context, network, server string, m *dns.Msg) (_ *dns.Msg, used int64, _ error) {
	start := time.Now()
	resp, used, err := r.exchange(ctx, network, server, m)
	var outcome string
	switch {
	case err != nil:
		text := "network error"
		var ne net.Error
		switch {
		case errors.Is(err, context.Canceled):
			outcome = "cancelled"
		case errors.As(err, &ne) && ne.Timeout():
			outcome, text = "timeout", "no answer (timeout)"
		case errors.Is(err, errWrongID):
			outcome, text = "bad_answer", "answer for another query"
		case errors.Is(err, errAnswerTooLarge):
			outcome, text = "bad_answer", errAnswerTooLarge.Error()
		case errors.As(err, new(*dns.Error)):
			// miekg/dns could not unpack it: say so, rather than blame
			// the network in the problem text an admin reads.
			outcome, text = "bad_answer", "malformed answer"
		default:
			outcome = "network_error"
		}
		err = &ServerError{Server: server, Err: err, text: text}
	case network == "udp" && resp.Truncated:
		// TCP asks again, and its answer is the one checked.
		outcome = rcodeOutcome(resp.Rcode)
	case resp.Truncated:
		// Over TCP there is no larger answer to ask for: the records
		// that came may not be all there are (an RRset over 64 KB, cut
		// at 65535 octets), and a result drawn from part of them could
		// be none, or one record where there are two.
		outcome = "bad_answer"
		err = &ServerError{Server: server, text: "answer truncated over TCP"}
	case !sameQuestion(resp, m):
		outcome = "bad_answer"
		err = &ServerError{Server: server, text: "answer is for another question"}
	default:
		outcome = rcodeOutcome(resp.Rcode)
	}
	if r.observer != nil {
		r.observer.DNSQuery(dns.TypeToString[m.Question[0].Qtype], outcome, time.Since(start))
	}
	if err != nil {
		return nil, 0, err
	}
	return resp, used, nil
}

// sameQuestion reports whether resp answers the one question of query.
func sameQuestion(resp, query *dns.Msg) bool {
	return len(resp.Question) == 1 && sameName(resp.Question[0].Name, query.Question[0].Name) &&
		resp.Question[0].Qtype == query.Question[0].Qtype && resp.Question[0].Qclass == dns.ClassINET
}

// errWrongID is an answer over TCP that is not for our query: a stream
// carries nothing else, so the server is confused.
var errWrongID = errors.New("answer with wrong ID")

// udpSends is how many times a UDP query is sent, a third of the timeout
// apart, before its server is given up for this query.
const udpSends = 3

// exchange sends m to server over network and reads the answer. The
// deadline is the earlier of the per-query timeout and ctx's deadline, and
// cancelling ctx cuts the exchange short: miekg/dns would otherwise block in
// a read that only a deadline interrupts. Over UDP the same query is sent
// again, on the same socket, when a third of the timeout passes without
// the answer: a lost datagram costs that much rather than the whole
// timeout, and an answer to any of the sends will do. A datagram that is
// not that answer (it does not unpack, or its ID or question is another)
// is passed over, and the wait goes on until the deadline.
func (r *DNSResolver) exchange(ctx context.Context, network, server string, m *dns.Msg) (*dns.Msg, int64, error) {
	start := time.Now()
	deadline := start.Add(r.timeout)
	ctxDeadline, hasCtxDeadline := ctx.Deadline()
	if hasCtxDeadline && ctxDeadline.Before(deadline) {
		deadline = ctxDeadline
	}
	// ctxErr reports the context's own error when the deadline that fired
	// was the context's, even before the context's timer has run.
	ctxErr := func(err error) error {
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		var ne net.Error
		if hasCtxDeadline && !deadline.Before(ctxDeadline) && errors.As(err, &ne) && ne.Timeout() {
			return context.DeadlineExceeded
		}
		return err
	}

	dialCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(dialCtx, network, server)
	if err != nil {
		return nil, 0, ctxErr(err)
	}
	defer c.Close()

	// Cancelling ctx puts the deadline in the past. The deadline moves at
	// each retransmission, and must never move back once cancelled: both
	// go under mu.
	var mu sync.Mutex
	cancelled := false
	setDeadline := func(t time.Time) error {
		mu.Lock()
		defer mu.Unlock()
		if cancelled {
			return nil
		}
		return c.SetDeadline(t)
	}
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		cancelled = true
		_ = c.SetDeadline(time.Unix(1, 0))
	})
	defer stop()

	// A datagram is read into a buffer one octet over the advertised
	// size, so that readAnswer can tell one that does not fit.
	conn := &dns.Conn{Conn: c, UDPSize: udpReadSize + 1}
	sends := 0
	var readUntil time.Time
	send := func() error {
		sends++
		readUntil = deadline
		if network == "udp" && sends < udpSends {
			// Sends are spaced from the start, not from each other, so
			// that a slow loop does not push the last one past the end.
			if next := start.Add(time.Duration(sends) * r.timeout / udpSends); next.Before(deadline) {
				readUntil = next
			}
		}
		if err := setDeadline(readUntil); err != nil {
			return err
		}
		return conn.WriteMsg(m)
	}
	if err := send(); err != nil {
		return nil, 0, ctxErr(err)
	}
	for {
		resp, used, err := readAnswer(conn, network == "udp", m.Id)
		if err != nil && network == "udp" && errors.As(err, new(*dns.Error)) {
			// A datagram that does not unpack (or is too short to hold a
			// header) proves nothing: anyone who can reach our port can
			// send one. Stub resolvers pass it over and keep waiting for
			// the server's answer until the deadline.
			continue
		}
		if err != nil {
			var ne net.Error
			if readUntil.Before(deadline) && ctx.Err() == nil && errors.As(err, &ne) && ne.Timeout() {
				// Nothing yet: the query or its answer may be lost.
				if err := send(); err != nil {
					return nil, 0, ctxErr(err)
				}
				continue
			}
			return nil, 0, ctxErr(err)
		}
		if resp.Id != m.Id || !resp.Response {
			if network == "udp" {
				// A late answer to an earlier query, or a forgery: keep
				// waiting for ours until the deadline.
				continue
			}
			return nil, 0, errWrongID
		}
		if network == "udp" && !resp.Truncated && !sameQuestion(resp, m) {
			// Right ID, wrong question: a forgery or a confused
			// middlebox, not an answer; ours may still come. Over TCP
			// ask reports it, as the stream carries nothing else.
			continue
		}
		return resp, used, nil
	}
}

// readAnswer reads one message from conn, a UDP socket when udp is set,
// and unpacks it unless unpacking would take more than its share of the
// in-flight budget; used is what unpacking takes, as unpackBound bounds
// it.
//
// A truncated answer to the query of ID id comes back with its header
// alone: it is only read to ask again over TCP (or, over TCP, to fail),
// and may be cut mid-record. A datagram over udpReadSize, which the
// buffer cuts, or one that would unpack beyond its share, is taken as
// truncated when it is that answer, and as junk otherwise. Over TCP an
// answer beyond its share is errAnswerTooLarge.
func readAnswer(conn *dns.Conn, udp bool, id uint16) (_ *dns.Msg, used int64, _ error) {
	p, err := conn.ReadMsgHeader(nil)
	if err != nil {
		return nil, 0, err
	}
	hdr := dns.MsgHdr{
		Id:        binary.BigEndian.Uint16(p),
		Response:  p[2]&0x80 != 0,
		Opcode:    int(p[2]>>3) & 0xF,
		Truncated: p[2]&0x02 != 0,
		Rcode:     int(p[3] & 0xF),
	}
	ours := hdr.Id == id && hdr.Response
	tooLarge := udp && len(p) > udpReadSize
	if !tooLarge {
		used = unpackBound(p)
		tooLarge = used > unpackBase+unpackFactor*int64(len(p))
	}
	switch {
	case ours && (hdr.Truncated || udp && tooLarge):
		hdr.Truncated = true
		return &dns.Msg{MsgHdr: hdr}, 0, nil
	case tooLarge && udp:
		return nil, 0, dns.ErrBuf
	case tooLarge:
		return nil, 0, errAnswerTooLarge
	}
	m := new(dns.Msg)
	if err := m.Unpack(p); err != nil {
		return m, used, err
	}
	if m.IsTsig() != nil {
		// We sign nothing and hold no key: as miekg/dns's own reading
		// says when it has none.
		return m, used, dns.ErrSecret
	}
	return m, used, nil
}
