package spf

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// MacroString is a parsed macro-string (RFC 7208 §7.1): literal text and
// macros to expand against a check's values.
type MacroString struct {
	text  string
	parts []macroPart
}

type partKind uint8

const (
	partLiteral partKind = iota // text taken as it is
	partEscape                  // %%, %_ or %-: literal text, but a macro-expand in the grammar
	partMacro                   // %{...}
)

type macroPart struct {
	kind   partKind
	text   string // the literal text, for partLiteral and partEscape
	letter byte   // lower-case macro letter
	escape bool   // upper-case letter: URL-escape the value
	keep   int    // right-hand parts to keep; 0 keeps all
	rev    bool
	delims string // "" means "."
}

// String returns the macro-string as written.
func (m *MacroString) String() string { return m.text }

// ParseMacroString parses a macro-string. With explanation set it parses an
// explain-string instead (RFC 7208 §6.2): spaces are allowed and the
// explanation-only letters c, r and t are accepted.
func ParseMacroString(s string, explanation bool) (*MacroString, error) {
	m := &MacroString{text: s}
	lit := 0 // start of the pending literal run
	flush := func(end int) {
		if end > lit {
			m.parts = append(m.parts, macroPart{kind: partLiteral, text: s[lit:end]})
		}
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c != '%' {
			if !(c >= 0x21 && c <= 0x7e) && !(explanation && c == ' ') {
				return nil, fmt.Errorf("character %s not allowed in %s", strconv.QuoteToASCII(string(c)), quoteTerm(s))
			}
			i++
			continue
		}
		flush(i)
		if i+1 >= len(s) {
			return nil, fmt.Errorf("%s ends in a lone '%%'", quoteTerm(s))
		}
		switch s[i+1] {
		case '%':
			m.parts = append(m.parts, macroPart{kind: partEscape, text: "%"})
			i += 2
		case '_':
			m.parts = append(m.parts, macroPart{kind: partEscape, text: " "})
			i += 2
		case '-':
			m.parts = append(m.parts, macroPart{kind: partEscape, text: "%20"})
			i += 2
		case '{':
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return nil, fmt.Errorf("unterminated macro in %s", quoteTerm(s))
			}
			p, err := parseMacro(s[i+2:i+end], explanation)
			if err != nil {
				return nil, fmt.Errorf("bad macro %s: %v", quoteTerm(s[i:i+end+1]), err)
			}
			m.parts = append(m.parts, p)
			i += end + 1
		default:
			return nil, fmt.Errorf("bad macro %s: '%%' must be followed by '{', '%%', '_' or '-'", quoteTerm(s[i:i+2]))
		}
		lit = i
	}
	flush(len(s))
	if len(m.parts) == 0 {
		m.parts = []macroPart{{kind: partLiteral}}
	}
	return m, nil
}

// parseMacro parses the inside of %{...}: macro-letter transformers
// *delimiter.
func parseMacro(s string, explanation bool) (macroPart, error) {
	p := macroPart{kind: partMacro}
	if s == "" {
		return p, fmt.Errorf("no macro letter")
	}
	c := s[0]
	if c >= 'A' && c <= 'Z' {
		p.escape = true
		c += 'a' - 'A'
	}
	switch c {
	case 's', 'l', 'o', 'd', 'i', 'p', 'h', 'v':
	case 'c', 'r', 't':
		if !explanation {
			return p, fmt.Errorf("%%{%c} is only allowed in explanations", s[0])
		}
	default:
		return p, fmt.Errorf("unknown macro letter %s", strconv.QuoteToASCII(s[:1]))
	}
	p.letter = c
	i := 1
	for i < len(s) && isDigit(s[i]) {
		// Beyond 128 parts no domain can have more; cap rather than overflow.
		if p.keep <= 128 {
			p.keep = p.keep*10 + int(s[i]-'0')
		}
		i++
	}
	if i > 1 && p.keep == 0 {
		return p, fmt.Errorf("the number of parts must not be zero")
	}
	if i < len(s) && (s[i] == 'r' || s[i] == 'R') {
		p.rev = true
		i++
	}
	p.delims = s[i:]
	for ; i < len(s); i++ {
		if strings.IndexByte(".-+,/_=", s[i]) < 0 {
			return p, fmt.Errorf("bad delimiter %s", strconv.QuoteToASCII(s[i:i+1]))
		}
	}
	return p, nil
}

// MacroEnv holds the values that macros expand to (RFC 7208 §7.3).
type MacroEnv struct {
	Sender   string     // <sender>: %{s}; %{l} and %{o} are its parts
	Domain   string     // <domain>: %{d}
	IP       netip.Addr // <ip>: %{i}, %{c}, %{v}
	HELO     string     // %{h}
	Receiver string     // %{r}; "unknown" when empty
	Now      time.Time  // %{t}
	// PTR returns the validated domain name of IP for %{p}; nil, or an
	// empty answer, expands to "unknown". It is called only when a %{p}
	// is expanded, because finding it costs DNS queries.
	PTR func() string
}

// Expand returns the macro-string with its macros replaced.
func (m *MacroString) Expand(env *MacroEnv) string {
	if len(m.parts) == 1 && m.parts[0].kind != partMacro {
		return m.parts[0].text
	}
	var b strings.Builder
	for i := range m.parts {
		p := &m.parts[i]
		if p.kind != partMacro {
			b.WriteString(p.text)
			continue
		}
		v := p.transform(macroValue(p.letter, env))
		if p.escape {
			v = urlEscape(v)
		}
		b.WriteString(v)
	}
	return b.String()
}

func macroValue(letter byte, env *MacroEnv) string {
	switch letter {
	case 's':
		return env.Sender
	case 'l':
		l, _ := splitSender(env.Sender)
		return l
	case 'o':
		_, o := splitSender(env.Sender)
		return o
	case 'd':
		return env.Domain
	case 'i':
		return dottedIP(env.IP)
	case 'p':
		if env.PTR != nil {
			if p := env.PTR(); p != "" {
				return p
			}
		}
		return "unknown"
	case 'h':
		return env.HELO
	case 'v':
		if env.IP.Is4() {
			return "in-addr"
		}
		return "ip6"
	case 'c':
		return env.IP.String()
	case 'r':
		if env.Receiver == "" {
			return "unknown"
		}
		return env.Receiver
	case 't':
		return strconv.FormatInt(env.Now.Unix(), 10)
	}
	return ""
}

// transform applies the transformers: split on the delimiters, reverse,
// keep the right-hand parts, join with dots (RFC 7208 §7.3).
func (p *macroPart) transform(v string) string {
	if p.keep == 0 && !p.rev && (p.delims == "" || p.delims == ".") {
		return v
	}
	delims := p.delims
	if delims == "" {
		delims = "."
	}
	// Split by hand: empty parts count as parts.
	var parts []string
	start := 0
	for i := 0; i < len(v); i++ {
		if strings.IndexByte(delims, v[i]) >= 0 {
			parts = append(parts, v[start:i])
			start = i + 1
		}
	}
	parts = append(parts, v[start:])
	if p.rev {
		for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
			parts[i], parts[j] = parts[j], parts[i]
		}
	}
	if p.keep > 0 && p.keep < len(parts) {
		parts = parts[len(parts)-p.keep:]
	}
	return strings.Join(parts, ".")
}

// splitSender splits <sender> at its last '@'; a missing local part is
// "postmaster" (RFC 7208 §4.3).
func splitSender(s string) (local, domain string) {
	i := strings.LastIndexByte(s, '@')
	if i < 0 {
		return "postmaster", s
	}
	local, domain = s[:i], s[i+1:]
	if local == "" {
		local = "postmaster"
	}
	return local, domain
}

// dottedIP renders an address for %{i}: dotted quad for IPv4, dot-separated
// nibbles for IPv6 (RFC 7208 §7.3).
func dottedIP(ip netip.Addr) string {
	if !ip.IsValid() {
		return ""
	}
	if ip.Is4() {
		return ip.String()
	}
	// Upper-case nibbles, as the RFC 7208 test suite expects in
	// explanations; DNS names compare without case, so queries do not care.
	const hex = "0123456789ABCDEF"
	a := ip.As16()
	b := make([]byte, 0, 63)
	for i, x := range a {
		if i > 0 {
			b = append(b, '.')
		}
		b = append(b, hex[x>>4], '.', hex[x&0xf])
	}
	return string(b)
}

// urlEscape escapes every byte outside RFC 3986's unreserved set, as
// upper-case macro letters require (RFC 7208 §7.3).
func urlEscape(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isAlpha(c) || isDigit(c) || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}
