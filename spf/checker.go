package spf

import (
	"context"
	"net/netip"
	"sync/atomic"
	"time"
)

// DefaultExplanation is the explanation macro-string used for fail results
// when the domain publishes no usable exp= (RFC 7208 §6.2).
const DefaultExplanation = "%{o} does not designate %{c} as a permitted sender"

// DefaultCheckTimeout bounds one whole check, as RFC 7208 §4.6.4 suggests.
const DefaultCheckTimeout = 20 * time.Second

// Checker runs SPF checks. Its zero value is not usable: Resolver must be
// set. A Checker is safe for concurrent use once configured.
type Checker struct {
	// Resolver answers every DNS question of a check.
	Resolver Resolver
	// Receiver is the receiving host's name, used by the %{r} macro and in
	// Received-SPF. Empty means "unknown", as RFC 7208 §7.3 says.
	Receiver string
	// Explanation is the macro-string expanded for fail results when the
	// domain gives none; empty means DefaultExplanation.
	Explanation string
	// Timeout bounds a whole check; 0 means DefaultCheckTimeout. Running out
	// of time is temperror.
	Timeout time.Duration
	// Sequential turns off the concurrent lookups (the addresses of MX
	// hosts and PTR names, the records of include: and redirect= targets
	// fetched ahead). The result, trace and counted lookups are the same
	// either way; it is there to compare and to debug.
	Sequential bool

	// records keeps parsed records when the Resolver does not
	// (recordKeeper); made on first use.
	records atomic.Pointer[recordCache]
	// expl is the Explanation last parsed.
	expl atomic.Pointer[explanation]
}

// CheckMailFrom checks whether ip may send mail with MAIL FROM sender after
// HELO helo (RFC 7208 §2.4). The null sender ("" or "<>") is checked as
// postmaster@<helo>, a sender without local part as postmaster@<domain>.
func (c *Checker) CheckMailFrom(ctx context.Context, ip netip.Addr, sender, helo string) *Outcome {
	return c.check(ctx, IdentityMailFrom, ip, sender, helo)
}

// CheckHELO checks whether ip may use helo as its HELO identity
// (RFC 7208 §2.3), with postmaster@<helo> as sender.
func (c *Checker) CheckHELO(ctx context.Context, ip netip.Addr, helo string) *Outcome {
	return c.check(ctx, IdentityHELO, ip, "", helo)
}
