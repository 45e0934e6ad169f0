package wire

import (
	"bytes"
	"net/netip"
	"strings"
)

// ParseClientAddr reads a client address as MTAs write it, in the connect
// data or in {client_addr}: plain, in brackets ("[192.0.2.1]", as in an
// address literal), with Sendmail's "IPv6:" prefix ("IPv6:2001:db8::1",
// "[IPv6:2001:db8::1]"), or with a zone ("fe80::1%eth0", and
// "192.0.2.1%eth0", which netip refuses). The zone is dropped: SPF
// matches addresses only. An IPv4-mapped IPv6 address is the IPv4 client
// it maps (RFC 7208 §5.6 matches "ip4" against it).
func ParseClientAddr(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '[' && s[len(s)-1] == ']' {
		s = s[1 : len(s)-1]
	}
	if len(s) > 5 && strings.EqualFold(s[:5], "IPv6:") {
		s = s[5:]
	}
	if i := strings.IndexByte(s, '%'); i >= 0 {
		s = s[:i]
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// normalizeConnect rewrites, in place, the client address of a connect
// packet's data (after the command code: host name, NUL, family, port for
// '4' and '6', address, NUL) into the form net.ParseIP reads, which is how
// go-milter hands it to Connect: "[192.0.2.1]", "IPv6:2001:db8::1" or a
// zone would otherwise come as no address at all. The canonical form is
// never longer than what ParseClientAddr read, so it fits where the
// address was; NULs fill the rest, and go-milter reads up to the first
// NUL. Data it cannot read is left as it is.
func normalizeConnect(data []byte) {
	i := bytes.IndexByte(data, 0)
	if i < 0 || i+1 >= len(data) {
		return
	}
	family, rest := data[i+1], data[i+2:]
	if family == '4' || family == '6' {
		if len(rest) < 2 {
			return
		}
		rest = rest[2:]
	}
	if j := bytes.IndexByte(rest, 0); j >= 0 {
		rest = rest[:j]
	}
	a, ok := ParseClientAddr(string(rest))
	if !ok {
		return
	}
	canon := a.String()
	if canon == string(rest) || len(canon) > len(rest) {
		return
	}
	clear(rest[copy(rest, canon):])
}
