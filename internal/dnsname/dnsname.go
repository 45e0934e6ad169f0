// Package dnsname converts between domain names as raw octets, which is
// what SPF macros produce, and the presentation form github.com/miekg/dns
// packs, and compares names the way DNS does. The real resolver and the
// test resolvers share it so that both ask for exactly the same names.
package dnsname

import (
	"fmt"
	"strings"

	"github.com/miekg/dns"
)

// Queryable reports whether name, taken as raw octets with "." between
// labels, can be put in a query: no empty label, no label over 63 octets,
// at most 255 octets in wire form. A trailing dot is allowed.
func Queryable(name string) bool {
	name = strings.TrimSuffix(name, ".")
	if name == "" {
		return false
	}
	wire := 1
	for label := range strings.SplitSeq(name, ".") {
		if len(label) == 0 || len(label) > 63 {
			return false
		}
		wire += 1 + len(label)
	}
	return wire <= 255
}

// Escape turns a name of raw octets into the fully qualified presentation
// form miekg/dns packs, so that a backslash, quote, space or control byte
// in it (a macro can put one there) is asked as itself.
func Escape(name string) string {
	i := 0
	for i < len(name) && !needsEscape(name[i]) {
		i++
	}
	if i == len(name) {
		// The usual name: nothing to escape, no copy to make.
		return dns.Fqdn(name)
	}
	var b strings.Builder
	b.Grow(len(name) + 8)
	b.WriteString(name[:i])
	for ; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '.':
			b.WriteByte(c)
		case needsEscape(c):
			fmt.Fprintf(&b, "\\%03d", c)
		default:
			b.WriteByte(c)
		}
	}
	return dns.Fqdn(b.String())
}

func needsEscape(c byte) bool {
	return c != '.' && (c <= 0x20 || c >= 0x7f || strings.IndexByte(`\"();@$`, c) >= 0)
}

// Key maps a name in presentation form to its wire form with ASCII letters
// lowercased, so that names compare as DNS compares them whatever escapes
// either side used. A name that cannot be packed (a label over 63 octets)
// is keyed by its lowercased text.
func Key(name string) string {
	fqdn := dns.Fqdn(name)
	buf := make([]byte, 256)
	n, err := dns.PackDomainName(fqdn, buf, 0, nil, false)
	if err != nil {
		return "text:" + strings.ToLower(fqdn)
	}
	b := buf[:n]
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// Same reports whether two names in presentation form are one DNS name.
func Same(a, b string) bool { return Key(a) == Key(b) }
