package spf

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Result is an SPF result as named by RFC 7208 §2.6. Its string value is the
// RFC's own token, the one used in Received-SPF and Authentication-Results.
type Result string

// The seven results of check_host() (RFC 7208 §2.6).
const (
	None      Result = "none"
	Neutral   Result = "neutral"
	Pass      Result = "pass"
	Fail      Result = "fail"
	Softfail  Result = "softfail"
	TempError Result = "temperror"
	PermError Result = "permerror"
)

// Results lists every result in the order RFC 7208 §2.6 introduces them.
var Results = []Result{None, Neutral, Pass, Fail, Softfail, TempError, PermError}

// ParseResult maps an RFC token (any letter case) to its Result.
func ParseResult(s string) (Result, error) {
	r := Result(strings.ToLower(s))
	for _, known := range Results {
		if r == known {
			return r, nil
		}
	}
	return "", fmt.Errorf("unknown SPF result %q (want one of none, neutral, pass, fail, softfail, temperror, permerror)", s)
}

// Identity names which identity a check authorises (RFC 7208 §2.3, §2.4).
type Identity string

// The identities a receiver checks.
const (
	IdentityMailFrom Identity = "mailfrom"
	IdentityHELO     Identity = "helo"
)

// Outcome is the answer of one check: the result and everything needed to
// explain it.
type Outcome struct {
	Result   Result
	Identity Identity
	// Domain is the domain whose policy was checked first: the MAIL FROM
	// domain, or the HELO name.
	Domain string
	// Sender is the <sender> of check_host(): the MAIL FROM address, or
	// postmaster@<HELO> for the null sender and for a HELO check.
	Sender string
	IP     netip.Addr
	HELO   string

	// Record is the SPF record published at Domain, as found in DNS.
	Record string
	// Mechanism is the term that decided, as written in the record that
	// holds it (for example "-all" or "include:_spf.example.com"), or
	// "default" when no mechanism matched and the result is the default
	// neutral. Empty when no record was evaluated.
	Mechanism string
	// MechanismDomain is the domain whose record holds Mechanism; it differs
	// from Domain when the decision came through redirect=. A matching
	// include: is reported as that include: term of the including record;
	// the trace shows which term inside matched.
	MechanismDomain string
	// Explanation is the text for a fail result (RFC 7208 §6.2): the
	// domain's exp= text, or the checker's default explanation.
	Explanation string
	// Problem says what went wrong for temperror and permerror, and why
	// the result is none, in words for people.
	Problem string
	// ProblemKind says which problem Problem describes; empty when it is
	// empty.
	ProblemKind ProblemKind
	// ProblemTerm is, for ProblemSyntax in Record itself, the term of
	// Record that does not parse, as written.
	ProblemTerm string
	// ProblemReason is, for ProblemNotADomain, why Domain is not a name
	// SPF checks, without the name.
	ProblemReason string

	// Relay is the trusted relay the message came through, when IP is
	// the client that relay received it from rather than the client the
	// receiver saw; invalid otherwise. The checker never sets it: its
	// caller does, and the headers then name the relay in a comment.
	Relay netip.Addr

	// DNSLookups counts the terms that caused DNS queries (RFC 7208 §4.6.4).
	DNSLookups int
	// VoidLookups counts the lookups that returned no records.
	VoidLookups int
	Duration    time.Duration
	Trace       []Step
}

// StepKind classifies a Step of the trace.
type StepKind string

// The kinds of steps a trace records.
const (
	StepRecord   StepKind = "record"   // a policy record was fetched (or not found)
	StepTerm     StepKind = "term"     // a mechanism was tried
	StepInclude  StepKind = "include"  // an include: was entered
	StepRedirect StepKind = "redirect" // a redirect= was followed
	StepReturn   StepKind = "return"   // an include: or redirect= returned its result
	StepLimit    StepKind = "limit"    // a processing limit was hit
	StepExp      StepKind = "exp"      // the explanation was computed
	StepResult   StepKind = "result"   // the final result of one record
)

// Step is one entry in the trace of an evaluation.
type Step struct {
	Kind StepKind `json:"kind"`
	// Depth is the nesting level: 0 for the initial domain, one more for
	// each include: or redirect= entered.
	Depth  int    `json:"depth"`
	Domain string `json:"domain"`
	// Term is the mechanism or modifier as written, when the step is about
	// one.
	Term string `json:"term,omitempty"`
	// Matched reports whether a mechanism matched (StepTerm only).
	Matched bool   `json:"matched,omitempty"`
	Result  Result `json:"result,omitempty"`
	// Detail is a short human sentence: what was looked up, what was found.
	Detail string `json:"detail,omitempty"`
}

// String renders the step as one line, indented by its depth.
func (s Step) String() string {
	var b strings.Builder
	b.WriteString(strings.Repeat("  ", s.Depth))
	b.WriteString(string(s.Kind))
	if s.Domain != "" {
		b.WriteString(" ")
		b.WriteString(s.Domain)
	}
	if s.Term != "" {
		b.WriteString(": ")
		b.WriteString(s.Term)
		if s.Kind == StepTerm {
			if s.Matched {
				b.WriteString(" (match)")
			} else {
				b.WriteString(" (no match)")
			}
		}
	}
	if s.Result != "" {
		b.WriteString(" => ")
		b.WriteString(string(s.Result))
	}
	if s.Detail != "" {
		b.WriteString(": ")
		b.WriteString(s.Detail)
	}
	return b.String()
}
