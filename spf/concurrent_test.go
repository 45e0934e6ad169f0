package spf_test

// Concurrent lookups (the addresses of MX hosts and PTR names side by side,
// include: and redirect= records fetched ahead) must never change what a
// check decides, nor how it explains it: every check here runs with and
// without them and the two outcomes must be equal in every field.

import (
	"context"
	"fmt"
	"hash/fnv"
	"net/netip"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/spf-milter/spf-milter/internal/dnstest"
	"github.com/spf-milter/spf-milter/spf"
)

// concurrentZone publishes the policies of concurrentCases. The client
// 192.0.2.1 has five PTR names, in this order: one whose lookup fails, one
// with another address, one that does not exist, one validated outside
// ptr.test and one validated under it.
var concurrentZone = []string{
	// mx: hosts that fail, lack addresses, match, in various positions.
	`mx.test. TXT "v=spf1 mx -all"`,
	`mx.test. MX 10 m1.mx.test.`,
	`mx.test. MX 20 m2.mx.test.`,
	`mx.test. MX 30 m3.mx.test.`,
	`mx.test. MX 40 m4.mx.test.`,
	`mx.test. MX 50 broken.mx.test.`,
	`m1.mx.test. A 198.51.100.10`,
	`m2.mx.test. AAAA 2001:db8::99`,
	`m3.mx.test. A 192.0.2.1`,
	`m4.mx.test. A 192.0.2.1`,
	`m4.mx.test. AAAA 2001:db8::1`,
	`mxfirst.test. TXT "v=spf1 mx -all"`,
	`mxfirst.test. MX 10 broken.mx.test.`,
	`mxfirst.test. MX 20 m3.mx.test.`,
	`mxcidr.test. TXT "v=spf1 mx:mx.test/24 -all"`,
	`mxnull.test. TXT "v=spf1 mx ?all"`,
	`mxnull.test. MX 0 .`,
	`mxnull2.test. TXT "v=spf1 mx ?all"`,
	`mxnull2.test. MX 0 .`,
	`mxnull2.test. MX 10 m3.mx.test.`,
	`mxslow.test. TXT "v=spf1 mx -all"`,
	`mxslow.test. MX 10 slow.mx.test.`,
	`mxslow.test. MX 20 m3.mx.test.`,
	`mxcname.test. TXT "v=spf1 mx -all"`,
	`mxcname.test. MX 10 m1.mx.test.`,
	`mxcname.test. MX 20 alias.mx.test.`,
	`alias.mx.test. CNAME m3.mx.test.`,
	`mxdup.test. TXT "v=spf1 mx -all"`,
	`mxdup.test. MX 10 m1.mx.test.`,
	`mxdup.test. MX 20 m1.mx.test.`,
	`mxvoid.test. TXT "v=spf1 mx:nx1.test mx:nx2.test mx:nx3.test +all"`,
	`mxten.test. TXT "v=spf1 mx -all"`,
	`mxmany.test. TXT "v=spf1 mx -all"`,

	// ptr and %{p}.
	`1.2.0.192.in-addr.arpa. PTR bad.ptr.test.`,
	`1.2.0.192.in-addr.arpa. PTR x.ptr.test.`,
	`1.2.0.192.in-addr.arpa. PTR nx.ptr.test.`,
	`1.2.0.192.in-addr.arpa. PTR mail.other.test.`,
	`1.2.0.192.in-addr.arpa. PTR mail.ptr.test.`,
	`x.ptr.test. A 198.51.100.9`,
	`mail.other.test. A 192.0.2.1`,
	`mail.ptr.test. A 192.0.2.1`,
	`1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. PTR mail6.ptr.test.`,
	`mail6.ptr.test. AAAA 2001:db8::1`,
	`3.2.0.192.in-addr.arpa. PTR bad.ptr.test.`,
	`3.2.0.192.in-addr.arpa. PTR x.ptr.test.`,
	`ptr.test. TXT "v=spf1 ptr -all"`,
	`ptrother.test. TXT "v=spf1 ptr:other.test ptr:ptr.test -all"`,
	`ptrnone.test. TXT "v=spf1 ptr:none.test ?all"`,
	`pexists.ptr.test. TXT "v=spf1 exists:%{p}.ok.test -all"`,
	`mail.other.test.ok.test. A 127.0.0.2`,
	`pinc.test. TXT "v=spf1 include:%{p}.p.test -all"`,
	`mail.other.test.p.test. TXT "v=spf1 +all"`,
	`unknown.p.test. TXT "v=spf1 -all"`,
	`pred.test. TXT "v=spf1 ip4:198.51.100.0/24 redirect=%{p2}.p.test"`,
	`other.test.p.test. TXT "v=spf1 ?all"`,

	// include: and redirect=.
	`inc.test. TXT "v=spf1 include:i1.test include:i2.test include:i3.test -all"`,
	`i1.test. TXT "v=spf1 ip4:198.51.100.0/24 -all"`,
	`i2.test. TXT "v=spf1 ip4:203.0.113.0/24 ~all"`,
	`i3.test. TXT "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/64 -all"`,
	`red.test. TXT "v=spf1 redirect=inc.test"`,
	`redexp.test. TXT "v=spf1 ip4:198.51.100.77 redirect=expd.test"`,
	`expd.test. TXT "v=spf1 include:i2.test -all exp=why.%{d}"`,
	`why.expd.test. TXT "%{i} is not one of %{d}'s senders"`,
	`nest.test. TXT "v=spf1 include:n1.test redirect=n2.test"`,
	`n1.test. TXT "v=spf1 include:n11.test include:n12.test -all"`,
	`n11.test. TXT "v=spf1 a:host.n11.test -all"`,
	`host.n11.test. A 203.0.113.5`,
	`n12.test. TXT "v=spf1 redirect=i3.test"`,
	`n2.test. TXT "v=spf1 mx:mx.test ~all"`,
	`inctemp.test. TXT "v=spf1 include:i1.test include:srvfail.test include:i3.test -all"`,
	`incslow.test. TXT "v=spf1 include:i1.test include:slowtxt.test -all"`,
	`incnone.test. TXT "v=spf1 include:i1.test include:norecord.test include:i3.test -all"`,
	`norecord.test. TXT "hello"`,
	`incbad.test. TXT "v=spf1 include:i1.test include:badsyntax.test -all"`,
	`badsyntax.test. TXT "v=spf1 ip4:300.1.1.1 -all"`,
	`inctwo.test. TXT "v=spf1 include:two.test -all"`,
	`two.test. TXT "v=spf1 -all"`,
	`two.test. TXT "v=spf1 +all"`,
	`incall.test. TXT "v=spf1 +all include:i1.test redirect=i3.test"`,
	`incsame.test. TXT "v=spf1 include:i1.test include:i1.test include:i3.test -all"`,
	`rednone.test. TXT "v=spf1 redirect=norecord.test"`,
	`redmx.test. TXT "v=spf1 a:nx1.test redirect=mx.test"`,

	// Macros that need no DNS in include: and redirect= targets.
	`mac.test. TXT "v=spf1 include:%{l}.users.test include:%{ir}.%{v}.ips.test -all"`,
	`joe.users.test. TXT "v=spf1 ip4:198.51.100.0/24 -all"`,
	`1.2.0.192.in-addr.ips.test. TXT "v=spf1 +all"`,
	`mac2.test. TXT "v=spf1 redirect=_r.%{o}"`,
	`_r.mac2.test. TXT "v=spf1 include:%{h}.helo.test ~all"`,
	`mail.example.helo.test. TXT "v=spf1 ip4:192.0.2.0/30 -all"`,
	`exists.test. TXT "v=spf1 exists:%{i}.ex.test -all"`,
	`192.0.2.1.ex.test. A 127.0.0.2`,

	// The limits of RFC 7208 §4.6.4.
	`loop.test. TXT "v=spf1 include:loop.test"`,
	`void.test. TXT "v=spf1 a:nx1.test a:nx2.test a:nx3.test +all"`,
	`voidinc.test. TXT "v=spf1 include:vi1.test include:vi2.test include:vi3.test +all"`,
	`vi1.test. TXT "v=spf1 a:nx1.test -all"`,
	`vi2.test. TXT "v=spf1 exists:nx2.test -all"`,
	`vi3.test. TXT "v=spf1 mx:nx3.test -all"`,
}

// limitZone holds the cases about limits, made by code: include lists of
// the lengths the limits cut, and the MX lists of mxten and mxmany.
func limitZone() []string {
	var rrs []string
	for i := 1; i <= 12; i++ {
		rrs = append(rrs, fmt.Sprintf(`l%d.test. TXT "v=spf1 -all"`, i))
	}
	rrs = append(rrs,
		`lim12.test. TXT "v=spf1`+includes(1, 12)+` +all"`,
		`limred.test. TXT "v=spf1`+includes(1, 10)+` redirect=i3.test"`,
		// limdeep reaches lim12 with three lookups counted: only seven
		// of its includes are within the limit.
		`limdeep.test. TXT "v=spf1 a:m1.mx.test mx:mxnull.test redirect=lim12.test"`,
		// limafter's redirect= is its eleventh DNS-querying term.
		`limafter.test. TXT "v=spf1`+strings.Repeat(" a:m1.mx.test", 10)+` redirect=i3.test"`,
		// ln1's nine includes make limnest's second include the eleventh.
		`limnest.test. TXT "v=spf1 include:ln1.test include:ln2.test +all"`,
		`ln1.test. TXT "v=spf1`+includes(1, 9)+` -all"`,
		`ln2.test. TXT "v=spf1 +all"`,
		// capw1 matches at its first include, after its other eight and
		// capw's second have been fetched ahead in vain.
		`capw.test. TXT "v=spf1 include:capw1.test include:l11.test -all"`,
		// ip4 decides before any term waits for DNS: nothing is fetched
		// ahead.
		`ipfirst.test. TXT "v=spf1 ip4:192.0.2.1 include:i1.test include:i2.test redirect=i3.test"`,
		`capw1.test. TXT "v=spf1 include:i3.test`+includes(1, 8)+` -all"`,
	)
	// mxten's tenth MX host is the one that matches; mxmany has eleven.
	for i := 1; i <= 10; i++ {
		rrs = append(rrs, fmt.Sprintf(`mxten.test. MX %d t%d.mx.test.`, i, i), fmt.Sprintf(`t%d.mx.test. A 198.51.100.%d`, i, i))
	}
	rrs = append(rrs, `t10.mx.test. A 192.0.2.1`)
	for i := 1; i <= 11; i++ {
		rrs = append(rrs, fmt.Sprintf(`mxmany.test. MX %d m%d.many.test.`, i, i))
	}
	return rrs
}

// includes returns " include:lFROM.test ... include:lTO.test".
func includes(from, to int) string {
	var b strings.Builder
	for i := from; i <= to; i++ {
		fmt.Fprintf(&b, " include:l%d.test", i)
	}
	return b.String()
}

func newConcurrentZone(t testing.TB) *dnstest.Zone {
	t.Helper()
	z := dnstest.NewZone()
	if err := z.Add(concurrentZone...); err != nil {
		t.Fatal(err)
	}
	if err := z.Add(limitZone()...); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"broken.mx.test", "bad.ptr.test", "srvfail.test"} {
		z.Rcode(name, dns.RcodeServerFailure)
	}
	for _, name := range []string{"slow.mx.test", "slowtxt.test"} {
		z.Timeout(name)
	}
	return z
}

// concurrentCases are checks whose outcome must not depend on concurrency;
// want is the result, so that each case is known to do what it is here for.
var concurrentCases = []struct {
	name, ip, domain string
	want             spf.Result
}{
	{"mx match third", "192.0.2.1", "mx.test", spf.Pass},
	{"mx temperror last", "198.51.100.1", "mx.test", spf.TempError},
	{"mx ipv6", "2001:db8::1", "mx.test", spf.Pass},
	{"mx temperror first", "192.0.2.1", "mxfirst.test", spf.TempError},
	{"mx cidr", "192.0.2.77", "mxcidr.test", spf.Pass},
	{"mx null", "192.0.2.1", "mxnull.test", spf.Neutral},
	{"mx null and host", "192.0.2.1", "mxnull2.test", spf.Pass},
	{"mx timeout first", "192.0.2.1", "mxslow.test", spf.TempError},
	{"mx cname", "192.0.2.1", "mxcname.test", spf.Pass},
	{"mx duplicate", "192.0.2.1", "mxdup.test", spf.Fail},
	{"mx void", "192.0.2.1", "mxvoid.test", spf.PermError},
	{"mx tenth", "192.0.2.1", "mxten.test", spf.Pass},
	{"mx eleven", "192.0.2.1", "mxmany.test", spf.PermError},
	{"ptr fifth", "192.0.2.1", "ptr.test", spf.Pass},
	{"ptr ipv6", "2001:db8::1", "ptr.test", spf.Pass},
	{"ptr none validated", "192.0.2.3", "ptr.test", spf.Fail},
	{"ptr no ptr", "192.0.2.9", "ptr.test", spf.Fail},
	{"ptr other first", "192.0.2.1", "ptrother.test", spf.Pass},
	{"ptr no candidate", "192.0.2.1", "ptrnone.test", spf.Neutral},
	{"p exists", "192.0.2.1", "pexists.ptr.test", spf.Pass},
	{"p include", "192.0.2.1", "pinc.test", spf.Pass},
	{"p include unknown", "192.0.2.3", "pinc.test", spf.Fail},
	{"p redirect", "192.0.2.1", "pred.test", spf.Neutral},
	{"includes last", "192.0.2.1", "inc.test", spf.Pass},
	{"includes first", "198.51.100.1", "inc.test", spf.Pass},
	{"includes none", "10.0.0.1", "inc.test", spf.Fail},
	{"includes ipv6", "2001:db8::1", "inc.test", spf.Pass},
	{"redirect", "192.0.2.1", "red.test", spf.Pass},
	{"redirect fail", "10.0.0.1", "red.test", spf.Fail},
	{"redirect exp", "10.0.0.1", "redexp.test", spf.Fail},
	{"redirect after void", "192.0.2.1", "redmx.test", spf.Pass},
	{"nested pass", "192.0.2.1", "nest.test", spf.Pass},
	{"nested temperror", "198.51.100.1", "nest.test", spf.TempError},
	{"include temperror", "192.0.2.1", "inctemp.test", spf.TempError},
	{"include timeout", "192.0.2.1", "incslow.test", spf.TempError},
	{"include no record", "192.0.2.1", "incnone.test", spf.PermError},
	{"include bad record", "192.0.2.1", "incbad.test", spf.PermError},
	{"include two records", "192.0.2.1", "inctwo.test", spf.PermError},
	{"include after all", "192.0.2.1", "incall.test", spf.Pass},
	{"include twice", "192.0.2.1", "incsame.test", spf.Pass},
	{"redirect no record", "192.0.2.1", "rednone.test", spf.PermError},
	{"macros", "192.0.2.1", "mac.test", spf.Pass},
	{"macros other", "203.0.113.1", "mac.test", spf.PermError},
	{"macro redirect", "192.0.2.2", "mac2.test", spf.Pass},
	{"exists macro", "192.0.2.1", "exists.test", spf.Pass},
	{"limit flat", "192.0.2.1", "lim12.test", spf.PermError},
	{"limit redirect", "192.0.2.1", "limred.test", spf.PermError},
	{"limit deeper", "192.0.2.1", "limdeep.test", spf.PermError},
	{"limit redirect after terms", "192.0.2.1", "limafter.test", spf.PermError},
	{"limit nested", "192.0.2.1", "limnest.test", spf.PermError},
	{"limit loop", "192.0.2.1", "loop.test", spf.PermError},
	{"prefetch cap", "192.0.2.1", "capw.test", spf.Pass},
	{"void limit", "192.0.2.1", "void.test", spf.PermError},
	{"void limit includes", "192.0.2.1", "voidinc.test", spf.PermError},
}

// trackingResolver counts the lookups in progress, to show that none is
// left running when a check returns and that a sequential check never has
// two at once. With shuffle set it delays each answer by a few
// milliseconds, differently for each question, so that answers come back
// in another order than the questions went out.
type trackingResolver struct {
	spf.Resolver
	shuffle bool

	mu          sync.Mutex
	inFlight    int
	maxInFlight int
}

func (r *trackingResolver) begin(ctx context.Context, question string) func() {
	r.mu.Lock()
	r.inFlight++
	r.maxInFlight = max(r.maxInFlight, r.inFlight)
	r.mu.Unlock()
	if r.shuffle {
		h := fnv.New32a()
		h.Write([]byte(question))
		t := time.NewTimer(time.Duration(h.Sum32()%4000) * time.Microsecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	return func() {
		r.mu.Lock()
		r.inFlight--
		r.mu.Unlock()
	}
}

// idle reports whether no lookup is in progress, and the most there were
// at once so far.
func (r *trackingResolver) idle() (bool, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.inFlight == 0, r.maxInFlight
}

func (r *trackingResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	defer r.begin(ctx, "TXT "+name)()
	return r.Resolver.LookupTXT(ctx, name)
}

func (r *trackingResolver) LookupA(ctx context.Context, name string) ([]netip.Addr, error) {
	defer r.begin(ctx, "A "+name)()
	return r.Resolver.LookupA(ctx, name)
}

func (r *trackingResolver) LookupAAAA(ctx context.Context, name string) ([]netip.Addr, error) {
	defer r.begin(ctx, "AAAA "+name)()
	return r.Resolver.LookupAAAA(ctx, name)
}

func (r *trackingResolver) LookupMX(ctx context.Context, name string) ([]string, error) {
	defer r.begin(ctx, "MX "+name)()
	return r.Resolver.LookupMX(ctx, name)
}

func (r *trackingResolver) LookupPTR(ctx context.Context, addr netip.Addr) ([]string, error) {
	defer r.begin(ctx, "PTR "+addr.String())()
	return r.Resolver.LookupPTR(ctx, addr)
}

// concurrentQueryTimeout is short because some names never answer.
const concurrentQueryTimeout = 300 * time.Millisecond

func concurrentChecker(r spf.Resolver, sequential bool) *spf.Checker {
	return &spf.Checker{Resolver: r, Receiver: "mx.example.net", Timeout: 10 * time.Second, Sequential: sequential}
}

// diffOutcomes names the fields in which two outcomes differ, apart from
// the time they took.
func diffOutcomes(a, b *spf.Outcome) []string {
	va, vb := reflect.ValueOf(*a), reflect.ValueOf(*b)
	var diff []string
	for i := range va.NumField() {
		name := va.Type().Field(i).Name
		if name == "Duration" {
			continue
		}
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			diff = append(diff, name)
		}
	}
	return diff
}

func TestConcurrentSameOutcome(t *testing.T) {
	z := newConcurrentZone(t)
	srv := dnstest.StartServer(t, z)
	dnsResolver := func() spf.Resolver {
		r, err := spf.NewDNSResolver(spf.DNSOptions{Servers: []string{srv.Addr()}, Timeout: concurrentQueryTimeout})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// Each sequential reference is compared with concurrent runs over the
	// same kind of resolver: problem texts name resolver-specific errors.
	resolvers := []struct {
		name  string
		inner func() spf.Resolver
	}{
		{"memory", func() spf.Resolver { return dnstest.NewMapResolver(z) }},
		{"dns", dnsResolver},
	}
	for _, tc := range concurrentCases {
		t.Run(tc.name, func(t *testing.T) {
			ip := netip.MustParseAddr(tc.ip)
			for _, res := range resolvers {
				seq := &trackingResolver{Resolver: res.inner()}
				want := concurrentChecker(seq, true).CheckMailFrom(ctx, ip, "joe@"+tc.domain, "mail.example")
				if want.Result != tc.want {
					t.Fatalf("%s, sequential: %s, want %s\n%s", res.name, want.Result, tc.want, trace(want))
				}
				if _, most := seq.idle(); most > 1 {
					t.Errorf("%s, sequential: %d lookups at once", res.name, most)
				}
				for _, shuffle := range []bool{false, true} {
					conc := &trackingResolver{Resolver: res.inner(), shuffle: shuffle}
					got := concurrentChecker(conc, false).CheckMailFrom(ctx, ip, "joe@"+tc.domain, "mail.example")
					if diff := diffOutcomes(want, got); len(diff) > 0 {
						t.Errorf("%s, concurrent (shuffled %v): %s differ\nsequential: %s %q\n%s\nconcurrent: %s %q\n%s",
							res.name, shuffle, strings.Join(diff, ", "), want.Result, want.Problem, trace(want), got.Result, got.Problem, trace(got))
					}
					if idle, _ := conc.idle(); !idle {
						t.Errorf("%s, concurrent (shuffled %v): lookups still running after the check", res.name, shuffle)
					}
				}
			}
		})
	}
	waitNoCheckGoroutines(t)
}

// The whole RFC 7208 suite, in memory, decides the same with and without
// concurrent lookups, down to the trace.
func TestConcurrentSuiteSameOutcome(t *testing.T) {
	for _, sc := range loadSuite(t) {
		z, err := buildZone(sc.Zone)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range sc.Tests {
			ip := netip.MustParseAddr(tc.Host)
			want := concurrentChecker(dnstest.NewMapResolver(z), true).CheckMailFrom(ctx, ip, tc.MailFrom, tc.Helo)
			r := &trackingResolver{Resolver: dnstest.NewMapResolver(z), shuffle: true}
			got := concurrentChecker(r, false).CheckMailFrom(ctx, ip, tc.MailFrom, tc.Helo)
			if diff := diffOutcomes(want, got); len(diff) > 0 {
				t.Errorf("%s/%s: %s differ\nsequential:\n%s\nconcurrent:\n%s", sc.Description, tc.Name, strings.Join(diff, ", "), trace(want), trace(got))
			}
			if idle, _ := r.idle(); !idle {
				t.Errorf("%s/%s: lookups still running after the check", sc.Description, tc.Name)
			}
		}
	}
	waitNoCheckGoroutines(t)
}

// barrierResolver holds back the answers to a set of questions until all of
// them have been asked, so that a check can only finish if it asks them
// concurrently. A check that asked them one by one would wait for its
// deadline and end in temperror.
type barrierResolver struct {
	spf.Resolver
	mu      sync.Mutex
	waiting map[string]bool // questions not asked yet
	all     chan struct{}   // closed once every question has been asked
}

func newBarrier(r spf.Resolver, questions ...string) *barrierResolver {
	b := &barrierResolver{Resolver: r, waiting: map[string]bool{}, all: make(chan struct{})}
	for _, q := range questions {
		b.waiting[q] = true
	}
	return b
}

func (b *barrierResolver) wait(ctx context.Context, question string) {
	b.mu.Lock()
	held := b.waiting[question]
	if held {
		delete(b.waiting, question)
		if len(b.waiting) == 0 {
			close(b.all)
		}
	}
	b.mu.Unlock()
	if held {
		select {
		case <-b.all:
		case <-ctx.Done():
		}
	}
}

func (b *barrierResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	b.wait(ctx, "TXT "+name)
	return b.Resolver.LookupTXT(ctx, name)
}

func (b *barrierResolver) LookupA(ctx context.Context, name string) ([]netip.Addr, error) {
	b.wait(ctx, "A "+name)
	return b.Resolver.LookupA(ctx, name)
}

// The lookups that may overlap do overlap.
func TestConcurrentLookupsOverlap(t *testing.T) {
	z := newConcurrentZone(t)
	if err := z.Add(`slowa.test. TXT "v=spf1 a:a.slowa.test redirect=inc.test"`, `a.slowa.test. A 203.0.113.9`); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, ip, domain string
		together         []string
		want             spf.Result
	}{
		{"mx hosts", "192.0.2.1", "mx.test", []string{"A m1.mx.test", "A m2.mx.test", "A m3.mx.test"}, spf.Pass},
		{"ptr names", "192.0.2.1", "ptr.test", []string{"A x.ptr.test", "A nx.ptr.test", "A mail.ptr.test"}, spf.Pass},
		{"includes", "192.0.2.1", "inc.test", []string{"TXT i1.test", "TXT i2.test", "TXT i3.test"}, spf.Pass},
		{"redirect beside a term", "192.0.2.1", "slowa.test", []string{"A a.slowa.test", "TXT inc.test"}, spf.Pass},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newBarrier(dnstest.NewMapResolver(z), tt.together...)
			o := concurrentChecker(r, false).CheckMailFrom(ctx, netip.MustParseAddr(tt.ip), "joe@"+tt.domain, "mail.example")
			if o.Result != tt.want {
				t.Errorf("%s: %s %q, want %s: %v were not asked together\n%s", tt.domain, o.Result, o.Problem, tt.want, tt.together, trace(o))
			}
		})
	}
	waitNoCheckGoroutines(t)
}

// hangingResolver never answers some questions: their lookups end only
// when their context does, and it records how.
type hangingResolver struct {
	spf.Resolver
	hang map[string]bool

	mu    sync.Mutex
	ended []error // ctx.Err() of each hung lookup
}

func (h *hangingResolver) hangIf(ctx context.Context, question string) error {
	if !h.hang[question] {
		return nil
	}
	<-ctx.Done()
	h.mu.Lock()
	h.ended = append(h.ended, ctx.Err())
	h.mu.Unlock()
	return &spf.DNSError{Name: question, Type: "hung", Err: ctx.Err()}
}

func (h *hangingResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	if err := h.hangIf(ctx, "TXT "+name); err != nil {
		return nil, err
	}
	return h.Resolver.LookupTXT(ctx, name)
}

func (h *hangingResolver) LookupA(ctx context.Context, name string) ([]netip.Addr, error) {
	if err := h.hangIf(ctx, "A "+name); err != nil {
		return nil, err
	}
	return h.Resolver.LookupA(ctx, name)
}

// Lookups whose answers the check turned out not to need are cancelled
// once it knows its result, and have ended when it returns. Were they not
// cancelled, the check would wait for its deadline and end in temperror.
func TestConcurrentCancelsUnneeded(t *testing.T) {
	z := newConcurrentZone(t)
	err := z.Add(
		`mxhang.test. TXT "v=spf1 mx -all"`,
		`mxhang.test. MX 10 m3.mx.test.`,
		`mxhang.test. MX 20 hang.mx.test.`,
		// The a term makes the check wait for DNS, which is when it
		// fetches the include and the redirect ahead; ip4 then decides.
		`inchang.test. TXT "v=spf1 a ip4:192.0.2.1 include:hang.test redirect=hang2.test"`,
		`inchang.test. A 198.51.100.1`,
		`2.2.0.192.in-addr.arpa. PTR mail.ptr.test.`,
		`2.2.0.192.in-addr.arpa. PTR hang.ptr.test.`,
		`ptr2.test. TXT "v=spf1 ptr:ptr.test -all"`,
		`mail.ptr.test. A 192.0.2.2`,
	)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, ip, domain string
		hang             []string
	}{
		{"mx host", "192.0.2.1", "mxhang.test", []string{"A hang.mx.test"}},
		{"include and redirect", "192.0.2.1", "inchang.test", []string{"TXT hang.test", "TXT hang2.test"}},
		{"ptr name", "192.0.2.2", "ptr2.test", []string{"A hang.ptr.test"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &hangingResolver{Resolver: dnstest.NewMapResolver(z), hang: map[string]bool{}}
			for _, q := range tt.hang {
				h.hang[q] = true
			}
			o := concurrentChecker(h, false).CheckMailFrom(ctx, netip.MustParseAddr(tt.ip), "joe@"+tt.domain, "mail.example")
			if o.Result != spf.Pass {
				t.Errorf("%s: %s %q, want pass\n%s", tt.domain, o.Result, o.Problem, trace(o))
			}
			h.mu.Lock()
			ended := slices.Clone(h.ended)
			h.mu.Unlock()
			// Every hung lookup was asked (the check asks ahead) and had
			// ended, cancelled, by the time the check returned.
			if len(ended) != len(tt.hang) {
				t.Errorf("%d of the %d hanging lookups ended before the check returned", len(ended), len(tt.hang))
			}
			for _, err := range ended {
				if err != context.Canceled {
					t.Errorf("a hanging lookup ended with %v, want %v", err, context.Canceled)
				}
			}
		})
	}
	waitNoCheckGoroutines(t)
}

// Fetching ahead stays within what the lookup limit lets a check reach: a
// record with more include: terms than the limit allows, or a redirect=
// past the limit, costs no query that the sequential check does not send.
func TestPrefetchQueryBound(t *testing.T) {
	z := newConcurrentZone(t)
	srv := dnstest.StartServer(t, z)
	r, err := spf.NewDNSResolver(spf.DNSOptions{Servers: []string{srv.Addr()}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	mem := dnstest.NewMapResolver(z)
	tests := []struct {
		domain   string
		want     spf.Result
		seq, con int // TXT queries sent
		// viaServer: every record fetched ahead is used, so the server has
		// seen every query by the time the check returns.
		viaServer bool
	}{
		{"lim12.test", spf.PermError, 11, 11, true},
		{"limred.test", spf.PermError, 11, 11, true},
		{"limdeep.test", spf.PermError, 9, 9, true},
		{"limafter.test", spf.PermError, 1, 1, true},
		// Fetched ahead, the looping record is asked for once.
		{"loop.test", spf.PermError, 11, 2, true},
		// Past the limit, the one kind of case where fetching ahead costs
		// a query more: ln2 is fetched beside ln1, before ln1's record
		// shows that its nine includes use up the limit, so that ln2 is
		// never reached.
		{"limnest.test", spf.PermError, 11, 12, false},
		// A match leaves records fetched ahead unused; maxPrefetches
		// bounds them: capw1, l11, and eight of capw1's nine includes.
		{"capw.test", spf.Pass, 3, 11, false},
		{"ipfirst.test", spf.Pass, 1, 1, true},
	}
	ip := netip.MustParseAddr("192.0.2.1")
	for _, tt := range tests {
		for _, sequential := range []bool{true, false} {
			want := tt.con
			if sequential {
				want = tt.seq
			}
			mem.ResetQueries()
			o := concurrentChecker(mem, sequential).CheckMailFrom(ctx, ip, "joe@"+tt.domain, "mail.example")
			if n := countType(mem.Queries(), dns.TypeTXT); n != want || o.Result != tt.want {
				t.Errorf("%s (sequential %v, memory): %s with %d TXT queries, want %s with %d\n%s", tt.domain, sequential, o.Result, n, tt.want, want, trace(o))
			}
			if !tt.viaServer {
				continue
			}
			srv.ResetQueries()
			o = concurrentChecker(r, sequential).CheckMailFrom(ctx, ip, "joe@"+tt.domain, "mail.example")
			if n := countType(srv.Queries(), dns.TypeTXT); n != want || o.Result != tt.want {
				t.Errorf("%s (sequential %v, server): %s with %d TXT queries, want %s with %d\n%s", tt.domain, sequential, o.Result, n, tt.want, want, trace(o))
			}
		}
	}
}

// A target named through %{p} is not fetched ahead: its name needs the PTR
// and address lookups that the evaluation makes in its own order, and only
// if it gets there.
func TestPrefetchSkipsPTRMacro(t *testing.T) {
	z := newConcurrentZone(t)
	if err := z.Add(`pskip.test. TXT "v=spf1 ip4:192.0.2.1 include:%{p}.p.test redirect=%{p}.p.test"`); err != nil {
		t.Fatal(err)
	}
	for _, sequential := range []bool{true, false} {
		mem := dnstest.NewMapResolver(z)
		o := concurrentChecker(mem, sequential).CheckMailFrom(ctx, netip.MustParseAddr("192.0.2.1"), "joe@pskip.test", "mail.example")
		qs := mem.Queries()
		if o.Result != spf.Pass || len(qs) != 1 || qs[0].Type != dns.TypeTXT {
			t.Errorf("sequential %v: %s after queries %v, want pass after the TXT query of pskip.test alone", sequential, o.Result, qs)
		}
	}
}

func countType(qs []dnstest.Query, qtype uint16) int {
	n := 0
	for _, q := range qs {
		if q.Type == qtype {
			n++
		}
	}
	return n
}

// checkGoroutines returns the stacks of the goroutines started by package
// spf that are still alive.
func checkGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var left []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "created by github.com/spf-milter/spf-milter/spf.") {
			left = append(left, g)
		}
	}
	return left
}

// waitNoCheckGoroutines fails the test if a goroutine that a check started
// is still alive. A goroutine that has done its work may take a moment to
// exit, so it looks again for a while before it fails; one that is stuck
// stays.
func waitNoCheckGoroutines(t *testing.T) {
	t.Helper()
	var left []string
	for range 100 {
		if left = checkGoroutines(); len(left) == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("%d goroutines started by checks are still running:\n%s", len(left), strings.Join(left, "\n\n"))
}

// bigAnswerResolver answers the MX question of mxwait.test with ten hosts,
// the first of which answers only once first is closed, and every other
// one with thousands of addresses, none the client's. It counts the
// answers the collector has freed.
type bigAnswerResolver struct {
	spf.Resolver
	first    chan struct{}
	answered atomic.Int32 // answers of the other hosts returned
	freed    atomic.Int32 // of those, freed by the collector
}

func (r *bigAnswerResolver) LookupMX(ctx context.Context, name string) ([]string, error) {
	hosts := make([]string, 10)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("h%d.mxwait.test", i)
	}
	return hosts, nil
}

func (r *bigAnswerResolver) LookupA(ctx context.Context, name string) ([]netip.Addr, error) {
	if name == "h0.mxwait.test" {
		select {
		case <-r.first:
			return nil, &spf.DNSError{Name: name, Type: "A", Err: spf.ErrNoData}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	addrs := make([]netip.Addr, 3000)
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
	}
	runtime.SetFinalizer(&addrs[0], func(*netip.Addr) { r.freed.Add(1) })
	r.answered.Add(1)
	return addrs, nil
}

// The address answers of an mx term's hosts are matched as they come and
// not kept until the evaluation reaches them in MX order: while the first
// host keeps the check waiting, the nine others' answers, thousands of
// addresses each, are garbage. Before, each stayed held until the first
// host answered, which may be at the check's deadline.
func TestConcurrentMXAnswersNotHeld(t *testing.T) {
	z := dnstest.NewZone()
	if err := z.Add(`mxwait.test. TXT "v=spf1 mx -all"`); err != nil {
		t.Fatal(err)
	}
	r := &bigAnswerResolver{Resolver: dnstest.NewMapResolver(z), first: make(chan struct{})}
	done := make(chan *spf.Outcome)
	go func() {
		done <- concurrentChecker(r, false).CheckMailFrom(ctx, netip.MustParseAddr("192.0.2.1"), "joe@mxwait.test", "mail.example")
	}()
	// Generous: the collector and the finalizers run when they can.
	deadline := time.Now().Add(time.Minute)
	for r.answered.Load() < 9 || r.freed.Load() < 9 {
		if time.Now().After(deadline) {
			t.Errorf("of the 9 answers that did not match, %d returned and %d freed while the first host was awaited",
				r.answered.Load(), r.freed.Load())
			break
		}
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
	close(r.first)
	if o := <-done; o.Result != spf.Fail {
		t.Errorf("%s %q, want fail\n%s", o.Result, o.Problem, trace(o))
	}
}
