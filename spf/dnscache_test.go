package spf_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/spf-milter/spf-milter/internal/dnstest"
	"github.com/spf-milter/spf-milter/spf"
)

// fakeClock is the cache's clock in tests: it moves only when told to.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// countingObserver counts a resolver's events, as metrics would.
type countingObserver struct {
	mu      sync.Mutex
	queries map[string]int // by "TYPE outcome"
	cache   map[string]int // by "TYPE hit" or "TYPE miss"
	bad     []string       // events that make no sense
}

func newCountingObserver() *countingObserver {
	return &countingObserver{queries: map[string]int{}, cache: map[string]int{}}
}

func (o *countingObserver) DNSQuery(qtype, outcome string, elapsed time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.queries[qtype+" "+outcome]++
	if elapsed <= 0 {
		o.bad = append(o.bad, fmt.Sprintf("%s %s took %v", qtype, outcome, elapsed))
	}
}

func (o *countingObserver) DNSCache(qtype string, hit bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if hit {
		o.cache[qtype+" hit"]++
	} else {
		o.cache[qtype+" miss"]++
	}
}

// snapshot returns copies of the counts so far.
func (o *countingObserver) snapshot() (queries, cache map[string]int, bad []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return maps.Clone(o.queries), maps.Clone(o.cache), slices.Clone(o.bad)
}

// cachedResolver returns a resolver with a cache of size entries read with
// clock (nil: the real clock) and an observer, if given.
func cachedResolver(t testing.TB, size int, clock *fakeClock, obs spf.DNSObserver, timeout time.Duration, servers ...string) *spf.DNSResolver {
	t.Helper()
	r, err := spf.NewDNSResolver(spf.DNSOptions{Servers: servers, Timeout: timeout, CacheSize: size, Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	if clock != nil {
		spf.SetDNSClock(r, clock.Now)
	}
	return r
}

// queriesFor counts the queries srv got for name, whatever its case.
func queriesFor(srv *dnstest.Server, name string) int {
	n := 0
	for _, q := range srv.Queries() {
		if strings.EqualFold(q.Name, dns.Fqdn(name)) {
			n++
		}
	}
	return n
}

// cacheTestZone has answers with known TTLs, negative answers under SOAs
// with known TTLs and MINIMUMs, and names under no SOA at all.
func cacheTestZone(t *testing.T) *dnstest.Zone {
	t.Helper()
	z := dnstest.NewZone()
	if err := z.Add(
		`example.com. 3600 SOA ns.example.com. hostmaster.example.com. 1 7200 3600 1209600 60`,
		`pos.example.com. 300 A 192.0.2.1`,
		`mixed.example.com. 300 A 192.0.2.1`,
		`mixed.example.com. 100 A 192.0.2.2`,
		`alias.example.com. 50 CNAME pos.example.com.`,
		`dangling.example.com. 40 CNAME gone.example.com.`,
		`zero.example.com. 0 A 192.0.2.3`,
		`long.example.com. 172800 A 192.0.2.4`,
		`example.org. 30 SOA ns.example.org. hostmaster.example.org. 1 7200 3600 1209600 600`,
		`a.example.org. 300 A 192.0.2.5`,
		`a.example.net. 300 A 192.0.2.6`,
	); err != nil {
		t.Fatal(err)
	}
	z.Rcode("servfail.example.com", dns.RcodeServerFailure)
	z.Rcode("refused.example.com", dns.RcodeRefused)
	z.Timeout("dead.example.com")
	return z
}

// TestDNSTestServesSOA checks what the cache tests rely on: the test
// server puts the SOA of the enclosing zone in negative answers only.
func TestDNSTestServesSOA(t *testing.T) {
	t.Parallel()
	srv := dnstest.StartServer(t, cacheTestZone(t))
	tests := []struct {
		name    string
		qtype   uint16
		rcode   int
		soaName string // "" for no SOA in the authority section
	}{
		{"nothing.example.com.", dns.TypeA, dns.RcodeNameError, "example.com."},
		{"pos.example.com.", dns.TypeTXT, dns.RcodeSuccess, "example.com."},
		{"dangling.example.com.", dns.TypeA, dns.RcodeNameError, "example.com."},
		{"a.example.org.", dns.TypeTXT, dns.RcodeSuccess, "example.org."},
		{"pos.example.com.", dns.TypeA, dns.RcodeSuccess, ""},
		{"nothing.example.net.", dns.TypeA, dns.RcodeNameError, ""},
		{"a.example.net.", dns.TypeTXT, dns.RcodeSuccess, ""},
	}
	c := &dns.Client{Timeout: 2 * time.Second}
	for _, tt := range tests {
		m := new(dns.Msg)
		m.SetQuestion(tt.name, tt.qtype)
		resp, _, err := c.ExchangeContext(t.Context(), m, srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		var soas []string
		for _, rr := range resp.Ns {
			if rr.Header().Rrtype == dns.TypeSOA {
				soas = append(soas, rr.Header().Name)
			}
		}
		want := []string{tt.soaName}
		if tt.soaName == "" {
			want = nil
		}
		if resp.Rcode != tt.rcode || !slices.Equal(soas, want) {
			t.Errorf("%s %s: rcode %s, SOA %q; want %s, %q", tt.name, dns.TypeToString[tt.qtype],
				dns.RcodeToString[resp.Rcode], soas, dns.RcodeToString[tt.rcode], want)
		}
	}
}

// TestDNSCacheTTL checks how long each kind of answer is kept: served from
// the cache until a second before its TTL runs out, asked again at the
// TTL; never kept when it must not be.
func TestDNSCacheTTL(t *testing.T) {
	t.Parallel()
	srv := dnstest.StartServer(t, cacheTestZone(t))
	tests := []struct {
		name string // the name asked, which the server counts
		ask  func(string) func(context.Context, spf.Resolver) (any, error)
		want any
		kind dnsErrKind
		ttl  time.Duration // 0: never kept
	}{
		{"pos.example.com", askA, ipList("192.0.2.1"), kindOK, 300 * time.Second},
		{"mixed.example.com", askA, ipList("192.0.2.1", "192.0.2.2"), kindOK, 100 * time.Second},
		{"alias.example.com", askA, ipList("192.0.2.1"), kindOK, 50 * time.Second},
		{"zero.example.com", askA, ipList("192.0.2.3"), kindOK, 0},
		{"long.example.com", askA, ipList("192.0.2.4"), kindOK, 24 * time.Hour},
		{"nothing.example.com", askA, nil, kindNX, 60 * time.Second},
		{"pos.example.com", askTXT, nil, kindNoData, 60 * time.Second},
		{"dangling.example.com", askA, nil, kindNX, 40 * time.Second},
		{"a.example.org", askTXT, nil, kindNoData, 30 * time.Second},
		{"nothing.example.net", askA, nil, kindNX, 0},
		{"a.example.net", askTXT, nil, kindNoData, 0},
		{"servfail.example.com", askA, nil, kindTemp, 0},
		{"refused.example.com", askTXT, nil, kindTemp, 0},
		{"dead.example.com", askTXT, nil, kindTemp, 0},
	}
	for _, tt := range tests {
		tc := dnsCase{name: tt.name, do: tt.ask(tt.name), want: tt.want, kind: tt.kind}
		// Each case has its own resolver and name: the server's count of
		// queries for the name is this case's.
		t.Run(fmt.Sprintf("%s %v", tt.name, tt.kind), func(t *testing.T) {
			clock := newFakeClock()
			r := cachedResolver(t, 100, clock, nil, 200*time.Millisecond, srv.Addr())
			runDNSCase(t, r, tc)
			asked := queriesFor(srv, tt.name)
			if asked == 0 {
				t.Fatal("the server was not asked")
			}
			if tt.ttl == 0 {
				runDNSCase(t, r, tc)
				if n := queriesFor(srv, tt.name); n <= asked {
					t.Errorf("asked again: the server got %d queries, as many as before; want the answer not kept", n)
				}
				if n := r.CacheLen(); n != 0 {
					t.Errorf("CacheLen() = %d, want 0", n)
				}
				return
			}
			clock.Advance(tt.ttl - time.Second)
			runDNSCase(t, r, tc)
			if n := queriesFor(srv, tt.name); n != asked {
				t.Errorf("a second before the TTL: the server got %d queries, want %d (served from the cache)", n, asked)
			}
			if n := r.CacheLen(); n != 1 {
				t.Errorf("CacheLen() = %d, want 1", n)
			}
			clock.Advance(time.Second)
			runDNSCase(t, r, tc)
			if n := queriesFor(srv, tt.name); n != asked+1 {
				t.Errorf("at the TTL: the server got %d queries, want %d (asked again)", n, asked+1)
			}
		})
	}
}

// TestDNSCacheLRU checks that the cache never holds more than its size and
// evicts the answer used least recently.
func TestDNSCacheLRU(t *testing.T) {
	t.Parallel()
	z := dnstest.NewZone()
	for _, n := range []string{"a", "b", "c", "d"} {
		if err := z.Add(n + ".example.com. 300 A 192.0.2.1"); err != nil {
			t.Fatal(err)
		}
	}
	srv := dnstest.StartServer(t, z)
	r := cachedResolver(t, 3, nil, nil, time.Second, srv.Addr())
	steps := []struct {
		name   string
		cached bool
		len    int
	}{
		{"a", false, 1}, {"b", false, 2}, {"c", false, 3}, // c b a
		{"a", true, 3},  // a c b
		{"d", false, 3}, // d a c, b evicted
		{"b", false, 3}, // b d a, c evicted
		{"a", true, 3},  // a b d
		{"c", false, 3}, // c a b, d evicted
		{"d", false, 3}, // d c a, b evicted
		{"a", true, 3},
		{"c", true, 3},
		{"d", true, 3},
	}
	for i, st := range steps {
		name := st.name + ".example.com"
		before := queriesFor(srv, name)
		if _, err := r.LookupA(t.Context(), name); err != nil {
			t.Fatalf("step %d: A %s: %v", i, name, err)
		}
		if cached := queriesFor(srv, name) == before; cached != st.cached {
			t.Errorf("step %d: A %s served from the cache: %v, want %v", i, name, cached, st.cached)
		}
		if n := r.CacheLen(); n != st.len {
			t.Errorf("step %d: CacheLen() = %d, want %d", i, n, st.len)
		}
	}
}

// TestDNSCacheDisabled checks that CacheSize 0 keeps nothing and reports
// no cache lookups.
func TestDNSCacheDisabled(t *testing.T) {
	t.Parallel()
	srv := dnstest.StartServer(t, cacheTestZone(t))
	obs := newCountingObserver()
	r := cachedResolver(t, 0, nil, obs, time.Second, srv.Addr())
	for range 3 {
		if _, err := r.LookupA(t.Context(), "pos.example.com"); err != nil {
			t.Fatal(err)
		}
	}
	if n := queriesFor(srv, "pos.example.com"); n != 3 {
		t.Errorf("the server got %d queries, want 3", n)
	}
	if n := r.CacheLen(); n != 0 {
		t.Errorf("CacheLen() = %d, want 0", n)
	}
	queries, cache, _ := obs.snapshot()
	if len(cache) != 0 || queries["A noerror"] != 3 {
		t.Errorf("events: queries %v, cache %v; want 3 A noerror queries and no cache lookups", queries, cache)
	}
	if _, err := spf.NewDNSResolver(spf.DNSOptions{Servers: []string{srv.Addr()}, CacheSize: -1}); err == nil {
		t.Error("CacheSize -1 accepted")
	}
}

// TestDNSCacheSameResults runs the resolver's cases through a cached
// resolver, each twice: the second time gives the same answer, from the
// cache when the answers may be kept, and asks again when a server failed.
func TestDNSCacheSameResults(t *testing.T) {
	// These fail because of the records themselves, which are kept like
	// any others: the failure comes again from the cache.
	failsByRecords := map[string]bool{"CNAME chain of 11": true, "CNAME loop": true, "CNAME to itself": true}
	t.Parallel()
	z := dnsTestZone(t)
	// A SOA at the root makes every negative answer one that is kept.
	if err := z.Add(`. 300 SOA ns.example. hostmaster.example. 1 7200 3600 1209600 300`); err != nil {
		t.Fatal(err)
	}
	srv := dnstest.StartServer(t, z)
	obs := newCountingObserver()
	r := cachedResolver(t, 1000, nil, obs, 200*time.Millisecond, srv.Addr())
	// One case at a time, so that the server's count is the case's.
	for _, tc := range append(slices.Clone(dnsCases), dnsSlowCases...) {
		t.Run(tc.name, func(t *testing.T) {
			runDNSCase(t, r, tc)
			asked := len(srv.Queries())
			runDNSCase(t, r, tc)
			again := len(srv.Queries()) - asked
			serverFailed := tc.kind == kindTemp && !failsByRecords[tc.name]
			switch {
			case !serverFailed && again != 0:
				t.Errorf("the second lookup sent %d queries, want the answers from the cache", again)
			case serverFailed && again == 0:
				t.Error("the second lookup sent no query: a failure was kept")
			}
		})
	}
	_, cache, _ := obs.snapshot()
	if cache["A hit"] == 0 || cache["TXT hit"] == 0 || cache["MX hit"] == 0 || cache["PTR hit"] == 0 {
		t.Errorf("cache lookups %v, want hits of every type", cache)
	}
}

// scriptedServer answers UDP queries as a test says, counting them.
type scriptedServer struct {
	addr string
	mu   sync.Mutex
	ids  []uint16 // of the queries received, in order
}

// startScriptedServer serves UDP on loopback: handle gets each query with
// its number (from 1) and a channel closed when the test ends, and returns
// the answer to send, or nil to send none. Queries are handled
// concurrently.
func startScriptedServer(t *testing.T, handle func(n int, req *dns.Msg, done <-chan struct{}) *dns.Msg) *scriptedServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scriptedServer{addr: pc.LocalAddr().String()}
	done := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		s.mu.Lock()
		s.ids = append(s.ids, req.Id)
		n := len(s.ids)
		s.mu.Unlock()
		if resp := handle(n, req, done); resp != nil {
			_ = w.WriteMsg(resp)
		}
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() {
		close(done) // handlers still waiting return, so shutdown can finish
		_ = srv.Shutdown()
	})
	return s
}

func (s *scriptedServer) queryIDs() []uint16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ids)
}

// txtAnswer answers req with one TXT record, "v=spf1 -all".
func txtAnswer(req *dns.Msg) *dns.Msg {
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.Answer = []dns.RR{&dns.TXT{
		Hdr: dns.RR_Header{Name: req.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 300},
		Txt: []string{"v=spf1 -all"},
	}}
	return resp
}

// waitUntil polls cond until it holds. The limit only keeps a broken
// resolver from hanging the test; nothing is timed.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for start := time.Now(); !cond(); time.Sleep(time.Millisecond) {
		if time.Since(start) > time.Minute {
			t.Error("waited a minute for the lookups to gather")
			return
		}
	}
}

type txtResult struct {
	txt []string
	err error
}

// TestDNSSingleflight checks that identical lookups made while the first
// one's query is unanswered send no query of their own, with the cache
// and without, whatever the case of the name.
func TestDNSSingleflight(t *testing.T) {
	t.Parallel()
	for _, size := range []int{0, 100} {
		t.Run(fmt.Sprintf("cache size %d", size), func(t *testing.T) {
			t.Parallel()
			gate := make(chan struct{})
			srv := startScriptedServer(t, func(_ int, req *dns.Msg, done <-chan struct{}) *dns.Msg {
				select {
				case <-gate:
				case <-done:
					return nil
				}
				return txtAnswer(req)
			})
			// A timeout long enough that no retransmission comes while the
			// test waits for the lookups to gather.
			r := cachedResolver(t, size, nil, nil, time.Minute, srv.addr)
			const n = 8
			results := make(chan txtResult, n)
			for i := range n {
				name := "example.com"
				if i%2 == 1 {
					name = "EXAMPLE.Com."
				}
				go func() {
					txt, err := r.LookupTXT(t.Context(), name)
					results <- txtResult{txt, err}
				}()
			}
			waitUntil(t, func() bool { return spf.DNSWaiters(r, "example.com.", dns.TypeTXT) == n-1 })
			close(gate)
			for range n {
				res := <-results
				if res.err != nil || !slices.Equal(res.txt, []string{"v=spf1 -all"}) {
					t.Errorf("lookup: %q, %v", res.txt, res.err)
				}
			}
			if ids := srv.queryIDs(); len(ids) != 1 {
				t.Errorf("the server got %d queries, want 1", len(ids))
			}
		})
	}
}

// TestDNSSingleflightContexts checks that a waiter is not bound by the
// context of the lookup whose query it waits for, nor that lookup by the
// waiter's.
func TestDNSSingleflightContexts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// The contexts of the first lookup (the leader, which sends the
		// query) and of the second (the follower, which waits for it).
		leaderCtx   func(context.Context) (context.Context, context.CancelFunc)
		followerCtx func(context.Context) (context.Context, context.CancelFunc)
		endLeader   bool  // cancel the leader's context once both wait
		leaderErr   error // nil: the leader gets the answer
		followerErr error // nil: the follower gets the answer
		queries     int
	}{
		{
			name:        "leader cancelled",
			leaderCtx:   context.WithCancel,
			followerCtx: context.WithCancel,
			endLeader:   true,
			leaderErr:   context.Canceled,
			queries:     2, // the follower asks again
		},
		{
			name:        "follower cancelled",
			leaderCtx:   context.WithCancel,
			followerCtx: context.WithCancel,
			followerErr: context.Canceled,
			queries:     1,
		},
		{
			name: "leader past its deadline",
			leaderCtx: func(ctx context.Context) (context.Context, context.CancelFunc) {
				return context.WithTimeout(ctx, 300*time.Millisecond)
			},
			followerCtx: context.WithCancel,
			leaderErr:   context.DeadlineExceeded,
			queries:     2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// The first query is never answered; later ones are at once.
			srv := startScriptedServer(t, func(n int, req *dns.Msg, done <-chan struct{}) *dns.Msg {
				if n == 1 {
					<-done
					return nil
				}
				return txtAnswer(req)
			})
			r := cachedResolver(t, 100, nil, nil, time.Minute, srv.addr)
			leaderCtx, endLeader := tt.leaderCtx(t.Context())
			defer endLeader()
			followerCtx, endFollower := tt.followerCtx(t.Context())
			defer endFollower()

			leader := make(chan txtResult, 1)
			go func() {
				txt, err := r.LookupTXT(leaderCtx, "example.com")
				leader <- txtResult{txt, err}
			}()
			// With a deadline, the leader may be gone before the follower
			// comes; the follower then asks itself, which the test cannot
			// tell from a retry.
			waitUntil(t, func() bool {
				return spf.DNSWaiters(r, "example.com.", dns.TypeTXT) == 0 || len(leader) == 1
			})
			follower := make(chan txtResult, 1)
			go func() {
				txt, err := r.LookupTXT(followerCtx, "example.com")
				follower <- txtResult{txt, err}
			}()
			waitUntil(t, func() bool {
				return spf.DNSWaiters(r, "example.com.", dns.TypeTXT) == 1 || len(leader) == 1
			})
			if tt.endLeader {
				endLeader()
			}
			if tt.followerErr != nil {
				// On a loaded machine the leader may not have sent its
				// query yet; ending it then would send none at all.
				waitUntil(t, func() bool { return len(srv.queryIDs()) >= 1 })
				endFollower()
				if res := <-follower; !errors.Is(res.err, tt.followerErr) {
					t.Errorf("follower: %q, %v; want %v", res.txt, res.err, tt.followerErr)
				}
				// The leader's query goes on, unanswered: end it.
				endLeader()
				<-leader
			} else {
				if res := <-leader; !errors.Is(res.err, tt.leaderErr) {
					t.Errorf("leader: %q, %v; want %v", res.txt, res.err, tt.leaderErr)
				}
				if res := <-follower; res.err != nil || !slices.Equal(res.txt, []string{"v=spf1 -all"}) {
					t.Errorf("follower: %q, %v; want the answer", res.txt, res.err)
				}
			}
			if ids := srv.queryIDs(); len(ids) != tt.queries {
				t.Errorf("the server got %d queries, want %d", len(ids), tt.queries)
			}
		})
	}
}

// TestDNSRetransmission checks that a UDP query left unanswered is sent
// again, the same, up to three times within the timeout.
func TestDNSRetransmission(t *testing.T) {
	t.Parallel()
	tests := []struct {
		drop    int // datagrams the server ignores before it answers
		timeout time.Duration
		sends   int
		ok      bool
	}{
		{0, 3 * time.Second, 1, true},
		{1, 3 * time.Second, 2, true},
		{2, 3 * time.Second, 3, true},
		{3, 300 * time.Millisecond, 3, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d dropped", tt.drop), func(t *testing.T) {
			t.Parallel()
			srv := startScriptedServer(t, func(n int, req *dns.Msg, _ <-chan struct{}) *dns.Msg {
				if n <= tt.drop {
					return nil
				}
				return txtAnswer(req)
			})
			r := cachedResolver(t, 0, nil, nil, tt.timeout, srv.addr)
			txt, err := r.LookupTXT(t.Context(), "example.com")
			if tt.ok && (err != nil || !slices.Equal(txt, []string{"v=spf1 -all"})) {
				t.Errorf("got %q, %v; want the answer", txt, err)
			}
			var ne net.Error
			if !tt.ok && (!errors.As(err, &ne) || !ne.Timeout()) {
				t.Errorf("got %q, %v; want a timeout", txt, err)
			}
			ids := srv.queryIDs()
			if len(ids) != tt.sends {
				t.Errorf("the server got %d datagrams, want %d", len(ids), tt.sends)
			}
			for _, id := range ids {
				if id != ids[0] {
					t.Errorf("query IDs %v: want the same query resent", ids)
					break
				}
			}
		})
	}
}

// TestDNSObserver checks the outcome reported for each kind of answer, and
// one cache lookup per question.
func TestDNSObserver(t *testing.T) {
	t.Parallel()
	srv := dnstest.StartServer(t, dnsTestZone(t))
	truncZone := dnstest.NewZone()
	truncZone.AddTXT("example.com", "v=spf1 -all")
	truncSrv := dnstest.StartServer(t, truncZone)
	truncSrv.SetTruncateUDP(true)
	wrongName := startManglingServer(t, func(resp *dns.Msg) { resp.Question[0].Name = "evil.example.net." })
	closed := closedUDPPort(t)

	tests := []struct {
		name    string
		servers []string
		do      func(context.Context, spf.Resolver) (any, error)
		cancel  bool // cancel the lookup while its query is out
		want    map[string]int
	}{
		{"noerror", []string{srv.Addr()}, askTXT("spf.example.com"), false, map[string]int{"TXT noerror": 1}},
		{"nodata", []string{srv.Addr()}, askAAAA("mx.example.com"), false, map[string]int{"AAAA noerror": 1}},
		{"nxdomain", []string{srv.Addr()}, askMX("nothing.example.com"), false, map[string]int{"MX nxdomain": 1}},
		{"ptr", []string{srv.Addr()}, askPTR("192.0.2.1"), false, map[string]int{"PTR noerror": 1}},
		{"servfail", []string{srv.Addr()}, askA("servfail.example.com"), false, map[string]int{"A servfail": 1}},
		{"refused", []string{srv.Addr()}, askTXT("refused.example.com"), false, map[string]int{"TXT refused": 1}},
		{"other rcode", []string{srv.Addr()}, askTXT("notimp.example.com"), false, map[string]int{"TXT other_rcode": 1}},
		{"timeout", []string{srv.Addr()}, askTXT("dead.example.com"), false, map[string]int{"TXT timeout": 1}},
		{"truncated, then TCP", []string{truncSrv.Addr()}, askTXT("example.com"), false, map[string]int{"TXT noerror": 2}},
		// Over UDP an answer for another question is passed over, as
		// anyone may send one: the query times out, then the next server
		// answers.
		{"answer for another question, then next server", []string{wrongName, srv.Addr()}, askTXT("spf.example.com"), false,
			map[string]int{"TXT timeout": 1, "TXT noerror": 1}},
		{"network error", []string{closed}, askTXT("example.com"), false, map[string]int{"TXT network_error": 1}},
		{"cancelled", []string{srv.Addr()}, askTXT("dead.example.com"), true, map[string]int{"TXT cancelled": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			obs := newCountingObserver()
			timeout := 200 * time.Millisecond
			if tt.cancel {
				// Far enough that only the cancel ends the query.
				timeout = time.Minute
			}
			r := cachedResolver(t, 100, nil, obs, timeout, tt.servers...)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if tt.cancel {
				go func() {
					waitUntil(t, func() bool { return spf.DNSWaiters(r, "dead.example.com.", dns.TypeTXT) == 0 })
					cancel()
				}()
			}
			_, _ = tt.do(ctx, r)
			queries, cache, bad := obs.snapshot()
			if !maps.Equal(queries, tt.want) {
				t.Errorf("query events %v, want %v", queries, tt.want)
			}
			var qtype string
			for k := range tt.want {
				qtype, _, _ = strings.Cut(k, " ")
			}
			if want := map[string]int{qtype + " miss": 1}; !maps.Equal(cache, want) {
				t.Errorf("cache events %v, want %v", cache, want)
			}
			if len(bad) > 0 {
				t.Errorf("bad events: %q", bad)
			}
		})
	}
}

// BenchmarkDNSResolverCached measures a lookup answered from the cache,
// the path every check of a busy server takes. The setup checks that the
// server is asked once in all, so that the loop really hits the cache.
func BenchmarkDNSResolverCached(b *testing.B) {
	z := dnstest.NewZone()
	z.AddTXT("example.com", "v=spf1 ip4:192.0.2.0/24 ", "include:_spf.example.net -all")
	if err := z.Add(`mail.example.com. A 192.0.2.1`, `mail.example.com. A 192.0.2.2`); err != nil {
		b.Fatal(err)
	}
	srv := dnstest.StartServer(b, z)
	lookups := []struct {
		name string
		do   func(context.Context, spf.Resolver) (any, error)
	}{
		{"TXT", askTXT("example.com")},
		{"A", askA("mail.example.com")},
	}
	for _, l := range lookups {
		b.Run(l.name, func(b *testing.B) {
			r := cachedResolver(b, spf.DefaultCacheSize, nil, nil, time.Second, srv.Addr())
			ctx := context.Background()
			srv.ResetQueries()
			if _, err := l.do(ctx, r); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := l.do(ctx, r); err != nil {
					b.Fatal(err)
				}
			}
			if n := len(srv.Queries()); n != 1 {
				b.Fatalf("the server got %d queries, want 1", n)
			}
		})
	}
}
