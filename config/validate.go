package config

import (
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"unicode"
)

// ParseListen turns a milter socket specification into the network and
// address of net.Listen:
//
//	inet:127.0.0.1:8895        tcp   127.0.0.1:8895
//	inet6:[::1]:8895           tcp6  [::1]:8895
//	inet:8895@127.0.0.1        tcp   127.0.0.1:8895   (Sendmail's form)
//	inet:8895@[::1]            tcp6  [::1]:8895
//	inet6:8895@::1             tcp6  [::1]:8895
//	unix:/run/spf-milter.sock  unix  /run/spf-milter.sock
//	local:/run/spf-milter.sock unix  /run/spf-milter.sock
//
// An IPv6 address gives tcp6 even after inet:, since that is plainly what
// is meant. HOST may be a host name; PORT is a number, 0 asking the system
// for a free port (for tests). A listen address on every interface must be
// written out (inet:0.0.0.0:8895), because Sendmail's inet:PORT with no host
// is easily mistaken for a local-only socket.
func ParseListen(s string) (network, address string, err error) {
	network, address, reason := parseListen(s)
	if reason != "" {
		return "", "", fmt.Errorf("bad listen address %q: %s (allowed: %s)", s, reason, allowedListen)
	}
	return network, address, nil
}

// parseListen is ParseListen giving the reason alone, for a Problem.
func parseListen(s string) (network, address, reason string) {
	scheme, rest, ok := strings.Cut(s, ":")
	if !ok {
		return "", "", "no socket type"
	}
	switch scheme {
	case "unix", "local":
		switch {
		case rest == "":
			return "", "", "no socket path"
		case !strings.HasPrefix(rest, "/"):
			return "", "", "the socket path must be absolute"
		case strings.ContainsRune(rest, 0):
			return "", "", "a NUL byte in the socket path"
		}
		return "unix", rest, ""
	case "inet", "inet6":
	default:
		return "", "", fmt.Sprintf("unknown socket type %q", scheme)
	}

	var host, port string
	if p, h, sendmail := strings.Cut(rest, "@"); sendmail {
		port, host = p, h
		if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
			host = host[1 : len(host)-1]
		}
	} else {
		var err error
		host, port, err = net.SplitHostPort(rest)
		if err != nil {
			switch {
			case isDigits(rest):
				return "", "", fmt.Sprintf("no host; write %s:127.0.0.1:%s for this host only, or %s:0.0.0.0:%s for every address", scheme, rest, scheme, rest)
			case strings.Count(rest, ":") > 1 && !strings.HasPrefix(rest, "["):
				return "", "", "an IPv6 address needs brackets, as in inet6:[::1]:8895"
			case !strings.Contains(rest, ":"):
				return "", "", "no port"
			}
			return "", "", "not HOST:PORT"
		}
	}
	if !isDigits(port) {
		return "", "", fmt.Sprintf("port %q is not a number", port)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", "", fmt.Sprintf("port %s is out of range (at most 65535)", port)
	}
	port = strconv.FormatUint(n, 10) // no leading zeros
	if host == "" {
		return "", "", "no host; write 0.0.0.0 (or [::] with inet6) to listen on every address"
	}

	network = "tcp"
	if scheme == "inet6" {
		network = "tcp6"
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		switch {
		case ip.Is4() && scheme == "inet6":
			return "", "", fmt.Sprintf("%s is an IPv4 address; use inet: for it", host)
		case ip.Is6():
			network = "tcp6"
		}
		host = ip.String()
	} else if reason := checkHostname(host); reason != "" {
		return "", "", fmt.Sprintf("host %q is neither an IP address nor a host name: %s", host, reason)
	}
	return network, net.JoinHostPort(host, port), ""
}

// isDigits reports whether s is a non-empty run of ASCII digits.
func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// parseMode reads a permission mode written in octal, like chmod's: three
// digits, or four starting with 0. Set-id and sticky bits make no sense on
// a socket, so they are refused.
func parseMode(s string) (fs.FileMode, string) {
	if (len(s) != 3 && len(s) != 4) || (len(s) == 4 && s[0] != '0') {
		return 0, "not an octal mode of three digits, or four starting with 0"
	}
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil {
		return 0, "not an octal number (digits 0 to 7)"
	}
	return fs.FileMode(n), ""
}

// checkHostname returns why s is not a host name, or "". Underscores are
// allowed because they are common in DNS names other than host names
// (_spf.example.com) and harmless in the headers we write.
func checkHostname(s string) string {
	switch {
	case s == "":
		return "empty"
	case len(s) > 253:
		return "longer than 253 characters"
	}
	for _, r := range s {
		switch {
		case unicode.IsSpace(r) || unicode.IsControl(r):
			return "a space or control character"
		case r > unicode.MaxASCII:
			return "not ASCII; write an international name in its xn-- form"
		}
	}
	for label := range strings.SplitSeq(s, ".") {
		switch {
		case label == "":
			return "an empty label (a dot at the start or end, or two dots)"
		case len(label) > 63:
			return "a label longer than 63 characters"
		case label[0] == '-' || label[len(label)-1] == '-':
			return "a label starting or ending with '-'"
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Sprintf("character %q not allowed in a host name", c)
			}
		}
	}
	return ""
}

// parseDomain reads a sender domain, lower-cased and without a final dot
// so that it compares with the domain of a MAIL FROM as it is.
func parseDomain(s string) (string, string) {
	if strings.Contains(s, "@") {
		return "", "an address, where a domain is needed"
	}
	d := strings.ToLower(strings.TrimSuffix(s, "."))
	if reason := checkHostname(d); reason != "" {
		return "", reason
	}
	return d, ""
}

// parseServer reads a DNS server as the resolver takes it: an IP address
// (the resolver cannot look up its own servers' names) with an optional
// port, 53 by default. It returns the address as "ip:port".
func parseServer(s string) (string, string) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		host, port = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"), "53"
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return "", "not an IP address (the resolver's servers are given by address)"
	}
	if ip.Zone() != "" {
		return "", "an IPv6 zone is not supported"
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 || !isDigits(port) {
		return "", fmt.Sprintf("bad port %q", port)
	}
	return net.JoinHostPort(ip.String(), port), ""
}

// parseNetwork reads a CIDR network, or one address as a network of one.
// Host bits set after the prefix length are refused rather than cleared:
// 10.1.2.3/8 is more likely a typo for /32 than a way to write 10.0.0.0/8.
func parseNetwork(s string) (netip.Prefix, string) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, "not an IP network"
		}
		if m := p.Masked(); m != p {
			return netip.Prefix{}, fmt.Sprintf("bits set after the prefix length; the network is %s", m)
		}
		return p, ""
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, "not an IP address or network"
	}
	if ip.Zone() != "" {
		return netip.Prefix{}, "an IPv6 zone is not supported"
	}
	return netip.PrefixFrom(ip, ip.BitLen()), ""
}

// checkRecipient returns why s is not a never-refused recipient (a local
// part or a whole address), or "".
func checkRecipient(s string) string {
	if s == "" {
		return "empty"
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return "a space or control character"
		}
	}
	if strings.ContainsAny(s, "<>") {
		return "angle brackets; write the bare local part or address"
	}
	local, domain, isAddr := strings.Cut(s, "@")
	if !isAddr {
		return ""
	}
	switch {
	case local == "":
		return "no local part before '@'"
	case strings.Contains(domain, "@"):
		return "more than one '@'"
	}
	if reason := checkHostname(domain); reason != "" {
		return "bad domain: " + reason
	}
	return ""
}

// parseHTTPListen reads metrics.listen: "" for no listener, or HOST:PORT
// with an IP address or localhost for HOST, returned with the address in
// its canonical form and the port without leading zeros. Other host names
// are refused because the listener would bind to whatever address DNS
// gives at start, which is rarely what an admin exposing metrics means.
// Port 0 asks the system for a free port (for tests).
func parseHTTPListen(s string) (string, string) {
	if s == "" {
		return "", ""
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		i := strings.LastIndexByte(s, ':')
		switch {
		case isDigits(s):
			return "", fmt.Sprintf("no host; write 127.0.0.1:%s for this host only, or 0.0.0.0:%s for every address", s, s)
		case i > 0 && isIPv6(s[:i]):
			return "", "an IPv6 address needs brackets, as in [::1]:9095"
		case strings.Contains(s, "/") || strings.HasPrefix(s, "inet"):
			return "", "not HOST:PORT; write the address alone, without a scheme, socket type or path"
		case i < 0:
			return "", "no port"
		}
		return "", "not HOST:PORT"
	}
	if !isDigits(port) {
		return "", fmt.Sprintf("port %q is not a number", port)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", fmt.Sprintf("port %s is out of range (at most 65535)", port)
	}
	port = strconv.FormatUint(n, 10)
	switch {
	case host == "":
		return "", "no host; write 127.0.0.1 for this host only, or 0.0.0.0 for every address"
	case host == "localhost":
		return net.JoinHostPort(host, port), ""
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return "", fmt.Sprintf("host %q is not an IP address or localhost", host)
	}
	if ip.Zone() != "" {
		return "", "an IPv6 zone is not supported"
	}
	return net.JoinHostPort(ip.String(), port), ""
}

func isIPv6(s string) bool {
	ip, err := netip.ParseAddr(s)
	return err == nil && ip.Is6()
}

// sameHTTPListen reports whether two listen addresses would bind the same
// port (port 0 is a new port each time).
func sameHTTPListen(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	_, pa, errA := net.SplitHostPort(a)
	_, pb, errB := net.SplitHostPort(b)
	return errA == nil && errB == nil && a == b && pa != "0" && pb != "0"
}

// checkWhyURL says what is wrong with why.url, or "". The URL goes into
// SMTP replies, so it must be printable ASCII (a non-ASCII host in its
// xn-- form); the page's parameters are appended as its query.
func checkWhyURL(s string) string {
	if s == "" {
		return ""
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return "spaces, control characters and non-ASCII characters are not allowed (write a non-ASCII host name in its xn-- form)"
		}
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "not a URL"
	case u.Scheme != "http" && u.Scheme != "https":
		return "not an http or https URL"
	case u.Host == "" || u.Hostname() == "":
		return "no host"
	case u.User != nil:
		return "a user name or password is not allowed"
	case u.RawQuery != "" || u.ForceQuery:
		return "a query is not allowed: the page's parameters are appended as the query"
	case u.Fragment != "" || strings.Contains(s, "#"):
		return "a fragment (#) is not allowed"
	}
	if _, err := netip.ParseAddr(u.Hostname()); err != nil {
		if reason := checkHostname(u.Hostname()); reason != "" {
			return "bad host: " + reason
		}
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
			return fmt.Sprintf("port %s is out of range (1 to 65535)", p)
		}
	}
	return ""
}

// sizeUnits are the units of a size, in the order formatSize tries them.
var sizeUnits = []struct {
	name string
	n    int64
}{
	{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3},
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"B", 1},
}

// parseSizeIn reads a size: a whole number with an optional unit (any
// case, a space allowed before it), bytes without one, from minSize to
// maxSize.
func parseSizeIn(s string, minSize, maxSize int64) (int64, string) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	digits, unit := s[:i], strings.TrimPrefix(s[i:], " ")
	if digits == "" {
		return 0, "not a whole number with a unit"
	}
	mult := int64(0)
	if unit == "" {
		mult = 1
	}
	for _, u := range sizeUnits {
		if strings.EqualFold(unit, u.name) {
			mult = u.n
		}
	}
	if mult == 0 {
		return 0, fmt.Sprintf("unknown unit %q", unit)
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	switch {
	case err != nil || n > maxSize/mult:
		return 0, "more than " + formatSize(maxSize)
	case n*mult < minSize:
		return 0, "less than " + formatSize(minSize)
	}
	return n * mult, ""
}

// formatSize writes a size in the largest unit that divides it, as
// parseSizeIn reads it.
func formatSize(n int64) string {
	for _, u := range sizeUnits {
		if n >= u.n && n%u.n == 0 {
			return strconv.FormatInt(n/u.n, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

// checkLogPath says what is wrong with a decision log path, or "".
func checkLogPath(s string) string {
	switch {
	case s == "":
		return ""
	case strings.ContainsRune(s, 0):
		return "a NUL byte in the path"
	case !strings.HasPrefix(s, "/"):
		return "the path must be absolute"
	case strings.HasSuffix(s, "/"):
		return "the path names a directory; name the file"
	}
	return ""
}
