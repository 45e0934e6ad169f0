package spf

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
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
	problem string
}

func (a *abort) Error() string { return string(a.result) + ": " + a.problem }

func permerror(format string, args ...any) *abort {
	return &abort{PermError, fmt.Sprintf(format, args...)}
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
	notFound  bool // no SPF record at domain (result none)
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
		out.Result, out.Problem = PermError, "no valid client IP address"
		return out
	}
	name, reason := initialDomain(domain)
	if reason != "" {
		// RFC 7208 §4.3: a malformed or single-label domain is none.
		out.Result, out.Problem = None, fmt.Sprintf("%s is %s", quoteTerm(domain), reason)
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
			return verdict{result: a.result, problem: a.problem, mechanism: written(d), domain: domain, rec: rec}
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
		return nil, "", verdict{result: TempError, problem: a.problem, domain: domain}, false
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
		return nil, "", verdict{result: None, domain: domain, problem: problem, notFound: true}, false
	case 1:
	default:
		problem := fmt.Sprintf("%d SPF records at %s; there must be one", len(records), domain)
		e.step(Step{Kind: StepRecord, Depth: depth, Domain: domain, Result: PermError, Detail: problem})
		return nil, "", verdict{result: PermError, domain: domain, problem: problem}, false
	}
	txt = records[0]
	rec, err = e.c.parseRecord(txt, until)
	if err != nil {
		problem := fmt.Sprintf("SPF record of %s: %v", domain, err)
		e.step(Step{Kind: StepRecord, Depth: depth, Domain: domain, Result: PermError, Detail: problem})
		if depth == 0 {
			e.out.Record = txt
		}
		return nil, txt, verdict{result: PermError, domain: domain, problem: problem}, false
	}
	e.step(Step{Kind: StepRecord, Depth: depth, Domain: domain, Detail: txt})
	return rec, txt, verdict{}, true
}

func (e *evaluation) redirect(rec *Record, domain string, depth int) verdict {
	term := written(rec.Redirect)
	if err := e.countLookup(); err != nil {
		e.step(Step{Kind: StepLimit, Depth: depth, Domain: domain, Term: term, Result: PermError, Detail: err.problem})
		return verdict{result: PermError, problem: err.problem, mechanism: term, domain: domain}
	}
	target, ok := e.target(rec.Redirect.Value, domain)
	e.step(Step{Kind: StepRedirect, Depth: depth, Domain: domain, Term: term, Detail: "to " + target})
	if !ok {
		problem := fmt.Sprintf("redirect target %s is not a valid domain name", quoteTerm(target))
		return verdict{result: PermError, problem: problem, mechanism: term, domain: domain}
	}
	v := e.checkHost(target, depth+1)
	e.step(Step{Kind: StepReturn, Depth: depth, Domain: domain, Term: term, Result: v.result})
	if v.notFound {
		// RFC 7208 §6.1: a redirect to a domain without a record is permerror.
		return verdict{result: PermError, problem: "redirect target " + target + " has no SPF record", mechanism: term, domain: domain}
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
		return false, permerror("include target %s is not a valid domain name", quoteTerm(target))
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
		return false, &abort{TempError, v.problem}
	case None:
		return false, permerror("included domain %s has no SPF record", target)
	default:
		return false, &abort{PermError, v.problem}
	}
}

func (e *evaluation) evalA(d *Directive, domain string) (bool, string, error) {
	target, ok := e.target(d.Domain, domain)
	if !ok {
		return false, invalidTarget(target), nil
	}
	addrs, err := e.lookupAddrs(target, true)
	if err != nil {
		return false, "", err
	}
	match := e.matchAny(addrs, d)
	return match, target + " has " + addrList(addrs), nil
}

func (e *evaluation) evalMX(d *Directive, domain string) (bool, string, error) {
	target, ok := e.target(d.Domain, domain)
	if !ok {
		return false, invalidTarget(target), nil
	}
	names, err := e.c.Resolver.LookupMX(e.ctx, target)
	if err != nil {
		if IsNotFound(err) {
			return false, "no MX records at " + target, e.void()
		}
		return false, "", e.temperror(err)
	}
	if len(names) > maxMXNames {
		return false, "", permerror("%s has %d MX records; at most %d may be looked up", target, len(names), maxMXNames)
	}
	hosts := mxHosts(names)
	lookups := e.startAddrLookups(hosts, func(addrs []netip.Addr) bool { return e.matchAny(addrs, d) })
	defer lookups.stop()
	// The first host in MX order that fails or matches decides, whichever
	// answer came first.
	for i, n := range hosts {
		match, err := lookups.get(i)
		if err != nil {
			if IsNotFound(err) {
				continue // no match, and not a void lookup: only the MX query can be
			}
			return false, "", e.temperror(err)
		}
		if match {
			return true, "MX " + n + " has " + e.ip.String(), nil
		}
	}
	return false, "no MX host of " + target + " has " + e.ip.String(), nil
}

// mxHosts returns the host names of MX records as names to query.
func mxHosts(names []string) []string {
	hosts := make([]string, 0, len(names))
	for _, n := range names {
		n = strings.TrimSuffix(n, ".")
		if n == "" {
			continue // a null MX (RFC 7505) names no host
		}
		hosts = append(hosts, n)
	}
	return hosts
}

func (e *evaluation) evalPTR(d *Directive, domain string) (bool, string, error) {
	target, ok := e.target(d.Domain, domain)
	if !ok {
		return false, invalidTarget(target), nil
	}
	names, err := e.c.Resolver.LookupPTR(e.ctx, e.ip)
	if err != nil {
		// RFC 7208 §5.5: a DNS error on the PTR lookup is no match.
		if IsNotFound(err) {
			return false, "no PTR records for " + e.ip.String(), e.void()
		}
		return false, "PTR lookup failed: " + err.Error(), nil
	}
	if n := e.validated(names, target, true); n != "" {
		return true, "validated name " + n, nil
	}
	return false, "no validated name in " + target, nil
}

// validated returns the first of the (at most 10) PTR names that resolves
// back to the client IP, considering only names at or under target when
// suffixOnly is set (RFC 7208 §5.5). A name whose lookup fails is skipped.
func (e *evaluation) validated(names []string, target string, suffixOnly bool) string {
	if len(names) > maxPTRNames {
		names = names[:maxPTRNames]
	}
	candidates := make([]string, 0, len(names))
	for _, n := range names {
		n = strings.TrimSuffix(n, ".")
		if suffixOnly && !isSubdomain(n, target) {
			continue
		}
		candidates = append(candidates, n)
	}
	lookups := e.startAddrLookups(candidates, func(addrs []netip.Addr) bool {
		for _, a := range addrs {
			if a.Unmap() == e.ip {
				return true
			}
		}
		return false
	})
	defer lookups.stop()
	for i, n := range candidates {
		if match, err := lookups.get(i); err == nil && match {
			return n
		}
	}
	return ""
}

func (e *evaluation) evalExists(d *Directive, domain string) (bool, string, error) {
	target, ok := e.target(d.Domain, domain)
	if !ok {
		return false, invalidTarget(target), nil
	}
	// exists always asks for A records, whatever the client's family.
	addrs, err := e.c.Resolver.LookupA(e.ctx, target)
	if err != nil {
		if IsNotFound(err) {
			return false, target + " does not exist", e.void()
		}
		return false, "", e.temperror(err)
	}
	return len(addrs) > 0, target + " has " + addrList(addrs), nil
}

// lookupAddrs fetches the addresses of name in the client's family; a void
// answer counts against the void limit when countVoid is set.
func (e *evaluation) lookupAddrs(name string, countVoid bool) ([]netip.Addr, error) {
	addrs, err := e.addrs(name)
	if err != nil {
		if IsNotFound(err) {
			if countVoid {
				return nil, e.void()
			}
			return nil, nil
		}
		return nil, e.temperror(err)
	}
	return addrs, nil
}

func (e *evaluation) addrs(name string) ([]netip.Addr, error) {
	return e.addrsIn(e.ctx, name)
}

// addrsIn is addrs under ctx, which may end before the check does.
func (e *evaluation) addrsIn(ctx context.Context, name string) ([]netip.Addr, error) {
	if e.ip.Is4() {
		return e.c.Resolver.LookupA(ctx, name)
	}
	return e.c.Resolver.LookupAAAA(ctx, name)
}

func (e *evaluation) matchAny(addrs []netip.Addr, d *Directive) bool {
	bits := d.CIDR6
	if e.ip.Is4() {
		bits = d.CIDR4
	}
	for _, a := range addrs {
		a = a.Unmap()
		if a.Is4() != e.ip.Is4() {
			continue
		}
		if p, err := a.Prefix(bits); err == nil && p.Contains(e.ip) {
			return true
		}
	}
	return false
}

// target expands a mechanism's domain-spec (or takes the current domain)
// into a name to query. ok is false when the name cannot be queried; such
// a name is treated as one that does not exist.
func (e *evaluation) target(spec *MacroString, domain string) (name string, ok bool) {
	if spec == nil {
		return domain, true
	}
	name = strings.TrimSuffix(spec.Expand(e.env(domain)), ".")
	// RFC 7208 §7.3: an over-long expansion loses labels from the left.
	for len(name) > maxNameLength {
		i := strings.IndexByte(name, '.')
		if i < 0 {
			break
		}
		name = name[i+1:]
	}
	return name, badName(name) == ""
}

func invalidTarget(name string) string {
	return quoteTerm(name) + " is not a valid domain name; treated as not existing"
}

func (e *evaluation) env(domain string) *MacroEnv {
	return &MacroEnv{
		Sender:   e.sender,
		Domain:   domain,
		IP:       e.ip,
		HELO:     e.out.HELO,
		Receiver: e.c.Receiver,
		PTR:      func() string { return e.ptrMacro(domain) },
	}
}

// ptrMacro finds %{p}: a validated name of the client, preferring one at or
// under domain (RFC 7208 §7.3).
func (e *evaluation) ptrMacro(domain string) string {
	if e.ptrName != nil {
		return *e.ptrName
	}
	name := "unknown"
	if names, err := e.c.Resolver.LookupPTR(e.ctx, e.ip); err == nil {
		if n := e.validated(names, domain, true); n != "" {
			name = n
		} else if n := e.validated(names, "", false); n != "" {
			name = n
		}
	}
	e.ptrName = &name
	return name
}

func isSubdomain(name, parent string) bool {
	if len(name) < len(parent) {
		return false
	}
	tail := name[len(name)-len(parent):]
	return strings.EqualFold(tail, parent) && (len(name) == len(parent) || name[len(name)-len(parent)-1] == '.')
}

func (e *evaluation) countLookup() *abort {
	e.lookups++
	if e.lookups > maxDNSTerms {
		return permerror("more than %d DNS-querying terms (RFC 7208 §4.6.4)", maxDNSTerms)
	}
	return nil
}

func (e *evaluation) void() error {
	e.voids++
	if e.voids > maxVoid {
		return permerror("more than %d lookups returned no records (RFC 7208 §4.6.4)", maxVoid)
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
		return &abort{TempError, fmt.Sprintf("check did not finish within its deadline (%v)", err)}
	}
	return &abort{TempError, "DNS failure: " + err.Error()}
}

func (e *evaluation) asAbort(err error) *abort {
	var a *abort
	if errors.As(err, &a) {
		return a
	}
	return e.temperror(err)
}

// explain computes the explanation of a fail result (RFC 7208 §6.2): the
// exp= text of the record that decided, or the default explanation when
// there is none or anything about it goes wrong.
func (e *evaluation) explain(v verdict) string {
	env := e.env(v.domain)
	env.Now = time.Now()
	if v.rec != nil && v.rec.Exp != nil {
		if text, ok := e.expText(v.rec.Exp, env); ok {
			e.step(Step{Kind: StepExp, Domain: v.domain, Term: written(v.rec.Exp), Detail: text})
			return text
		}
	}
	def := e.c.Explanation
	if def == "" {
		def = DefaultExplanation
	}
	ms, err := e.c.defaultExplanation(def)
	if err != nil {
		return def
	}
	return ms.Expand(env)
}

func (e *evaluation) expText(exp *Modifier, env *MacroEnv) (string, bool) {
	target, ok := e.target(exp.Value, env.Domain)
	if !ok {
		return "", false
	}
	txts, err := e.c.Resolver.LookupTXT(e.ctx, target)
	if err != nil || len(txts) != 1 {
		detail := "not exactly one TXT record"
		if err != nil {
			detail = err.Error()
		}
		e.step(Step{Kind: StepExp, Domain: env.Domain, Term: written(exp), Detail: "ignored: " + detail})
		return "", false
	}
	ms, err := ParseMacroString(txts[0], true)
	if err != nil {
		e.step(Step{Kind: StepExp, Domain: env.Domain, Term: written(exp), Detail: "ignored: " + err.Error()})
		return "", false
	}
	return ms.Expand(env), true
}

func addrList(addrs []netip.Addr) string {
	if len(addrs) == 0 {
		return "no addresses"
	}
	var b strings.Builder
	for i, a := range addrs {
		if i > 0 {
			b.WriteString(", ")
		}
		if i == 5 {
			b.WriteString("and " + strconv.Itoa(len(addrs)-5) + " more")
			break
		}
		b.WriteString(a.String())
	}
	return b.String()
}
