package load

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-milter"
)

// ioTimeout bounds every read and write of a session: a milter that stops
// answering is an error, not a hang.
const ioTimeout = 30 * time.Second

// Negotiation masks. Postfix offers the milter every action and protocol
// step of milter protocol 6. go-milter's client only talks to a milter of
// protocol 2 (all go-milter servers) when the masks fit in version 2's
// bits, so such targets are offered those.
const (
	v2Actions  = milter.OptAddHeader | milter.OptChangeBody | milter.OptAddRcpt | milter.OptRemoveRcpt | milter.OptChangeHeader | milter.OptQuarantine
	v2Protocol = milter.OptNoConnect | milter.OptNoHelo | milter.OptNoMailFrom | milter.OptNoRcptTo | milter.OptNoBody | milter.OptNoHeaders | milter.OptNoEOH

	v6Actions  = v2Actions | milter.OptChangeFrom | milter.OptAddRcptWithArgs | milter.OptSetSymList
	v6Protocol = v2Protocol | milter.OptNoHeaderReply | milter.OptNoUnknown | milter.OptNoData | milter.OptSkip |
		milter.OptNoConnReply | milter.OptNoHeloReply | milter.OptNoMailReply | milter.OptNoRcptReply |
		milter.OptNoDataReply | milter.OptNoUnknownReply | milter.OptNoEOHReply | milter.OptNoBodyReply
)

// receiverName is the MTA's host name: the j macro, and the authserv-id
// every SPF milter is configured with.
const receiverName = "mx.bench.example"

// recipient is the envelope recipient of every message.
const recipient = "postmaster@bench.example"

// body is sent to milters that ask for the body (the do-nothing milter and
// spf-milter do not).
var body = []byte(strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n", 20))

// postfixConn makes go-milter's client send and read as Postfix does.
// go-milter writes each packet with a system call of its own and reads
// each packet in two; Postfix sends the macros of a stage and its command
// in one write (one VSTREAM transaction, milter8.c) and reads through a
// buffer. So writes are held until the client next reads, or closes, and
// reads go through a buffer. The load generator thereby spends no more
// system calls than Postfix would, and each milter sees the packets
// grouped as Postfix groups them.
//
// go-milter's client sets and clears a deadline around every packet it
// reads or writes: work Postfix does not do, taken from the milters'
// share of the CPUs. Instead each flush moves the deadline of both
// directions to ioTimeout ahead: a read always follows a flush.
type postfixConn struct {
	net.Conn
	r       *bufio.Reader
	pending []byte
}

// SetDeadline, SetReadDeadline and SetWriteDeadline leave the session's
// own deadline in place.
func (c *postfixConn) SetDeadline(time.Time) error      { return nil }
func (c *postfixConn) SetReadDeadline(time.Time) error  { return nil }
func (c *postfixConn) SetWriteDeadline(time.Time) error { return nil }

func (c *postfixConn) Write(p []byte) (int, error) {
	c.pending = append(c.pending, p...)
	return len(p), nil
}

func (c *postfixConn) flush() error {
	if len(c.pending) == 0 {
		return nil
	}
	if err := c.Conn.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
		return err
	}
	_, err := c.Conn.Write(c.pending)
	c.pending = c.pending[:0]
	return err
}

func (c *postfixConn) Read(p []byte) (int, error) {
	if err := c.flush(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func (c *postfixConn) Close() error {
	err := c.flush()
	if cerr := c.Conn.Close(); err == nil {
		err = cerr
	}
	return err
}

type postfixDialer struct{ d net.Dialer }

func (pd *postfixDialer) Dial(network, addr string) (net.Conn, error) {
	c, err := pd.d.Dial(network, addr)
	if err != nil {
		return nil, err
	}
	return &postfixConn{Conn: c, r: bufio.NewReaderSize(c, 4096)}, nil
}

// newClient returns a go-milter client for the milter at addr, offering
// what a milter of protocol v6 may use, or only protocol 2's bits.
func newClient(addr string, v6 bool) *milter.Client {
	opts := milter.ClientOptions{
		Dialer:       &postfixDialer{d: net.Dialer{Timeout: ioTimeout}},
		ReadTimeout:  ioTimeout,
		WriteTimeout: ioTimeout,
		ActionMask:   v2Actions,
		ProtocolMask: v2Protocol,
	}
	if v6 {
		opts.ActionMask, opts.ProtocolMask = v6Actions, v6Protocol
	}
	return milter.NewClientWithOptions("tcp", addr, opts)
}

// Message is what one SMTP transaction gave: the reply to MAIL FROM and,
// when the message went on, the end-of-message actions.
type Message struct {
	Case     *Case
	ClientIP string
	// Mail is the milter's answer to MAIL FROM.
	Mail *milter.Action
	// Mods and End are the modifications and final action at the end of
	// the message; nil when the message ended at MAIL FROM.
	Mods []milter.ModifyAction
	End  *milter.Action
}

// session plays one SMTP connection through Postfix with one message:
// connect, HELO, MAIL FROM, RCPT TO, header fields, end of headers, body
// if asked for, end of message, quit. A refusal at MAIL FROM ends it
// there, as Postfix would. The client connects from ipText; seq numbers
// the message (queue id, subject).
func session(client *milter.Client, c *Case, ipText string, seq int) (*Message, error) {
	s, err := openSession(client, c, ipText, seq)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return sendMessage(s, c, ipText, seq)
}

// openSession connects to the milter and plays an SMTP client's
// connection and HELO, leaving the session ready for MAIL FROM.
func openSession(client *milter.Client, c *Case, ipText string, seq int) (*milter.ClientSession, error) {
	ip, err := netip.ParseAddr(ipText)
	if err != nil {
		return nil, err
	}
	family := milter.FamilyInet
	if ip.Is6() {
		family = milter.FamilyInet6
	}
	s, err := client.Session()
	if err != nil {
		return nil, err
	}
	clientName := "unknown"
	err = s.Macros(milter.CodeConn, "j", receiverName, "{daemon_name}", "smtpd", "{daemon_addr}", "127.0.0.1",
		"v", "Postfix 3.7.11", "_", clientName+" ["+ipText+"]")
	if err == nil {
		var act *milter.Action
		act, err = s.Conn(clientName, family, 40000+uint16(seq%20000), ipText)
		err = wantContinue("connect", act, err)
		if err == nil {
			act, err = s.Helo(c.HELO)
			err = wantContinue("helo", act, err)
		}
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// wantContinue turns an answer other than continue into an error.
func wantContinue(stage string, act *milter.Action, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", stage, err)
	}
	if act.Code != milter.ActContinue {
		return fmt.Errorf("%s: got %s, want continue", stage, describe(act))
	}
	return nil
}

// sendMessage plays one SMTP transaction over an open session: MAIL FROM,
// RCPT TO, header fields, end of headers, body if asked for, end of
// message. A refusal at MAIL FROM ends it there, as Postfix would.
func sendMessage(s *milter.ClientSession, c *Case, ipText string, seq int) (*Message, error) {
	qid := fmt.Sprintf("4Q%07X", seq&0xfffffff)
	msg := &Message{Case: c, ClientIP: ipText}
	if err := s.Macros(milter.CodeMail, "{mail_addr}", c.Sender, "{mail_host}", c.Domain(), "{mail_mailer}", "smtp"); err != nil {
		return nil, err
	}
	var err error
	msg.Mail, err = s.Mail(c.Sender, []string{"SIZE=" + strconv.Itoa(1800+len(body))})
	if err != nil {
		return nil, fmt.Errorf("mail: %w", err)
	}
	if msg.Mail.Code != milter.ActContinue {
		return msg, nil
	}
	if err := s.Macros(milter.CodeRcpt, "i", qid, "{rcpt_addr}", recipient, "{rcpt_host}", "bench.example", "{rcpt_mailer}", "virtual"); err != nil {
		return nil, err
	}
	act, err := s.Rcpt(recipient, nil)
	if err := wantContinue("rcpt", act, err); err != nil {
		return nil, err
	}
	for _, h := range headerFields(c, ipText, qid, seq) {
		act, err = s.HeaderField(h[0], h[1])
		if err := wantContinue("header "+h[0], act, err); err != nil {
			return nil, err
		}
	}
	if err := s.Macros(milter.CodeEOH, "i", qid); err != nil {
		return nil, err
	}
	act, err = s.HeaderEnd()
	if err := wantContinue("end of headers", act, err); err != nil {
		return nil, err
	}
	if !s.ProtocolOption(milter.OptNoBody) {
		act, err = s.BodyChunk(body)
		if err != nil {
			return nil, fmt.Errorf("body: %w", err)
		}
		if act.Code != milter.ActContinue && act.Code != milter.ActSkip {
			return nil, fmt.Errorf("body: got %s, want continue", describe(act))
		}
	}
	if err := s.Macros(milter.CodeEOB, "i", qid); err != nil {
		return nil, err
	}
	msg.Mods, msg.End, err = s.End()
	if err != nil {
		return nil, fmt.Errorf("end of message: %w", err)
	}
	return msg, nil
}

// headerFields are the fields of a typical message as Postfix passes them:
// its own Received field first, then the message's.
func headerFields(c *Case, ip, qid string, seq int) [][2]string {
	date := "Thu, 26 Nov 2026 10:00:00 +0000"
	return [][2]string{
		{"Received", fmt.Sprintf("from %s (unknown [%s])\n\tby %s (Postfix) with ESMTPS id %s\n\tfor <%s>; %s", c.HELO, ip, receiverName, qid, recipient, date)},
		{"DKIM-Signature", "v=1; a=rsa-sha256; c=relaxed/relaxed; d=" + c.Domain() + "; s=s1;\n\th=from:to:subject:date:message-id:mime-version; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\n\tb=dzdVyOfAKCdLXdJOc9G2q8LoXSlEniSbav+yuU4zGeeruD00lszZVoG4ZHRNiYzR"},
		{"From", "<" + c.Sender + ">"},
		{"To", "<" + recipient + ">"},
		{"Subject", fmt.Sprintf("Your order #%d has shipped", seq)},
		{"Date", date},
		{"Message-ID", fmt.Sprintf("<%d.%s@%s>", seq, qid, c.Domain())},
		{"MIME-Version", "1.0"},
		{"Content-Type", "text/plain; charset=utf-8"},
	}
}

func describe(act *milter.Action) string {
	switch act.Code {
	case milter.ActAccept:
		return "accept"
	case milter.ActContinue:
		return "continue"
	case milter.ActDiscard:
		return "discard"
	case milter.ActReject:
		return "reject"
	case milter.ActTempFail:
		return "tempfail"
	case milter.ActSkip:
		return "skip"
	case milter.ActReplyCode:
		return fmt.Sprintf("reply %d %q", act.SMTPCode, act.SMTPText)
	}
	return fmt.Sprintf("action %q", rune(act.Code))
}

// idleSession connects and goes as far as HELO, then leaves the session
// open, as an SMTP client that is slow to send MAIL FROM would.
func idleSession(client *milter.Client, ip string) (*milter.ClientSession, error) {
	s, err := client.Session()
	if err != nil {
		return nil, err
	}
	if err := s.Macros(milter.CodeConn, "j", receiverName, "{daemon_name}", "smtpd", "v", "Postfix 3.7.11"); err != nil {
		s.Close()
		return nil, err
	}
	act, err := s.Conn("unknown", milter.FamilyInet, 40000, ip)
	if err == nil && act.Code != milter.ActContinue {
		err = fmt.Errorf("connect: got %s", describe(act))
	}
	if err == nil {
		act, err = s.Helo("idle.isp.example")
		if err == nil && act.Code != milter.ActContinue {
			err = fmt.Errorf("helo: got %s", describe(act))
		}
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}
