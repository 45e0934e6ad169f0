// Package milter is the SPF milter: it checks the HELO and MAIL FROM
// identities of every SMTP transaction an MTA (Postfix, Sendmail) hands it
// over the milter protocol, applies the configured policy, and leaves the
// result in Received-SPF and Authentication-Results headers.
package milter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/milter/internal/wire"
	"github.com/spf-milter/spf-milter/policy"
	"github.com/spf-milter/spf-milter/spf"
)

// Runtime is what a session works with. A session takes it once at connect
// and keeps it for the whole connection, so that a reload never changes the
// rules in the middle of a transaction.
type Runtime struct {
	Config *config.Config
	// Policy is Config's policy; nil means policy.New(Config), made by
	// each session for itself.
	Policy  *policy.Policy
	Checker *spf.Checker
	// Log receives the decisions; nil means slog.Default().
	Log *slog.Logger
	// Metrics counts checks, actions and sessions; nil counts nothing.
	// Every Runtime of a process shares one, so that counters survive
	// reloads.
	Metrics *Metrics
	// Decisions receives every message's decision for the decision log;
	// nil records nothing.
	Decisions policy.DecisionRecorder
}

// NewServer returns a milter server whose sessions take their Runtime from
// current when they start.
//
// go-milter makes a new session object after every final response, losing
// the connection data. So a session never gives one: it refuses with a
// custom reply (which the library counts as non-final) and otherwise
// continues, and one object serves the whole connection.
func NewServer(current func() *Runtime) *gomilter.Server {
	return &gomilter.Server{
		NewMilter: func() gomilter.Milter { return &session{current: current} },
		Actions:   gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptQuarantine,
		Protocol:  gomilter.OptNoBody | gomilter.OptNoUnknown | gomilter.OptNoData,
	}
}

// session is the milter for one MTA connection. go-milter calls it from one
// goroutine, one callback at a time.
type session struct {
	current func() *Runtime
	rt      *Runtime
	// pol is rt's policy, taken with rt.
	pol *policy.Policy
	// link is the connection the session serves, when a Daemon serves it
	// (sessionBinder); nil otherwise, and the checks then run until their
	// own timeout.
	link sessionConn
	conn connState
	msg  messageState
}

// bindSession implements sessionBinder.
func (s *session) bindSession(c sessionConn) { s.link = c }

// connState lives as long as the SMTP connection.
type connState struct {
	// started is set once the connection data is known, from Connect or,
	// for an object made mid-connection, from the macros.
	started  bool
	ip       netip.Addr
	hostname string
	// skip says why this client is not checked at all.
	skip policy.Skip
	// relay is set when the client is in relays: each message is then
	// checked for the client the relay received it from (relay.go).
	relay bool
	helo  string
	// heloOutcome caches the HELO check of heloFor from heloIP, so that
	// the messages of one connection do not repeat it.
	heloOutcome *spf.Outcome
	heloFor     string
	heloIP      netip.Addr
	// failed is set when the connection stage failed internally: every
	// message then gets a tempfail.
	failed bool
	// addrProblem says why ip is unknown, for the log line of the
	// messages deferred for it.
	addrProblem string
	// listener is the MTA's {daemon_name}, sent with the connect data
	// only: go-milter replaces the macros at every packet.
	listener string
	// name is the client's forward-confirmed name once nameLooked: looked
	// up when a client_name rule is first tried, kept for the
	// connection. A failed lookup is not kept, and tried again.
	name       string
	nameLooked bool
}

// messageState lives from MAIL FROM to the end of the message or an abort.
type messageState struct {
	active  bool
	queueID string
	sender  string
	// skip says why the message is not checked, if it is not.
	skip     policy.Skip
	mailFrom *spf.Outcome
	helo     *spf.Outcome
	// decision is the one applied; decider the outcome it came from.
	decision policy.Decision
	decider  *spf.Outcome
	// atRcpt moves the refusal to RCPT TO, for recipients that are never
	// refused.
	atRcpt   bool
	duration time.Duration
	logged   bool
	failed   bool
	forged   forgedHeaders

	// authenticated is kept for the decision log.
	authenticated bool
	// rule names the rule that skipped the message (skip is SkipRule).
	rule string
	// nameFailed is set when the client name lookup failed for this
	// message: it is not tried again for it.
	nameFailed bool
	// shadow is the shadow policy's decision.
	shadow policy.ShadowDecision

	// For a message from a relay (connState.relay): origin reads its
	// Received fields; client and heloName are the client the relay
	// received it from, known at the end of the headers; relay is the
	// relay's address, set then. name is client's confirmed name once
	// nameLooked.
	origin     originWalk
	client     netip.Addr
	heloName   string
	relay      netip.Addr
	name       string
	nameLooked bool
}

var _ gomilter.Milter = (*session)(nil)

// runtime returns the session's Runtime, taking it from current the first
// time. It panics on an unusable Runtime, which the callback's guard turns
// into a tempfail.
func (s *session) runtime() *Runtime {
	if s.rt == nil {
		s.rt = s.current()
		s.pol = nil
	}
	if s.rt == nil || s.rt.Config == nil || s.rt.Checker == nil {
		panic("milter: no usable runtime (config or checker missing)")
	}
	if s.pol == nil {
		if s.pol = s.rt.Policy; s.pol == nil {
			s.pol = policy.New(s.rt.Config)
		}
	}
	return s.rt
}

// metrics returns the session's Metrics, nil when it has none (or no
// Runtime yet, as when taking one failed).
func (s *session) metrics() *Metrics {
	if s.rt == nil {
		return nil
	}
	return s.rt.Metrics
}

func (s *session) logger() *slog.Logger {
	if s.rt != nil && s.rt.Log != nil {
		return s.rt.Log
	}
	return slog.Default()
}

// Connect implements gomilter.Milter.
func (s *session) Connect(host, family string, port uint16, addr net.IP, m *gomilter.Modifier) (gomilter.Response, error) {
	return s.guard("connect", func() (gomilter.Response, error) {
		// A new connection takes the Runtime current now.
		s.rt = nil
		s.conn = connState{started: true, hostname: host, listener: macro(m, "daemon_name")}
		s.msg = messageState{}
		s.runtime()
		s.metrics().SessionStarted()
		if a, ok := netip.AddrFromSlice(addr); ok && addr != nil {
			s.conn.ip = a.Unmap().WithZone("")
			s.classifyClient()
		} else {
			s.conn.addrProblem = fmt.Sprintf("the connect data gives no address that can be read (family %q)", family)
			s.learnFromMacros(m)
		}
		return gomilter.RespContinue, nil
	})
}

// ensureConn rebuilds the connection data from macros when this object was
// made mid-connection, and retries the client address while it is unknown.
func (s *session) ensureConn(m *gomilter.Modifier) {
	s.runtime()
	if !s.conn.started {
		s.conn.started = true
		s.conn.hostname = macro(m, "client_name")
		s.conn.listener = macro(m, "daemon_name")
		if h := macro(m, "s"); h != "" {
			s.conn.helo = h
		}
	}
	s.learnFromMacros(m)
	s.refreshQueueID(m)
}

// learnFromMacros takes the client address from {client_addr} when the
// connect data did not give one, and then sorts the client out.
func (s *session) learnFromMacros(m *gomilter.Modifier) {
	if s.conn.ip.IsValid() {
		return
	}
	raw := macro(m, "client_addr")
	ip, ok := wire.ParseClientAddr(raw)
	if !ok {
		if raw != "" {
			s.conn.addrProblem = fmt.Sprintf("{client_addr} %q is not an IP address", raw)
		} else if s.conn.addrProblem == "" {
			s.conn.addrProblem = "no connect data and no {client_addr} macro"
		}
		return
	}
	s.conn.ip = ip
	s.classifyClient()
}

// classifyClient decides once per connection whether the client is
// checked at all.
func (s *session) classifyClient() {
	// A relay is a relay even when trusted_networks or skip_clients
	// names it too: relays is the more particular list.
	if s.conn.relay = s.pol.Relay(s.conn.ip); s.conn.relay {
		return
	}
	s.conn.skip = s.pol.SkipClient(policy.Message{ClientIP: s.conn.ip, ClientName: s.conn.hostname, HELO: s.conn.helo})
	if s.conn.skip != policy.NotSkipped {
		logSkip(s.logger(), s.conn.skip, "", s.conn.ip, s.conn.helo, "", false, "", policy.ShadowDecision{})
	}
}

// macro returns a macro's value whether the MTA sent its name with braces
// or, for a one-letter macro, without.
func macro(m *gomilter.Modifier, name string) string {
	if m == nil {
		return ""
	}
	if v := m.Macros["{"+name+"}"]; v != "" {
		return v
	}
	return m.Macros[name]
}

// refreshQueueID copies the queue id whenever a macro packet carries it:
// each packet replaces the last, and Postfix often knows the id only from
// RCPT TO on.
func (s *session) refreshQueueID(m *gomilter.Modifier) {
	if id := macro(m, "i"); id != "" {
		s.msg.queueID = id
	}
}

// Helo implements gomilter.Milter. The HELO identity is checked at MAIL
// FROM, where its refusal is answered: a reply at HELO would be lost by
// MTAs that delay rejections, and the check is needed only for messages.
func (s *session) Helo(name string, m *gomilter.Modifier) (gomilter.Response, error) {
	return s.guard("helo", func() (gomilter.Response, error) {
		s.ensureConn(m)
		// HELO or EHLO starts over (RFC 5321 §4.1.4).
		s.endMessage()
		s.conn.helo = name
		if s.conn.failed {
			return tempfailResponse(), nil
		}
		return gomilter.RespContinue, nil
	})
}

// MailFrom implements gomilter.Milter: the checks and the decision.
func (s *session) MailFrom(from string, m *gomilter.Modifier) (gomilter.Response, error) {
	return s.guard("mail", func() (gomilter.Response, error) {
		s.endMessage()
		s.ensureConn(m)
		s.msg.active = true
		s.msg.sender = from
		if s.conn.failed {
			s.msg.failed = true
			return tempfailResponse(), nil
		}
		return s.checkMessage(m)
	})
}

func (s *session) checkMessage(m *gomilter.Modifier) (gomilter.Response, error) {
	s.msg.authenticated = macro(m, "auth_authen") != ""
	if s.conn.skip != policy.NotSkipped {
		// Logged once at connect.
		s.msg.skip = s.conn.skip
		s.msg.shadow = s.pol.Shadow(s.message(), nil, nil)
		s.metrics().SkippedBy(s.conn.skip.Key(), "")
		s.metrics().Shadowed(s.msg.shadow, config.Accept)
		return gomilter.RespContinue, nil
	}
	if s.conn.relay {
		// The client is known at the end of the headers (relay.go).
		return gomilter.RespContinue, nil
	}
	return s.decide()
}

// skipped applies the skip lists and rules to msg, and reports whether
// they skip it.
func (s *session) skipped(msg policy.Message) bool {
	if s.msg.skip = s.pol.Skip(msg); s.msg.skip == policy.NotSkipped {
		return false
	}
	if s.msg.skip == policy.SkipRule {
		s.msg.rule = s.pol.Rule(msg).Name
	}
	s.msg.shadow = s.pol.Shadow(msg, nil, nil)
	s.metrics().SkippedBy(s.msg.skip.Key(), s.msg.rule)
	s.metrics().Shadowed(s.msg.shadow, config.Accept)
	logSkip(s.messageLogger(), s.msg.skip, s.msg.queueID, s.clientIP(), s.clientHELO(), s.msg.sender, true, s.msg.rule, s.msg.shadow)
	return true
}

// decide checks the message's client (clientIP, clientHELO) and applies
// the policy. A refusal is answered here, at MAIL FROM, or moved to RCPT
// TO; for a message from a relay, at the end of the message.
func (s *session) decide() (gomilter.Response, error) {
	cfg := s.rt.Config
	start := time.Now()
	// The checks end when the connection does: the MTA hanging up, an
	// idle timeout, a forced shutdown. The client name lookup of the
	// rules shares their deadline.
	ctx := context.Background()
	if s.link != nil {
		var stop func()
		ctx, stop = s.link.watch(s.link.Context())
		defer stop()
	}
	sessionCtx := ctx
	if t := cfg.DNS.CheckTimeout; t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	msg := s.message()
	msg.LookupName = func() string { return s.clientName(ctx) }
	if s.skipped(msg) {
		return gomilter.RespContinue, nil
	}

	ip, helo := s.clientIP(), s.clientHELO()
	if !ip.IsValid() {
		return s.noClientAddr(), nil
	}

	checker := s.rt.Checker
	// HELO is checked for the shadow policy too, but its outcome is the
	// message's (headers, log, decision log) only when the live policy
	// checks it: the shadow changes nothing.
	var heloOutcome *spf.Outcome
	if (s.pol.ChecksHELO() || s.pol.ShadowChecksHELO()) && helo != "" {
		if s.conn.heloOutcome == nil || s.conn.heloFor != helo || s.conn.heloIP != ip {
			s.conn.heloOutcome = untraced(checker.CheckHELO(ctx, ip, helo))
			s.conn.heloFor, s.conn.heloIP = helo, ip
			s.metrics().Checked(s.conn.heloOutcome)
		}
		heloOutcome = s.withRelay(s.conn.heloOutcome)
		if heloOutcome == nil {
			return nil, errors.New("HELO check gave no outcome")
		}
		if s.pol.ChecksHELO() {
			s.msg.helo = heloOutcome
		}
	}
	// The MAIL FROM identity is always checked, even after a HELO pass
	// (CVE-2019-20790); the null sender as postmaster@<HELO>.
	s.msg.mailFrom = s.withRelay(untraced(checker.CheckMailFrom(ctx, ip, s.msg.sender, helo)))
	if s.msg.mailFrom == nil {
		return nil, errors.New("MAIL FROM check gave no outcome")
	}
	if sessionCtx.Err() != nil {
		// Nobody is left to answer, and a check cut short decides nothing.
		return nil, mtaGoneError{err: context.Cause(sessionCtx), checking: true}
	}
	s.metrics().Checked(s.msg.mailFrom)
	s.msg.decision, s.msg.decider = s.pol.DecideMessage(msg, s.msg.mailFrom, s.msg.helo)
	s.msg.shadow = s.pol.Shadow(msg, s.msg.mailFrom, heloOutcome)
	s.msg.duration = time.Since(start)

	if !s.msg.decision.Refuses() || s.conn.relay {
		// Logged at the end of the message, when the queue id is known;
		// a message from a relay is refused there too.
		return gomilter.RespContinue, nil
	}
	if s.pol.RefusesAtRcpt() {
		s.msg.atRcpt = true
		return gomilter.RespContinue, nil
	}
	s.logDecision()
	return replyResponse(s.msg.decision), nil
}

// untraced drops the trace of o, which a session never reads: a check of
// a zone owner's records of thousands of terms writes megabytes of it,
// and the session would keep them until its message ends, a HELO check's
// until its connection does, long after the spf package's record budget
// has let them go.
func untraced(o *spf.Outcome) *spf.Outcome {
	if o != nil {
		o.Trace = nil
	}
	return o
}

// message is what the policy is told of the current message: for a
// message from a relay, of the client the relay received it from, but
// the listener is the connection's.
func (s *session) message() policy.Message {
	m := policy.Message{
		ClientIP:      s.conn.ip,
		ClientName:    s.conn.hostname,
		HELO:          s.conn.helo,
		Sender:        s.msg.sender,
		Authenticated: s.msg.authenticated,
		Listener:      s.conn.listener,
		ConfirmedName: s.conn.name,
	}
	if s.conn.relay {
		m.ClientIP, m.ClientName, m.HELO, m.ConfirmedName = s.msg.client, "", s.msg.heloName, s.msg.name
	}
	return m
}

// clientName looks the client's forward-confirmed name up, once per
// connection, within ctx, the checks' deadline. A failure is logged and
// gives no name: a client_name condition then does not match, and the
// message is decided as usual.
// For a message from a relay the name is that of the relay's client,
// kept for the message.
func (s *session) clientName(ctx context.Context) string {
	name, looked := &s.conn.name, &s.conn.nameLooked
	if s.conn.relay {
		name, looked = &s.msg.name, &s.msg.nameLooked
	}
	ip := s.clientIP()
	if *looked || s.msg.nameFailed || !ip.IsValid() {
		return *name
	}
	n, err := policy.ConfirmName(ctx, s.rt.Checker.Resolver, ip)
	if err != nil {
		s.msg.nameFailed = true
		s.messageLogger().Warn("client name lookup failed; client_name rules do not match", "queue_id", s.msg.queueID,
			"client_ip", addrString(ip), "error", err.Error())
		return ""
	}
	*name, *looked = n, true
	return n
}

func replyResponse(d policy.Decision) gomilter.Response {
	return gomilter.NewResponseStr(byte(gomilter.ActReplyCode), d.Reply())
}

// RcptTo implements gomilter.Milter: a refusal moved here refuses every
// recipient but those never refused.
func (s *session) RcptTo(rcpt string, m *gomilter.Modifier) (gomilter.Response, error) {
	return s.guard("rcpt", func() (gomilter.Response, error) {
		s.ensureConn(m)
		if s.msg.failed || s.conn.failed {
			return tempfailResponse(), nil
		}
		if s.msg.atRcpt && !s.pol.NeverRefused(rcpt) {
			return replyResponse(s.msg.decision), nil
		}
		return gomilter.RespContinue, nil
	})
}
