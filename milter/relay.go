package milter

// Relays (config relays): a client that passes mail on to us is not
// checked itself. The session reads the Received fields of the message
// while its headers stream, walks down them past the relays' own hops,
// and checks the first client outside relays at the end of the headers;
// the decision is given at the end of the message (docs/relays.md).

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"

	gomilter "github.com/emersion/go-milter"

	"github.com/spf-milter/spf-milter/milter/internal/received"
	"github.com/spf-milter/spf-milter/policy"
	"github.com/spf-milter/spf-milter/spf"
)

// maxRelayHops bounds the Received fields read for one message: past it
// the message's client is not looked for further. Fifty relays in a row
// is a loop, not a gateway.
const maxRelayHops = 50

// originWalk reads one message's Received fields, topmost first, as the
// MTA passes them, until the first that names a client outside relays.
// It keeps no field: its memory is the same whatever the message holds.
type originWalk struct {
	// fields counts the Received fields read.
	fields int
	// done is set once the walk ended: with found and hop, the client
	// the relays received the message from; without, problem says why
	// none is known.
	done    bool
	found   bool
	hop     received.Hop
	problem string
}

// see reads one Received field.
func (w *originWalk) see(value string, pol *policy.Policy) {
	if w.done {
		return
	}
	w.fields++
	if w.fields > maxRelayHops {
		w.done, w.problem = true, fmt.Sprintf("more than %d Received fields of relays", maxRelayHops)
		return
	}
	hop, err := received.Parse(value)
	switch {
	case err != nil:
		w.done, w.problem = true, fmt.Sprintf("Received field %d: %v", w.fields, err)
	case pol.Relay(hop.IP):
		// A relay's own hop: the client is further down.
	case pol.Trusted(hop.IP):
		w.done, w.problem = true, fmt.Sprintf("Received field %d names %s, in trusted_networks: not believed", w.fields, hop.IP)
	default:
		w.done, w.found, w.hop = true, true, hop
	}
}

// result is what the walk found once the headers ended.
func (w *originWalk) result() (received.Hop, string) {
	switch {
	case w.found:
		return w.hop, ""
	case w.problem != "":
		return received.Hop{}, w.problem
	case w.fields == 0:
		return received.Hop{}, "no Received field"
	}
	return received.Hop{}, "no Received field names a client outside relays"
}

// seeHeader hands a Received field of a message from a relay to the walk.
func (s *session) seeHeader(name, value string) {
	if s.conn.relay && s.msg.active && strings.EqualFold(name, "Received") {
		s.msg.origin.see(value, s.pol)
	}
}

// decideRelayed decides a message from a relay at the end of its headers,
// for the client the relays received it from. The answer waits for the
// end of the message (Body).
func (s *session) decideRelayed() (gomilter.Response, error) {
	s.msg.relay = s.conn.ip
	hop, problem := s.msg.origin.result()
	if problem == "" {
		s.msg.client, s.msg.heloName = hop.IP, hop.HELO
		// The relay's own SMTP AUTH says nothing of its client: the
		// protocol of the relay's Received field does (ESMTPA, ESMTPSA).
		s.msg.authenticated = hop.Authenticated
		return s.decide()
	}
	s.msg.authenticated = false
	msg := s.message()
	if s.skipped(msg) {
		return gomilter.RespContinue, nil
	}
	s.messageLogger().LogAttrs(context.Background(), slog.LevelWarn, "spf client behind relay unknown, result none",
		slog.String("queue_id", s.msg.queueID),
		slog.String("sender", senderString(s.msg.sender)),
		slog.String("problem", problem))
	none := &spf.Outcome{
		Result:      spf.None,
		Identity:    spf.IdentityMailFrom,
		Sender:      s.msg.sender,
		Relay:       s.msg.relay,
		Problem:     problem,
		ProblemKind: spf.ProblemNoOrigin,
	}
	if at := strings.LastIndexByte(s.msg.sender, '@'); at >= 0 {
		none.Domain = s.msg.sender[at+1:]
	}
	s.msg.mailFrom = none
	s.metrics().Checked(none)
	s.msg.decision, s.msg.decider = s.pol.DecideMessage(msg, none, nil)
	s.msg.shadow = s.pol.Shadow(msg, none, nil)
	return gomilter.RespContinue, nil
}

// withRelay returns o marked as a check of the client the relay received
// the message from, when the message came through one; a copy, since o
// may be kept for the connection (the HELO check).
func (s *session) withRelay(o *spf.Outcome) *spf.Outcome {
	if o == nil || !s.msg.relay.IsValid() {
		return o
	}
	c := *o
	c.Relay = s.msg.relay
	return &c
}

// clientIP and clientHELO are the client the message is checked for:
// the connection's, or the one a relay received it from.
func (s *session) clientIP() netip.Addr {
	if s.conn.relay {
		return s.msg.client
	}
	return s.conn.ip
}

func (s *session) clientHELO() string {
	if s.conn.relay {
		return s.msg.heloName
	}
	return s.conn.helo
}

// messageLogger is the session's logger, naming the relay of a message
// that came through one.
func (s *session) messageLogger() *slog.Logger {
	if s.msg.relay.IsValid() {
		return s.logger().With("relay", s.msg.relay.String())
	}
	return s.logger()
}
