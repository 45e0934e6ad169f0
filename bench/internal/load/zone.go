package load

import "strings"

// zoneText is the DNS data of the benchmark, in presentation format. It
// imitates the policies a busy MX meets all day: a large provider's tree of
// includes (_spf.google.com's shape), a provider's list of ranges with a
// nested include (spf.protection.outlook.com's), marketing senders
// (Mailchimp, SendGrid), small domains with mx and a terms, a domain that
// fails, one without SPF and one that soft-fails. Every name lives under
// .example (RFC 2606) and every address in the benchmarking range
// 198.18.0.0/15 (RFC 2544) or the documentation ranges (RFC 5737,
// RFC 3849), so nothing here can be mistaken for a real policy.
//
// Each zone apex has an SOA record, which the server puts in the authority
// section of negative answers so that resolvers may cache them (RFC 2308).
// TTLs are an hour: a warm cache stays warm for the whole run.
const zoneText = `
$TTL 3600
google.example.               SOA ns1.google.example. dns-admin.google.example. 1 900 900 1800 3600
_spf.google.example.          TXT "v=spf1 include:_netblocks.google.example include:_netblocks2.google.example include:_netblocks3.google.example ~all"
_netblocks.google.example.    TXT "v=spf1 ip4:198.18.0.0/20 ip4:198.18.16.0/21 ip4:198.18.24.0/22 ip4:198.18.28.0/23 ip4:198.18.30.0/24 ip4:198.18.31.0/25 ip4:198.18.32.0/19 ip4:198.18.64.0/20 ip4:198.18.80.0/22 ip4:198.18.84.0/23 ~all"
_netblocks2.google.example.   TXT "v=spf1 ip6:2001:db8:f20::/48 ip6:2001:db8:f21::/48 ip6:2001:db8:f30::/44 ip6:2001:db8:f40::/44 ip6:2001:db8:f50::/44 ip6:2001:db8:f60::/44 ip6:2001:db8:f00::/44 ~all"
_netblocks3.google.example.   TXT "v=spf1 ip4:198.18.96.0/20 ip4:198.18.112.0/21 ip4:198.18.120.0/22 ip4:198.18.124.0/23 ip4:198.18.128.0/19 ip4:198.18.160.0/20 ~all"
mail-yw1-f172.google.example. A    198.18.170.25
mail-qk1-x72b.google.example. AAAA 2001:db8:f0c::1a
mail-wr1-f41.google.example.  A    198.18.40.9

outlook.example.                    SOA ns1.outlook.example. hostmaster.outlook.example. 1 3600 600 86400 3600
spf.protection.outlook.example.     TXT "v=spf1 ip4:198.19.0.0/20 ip4:198.19.16.0/20 ip4:198.19.32.0/19 ip4:198.19.64.0/18 ip6:2001:db8:111:f400::/64 ip6:2001:db8:111:f403::/64 include:spfd.protection.outlook.example -all"
spfd.protection.outlook.example.    TXT "v=spf1 ip4:198.19.128.0/20 ip4:198.19.144.0/21 ip4:198.19.152.0/22 ip4:198.19.156.0/24 ip6:2001:db8:111:f406::/64 -all"
mail-db8eur05on2101.outbound.protection.outlook.example. TXT "v=spf1 include:spf.protection.outlook.example -all"
mail-db8eur05on2101.outbound.protection.outlook.example. A   198.19.154.37

mcsv.example.                 SOA ns1.mcsv.example. hostmaster.mcsv.example. 1 3600 600 86400 3600
servers.mcsv.example.         TXT "v=spf1 ip4:198.19.200.0/22 ip4:198.19.204.0/23 ip4:198.19.206.0/24 ip6:2001:db8:4d0::/48 ?all"
sendgrid.example.             SOA ns1.sendgrid.example. hostmaster.sendgrid.example. 1 3600 600 86400 3600
sendgrid.example.             TXT "v=spf1 ip4:198.19.208.0/21 ip4:198.19.216.0/22 ip4:198.19.220.0/23 ~all"

corp-g.example.      SOA ns1.corp-g.example. hostmaster.corp-g.example. 1 3600 600 86400 3600
corp-g.example.      TXT "google-site-verification=Xq1L4Xk9b1lS0Lw0JmZpS7HdGf3Z5KcQhP2yT8vW6uE"
corp-g.example.      TXT "v=spf1 include:_spf.google.example ~all"
corp-g.example.      MX  1 smtp.google.example.

contoso.example.     SOA ns1.contoso.example. hostmaster.contoso.example. 1 3600 600 86400 3600
contoso.example.     TXT "MS=ms44123789"
contoso.example.     TXT "v=spf1 include:spf.protection.outlook.example -all"

shop.example.        SOA ns1.shop.example. hostmaster.shop.example. 1 3600 600 86400 3600
shop.example.        TXT "facebook-domain-verification=9xk2m4p7q1w8e5r3t6y0u2i4o"
shop.example.        TXT "v=spf1 include:servers.mcsv.example include:sendgrid.example include:_spf.google.example ~all"

mx-corp.example.     SOA ns1.mx-corp.example. hostmaster.mx-corp.example. 1 3600 600 86400 3600
mx-corp.example.     TXT "v=spf1 mx -all"
mx-corp.example.     MX  10 mx1.mx-corp.example.
mx-corp.example.     MX  20 mx2.mx-corp.example.
mx1.mx-corp.example. A   192.0.2.10
mx1.mx-corp.example. AAAA 2001:db8:2::10
mx2.mx-corp.example. A   192.0.2.20
mx2.mx-corp.example. TXT "v=spf1 a -all"

a-corp.example.       SOA ns1.a-corp.example. hostmaster.a-corp.example. 1 3600 600 86400 3600
a-corp.example.       TXT "v=spf1 a a:relay.a-corp.example ip4:192.0.2.128/28 -all"
a-corp.example.       A   192.0.2.40
relay.a-corp.example. A   192.0.2.41

fail-corp.example.   SOA ns1.fail-corp.example. hostmaster.fail-corp.example. 1 3600 600 86400 3600
fail-corp.example.   TXT "v=spf1 ip4:198.18.250.0/24 include:_spf.google.example -all"

isp.example.         SOA ns1.isp.example. hostmaster.isp.example. 1 3600 600 86400 3600

nospf.example.       SOA ns1.nospf.example. hostmaster.nospf.example. 1 3600 600 86400 3600
nospf.example.       TXT "google-site-verification=aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5zA7bC9d"
nospf.example.       TXT "MS=ms90817263"
mail.nospf.example.  A   192.0.2.77

soft.example.        SOA ns1.soft.example. hostmaster.soft.example. 1 3600 600 86400 3600
soft.example.        TXT "v=spf1 include:spf.protection.outlook.example ~all"
smtp.soft.example.   A   198.51.100.23

redir.example.       SOA ns1.redir.example. hostmaster.redir.example. 1 3600 600 86400 3600
redir.example.       TXT "v=spf1 redirect=_spf.google.example"
`

// Case is one kind of message in the mix: who connects, what it says, and
// what SPF says about it.
type Case struct {
	// Name labels the case in error messages.
	Name string
	// IPs are the client addresses, used in turn.
	IPs    []string
	HELO   string
	Sender string
	// MailFrom and HELOResult are the SPF results (RFC 7208 names) of the
	// MAIL FROM and HELO identities.
	MailFrom   string
	HELOResult string
	// Mechanism is the term spf-milter reports as deciding the MAIL FROM
	// result, as its Received-SPF header writes it.
	Mechanism string
}

// Cases is the message mix, sent in turn.
var Cases = []Case{
	{
		// The sender's record includes a provider's record that includes
		// three more; the client is in the last one.
		Name: "pass via include tree", IPs: []string{"198.18.170.25", "198.18.161.2", "198.18.100.77"},
		HELO: "mail-yw1-f172.google.example", Sender: "alice@corp-g.example",
		MailFrom: "pass", HELOResult: "none", Mechanism: "include:_spf.google.example",
	},
	{
		Name: "pass via include tree, IPv6", IPs: []string{"2001:db8:f0c::1a", "2001:db8:f01:2::5"},
		HELO: "mail-qk1-x72b.google.example", Sender: "bob@corp-g.example",
		MailFrom: "pass", HELOResult: "none", Mechanism: "include:_spf.google.example",
	},
	{
		// A list of ranges with a nested include, as Microsoft publishes;
		// the HELO name has a policy of its own.
		Name: "pass via provider ranges", IPs: []string{"198.19.154.37"},
		HELO: "mail-db8eur05on2101.outbound.protection.outlook.example", Sender: "carol@contoso.example",
		MailFrom: "pass", HELOResult: "pass", Mechanism: "include:spf.protection.outlook.example",
	},
	{
		// A shop sending through two marketing services and Google.
		Name: "pass via marketing service", IPs: []string{"198.19.221.14", "198.19.209.3"},
		HELO: "o1.ptr1234.sendgrid.example", Sender: "news@shop.example",
		MailFrom: "pass", HELOResult: "none", Mechanism: "include:sendgrid.example",
	},
	{
		Name: "pass via mx", IPs: []string{"192.0.2.20"},
		HELO: "mx2.mx-corp.example", Sender: "dave@mx-corp.example",
		MailFrom: "pass", HELOResult: "pass", Mechanism: "mx",
	},
	{
		Name: "pass via a", IPs: []string{"192.0.2.41"},
		HELO: "relay.a-corp.example", Sender: "erin@a-corp.example",
		MailFrom: "pass", HELOResult: "none", Mechanism: "a:relay.a-corp.example",
	},
	{
		Name: "pass via redirect", IPs: []string{"198.18.40.9"},
		HELO: "mail-wr1-f41.google.example", Sender: "ivan@redir.example",
		MailFrom: "pass", HELOResult: "none", Mechanism: "include:_netblocks.google.example",
	},
	{
		// Not in any of the ranges: every include is tried, then -all.
		Name: "fail", IPs: []string{"203.0.113.66", "203.0.113.67"},
		HELO: "dynamic-203-0-113-66.isp.example", Sender: "frank@fail-corp.example",
		MailFrom: "fail", HELOResult: "none", Mechanism: "-all",
	},
	{
		Name: "none", IPs: []string{"192.0.2.77"},
		HELO: "mail.nospf.example", Sender: "grace@nospf.example",
		MailFrom: "none", HELOResult: "none",
	},
	{
		Name: "softfail", IPs: []string{"198.51.100.23"},
		HELO: "smtp.soft.example", Sender: "heidi@soft.example",
		MailFrom: "softfail", HELOResult: "none", Mechanism: "~all",
	},
}

// Domain returns the domain of the case's sender.
func (c *Case) Domain() string {
	return c.Sender[strings.LastIndexByte(c.Sender, '@')+1:]
}
