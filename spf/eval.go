package spf

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Processing limits of RFC 7208 §4.6.4.
const (
	maxDNSTerms   = 10 // terms that cause DNS queries
	maxVoid       = 2  // lookups that return no records
	maxMXNames    = 10 // MX names of one mx term
	maxPTRNames   = 10 // PTR names considered by one ptr term or %{p}
	maxNameLength = 253
)

// abort ends an evaluation early with temperror or permerror.
type abort struct {
	result  Result
	kind    ProblemKind
	problem string
}

func (a *abort) Error() string { return string(a.result) + ": " + a.problem }

func permerror(kind ProblemKind, format string, args ...any) *abort {
	return &abort{PermError, kind, fmt.Sprintf(format, args...)}
}

// evaluation is the state of one check: the counters that RFC 7208 §4.6.4
// limits span every record the check visits.
type evaluation struct {
	c       *Checker
	ctx     context.Context
	out     *Outcome
	ip      netip.Addr
	sender  string
	lookups int
	voids   int
	ptrName *string // validated name of ip for %{p}, once computed
	pf      prefetcher
	held    heldRecords // what the records read take of the record budget
}

// verdict is what evaluating one domain's record gave.
type verdict struct {
	result    Result
	mechanism string  // the deciding term
	domain    string  // domain of rec
	rec       *Record // record holding the deciding term, for exp=
	problem   string
	kind      ProblemKind
	// term is, for a syntax error in the record of the domain checked
	// first, the term that does not parse.
	term     string
	notFound bool // no SPF record at domain (result none)
}

func (c *Checker) check(ctx context.Context, id Identity, ip netip.Addr, sender, helo string) *Outcome {
	start := time.Now()
	ip = ip.Unmap() // IPv4-mapped IPv6 clients are IPv4 clients (RFC 7208 §5)
	// One allocation for the trace of a typical check instead of a
	// growing slice: the trace is most of what a warm check allocates.
	out := &Outcome{Identity: id, IP: ip, HELO: helo, Trace: make([]Step, 0, 64)}
	defer func() { out.Duration = time.Since(start) }()

	sender = strings.TrimSuffix(strings.TrimPrefix(sender, "<"), ">")
	if id == IdentityHELO || sender == "" {
		// RFC 7208 §2.3, §2.4: the HELO identity, and the null sender,
		// are checked as postmaster@<HELO>.
		sender = "postmaster@" + helo
	}
	local, domain := splitSender(sender)
	out.Sender = local + "@" + domain
	out.Domain = domain

	if !ip.IsValid() {
		out.Result, out.Problem, out.ProblemKind = PermError, "no valid client IP address", ProblemNoClientIP
		return out
	}
	name, reason := initialDomain(domain)
	if reason != "" {
		// RFC 7208 §4.3: a malformed or single-label domain is none.
		out.Result, out.Problem = None, fmt.Sprintf("%s is %s", quoteTerm(domain), reason)
		out.ProblemKind, out.ProblemReason = ProblemNotADomain, reason
		out.Trace = append(out.Trace, Step{Kind: StepResult, Domain: domain, Result: None, Detail: out.Problem})
		return out
	}
	out.Domain = name
	out.Sender = local + "@" + name

	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultCheckTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	e := &evaluation{c: c, ctx: ctx, out: out, ip: ip, sender: out.Sender, held: c.holdRecords()}
	defer func() {
		// Records fetched ahead run under ctx: cancelling it ends the
		// lookups the check turned out not to need, and none may outlive
		// the check.
		cancel()
		e.pf.running.Wait()
		e.held.release()
	}()
	v := e.checkHost(name, 0)
	out.Result, out.Problem = v.result, v.problem
	out.ProblemKind, out.ProblemTerm = v.kind, v.term
	out.Mechanism, out.MechanismDomain = v.mechanism, v.domain
	if v.result == Fail {
		out.Explanation = e.explain(v)
	}
	out.DNSLookups, out.VoidLookups = e.lookups, e.voids
	return out
}

// initialDomain checks the domain of the identity (RFC 7208 §4.3) and
// returns it normalised, or why it is not checked.
func initialDomain(d string) (string, string) {
	d = strings.TrimSuffix(d, ".")
	if strings.HasPrefix(d, "[") {
		return "", "an address literal, not a domain name"
	}
	for i := 0; i < len(d); i++ {
		if d[i] >= 0x80 {
			// An internationalised domain is checked by its A-label form.
			a, err := idnaToASCII(d)
			if err != nil {
				return "", "not a valid internationalised domain name"
			}
			d = a
			break
		}
	}
	if reason := badName(d); reason != "" {
		return "", reason
	}
	for i := 0; i < len(d); i++ {
		if d[i] <= ' ' || d[i] >= 0x7f {
			return "", "not a valid domain name (control, space or non-ASCII character)"
		}
	}
	if !strings.Contains(d, ".") {
		return "", "not a multi-label domain name"
	}
	top := d[strings.LastIndexByte(d, '.')+1:]
	if strings.Trim(top, "0123456789") == "" {
		return "", "not a domain name (numeric top-level label)"
	}
	return d, ""
}

// badName says why a name cannot be put in a DNS query, or "". A label may
// hold any octet (RFC 2181 §11): a macro can expand to spaces or '%'.
func badName(d string) string {
	if d == "" {
		return "an empty name"
	}
	if len(d) > maxNameLength {
		return "longer than 253 octets"
	}
	for rest := d; ; {
		l, tail, more := strings.Cut(rest, ".")
		if l == "" {
			return "not a valid domain name (empty label)"
		}
		if len(l) > 63 {
			return "not a valid domain name (label over 63 octets)"
		}
		if !more {
			return ""
		}
		rest = tail
	}
}

func (e *evaluation) step(s Step) { e.out.Trace = append(e.out.Trace, s) }

// checkHost is check_host() of RFC 7208 §4 for one domain.
func (e *evaluation) checkHost(domain string, depth int) verdict {
	rec, txt, v, ok := e.fetchRecord(domain, depth)
	if !ok {
		return v
	}
	if depth == 0 {
		e.out.Record = txt
	}
	prefetched := false
	for _, d := range rec.Directives {
		if !prefetched && d.Mechanism.queriesDNS() {
			e.prefetchTargets(rec, domain)
			prefetched = true
		}
		match, err := e.evalDirective(d, domain, depth)
		if err != nil {
			a := e.asAbort(err)
			e.step(Step{Kind: StepTerm, Depth: depth, Domain: domain, Term: written(d), Result: a.result, Detail: a.problem})
			return verdict{result: a.result, problem: a.problem, kind: a.kind, mechanism: written(d), domain: domain, rec: rec}
		}
		if match {
			r := d.Qualifier.Result()
			e.step(Step{Kind: StepResult, Depth: depth, Domain: domain, Term: written(d), Result: r})
			return verdict{result: r, mechanism: written(d), domain: domain, rec: rec}
		}
	}
	if rec.Redirect != nil {
		// A redirect= is evaluated at once: nothing to fetch ahead of it.
		return e.redirect(rec, domain, depth)
	}
	// RFC 7208 §4.7: no match and no redirect gives neutral.
	e.step(Step{Kind: StepResult, Depth: depth, Domain: domain, Term: "default", Result: Neutral, Detail: "no mechanism matched"})
	return verdict{result: Neutral, mechanism: "default", domain: domain, rec: rec}
}

// fetchRecord looks up and parses the SPF record of domain (RFC 7208 §4.4,
// §4.5). When ok is false, v is the result the check ends with.
func (e *evaluation) fetchRecord(domain string, depth int) (rec *Record, txt string, v verdict, ok bool) {
	txts, until, err := e.lookupTXT(domain)
	if err != nil && !IsNotFound(err) {
		a := e.temperror(err)
		e.step(Step{Kind: StepRecord, Depth: depth, Domain: domain, Result: TempError, Detail: a.problem})
		return nil, "", verdict{result: TempError, problem: a.problem, kind: a.kind, domain: domain}, false
	}
	var records []string
	for _, t := range txts {
		if IsSPFRecord(t) {
			records = append(records, t)
		}
	}
	switch len(records) {
	case 0:
		problem := "no SPF record at " + domain
		e.step(Step{Kind: StepRecord, Depth: depth, Domain: domain, Result: None, Detail: problem})
		return nil, "", verdict{result: None, domain: domain, problem: problem, kind: ProblemNoRecord, notFound: true}, false
	case 1:
	default:
		problem := fmt.Sprintf("%d SPF records at %s; there must be one", len(records), domain)
		e.step(Step{Kind: StepRecord, Depth: depth, Domain: domain, Result: PermError, Detail: problem})
		return nil, "", verdict{result: PermError, domain: domain, problem: problem, kind: ProblemMultipleRecords}, false
	}
	txt = records[0]
	rec, err = e.c.parseRecord(txt, until)
	if err != nil {
		problem := fmt.Sprintf("SPF record of %s: %v", domain, err)
		e.step(Step{Kind: StepRecord, Depth: depth, Domain: domain, Result: PermError, Detail: problem})
		v := verdict{result: PermError, domain: domain, problem: problem, kind: ProblemSyntax}
		if depth == 0 {
			e.out.Record = txt
			var se *SyntaxError
			if errors.As(err, &se) {
				v.term = se.Term
			}
		}
		return nil, txt, v, false
	}
	e.step(Step{Kind: StepRecord, Depth: depth, Domain: domain, Detail: txt})
	return rec, txt, verdict{}, true
}

func (e *evaluation) redirect(rec *Record, domain string, depth int) verdict {
	term := written(rec.Redirect)
	if err := e.countLookup(); err != nil {
		e.step(Step{Kind: StepLimit, Depth: depth, Domain: domain, Term: term, Result: PermError, Detail: err.problem})
		return verdict{result: PermError, problem: err.problem, kind: err.kind, mechanism: term, domain: domain}
	}
	target, ok := e.target(rec.Redirect.Value, domain)
	e.step(Step{Kind: StepRedirect, Depth: depth, Domain: domain, Term: term, Detail: "to " + target})
	if !ok {
		problem := fmt.Sprintf("redirect target %s is not a valid domain name", quoteTerm(target))
		return verdict{result: PermError, problem: problem, kind: ProblemInvalidTarget, mechanism: term, domain: domain}
	}
	v := e.checkHost(target, depth+1)
	e.step(Step{Kind: StepReturn, Depth: depth, Domain: domain, Term: term, Result: v.result})
	if v.notFound {
		// RFC 7208 §6.1: a redirect to a domain without a record is permerror.
		return verdict{result: PermError, problem: "redirect target " + target + " has no SPF record", kind: ProblemTargetNoRecord, mechanism: term, domain: domain}
	}
	return v
}

// evalDirective reports whether d matches. An error is an *abort or a DNS
// failure that makes the check temperror.
func (e *evaluation) evalDirective(d *Directive, domain string, depth int) (bool, error) {
	if d.Mechanism.queriesDNS() {
		if err := e.countLookup(); err != nil {
			e.step(Step{Kind: StepLimit, Depth: depth, Domain: domain, Term: written(d), Result: PermError, Detail: err.problem})
			return false, err
		}
	}
	var (
		match  bool
		detail string
		err    error
	)
	switch d.Mechanism {
	case MechanismAll:
		match = true
	case MechanismIP4, MechanismIP6:
		match = d.Network.Contains(e.ip)
	case MechanismA:
		match, detail, err = e.evalA(d, domain)
	case MechanismMX:
		match, detail, err = e.evalMX(d, domain)
	case MechanismPTR:
		match, detail, err = e.evalPTR(d, domain)
	case MechanismExists:
		match, detail, err = e.evalExists(d, domain)
	case MechanismInclude:
		return e.evalInclude(d, domain, depth)
	}
	if err == nil {
		e.step(Step{Kind: StepTerm, Depth: depth, Domain: domain, Term: written(d), Matched: match, Detail: detail})
	}
	return match, err
}

func (e *evaluation) evalInclude(d *Directive, domain string, depth int) (bool, error) {
	target, ok := e.target(d.Domain, domain)
	e.step(Step{Kind: StepInclude, Depth: depth, Domain: domain, Term: written(d), Detail: "checking " + target})
	if !ok {
		return false, permerror(ProblemInvalidTarget, "include target %s is not a valid domain name", quoteTerm(target))
	}
	v := e.checkHost(target, depth+1)
	e.step(Step{Kind: StepReturn, Depth: depth, Domain: domain, Term: written(d), Result: v.result})
	// RFC 7208 §5.2: the table of include results.
	switch v.result {
	case Pass:
		e.step(Step{Kind: StepTerm, Depth: depth, Domain: domain, Term: written(d), Matched: true})
		return true, nil
	case Fail, Softfail, Neutral:
		e.step(Step{Kind: StepTerm, Depth: depth, Domain: domain, Term: written(d), Detail: target + " gave " + string(v.result)})
		return false, nil
	case TempError:
		return false, &abort{TempError, v.kind, v.problem}
	case None:
		return false, permerror(ProblemTargetNoRecord, "included domain %s has no SPF record", target)
	default:
		return false, &abort{PermError, v.kind, v.problem}
	}
}

func (e *evaluation) countLookup() *abort {
	e.lookups++
	if e.lookups > maxDNSTerms {
		return permerror(ProblemLookupLimit, "more than %d DNS-querying terms (RFC 7208 §4.6.4)", maxDNSTerms)
	}
	return nil
}

func (e *evaluation) void() error {
	e.voids++
	if e.voids > maxVoid {
		return permerror(ProblemVoidLimit, "more than %d lookups returned no records (RFC 7208 §4.6.4)", maxVoid)
	}
	return nil
}

// temperror turns a DNS failure into temperror, saying so when the whole
// check ran out of time.
func (e *evaluation) temperror(err error) *abort {
	// A query's socket deadline is the check's deadline, and the socket
	// can report it a moment before the context's timer marks the context
	// done: ask the clock too.
	deadline, ok := e.ctx.Deadline()
	if e.ctx.Err() != nil || (ok && !time.Now().Before(deadline)) {
		return &abort{TempError, ProblemDeadline, fmt.Sprintf("check did not finish within its deadline (%v)", err)}
	}
	return &abort{TempError, ProblemDNS, "DNS failure: " + err.Error()}
}

func (e *evaluation) asAbort(err error) *abort {
	var a *abort
	if errors.As(err, &a) {
		return a
	}
	return e.temperror(err)
}
