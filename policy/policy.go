// Package policy is spf-milter's decision: what a message's SPF outcomes
// mean for it under a config. It says which messages are not checked at
// all (Skip), whether the HELO identity is checked (ChecksHELO), and the
// action, SMTP reply, hold reason and why-page link an outcome leads to
// (Decide, DecideMessage).
//
// Every consumer asks it rather than deciding on its own: the milter
// session, "spf-milter check --config", the why page and the replay of the
// decision log. So a refusal, its explanation and a what-if answer can
// never disagree.
//
// A Policy is compiled from a config once and used by many goroutines. The
// facts of a message are passed as a Message, so that rules selecting on
// the sender domain, the client or the listener can be added here without
// changing the callers.
package policy

import (
	"net/netip"
	"strings"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/spf"
)

// Policy is the decision of one config. It is immutable and safe for
// concurrent use.
type Policy struct {
	cfg *config.Config
	// checksHELO is computed once: a session asks at every message.
	checksHELO bool
}

// New returns the policy of cfg, which must not change afterwards: a
// reload makes a new config and a new Policy.
func New(cfg *config.Config) *Policy {
	return &Policy{cfg: cfg, checksHELO: heloActs(cfg)}
}

// Message is what is known of one message when it is decided on: the
// facts a policy may select on. A field not known yet is zero.
type Message struct {
	// ClientIP is the SMTP client's address; invalid when the MTA gave
	// none that reads.
	ClientIP netip.Addr
	// ClientName is the client's host name as the MTA found it.
	ClientName string
	// HELO is the name the client gave in HELO or EHLO.
	HELO string
	// Sender is the MAIL FROM address, "" for the null sender.
	Sender string
	// Authenticated reports that the client authenticated
	// ({auth_authen}).
	Authenticated bool
}

// ChecksHELO reports whether the HELO identity is checked: only when the
// HELO policy can act on some result, since a check whose every result is
// accepted would cost DNS lookups for nothing.
func (p *Policy) ChecksHELO() bool {
	return p.checksHELO
}

// heloActs reports whether cfg's HELO policy names an action other than
// accept for some result.
func heloActs(cfg *config.Config) bool {
	for _, a := range cfg.Policy.HELO {
		if a != "" && a != config.Accept {
			return true
		}
	}
	return false
}

// Decide applies the policy to o, one outcome of message m: the action
// for o's identity and result, and for a refusal its reply. A nil outcome
// (nothing checked) is accepted. A result the policy does not name is
// accepted, since config fills in every result.
func (p *Policy) Decide(m Message, o *spf.Outcome) Decision {
	cfg := p.cfg
	d := Decision{Action: config.Accept, DryRun: cfg.DryRun}
	if o == nil {
		return d
	}
	actions := cfg.Policy.MailFrom
	if o.Identity == spf.IdentityHELO {
		actions = cfg.Policy.HELO
	}
	if a, ok := actions[o.Result]; ok && a != "" {
		d.Action = a
	}
	switch d.Action {
	case config.Reject, config.Tempfail:
		d.Code, d.Enhanced = replyCode(d.Action, o.Result)
		d.Text = replyText(cfg, o)
	case config.Quarantine:
		d.Text = quarantineReason(o)
	default:
		d.Action = config.Accept
	}
	return d
}

// DecideMessage applies the policy to the checks of message m: mailFrom
// is the MAIL FROM outcome, helo the HELO one or nil when HELO was not
// checked. A HELO outcome is left out when the policy does not check HELO
// (ChecksHELO), so that a caller holding one anyway (a live check, a
// recorded one) decides as a session would. The stronger action wins, the
// MAIL FROM one on a tie, so that a HELO pass never stands in for a MAIL
// FROM refusal. It returns the decision and the outcome it came from.
func (p *Policy) DecideMessage(m Message, mailFrom, helo *spf.Outcome) (Decision, *spf.Outcome) {
	d, by := p.Decide(m, mailFrom), mailFrom
	if helo != nil && p.checksHELO {
		if hd := p.Decide(m, helo); severity(hd.Action) > severity(d.Action) {
			d, by = hd, helo
		}
	}
	return d, by
}

// severity orders actions so that the stronger of the HELO and MAIL FROM
// decisions is applied.
func severity(a config.Action) int {
	switch a {
	case config.Reject:
		return 3
	case config.Tempfail:
		return 2
	case config.Quarantine:
		return 1
	}
	return 0
}

// RefusesAtRcpt reports whether a refusal is given at RCPT TO rather than
// at MAIL FROM: when some recipients are never refused (never_refuse),
// since MAIL FROM is refused for all recipients at once.
func (p *Policy) RefusesAtRcpt() bool {
	return len(p.cfg.NeverRefuse) > 0
}

// NeverRefused reports whether rcpt is one of the recipients that are
// never refused: an entry with '@' names a whole address, one without a
// local part in any domain. Both compare without regard to case.
func (p *Policy) NeverRefused(rcpt string) bool {
	local := rcpt
	if at := strings.LastIndexByte(rcpt, '@'); at >= 0 {
		local = rcpt[:at]
	}
	for _, e := range p.cfg.NeverRefuse {
		if strings.Contains(e, "@") {
			if strings.EqualFold(e, rcpt) {
				return true
			}
		} else if strings.EqualFold(e, local) {
			return true
		}
	}
	return false
}
