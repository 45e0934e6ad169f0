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
// facts of a message are passed as a Message: the config's rules select on
// its sender domain, HELO name, client, confirmed client name and listener
// (Rule), and the shadow policy is decided beside the real one (Shadow).
package policy

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/spf"
)

// Policy is the decision of one config. It is immutable and safe for
// concurrent use.
type Policy struct {
	cfg *config.Config
	// checksHELO is computed once: a session asks at every message.
	checksHELO bool
	// live is the global matrix with the rules; rules are its rules.
	live  *matrix
	rules []*Rule
	// shadow is the shadow policy, nil when the config has none.
	shadow *matrix
	// needsName and needsListener tell whether some rule, live or
	// shadow, has a client_name or a listener condition.
	needsName, needsListener bool
}

// New returns the policy of cfg, which must not change afterwards: a
// reload makes a new config and a new Policy. Its rules are compiled
// here, once.
func New(cfg *config.Config) *Policy {
	p := &Policy{cfg: cfg, live: newMatrix(cfg.Policy, config.Policy{}, cfg.Rules)}
	p.rules, p.checksHELO = p.live.rules, p.live.checksHELO
	all := p.rules
	if cfg.Shadow.Enabled() {
		p.shadow = newMatrix(cfg.Policy, cfg.Shadow.Policy, cfg.Shadow.Rules)
		all = append(slices.Clip(all), p.shadow.rules...)
	}
	for _, r := range all {
		p.needsName = p.needsName || r.UsesClientName()
		p.needsListener = p.needsListener || r.UsesListener()
	}
	return p
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
	// Listener is the MTA's {daemon_name}: the smtpd service or daemon
	// that took the connection; "" when not sent, which no listener
	// condition matches.
	Listener string
	// ConfirmedName is the client's forward-confirmed reverse DNS name
	// (ConfirmName), "" when it has none or it was not looked up. When it
	// is "" and LookupName is set, LookupName gives it, called only when
	// a rule with a client_name condition is tried: a lookup costs DNS
	// queries.
	ConfirmedName string
	LookupName    func() string
	// Time is when the message is decided, for the rules' until; zero
	// means now.
	Time time.Time
}

// when is the time m is decided at.
func (m *Message) when() time.Time {
	if m.Time.IsZero() {
		return time.Now()
	}
	return m.Time
}

// ChecksHELO reports whether the HELO identity is checked: only when the
// HELO policy, or a rule's HELO overrides, can act on some result, since a check whose every result is
// accepted would cost DNS lookups for nothing.
func (p *Policy) ChecksHELO() bool {
	return p.checksHELO
}

// Decide applies the policy to o, one outcome of message m: the action
// for o's identity and result, and for a refusal its reply. A nil outcome
// (nothing checked) is accepted. A result the policy does not name is
// accepted, since config fills in every result.
//
// The first rule that applies to m (Rule) replaces the global matrix for
// the results it names; Decision.Rule names it.
func (p *Policy) Decide(m Message, o *spf.Outcome) Decision {
	return p.decide(p.Rule(m), o)
}

// decide is Decide under rule r, nil for none.
func (p *Policy) decide(r *Rule, o *spf.Outcome) Decision {
	cfg := p.cfg
	d := Decision{Action: config.Accept, DryRun: cfg.DryRun}
	if r != nil {
		d.Rule, d.RuleUntil = r.Name, r.Until
	}
	if o == nil {
		return d
	}
	d.Action, d.ByRule = p.live.action(r, o)
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
	r := p.Rule(m)
	d, by := p.decide(r, mailFrom), mailFrom
	if helo != nil && p.checksHELO {
		if hd := p.decide(r, helo); severity(hd.Action) > severity(d.Action) {
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
