package spf

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Qualifier is the prefix of a directive that says which result a match
// gives (RFC 7208 §4.6.2).
type Qualifier byte

// The four qualifiers.
const (
	QualifierPass     Qualifier = '+'
	QualifierFail     Qualifier = '-'
	QualifierSoftfail Qualifier = '~'
	QualifierNeutral  Qualifier = '?'
)

// Result returns the result a matching directive with this qualifier gives.
func (q Qualifier) Result() Result {
	switch q {
	case QualifierFail:
		return Fail
	case QualifierSoftfail:
		return Softfail
	case QualifierNeutral:
		return Neutral
	default:
		return Pass
	}
}

// Mechanism names a mechanism (RFC 7208 §5).
type Mechanism string

// The eight mechanisms.
const (
	MechanismAll     Mechanism = "all"
	MechanismInclude Mechanism = "include"
	MechanismA       Mechanism = "a"
	MechanismMX      Mechanism = "mx"
	MechanismPTR     Mechanism = "ptr"
	MechanismIP4     Mechanism = "ip4"
	MechanismIP6     Mechanism = "ip6"
	MechanismExists  Mechanism = "exists"
)

// queriesDNS reports whether the mechanism counts against the limit of 10
// DNS-querying terms (RFC 7208 §4.6.4).
func (m Mechanism) queriesDNS() bool {
	switch m {
	case MechanismInclude, MechanismA, MechanismMX, MechanismPTR, MechanismExists:
		return true
	}
	return false
}

// Term is a directive or a modifier of a record.
type Term interface {
	String() string
	isTerm()
}

// Directive is a qualifier and a mechanism with its arguments.
type Directive struct {
	Qualifier Qualifier
	Mechanism Mechanism
	// Domain is the domain-spec argument; nil when absent (a, mx and ptr
	// then use the current domain).
	Domain *MacroString
	// Network is the argument of ip4 and ip6, already masked.
	Network netip.Prefix
	// CIDR4 and CIDR6 are the dual CIDR lengths of a and mx (32 and 128
	// when absent).
	CIDR4, CIDR6 int

	// raw is the term as written in the record: what the trace and the
	// Outcome name, without formatting anything on the hot path.
	raw string
}

func (*Directive) isTerm() {}

// String prints the directive in its canonical form.
func (d *Directive) String() string {
	var b strings.Builder
	if d.Qualifier != QualifierPass {
		b.WriteByte(byte(d.Qualifier))
	}
	b.WriteString(string(d.Mechanism))
	switch d.Mechanism {
	case MechanismIP4, MechanismIP6:
		b.WriteByte(':')
		b.WriteString(d.Network.Addr().String())
		if d.Network.Bits() != d.Network.Addr().BitLen() {
			b.WriteByte('/')
			b.WriteString(strconv.Itoa(d.Network.Bits()))
		}
		return b.String()
	}
	if d.Domain != nil {
		b.WriteByte(':')
		b.WriteString(d.Domain.String())
	}
	if d.Mechanism == MechanismA || d.Mechanism == MechanismMX {
		if d.CIDR4 != 32 {
			b.WriteByte('/')
			b.WriteString(strconv.Itoa(d.CIDR4))
		}
		if d.CIDR6 != 128 {
			b.WriteString("//")
			b.WriteString(strconv.Itoa(d.CIDR6))
		}
	}
	return b.String()
}

// Modifier is a name=value term (RFC 7208 §6).
type Modifier struct {
	// Name is lower case: modifier names are case-insensitive.
	Name  string
	Value *MacroString
	raw   string
}

func (*Modifier) isTerm() {}

// String prints the modifier as name=value.
func (m *Modifier) String() string { return m.Name + "=" + m.Value.String() }

// Record is a parsed SPF record.
type Record struct {
	// Terms holds every term in the order written.
	Terms []Term
	// Directives holds the directives in the order written.
	Directives []*Directive
	// Redirect and Exp are the redirect= and exp= modifiers, nil when absent.
	Redirect *Modifier
	Exp      *Modifier
}

// String prints the record back as text, terms in canonical form.
func (r *Record) String() string {
	var b strings.Builder
	b.WriteString("v=spf1")
	for _, t := range r.Terms {
		b.WriteByte(' ')
		b.WriteString(t.String())
	}
	return b.String()
}

// SyntaxError says why a record is malformed; evaluating such a record is
// permerror (RFC 7208 §4.6).
type SyntaxError struct {
	// Term is the offending term as written; empty for a problem with the
	// record as a whole.
	Term   string
	Reason string
}

func (e *SyntaxError) Error() string {
	if e.Term == "" {
		return e.Reason
	}
	return fmt.Sprintf("invalid term %s: %s", quoteTerm(e.Term), e.Reason)
}

// quoteTerm quotes a term for a message, escaping control and non-ASCII
// bytes, so a hostile record cannot inject anything into a log or header.
func quoteTerm(s string) string {
	const max = 80
	if len(s) > max {
		s = s[:max] + "..."
	}
	return strconv.QuoteToASCII(s)
}

// IsSPFRecord reports whether a TXT string is an SPF version 1 record: it
// starts with "v=spf1" (any case) followed by a space or its end
// (RFC 7208 §4.5).
func IsSPFRecord(txt string) bool {
	return len(txt) >= 6 && strings.EqualFold(txt[:6], "v=spf1") && (len(txt) == 6 || txt[6] == ' ')
}

// Parse parses an SPF record completely: any syntax error anywhere is
// reported, even after a term that would match, because RFC 7208 §4.6
// requires the whole record to be checked before evaluation.
func Parse(txt string) (*Record, error) {
	if !IsSPFRecord(txt) {
		return nil, &SyntaxError{Reason: "record does not start with v=spf1"}
	}
	// Every term follows a space, so the spaces bound the terms: size
	// everything once, with the directives in one backing array.
	n := strings.Count(txt, " ")
	r := &Record{Terms: make([]Term, 0, n), Directives: make([]*Directive, 0, n)}
	store := make([]Directive, 0, n)
	// Terms are separated by spaces only; any other byte, a tab or a CR
	// among them, is part of a term and makes that term invalid.
	for rest, more := txt[6:], true; more; {
		var tok string
		tok, rest, more = strings.Cut(rest, " ")
		if tok == "" {
			continue
		}
		if i := indexTermSep(tok); i >= 0 && tok[i] == '=' {
			// A term is a modifier when "=" comes before any ":" or "/"
			// (RFC 7208 §4.6.1).
			m, err := parseModifier(tok, tok[:i], tok[i+1:])
			if err != nil {
				return nil, err
			}
			r.Terms = append(r.Terms, m)
			if err := r.setModifier(tok, m); err != nil {
				return nil, err
			}
			continue
		}
		store = append(store, Directive{})
		d := &store[len(store)-1]
		if err := d.parse(tok); err != nil {
			return nil, err
		}
		r.Terms = append(r.Terms, d)
		r.Directives = append(r.Directives, d)
	}
	return r, nil
}

// indexTermSep returns the index of the first '=', ':' or '/' in tok, or -1.
func indexTermSep(tok string) int {
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; c == '=' || c == ':' || c == '/' {
			return i
		}
	}
	return -1
}

// setModifier records redirect= and exp=, which may appear once each
// (RFC 7208 §6).
func (r *Record) setModifier(tok string, t *Modifier) error {
	switch t.Name {
	case "redirect":
		if r.Redirect != nil {
			return &SyntaxError{Term: tok, Reason: "redirect= given more than once"}
		}
		r.Redirect = t
	case "exp":
		if r.Exp != nil {
			return &SyntaxError{Term: tok, Reason: "exp= given more than once"}
		}
		r.Exp = t
	}
	return nil
}

func parseModifier(tok, name, value string) (*Modifier, error) {
	if !validModifierName(name) {
		return nil, &SyntaxError{Term: tok, Reason: "modifier name must be a letter followed by letters, digits, '-', '_' or '.'"}
	}
	m := &Modifier{Name: strings.ToLower(name), raw: tok}
	var err error
	switch m.Name {
	case "redirect", "exp":
		m.Value, err = parseDomainSpec(value)
	default:
		m.Value, err = ParseMacroString(value, false)
	}
	if err != nil {
		return nil, &SyntaxError{Term: tok, Reason: err.Error()}
	}
	return m, nil
}

func validModifierName(name string) bool {
	if name == "" || !isAlpha(name[0]) {
		return false
	}
	for i := 1; i < len(name); i++ {
		c := name[i]
		if !isAlpha(c) && !isDigit(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

// parse fills d from a directive term.
func (d *Directive) parse(tok string) error {
	*d = Directive{Qualifier: QualifierPass, CIDR4: 32, CIDR6: 128}
	body := tok
	switch Qualifier(body[0]) {
	case QualifierPass, QualifierFail, QualifierSoftfail, QualifierNeutral:
		d.Qualifier = Qualifier(body[0])
		body = body[1:]
	}
	name, rest := body, ""
	if i := strings.IndexAny(body, ":/"); i >= 0 {
		name, rest = body[:i], body[i:]
	}
	d.Mechanism = Mechanism(strings.ToLower(name))
	var err error
	switch d.Mechanism {
	case MechanismAll:
		if rest != "" {
			err = fmt.Errorf("all takes no argument")
		}
	case MechanismInclude, MechanismExists:
		if !strings.HasPrefix(rest, ":") {
			err = fmt.Errorf("%s needs :domain", d.Mechanism)
			break
		}
		d.Domain, err = parseDomainSpec(rest[1:])
	case MechanismPTR:
		if rest == "" {
			break
		}
		if rest[0] != ':' {
			err = fmt.Errorf("ptr takes no CIDR length")
			break
		}
		d.Domain, err = parseDomainSpec(rest[1:])
	case MechanismA, MechanismMX:
		err = d.parseDomainAndCIDR(rest)
	case MechanismIP4, MechanismIP6:
		err = d.parseNetwork(rest)
	default:
		err = fmt.Errorf("unknown mechanism")
	}
	if err != nil {
		return &SyntaxError{Term: tok, Reason: err.Error()}
	}
	d.raw = tok
	return nil
}

// parseDomainAndCIDR parses [ ":" domain-spec ] [ dual-cidr-length ].
func (d *Directive) parseDomainAndCIDR(rest string) error {
	if rest == "" {
		return nil
	}
	if rest[0] == '/' {
		return d.parseDualCIDR(rest)
	}
	spec := rest[1:]
	// The CIDR lengths are the longest suffix of the form /N, //N or
	// /N//N; what comes before is the domain-spec, which may itself hold
	// '/' (RFC 7208 §7.1 allows any visible character).
	cut := len(spec)
	if i := cidrSuffix(spec, cut, "//"); i >= 0 {
		cut = i
	}
	if i := cidrSuffix(spec, cut, "/"); i >= 0 {
		cut = i
	}
	if err := d.parseDualCIDR(spec[cut:]); err != nil {
		return err
	}
	var err error
	d.Domain, err = parseDomainSpec(spec[:cut])
	return err
}

// cidrSuffix returns where a sep+DIGITS suffix of s[:end] starts, or -1.
func cidrSuffix(s string, end int, sep string) int {
	i := end
	for i > 0 && isDigit(s[i-1]) {
		i--
	}
	if i == end || !strings.HasSuffix(s[:i], sep) {
		return -1
	}
	i -= len(sep)
	if sep == "/" && i > 0 && s[i-1] == '/' {
		return -1
	}
	return i
}

func (d *Directive) parseDualCIDR(s string) error {
	if s == "" {
		return nil
	}
	v6 := ""
	if i := strings.Index(s, "//"); i >= 0 {
		s, v6 = s[:i], s[i+2:]
		var err error
		if d.CIDR6, err = parseCIDRLength(v6, 128); err != nil {
			return err
		}
	}
	if s == "" {
		return nil
	}
	if s[0] != '/' {
		return fmt.Errorf("bad CIDR length %s", quoteTerm(s))
	}
	var err error
	d.CIDR4, err = parseCIDRLength(s[1:], 32)
	return err
}

// parseCIDRLength parses a prefix length: decimal without leading zeros,
// at most max (RFC 7208 §5.6).
func parseCIDRLength(s string, max int) (int, error) {
	if s == "" || len(s) > 3 || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("bad CIDR length %s", quoteTerm(s))
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return 0, fmt.Errorf("bad CIDR length %s", quoteTerm(s))
		}
		n = n*10 + int(s[i]-'0')
	}
	if n > max {
		return 0, fmt.Errorf("CIDR length %d is over %d", n, max)
	}
	return n, nil
}

func (d *Directive) parseNetwork(rest string) error {
	if !strings.HasPrefix(rest, ":") {
		return fmt.Errorf("%s needs :network", d.Mechanism)
	}
	addrText, lenText, hasLen := strings.Cut(rest[1:], "/")
	addr, err := netip.ParseAddr(addrText)
	if err != nil || addr.Zone() != "" {
		return fmt.Errorf("bad address %s", quoteTerm(addrText))
	}
	max := 32
	if d.Mechanism == MechanismIP4 {
		if !addr.Is4() {
			return fmt.Errorf("%s is not an IPv4 address", quoteTerm(addrText))
		}
	} else {
		// An IPv4 address is no ip6-network, but an IPv4-mapped IPv6
		// address in IPv6 notation is.
		if !addr.Is6() {
			return fmt.Errorf("%s is not an IPv6 address", quoteTerm(addrText))
		}
		max = 128
	}
	bits := max
	if hasLen {
		if bits, err = parseCIDRLength(lenText, max); err != nil {
			return err
		}
	}
	d.Network = netip.PrefixFrom(addr, bits).Masked()
	return nil
}

// parseDomainSpec parses domain-spec = macro-string domain-end
// (RFC 7208 §7.1).
func parseDomainSpec(s string) (*MacroString, error) {
	if s == "" {
		return nil, fmt.Errorf("empty domain-spec")
	}
	m, err := ParseMacroString(s, false)
	if err != nil {
		return nil, err
	}
	last := m.parts[len(m.parts)-1]
	if last.kind != partLiteral {
		return m, nil // ends in macro-expand
	}
	// domain-end = "." toplabel [ "." ]
	lit := strings.TrimSuffix(last.text, ".")
	dot := strings.LastIndexByte(lit, '.')
	if dot < 0 || !validTopLabel(lit[dot+1:]) {
		return nil, fmt.Errorf("domain-spec %s does not end in a valid top-level label", quoteTerm(s))
	}
	return m, nil
}

// validTopLabel implements toplabel = ( *alphanum ALPHA *alphanum ) /
// ( 1*alphanum "-" *( alphanum / "-" ) alphanum ): letters, digits and
// inner hyphens, never all digits.
func validTopLabel(l string) bool {
	if l == "" || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	special := false
	for i := 0; i < len(l); i++ {
		c := l[i]
		switch {
		case isAlpha(c), c == '-':
			special = true
		case isDigit(c):
		default:
			return false
		}
	}
	return special
}

func isAlpha(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// written returns the term as the record's author wrote it, or its
// canonical form for a term built by hand.
func written(t Term) string {
	switch t := t.(type) {
	case *Directive:
		if t.raw != "" {
			return t.raw
		}
	case *Modifier:
		if t.raw != "" {
			return t.raw
		}
	}
	return t.String()
}
