// Package received reads the "from" clause of a Received header field
// (RFC 5321 §4.4): the address and HELO name of the client an MTA took a
// message from. It reads the forms that real MTAs write and refuses to
// guess on anything else, since a wrong guess would check SPF for an
// address the mail never came from:
//
//	Postfix, Sendmail: from HELO (RDNS [IP])       RDNS may be "unknown", "user@RDNS" or absent
//	Gmail:             from HELO (RDNS. [IP])
//	Exim:              from RDNS ([IP]:PORT helo=HELO)   or   from [IP] (port=PORT helo=HELO)
//	Exchange, 365:     from HELO (IP)
//
// An IPv6 address is written [IPv6:2001:db8::1], [2001:db8::1] or, by
// Exchange, bare. A field with no from clause, with no address or with
// more than one, or with text where none of these forms has any, is
// refused with an error saying why.
package received

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// MaxLen bounds the field values read: a Received field of a real MTA is
// a few hundred octets, folded. A longer one is refused rather than cut,
// since a cut field could lose the part that matters.
const MaxLen = 2048

// Hop is what a Received field says of the client the message came from.
type Hop struct {
	// IP is the client's address.
	IP netip.Addr
	// HELO is the name the client gave in HELO or EHLO, as the MTA wrote
	// it; "" when the field does not give one (Exim omits it when it is
	// the client's address).
	HELO string
	// Authenticated reports that the field's protocol says the client
	// authenticated (RFC 3848: ESMTPA, ESMTPSA, LMTPA...).
	Authenticated bool
}

// Parse reads the value of one Received field (without "Received:"). Line
// folds (CRLF or LF followed by white space) are read as white space. An
// error says what is wrong with the field, without naming it.
func Parse(value string) (Hop, error) {
	if len(value) > MaxLen {
		return Hop{}, fmt.Errorf("longer than %d octets", MaxLen)
	}
	for i := 0; i < len(value); i++ {
		if c := value[i]; (c < ' ' && c != '\t' && c != '\r' && c != '\n') || c == 0x7f {
			return Hop{}, errors.New("a control character")
		}
	}
	s := scanner{v: value}
	if w := s.word(); !strings.EqualFold(w, "from") {
		return Hop{}, errors.New("no from clause")
	}
	name := s.word()
	if name == "" {
		return Hop{}, errors.New("no name after from")
	}
	var comments []string
	for {
		s.space()
		if s.peek() != '(' {
			break
		}
		c, ok := s.comment()
		if !ok {
			return Hop{}, errors.New("an unclosed comment")
		}
		comments = append(comments, c)
	}
	// The from clause ends with the by clause, another clause (RFC 5321
	// §4.4), or the date.
	rest := s.v[s.i:]
	if rest != "" && rest[0] != ';' {
		switch w := strings.ToLower(s.word()); w {
		case "by", "via", "with", "id", "for":
		default:
			return Hop{}, fmt.Errorf("unexpected text %q in the from clause", cut(w))
		}
	}
	proto := protocol(rest)

	var candidates []netip.Addr
	helo, heloGiven := "", false
	for _, c := range comments {
		for _, tok := range strings.Fields(c) {
			// Sendmail writes an ident user before the address literal.
			if at := strings.LastIndexByte(tok, '@'); at >= 0 && strings.HasPrefix(tok[at+1:], "[") {
				tok = tok[at+1:]
			}
			switch {
			case strings.ContainsAny(tok, "[]"):
				ip, ok := literal(tok)
				if !ok {
					return Hop{}, fmt.Errorf("an unreadable address %q", cut(tok))
				}
				candidates = append(candidates, ip)
			case hasPrefixFold(tok, "helo="):
				helo, heloGiven = tok[len("helo="):], true
			default:
				if ip, err := netip.ParseAddr(tok); err == nil {
					if ip.Zone() != "" {
						return Hop{}, fmt.Errorf("a scoped address %q", cut(tok))
					}
					candidates = append(candidates, ip.Unmap())
				}
			}
		}
	}
	h := Hop{HELO: name, Authenticated: authenticated(proto)}
	switch {
	case len(candidates) > 1:
		return Hop{}, errors.New("more than one address in the from clause")
	case len(candidates) == 1:
		h.IP = candidates[0]
	case name[0] == '[':
		// Exim, when the client has no verified name: the address in the
		// name's place, the HELO name in helo=.
		ip, ok := literal(name)
		if !ok {
			return Hop{}, fmt.Errorf("an unreadable address %q", cut(name))
		}
		h.IP, h.HELO = ip, ""
	default:
		return Hop{}, errors.New("no address in the from clause")
	}
	if heloGiven {
		h.HELO = helo
	}
	return h, nil
}

// literal reads an address literal as MTAs write it: [192.0.2.1],
// [IPv6:2001:db8::1] or [2001:db8::1], optionally followed by ":PORT".
func literal(tok string) (netip.Addr, bool) {
	end := strings.IndexByte(tok, ']')
	if tok == "" || tok[0] != '[' || end < 0 {
		return netip.Addr{}, false
	}
	if port := tok[end+1:]; port != "" {
		if port[0] != ':' || len(port) == 1 || strings.Trim(port[1:], "0123456789") != "" {
			return netip.Addr{}, false
		}
	}
	inner := tok[1:end]
	v6 := hasPrefixFold(inner, "IPv6:")
	if v6 {
		inner = inner[len("IPv6:"):]
	}
	ip, err := netip.ParseAddr(inner)
	if err != nil || ip.Zone() != "" || (v6 && !ip.Is6()) {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}

// protocol returns the word after "with" outside comments in rest, the
// part of the field after the from clause; "" when there is none.
func protocol(rest string) string {
	s := scanner{v: rest}
	for {
		s.space()
		if s.i >= len(s.v) || s.peek() == ';' {
			return ""
		}
		if s.peek() == '(' {
			if _, ok := s.comment(); !ok {
				return ""
			}
			continue
		}
		if strings.EqualFold(s.word(), "with") {
			s.space()
			if s.peek() == '(' {
				return ""
			}
			return strings.TrimSuffix(s.word(), ";")
		}
	}
}

// authenticated reports whether proto is a protocol name saying that the
// client authenticated (RFC 3848, RFC 6531).
func authenticated(proto string) bool {
	switch strings.ToUpper(proto) {
	case "ESMTPA", "ESMTPSA", "LMTPA", "LMTPSA", "UTF8SMTPA", "UTF8SMTPSA", "UTF8LMTPA", "UTF8LMTPSA":
		return true
	}
	return false
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// cut shortens a piece of a field quoted in an error.
func cut(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// scanner walks a field value.
type scanner struct {
	v string
	i int
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

func (s *scanner) peek() byte {
	if s.i < len(s.v) {
		return s.v[s.i]
	}
	return 0
}

func (s *scanner) space() {
	for s.i < len(s.v) && isSpace(s.v[s.i]) {
		s.i++
	}
}

// word returns the next run of non-white-space octets.
func (s *scanner) word() string {
	s.space()
	start := s.i
	for s.i < len(s.v) && !isSpace(s.v[s.i]) {
		s.i++
	}
	return s.v[start:s.i]
}

// comment reads a comment starting at s.i, nested comments and
// quoted-pairs included (RFC 5322 §3.2.2), and returns its text without
// the outer parentheses; a nested comment's parentheses become spaces.
// ok is false when it does not end.
func (s *scanner) comment() (string, bool) {
	var b strings.Builder
	depth := 0
	for ; s.i < len(s.v); s.i++ {
		switch c := s.v[s.i]; c {
		case '(':
			if depth > 0 {
				b.WriteByte(' ')
			}
			depth++
		case ')':
			depth--
			if depth == 0 {
				s.i++
				return b.String(), true
			}
			b.WriteByte(' ')
		case '\\':
			if s.i+1 < len(s.v) {
				s.i++
				b.WriteByte(s.v[s.i])
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", false
}
