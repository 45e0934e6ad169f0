package policy

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/spf"
)

// Rule is one compiled rule of the config: its matchers and what it does.
// It is immutable.
type Rule struct {
	// Name is the rule's name in the config.
	Name string
	// Until is the day (00:00 UTC) from which the rule no longer applies;
	// zero for no end.
	Until time.Time
	// Skip lets the message through unchecked.
	Skip bool

	senderDomain, helo, clientName *domainSet
	client                         []netip.Prefix
	listener                       []string
	mailFrom, heloActions          map[spf.Result]config.Action
}

// domainSet matches a name on label boundaries: exact names, and names
// below a suffix.
type domainSet struct {
	exact map[string]bool
	// below are the suffixes of ".example.com" items, dot included.
	below []string
}

func newDomainSet(items []string) *domainSet {
	if items == nil {
		return nil
	}
	s := &domainSet{exact: map[string]bool{}}
	for _, it := range items {
		if strings.HasPrefix(it, ".") {
			s.below = append(s.below, it)
		} else {
			s.exact[it] = true
		}
	}
	return s
}

// match reports whether name, in any case and with or without a final
// dot, is one of the names or below one of the suffixes.
func (s *domainSet) match(name string) bool {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if name == "" {
		return false
	}
	if s.exact[name] {
		return true
	}
	for _, suf := range s.below {
		if len(name) > len(suf) && strings.HasSuffix(name, suf) {
			return true
		}
	}
	return false
}

// compileRules turns the config's rules into matchers.
func compileRules(rules []config.Rule) []*Rule {
	out := make([]*Rule, len(rules))
	for i, r := range rules {
		out[i] = &Rule{
			Name: r.Name, Until: r.Until, Skip: r.Skip,
			senderDomain: newDomainSet(r.When.SenderDomain),
			helo:         newDomainSet(r.When.HELO),
			clientName:   newDomainSet(r.When.ClientName),
			client:       r.When.Client,
			listener:     r.When.Listener,
			mailFrom:     r.MailFrom,
			heloActions:  r.HELO,
		}
	}
	return out
}

// UsesClientName reports whether the rule has a client_name condition.
func (r *Rule) UsesClientName() bool { return r.clientName != nil }

// UsesListener reports whether the rule has a listener condition.
func (r *Rule) UsesListener() bool { return r.listener != nil }

// Active reports whether the rule still applies at t.
func (r *Rule) Active(t time.Time) bool {
	return r.Until.IsZero() || t.Before(r.Until)
}

// facts is what a rule is matched against: a Message, with its client
// name looked up once at most.
type facts struct {
	m         *Message
	name      string
	nameKnown bool
}

func (f *facts) clientName() string {
	if !f.nameKnown {
		f.nameKnown = true
		f.name = f.m.ConfirmedName
		if f.name == "" && f.m.LookupName != nil {
			f.name = f.m.LookupName()
		}
	}
	return f.name
}

// match reports whether the rule applies to the message: every condition
// given holds, and the rule has not expired.
func (r *Rule) match(f *facts) bool {
	m := f.m
	if !r.Active(m.when()) {
		return false
	}
	if r.senderDomain != nil && !r.senderDomain.match(senderDomain(m.Sender)) {
		return false
	}
	if r.helo != nil && !r.helo.match(m.HELO) {
		return false
	}
	if r.client != nil && !inPrefixes(r.client, m.ClientIP) {
		return false
	}
	if r.listener != nil && !slices.Contains(r.listener, m.Listener) {
		return false
	}
	if r.clientName != nil && !r.clientName.match(f.clientName()) {
		return false
	}
	return true
}

// matchesButListener reports whether the rule would apply to m if its
// listener condition held: for the why page, which has no listener.
func (r *Rule) matchesButListener(f *facts) bool {
	if r.listener == nil {
		return false
	}
	c := *r
	c.listener = nil
	return c.match(f)
}

// ListenerRuleMayApply reports whether a rule with a listener condition
// could apply to m were its listener known: one whose other conditions
// hold, before the first rule that applies without it. The why page,
// which has no listener, says so.
func (p *Policy) ListenerRuleMayApply(m Message) bool {
	f := &facts{m: &m}
	for _, r := range p.rules {
		if r.matchesButListener(f) {
			return true
		}
		if r.match(f) {
			return false
		}
	}
	return false
}

// senderDomain is the domain of a MAIL FROM address; "" for the null
// sender, which no sender_domain condition matches.
func senderDomain(sender string) string {
	at := strings.LastIndexByte(sender, '@')
	if at < 0 {
		return ""
	}
	return sender[at+1:]
}

// firstRule returns the first rule of rules that applies to f, nil when
// none does.
func firstRule(rules []*Rule, f *facts) *Rule {
	for _, r := range rules {
		if r.match(f) {
			return r
		}
	}
	return nil
}

// Rule returns the rule that applies to m, nil when none does. Rules are
// tried in the order of the config; the skip lists are not consulted
// (Skip does that first).
func (p *Policy) Rule(m Message) *Rule {
	return firstRule(p.rules, &facts{m: &m})
}

// NeedsClientName reports whether some rule, live or shadow, has a
// client_name condition: only then is the client's name looked up.
func (p *Policy) NeedsClientName() bool { return p.needsName }

// NeedsListener reports whether some rule, live or shadow, has a listener
// condition: only then is the listener recorded.
func (p *Policy) NeedsListener() bool { return p.needsListener }

// ShadowEnabled reports whether the config has a shadow policy.
func (p *Policy) ShadowEnabled() bool { return p.shadow != nil }

// ShadowChecksHELO reports whether the shadow policy can act on a HELO
// result, so that a session checks HELO for it too.
func (p *Policy) ShadowChecksHELO() bool { return p.shadow != nil && p.shadow.checksHELO }

// Expiry is a rule whose until is near.
type Expiry struct {
	Rule  string
	Until time.Time
	// Shadow tells a rule of shadow.rules.
	Shadow bool
	// Expired tells that the rule no longer applies.
	Expired bool
}

// ExpiryWindow is how long before and after its until a rule is warned
// about at each load.
const ExpiryWindow = 7 * 24 * time.Hour

// Expiring lists the rules, live and shadow, whose until is within
// ExpiryWindow of now, before or after.
func (p *Policy) Expiring(now time.Time) []Expiry {
	var out []Expiry
	add := func(rules []*Rule, shadow bool) {
		for _, r := range rules {
			if r.Until.IsZero() {
				continue
			}
			if d := r.Until.Sub(now); d <= ExpiryWindow && d >= -ExpiryWindow {
				out = append(out, Expiry{Rule: r.Name, Until: r.Until, Shadow: shadow, Expired: !r.Active(now)})
			}
		}
	}
	add(p.rules, false)
	if p.shadow != nil {
		add(p.shadow.rules, true)
	}
	return out
}

// maxNames bounds the PTR names a client name lookup confirms, each
// costing two queries.
const maxNames = 5

// ConfirmName finds the forward-confirmed reverse DNS name of ip: a name
// of its PTR records whose A or AAAA records give ip back. It returns ""
// with a nil error when there is none, and the error of a lookup that
// failed (other than "no such name") when none could be confirmed.
func ConfirmName(ctx context.Context, r spf.Resolver, ip netip.Addr) (string, error) {
	names, err := r.LookupPTR(ctx, ip)
	if err != nil {
		if spf.IsNotFound(err) {
			return "", nil
		}
		return "", err
	}
	var failed error
	for i, name := range names {
		if i == maxNames {
			break
		}
		lookup := r.LookupA
		if ip.Is6() {
			lookup = r.LookupAAAA
		}
		addrs, err := lookup(ctx, name)
		if err != nil {
			if !spf.IsNotFound(err) && failed == nil {
				failed = err
			}
			continue
		}
		for _, a := range addrs {
			if a.Unmap() == ip.Unmap() {
				return strings.ToLower(strings.TrimSuffix(name, ".")), nil
			}
		}
	}
	return "", failed
}

// ShadowDecision is what the shadow policy would have done with a
// message: never applied.
type ShadowDecision struct {
	// Known is false when the shadow cannot decide: the live policy
	// skipped the message by a rule, so it was not checked, and no
	// shadow rule skips it.
	Known bool
	// Action is the shadow's action (accept for a skipped message).
	Action config.Action
	// Rule names the shadow rule that applied, "" when none.
	Rule string
	// Skipped tells a message the shadow would not check.
	Skipped bool
}

// matrix is a result-to-action policy per identity with its rules: the
// live one or the shadow.
type matrix struct {
	mailFrom, helo map[spf.Result]config.Action
	rules          []*Rule
	checksHELO     bool
}

// newMatrix compiles a policy over base with overrides over it.
func newMatrix(base config.Policy, over config.Policy, rules []config.Rule) *matrix {
	m := &matrix{mailFrom: overlay(base.MailFrom, over.MailFrom), helo: overlay(base.HELO, over.HELO), rules: compileRules(rules)}
	m.checksHELO = acts(m.helo)
	for _, r := range m.rules {
		m.checksHELO = m.checksHELO || acts(r.heloActions)
	}
	return m
}

// overlay is base with the results of over replaced.
func overlay(base, over map[spf.Result]config.Action) map[spf.Result]config.Action {
	if len(over) == 0 {
		return base
	}
	out := make(map[spf.Result]config.Action, len(base))
	for r, a := range base {
		out[r] = a
	}
	for r, a := range over {
		out[r] = a
	}
	return out
}

// acts reports whether actions name one other than accept.
func acts(actions map[spf.Result]config.Action) bool {
	for _, a := range actions {
		if a != "" && a != config.Accept {
			return true
		}
	}
	return false
}

// action is the action of the matrix, under rule r (nil for none), for
// o; byRule tells that r's overrides named it.
func (x *matrix) action(r *Rule, o *spf.Outcome) (a config.Action, byRule bool) {
	actions := x.mailFrom
	var over map[spf.Result]config.Action
	if r != nil {
		over = r.mailFrom
	}
	if o.Identity == spf.IdentityHELO {
		actions = x.helo
		over = nil
		if r != nil {
			over = r.heloActions
		}
	}
	if a, ok := over[o.Result]; ok && a != "" {
		return a, true
	}
	if a, ok := actions[o.Result]; ok && a != "" {
		return a, false
	}
	return config.Accept, false
}

// Shadow applies the shadow policy to message m, whose live checks gave
// mailFrom and helo (nil when not made): the skip lists first, as for the
// live policy, then the shadow's rules, then its matrix, the stronger of
// the two identities winning as in DecideMessage. Without a shadow policy
// it returns a ShadowDecision that is not Known.
func (p *Policy) Shadow(m Message, mailFrom, helo *spf.Outcome) ShadowDecision {
	x := p.shadow
	if x == nil {
		return ShadowDecision{}
	}
	if p.skipLists(m) != NotSkipped {
		return ShadowDecision{Known: true, Action: config.Accept, Skipped: true}
	}
	f := &facts{m: &m}
	r := firstRule(x.rules, f)
	d := ShadowDecision{Known: true, Action: config.Accept}
	if r != nil {
		d.Rule = r.Name
		if r.Skip {
			d.Skipped = true
			return d
		}
	}
	if mailFrom == nil && helo == nil {
		return ShadowDecision{}
	}
	if mailFrom != nil {
		d.Action, _ = x.action(r, mailFrom)
	}
	if helo != nil && x.checksHELO {
		if a, _ := x.action(r, helo); severity(a) > severity(d.Action) {
			d.Action = a
		}
	}
	return d
}

// RuleNote says in words what a rule did to a decision, for the why page:
// "this site accepts permerror from partner.example (rule partner-grace)
// until 2027-03-01". It is "" when no rule's overrides named the result.
func RuleNote(d Decision, o *spf.Outcome) string {
	if d.Rule == "" || !d.ByRule || o == nil {
		return ""
	}
	verb := map[config.Action]string{
		config.Accept: "accepts", config.Reject: "rejects", config.Tempfail: "defers", config.Quarantine: "quarantines",
	}[d.Action]
	s := fmt.Sprintf("this site %s %s from %s (rule %s)", verb, o.Result, o.Domain, d.Rule)
	if !d.RuleUntil.IsZero() {
		s += " until " + d.RuleUntil.Format(time.DateOnly)
	}
	return s
}
