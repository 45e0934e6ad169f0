package spf_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/spf-milter/spf-milter/spf"
)

// fakeNet answers like *net.Resolver from maps keyed by the name asked,
// and notes the names asked. A name it does not hold is not found; one in
// fail fails otherwise.
type fakeNet struct {
	txt  map[string][]string
	ip   map[string][]net.IP
	mx   map[string][]*net.MX
	addr map[string][]string
	fail map[string]bool

	mu    sync.Mutex
	asked []string
}

func (f *fakeNet) ask(name string) error {
	f.mu.Lock()
	f.asked = append(f.asked, name)
	f.mu.Unlock()
	if f.fail[name] {
		return &net.DNSError{Err: "server misbehaving", Name: name, IsTemporary: true}
	}
	return nil
}

func notFound(name string) error {
	return &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (f *fakeNet) LookupTXT(_ context.Context, name string) ([]string, error) {
	if err := f.ask(name); err != nil {
		return nil, err
	}
	if v, ok := f.txt[name]; ok {
		return v, nil
	}
	return nil, notFound(name)
}

func (f *fakeNet) LookupIP(_ context.Context, network, host string) ([]net.IP, error) {
	if err := f.ask(host); err != nil {
		return nil, err
	}
	var out []net.IP
	for _, ip := range f.ip[host] {
		if (ip.To4() != nil) == (network == "ip4") {
			out = append(out, ip)
		}
	}
	if len(out) == 0 {
		return nil, notFound(host)
	}
	return out, nil
}

func (f *fakeNet) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	if err := f.ask(name); err != nil {
		return nil, err
	}
	if v, ok := f.mx[name]; ok {
		return v, nil
	}
	return nil, notFound(name)
}

func (f *fakeNet) LookupAddr(_ context.Context, addr string) ([]string, error) {
	if err := f.ask(addr); err != nil {
		return nil, err
	}
	if v, ok := f.addr[addr]; ok {
		return v, nil
	}
	return nil, notFound(addr)
}

func newFakeNet() *fakeNet {
	return &fakeNet{
		txt: map[string][]string{
			"example.org.":     {"v=spf1 mx a:web.example.org ptr -all"},
			"lit.example.org.": {"v=spf1 exists:%{i} -all"},
		},
		ip: map[string][]net.IP{
			"mx1.example.org.":  {net.ParseIP("192.0.2.1"), net.ParseIP("2001:db8::1")},
			"mx2.example.org.":  {net.ParseIP("192.0.2.2")},
			"web.example.org.":  {net.ParseIP("::ffff:192.0.2.80")},
			"host.example.org.": {net.ParseIP("192.0.2.99")},
		},
		mx: map[string][]*net.MX{
			"example.org.": {{Host: "mx1.example.org.", Pref: 10}, {Host: "mx2.example.org.", Pref: 20}, {Host: ".", Pref: 30}},
		},
		addr: map[string][]string{"192.0.2.99": {"host.example.org."}},
		fail: map[string]bool{"broken.example.org.": true},
	}
}

// TestNetResolver checks the adapter one lookup at a time: names go out
// fully qualified, answers come back without trailing dots and in the
// asked family, and errors are classified as Resolver says.
func TestNetResolver(t *testing.T) {
	f := newFakeNet()
	r := spf.NetResolver{Lookuper: f}
	ctx := context.Background()
	show := func(v any, err error) string {
		if err != nil {
			kind := "temporary"
			if spf.IsNotFound(err) {
				kind = "not found"
			}
			return kind + ": " + err.Error()
		}
		return fmt.Sprint(v)
	}
	tests := []struct {
		name, got, want string
	}{
		{"TXT", show(r.LookupTXT(ctx, "example.org")), "[v=spf1 mx a:web.example.org ptr -all]"},
		{"TXT of a name with its dot", show(r.LookupTXT(ctx, "example.org.")), "[v=spf1 mx a:web.example.org ptr -all]"},
		{"TXT not found", show(r.LookupTXT(ctx, "nx.example.org")), "not found: TXT nx.example.org: no such domain (NXDOMAIN)"},
		{"TXT failing", show(r.LookupTXT(ctx, "broken.example.org")), "temporary: TXT broken.example.org: lookup broken.example.org.: server misbehaving"},
		{"A", show(r.LookupA(ctx, "mx1.example.org")), "[192.0.2.1]"},
		{"A of a mapped address", show(r.LookupA(ctx, "web.example.org")), "[192.0.2.80]"},
		{"AAAA", show(r.LookupAAAA(ctx, "mx1.example.org")), "[2001:db8::1]"},
		{"AAAA none", show(r.LookupAAAA(ctx, "mx2.example.org")), "not found: AAAA mx2.example.org: no such domain (NXDOMAIN)"},
		{"A of an address literal", show(r.LookupA(ctx, "192.0.2.1")), "not found: A 192.0.2.1: no such domain (NXDOMAIN)"},
		{"MX", show(r.LookupMX(ctx, "example.org")), "[mx1.example.org mx2.example.org ]"},
		{"PTR", show(r.LookupPTR(ctx, netip.MustParseAddr("192.0.2.99"))), "[host.example.org]"},
		{"PTR not found", show(r.LookupPTR(ctx, netip.MustParseAddr("192.0.2.98"))), "not found: PTR 192.0.2.98: no such domain (NXDOMAIN)"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: %s\nwant %s", tt.name, tt.got, tt.want)
		}
	}
	for _, name := range f.asked {
		if _, err := netip.ParseAddr(name); err != nil && !strings.HasSuffix(name, ".") {
			t.Errorf("asked %q: not fully qualified, so resolv.conf's search domains would apply", name)
		}
	}
	if slices.Contains(f.asked, "192.0.2.1") || slices.Contains(f.asked, "192.0.2.1.") {
		t.Error("an address literal was handed to the resolver, which answers it without DNS")
	}
}

// TestNetResolverChecks checks whole checks through the adapter.
func TestNetResolverChecks(t *testing.T) {
	c := &spf.Checker{Resolver: spf.NetResolver{Lookuper: newFakeNet()}}
	tests := []struct {
		ip, sender string
		result     spf.Result
		mechanism  string
	}{
		{"192.0.2.2", "a@example.org", spf.Pass, "mx"},
		{"2001:db8::1", "a@example.org", spf.Pass, "mx"},
		{"192.0.2.80", "a@example.org", spf.Pass, "a:web.example.org"},
		{"192.0.2.99", "a@example.org", spf.Pass, "ptr"},
		{"198.51.100.1", "a@example.org", spf.Fail, "-all"},
		{"192.0.2.1", "a@lit.example.org", spf.Fail, "-all"},
		{"192.0.2.1", "a@broken.example.org", spf.TempError, ""},
	}
	for _, tt := range tests {
		o := c.CheckMailFrom(context.Background(), netip.MustParseAddr(tt.ip), tt.sender, "mail.example.org")
		if o.Result != tt.result || o.Mechanism != tt.mechanism {
			t.Errorf("%s from %s: %s by %q, want %s by %q\n%s", tt.sender, tt.ip, o.Result, o.Mechanism, tt.result, tt.mechanism, trace(o))
		}
	}
}

// TestNetResolverIsNetResolverShaped checks that the Go resolver itself
// fits, and that its errors are told apart the same way.
func TestNetResolverIsNetResolverShaped(t *testing.T) {
	var _ spf.NetLookuper = net.DefaultResolver
	_, err := spf.NetResolver{Lookuper: net.DefaultResolver}.LookupA(context.Background(), "192.0.2.1")
	if !errors.Is(err, spf.ErrNXDomain) {
		t.Errorf("an address literal gave %v, want not found", err)
	}
}
