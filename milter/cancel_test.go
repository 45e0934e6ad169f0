package milter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
	"go.uber.org/goleak"

	"github.com/spf-milter/spf-milter/internal/dnstest"
	"github.com/spf-milter/spf-milter/milter/internal/wire"
	"github.com/spf-milter/spf-milter/spf"
)

// rawDialer keeps the connections a go-milter client dials, so that a test
// can hang up as a crashed MTA does, without the client's QUIT.
type rawDialer struct {
	mu    sync.Mutex
	conns []net.Conn
}

func (d *rawDialer) Dial(network, addr string) (net.Conn, error) {
	c, err := net.Dial(network, addr)
	if err == nil {
		d.mu.Lock()
		d.conns = append(d.conns, c)
		d.mu.Unlock()
	}
	return c, err
}

func (d *rawDialer) last() net.Conn {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.conns[len(d.conns)-1]
}

// slowCheckDaemon is a Daemon whose checks wait on a DNS server that
// answers the queries for slow<i>.example after delay, in sessions whose replies are held
// (IOBuffer), so that a forced close meets a session goroutine that
// still has replies to write.
type slowCheckDaemon struct {
	d      *Daemon
	dns    *dnstest.FaultyServer
	logs   *logBuffer
	dialer *rawDialer
	addr   string
	served chan error
	mails  sync.WaitGroup
	// lost counts the checks abandoned (see countLost).
	lost atomic.Int64
	// leaks is the goroutines before the daemon: the DNS server's.
	leaks goleak.Option
}

func startSlowCheckDaemon(t *testing.T, delay time.Duration, names int) *slowCheckDaemon {
	t.Helper()
	z := testZone(t)
	f := &slowCheckDaemon{dns: dnstest.StartFaultyServer(t, z), logs: &logBuffer{}, dialer: &rawDialer{}, served: make(chan error, 1)}
	for i := range names {
		name := fmt.Sprintf("slow%d.example", i)
		if err := z.Add(name + `. TXT "v=spf1 -all"`); err != nil {
			t.Fatal(err)
		}
		f.dns.SetBehaviourAt(name, dnstest.Behaviour{UDP: dnstest.Answer, TCP: dnstest.Answer, Delay: delay})
	}
	f.leaks = goleak.IgnoreCurrent()
	r, err := spf.NewDNSResolver(spf.DNSOptions{Servers: []string{f.dns.Addr()}, Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.DNS.CheckTimeout = time.Hour
	rt := &Runtime{
		Config:  cfg,
		Checker: &spf.Checker{Resolver: r, Receiver: cfg.Receiver, Timeout: time.Hour},
		Log:     slog.New(countLost{slog.NewJSONHandler(f.logs, nil), &f.lost}),
	}
	f.d = NewDaemon(NewServer(func() *Runtime { return rt }), DaemonOptions{
		IdleTimeout: time.Hour, IOBuffer: DefaultIOBuffer, Log: slog.New(slog.DiscardHandler),
	})
	ln, err := Listen("inet:127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	go func() { f.served <- f.d.Serve(ln) }()
	return f
}

// startCheck opens session i and sends its MAIL FROM, whose check waits
// on slow<i>.example (its HELO name is answered at once), from a
// goroutine; it returns the MTA's end of the connection.
func (f *slowCheckDaemon) startCheck(t *testing.T, i int) net.Conn {
	t.Helper()
	c := gomilter.NewClientWithOptions("tcp", f.addr, gomilter.ClientOptions{
		Dialer:       f.dialer,
		ReadTimeout:  time.Minute,
		WriteTimeout: time.Minute,
		ActionMask:   gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptQuarantine,
	})
	cs, err := c.Session()
	if err != nil {
		t.Fatal(err)
	}
	raw := f.dialer.last()
	must(t)(cs.Conn("client.example", gomilter.FamilyInet, 40000, clientIP))
	must(t)(cs.Helo(passHELO))
	f.mails.Go(func() {
		// Answered with nothing: the connection is closed under it.
		if a, err := cs.Mail(fmt.Sprintf("alice@slow%d.example", i), nil); err == nil {
			t.Errorf("session %d: MAIL FROM answered %q; want the connection closed", i, reply(a))
		}
	})
	return raw
}

// asked reports whether the DNS server was asked about slow0.example to
// slow<n-1>.example.
func (f *slowCheckDaemon) asked(n int) func() bool {
	return func() bool {
		seen := map[string]bool{}
		for _, q := range f.dns.Queries() {
			for i := range n {
				if strings.Contains(strings.ToLower(q.Name), fmt.Sprintf("slow%d.example", i)) {
					seen[q.Name] = true
				}
			}
		}
		return len(seen) >= n
	}
}

// countLost counts the log records of checks abandoned. A test waits on
// the count rather than on the log's mutex: a session goroutine takes that
// mutex before it writes its reply, so a test polling it from Shutdown's
// goroutine would order the reply after Shutdown and hide from the race
// detector a race between them.
type countLost struct {
	slog.Handler
	n *atomic.Int64
}

func (h countLost) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "spf connection lost, message not answered" {
		h.n.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

// abandoned returns the log lines of the checks abandoned.
func (f *slowCheckDaemon) abandoned(t *testing.T) []map[string]any {
	return f.logs.lines(t, "spf connection lost, message not answered")
}

// finish checks that no decision was taken on a check cut short and that
// no goroutine is left but the DNS server's, which holds its replies.
func (f *slowCheckDaemon) finish(t *testing.T, conns []net.Conn) {
	t.Helper()
	f.mails.Wait()
	if n := len(f.logs.lines(t, "spf decision")); n != 0 {
		t.Errorf("%d decisions logged for checks cut short", n)
	}
	for _, c := range conns {
		c.Close()
	}
	goleak.VerifyNone(t, f.leaks, goleak.IgnoreAnyFunction("github.com/spf-milter/spf-milter/internal/dnstest.(*FaultyServer).wait"))
}

// TestShutdownCancelsChecks forces sessions whose checks wait on a DNS
// server that answers after 5 s, far more than the 300 ms drain. Forcing
// them must cancel their checks, and must not touch the replies their
// goroutines write when the checks return: under -race, reading them from
// Shutdown's goroutine was a data race.
func TestShutdownCancelsChecks(t *testing.T) {
	const sessions = 3
	f := startSlowCheckDaemon(t, 5*time.Second, sessions)
	var conns []net.Conn
	for i := range sessions {
		conns = append(conns, f.startCheck(t, i))
	}
	waitFor(t, "every check is waiting on the DNS server", f.asked(sessions))

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := f.d.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown returned %v, want the drain time over", err)
	}
	if err := <-f.served; !errors.Is(err, gomilter.ErrServerClosed) {
		t.Errorf("Serve returned %v", err)
	}
	// Well before the DNS server answers.
	waitFor(t, "every forced check is abandoned", func() bool { return f.lost.Load() == sessions })
	for _, l := range f.abandoned(t) {
		if l["stage"] != "mail" || !strings.Contains(fmt.Sprint(l["error"]), wire.ErrSessionForced.Error()) {
			t.Errorf("logged %v, want a check at MAIL abandoned by the shutdown", l)
		}
	}
	f.finish(t, conns)
}

// TestHangUpCancelsCheck hangs up, as a crashed MTA does, on a session
// whose check waits on a DNS server that answers after an hour: the check
// is cancelled at once, while go-milter waits for it rather than reading.
func TestHangUpCancelsCheck(t *testing.T) {
	f := startSlowCheckDaemon(t, time.Hour, 2)
	kept, gone := f.startCheck(t, 0), f.startCheck(t, 1)
	waitFor(t, "both checks are waiting on the DNS server", f.asked(2))

	gone.Close()
	waitFor(t, "the hung-up session ends", func() bool { return f.d.Open() == 1 })
	waitFor(t, "its check is abandoned", func() bool { return f.lost.Load() == 1 })
	if l := f.abandoned(t)[0]; l["stage"] != "mail" || !strings.Contains(fmt.Sprint(l["error"]), wire.ErrMTAHungUp.Error()) {
		t.Errorf("logged %v, want a check at MAIL abandoned because the MTA hung up", l)
	}
	// The other session's check still runs: only its own connection
	// ends a check.
	if f.d.Open() != 1 || len(f.abandoned(t)) != 1 {
		t.Errorf("%d sessions open, %d checks abandoned; want the other one still running", f.d.Open(), len(f.abandoned(t)))
	}
	kept.Close()
	waitFor(t, "the other session ends", func() bool { return f.d.Open() == 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.d.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	<-f.served
	f.finish(t, []net.Conn{kept, gone})
}
