package spf_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/spf-milter/spf-milter/spf"
)

// zoneResolver is a Resolver answering from maps, as a test or an
// example needs: every name it does not hold does not exist.
type zoneResolver struct {
	txt  map[string][]string
	addr map[string][]netip.Addr
	mx   map[string][]string
}

func (z zoneResolver) LookupTXT(_ context.Context, name string) ([]string, error) {
	if v, ok := z.txt[strings.ToLower(name)]; ok {
		return v, nil
	}
	return nil, &spf.DNSError{Name: name, Type: "TXT", Err: spf.ErrNXDomain}
}

func (z zoneResolver) lookupAddr(name, qtype string, is4 bool) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, a := range z.addr[strings.ToLower(name)] {
		if a.Is4() == is4 {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, &spf.DNSError{Name: name, Type: qtype, Err: spf.ErrNoData}
	}
	return out, nil
}

func (z zoneResolver) LookupA(_ context.Context, name string) ([]netip.Addr, error) {
	return z.lookupAddr(name, "A", true)
}

func (z zoneResolver) LookupAAAA(_ context.Context, name string) ([]netip.Addr, error) {
	return z.lookupAddr(name, "AAAA", false)
}

func (z zoneResolver) LookupMX(_ context.Context, name string) ([]string, error) {
	if v, ok := z.mx[strings.ToLower(name)]; ok {
		return v, nil
	}
	return nil, &spf.DNSError{Name: name, Type: "MX", Err: spf.ErrNoData}
}

func (z zoneResolver) LookupPTR(_ context.Context, addr netip.Addr) ([]string, error) {
	return nil, &spf.DNSError{Name: addr.String(), Type: "PTR", Err: spf.ErrNXDomain}
}

// exampleZone is the DNS of the examples: a domain whose mail goes out
// through its MX hosts and a provider it includes.
var exampleZone = zoneResolver{
	txt: map[string][]string{
		"example.com":           {"v=spf1 mx include:_spf.provider.example -all"},
		"_spf.provider.example": {"v=spf1 ip4:198.51.100.0/24 ~all"},
	},
	mx: map[string][]string{"example.com": {"mx1.example.com"}},
	addr: map[string][]netip.Addr{
		"mx1.example.com": {netip.MustParseAddr("192.0.2.25"), netip.MustParseAddr("2001:db8::25")},
	},
}

// Check whether an address may send mail for a sender, and see why.
func ExampleChecker_CheckMailFrom() {
	c := &spf.Checker{Resolver: exampleZone, Receiver: "mx.example.net"}
	for _, ip := range []string{"192.0.2.25", "198.51.100.7", "203.0.113.9"} {
		o := c.CheckMailFrom(context.Background(), netip.MustParseAddr(ip), "alice@example.com", "mail.example.com")
		fmt.Printf("%s: %s by %q in %s\n", ip, o.Result, o.Mechanism, o.MechanismDomain)
	}

	o := c.CheckMailFrom(context.Background(), netip.MustParseAddr("203.0.113.9"), "alice@example.com", "mail.example.com")
	fmt.Println(o.Explanation)
	for _, s := range o.Trace {
		fmt.Println(s)
	}
	// Output:
	// 192.0.2.25: pass by "mx" in example.com
	// 198.51.100.7: pass by "include:_spf.provider.example" in example.com
	// 203.0.113.9: fail by "-all" in example.com
	// example.com does not designate 203.0.113.9 as a permitted sender
	// record example.com: v=spf1 mx include:_spf.provider.example -all
	// term example.com: mx (no match): no MX host of example.com has 203.0.113.9
	// include example.com: include:_spf.provider.example: checking _spf.provider.example
	//   record _spf.provider.example: v=spf1 ip4:198.51.100.0/24 ~all
	//   term _spf.provider.example: ip4:198.51.100.0/24 (no match)
	//   term _spf.provider.example: ~all (match)
	//   result _spf.provider.example: ~all => softfail
	// return example.com: include:_spf.provider.example => softfail
	// term example.com: include:_spf.provider.example (no match): _spf.provider.example gave softfail
	// term example.com: -all (match)
	// result example.com: -all => fail
}

// Parse a record and print its terms.
func ExampleParse() {
	rec, err := spf.Parse("v=spf1 a:mail.%{d} ip4:192.0.2.0/24 ~all redirect=_spf.example.com")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, d := range rec.Directives {
		fmt.Printf("%-24s qualifier %q gives %s\n", d, d.Qualifier, d.Qualifier.Result())
	}
	fmt.Println("redirect:", rec.Redirect.Value)
	fmt.Println(rec)

	_, err = spf.Parse("v=spf1 ip4:192.0.2.300 -all")
	fmt.Println(err)
	// Output:
	// a:mail.%{d}              qualifier '+' gives pass
	// ip4:192.0.2.0/24         qualifier '+' gives pass
	// ~all                     qualifier '~' gives softfail
	// redirect: _spf.example.com
	// v=spf1 a:mail.%{d} ip4:192.0.2.0/24 ~all redirect=_spf.example.com
	// invalid term "ip4:192.0.2.300": bad address "192.0.2.300"
}

// countingResolver is a Resolver that counts the questions it passes on
// to another: any type with the five lookups plugs into a Checker.
type countingResolver struct {
	spf.Resolver
	asked map[string]int
}

func (r countingResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	r.asked["TXT "+name]++
	return r.Resolver.LookupTXT(ctx, name)
}

func (r countingResolver) LookupA(ctx context.Context, name string) ([]netip.Addr, error) {
	r.asked["A "+name]++
	return r.Resolver.LookupA(ctx, name)
}

func (r countingResolver) LookupMX(ctx context.Context, name string) ([]string, error) {
	r.asked["MX "+name]++
	return r.Resolver.LookupMX(ctx, name)
}

// Plug in a resolver of your own: here one that counts what the check
// asks, over the in-memory zone of the other examples.
func ExampleResolver() {
	r := countingResolver{Resolver: exampleZone, asked: map[string]int{}}
	// Sequential: the records of include: targets are not fetched ahead,
	// so the count shows only what the evaluation needed.
	c := &spf.Checker{Resolver: r, Sequential: true}
	o := c.CheckMailFrom(context.Background(), netip.MustParseAddr("198.51.100.7"), "bob@example.com", "mail.example.com")
	fmt.Println(o.Result, o.DNSLookups, "lookups counted")
	for _, q := range []string{"TXT example.com", "MX example.com", "A mx1.example.com", "TXT _spf.provider.example"} {
		fmt.Println(q, r.asked[q])
	}
	// Output:
	// pass 2 lookups counted
	// TXT example.com 1
	// MX example.com 1
	// A mx1.example.com 1
	// TXT _spf.provider.example 1
}

// Check with the Go resolver, or anything shaped like *net.Resolver.
func ExampleNetResolver() {
	c := &spf.Checker{Resolver: spf.NetResolver{Lookuper: net.DefaultResolver}}
	o := c.CheckMailFrom(context.Background(), netip.MustParseAddr("192.0.2.1"), "alice@example.com", "mail.example.com")
	fmt.Println(o.Result, o.Problem)
}
