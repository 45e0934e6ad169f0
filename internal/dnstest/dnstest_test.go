package dnstest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/spf-milter/spf-milter/spf"
)

func testZone(t *testing.T) *Zone {
	t.Helper()
	z := NewZone()
	err := z.Add(
		`Example.COM. 60 IN A 192.0.2.1`,
		`example.com. IN TXT "v=spf1 -all"`,
		`alias.example.com. CNAME example.com.`,
		`alias2.example.com. CNAME alias.example.com.`,
		`dangling.example.com. CNAME gone.example.com.`,
		`loop1.example.com. CNAME loop2.example.com.`,
		`loop2.example.com. CNAME loop1.example.com.`,
		`tospf.example.com. CNAME example.com.`,
		`example.com. SPF "v=spf1 ?all"`,
	)
	if err != nil {
		t.Fatal(err)
	}
	z.Timeout("dead.example.com")
	z.Add(`half.example.com. A 192.0.2.9`)
	z.Timeout("half.example.com")
	z.Rcode("broken.example.com", dns.RcodeServerFailure)
	z.Add(`broken.example.com. A 192.0.2.7`)
	for i := range 40 {
		z.Add(fmt.Sprintf("big.example.com. A 198.51.100.%d", i))
	}
	return z
}

func ask(t *testing.T, s *Server, network, name string, qtype uint16, edns uint16) (*dns.Msg, error) {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 300 * time.Millisecond}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if edns > 0 {
		m.SetEdns0(edns, false)
	}
	resp, _, err := c.Exchange(m, s.Addr())
	return resp, err
}

func TestServerAnswers(t *testing.T) {
	s := StartServer(t, testZone(t))
	tests := []struct {
		name   string
		qtype  uint16
		rcode  int
		answer []string // "owner type" of each answer record, in order
	}{
		{"example.com.", dns.TypeA, dns.RcodeSuccess, []string{"example.com. A"}},
		{"EXAMPLE.com.", dns.TypeA, dns.RcodeSuccess, []string{"EXAMPLE.com. A"}},
		{"example.com.", dns.TypeSPF, dns.RcodeSuccess, []string{"example.com. SPF"}},
		{"example.com.", dns.TypeMX, dns.RcodeSuccess, nil},
		{"nothing.example.com.", dns.TypeA, dns.RcodeNameError, nil},
		{"alias2.example.com.", dns.TypeA, dns.RcodeSuccess,
			[]string{"alias2.example.com. CNAME", "alias.example.com. CNAME", "example.com. A"}},
		{"alias.example.com.", dns.TypeMX, dns.RcodeSuccess, []string{"alias.example.com. CNAME"}},
		{"dangling.example.com.", dns.TypeA, dns.RcodeNameError, []string{"dangling.example.com. CNAME"}},
		{"loop1.example.com.", dns.TypeA, dns.RcodeSuccess,
			[]string{"loop1.example.com. CNAME", "loop2.example.com. CNAME"}},
		{"broken.example.com.", dns.TypeA, dns.RcodeServerFailure, nil},
		{"half.example.com.", dns.TypeA, dns.RcodeSuccess, []string{"half.example.com. A"}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%s", tt.name, dns.TypeToString[tt.qtype]), func(t *testing.T) {
			resp, err := ask(t, s, "udp", tt.name, tt.qtype, 0)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Rcode != tt.rcode {
				t.Errorf("rcode %s, want %s", dns.RcodeToString[resp.Rcode], dns.RcodeToString[tt.rcode])
			}
			if !resp.Authoritative {
				t.Error("AA not set")
			}
			var got []string
			for _, rr := range resp.Answer {
				got = append(got, rr.Header().Name+" "+dns.TypeToString[rr.Header().Rrtype])
			}
			if !slices.Equal(got, tt.answer) {
				t.Errorf("answer %q, want %q", got, tt.answer)
			}
		})
	}
}

func TestServerTimeout(t *testing.T) {
	s := StartServer(t, testZone(t))
	for _, tc := range []struct {
		name  string
		qtype uint16
	}{{"dead.example.com.", dns.TypeTXT}, {"half.example.com.", dns.TypeTXT}} {
		for _, network := range []string{"udp", "tcp"} {
			if _, err := ask(t, s, network, tc.name, tc.qtype, 0); err == nil {
				t.Errorf("%s %s over %s: got an answer, want none", tc.name, dns.TypeToString[tc.qtype], network)
			}
		}
	}
}

func TestServerTruncation(t *testing.T) {
	s := StartServer(t, testZone(t))
	// 40 A records need about 670 octets: too many for 512, fine for 1232.
	tests := []struct {
		network   string
		edns      uint16
		truncated bool
		n         int
	}{
		{"udp", 0, true, -1},
		{"udp", 1232, false, 40},
		{"tcp", 0, false, 40},
	}
	for _, tt := range tests {
		resp, err := ask(t, s, tt.network, "big.example.com.", dns.TypeA, tt.edns)
		if err != nil {
			t.Fatalf("%s edns %d: %v", tt.network, tt.edns, err)
		}
		if resp.Truncated != tt.truncated {
			t.Errorf("%s edns %d: TC=%v, want %v", tt.network, tt.edns, resp.Truncated, tt.truncated)
		}
		if tt.n >= 0 && len(resp.Answer) != tt.n {
			t.Errorf("%s edns %d: %d records, want %d", tt.network, tt.edns, len(resp.Answer), tt.n)
		}
	}

	s.SetTruncateUDP(true)
	s.ResetQueries()
	resp, err := ask(t, s, "udp", "example.com.", dns.TypeA, 1232)
	if err != nil || !resp.Truncated || len(resp.Answer) != 0 {
		t.Errorf("SetTruncateUDP: udp answer %v, %v; want empty with TC", resp, err)
	}
	resp, err = ask(t, s, "tcp", "example.com.", dns.TypeA, 1232)
	if err != nil || resp.Truncated || len(resp.Answer) != 1 {
		t.Errorf("SetTruncateUDP: tcp answer %v, %v; want one record", resp, err)
	}
	want := []Query{{"example.com.", dns.TypeA, "udp"}, {"example.com.", dns.TypeA, "tcp"}}
	if got := s.Queries(); !slices.Equal(got, want) {
		t.Errorf("Queries() = %v, want %v", got, want)
	}
}

func TestServerDelay(t *testing.T) {
	s := StartServer(t, testZone(t))
	s.SetDelay(150 * time.Millisecond)
	start := time.Now()
	if _, err := ask(t, s, "udp", "example.com.", dns.TypeA, 0); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("answered after %v, want at least 150ms", d)
	}
}

func TestTXTEscaping(t *testing.T) {
	strs := []string{"a\"b\\c", "\x00\x0d\n", "\xef\xbb\xbf\x80\xff", "", "plain text"}
	z := NewZone()
	z.AddTXT("raw.example.com", strs...)
	z.AddTXT("empty.example.com")
	s := StartServer(t, z)

	// Decode the wire form by hand: what a client gets must be the bytes
	// given, not their escaped text.
	resp, err := ask(t, s, "tcp", "raw.example.com.", dns.TypeTXT, 0)
	if err != nil || len(resp.Answer) != 1 {
		t.Fatalf("answer %v, %v", resp, err)
	}
	got, err := characterStrings(resp.Answer[0])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, strs) {
		t.Errorf("character-strings %q, want %q", got, strs)
	}

	resp, err = ask(t, s, "tcp", "empty.example.com.", dns.TypeTXT, 0)
	if err != nil || len(resp.Answer) != 1 {
		t.Fatalf("empty TXT: answer %v, %v", resp, err)
	}
	if got, err := characterStrings(resp.Answer[0]); err != nil || len(got) != 0 {
		t.Errorf("empty TXT: %q, %v; want no strings", got, err)
	}
}

func TestZoneMutation(t *testing.T) {
	z := testZone(t)
	s := StartServer(t, z)
	z.Remove("example.com")
	resp, err := ask(t, s, "udp", "example.com.", dns.TypeA, 0)
	if err != nil || resp.Rcode != dns.RcodeNameError {
		t.Errorf("after Remove: %v, %v; want NXDOMAIN", resp, err)
	}
	if err := z.Add("not a record"); err == nil {
		t.Error("Add accepted garbage")
	}
}

func TestMapResolver(t *testing.T) {
	z := testZone(t)
	z.AddTXT("multi.example.com", "v=spf1 ", "-all")
	z.AddTXT("multi.example.com", "\x00\"\\\xff")
	z.Add(`example.com. MX 20 b.example.com.`, `example.com. MX 10 a.example.com.`, `example.com. MX 20 c.example.com.`)
	z.Add(`1.2.0.192.in-addr.arpa. PTR host.example.com.`)
	z.Add(`1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. PTR v6.example.com.`)
	r := NewMapResolver(z)
	ctx := context.Background()

	txt, err := r.LookupTXT(ctx, "MULTI.example.com.")
	if want := []string{"v=spf1 -all", "\x00\"\\\xff"}; err != nil || !slices.Equal(txt, want) {
		t.Errorf("TXT = %q, %v; want %q", txt, err, want)
	}
	mx, err := r.LookupMX(ctx, "example.com")
	if want := []string{"a.example.com", "b.example.com", "c.example.com"}; err != nil || !slices.Equal(mx, want) {
		t.Errorf("MX = %q, %v; want %q", mx, err, want)
	}
	a, err := r.LookupA(ctx, "alias2.example.com")
	if want := []netip.Addr{netip.MustParseAddr("192.0.2.1")}; err != nil || !slices.Equal(a, want) {
		t.Errorf("A via CNAME = %v, %v; want %v", a, err, want)
	}
	for addr, want := range map[string]string{
		"192.0.2.1":        "host.example.com",
		"::ffff:192.0.2.1": "host.example.com",
		"2001:db8::1":      "v6.example.com",
	} {
		ptr, err := r.LookupPTR(ctx, netip.MustParseAddr(addr))
		if err != nil || !slices.Equal(ptr, []string{want}) {
			t.Errorf("PTR %s = %q, %v; want %q", addr, ptr, err, want)
		}
	}

	failures := []struct {
		name   string
		lookup func() error
		want   error // ErrNXDomain, ErrNoData, or nil for a temporary error
	}{
		{"NXDOMAIN", func() error { _, err := r.LookupA(ctx, "nothing.example.com"); return err }, spf.ErrNXDomain},
		{"NODATA", func() error { _, err := r.LookupAAAA(ctx, "alias.example.com"); return err }, spf.ErrNoData},
		{"dangling CNAME", func() error { _, err := r.LookupA(ctx, "dangling.example.com"); return err }, spf.ErrNXDomain},
		{"invalid name", func() error { _, err := r.LookupTXT(ctx, "a..example.com"); return err }, spf.ErrNXDomain},
		{"long label", func() error { _, err := r.LookupTXT(ctx, strings.Repeat("x", 64)+".com"); return err }, spf.ErrNXDomain},
		{"loop", func() error { _, err := r.LookupA(ctx, "loop1.example.com"); return err }, nil},
		{"timeout", func() error { _, err := r.LookupTXT(ctx, "dead.example.com"); return err }, nil},
		{"timeout, other type", func() error { _, err := r.LookupTXT(ctx, "half.example.com"); return err }, nil},
		{"SERVFAIL", func() error { _, err := r.LookupA(ctx, "broken.example.com"); return err }, nil},
	}
	for _, f := range failures {
		err := f.lookup()
		var de *spf.DNSError
		if !errors.As(err, &de) {
			t.Errorf("%s: error %v is not a *spf.DNSError", f.name, err)
			continue
		}
		if f.want != nil && !errors.Is(err, f.want) {
			t.Errorf("%s: error %v, want %v", f.name, err, f.want)
		}
		if f.want == nil && spf.IsNotFound(err) {
			t.Errorf("%s: error %v says not found, want a temporary error", f.name, err)
		}
	}
	// TXT, MX and A, three PTRs, and the failures.
	if n, want := len(r.Queries()), 3+3+len(failures); n != want {
		t.Errorf("%d lookups recorded, want %d", n, want)
	}
}

// TestZoneWildcard checks that "*.PARENT" answers the names under PARENT
// that have no records of their own, under their own name, and nothing
// else: tests serve zones that answer every name with it.
func TestZoneWildcard(t *testing.T) {
	z := NewZone()
	if err := z.Add(`*.y.example. A 192.0.2.5`, `own.y.example. TXT "mine"`, `y.example. TXT "parent"`); err != nil {
		t.Fatal(err)
	}
	r := NewMapResolver(z)
	tests := []struct {
		name   string
		want   []netip.Addr
		notFnd bool // NXDOMAIN or NODATA
	}{
		{"random-part.y.example", []netip.Addr{netip.MustParseAddr("192.0.2.5")}, false},
		{"Other.Y.Example", []netip.Addr{netip.MustParseAddr("192.0.2.5")}, false},
		// A name with records of its own is not answered by the wildcard.
		{"own.y.example", nil, true},
		// Nor is the parent, nor a name two labels below it.
		{"y.example", nil, true},
		{"a.b.y.example", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.LookupA(context.Background(), tt.name)
			if tt.notFnd {
				if !spf.IsNotFound(err) {
					t.Errorf("got %v, %v; want no records", got, err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}
