package spf_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/goleak"

	"github.com/spf-milter/spf-milter/internal/dnstest"
	"github.com/spf-milter/spf-milter/spf"
)

// Faults from DNS: a whole check against a server that misbehaves on
// purpose. Whatever the server does, the check must give the result
// RFC 7208 gives (temperror when the answer cannot be had, §4.4 and
// §5.2; permerror past the limits of §4.6.4 or for several records, §4.5),
// end by its deadline, send no more queries than the lookup limits allow,
// counted at the server, and leave no goroutine behind.

// faultClient is the client IP of every fault check.
var faultClient = netip.MustParseAddr("192.0.2.1")

// faultSlack is added to the time by which a check must have ended: the
// bound is about behaviour (the check does not wait for what it must not
// wait for), not speed, and the machine may be busy.
const faultSlack = 2 * time.Second

// shortQuery is the per-query timeout of the cases where queries time out.
const shortQuery = 300 * time.Millisecond

// faultRecords is the zone that every fault check is served from.
func faultRecords() []string {
	rrs := []string{
		`ok.test. TXT "v=spf1 ip4:192.0.2.1 -all"`,
		`loopa.test. CNAME loopb.test.`,
		`loopb.test. CNAME loopa.test.`,
		`inctemp.test. TXT "v=spf1 include:i1.test include:i2.test include:srvfail.test include:i4.test -all"`,
		`srvfail.test. TXT "v=spf1 +all"`,
		`mx.test. TXT "v=spf1 mx -all"`,
	}
	for i := 1; i <= 10; i++ {
		rrs = append(rrs, fmt.Sprintf(`h%d.mx.test. A 198.51.100.%d`, i, i))
	}
	for i := 1; i <= 5; i++ {
		rrs = append(rrs, fmt.Sprintf(`mx.test. MX %d h%d.mx.test.`, i*10, i))
	}
	// c0 -> c1 -> ... -> c12, which holds the record: more CNAMEs than a
	// lookup follows.
	for i := range 12 {
		rrs = append(rrs, fmt.Sprintf(`c%d.chain.test. CNAME c%d.chain.test.`, i, i+1))
	}
	rrs = append(rrs, `c12.chain.test. TXT "v=spf1 ip4:192.0.2.1 -all"`)
	// Targets of include: that do not match the client.
	for i := 1; i <= 60; i++ {
		rrs = append(rrs, fmt.Sprintf(`i%d.test. TXT "v=spf1 -all"`, i))
	}
	rrs = append(rrs,
		`inc50.test. TXT "v=spf1`+faultIncludes("i", 1, 50)+` +all"`,
		// Its first include spends the nine lookups left; the other 49
		// are never reached, but some are fetched ahead before that is
		// known.
		`inc50nest.test. TXT "v=spf1 include:nest9.test`+faultIncludes("i", 2, 50)+` +all"`,
		`nest9.test. TXT "v=spf1`+faultIncludes("i", 51, 59)+` -all"`,
		`slowsum.test. TXT "v=spf1`+faultTerms("a:h", ".mx.test", 1, 10)+` -all"`,
	)
	return rrs
}

// faultIncludes returns " include:PFROM.test ... include:PTO.test".
func faultIncludes(prefix string, from, to int) string {
	return faultTerms("include:"+prefix, ".test", from, to)
}

func faultTerms(prefix, suffix string, from, to int) string {
	var b strings.Builder
	for i := from; i <= to; i++ {
		fmt.Fprintf(&b, " %s%d%s", prefix, i, suffix)
	}
	return b.String()
}

// addManyTXT adds n TXT records at name that are not SPF records, then
// the given SPF records. Each of the n holds one character-string of size
// octets.
func addManyTXT(z *dnstest.Zone, name string, n, size int, spfRecords ...string) {
	for i := range n {
		s := fmt.Sprintf("filler %04d ", i)
		z.AddTXT(name, s+strings.Repeat("x", max(size-len(s), 0)))
	}
	for _, r := range spfRecords {
		z.AddTXT(name, r)
	}
}

// answerSize returns the size in octets of the full answer to a TXT query
// for name, as the server would pack it before any truncation.
func answerSize(t *testing.T, z *dnstest.Zone, name string) int {
	t.Helper()
	r := dnstest.NewMapResolver(z)
	txts, err := r.LookupTXT(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	m := new(dns.Msg)
	m.SetQuestion(name+".", dns.TypeTXT)
	m.Response = true
	m.SetEdns0(1232, false)
	for _, s := range txts {
		m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: name + ".", Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 300}, Txt: []string{s}})
	}
	m.Compress = true
	return m.Len()
}

// faultCase is one fault, with what the check must do against it.
type faultCase struct {
	name   string
	domain string // of the sender
	// setup adds to the zone and sets the server's behaviours.
	setup func(t *testing.T, z *dnstest.Zone, s *dnstest.FaultyServer)
	// takeover puts a second server, answering correctly from the same
	// zone, after the faulty one in DNSOptions.Servers.
	takeover bool
	// queryTimeout is DNSOptions.Timeout, checkTimeout Checker.Timeout;
	// 0 means 5s for either. A long per-query timeout keeps the UDP
	// resends (at a third of it) out of the counts, however busy the
	// machine: cases about timeouts set shortQuery.
	queryTimeout, checkTimeout time.Duration
	// ends is when the check must have ended, before faultSlack; 0 means
	// checkTimeout. Cases whose queries time out one by one say how long
	// that takes at most.
	ends    time.Duration
	want    spf.Result
	problem string // a part of Outcome.Problem
	// The queries the faulty server may read: at least min (the fault was
	// met), at most max; maxCon, if set, is the bound when lookups run
	// concurrently. maxSecond bounds those of the takeover server.
	min, max, maxCon int
	maxSecond        int
}

// Every count below is of queries read by the server: a UDP datagram (a
// query sent again after a third of the per-query timeout counts again) or
// a message read on a TCP connection.
var faultCases = []faultCase{
	{
		name: "no answer over UDP", domain: "ok.test",
		setup:        behave(dnstest.Behaviour{UDP: dnstest.Silent}),
		queryTimeout: shortQuery, ends: shortQuery, want: spf.TempError, problem: "timeout",
		// One lookup, sent three times.
		min: 1, max: 3,
	},
	{
		name: "TC over UDP, TCP accepted then silent", domain: "ok.test",
		setup:        behave(dnstest.Behaviour{UDP: dnstest.Truncated, TCP: dnstest.Silent}),
		queryTimeout: shortQuery, ends: shortQuery, want: spf.TempError, problem: "timeout",
		min: 2, max: 2,
	},
	{
		name: "SERVFAIL", domain: "ok.test",
		setup: behave(dnstest.Behaviour{UDP: dnstest.ServFail}),
		want:  spf.TempError, problem: "SERVFAIL", min: 1, max: 1,
	},
	{
		name: "REFUSED", domain: "ok.test",
		setup: behave(dnstest.Behaviour{UDP: dnstest.Refused}),
		want:  spf.TempError, problem: "REFUSED", min: 1, max: 1,
	},
	{
		name: "TC over UDP, TCP connection refused", domain: "ok.test",
		setup: func(t *testing.T, z *dnstest.Zone, s *dnstest.FaultyServer) {
			s.SetBehaviour(dnstest.Behaviour{UDP: dnstest.Truncated})
			s.RefuseTCP()
		},
		want: spf.TempError, problem: "network error", min: 1, max: 1,
	},
	{
		name: "TC over UDP, TCP accepted then closed", domain: "ok.test",
		setup: behave(dnstest.Behaviour{UDP: dnstest.Truncated, TCP: dnstest.CloseConn}),
		want:  spf.TempError, problem: "network error", min: 2, max: 2,
	},
	{
		// Anyone who can reach the resolver's port can send a datagram
		// that does not unpack: it is passed over like one with a wrong
		// ID, and the query times out, sent again meanwhile.
		name: "garbage over UDP", domain: "ok.test",
		setup:        behave(dnstest.Behaviour{UDP: dnstest.Garbage}),
		queryTimeout: shortQuery, ends: shortQuery, want: spf.TempError, problem: "timeout",
		min: 1, max: 3,
	},
	{
		// Junk first does not make the check temperror: the answer that
		// follows is taken, as a stub resolver would, and the query is
		// not sent again.
		name: "junk then the answer over UDP", domain: "ok.test",
		setup: behave(dnstest.Behaviour{UDP: dnstest.JunkThenAnswer}),
		want:  spf.Pass, min: 1, max: 1,
	},
	{
		name: "garbage with the query's ID then the answer", domain: "ok.test",
		setup: behave(dnstest.Behaviour{UDP: dnstest.GarbageThenAnswer}),
		want:  spf.Pass, min: 1, max: 1,
	},
	{
		name: "answer for another question then the answer", domain: "ok.test",
		setup: behave(dnstest.Behaviour{UDP: dnstest.WrongQuestionThenAnswer}),
		want:  spf.Pass, min: 1, max: 1,
	},
	{
		// Every lookup of the check meets junk first: the record, the MX
		// and the A of all five hosts, each read once. None matches.
		name: "junk then the answer, every lookup", domain: "mx.test",
		setup: behave(dnstest.Behaviour{UDP: dnstest.JunkThenAnswer}),
		want:  spf.Fail, min: 7, max: 7,
	},
	{
		name: "garbage over TCP", domain: "ok.test",
		setup: behave(dnstest.Behaviour{UDP: dnstest.Truncated, TCP: dnstest.Garbage}),
		want:  spf.TempError, problem: "malformed answer", min: 2, max: 2,
	},
	{
		// A reply with another ID may be a late answer to an earlier
		// query: it is passed over, and the query times out.
		name: "wrong ID over UDP", domain: "ok.test",
		setup:        behave(dnstest.Behaviour{UDP: dnstest.WrongID}),
		queryTimeout: shortQuery, ends: shortQuery, want: spf.TempError, problem: "timeout",
		min: 1, max: 3,
	},
	{
		name: "wrong ID over TCP", domain: "ok.test",
		setup: behave(dnstest.Behaviour{UDP: dnstest.Truncated, TCP: dnstest.WrongID}),
		want:  spf.TempError, problem: "answer for another query", min: 2, max: 2,
	},
	{
		// An answer for another name is no answer to ours over UDP:
		// passed over, and the query times out.
		name: "wrong question over UDP", domain: "ok.test",
		setup:        behave(dnstest.Behaviour{UDP: dnstest.WrongQuestion}),
		queryTimeout: shortQuery, ends: shortQuery, want: spf.TempError, problem: "timeout",
		min: 1, max: 3,
	},
	{
		// Over TCP the stream carries nothing else: the server is wrong.
		name: "wrong question over TCP", domain: "ok.test",
		setup: behave(dnstest.Behaviour{UDP: dnstest.Truncated, TCP: dnstest.WrongQuestion}),
		want:  spf.TempError, problem: "another question", min: 2, max: 2,
	},
	{
		// The resolver's UDP socket is connected: the kernel drops
		// datagrams from anywhere but the server's address and port.
		name: "answer from the wrong port", domain: "ok.test",
		setup:        behave(dnstest.Behaviour{UDP: dnstest.WrongPort}),
		queryTimeout: shortQuery, ends: shortQuery, want: spf.TempError, problem: "timeout",
		min: 1, max: 3,
	},
	{
		name: "answer from the wrong address", domain: "ok.test",
		setup:        behave(dnstest.Behaviour{UDP: dnstest.WrongAddr}),
		queryTimeout: shortQuery, ends: shortQuery, want: spf.TempError, problem: "timeout",
		min: 1, max: 3,
	},
	{
		// About 80 KB of TXT records, the SPF record last: over TCP the
		// answer is cut at 65535 octets with TC set, without it. The
		// records that came are not all there are, so no result can be
		// drawn from them (taking them would give none, wrongly).
		name: "TXT over 64 KB: TCP answer cut, TC set", domain: "huge.test",
		setup: func(t *testing.T, z *dnstest.Zone, s *dnstest.FaultyServer) {
			addManyTXT(z, "huge.test", 300, 250, "v=spf1 ip4:192.0.2.1 -all")
		},
		want: spf.TempError, problem: "truncated", min: 2, max: 2,
	},
	{
		// A server that does not check sizes: the length prefix wraps
		// around, and the client reads a message cut mid-record.
		name: "TXT over 64 KB: TCP length prefix wraps", domain: "huge.test",
		setup: func(t *testing.T, z *dnstest.Zone, s *dnstest.FaultyServer) {
			addManyTXT(z, "huge.test", 300, 250, "v=spf1 ip4:192.0.2.1 -all")
			s.SetBehaviour(dnstest.Behaviour{TCP: dnstest.LengthWrap})
		},
		want: spf.TempError, problem: "malformed answer", min: 2, max: 2,
	},
	{
		name: "TCP length prefix over what follows, then close", domain: "ok.test",
		setup: behave(dnstest.Behaviour{UDP: dnstest.Truncated, TCP: dnstest.ShortLength}),
		want:  spf.TempError, problem: "network error", min: 2, max: 2,
	},
	{
		// The largest answer DNS can carry is read and evaluated.
		name: "TXT answer of almost 64 KB", domain: "big.test",
		setup: func(t *testing.T, z *dnstest.Zone, s *dnstest.FaultyServer) {
			addManyTXT(z, "big.test", 240, 255, "v=spf1 ip4:192.0.2.1 -all")
			if n := answerSize(t, z, "big.test"); n < 64000 || n > dns.MaxMsgSize {
				t.Fatalf("answer of %d octets, want just under 65535", n)
			}
		},
		want: spf.Pass, min: 2, max: 2,
	},
	{
		name: "CNAME loop, followed by the server", domain: "loopa.test",
		want: spf.TempError, problem: "CNAME loop", min: 1, max: 1,
	},
	{
		name: "CNAME loop, one CNAME per answer", domain: "loopa.test",
		setup: func(t *testing.T, z *dnstest.Zone, s *dnstest.FaultyServer) { s.SetCNAMEHops(1) },
		want:  spf.TempError, problem: "CNAME loop", min: 2, max: 2,
	},
	{
		// The server follows 8 CNAMEs per answer: two queries.
		name: "CNAME chain of 12, followed by the server", domain: "c0.chain.test",
		want: spf.TempError, problem: "CNAME chain longer than 10", min: 2, max: 2,
	},
	{
		// The resolver asks for each target: the 11th answer holds the
		// CNAME past the limit.
		name: "CNAME chain of 12, one CNAME per answer", domain: "c0.chain.test",
		setup: func(t *testing.T, z *dnstest.Zone, s *dnstest.FaultyServer) { s.SetCNAMEHops(1) },
		want:  spf.TempError, problem: "CNAME chain longer than 10", min: 11, max: 11,
	},
	{
		// Over 1232 octets: UDP truncated, then TCP.
		name: "100 TXT records, one SPF", domain: "many.test",
		setup: func(t *testing.T, z *dnstest.Zone, s *dnstest.FaultyServer) {
			addManyTXT(z, "many.test", 99, 20, "v=spf1 ip4:192.0.2.1 -all")
		},
		want: spf.Pass, min: 2, max: 2,
	},
	{
		name: "100 TXT records, none SPF", domain: "many.test",
		setup: func(t *testing.T, z *dnstest.Zone, s *dnstest.FaultyServer) {
			addManyTXT(z, "many.test", 100, 20)
		},
		want: spf.None, min: 2, max: 2,
	},
	{
		name: "100 TXT records, two SPF", domain: "many.test",
		setup: func(t *testing.T, z *dnstest.Zone, s *dnstest.FaultyServer) {
			addManyTXT(z, "many.test", 98, 20, "v=spf1 ip4:192.0.2.1 -all", "v=spf1 -all")
		},
		want: spf.PermError, problem: "2 SPF records", min: 2, max: 2,
	},
	{
		// The record, then the targets of the ten includes the limit
		// allows. Fetching ahead stays within them (concurrent.go: only
		// targets a sequential check could reach are fetched).
		name: "50 include: terms", domain: "inc50.test",
		want: spf.PermError, problem: "more than 10 DNS-querying terms", min: 11, max: 11,
	},
	{
		// Sequential: the record, nest9 and its nine includes. Fetched
		// ahead before nest9's record shows it spends the limit: the
		// first ten includes of the record, nine of them in vain. The
		// bound of concurrent.go: what a sequential check sends (11)
		// plus at most maxPrefetches (10) records fetched ahead unused.
		name: "50 include: terms, the first spends the limit", domain: "inc50nest.test",
		want: spf.PermError, problem: "more than 10 DNS-querying terms", min: 11, max: 11, maxCon: 21,
	},
	{
		// A failing include target ends the check. Concurrently, the
		// target after it (i4) has been fetched ahead, and never answers:
		// the check must neither wait for it nor leave its lookup
		// running, though the per-query timeout is long.
		name: "SERVFAIL at an include target, the next one silent", domain: "inctemp.test",
		setup: func(t *testing.T, z *dnstest.Zone, s *dnstest.FaultyServer) {
			s.SetBehaviourAt("srvfail.test", dnstest.Behaviour{UDP: dnstest.ServFail})
			s.SetBehaviourAt("i4.test", dnstest.Behaviour{UDP: dnstest.Silent})
		},
		queryTimeout: 10 * time.Second, checkTimeout: 20 * time.Second, ends: 100 * time.Millisecond,
		want: spf.TempError, problem: "SERVFAIL", min: 4, max: 4, maxCon: 5,
	},
	{
		// The third MX host never answers; its A lookup, sent three
		// times, decides. Concurrently the other hosts are asked too.
		name: "no answer for one MX host", domain: "mx.test",
		setup: func(t *testing.T, z *dnstest.Zone, s *dnstest.FaultyServer) {
			s.SetBehaviourAt("h3.mx.test", dnstest.Behaviour{UDP: dnstest.Silent})
		},
		// Longer than shortQuery: the other lookups are answered, and
		// must not be resent.
		queryTimeout: 600 * time.Millisecond, ends: 600 * time.Millisecond, want: spf.TempError, problem: "timeout",
		// TXT, MX, A of h1 and h2, A of h3 three times; h4 and h5 once
		// each when asked concurrently.
		min: 5, max: 7, maxCon: 9,
	},
	{
		// Every answer comes after the per-query timeout: the lookup gives
		// up at its timeout, long before the check's deadline.
		name: "slow answers, past the per-query timeout", domain: "ok.test",
		setup:        behave(dnstest.Behaviour{Delay: 2 * time.Second}),
		queryTimeout: shortQuery, ends: shortQuery, want: spf.TempError, problem: "timeout",
		min: 1, max: 3,
	},
	{
		// The check's deadline comes long before the per-query timeout
		// and its first resend.
		name: "slow answers, past the check's deadline", domain: "ok.test",
		setup:        behave(dnstest.Behaviour{Delay: time.Minute}),
		queryTimeout: 30 * time.Second, checkTimeout: 500 * time.Millisecond,
		want: spf.TempError, problem: "did not finish within its deadline",
		min: 1, max: 3,
	},
	{
		// Each answer within the per-query timeout, but ten lookups one
		// after the other take longer than the check may.
		name: "slow answers that add up past the check's deadline", domain: "slowsum.test",
		setup:        behave(dnstest.Behaviour{Delay: 150 * time.Millisecond}),
		queryTimeout: time.Second, checkTimeout: 700 * time.Millisecond,
		want: spf.TempError, problem: "did not finish within its deadline",
		// At most the record and ten A lookups, each sent at most three
		// times; in practice about five queries.
		min: 2, max: 33,
	},
	{
		name: "SERVFAIL, second server takes over", domain: "ok.test", takeover: true,
		setup: behave(dnstest.Behaviour{UDP: dnstest.ServFail}),
		want:  spf.Pass, min: 1, max: 1, maxSecond: 1,
	},
	{
		name: "no answer, second server takes over", domain: "ok.test", takeover: true,
		setup:        behave(dnstest.Behaviour{UDP: dnstest.Silent}),
		queryTimeout: 600 * time.Millisecond, ends: 600 * time.Millisecond, want: spf.Pass, min: 1, max: 3, maxSecond: 1,
	},
	{
		name: "garbage over TCP, second server takes over", domain: "mx.test", takeover: true,
		setup: behave(dnstest.Behaviour{UDP: dnstest.Truncated, TCP: dnstest.Garbage}),
		// The record, the MX and the A of all five hosts: seven lookups,
		// each failing once at the first server (over UDP, then TCP) and
		// answered by the second. None of the hosts matches.
		want: spf.Fail, min: 14, max: 14, maxSecond: 7,
	},
}

// behave returns a setup that gives the server b for every name.
func behave(b dnstest.Behaviour) func(*testing.T, *dnstest.Zone, *dnstest.FaultyServer) {
	return func(t *testing.T, z *dnstest.Zone, s *dnstest.FaultyServer) { s.SetBehaviour(b) }
}

// faultRun is what one check against a fault gave.
type faultRun struct {
	result         spf.Result
	took           time.Duration
	queries        int // at the faulty server
	second         int // at the takeover server
	sequential     bool
	cache          bool
	problem, trace string
}

// runFault runs one check of tc against a fresh server and resolver, and
// checks that no goroutine outlives it.
func runFault(t *testing.T, tc faultCase, cache, sequential bool) faultRun {
	t.Helper()
	// Everything alive now is someone else's: the parked parallel tests,
	// goroutines of earlier tests on their way out.
	leaks := goleak.IgnoreCurrent()

	z := dnstest.NewZone()
	if err := z.Add(faultRecords()...); err != nil {
		t.Fatal(err)
	}
	s := dnstest.StartFaultyServer(t, z)
	servers := []string{s.Addr()}
	var second *dnstest.FaultyServer
	if tc.takeover {
		second = dnstest.StartFaultyServer(t, z)
		servers = append(servers, second.Addr())
	}
	if tc.setup != nil {
		tc.setup(t, z, s)
	}
	qt, ct := cmpOr(tc.queryTimeout, 5*time.Second), cmpOr(tc.checkTimeout, 5*time.Second)
	opts := spf.DNSOptions{Servers: servers, Timeout: qt}
	if cache {
		opts.CacheSize = 1000
	}
	r, err := spf.NewDNSResolver(opts)
	if err != nil {
		t.Fatal(err)
	}
	c := &spf.Checker{Resolver: r, Receiver: "mx.example.net", Timeout: ct, Sequential: sequential}

	start := time.Now()
	o := c.CheckMailFrom(context.Background(), faultClient, "joe@"+tc.domain, "mail.example")
	run := faultRun{
		result: o.Result, took: time.Since(start), queries: len(s.Queries()),
		sequential: sequential, cache: cache, problem: o.Problem, trace: trace(o),
	}
	if second != nil {
		run.second = len(second.Queries())
		second.Close()
	}
	s.Close()
	goleak.VerifyNone(t, leaks)
	return run
}

func cmpOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// TestDNSFaults runs every fault with the resolver's cache on and off, and
// lookups sequential and concurrent.
func TestDNSFaults(t *testing.T) {
	var report []string
	for _, tc := range faultCases {
		t.Run(tc.name, func(t *testing.T) {
			var runs []faultRun
			for _, cache := range []bool{false, true} {
				for _, sequential := range []bool{true, false} {
					t.Run(fmt.Sprintf("cache=%v,sequential=%v", cache, sequential), func(t *testing.T) {
						run := runFault(t, tc, cache, sequential)
						runs = append(runs, run)
						checkFaultRun(t, tc, run)
					})
				}
			}
			report = append(report, faultReport(tc, runs))
		})
	}
	t.Logf("fault | result | took (max) | queries at the server, cache off,on (sequential / concurrent; second server) | problem\n%s", strings.Join(report, "\n"))
}

func checkFaultRun(t *testing.T, tc faultCase, run faultRun) {
	t.Helper()
	if run.result != tc.want || !strings.Contains(run.problem, tc.problem) {
		t.Errorf("%s (%q), want %s with a problem saying %q\n%s", run.result, run.problem, tc.want, tc.problem, run.trace)
	}
	ends := cmpOr(tc.ends, cmpOr(tc.checkTimeout, 5*time.Second))
	if run.took > ends+faultSlack {
		t.Errorf("the check took %v, want it ended by %v (+ %v)", run.took, ends, faultSlack)
	}
	maxQ := tc.max
	if !run.sequential && tc.maxCon > 0 {
		maxQ = tc.maxCon
	}
	if run.queries < tc.min || run.queries > maxQ {
		t.Errorf("the server read %d queries, want %d to %d\n%s", run.queries, tc.min, maxQ, run.trace)
	}
	if tc.takeover && (run.second < 1 || run.second > tc.maxSecond) {
		t.Errorf("the second server read %d queries, want 1 to %d", run.second, tc.maxSecond)
	}
}

// faultReport sums up the runs of one case in a line of the table the
// test logs.
func faultReport(tc faultCase, runs []faultRun) string {
	var took time.Duration
	results := map[spf.Result]bool{}
	var seq, con, second []string
	for _, r := range runs {
		took = max(took, r.took)
		results[r.result] = true
		n := fmt.Sprint(r.queries)
		if r.sequential {
			seq = append(seq, n)
		} else {
			con = append(con, n)
		}
		if tc.takeover {
			second = append(second, fmt.Sprint(r.second))
		}
	}
	var res []string
	for r := range results {
		res = append(res, string(r))
	}
	line := fmt.Sprintf("%s | %s | %v | %s / %s", tc.name, strings.Join(res, ","), took.Round(time.Millisecond),
		strings.Join(seq, ","), strings.Join(con, ","))
	if tc.takeover {
		line += "; " + strings.Join(second, ",")
	}
	return line + " | " + runs[0].problem
}

// TestDNSResolverBrokenAnswers checks, one lookup at a time, how the
// resolver names what a broken server sent: in the error that becomes a
// temperror's problem text, and in the outcomes its observer counts.
func TestDNSResolverBrokenAnswers(t *testing.T) {
	z := dnstest.NewZone()
	z.AddTXT("ok.test", "v=spf1 -all")
	addManyTXT(z, "huge.test", 300, 250, "v=spf1 -all")
	tests := []struct {
		name   string
		ask    string
		b      dnstest.Behaviour
		noTCP  bool // connections to the server's TCP port are refused
		text   string
		events map[string]int
	}{
		{"answer over 64 KB, TC over TCP", "huge.test", dnstest.Behaviour{}, false,
			"answer truncated over TCP", map[string]int{"TXT noerror": 1, "TXT bad_answer": 1}},
		{"TC over UDP and TCP", "ok.test", dnstest.Behaviour{UDP: dnstest.Truncated, TCP: dnstest.Truncated}, false,
			"answer truncated over TCP", map[string]int{"TXT noerror": 1, "TXT bad_answer": 1}},
		// Passed over, not taken for the answer: the query times out.
		{"garbage over UDP", "ok.test", dnstest.Behaviour{UDP: dnstest.Garbage}, false,
			"no answer (timeout)", map[string]int{"TXT timeout": 1}},
		{"garbage over TCP", "ok.test", dnstest.Behaviour{UDP: dnstest.Truncated, TCP: dnstest.Garbage}, false,
			"malformed answer", map[string]int{"TXT noerror": 1, "TXT bad_answer": 1}},
		{"length prefix wraps", "huge.test", dnstest.Behaviour{TCP: dnstest.LengthWrap}, false,
			"malformed answer", map[string]int{"TXT noerror": 1, "TXT bad_answer": 1}},
		{"wrong ID over TCP", "ok.test", dnstest.Behaviour{UDP: dnstest.Truncated, TCP: dnstest.WrongID}, false,
			"answer for another query", map[string]int{"TXT noerror": 1, "TXT bad_answer": 1}},
		{"length prefix over what follows", "ok.test", dnstest.Behaviour{UDP: dnstest.Truncated, TCP: dnstest.ShortLength}, false,
			"network error", map[string]int{"TXT noerror": 1, "TXT network_error": 1}},
		{"TCP closed", "ok.test", dnstest.Behaviour{UDP: dnstest.Truncated, TCP: dnstest.CloseConn}, false,
			"network error", map[string]int{"TXT noerror": 1, "TXT network_error": 1}},
		{"TCP refused", "ok.test", dnstest.Behaviour{UDP: dnstest.Truncated}, true,
			"network error", map[string]int{"TXT noerror": 1, "TXT network_error": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := dnstest.StartFaultyServer(t, z)
			s.SetBehaviour(tt.b)
			if tt.noTCP {
				s.RefuseTCP()
			}
			obs := newCountingObserver()
			r := cachedResolver(t, 100, nil, obs, time.Second, s.Addr())
			got, err := r.LookupTXT(context.Background(), tt.ask)
			var se *spf.ServerError
			if !errors.As(err, &se) || se.Error() != tt.text {
				t.Errorf("got %d records, %v; want a ServerError saying %q", len(got), err, tt.text)
			}
			if queries, _, _ := obs.snapshot(); !maps.Equal(queries, tt.events) {
				t.Errorf("query events %v, want %v", queries, tt.events)
			}
			// A failure is not kept: the next lookup asks again.
			s.ResetQueries()
			_, _ = r.LookupTXT(context.Background(), tt.ask)
			if len(s.Queries()) == 0 {
				t.Error("the failure was answered from the cache")
			}
		})
	}
}
