package policy

import (
	"net/netip"
	"strings"
)

// Skip says why a message is let through unchecked, with no header of
// ours; NotSkipped for a checked message.
type Skip int

// The reasons, in the order the policy tries them.
const (
	NotSkipped Skip = iota
	// SkipTrustedNetworks is a client in trusted_networks.
	SkipTrustedNetworks
	// SkipClients is a client in skip_clients.
	SkipClients
	// SkipAuthenticated is a client that authenticated, with
	// skip_authenticated set.
	SkipAuthenticated
	// SkipSenders is a MAIL FROM domain in skip_senders, or below one.
	SkipSenders
	// SkipRule is a message the first applying rule skips (skip: true).
	SkipRule
)

// Key names the reason in the decision log, the metrics and replay: the
// config key that skips the message ("authenticated" for
// skip_authenticated, as the log has always written it). "" for
// NotSkipped.
func (s Skip) Key() string {
	switch s {
	case SkipTrustedNetworks:
		return "trusted_networks"
	case SkipClients:
		return "skip_clients"
	case SkipAuthenticated:
		return "authenticated"
	case SkipSenders:
		return "skip_senders"
	case SkipRule:
		return "rule"
	}
	return ""
}

// String is the reason as the "spf skipped" log line words it: the key,
// but "trusted network" for a trusted client, which admins' log searches
// already look for.
func (s Skip) String() string {
	if s == SkipTrustedNetworks {
		return "trusted network"
	}
	return s.Key()
}

// PerClient reports whether the reason is about the client alone, so
// that it holds for every message of the connection.
func (s Skip) PerClient() bool {
	return s == SkipTrustedNetworks || s == SkipClients
}

// SkipClient says whether the client of m is checked at all, from what is
// known at connect: the reasons that hold for the whole connection
// (PerClient).
func (p *Policy) SkipClient(m Message) Skip {
	switch {
	case inPrefixes(p.cfg.TrustedNetworks, m.ClientIP):
		return SkipTrustedNetworks
	case inPrefixes(p.cfg.SkipClients, m.ClientIP):
		return SkipClients
	}
	return NotSkipped
}

// Relay reports whether ip is in relays: a host that passes mail on to
// us, whose messages are checked for the client it received them from.
func (p *Policy) Relay(ip netip.Addr) bool {
	return inPrefixes(p.cfg.Relays, ip)
}

// Trusted reports whether ip is in trusted_networks. A relay's Received
// field naming such an address as its client is not believed: mail from
// a trusted network would not come in through a relay.
func (p *Policy) Trusted(ip netip.Addr) bool {
	return inPrefixes(p.cfg.TrustedNetworks, ip)
}

// Skip says why message m is not checked, trying the reasons in the order
// of the Skip constants; NotSkipped when it is checked. The skip lists
// come first; then the first rule that applies skips the message when it
// says skip: true (Rule names it).
func (p *Policy) Skip(m Message) Skip {
	if s := p.skipLists(m); s != NotSkipped {
		return s
	}
	if r := p.Rule(m); r != nil && r.Skip {
		return SkipRule
	}
	return NotSkipped
}

// skipLists is Skip by the skip lists alone: trusted_networks,
// skip_clients, skip_authenticated and skip_senders.
func (p *Policy) skipLists(m Message) Skip {
	if s := p.SkipClient(m); s != NotSkipped {
		return s
	}
	switch {
	case p.cfg.SkipAuthenticated && m.Authenticated:
		return SkipAuthenticated
	case skipSender(p.cfg.SkipSenders, m.Sender):
		return SkipSenders
	}
	return NotSkipped
}

func inPrefixes(ps []netip.Prefix, ip netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// skipSender reports whether sender's domain is one of domains or below
// one. The null sender has no domain and is never skipped.
func skipSender(domains []string, sender string) bool {
	at := strings.LastIndexByte(sender, '@')
	if at < 0 {
		return false
	}
	d := strings.ToLower(strings.TrimSuffix(sender[at+1:], "."))
	if d == "" {
		return false
	}
	for _, e := range domains {
		e = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(e, "."), "."))
		if e != "" && (d == e || strings.HasSuffix(d, "."+e)) {
			return true
		}
	}
	return false
}
