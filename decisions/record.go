// Package decisions is the decision log of spf-milter and what is done
// with it: one JSON line per message (Record), written by the daemon
// without ever holding a session up (Writer, rotated by size), read back
// line by line (Reader), and replayed under another config to show what a
// policy change would do before it is made (Replay).
package decisions

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/policy"
	"github.com/spf-milter/spf-milter/spf"
)

// Record is one line of the decision log: the decision on one message,
// with the result of each identity checked, so that a policy can be
// applied to the same results again (Policy.DecideMessage looks at the
// MAIL FROM and HELO outcomes together).
type Record struct {
	// Time is when the daemon finished with the decision, in UTC.
	Time    time.Time `json:"time"`
	QueueID string    `json:"queue_id,omitempty"`
	// ClientIP is the SMTP client's address; "" when the MTA gave none
	// that parses.
	ClientIP string `json:"client_ip"`
	HELO     string `json:"helo"`
	// Relay is the trusted relay (config relays) the message came
	// through; ClientIP and HELO are then those of the client the relay
	// received it from, as its Received field says.
	Relay string `json:"relay,omitempty"`
	// Sender is the MAIL FROM address; "" is the null sender.
	Sender string `json:"sender"`
	// Domain is the sender domain, lower case: the domain the MAIL FROM
	// check was about (the HELO name for the null sender). Replay groups
	// by it.
	Domain string `json:"domain"`
	// Authenticated reports that the client had authenticated, which a
	// config with skip_authenticated skips.
	Authenticated bool `json:"authenticated,omitempty"`
	// Skipped is the config key that let the message through unchecked:
	// trusted_networks, skip_clients, authenticated, skip_senders or rule
	// (Rule names it). A
	// skipped message has no checks.
	Skipped string `json:"skipped,omitempty"`
	// MailFrom and HELOCheck are the checks made; HELOCheck is absent when
	// the HELO policy could not refuse (the daemon then does not check it)
	// or the client gave no HELO.
	MailFrom  *Check `json:"mailfrom,omitempty"`
	HELOCheck *Check `json:"helo_check,omitempty"`
	// Identity and Result are those of the check that decided.
	Identity spf.Identity `json:"identity,omitempty"`
	Result   spf.Result   `json:"result,omitempty"`
	// Action is the policy's action, even in a dry run.
	Action config.Action `json:"action"`
	// Reply is the SMTP reply of a refusal, the hold reason of a
	// quarantine.
	Reply  string `json:"reply,omitempty"`
	DryRun bool   `json:"dry_run,omitempty"`
	// AtRcpt reports a refusal given at RCPT TO (never_refuse).
	AtRcpt bool `json:"at_rcpt,omitempty"`
	// DurationMS is how long the checks took, in milliseconds.
	DurationMS float64 `json:"duration_ms,omitempty"`
	// Rule names the rule that applied to the message: the one that
	// skipped it (Skipped is "rule") or whose policy decided it.
	Rule string `json:"rule,omitempty"`
	// Listener is the MTA's {daemon_name}, and ClientName the client's
	// forward-confirmed name ("" for none): recorded when a rule of the
	// config selects on them, so that a replay can apply it.
	Listener   string  `json:"listener,omitempty"`
	ClientName *string `json:"client_name,omitempty"`
	// ShadowAction is the shadow policy's action, never applied, and
	// ShadowRule the shadow rule that applied; absent without a shadow
	// policy.
	ShadowAction config.Action `json:"shadow_action,omitempty"`
	ShadowRule   string        `json:"shadow_rule,omitempty"`
}

// Check is the result of one identity's SPF check.
type Check struct {
	// Domain is the domain checked first: the MAIL FROM domain or the
	// HELO name.
	Domain string     `json:"domain"`
	Result spf.Result `json:"result"`
	// Mechanism is the deciding term as written in the record.
	Mechanism string `json:"mechanism,omitempty"`
	// Problem says what went wrong for temperror and permerror.
	Problem string `json:"problem,omitempty"`
}

// FromDecision makes the record of a session's decision.
func FromDecision(d policy.MessageDecision) Record {
	r := Record{
		Time:          d.Time.UTC(),
		QueueID:       d.QueueID,
		HELO:          d.HELO,
		Sender:        d.Sender,
		Authenticated: d.Authenticated,
		Skipped:       d.Skipped.Key(),
		MailFrom:      checkOf(d.MailFrom),
		HELOCheck:     checkOf(d.HELOCheck),
		Action:        d.Decision.Action,
		DryRun:        d.Decision.DryRun,
		AtRcpt:        d.AtRcpt,
		DurationMS:    float64(d.Duration.Microseconds()) / 1000,
		Rule:          d.Rule,
		Listener:      d.Listener,
	}
	if d.ClientNameKnown {
		name := d.ClientName
		r.ClientName = &name
	}
	if d.Shadow.Known {
		r.ShadowAction, r.ShadowRule = d.Shadow.Action, d.Shadow.Rule
	}
	if d.ClientIP.IsValid() {
		r.ClientIP = d.ClientIP.String()
	}
	if d.Relay.IsValid() {
		r.Relay = d.Relay.String()
	}
	if r.MailFrom != nil {
		r.Domain = normalDomain(r.MailFrom.Domain)
	} else {
		r.Domain = senderDomain(d.Sender, d.HELO)
	}
	if o := d.DecidedBy; o != nil {
		r.Identity, r.Result = o.Identity, o.Result
	}
	if r.Action == "" {
		// A skipped message has no decision: it passes.
		r.Action = config.Accept
	}
	switch r.Action {
	case config.Reject, config.Tempfail:
		r.Reply = d.Decision.Reply()
	case config.Quarantine:
		r.Reply = d.Decision.Text
	}
	return r
}

func checkOf(o *spf.Outcome) *Check {
	if o == nil {
		return nil
	}
	return &Check{Domain: o.Domain, Result: o.Result, Mechanism: o.Mechanism, Problem: o.Problem}
}

// senderDomain is the domain a MAIL FROM check would be about: the
// sender's, or the HELO name for the null sender (RFC 7208 §2.4).
func senderDomain(sender, helo string) string {
	if at := strings.LastIndexByte(sender, '@'); at >= 0 {
		return normalDomain(sender[at+1:])
	}
	if sender == "" {
		return normalDomain(helo)
	}
	return ""
}

func normalDomain(d string) string {
	return strings.ToLower(strings.TrimSuffix(d, "."))
}

// Validate reports what makes r unusable for a replay, nil when nothing
// does.
func (r *Record) Validate() error {
	if r.Time.IsZero() {
		return errors.New("no time")
	}
	if r.ClientIP != "" {
		if _, err := netip.ParseAddr(r.ClientIP); err != nil {
			return fmt.Errorf("client_ip %q is not an IP address", r.ClientIP)
		}
	}
	if r.Relay != "" {
		if _, err := netip.ParseAddr(r.Relay); err != nil {
			return fmt.Errorf("relay %q is not an IP address", r.Relay)
		}
	}
	switch r.Action {
	case config.Accept, config.Reject, config.Tempfail, config.Quarantine:
	default:
		return fmt.Errorf("action %q is not accept, reject, tempfail or quarantine", r.Action)
	}
	switch r.Skipped {
	case "":
		if r.MailFrom == nil {
			return errors.New("neither a mailfrom check nor a skipped reason")
		}
	case "trusted_networks", "skip_clients", "authenticated", "skip_senders":
	case "rule":
		if r.Rule == "" {
			return errors.New("skipped by a rule without its name")
		}
	default:
		return fmt.Errorf("skipped %q is not trusted_networks, skip_clients, authenticated, skip_senders or rule", r.Skipped)
	}
	for name, c := range map[string]*Check{"mailfrom": r.MailFrom, "helo_check": r.HELOCheck} {
		if c == nil {
			continue
		}
		if _, err := spf.ParseResult(string(c.Result)); err != nil {
			return fmt.Errorf("%s result %q is not an SPF result", name, c.Result)
		}
	}
	return nil
}

// message is what the policy is told of the recorded message: the facts
// of the session, at the time it was decided, so that a rule's until
// applies as it did then.
func (r *Record) message() policy.Message {
	m := policy.Message{ClientIP: r.ip(), HELO: r.HELO, Sender: r.Sender, Authenticated: r.Authenticated,
		Listener: r.Listener, Time: r.Time}
	if r.ClientName != nil {
		m.ConfirmedName = *r.ClientName
	}
	return m
}

// ip is the client address, invalid when unknown. Validate has checked
// it parses.
func (r *Record) ip() netip.Addr {
	a, _ := netip.ParseAddr(r.ClientIP)
	return a
}

// outcomes rebuilds the outcomes of the recorded checks, as much of them
// as a policy decision reads.
func (r *Record) outcomes() (mailFrom, helo *spf.Outcome) {
	ip := r.ip()
	if c := r.MailFrom; c != nil {
		sender := r.Sender
		if sender == "" {
			sender = "postmaster@" + r.HELO
		}
		mailFrom = &spf.Outcome{
			Result: c.Result, Identity: spf.IdentityMailFrom, Domain: c.Domain,
			Sender: sender, IP: ip, HELO: r.HELO, Mechanism: c.Mechanism, Problem: c.Problem,
		}
	}
	if c := r.HELOCheck; c != nil {
		helo = &spf.Outcome{
			Result: c.Result, Identity: spf.IdentityHELO, Domain: c.Domain,
			Sender: "postmaster@" + r.HELO, IP: ip, HELO: r.HELO, Mechanism: c.Mechanism, Problem: c.Problem,
		}
	}
	return mailFrom, helo
}
