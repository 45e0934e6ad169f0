package spf

import (
	"strconv"

	"github.com/miekg/dns"
)

// rcodeOutcome names an answer's rcode as DNSObserver.DNSQuery does.
func rcodeOutcome(rcode int) string {
	switch rcode {
	case dns.RcodeSuccess:
		return "noerror"
	case dns.RcodeNameError:
		return "nxdomain"
	case dns.RcodeServerFailure:
		return "servfail"
	case dns.RcodeRefused:
		return "refused"
	default:
		return "other_rcode"
	}
}

// ServerError is a failure of one DNS server. Its message says only what
// happened, never which server or socket: the problem text of a temperror
// reaches SMTP replies and headers seen outside, and the addresses of our
// resolvers are nobody's business there. Server and Err keep the details
// for logs.
type ServerError struct {
	Server string // "host:port" of the server asked
	Err    error  // the network error, if any
	text   string
}

func (e *ServerError) Error() string { return e.text }

// Unwrap returns the network error, if any.
func (e *ServerError) Unwrap() error { return e.Err }

func dnsRcodeName(rc int) string {
	if s, ok := dns.RcodeToString[rc]; ok {
		return s
	}
	return strconv.Itoa(rc)
}
