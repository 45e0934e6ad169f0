package spf_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/spf-milter/spf-milter/internal/dnstest"
	"github.com/spf-milter/spf-milter/spf"
)

// dnsErrKind classifies a lookup error the way the evaluator must.
type dnsErrKind int

const (
	kindOK dnsErrKind = iota
	kindNX
	kindNoData
	kindTemp
)

func (k dnsErrKind) String() string {
	return [...]string{"ok", "NXDOMAIN", "NODATA", "temporary"}[k]
}

func dnsKind(err error) dnsErrKind {
	switch {
	case err == nil:
		return kindOK
	case errors.Is(err, spf.ErrNXDomain):
		return kindNX
	case errors.Is(err, spf.ErrNoData):
		return kindNoData
	default:
		return kindTemp
	}
}

// dnsTestZone is the zone most resolver tests ask.
func dnsTestZone(t *testing.T) *dnstest.Zone {
	t.Helper()
	z := dnstest.NewZone()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(z.Add(
		`a.example.com. A 192.0.2.1`,
		`a.example.com. A 192.0.2.2`,
		`a.example.com. AAAA 2001:db8::1`,
		`mx.example.com. MX 30 c.example.com.`,
		`mx.example.com. MX 10 a.example.com.`,
		`mx.example.com. MX 20 b.example.com.`,
		`mx.example.com. MX 10 z.example.com.`,
		`1.2.0.192.in-addr.arpa. PTR a.example.com.`,
		`1.2.0.192.in-addr.arpa. PTR b.example.com.`,
		`1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. PTR v6.example.com.`,
		`alias.example.com. CNAME chain1.example.com.`,
		`chain1.example.com. CNAME a.example.com.`,
		`loop1.example.com. CNAME loop2.example.com.`,
		`loop2.example.com. CNAME loop3.example.com.`,
		`loop3.example.com. CNAME loop1.example.com.`,
		`self.example.com. CNAME self.example.com.`,
		`dangling.example.com. CNAME gone.example.com.`,
		`todead.example.com. CNAME dead.example.com.`,
		`tofail.example.com. CNAME servfail.example.com.`,
	))
	// c0 -> c1 -> ... -> c10 holds the A record: a chain of exactly 10
	// CNAMEs; l0 -> ... -> l11 one of 11.
	for i := range 10 {
		must(z.Add(fmt.Sprintf("c%d.example.com. CNAME c%d.example.com.", i, i+1)))
	}
	must(z.Add(`c10.example.com. A 192.0.2.10`))
	for i := range 11 {
		must(z.Add(fmt.Sprintf("l%d.example.com. CNAME l%d.example.com.", i, i+1)))
	}
	must(z.Add(`l11.example.com. A 192.0.2.11`))

	z.AddTXT("spf.example.com", "v=spf1 ip4:192.0.2.0/24 ", "-all")
	z.AddTXT("spf.example.com", "second record")
	z.AddTXT("quote.example.com", `say "hi" \ back\slash`)
	z.AddTXT("bytes.example.com", "\x00nul\xef\xbb\xbfbom\x80\xff\r\n\t")
	z.AddTXT("empty.example.com", "")
	z.AddTXT("nostrings.example.com")
	z.AddTXT(`escaped\\name.example.com`, // presentation form of one backslash
		"found by a name with a backslash")
	z.AddTXT("sp ace.example.com", "found by a name with a space")

	z.Rcode("servfail.example.com", dns.RcodeServerFailure)
	z.Rcode("refused.example.com", dns.RcodeRefused)
	z.Rcode("notimp.example.com", dns.RcodeNotImplemented)
	z.Timeout("dead.example.com")
	must(z.Add(`half.example.com. A 192.0.2.99`))
	z.Timeout("half.example.com")
	return z
}

// dnsCase is one question and its expected answer.
type dnsCase struct {
	name string
	do   func(ctx context.Context, r spf.Resolver) (any, error)
	want any // the records, when kind is kindOK
	kind dnsErrKind
}

func askTXT(name string) func(context.Context, spf.Resolver) (any, error) {
	return func(ctx context.Context, r spf.Resolver) (any, error) { return r.LookupTXT(ctx, name) }
}

func askA(name string) func(context.Context, spf.Resolver) (any, error) {
	return func(ctx context.Context, r spf.Resolver) (any, error) { return r.LookupA(ctx, name) }
}

func askAAAA(name string) func(context.Context, spf.Resolver) (any, error) {
	return func(ctx context.Context, r spf.Resolver) (any, error) { return r.LookupAAAA(ctx, name) }
}

func askMX(name string) func(context.Context, spf.Resolver) (any, error) {
	return func(ctx context.Context, r spf.Resolver) (any, error) { return r.LookupMX(ctx, name) }
}

func askPTR(addr string) func(context.Context, spf.Resolver) (any, error) {
	return func(ctx context.Context, r spf.Resolver) (any, error) {
		return r.LookupPTR(ctx, netip.MustParseAddr(addr))
	}
}

func ipList(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

var dnsCases = []dnsCase{
	{"A", askA("a.example.com"), ipList("192.0.2.1", "192.0.2.2"), kindOK},
	{"A trailing dot, any case", askA("A.Example.COM."), ipList("192.0.2.1", "192.0.2.2"), kindOK},
	{"AAAA", askAAAA("a.example.com"), ipList("2001:db8::1"), kindOK},
	{"MX by preference", askMX("mx.example.com"),
		[]string{"a.example.com", "z.example.com", "b.example.com", "c.example.com"}, kindOK},
	{"PTR IPv4", askPTR("192.0.2.1"), []string{"a.example.com", "b.example.com"}, kindOK},
	{"PTR IPv4-mapped", askPTR("::ffff:192.0.2.1"), []string{"a.example.com", "b.example.com"}, kindOK},
	{"PTR IPv6", askPTR("2001:db8::1"), []string{"v6.example.com"}, kindOK},
	{"PTR none", askPTR("192.0.2.200"), nil, kindNX},
	{"TXT strings concatenated", askTXT("spf.example.com"),
		[]string{"v=spf1 ip4:192.0.2.0/24 -all", "second record"}, kindOK},
	{"TXT quote and backslash", askTXT("quote.example.com"), []string{`say "hi" \ back\slash`}, kindOK},
	{"TXT raw bytes", askTXT("bytes.example.com"), []string{"\x00nul\xef\xbb\xbfbom\x80\xff\r\n\t"}, kindOK},
	{"TXT empty string", askTXT("empty.example.com"), []string{""}, kindOK},
	{"TXT no strings", askTXT("nostrings.example.com"), []string{""}, kindOK},
	{"name with backslash", askTXT(`escaped\name.example.com`), []string{"found by a name with a backslash"}, kindOK},
	{"name with space", askTXT("sp ace.example.com"), []string{"found by a name with a space"}, kindOK},
	{"CNAME chain", askA("alias.example.com"), ipList("192.0.2.1", "192.0.2.2"), kindOK},
	{"CNAME chain of 10", askA("c0.example.com"), ipList("192.0.2.10"), kindOK},
	{"CNAME chain of 11", askA("l0.example.com"), nil, kindTemp},
	{"CNAME then NODATA", askMX("alias.example.com"), nil, kindNoData},
	{"CNAME to nothing", askA("dangling.example.com"), nil, kindNX},
	{"CNAME loop", askA("loop1.example.com"), nil, kindTemp},
	{"CNAME to itself", askA("self.example.com"), nil, kindTemp},
	{"CNAME to SERVFAIL", askA("tofail.example.com"), nil, kindTemp},
	{"NXDOMAIN", askA("nothing.example.com"), nil, kindNX},
	{"NODATA", askAAAA("mx.example.com"), nil, kindNoData},
	{"NODATA for TXT", askTXT("a.example.com"), nil, kindNoData},
	{"SERVFAIL", askA("servfail.example.com"), nil, kindTemp},
	{"REFUSED", askTXT("refused.example.com"), nil, kindTemp},
	{"NOTIMP", askTXT("notimp.example.com"), nil, kindTemp},
	{"empty label", askTXT("a..example.com"), nil, kindNX},
	{"label over 63", askTXT(strings.Repeat("x", 64) + ".example.com"), nil, kindNX},
	{"label of 63", askTXT(strings.Repeat("x", 63) + ".example.com"), nil, kindNX},
	{"name over 255", askTXT(strings.Repeat("abcdefghi.", 26) + "com"), nil, kindNX},
	{"empty name", askTXT(""), nil, kindNX},
}

// dnsSlowCases wait for the resolver's timeout.
var dnsSlowCases = []dnsCase{
	{"timeout", askTXT("dead.example.com"), nil, kindTemp},
	{"timeout, type without records", askTXT("half.example.com"), nil, kindTemp},
	{"type with records at timeout name", askA("half.example.com"), ipList("192.0.2.99"), kindOK},
	{"CNAME to timeout", askA("todead.example.com"), nil, kindTemp},
}

func newDNSResolver(t *testing.T, timeout time.Duration, servers ...string) *spf.DNSResolver {
	t.Helper()
	r, err := spf.NewDNSResolver(spf.DNSOptions{Servers: servers, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func runDNSCase(t *testing.T, r spf.Resolver, tc dnsCase) {
	t.Helper()
	got, err := tc.do(context.Background(), r)
	if k := dnsKind(err); k != tc.kind {
		t.Fatalf("error %v (%v), want %v", err, k, tc.kind)
	}
	if err != nil {
		var de *spf.DNSError
		if !errors.As(err, &de) {
			t.Errorf("error %T %v is not a *spf.DNSError", err, err)
		}
		return
	}
	if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tc.want) {
		t.Errorf("got %q, want %q", got, tc.want)
	}
}

func TestDNSResolverLookups(t *testing.T) {
	t.Parallel()
	srv := dnstest.StartServer(t, dnsTestZone(t))
	r := newDNSResolver(t, 200*time.Millisecond, srv.Addr())
	for _, tc := range append(slices.Clone(dnsCases), dnsSlowCases...) {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runDNSCase(t, r, tc)
		})
	}
}

// TestMapResolverAgrees holds dnstest.MapResolver to the real resolver's
// behaviour, since tests of the evaluator rely on it instead.
func TestMapResolverAgrees(t *testing.T) {
	t.Parallel()
	r := dnstest.NewMapResolver(dnsTestZone(t))
	for _, tc := range append(slices.Clone(dnsCases), dnsSlowCases...) {
		t.Run(tc.name, func(t *testing.T) { runDNSCase(t, r, tc) })
	}
}

func TestDNSErrorNames(t *testing.T) {
	t.Parallel()
	srv := dnstest.StartServer(t, dnsTestZone(t))
	r := newDNSResolver(t, time.Second, srv.Addr())
	_, err := r.LookupMX(context.Background(), "Nothing.Example.com.")
	var de *spf.DNSError
	if !errors.As(err, &de) || de.Name != "Nothing.Example.com" || de.Type != "MX" {
		t.Errorf("error %#v, want a DNSError for MX Nothing.Example.com", err)
	}
	_, err = r.LookupPTR(context.Background(), netip.MustParseAddr("192.0.2.200"))
	if !errors.As(err, &de) || de.Name != "200.2.0.192.in-addr.arpa" || de.Type != "PTR" {
		t.Errorf("error %#v, want a DNSError for PTR 200.2.0.192.in-addr.arpa", err)
	}
}

func countQueriesOver(qs []dnstest.Query, network string) int {
	n := 0
	for _, q := range qs {
		if q.Net == network {
			n++
		}
	}
	return n
}

func TestDNSResolverTruncation(t *testing.T) {
	t.Parallel()
	z := dnstest.NewZone()
	// 100 A records make an answer of about 1.6 kB, over the 1232 octets
	// the resolver advertises.
	for i := range 100 {
		if err := z.Add(fmt.Sprintf("big.example.com. A 198.51.100.%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	long := strings.Repeat("x", 255)
	z.AddTXT("long.example.com", long, long, long, long, long, long)
	z.AddTXT("small.example.com", "v=spf1 -all")
	srv := dnstest.StartServer(t, z)
	r := newDNSResolver(t, time.Second, srv.Addr())
	ctx := context.Background()

	a, err := r.LookupA(ctx, "big.example.com")
	if err != nil || len(a) != 100 {
		t.Errorf("big A: %d records, %v; want 100", len(a), err)
	}
	txts, err := r.LookupTXT(ctx, "long.example.com")
	if err != nil || len(txts) != 1 || txts[0] != strings.Repeat(long, 6) {
		t.Errorf("long TXT: %d records, %v; want one of %d octets", len(txts), err, 6*255)
	}
	qs := srv.Queries()
	if udp, tcp := countQueriesOver(qs, "udp"), countQueriesOver(qs, "tcp"); udp != 2 || tcp != 2 {
		t.Errorf("queries %v: want one over UDP then one over TCP for each lookup", qs)
	}

	srv.SetTruncateUDP(true)
	srv.ResetQueries()
	got, err := r.LookupTXT(ctx, "small.example.com")
	if err != nil || !slices.Equal(got, []string{"v=spf1 -all"}) {
		t.Errorf("TXT with TC over UDP: %q, %v", got, err)
	}
	want := []dnstest.Query{{Name: "small.example.com.", Type: dns.TypeTXT, Net: "udp"}, {Name: "small.example.com.", Type: dns.TypeTXT, Net: "tcp"}}
	if qs := srv.Queries(); !slices.Equal(qs, want) {
		t.Errorf("queries %v, want %v", qs, want)
	}
}

// closedUDPPort returns a loopback address where nothing listens.
func closedUDPPort(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

func TestDNSResolverFailover(t *testing.T) {
	t.Parallel()
	good := dnstest.NewZone()
	good.AddTXT("example.com", "v=spf1 -all")
	goodSrv := dnstest.StartServer(t, good)

	bad := dnstest.NewZone()
	bad.Rcode("example.com", dns.RcodeServerFailure)
	servfailSrv := dnstest.StartServer(t, bad)

	refusing := dnstest.NewZone()
	refusing.Rcode("example.com", dns.RcodeRefused)
	refusedSrv := dnstest.StartServer(t, refusing)

	silent := dnstest.NewZone()
	silent.Timeout("example.com")
	silentSrv := dnstest.StartServer(t, silent)

	nx := dnstest.NewZone()
	nxSrv := dnstest.StartServer(t, nx)

	// A failing server must be passed over at once: with a per-query
	// timeout of 2s, finishing within 1s shows no timeout was waited for.
	// The silent server can only be passed over after its timeout.
	fast, slow := 2*time.Second, 300*time.Millisecond
	tests := []struct {
		name    string
		servers []string
		timeout time.Duration
		kind    dnsErrKind
		maxTime time.Duration
	}{
		{"closed port first", []string{closedUDPPort(t), goodSrv.Addr()}, fast, kindOK, time.Second},
		{"SERVFAIL first", []string{servfailSrv.Addr(), goodSrv.Addr()}, fast, kindOK, time.Second},
		{"REFUSED first", []string{refusedSrv.Addr(), goodSrv.Addr()}, fast, kindOK, time.Second},
		{"silent first", []string{silentSrv.Addr(), goodSrv.Addr()}, slow, kindOK, 1500 * time.Millisecond},
		{"all fail", []string{servfailSrv.Addr(), refusedSrv.Addr(), closedUDPPort(t)}, fast, kindTemp, time.Second},
		{"NXDOMAIN is final", []string{nxSrv.Addr(), goodSrv.Addr()}, fast, kindNX, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newDNSResolver(t, tt.timeout, tt.servers...)
			start := time.Now()
			got, err := r.LookupTXT(context.Background(), "example.com")
			if k := dnsKind(err); k != tt.kind {
				t.Fatalf("got %q, %v (%v); want %v", got, err, k, tt.kind)
			}
			if err == nil && !slices.Equal(got, []string{"v=spf1 -all"}) {
				t.Errorf("got %q", got)
			}
			if d := time.Since(start); d > tt.maxTime {
				t.Errorf("took %v, want at most %v", d, tt.maxTime)
			}
		})
	}
}

// TestDNSResolverTimeout checks that one query waits for Timeout, sending
// its datagram three times, and that each server gets its own Timeout.
func TestDNSResolverTimeout(t *testing.T) {
	t.Parallel()
	z := dnstest.NewZone()
	z.Timeout("example.com")
	a, b := dnstest.StartServer(t, z), dnstest.StartServer(t, z)
	r := newDNSResolver(t, 200*time.Millisecond, a.Addr(), b.Addr())
	start := time.Now()
	_, err := r.LookupTXT(context.Background(), "example.com")
	d := time.Since(start)
	if dnsKind(err) != kindTemp {
		t.Fatalf("error %v, want a kindTemp error", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("error %v does not say it is a timeout", err)
	}
	// Deadlines never fire early, so the lower bound is exact; the upper
	// one only catches a lookup that ignores its timeout, since a loaded
	// machine can be late by seconds.
	if d < 400*time.Millisecond || d > 10*time.Second {
		t.Errorf("took %v, want about 2 × 200ms", d)
	}
	want := slices.Repeat([]dnstest.Query{{Name: "example.com.", Type: dns.TypeTXT, Net: "udp"}}, 3)
	if !slices.Equal(a.Queries(), want) || !slices.Equal(b.Queries(), want) {
		t.Errorf("servers got %v and %v, want %v each", a.Queries(), b.Queries(), want)
	}
}

// TestDNSResolverContext checks that the check's deadline and cancellation
// cut a lookup short even though the per-query timeout is long.
func TestDNSResolverContext(t *testing.T) {
	t.Parallel()
	z := dnstest.NewZone()
	z.AddTXT("example.com", "v=spf1 -all")
	srv := dnstest.StartServer(t, z)
	srv.SetDelay(3 * time.Second)
	r := newDNSResolver(t, 5*time.Second, srv.Addr(), srv.Addr())

	tests := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 150*time.Millisecond)
		}, context.DeadlineExceeded},
		{"cancel without deadline", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(150*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled},
		{"already expired", func() (context.Context, context.CancelFunc) {
			return context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		}, context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := tt.ctx()
			defer cancel()
			start := time.Now()
			_, err := r.LookupTXT(ctx, "example.com")
			if d := time.Since(start); d > time.Second {
				t.Errorf("took %v, want the context to end it after about 150ms", d)
			}
			if dnsKind(err) != kindTemp || !errors.Is(err, tt.want) {
				t.Errorf("error %v, want a kindTemp error wrapping %v", err, tt.want)
			}
		})
	}
}

// TestDNSResolverBadReplies checks answers that are not for the question
// asked: they must not be taken, and the next server must be asked.
func TestDNSResolverBadReplies(t *testing.T) {
	t.Parallel()
	good := dnstest.NewZone()
	good.AddTXT("example.com", "v=spf1 -all")
	goodSrv := dnstest.StartServer(t, good)

	tests := []struct {
		name   string
		mangle func(resp *dns.Msg)
	}{
		{"wrong ID", func(resp *dns.Msg) { resp.Id++ }},
		{"wrong name", func(resp *dns.Msg) { resp.Question[0].Name = "evil.example.net." }},
		{"wrong type", func(resp *dns.Msg) { resp.Question[0].Qtype = dns.TypeA }},
		{"no question", func(resp *dns.Msg) { resp.Question = nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			bad := startManglingServer(t, tt.mangle)
			for _, servers := range [][]string{{bad}, {bad, goodSrv.Addr()}} {
				r := newDNSResolver(t, 200*time.Millisecond, servers...)
				got, err := r.LookupTXT(context.Background(), "example.com")
				switch {
				case len(servers) == 1 && dnsKind(err) != kindTemp:
					t.Errorf("only the bad server: got %q, %v; want a kindTemp error", got, err)
				case len(servers) == 2 && (err != nil || !slices.Equal(got, []string{"v=spf1 -all"})):
					t.Errorf("bad then good server: got %q, %v; want the good answer", got, err)
				}
			}
		})
	}
}

// startManglingServer serves UDP answers with a forged TXT record, passed through
// mangle before they are sent, and returns its address.
func startManglingServer(t *testing.T, mangle func(*dns.Msg)) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		resp := new(dns.Msg)
		resp.SetReply(req)
		resp.Answer = []dns.RR{&dns.TXT{
			Hdr: dns.RR_Header{Name: req.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
			Txt: []string{"v=spf1 +all"},
		}}
		mangle(resp)
		_ = w.WriteMsg(resp)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

func TestNewDNSResolver(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	resolvConf := write("resolv.conf", "# test\nsearch example.com\nnameserver 192.0.2.53\nnameserver 2001:db8::53\noptions timeout:1\n")
	emptyConf := write("empty.conf", "search example.com\n")

	tests := []struct {
		name    string
		opts    spf.DNSOptions
		want    []string
		wantErr bool
	}{
		{"resolv.conf", spf.DNSOptions{ResolvConf: resolvConf}, []string{"192.0.2.53:53", "[2001:db8::53]:53"}, false},
		{"resolv.conf without nameserver", spf.DNSOptions{ResolvConf: emptyConf}, nil, true},
		{"missing resolv.conf", spf.DNSOptions{ResolvConf: filepath.Join(dir, "none")}, nil, true},
		{"servers win over resolv.conf", spf.DNSOptions{Servers: []string{"127.0.0.1:5353"}, ResolvConf: resolvConf},
			[]string{"127.0.0.1:5353"}, false},
		{"bare addresses", spf.DNSOptions{Servers: []string{"127.0.0.1", "::1", "[::1]"}},
			[]string{"127.0.0.1:53", "[::1]:53", "[::1]:53"}, false},
		{"IPv6 with port", spf.DNSOptions{Servers: []string{"[2001:db8::1]:5353"}}, []string{"[2001:db8::1]:5353"}, false},
		{"host name", spf.DNSOptions{Servers: []string{"dns.example.com:53"}}, nil, true},
		{"bad port", spf.DNSOptions{Servers: []string{"127.0.0.1:dns"}}, nil, true},
		{"port zero", spf.DNSOptions{Servers: []string{"127.0.0.1:0"}}, nil, true},
		{"empty", spf.DNSOptions{Servers: []string{""}}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := spf.NewDNSResolver(tt.opts)
			if tt.wantErr {
				if err == nil {
					t.Errorf("got servers %q, want an error", r.Servers())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := r.Servers(); !slices.Equal(got, tt.want) {
				t.Errorf("Servers() = %q, want %q", got, tt.want)
			}
		})
	}
}

// A temperror's problem text reaches SMTP replies and headers that leave
// the site: it must not name our resolvers or sockets, but a log can still
// get them from the error.
func TestServerErrorHidesAddresses(t *testing.T) {
	z := dnstest.NewZone()
	z.Rcode("broken.example", dns.RcodeServerFailure)
	z.Timeout("slow.example")
	srv := dnstest.StartServer(t, z)
	r := newDNSResolver(t, 200*time.Millisecond, srv.Addr())
	for name, want := range map[string]string{
		"broken.example": "server answered SERVFAIL",
		"slow.example":   "no answer (timeout)",
	} {
		_, err := r.LookupTXT(context.Background(), name)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: error %v, want one saying %q", name, err, want)
		}
		host, port, _ := net.SplitHostPort(srv.Addr())
		if strings.Contains(err.Error(), host) || strings.Contains(err.Error(), port) {
			t.Errorf("%s: error %q names the server", name, err)
		}
		var se *spf.ServerError
		if !errors.As(err, &se) || se.Server != srv.Addr() {
			t.Errorf("%s: no ServerError with the server's address in %v", name, err)
		}
	}
}
