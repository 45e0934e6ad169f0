// Package spf evaluates Sender Policy Framework records as RFC 7208
// specifies, and says why: every check returns an Outcome that carries the
// result together with its cause and a trace of every step, so that a
// caller can explain the decision to a person.
//
// # The pipeline
//
// A check runs in three stages.
//
//   - Parse turns a record's text into a Record of typed terms, completely
//     and before anything is evaluated: a record with a syntax error
//     anywhere is permerror (RFC 7208 §4.6), whatever its first terms
//     would have said. A *SyntaxError names the term to blame.
//   - The evaluator walks the record of the identity's domain, term by
//     term, against the client address: check_host() of RFC 7208 §4, with
//     include: and redirect= entered as the RFC says, macros expanded
//     (§7), and the lookups fetched ahead where the answer cannot change
//     which lookups are counted.
//   - The Outcome holds the result, the term that decided and the record
//     that holds it, the explanation of a fail, the problem of a temperror
//     or permerror (its text, and its ProblemKind for a program), the
//     lookups counted, and the Trace: one Step per record fetched, term
//     tried, include: or redirect= entered, and limit hit.
//
// Checker.CheckMailFrom and Checker.CheckHELO run a check; Outcome.ReceivedSPF
// and AuthenticationResults write an Outcome as the headers receivers
// add.
//
// # DNS
//
// The evaluator asks DNS through the Resolver interface: TXT, A, AAAA,
// MX and PTR lookups, each reporting "no records" apart from a failure,
// since RFC 7208 counts the first as a void lookup and makes the second
// temperror. Three implementations come with the package:
//
//   - DNSResolver asks recursive servers itself (github.com/miekg/dns), with
//     retransmission, TCP fallback and a cache. It is the one a mail
//     server wants.
//   - NetResolver adapts anything shaped like *net.Resolver, such as
//     net.DefaultResolver, for a program that resolves that way already.
//   - Any type with the five methods: a test's map of records, a
//     resolver that logs, one that answers from a zone file.
//
// # Caching
//
// A Checker holds no state between checks but the caches it owns: the
// package keeps nothing process-wide, so two Checkers (two receivers,
// two tests) never share or disturb each other's state. The answers are
// cached by DNSResolver, when given a CacheSize, for their TTL and at most
// a day, within a bound on their number and on their bytes; it keeps the
// parsed records beside their TXT answers, so that a warm check parses
// nothing. With any other Resolver, the Checker keeps the parsed records
// itself, within a byte bound, for a day at most after their last use.
//
// # Limits
//
// The limits of RFC 7208 §4.6.4 are enforced as the RFC sets them: at most
// 10 terms that query DNS (include:, a, mx, ptr, exists, redirect=) and at
// most 2 lookups that return no records, over every record a check visits
// (permerror past either), at most 10 MX names for one mx term (permerror
// past it), and at most 10 PTR names considered. A whole check is bounded
// in time by Checker.Timeout, 20 seconds unless set: running out of it is
// temperror.
package spf
