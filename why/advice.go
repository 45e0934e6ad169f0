package why

import (
	"fmt"
	"strings"

	"github.com/spf-milter/spf-milter/spf"
)

// seg is a piece of a sentence: plain text, or a record term or DNS text
// shown as code. Both are escaped by the template.
type seg struct {
	Text string
	Code bool
}

// para is one sentence or paragraph, made of segments.
type para []seg

func text(s string) seg { return seg{Text: s} }
func code(s string) seg { return seg{Text: show(s), Code: true} }

// maxListed bounds the terms listed as "servers the record allows".
const maxListed = 8

// view is what the explanation needs of an outcome, with the text from DNS
// and from the request already made printable.
type view struct {
	o *spf.Outcome
	// domain is the checked domain, ip the client, both printable.
	domain, ip string
	// decidedIn is the domain whose record holds the deciding term
	// (printable); redirected is set when that is not domain.
	decidedIn  string
	redirected bool
	// decidingRecord is the record text holding the deciding term, when
	// known: Outcome.Record, or the redirect target's from the trace.
	decidingRecord string
}

func newView(o *spf.Outcome) *view {
	v := &view{o: o, domain: show(o.Domain), ip: o.IP.String(), decidingRecord: o.Record}
	v.decidedIn = v.domain
	if o.MechanismDomain != "" && o.MechanismDomain != o.Domain {
		v.redirected = true
		v.decidedIn = show(o.MechanismDomain)
		v.decidingRecord = recordInTrace(o, o.MechanismDomain)
	}
	return v
}

// recordInTrace finds the record fetched for domain during the check.
func recordInTrace(o *spf.Outcome, domain string) string {
	for _, s := range o.Trace {
		if s.Kind == spf.StepRecord && s.Result == "" && s.Domain == domain {
			return s.Detail
		}
	}
	return ""
}

// ipTerm is the mechanism that allows exactly ip.
func ipTerm(o *spf.Outcome) string {
	if o.IP.Is4() {
		return "ip4:" + o.IP.String()
	}
	return "ip6:" + o.IP.String()
}

// verdict is the result in one sentence.
func (v *view) verdict() string {
	o := v.o
	r := string(o.Result)
	switch o.Result {
	case spf.Pass:
		return fmt.Sprintf("The SPF record of %s allows %s to send mail for it (%s).", v.domain, v.ip, r)
	case spf.Fail:
		return fmt.Sprintf("The SPF record of %s does not allow %s to send mail for it (%s).", v.domain, v.ip, r)
	case spf.Softfail:
		return fmt.Sprintf("The SPF record of %s says %s is probably not allowed to send mail for it (%s).", v.domain, v.ip, r)
	case spf.Neutral:
		return fmt.Sprintf("The SPF record of %s neither allows nor forbids %s to send mail for it (%s).", v.domain, v.ip, r)
	case spf.None:
		if !o.LookedUp() {
			return fmt.Sprintf("\"%s\" cannot be checked with SPF: %s (%s).", v.domain, show(o.ProblemReason), r)
		}
		return fmt.Sprintf("%s publishes no SPF record, so nothing says whether %s may send mail for it (%s).", v.domain, v.ip, r)
	case spf.TempError:
		return fmt.Sprintf("The SPF record of %s could not be checked because of a temporary DNS error (%s).", v.domain, r)
	case spf.PermError:
		return fmt.Sprintf("The SPF record of %s is broken, so it cannot say whether %s may send mail for it (%s).", v.domain, v.ip, r)
	}
	return fmt.Sprintf("The check of %s gave %s.", v.domain, show(r))
}

// decision says which term decided, and why.
func (v *view) decision() []para {
	o := v.o
	var out []para
	where := []seg{text("the record of " + v.decidedIn)}
	if v.redirected {
		where = append(where, text(", reached through the "), code("redirect="), text(" of "+v.domain+","))
	}
	switch {
	case o.Mechanism == "default":
		p := para{text("No term of ")}
		p = append(p, where...)
		p = append(p, text(" matched "+v.ip+", and the record has no "), code("all"), text(" term: the result is neutral by default (RFC 7208 §4.7)."))
		out = append(out, p)
	case o.Mechanism != "" && (o.Result == spf.TempError || o.Result == spf.PermError):
		p := para{text("The check stopped at the term "), code(o.Mechanism), text(" in ")}
		p = append(p, where...)
		p = append(p, text(" ("+string(o.Result)+")."))
		out = append(out, p)
	case o.Mechanism != "":
		p := para{text("The term "), code(o.Mechanism), text(" in ")}
		p = append(p, where...)
		p = append(p, text(" matched "+v.ip+", giving "+string(o.Result)+"."))
		if strings.HasPrefix(strings.ToLower(strings.TrimLeft(o.Mechanism, "+-~?")), "include:") {
			p = append(p, text(" An include: matches when the included domain's record allows the address."))
		}
		out = append(out, p)
	case o.Result == spf.None && o.LookedUp():
		out = append(out, para{text("There is no TXT record starting with "), code("v=spf1"), text(" at " + v.domain + ", so no term applies.")})
	case o.Result == spf.None:
		out = append(out, para{text("SPF only checks domain names, so no DNS lookup was made.")})
	default:
		out = append(out, para{text("No term of the record was reached.")})
	}
	if o.Problem != "" && (o.Result == spf.TempError || o.Result == spf.PermError) {
		out = append(out, para{text("The problem: "), code(o.Problem)})
	}
	if o.Explanation != "" {
		out = append(out, para{text("The explanation for this result: "), code(o.Explanation)})
	}
	return out
}

// advice says what the sender's admin can change.
func (v *view) advice() []para {
	switch v.o.Result {
	case spf.Pass:
		return []para{{text("Nothing to change: " + v.ip + " may send mail for " + v.domain + ". " +
			"If mail from this server was refused anyway, the refusal was not about the SPF record of " + v.domain + ".")}}
	case spf.Fail, spf.Softfail:
		return v.notAllowed()
	case spf.Neutral:
		return v.neutral()
	case spf.None:
		return v.none()
	case spf.TempError:
		return v.temperror()
	case spf.PermError:
		return v.permerror()
	}
	return nil
}

// notAllowed advises on fail and softfail: allow the address, send through
// a server already allowed, or fix the forwarding.
func (v *view) notAllowed() []para {
	o := v.o
	term := ipTerm(o)
	var out []para
	mech := strings.ToLower(o.Mechanism)
	explicit := !strings.HasSuffix(mech, "all") // a term naming this address, not the catch-all
	if explicit {
		out = append(out, para{text("The term "), code(o.Mechanism), text(" in the record of " + v.decidedIn +
			" names this address on purpose: remove it if " + v.ip + " should send mail for " + v.domain + ".")})
	}
	p := para{text("If " + v.ip + " is one of your mail servers, add "), code(term), text(" to the SPF record of " + v.decidedIn)}
	if s := suggestRecord(v.decidingRecord, term); s != "" && !explicit {
		p = append(p, text(", before its "), code(o.Mechanism), text(" term, so that it reads: "), code(s))
	} else {
		p = append(p, text("."))
	}
	out = append(out, p)
	if v.redirected {
		out = append(out, para{text("That record is reached through the "), code("redirect="), text(" in the record of " + v.domain +
			"; if it belongs to your provider, put your own terms in the record of " + v.domain + " before the redirect instead.")})
	}
	if allowed := allowedTerms(v.decidingRecord); len(allowed) > 0 {
		p := para{text("Or send the mail through a server the record already allows: ")}
		for i, t := range allowed {
			if i > 0 {
				p = append(p, text(", "))
			}
			p = append(p, code(t))
		}
		p = append(p, text("."))
		out = append(out, p)
	} else {
		out = append(out, para{text("Or send the mail through a server that the record of " + v.decidedIn + " allows.")})
	}
	out = append(out, para{text("If the mail was forwarded (a mailing list, an alias, a forwarding mailbox), SPF sees the forwarder's address: " +
		"the forwarder should rewrite the envelope sender (SRS) or send with its own.")})
	if o.Result == spf.Softfail {
		out = append(out, para{text("A softfail ("), code("~all"), text(") asks receivers to accept the mail but treat it with suspicion; some refuse it.")})
	}
	return out
}

// neutral advises on a record that says nothing definite.
func (v *view) neutral() []para {
	o := v.o
	term := ipTerm(o)
	out := []para{{text("If " + v.ip + " is one of your mail servers, add "), code(term), text(" to the SPF record of " + v.decidedIn + ".")}}
	if o.Mechanism == "default" || strings.HasSuffix(strings.ToLower(o.Mechanism), "all") {
		out = append(out, para{text("End the record with "), code("~all"), text(" or "), code("-all"),
			text(" so that receivers know that servers it does not list are not yours.")})
	} else {
		out = append(out, para{text("The term "), code(o.Mechanism), text(" marks this address as neutral on purpose; change its qualifier if it should pass.")})
	}
	return out
}

// none advises on a domain without a record.
func (v *view) none() []para {
	o := v.o
	if !o.LookedUp() {
		return []para{{text("Use a sender address whose domain is a valid, fully qualified domain name that you control, and publish an SPF record for it.")}}
	}
	example := "v=spf1 mx " + ipTerm(o) + " ~all"
	out := []para{{text("Publish an SPF record: a TXT record at " + v.domain + " such as "), code(example),
		text(" (your MX hosts and this server). Start with "), code("~all"), text(", and change it to "), code("-all"),
		text(" once you are sure it lists every server that sends your mail.")}}
	if strings.HasPrefix(o.Sender, "postmaster@") && o.HELO != "" && strings.EqualFold(o.Domain, o.HELO) {
		out = append(out, para{text("For bounces (an empty MAIL FROM) SPF checks the HELO name instead; a record like "),
			code("v=spf1 a -all"), text(" at the HELO name " + show(o.HELO) + " covers them.")})
	}
	return out
}

// temperror advises on a DNS failure.
func (v *view) temperror() []para {
	o := v.o
	out := []para{{text("The DNS servers for " + v.domain + " (or for a name its record refers to) did not answer properly. " +
		"Check that every name server of the domain answers TXT, A and MX queries, over UDP and over TCP.")}}
	if o.ProblemKind == spf.ProblemDeadline {
		out = append(out, para{text("The whole check took too long: fewer lookups (fewer include:, a and mx terms) and faster name servers help.")})
	}
	out = append(out, para{text("A refusal for this result is temporary: the sending server tries again, and the mail goes through once DNS answers.")})
	return out
}

// permerror advises on a broken record, by what is broken.
func (v *view) permerror() []para {
	o := v.o
	var out []para
	switch o.ProblemKind {
	case spf.ProblemLookupLimit:
		out = append(out, para{text("The record needs more than 10 DNS lookups (RFC 7208 §4.6.4); each "),
			code("include:"), text(", "), code("a"), text(", "), code("mx"), text(", "), code("ptr"), text(", "), code("exists"),
			text(" and "), code("redirect="), text(" costs one, and so do those inside the included records. " +
				"Remove includes you no longer use, replace a and mx terms with ip4:/ip6: ranges, " +
				"or flatten an include: into the ip4:/ip6: ranges it lists (and keep them up to date).")})
	case spf.ProblemVoidLimit:
		out = append(out, para{text("More than two terms of the record point to names that do not exist or have no records " +
			"(void lookups, RFC 7208 §4.6.4). Remove those terms or correct their names; the trace below shows which.")})
	case spf.ProblemMultipleRecords:
		out = append(out, para{text("The domain publishes more than one TXT record starting with "), code("v=spf1"),
			text("; there must be exactly one. Merge them into one record, with one "), code("all"), text(" term at its end.")})
	case spf.ProblemTargetNoRecord:
		out = append(out, para{text("A term points to a domain that publishes no SPF record: correct the name, or remove the term.")})
	case spf.ProblemInvalidTarget:
		out = append(out, para{text("A term points to a name that is not a valid domain name: correct it.")})
	case spf.ProblemTooManyMX:
		out = append(out, para{text("An "), code("mx"), text(" term names a domain with more than 10 MX hosts: list the servers with ip4:/ip6: terms instead.")})
	case spf.ProblemSyntax:
		pp := para{text("Fix the syntax of the record")}
		if t := o.ProblemTerm; t != "" {
			pp = append(pp, text(": the term "), code(t), text(" is not valid"))
		}
		pp = append(pp, text(". Terms are separated by single spaces; see RFC 7208 §4.6.1 and §5 for their form."))
		out = append(out, pp)
	default:
		out = append(out, para{text("Fix the problem shown above; the trace below shows where the check met it.")})
	}
	out = append(out, para{text("Until the record is fixed, receivers that refuse on permerror refuse all mail from " + v.domain + ".")})
	return out
}

// allowedTerms lists the terms of record that allow servers: its
// mechanisms with the pass qualifier, at most maxListed of them.
func allowedTerms(record string) []string {
	if record == "" {
		return nil
	}
	rec, err := spf.Parse(record)
	if err != nil {
		return nil
	}
	var out []string
	for _, d := range rec.Directives {
		if d.Qualifier != spf.QualifierPass || d.Mechanism == spf.MechanismAll {
			continue
		}
		if len(out) == maxListed {
			out = append(out, "...")
			break
		}
		out = append(out, d.String())
	}
	return out
}

// suggestRecord returns record with term inserted before its first all
// term, or "" when the record has none.
func suggestRecord(record, term string) string {
	tokens := strings.Split(record, " ")
	for i, t := range tokens {
		if isAllTerm(t) {
			next := append(append(append([]string{}, tokens[:i]...), term), tokens[i:]...)
			return strings.Join(next, " ")
		}
	}
	return ""
}

func isAllTerm(t string) bool {
	return strings.EqualFold(strings.TrimLeft(t, "+-~?"), "all") && len(t) <= 4
}
