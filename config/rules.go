package config

import (
	"fmt"
	"strings"
	"time"

	"golang.org/x/net/idna"
	"gopkg.in/yaml.v3"

	"github.com/spf-milter/spf-milter/spf"
)

// The readers and printers of rules and shadow: a rule is a mapping of
// its own keys, read field by field like a section so that every problem
// has its line, key, bad value and allowed values.

// The forms of a rule's values.
const (
	allowedRule       = "a mapping with name, when, until, skip, mailfrom, helo"
	allowedRuleName   = "letters, digits, '.', '_' and '-', at most 64 characters"
	allowedDomainRule = "a domain in A-label form such as example.com (that name) or .example.com (its subdomains)"
	allowedListener   = "a {daemon_name} value such as smtpd or submission"
	allowedDate       = "a date YYYY-MM-DD such as 2027-03-01"
	allowedShadow     = "a mapping with mailfrom and helo, each result: action"
	maxRuleName       = 64
)

// conditionKeys are the keys of when:, in the order of the reference.
var conditionKeys = []string{"sender_domain", "helo", "client", "client_name", "listener"}

// readRules reads a list of rules into *dst: rules or shadow.rules.
func readRules(l *loader, key string, v *yaml.Node, allowed string, dst *[]Rule) {
	var out []Rule
	names := map[string]int{}
	// catchAll is the line of an earlier rule that matches every
	// message for ever, after which no rule can match.
	catchAll := 0
	i := 0
	l.list(key, v, allowed, func(item *yaml.Node) {
		i++
		rkey := fmt.Sprintf("%s[%d]", key, i)
		r, ok := l.rule(rkey, item)
		if !ok {
			return
		}
		if first, dup := names[r.Name]; dup {
			l.problems = append(l.problems, Problem{File: l.file, Line: item.Line, Key: rkey + ".name", Value: r.Name,
				Reason: fmt.Sprintf("duplicate rule name (first at line %d)", first), Allowed: "a name no other rule of the list has"})
			return
		}
		names[r.Name] = item.Line
		if catchAll > 0 {
			l.problems = append(l.problems, Problem{File: l.file, Line: item.Line, Key: rkey, Reason: fmt.Sprintf(
				"can never match: the rule at line %d before it matches every message (no when, no until)", catchAll), keyOnly: true})
			return
		}
		if r.When.Empty() && r.Until.IsZero() {
			catchAll = item.Line
		}
		out = append(out, r)
	})
	*dst = out
}

// rule reads one rule at key; ok is false after a problem was recorded.
func (l *loader) rule(key string, v *yaml.Node) (Rule, bool) {
	var r Rule
	if v.Kind != yaml.MappingNode {
		l.valueProblem(v, key, kindName(v)+", where a rule (a mapping) is needed", allowedRule)
		return r, false
	}
	before := len(l.problems)
	var nameNode, skipNode *yaml.Node
	overrides := false
	l.mapping(v, key, []field{
		{"name", func(k string, v *yaml.Node) {
			if s, ok := l.checked(k, v, allowedRuleName, checkRuleName); ok {
				r.Name, nameNode = s, v
			}
		}},
		{"when", func(k string, v *yaml.Node) { l.when(k, v, &r.When) }},
		{"until", func(k string, v *yaml.Node) {
			if s, ok := l.checked(k, v, allowedDate, checkDate); ok {
				r.Until, _ = time.Parse(time.DateOnly, s)
			}
		}},
		{"skip", func(k string, v *yaml.Node) {
			l.bool(k, v, allowedBool, &r.Skip)
			skipNode = v
		}},
		{"mailfrom", func(k string, v *yaml.Node) {
			r.MailFrom = l.overrides(k, v)
			overrides = overrides || r.MailFrom != nil
		}},
		{"helo", func(k string, v *yaml.Node) {
			r.HELO = l.overrides(k, v)
			overrides = overrides || r.HELO != nil
		}},
	})
	if len(l.problems) > before {
		return r, false
	}
	switch {
	case nameNode == nil:
		l.valueProblem(v, key, "no name: every rule needs one, to be told apart in logs and metrics", allowedRule)
	case r.Skip && overrides:
		l.valueProblem(skipNode, key+".skip", "skip: true with mailfrom or helo overrides; a skipped message is not checked, so give one or the other", allowedBool)
	case !r.Skip && !overrides:
		l.valueProblem(v, key, "neither skip: true nor mailfrom or helo overrides: the rule would do nothing", allowedRule)
	default:
		return r, true
	}
	return r, false
}

// when reads a rule's conditions. A condition given is a list of at
// least one item: an empty one could never match.
func (l *loader) when(key string, v *yaml.Node, w *When) {
	nonEmpty := func(k string, v *yaml.Node, allowed string) bool {
		if (v.Kind == yaml.SequenceNode && len(v.Content) == 0) || (v.Kind == yaml.ScalarNode && v.Tag == "!!null") {
			l.valueProblem(v, k, "an empty list can never match; leave the condition out to match any", "a list, each item "+allowed)
			return false
		}
		return true
	}
	domains := func(dst *[]string) func(k string, v *yaml.Node) {
		return func(k string, v *yaml.Node) {
			if nonEmpty(k, v, allowedDomainRule) {
				listOf(parseDomainPattern)(l, k, v, allowedDomainRule, dst)
			}
		}
	}
	l.mapping(v, key, []field{
		{"sender_domain", domains(&w.SenderDomain)},
		{"helo", domains(&w.HELO)},
		{"client", func(k string, v *yaml.Node) {
			if nonEmpty(k, v, allowedNetwork) {
				listOf(parseNetwork)(l, k, v, allowedNetwork, &w.Client)
			}
		}},
		{"client_name", domains(&w.ClientName)},
		{"listener", func(k string, v *yaml.Node) {
			if nonEmpty(k, v, allowedListener) {
				listOf(parseListener)(l, k, v, allowedListener, &w.Listener)
			}
		}},
	})
}

// overrides reads a rule's result-to-action mapping: only the results
// named, nil when none is.
func (l *loader) overrides(key string, v *yaml.Node) map[spf.Result]Action {
	m := map[spf.Result]Action{}
	readPolicy(l, key, v, allowedActions, &m)
	if len(m) == 0 {
		return nil
	}
	return m
}

// readShadowPolicy reads shadow.policy: overrides of the global matrix
// per identity.
func readShadowPolicy(l *loader, key string, v *yaml.Node, allowed string, dst *Policy) {
	l.mapping(v, key, []field{
		{"mailfrom", func(k string, v *yaml.Node) { dst.MailFrom = l.overrides(k, v) }},
		{"helo", func(k string, v *yaml.Node) { dst.HELO = l.overrides(k, v) }},
	})
}

// checkRuleName says what is wrong with a rule name, or "". Names are
// metric label values and log fields: short and plain.
func checkRuleName(s string) string {
	switch {
	case s == "":
		return "empty"
	case len(s) > maxRuleName:
		return fmt.Sprintf("longer than %d characters", maxRuleName)
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Sprintf("character %q not allowed in a rule name", c)
		}
	}
	return ""
}

// checkDate says what is wrong with a date of until, or "".
func checkDate(s string) string {
	if _, err := time.Parse(time.DateOnly, s); err != nil {
		return "not a date YYYY-MM-DD"
	}
	return ""
}

// parseDomainPattern reads a domain of a rule: lower-cased, without a
// final dot, a leading dot kept for "its subdomains". A name that is not
// ASCII is refused with its A-label form, which is what DNS and the MTA
// carry.
func parseDomainPattern(s string) (string, string) {
	if strings.Contains(s, "@") {
		return "", "an address, where a domain is needed"
	}
	sub := strings.HasPrefix(s, ".")
	d := strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(s, "."), "."))
	for _, r := range d {
		if r > 0x7f {
			a, err := idna.Lookup.ToASCII(d)
			if err != nil {
				return "", "not ASCII, and not a valid international name: " + err.Error()
			}
			if sub {
				a = "." + a
			}
			return "", fmt.Sprintf("not ASCII; write the international name in its A-label form, %s", a)
		}
	}
	if reason := checkHostname(d); reason != "" {
		return "", reason
	}
	if sub {
		d = "." + d
	}
	return d, ""
}

// parseListener reads a {daemon_name} value, kept as written.
func parseListener(s string) (string, string) {
	switch {
	case s == "":
		return "", "empty"
	case len(s) > 100:
		return "", "longer than 100 characters"
	}
	for _, c := range s {
		if c <= ' ' || c >= 0x7f {
			return "", "spaces, control characters and non-ASCII characters are not allowed"
		}
	}
	return s, ""
}

// rulesNode writes a list of rules, each as a block mapping with its
// conditions on one line each.
func rulesNode(rules []Rule) *yaml.Node {
	if len(rules) == 0 {
		return seqNode()
	}
	n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
	for _, r := range rules {
		m := mapNode(false, "name", str(r.Name))
		if !r.When.Empty() {
			w := mapNode(false)
			add := func(name string, items []string) {
				if items != nil {
					w.Content = append(w.Content, str(name), stringsNode(items))
				}
			}
			add("sender_domain", r.When.SenderDomain)
			add("helo", r.When.HELO)
			if r.When.Client != nil {
				w.Content = append(w.Content, str("client"), networksNode(r.When.Client))
			}
			add("client_name", r.When.ClientName)
			add("listener", r.When.Listener)
			m.Content = append(m.Content, str("when"), w)
		}
		if !r.Until.IsZero() {
			m.Content = append(m.Content, str("until"), str(r.Until.Format(time.DateOnly)))
		}
		if r.Skip {
			m.Content = append(m.Content, str("skip"), boolean(true))
		}
		if r.MailFrom != nil {
			m.Content = append(m.Content, str("mailfrom"), policyNode(r.MailFrom))
		}
		if r.HELO != nil {
			m.Content = append(m.Content, str("helo"), policyNode(r.HELO))
		}
		n.Content = append(n.Content, m)
	}
	return n
}

// shadowPolicyNode writes shadow.policy on one line: the overrides given.
func shadowPolicyNode(p Policy) *yaml.Node {
	n := mapNode(true)
	if p.MailFrom != nil {
		n.Content = append(n.Content, str("mailfrom"), policyNode(p.MailFrom))
	}
	if p.HELO != nil {
		n.Content = append(n.Content, str("helo"), policyNode(p.HELO))
	}
	return n
}
