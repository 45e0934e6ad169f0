package milter

import (
	"errors"
	"fmt"
	"net/textproto"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/policy"
)

// Header implements gomilter.Milter: it notes forged copies of our
// headers, which can only be removed at the end of the message.
func (s *session) Header(name, value string, m *gomilter.Modifier) (gomilter.Response, error) {
	return s.guard("header", func() (gomilter.Response, error) {
		// go-milter keeps every field in this map, its own, until an abort,
		// though nothing reads it: emptied at each field it holds one.
		if m != nil {
			clear(m.Headers)
		}
		s.ensureConn(m)
		if s.msg.failed || s.conn.failed {
			return tempfailResponse(), nil
		}
		s.msg.forged.see(name, value, s.rt.Config.AuthservID)
		s.seeHeader(name, value)
		return gomilter.RespContinue, nil
	})
}

// Headers implements gomilter.Milter.
func (s *session) Headers(h textproto.MIMEHeader, m *gomilter.Modifier) (gomilter.Response, error) {
	return s.guard("eoh", func() (gomilter.Response, error) {
		clear(h) // go-milter's map, as in Header
		s.ensureConn(m)
		if s.msg.failed || s.conn.failed {
			return tempfailResponse(), nil
		}
		if s.conn.relay && s.msg.active && s.msg.mailFrom == nil && s.msg.skip == policy.NotSkipped {
			return s.decideRelayed()
		}
		return gomilter.RespContinue, nil
	})
}

// BodyChunk implements gomilter.Milter; the body is not asked for
// (OptNoBody), so this only runs with an MTA that ignores that.
func (s *session) BodyChunk(_ []byte, m *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}

// Body implements gomilter.Milter: the end of the message, the only place
// where headers may change. It answers continue, which the MTA takes as
// "no objection", never a final accept (docs/wire.md).
func (s *session) Body(m *gomilter.Modifier) (gomilter.Response, error) {
	return s.guard("eom", func() (gomilter.Response, error) {
		s.ensureConn(m)
		if s.msg.failed || s.conn.failed {
			return tempfailResponse(), nil
		}
		if s.conn.skip != policy.NotSkipped || s.msg.skip != policy.NotSkipped {
			// Mail from an authenticated client or a skipped sender comes
			// from outside and gets no header of ours, but must not carry
			// a forged one either. Trusted and skipped clients may be our
			// own content filter bringing our headers back: those stay.
			if s.conn.skip == policy.NotSkipped {
				if err := s.removeForged(m); err != nil {
					return nil, err
				}
			}
			s.endMessage()
			return gomilter.RespContinue, nil
		}
		if !s.msg.active || s.msg.mailFrom == nil {
			// This object never saw the MAIL FROM of the message it is
			// asked to pass: it cannot vouch for it.
			return nil, errors.New("end of message without a checked MAIL FROM")
		}
		if s.conn.relay && s.msg.decision.Refuses() {
			// Decided at the end of the headers, refused now.
			s.logDecision()
			resp := replyResponse(s.msg.decision)
			s.endMessage()
			return resp, nil
		}
		if err := s.editHeaders(m); err != nil {
			return nil, err
		}
		if d := s.msg.decision; d.Action == config.Quarantine && !d.DryRun {
			if err := m.Quarantine(d.Text); err != nil {
				return nil, mtaGoneError{err: fmt.Errorf("quarantine: %w", err)}
			}
		}
		s.endMessage()
		return gomilter.RespContinue, nil
	})
}

// editHeaders removes forged headers and inserts ours at the top. Its
// errors are mtaGoneError: a Modifier fails only when writing to the MTA
// does.
func (s *session) editHeaders(m *gomilter.Modifier) error {
	cfg := s.rt.Config
	if err := s.removeForged(m); err != nil {
		return err
	}
	fields := HeaderFields(cfg, s.msg.mailFrom, s.msg.helo)
	// Each insertion at index 0 goes above the previous one: insert from
	// the bottom up so the message reads in HeaderFields order.
	for i := len(fields) - 1; i >= 0; i-- {
		if err := m.InsertHeader(0, fields[i].Name, fields[i].Value); err != nil {
			return mtaGoneError{err: fmt.Errorf("insert %s: %w", fields[i].Name, err)}
		}
	}
	return nil
}

// removeForged deletes the incoming copies of our headers, when the config
// says so.
func (s *session) removeForged(m *gomilter.Modifier) error {
	if !s.rt.Config.Headers.RemoveForged {
		return nil
	}
	changes, err := s.msg.forged.changes()
	if err != nil {
		return err
	}
	for _, c := range changes {
		if err := m.ChangeHeader(c.Index, c.Name, ""); err != nil {
			return mtaGoneError{err: fmt.Errorf("delete %s #%d: %w", c.Name, c.Index, err)}
		}
	}
	return nil
}

// Abort implements gomilter.Milter: the message ends, the connection stays.
func (s *session) Abort(m *gomilter.Modifier) error {
	_, _ = s.guard("abort", func() (gomilter.Response, error) {
		s.endMessage()
		return nil, nil
	})
	// An error would make go-milter drop the connection.
	return nil
}

// endMessage logs a decision not logged yet and forgets the message.
func (s *session) endMessage() {
	if s.msg.active && !s.msg.logged && s.msg.mailFrom != nil {
		s.logDecision()
	}
	if s.msg.active && !s.msg.logged && s.msg.skip != policy.NotSkipped {
		s.recordDecision()
	}
	s.msg = messageState{}
}

// logDecision logs the decision of a checked message, once, and counts
// its action.
func (s *session) logDecision() {
	s.msg.logged = true
	s.metrics().Decided(s.msg.decision)
	s.metrics().Shadowed(s.msg.shadow, s.msg.decision.Action)
	r := decisionRecord{
		Shadow:   s.msg.shadow,
		QueueID:  s.msg.queueID,
		ClientIP: s.clientIP(),
		HELO:     s.clientHELO(),
		Sender:   s.msg.sender,
		Outcome:  s.msg.decider,
		Decision: s.msg.decision,
		AtRcpt:   s.msg.atRcpt,
		Duration: s.msg.duration,
	}
	if s.msg.helo != nil && s.msg.helo != s.msg.decider {
		r.HELOOutcome = s.msg.helo
	}
	logDecision(s.messageLogger(), r)
	s.recordDecision()
}

// recordDecision hands the message's decision to the decision log, if
// there is one.
func (s *session) recordDecision() {
	s.msg.logged = true
	if s.rt == nil || s.rt.Decisions == nil {
		return
	}
	d := policy.MessageDecision{
		Time:          time.Now(),
		QueueID:       s.msg.queueID,
		ClientIP:      s.clientIP(),
		HELO:          s.clientHELO(),
		Relay:         s.msg.relay,
		Sender:        s.msg.sender,
		Authenticated: s.msg.authenticated,
		Skipped:       s.msg.skip,
		MailFrom:      s.msg.mailFrom,
		HELOCheck:     s.msg.helo,
		Decision:      s.msg.decision,
		DecidedBy:     s.msg.decider,
		AtRcpt:        s.msg.atRcpt,
		Duration:      s.msg.duration,
		Rule:          s.msg.rule,
		Shadow:        s.msg.shadow,
	}
	if s.msg.skip == policy.NotSkipped {
		d.Rule = s.msg.decision.Rule
	}
	// The facts rules select on, so that a replay applies them as the
	// daemon did.
	if s.pol.NeedsListener() {
		d.Listener = s.conn.listener
	}
	if s.pol.NeedsClientName() && s.conn.nameLooked && !s.conn.relay {
		d.ClientName, d.ClientNameKnown = s.conn.name, true
	}
	if s.pol.NeedsClientName() && s.msg.nameLooked {
		d.ClientName, d.ClientNameKnown = s.msg.name, true
	}
	s.rt.Decisions.RecordDecision(d)
}
