package spf

import (
	"cmp"
	"slices"
	"strings"
)

// maxHeaderValue caps every value copied into a header. The longest
// legitimate one is an RFC 5321 path (256 octets); anything longer came from
// a hostile or broken peer and would only make a line that cannot be folded.
const maxHeaderValue = 256

// ReceivedSPF returns the value (without "Received-SPF:") of the RFC 7208
// §9.1 header for o, as written by receiver (the host name that ran the
// check; empty leaves it out).
//
// The value is one line of printable ASCII whatever o holds: control
// characters and non-ASCII text from the sender, the HELO name or DNS are
// replaced by '?', and values are quoted where RFC 5322 requires it. Folding
// is left to the caller.
func (o *Outcome) ReceivedSPF(receiver string) string {
	res := headerResult(o.Result)
	receiver = cleanText(receiver)

	var b strings.Builder
	b.Grow(256 + len(o.Sender) + len(o.HELO) + len(o.Mechanism) + len(o.Problem))
	b.WriteString(string(res))
	b.WriteString(" (")
	if receiver != "" {
		b.WriteString(escapeComment(receiver))
		b.WriteString(": ")
	}
	b.WriteString(escapeComment(o.commentText(res)))
	if o.Relay.IsValid() {
		b.WriteString("; ")
		b.WriteString(o.relayText())
	}
	b.WriteString(")")

	first := true
	pair := func(key, value string) {
		value = cleanText(value)
		if value == "" {
			return
		}
		if !first {
			b.WriteString(";")
		}
		first = false
		b.WriteString(" ")
		b.WriteString(key)
		b.WriteString("=")
		b.WriteString(dotAtomOrQuoted(value))
	}
	if o.IP.IsValid() {
		pair("client-ip", o.IP.String())
	}
	pair("envelope-from", o.Sender)
	pair("helo", o.HELO)
	pair("receiver", receiver)
	pair("mechanism", o.Mechanism)
	pair("problem", o.Problem)
	// identity= goes last: SpamAssassin finds it with a greedy ".*\bidentity=",
	// so any "identity=" text inside an earlier value (a mechanism or problem
	// can carry DNS text) must not come after ours.
	switch o.Identity {
	case IdentityMailFrom, IdentityHELO:
		pair("identity", string(o.Identity))
	}
	return b.String()
}

// commentText explains res in words for the Received-SPF comment, in the
// style of RFC 7208 §9.1's examples, from values cleaned for a header.
func (o *Outcome) commentText(res Result) string {
	subject := cleanText(o.Sender)
	if o.Identity == IdentityHELO && o.HELO != "" {
		subject = cleanText(o.HELO)
	}
	if subject == "" {
		subject = "the sender"
	}
	ip := "an unknown address"
	if o.IP.IsValid() {
		ip = o.IP.String()
	}
	switch res {
	case Pass:
		return "domain of " + subject + " designates " + ip + " as permitted sender"
	case Fail:
		return "domain of " + subject + " does not designate " + ip + " as permitted sender"
	case Softfail:
		return "domain of transitioning " + subject + " does not designate " + ip + " as permitted sender"
	case Neutral:
		return ip + " is neither permitted nor denied by domain of " + subject
	case None:
		if o.ProblemKind == ProblemNoOrigin {
			return "no client to check: " + cleanText(o.Problem)
		}
		domain := cleanText(o.Domain)
		if domain == "" {
			domain = "domain of " + subject
		}
		return domain + " does not provide an SPF record"
	case TempError:
		return "temporary error while checking domain of " + subject
	default:
		return "permanent error in the SPF policy for domain of " + subject
	}
}

// relayText names the relay o's message came through, for a comment.
func (o *Outcome) relayText() string {
	return "received through relay " + o.Relay.String()
}

// authEntry is one spf= entry of an Authentication-Results header, its
// values cleaned but not yet quoted.
type authEntry struct {
	result Result
	relay  string // a comment naming the relay, if any
	reason string // reason=, for a problem
	helo   string // smtp.helo=, for the HELO identity
	from   string // smtp.mailfrom=, for the MAIL FROM identity
}

// authEntry returns the spf= entry for o (RFC 8601 §2.7.2, RFC 7208 §9.2):
// smtp.mailfrom holds the bare MAIL FROM domain, smtp.helo the HELO name,
// and reason the problem of a temperror, permerror or none.
func (o *Outcome) authEntry() authEntry {
	e := authEntry{result: headerResult(o.Result), reason: cleanReason(o.Problem)}
	if o.Relay.IsValid() {
		e.relay = o.relayText()
		if o.IP.IsValid() {
			e.relay = "client " + o.IP.String() + " " + e.relay
		}
	}
	if o.Identity == IdentityHELO {
		e.helo = cleanPvalue(o.HELO)
		return e
	}
	// OpenDMARC compares smtp.mailfrom with the envelope domain and only
	// matches a bare domain (docs/interop.md), so the local part is dropped.
	domain := o.Domain
	if domain == "" {
		if at := strings.LastIndexByte(o.Sender, '@'); at >= 0 {
			domain = o.Sender[at+1:]
		}
	}
	e.from = cleanPvalue(domain)
	return e
}

// AuthenticationResults returns the value (without the field name) of an
// Authentication-Results header from authservID carrying one spf= entry per
// outcome. HELO outcomes are written before MAIL FROM ones because
// SpamAssassin reads only the last spf= entry of a header, and the MAIL FROM
// result is the one it should act on. Nil outcomes are skipped; with none
// left the header says "none" (RFC 8601 §2.2).
//
// Like ReceivedSPF, the value is one line of printable ASCII whatever the
// outcomes hold, every value is a token, an address or a quoted-string as
// RFC 8601 requires, and no value holds a ';' or '=' (see cleanReason).
// It is written here rather than by go-msgauth's authres.Format, which
// writes some values bare that RFC 8601 requires quoted and does not escape
// a backslash inside a quoted-string.
func AuthenticationResults(authservID string, outcomes ...*Outcome) string {
	ordered := make([]*Outcome, 0, len(outcomes))
	for _, o := range outcomes {
		if o != nil {
			ordered = append(ordered, o)
		}
	}
	slices.SortStableFunc(ordered, func(a, b *Outcome) int {
		return cmp.Compare(heloFirst(a.Identity), heloFirst(b.Identity))
	})
	var b strings.Builder
	b.WriteString(authservToken(authservID))
	if len(ordered) == 0 {
		b.WriteString("; none")
		return b.String()
	}
	for _, o := range ordered {
		e := o.authEntry()
		b.WriteString("; spf=")
		b.WriteString(string(e.result))
		if e.relay != "" {
			b.WriteString(" (")
			b.WriteString(e.relay)
			b.WriteString(")")
		}
		// RFC 8601 §2.2: the reason comes before the properties.
		if e.reason != "" {
			b.WriteString(" reason=")
			b.WriteString(tokenOrQuoted(e.reason))
		}
		if e.helo != "" {
			b.WriteString(" smtp.helo=")
			b.WriteString(pvalue(e.helo))
		}
		if e.from != "" {
			b.WriteString(" smtp.mailfrom=")
			b.WriteString(pvalue(e.from))
		}
	}
	return b.String()
}

// heloFirst ranks identities for Authentication-Results: HELO before MAIL
// FROM, for the reason AuthenticationResults gives.
func heloFirst(id Identity) int {
	if id == IdentityHELO {
		return 0
	}
	return 1
}

// headerResult returns r when it is one of the seven RFC results. Anything
// else can only be a programming error, reported as permerror so that it
// never reads as a pass and never lets arbitrary text into a header.
func headerResult(r Result) Result {
	if slices.Contains(Results, r) {
		return r
	}
	return PermError
}

// cleanText makes s printable ASCII on one line: every control character,
// DEL, invalid byte and non-ASCII character becomes '?', and the result is
// cut to maxHeaderValue bytes, ending in "..." when cut.
func cleanText(s string) string {
	if len(s) <= maxHeaderValue && isPrintableASCII(s) {
		// The common case, and every header holds several values.
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if b.Len() > maxHeaderValue {
			// Stop early: a hostile value may be megabytes long.
			break
		}
		if r < 0x20 || r >= 0x7f {
			// A range over a string yields utf8.RuneError for each invalid
			// byte, which lands here too.
			r = '?'
		}
		b.WriteByte(byte(r))
	}
	if b.Len() > maxHeaderValue {
		return b.String()[:maxHeaderValue-3] + "..."
	}
	return b.String()
}

// isPrintableASCII reports whether s holds only printable US-ASCII and
// spaces: what cleanText leaves as it is.
func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// cleanReason prepares a reason= value: clean text in which ';' becomes ','
// and '=' becomes ':'. Both are legal inside the quoted-string, but many
// readers of Authentication-Results do not honour quoting: go-msgauth's
// authres.Parse and SpamAssassin's regex split results at every ';' (a
// reason "x; spf=pass" would read as a second, passing, result), and they
// take any "key=value" word after the result as a property (a reason
// holding "smtp.mailfrom=victim.example" would name another domain). The
// reason can hold DNS text, so nothing in it may look like structure.
func cleanReason(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case ';':
			return ','
		case '=':
			return ':'
		}
		return r
	}, cleanText(s))
}

// cleanPvalue prepares an smtp.mailfrom or smtp.helo value: clean text in
// which ';' and '=' become '?', for the readers cleanReason describes. A
// domain or HELO name holding them is garbage anyway.
func cleanPvalue(s string) string {
	return strings.Map(func(r rune) rune {
		if r == ';' || r == '=' {
			return '?'
		}
		return r
	}, cleanText(s))
}

// tokenOrQuoted returns s as an RFC 2045 token when it is one, else as a
// quoted-string: the RFC 8601 value. s must already be clean.
func tokenOrQuoted(s string) string {
	if s != "" && isToken(s) {
		return s
	}
	return quoteString(s)
}

// pvalue returns s as an RFC 8601 pvalue: bare when it is a token or an
// address ([local-part] "@" domain-name, or a domain-name alone, since
// "." is not a tspecial), else a quoted-string. s must already be clean.
func pvalue(s string) string {
	if isAddress(s) {
		return s
	}
	return tokenOrQuoted(s)
}

// isAddress reports whether s is "[local-part] @ domain-name" as RFC 8601's
// pvalue allows it bare: a dot-atom local part (possibly empty) and an
// RFC 6376 domain-name, labels of letters, digits and inner hyphens.
func isAddress(s string) bool {
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return false
	}
	if local := s[:at]; local != "" && !isDotAtom(local) {
		return false
	}
	labels := strings.Split(s[at+1:], ".")
	for _, l := range labels {
		if l == "" || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			if c := l[i]; !isAlpha(c) && !isDigit(c) && c != '-' {
				return false
			}
		}
	}
	return true
}

// authservToken returns id as an RFC 8601 authserv-id (a MIME token or a
// quoted-string), since it goes into the header as it is.
func authservToken(id string) string {
	id = cleanText(id)
	if id != "" && isToken(id) {
		return id
	}
	return quoteString(id)
}

// isToken reports whether s is an RFC 2045 token: printable ASCII without
// space or tspecials.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?=`, c) >= 0 {
			return false
		}
	}
	return true
}

// escapeComment makes s fit inside an RFC 5322 comment: parentheses and
// backslashes become quoted-pairs. s must already be clean.
func escapeComment(s string) string {
	if !strings.ContainsAny(s, `()\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '(', ')', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// dotAtomOrQuoted returns s unchanged when it is an RFC 5322 dot-atom, else
// as a quoted-string, the two forms RFC 7208 §9.1 allows for a value.
// s must already be clean.
func dotAtomOrQuoted(s string) string {
	if isDotAtom(s) {
		return s
	}
	return quoteString(s)
}

func quoteString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}

// isDotAtom reports whether s is an RFC 5322 dot-atom-text: runs of atext
// separated by single dots.
func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != '.' && !isAtext(c) {
			return false
		}
	}
	return true
}

func isAtext(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}
