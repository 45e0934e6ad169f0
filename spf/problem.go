package spf

// ProblemKind says which problem an Outcome's Problem describes, so that
// a caller can act on it (advise a domain's owner, count problems by
// kind) without reading the text, which is for people and may change.
// The evaluator sets it where the problem arises, and it travels with
// the problem out of include: and redirect= as the text does.
type ProblemKind string

// The problems a check can meet. A result of pass, fail, softfail or
// neutral has none; none has ProblemNotADomain or ProblemNoRecord;
// temperror and permerror have one of the others.
const (
	// ProblemNoClientIP: the client address is not a valid IP address.
	ProblemNoClientIP ProblemKind = "no-client-ip"
	// ProblemNotADomain: the identity's domain is not a name SPF checks
	// (RFC 7208 §4.3), and was not looked up; ProblemReason says why.
	ProblemNotADomain ProblemKind = "not-a-domain"
	// ProblemNoRecord: the domain publishes no SPF record (RFC 7208 §4.5).
	ProblemNoRecord ProblemKind = "no-record"
	// ProblemMultipleRecords: a domain publishes more than one SPF
	// record (RFC 7208 §4.5).
	ProblemMultipleRecords ProblemKind = "multiple-records"
	// ProblemSyntax: a record does not parse (RFC 7208 §4.6); when it is
	// Record itself, ProblemTerm is the term to blame.
	ProblemSyntax ProblemKind = "syntax"
	// ProblemLookupLimit: more than 10 terms that query DNS
	// (RFC 7208 §4.6.4).
	ProblemLookupLimit ProblemKind = "lookup-limit"
	// ProblemVoidLimit: more than 2 lookups returned no records
	// (RFC 7208 §4.6.4).
	ProblemVoidLimit ProblemKind = "void-limit"
	// ProblemTooManyMX: an mx term names a domain with more than 10 MX
	// records (RFC 7208 §4.6.4).
	ProblemTooManyMX ProblemKind = "too-many-mx"
	// ProblemInvalidTarget: an include: or redirect= target expands to a
	// name that is not a valid domain name.
	ProblemInvalidTarget ProblemKind = "invalid-target"
	// ProblemTargetNoRecord: an include: or redirect= target publishes
	// no SPF record (RFC 7208 §5.2, §6.1).
	ProblemTargetNoRecord ProblemKind = "target-no-record"
	// ProblemDNS: a lookup failed for a reason other than "no records"
	// (temperror).
	ProblemDNS ProblemKind = "dns"
	// ProblemDeadline: the check ran out of time (temperror).
	ProblemDeadline ProblemKind = "deadline"
	// ProblemNoOrigin: the client is a trusted relay, and the client it
	// received the message from could not be found in its Received
	// fields, so nothing was checked (none). The evaluator never sets it:
	// a caller that reads Received fields does (the milter's relays).
	ProblemNoOrigin ProblemKind = "no-origin"
)
