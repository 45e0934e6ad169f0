package spf

import (
	"time"

	"github.com/spf-milter/spf-milter/internal/dnsname"
)

// This file lets the external tests of the DNS cache reach what callers
// must not: the cache's clock and the queries in flight.

// SetDNSClock makes r's cache read the time from now.
func SetDNSClock(r *DNSResolver, now func() time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.now = now
}

// DNSWaiters returns how many callers wait for r's query in flight for
// name (in presentation form) and qtype, or -1 when none is in flight.
func DNSWaiters(r *DNSResolver, name string, qtype uint16) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	f := r.flights[cacheKey{dnsname.Key(name), qtype}]
	if f == nil {
		return -1
	}
	return f.waiters
}

// The shares of the in-flight budget that a lookup reserves over UDP and
// over TCP, for tests that bound what a budget lets through at once.
const (
	UDPShareBytes = udpShare
	TCPShareBytes = tcpShare
)
