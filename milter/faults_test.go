package milter

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
	"go.uber.org/goleak"

	"github.com/spf-milter/spf-milter/internal/dnstest"
	"github.com/spf-milter/spf-milter/internal/logtest"
	"github.com/spf-milter/spf-milter/spf"
)

// The tests in this file play a faulty or hostile MTA against a Daemon
// over loopback TCP. They do not call t.Parallel: each one checks that no
// goroutine outlives its daemons, and reads what go-milter writes to the
// standard logger, both of which only hold when no other test runs.

// faultDaemon is a Daemon serving the real milter on 127.0.0.1, with every
// log it writes kept.
type faultDaemon struct {
	d       *Daemon
	addr    string
	metrics *Metrics
	rtLogs  *logBuffer      // the sessions' JSON log
	dLogs   *logtest.Buffer // the daemon's own log
}

// slowResolver answers TXT queries for slow.example only after a pause,
// so that the MTA can hang up while a check is running.
type slowResolver struct{ spf.Resolver }

func (r slowResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	if strings.EqualFold(strings.TrimSuffix(name, "."), "slow.example") {
		select {
		case <-time.After(300 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return r.Resolver.LookupTXT(ctx, name)
}

// faultZone is testZone with a domain whose lookups are slow.
func faultZone(t *testing.T) *dnstest.Zone {
	t.Helper()
	z := testZone(t)
	if err := z.Add(`slow.example. TXT "v=spf1 ip4:192.0.2.1 -all"`); err != nil {
		t.Fatal(err)
	}
	return z
}

// startFaultDaemon serves the milter with the default config (testConfig)
// through a Daemon with opts. wrap, when set, wraps the sessions' log
// handler. The daemon is shut down by the test (see stop), or at cleanup.
func startFaultDaemon(t *testing.T, opts DaemonOptions, wrap func(slog.Handler) slog.Handler) *faultDaemon {
	t.Helper()
	cfg := testConfig()
	f := &faultDaemon{metrics: NewMetrics(), rtLogs: &logBuffer{}, dLogs: &logtest.Buffer{}}
	var h slog.Handler = slog.NewJSONHandler(f.rtLogs, nil)
	if wrap != nil {
		h = wrap(h)
	}
	resolver := slowResolver{panicResolver{dnstest.NewMapResolver(faultZone(t))}}
	rt := &Runtime{
		Config:  cfg,
		Checker: &spf.Checker{Resolver: resolver, Receiver: cfg.Receiver, Timeout: 10 * time.Second},
		Log:     slog.New(h),
		Metrics: f.metrics,
	}
	opts.Log = slog.New(slog.NewTextHandler(f.dLogs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f.d = NewDaemon(NewServer(func() *Runtime { return rt }), opts)
	f.metrics.SetOpenSessions(f.d.Open)
	ln, err := Listen("inet:127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- f.d.Serve(ln) }()
	t.Cleanup(func() {
		f.stop(t)
		if err := <-served; !errors.Is(err, gomilter.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return f
}

// stop shuts the daemon down. The sessions must all have ended by then: one
// still open would be closed by force, which fails the test.
func (f *faultDaemon) stop(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.d.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v (a session was left open)", err)
	}
}

// internalErrors returns spf_milter_internal_errors_total by stage.
func (f *faultDaemon) internalErrors(t *testing.T) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for series, v := range scrape(t, f.metrics.Handler()).samples {
		if stage, ok := strings.CutPrefix(series, `spf_milter_internal_errors_total{stage="`); ok && v != 0 {
			out[strings.TrimSuffix(stage, `"}`)] = v
		}
	}
	return out
}

// checkNoPanic fails the test if any log tells of a panic: the daemon's,
// the sessions', or go-milter's, which recovers a panic in its session
// loop and logs it to the standard logger.
func checkNoPanic(t *testing.T, f *faultDaemon, stdLog *logtest.Buffer) {
	t.Helper()
	for name, text := range map[string]string{"daemon": f.dLogs.String(), "go-milter": stdLog.String()} {
		if strings.Contains(strings.ToLower(text), "panic") {
			t.Errorf("the %s log tells of a panic:\n%s", name, text)
		}
	}
	for _, l := range f.rtLogs.lines(t, "spf internal failure, message deferred") {
		if s, _ := l["stack"].(string); s != "" {
			t.Errorf("a session recovered a panic: %v", l)
		}
	}
}

// captureStdLog sends the standard logger, which go-milter writes to, to a
// buffer for the rest of the test.
func captureStdLog(t *testing.T) *logtest.Buffer {
	t.Helper()
	buf := &logtest.Buffer{}
	prev := log.Writer()
	log.SetOutput(buf)
	t.Cleanup(func() { log.SetOutput(prev) })
	return buf
}

// goodMessage sends one message from a sender that passes, as Postfix
// would, and checks that it is checked and given our three headers.
func goodMessage(cs *gomilter.ClientSession, qid string) error {
	want := func(stage string) func(*gomilter.Action, error) error {
		return func(a *gomilter.Action, err error) error {
			if err != nil {
				return fmt.Errorf("%s: %w", stage, err)
			}
			if a.Code != gomilter.ActContinue {
				return fmt.Errorf("%s answered %q, want continue", stage, reply(a))
			}
			return nil
		}
	}
	if err := cs.Macros(gomilter.CodeMail, "{mail_addr}", "alice@pass.example"); err != nil {
		return err
	}
	if err := want("MAIL")(cs.Mail("alice@pass.example", nil)); err != nil {
		return err
	}
	if err := cs.Macros(gomilter.CodeRcpt, "{rcpt_addr}", "bob@example.net", "i", qid); err != nil {
		return err
	}
	if err := want("RCPT")(cs.Rcpt("bob@example.net", nil)); err != nil {
		return err
	}
	if err := want("header")(cs.HeaderField("Subject", "hi")); err != nil {
		return err
	}
	if err := want("EOH")(cs.HeaderEnd()); err != nil {
		return err
	}
	mods, end, err := cs.End()
	if err := want("EOM")(end, err); err != nil {
		return err
	}
	var got []string
	for _, m := range mods {
		got = append(got, fmt.Sprintf("%c %s: %s", m.Code, m.HeaderName, strings.SplitN(m.HeaderValue, " ", 2)[0]))
	}
	// Inserted bottom up: AR, then the HELO Received-SPF, then MAIL FROM's.
	wantMods := "i Authentication-Results: mx.example.net;|i Received-SPF: pass|i Received-SPF: pass"
	if strings.Join(got, "|") != wantMods {
		return fmt.Errorf("EOM modifications %q, want %q", got, wantMods)
	}
	return nil
}

// traffic is a well-behaved MTA connection sending messages one after the
// other while a test does something nasty on another connection.
type traffic struct {
	sent     atomic.Int64
	stop     chan struct{}
	stopOnce sync.Once
	done     chan error
}

func startTraffic(t *testing.T, addr string) *traffic {
	t.Helper()
	c := gomilter.NewClientWithOptions("tcp", addr, gomilter.ClientOptions{
		ReadTimeout:  10 * time.Second,
		WriteTimeout: 10 * time.Second,
		ActionMask:   gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptQuarantine,
	})
	cs, err := c.Session()
	if err != nil {
		t.Fatal(err)
	}
	if a, err := cs.Conn("client.example", gomilter.FamilyInet, 40000, clientIP); err != nil || a.Code != gomilter.ActContinue {
		t.Fatalf("CONNECT: %v, %v", a, err)
	}
	if a, err := cs.Helo(passHELO); err != nil || a.Code != gomilter.ActContinue {
		t.Fatalf("HELO: %v, %v", a, err)
	}
	tr := &traffic{stop: make(chan struct{}), done: make(chan error, 1)}
	// A test that fails half-way must not leave the connection busy.
	t.Cleanup(func() { tr.stopOnce.Do(func() { close(tr.stop) }) })
	go func() {
		defer cs.Close()
		for i := 0; ; i++ {
			select {
			case <-tr.stop:
				tr.done <- nil
				return
			default:
			}
			if err := goodMessage(cs, fmt.Sprintf("Q%d", i)); err != nil {
				tr.done <- fmt.Errorf("message %d: %w", i, err)
				return
			}
			tr.sent.Add(1)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return tr
}

// finish checks that messages still go through after the fault (two more
// than now, so that one was sent wholly after it), then ends the
// connection.
func (tr *traffic) finish(t *testing.T) {
	t.Helper()
	n := tr.sent.Load()
	deadline := time.Now().Add(10 * time.Second)
	for tr.sent.Load() < n+2 {
		select {
		case err := <-tr.done:
			t.Fatalf("the other session failed: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the other session made no progress after the fault")
		}
		time.Sleep(5 * time.Millisecond)
	}
	tr.stopOnce.Do(func() { close(tr.stop) })
	if err := <-tr.done; err != nil {
		t.Fatalf("the other session failed: %v", err)
	}
}

// pkt builds a milter packet as an MTA writes it: a 4-byte big-endian
// length, a command byte, the data.
func pkt(code byte, data ...[]byte) []byte {
	body := append([]byte{code}, bytes.Join(data, nil)...)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// cstr joins NUL-terminated strings.
func cstr(ss ...string) []byte {
	var b []byte
	for _, s := range ss {
		b = append(append(b, s...), 0)
	}
	return b
}

// optnegPkt offers protocol version 6 with every action and protocol bit,
// as Postfix does.
func optnegPkt() []byte {
	var b []byte
	for _, v := range []uint32{6, 0x1ff, 0x1fffff} {
		b = binary.BigEndian.AppendUint32(b, v)
	}
	return pkt('O', b)
}

func connectPkt(ip string) []byte {
	return pkt('C', cstr("client.example"), []byte{'4'}, binary.BigEndian.AppendUint16(nil, 40000), cstr(ip))
}

func macroPkt(stage byte, kv ...string) []byte { return pkt('D', []byte{stage}, cstr(kv...)) }
func heloPkt(name string) []byte               { return pkt('H', cstr(name)) }
func mailPkt(addr string) []byte               { return pkt('M', cstr("<"+addr+">")) }
func rcptPkt(addr string) []byte               { return pkt('R', cstr("<"+addr+">")) }
func headerPkt(name, value string) []byte      { return pkt('L', cstr(name, value)) }

// rawMTA speaks the milter protocol packet by packet, so that it can send
// what no MTA should.
type rawMTA struct {
	t *testing.T
	c *net.TCPConn
}

func dialRaw(t *testing.T, addr string) *rawMTA {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawMTA{t: t, c: c.(*net.TCPConn)}
}

func (m *rawMTA) send(b []byte) {
	m.t.Helper()
	m.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := m.c.Write(b); err != nil {
		m.t.Fatalf("write: %v", err)
	}
}

// readPacket reads one packet of the milter's.
func (m *rawMTA) readPacket() (code byte, data []byte, err error) {
	m.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var hdr [4]byte
	if _, err := io.ReadFull(m.c, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > 1<<20 {
		return 0, nil, fmt.Errorf("bad reply length %d", n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(m.c, body); err != nil {
		return 0, nil, err
	}
	return body[0], body[1:], nil
}

// answer reads the milter's answer to one command: any modifications,
// then an action, rendered as "insert NAME: FIRSTWORD; ...; ACTION" where
// ACTION is continue, tempfail, negotiated or the SMTP reply; "closed"
// when the milter hung up instead.
func (m *rawMTA) answer() string {
	m.t.Helper()
	var parts []string
	for {
		code, data, err := m.readPacket()
		if err != nil {
			if closedByPeer(err) {
				return strings.Join(append(parts, "closed"), "; ")
			}
			m.t.Fatalf("reading the answer: %v (so far %q)", err, parts)
		}
		switch code {
		case 'c':
			return strings.Join(append(parts, "continue"), "; ")
		case 't':
			return strings.Join(append(parts, "tempfail"), "; ")
		case 'O':
			return strings.Join(append(parts, "negotiated"), "; ")
		case 'y':
			return strings.Join(append(parts, strings.TrimSuffix(string(data), "\x00")), "; ")
		case 'i', 'm':
			f := strings.Split(string(data[4:]), "\x00")
			verb := map[byte]string{'i': "insert", 'm': "change"}[code]
			parts = append(parts, fmt.Sprintf("%s %s: %s", verb, f[0], strings.SplitN(f[1], " ", 2)[0]))
		default:
			parts = append(parts, fmt.Sprintf("code %q", code))
		}
	}
}

// closedByPeer reports whether a read error means the other end closed
// the connection: EOF, or a reset when it closed with data unread.
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// exchange sends a packet and returns the answer ("" for a packet that
// gets none: macros, abort).
func (m *rawMTA) exchange(p []byte) string {
	m.t.Helper()
	m.send(p)
	if len(p) > 4 && (p[4] == 'D' || p[4] == 'A') {
		return ""
	}
	return m.answer()
}

// hangUp ends the connection, with a FIN, or with a RST as a crashed or
// killed MTA host's kernel might.
func (m *rawMTA) hangUp(reset bool) {
	if reset {
		m.c.SetLinger(0)
	}
	m.c.Close()
}

// sessionScript is a whole transaction, stage by stage, and what each
// stage is answered.
var sessionScript = []struct {
	stage string
	pkts  [][]byte
	want  string
}{
	{"option negotiation", [][]byte{optnegPkt()}, "negotiated"},
	{"CONNECT", [][]byte{macroPkt('C', "j", "mx.example.net"), connectPkt(clientIP)}, "continue"},
	{"HELO", [][]byte{heloPkt(passHELO)}, "continue"},
	{"MAIL", [][]byte{macroPkt('M', "{mail_addr}", "alice@pass.example"), mailPkt("alice@pass.example")}, "continue"},
	{"RCPT", [][]byte{macroPkt('R', "{rcpt_addr}", "bob@example.net", "i", "QID"), rcptPkt("bob@example.net")}, "continue"},
	{"a header", [][]byte{headerPkt("Subject", "hi")}, "continue"},
	{"EOH", [][]byte{pkt('N')}, "continue"},
	{"EOM", [][]byte{pkt('E')}, "insert Authentication-Results: mx.example.net;; insert Received-SPF: pass; insert Received-SPF: pass; continue"},
}

// runScript plays the session script up to and including stage, checking
// every answer.
func (m *rawMTA) runScript(stage string) {
	m.t.Helper()
	if stage != "" {
		m.play(sessionScript[0].stage, stage)
	}
}

// play plays the session script from stage from to stage to, inclusive,
// checking every answer.
func (m *rawMTA) play(from, to string) {
	m.t.Helper()
	playing := false
	for _, s := range sessionScript {
		if s.stage == from {
			playing = true
		}
		if !playing {
			continue
		}
		var got string
		for _, p := range s.pkts {
			got = m.exchange(p)
		}
		if got != s.want {
			m.t.Fatalf("%s answered %q, want %q", s.stage, got, s.want)
		}
		if s.stage == to {
			return
		}
	}
	m.t.Fatalf("no stages %q to %q in the script", from, to)
}

// TestMTADisconnects hangs up at every stage of a session, and in the
// middle of packets: the session ends without a panic or an internal
// error, is no longer counted, leaves no goroutine behind, and a session
// running at the same time is not disturbed.
func TestMTADisconnects(t *testing.T) {
	mail := mailPkt("alice@pass.example")
	tests := []struct {
		name  string
		after string // the last stage played in full
		then  func(m *rawMTA)
	}{
		{name: "after the TCP connect"},
		{name: "after option negotiation", after: "option negotiation"},
		{name: "after CONNECT", after: "CONNECT"},
		{name: "after HELO", after: "HELO"},
		{name: "after MAIL", after: "MAIL"},
		{name: "after RCPT", after: "RCPT"},
		{name: "after a header", after: "a header"},
		{name: "after EOH", after: "EOH"},
		{name: "after the end of message", after: "EOM"},
		{name: "in the middle of a length prefix", after: "HELO", then: func(m *rawMTA) { m.send(mail[:2]) }},
		{name: "after a length prefix", after: "HELO", then: func(m *rawMTA) { m.send(mail[:4]) }},
		{name: "in the middle of a packet body", after: "HELO", then: func(m *rawMTA) { m.send(mail[:4+len(mail[4:])/2]) }},
		{name: "between a macro packet and its command", after: "HELO", then: func(m *rawMTA) {
			m.send(macroPkt('M', "{mail_addr}", "alice@pass.example"))
		}},
		{name: "before reading the MAIL reply, during the check", after: "HELO", then: func(m *rawMTA) {
			m.send(mailPkt("alice@slow.example"))
			// The check takes 300ms: hang up while it runs.
			time.Sleep(50 * time.Millisecond)
		}},
		{name: "before reading the end-of-message reply", after: "EOH", then: func(m *rawMTA) { m.send(pkt('E')) }},
	}
	stdLog := captureStdLog(t)
	for _, rb := range []int{0, DefaultIOBuffer} {
		for _, reset := range []bool{false, true} {
			for _, tt := range tests {
				name := fmt.Sprintf("io-buffer=%d/%s/%s", rb, map[bool]string{false: "close", true: "reset"}[reset], tt.name)
				t.Run(name, func(t *testing.T) {
					leaks := goleak.IgnoreCurrent()
					f := startFaultDaemon(t, DaemonOptions{IdleTimeout: time.Minute, IOBuffer: rb}, nil)
					tr := startTraffic(t, f.addr)
					waitFor(t, "the other session is counted", func() bool { return f.d.Open() == 1 })

					m := dialRaw(t, f.addr)
					m.runScript(tt.after)
					if tt.then != nil {
						tt.then(m)
					}
					waitFor(t, "the faulty session is counted", func() bool { return f.d.Open() == 2 })
					m.hangUp(reset)
					waitFor(t, "the faulty session is no longer counted", func() bool { return f.d.Open() == 1 })

					tr.finish(t)
					waitFor(t, "no session is counted", func() bool { return f.d.Open() == 0 })
					if errs := f.internalErrors(t); len(errs) > 0 {
						t.Errorf("internal errors counted: %v", errs)
					}
					checkNoPanic(t, f, stdLog)
					if fails := f.rtLogs.lines(t, "spf internal failure, message deferred"); len(fails) > 0 {
						t.Errorf("internal failures logged: %v", fails)
					}
					// Changes to the message that could not be sent are
					// the MTA's doing, told apart from our failures. Whether
					// a write fails before the hang-up is seen is a race.
					// A hang-up during the check cancels it: that is seen
					// at MAIL.
					for _, l := range f.rtLogs.lines(t, "spf connection lost, message not answered") {
						atMail := l["stage"] == "mail" && strings.Contains(tt.name, "during the check")
						atEOM := l["stage"] == "eom" && strings.Contains(tt.name, "end-of-message reply")
						if !atMail && !atEOM {
							t.Errorf("connection lost at the wrong place: %v", l)
						}
						t.Logf("logged: %v", l["error"])
					}
					f.stop(t)
					goleak.VerifyNone(t, leaks)
				})
			}
		}
	}
}

// rawStep is one packet of a malformed session and the answer it must get
// ("" for none, "closed" when the milter must hang up).
type rawStep struct {
	send []byte
	want string
}

// TestMalformedPackets sends packets that break the protocol: the milter
// either hangs up cleanly or answers without ever letting a message pass
// that it did not check, and a session running at the same time is not
// disturbed.
func TestMalformedPackets(t *testing.T) {
	const tempfail = internalErrorReply
	u32 := func(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }
	tests := []struct {
		name  string
		after string // script stages played first
		steps []rawStep
		// resume is the script stage from which the connection must go on
		// serving to the end of a message; "" when it is closed.
		resume string
		// failures are the internal errors counted, by stage.
		failures map[string]float64
	}{
		{name: "length over go-milter's maximum", after: "HELO",
			steps: []rawStep{{u32(1<<20 + 1), "closed"}}},
		{name: "length 2^32-1", after: "HELO",
			steps: []rawStep{{u32(1<<32 - 1), "closed"}}},
		{name: "zero length", after: "HELO",
			steps: []rawStep{{u32(0), "closed"}}},
		{name: "truncated packet, then end of stream", after: "HELO",
			steps: []rawStep{{mailPkt("alice@pass.example")[:10], ""}, {nil, "closed"}}},
		{name: "unknown command", after: "HELO",
			steps: []rawStep{{pkt('Z', cstr("what")), "closed"}}},
		{name: "QUIT_NC, which protocol 2 does not have", after: "HELO",
			steps: []rawStep{{pkt('K'), "closed"}}},
		{name: "macro packet without a stage", after: "HELO",
			steps: []rawStep{{pkt('D'), "closed"}}},
		{name: "CONNECT cut short", after: "option negotiation",
			steps: []rawStep{{pkt('C', []byte("client.example")), "closed"}}},
		{name: "QUIT in the middle of a message", after: "RCPT",
			steps: []rawStep{{pkt('Q'), "closed"}}},
		{name: "CONNECT with an IPv4 family and no port", after: "option negotiation",
			steps:  []rawStep{{pkt('C', cstr("client.example"), []byte{'4'}), "tempfail"}},
			resume: "CONNECT"},
		{name: "option negotiation twice", after: "HELO",
			steps:  []rawStep{{optnegPkt(), "negotiated"}},
			resume: "MAIL"},
		{name: "option negotiation without data",
			steps:  []rawStep{{pkt('O'), "negotiated"}},
			resume: "CONNECT"},
		// No client address: the message cannot be checked, and is
		// deferred rather than passed as a permerror.
		{name: "MAIL before CONNECT and HELO", after: "option negotiation",
			steps: []rawStep{
				{mailPkt("alice@pass.example"), tempfail},
				{rcptPkt("bob@example.net"), tempfail},
			},
			resume:   "CONNECT",
			failures: map[string]float64{"mail": 1}},
		{name: "MAIL before CONNECT, client address in the macros", after: "option negotiation",
			steps: []rawStep{
				{macroPkt('M', "{client_addr}", clientIP), ""},
				{mailPkt("alice@pass.example"), "continue"},
				{rcptPkt("bob@example.net"), "continue"},
				{pkt('N'), "continue"},
				{pkt('E'), "insert Authentication-Results: mx.example.net;; insert Received-SPF: pass; continue"},
			},
			resume: "CONNECT"},
		{name: "MAIL without an address", after: "HELO",
			steps:  []rawStep{{pkt('M'), "continue"}},
			resume: "RCPT"},
		{name: "RCPT before MAIL", after: "HELO",
			steps:  []rawStep{{rcptPkt("bob@example.net"), "continue"}},
			resume: "MAIL"},
		{name: "EOM without MAIL", after: "HELO",
			steps:    []rawStep{{pkt('E'), tempfail}},
			resume:   "MAIL",
			failures: map[string]float64{"eom": 1}},
		{name: "EOM after ABORT", after: "a header",
			steps:    []rawStep{{pkt('A'), ""}, {pkt('E'), tempfail}},
			resume:   "MAIL",
			failures: map[string]float64{"eom": 1}},
		{name: "headers and EOM after ABORT", after: "RCPT",
			steps: []rawStep{
				{pkt('A'), ""},
				{headerPkt("Subject", "hi"), "continue"},
				{pkt('N'), "continue"},
				{pkt('E'), tempfail},
			},
			resume:   "MAIL",
			failures: map[string]float64{"eom": 1}},
		{name: "EOM twice", after: "EOM",
			steps:    []rawStep{{pkt('E'), tempfail}},
			resume:   "MAIL",
			failures: map[string]float64{"eom": 1}},
		{name: "ABORT before MAIL", after: "HELO",
			steps:  []rawStep{{pkt('A'), ""}},
			resume: "MAIL"},
		{name: "HELO twice: the last one is checked", after: "HELO",
			steps: []rawStep{
				{heloPkt(failHELO), "continue"},
				{mailPkt("alice@pass.example"), "550 5.7.23 SPF fail: mx.fail.example does not designate 192.0.2.1 as a permitted sender"},
			},
			resume: "HELO"},
		{name: "second CONNECT in the middle of a message", after: "a header",
			steps: []rawStep{
				{connectPkt("198.51.100.7"), "continue"},
				{pkt('N'), "continue"},
				{pkt('E'), tempfail},
			},
			resume:   "CONNECT",
			failures: map[string]float64{"eom": 1}},
		{name: "macros for an unknown stage", after: "HELO",
			steps:  []rawStep{{macroPkt('Z', "{client_addr}", "198.51.100.7"), ""}},
			resume: "MAIL"},
		{name: "macro name without a value", after: "HELO",
			steps:  []rawStep{{macroPkt('M', "{auth_authen}"), ""}},
			resume: "MAIL"},
		{name: "header without a value", after: "RCPT",
			steps:  []rawStep{{pkt('L', []byte("X-Empty")), "continue"}},
			resume: "a header"},
		{name: "body chunk although none was asked for", after: "EOH",
			steps:  []rawStep{{pkt('B', []byte("hello\r\n")), "continue"}},
			resume: "EOM"},
		{name: "DATA, which was not asked for", after: "RCPT",
			steps:  []rawStep{{pkt('T'), "continue"}},
			resume: "a header"},
	}
	stdLog := captureStdLog(t)
	for _, rb := range []int{0, DefaultIOBuffer} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("io-buffer=%d/%s", rb, tt.name), func(t *testing.T) {
				leaks := goleak.IgnoreCurrent()
				f := startFaultDaemon(t, DaemonOptions{IdleTimeout: time.Minute, IOBuffer: rb}, nil)
				tr := startTraffic(t, f.addr)
				waitFor(t, "the other session is counted", func() bool { return f.d.Open() == 1 })

				m := dialRaw(t, f.addr)
				m.runScript(tt.after)
				for i, st := range tt.steps {
					var got string
					switch {
					case st.send == nil:
						// The end of the stream.
						m.c.CloseWrite()
						got = m.answer()
					case st.want == "":
						m.send(st.send)
					default:
						m.send(st.send)
						got = m.answer()
					}
					if got != st.want {
						t.Fatalf("step %d answered %q, want %q", i+1, got, st.want)
					}
				}
				if tt.resume != "" {
					m.play(tt.resume, "EOM")
					m.hangUp(false)
				}
				waitFor(t, "the session is no longer counted", func() bool { return f.d.Open() == 1 })

				tr.finish(t)
				waitFor(t, "no session is counted", func() bool { return f.d.Open() == 0 })
				got := f.internalErrors(t)
				if fmt.Sprint(got) != fmt.Sprint(tt.failures) && len(got)+len(tt.failures) > 0 {
					t.Errorf("internal errors counted: %v, want %v", got, tt.failures)
				}
				checkNoPanic(t, f, stdLog)
				f.stop(t)
				goleak.VerifyNone(t, leaks)
			})
		}
	}
}

// TestSlowMTA sends packets one byte a second, or part of a packet and
// then nothing: the idle timeout must close the session, because a packet
// has to arrive whole within it; while whole packets that come more often
// than the idle timeout keep a session open.
func TestSlowMTA(t *testing.T) {
	const (
		idle = 2 * time.Second
		// slack is what a loaded machine may add to the timeout.
		slack = 4 * time.Second
	)
	mail := mailPkt("alice@pass.example")
	var whole []byte
	for _, s := range sessionScript {
		whole = append(whole, bytes.Join(s.pkts, nil)...)
	}
	tests := []struct {
		name  string
		after string // script stages played at full speed first
		// trickle is sent one byte a second, over and over.
		trickle []byte
		// burst is sent at once, then nothing.
		burst []byte
	}{
		{name: "one byte a second from the first byte", trickle: whole},
		{name: "one byte a second after HELO", after: "HELO", trickle: whole[len(sessionScript[0].pkts[0]):]},
		{name: "one byte a second in a long header", after: "RCPT", trickle: headerPkt("X-Slow", strings.Repeat("x", 200))},
		{name: "half a length prefix, then nothing", after: "HELO", burst: mail[:2]},
		{name: "a length prefix, then nothing", after: "HELO", burst: mail[:4]},
		{name: "half a packet, then nothing", after: "HELO", burst: mail[:4+len(mail[4:])/2]},
	}
	stdLog := captureStdLog(t)
	leaks := goleak.IgnoreCurrent()
	// The cases wait more than they work: they run all at once, from
	// goroutines rather than with t.Parallel, which would run only
	// GOMAXPROCS of them at a time.
	var wg sync.WaitGroup
	run := func(name string, f func(t *testing.T)) {
		wg.Go(func() { t.Run(name, f) })
	}
	for _, rb := range []int{0, DefaultIOBuffer} {
		for _, tt := range tests {
			run(fmt.Sprintf("io-buffer=%d/%s", rb, tt.name), func(t *testing.T) {
				f := startFaultDaemon(t, DaemonOptions{IdleTimeout: idle, IOBuffer: rb}, nil)
				m := dialRaw(t, f.addr)
				m.runScript(tt.after)
				start := time.Now()
				if tt.burst != nil {
					m.send(tt.burst)
					m.c.SetReadDeadline(start.Add(idle + slack))
					if n, err := m.c.Read(make([]byte, 1)); n > 0 || !closedByPeer(err) {
						t.Fatalf("after part of a packet, read = %d, %v; want the milter to hang up", n, err)
					}
				} else {
					for i := 0; ; i++ {
						if time.Since(start) > idle+slack {
							t.Fatalf("still open after %v of one byte a second", time.Since(start).Round(time.Millisecond))
						}
						m.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
						if _, err := m.c.Write(tt.trickle[i%len(tt.trickle):][:1]); err != nil {
							// The milter hung up, and said so with a reset.
							break
						}
						// Wait a second, watching for the hang-up.
						m.c.SetReadDeadline(time.Now().Add(time.Second))
						n, err := m.c.Read(make([]byte, 1))
						if n > 0 {
							t.Fatal("the milter answered a packet sent one byte a second")
						}
						if closedByPeer(err) {
							break
						}
						if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
							t.Fatalf("read: %v", err)
						}
					}
				}
				t.Logf("closed %v after the slow part began (idle timeout %v)", time.Since(start).Round(time.Millisecond), idle)
				waitFor(t, "the session is no longer counted", func() bool { return f.d.Open() == 0 })
				if logs := f.dLogs.String(); !strings.Contains(logs, "session closed: idle timeout") || !strings.Contains(logs, "mid_packet=true") {
					t.Errorf("the daemon's log does not tell of an idle timeout in the middle of a packet:\n%s", logs)
				}
				checkNoPanic(t, f, stdLog)
			})
		}

		// Whole packets that come more often than the idle timeout are
		// activity, however slow the session is overall.
		run(fmt.Sprintf("io-buffer=%d/a whole packet a second", rb), func(t *testing.T) {
			f := startFaultDaemon(t, DaemonOptions{IdleTimeout: idle, IOBuffer: rb}, nil)
			m := dialRaw(t, f.addr)
			m.runScript("HELO")
			for start := time.Now(); time.Since(start) < 2*idle; time.Sleep(idle / 2) {
				m.send(macroPkt('M', "{mail_addr}", "alice@pass.example"))
			}
			m.play("MAIL", "EOM")
			m.hangUp(false)
			waitFor(t, "the session is no longer counted", func() bool { return f.d.Open() == 0 })
			if logs := f.dLogs.String(); strings.Contains(logs, "idle timeout") {
				t.Errorf("an active session was closed as idle:\n%s", logs)
			}
		})
	}
	wg.Wait()
	goleak.VerifyNone(t, leaks)
}

// panicHandler is a log handler that panics on the records match picks,
// as a bug in code a session calls would. Logging is the one thing a
// session does at the end of a message that can be made to fail from
// outside, so this is how a panic gets there.
type panicHandler struct {
	slog.Handler
	match func(slog.Record) bool
}

func (h panicHandler) Handle(ctx context.Context, r slog.Record) error {
	if h.match(r) {
		panic("log handler bug")
	}
	return h.Handler.Handle(ctx, r)
}

func (h panicHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return panicHandler{h.Handler.WithAttrs(as), h.match}
}

func (h panicHandler) WithGroup(name string) slog.Handler {
	return panicHandler{h.Handler.WithGroup(name), h.match}
}

// TestHandlerPanics makes the session panic at each stage where something
// it calls can: the panic is recovered, that message (or, at CONNECT, that
// connection's messages) is answered 451 4.3.0 and counted, and the
// connection goes on serving.
func TestHandlerPanics(t *testing.T) {
	// Decision lines of senders named panic-log, and skip lines of the
	// client 127.0.0.2, make the log handler panic.
	wrap := func(h slog.Handler) slog.Handler {
		return panicHandler{h, func(r slog.Record) bool {
			return r.Message == "spf decision" && strings.HasPrefix(logtest.Attr(r, "sender"), "panic-log@") ||
				r.Message == "spf skipped" && logtest.Attr(r, "client_ip") == "127.0.0.2"
		}}
	}
	tests := []struct {
		name   string
		client string
		from   string
		// want are the answers to CONNECT, HELO, MAIL and the end of the
		// message, "" where the stage is not reached.
		want  [4]string
		stage string // where the failure is counted
		cause string // the error logged
		// next is what the next message on the same connection gets at
		// MAIL.
		next string
	}{
		{name: "the resolver panics at MAIL", client: clientIP, from: "alice@panic.example",
			want: [4]string{"continue", "continue", internalErrorReply, ""}, stage: "mail", cause: "resolver bug", next: "continue"},
		{name: "logging a refusal panics at MAIL", client: clientIP, from: "panic-log@fail.example",
			want: [4]string{"continue", "continue", internalErrorReply, ""}, stage: "mail", cause: "log handler bug", next: "continue"},
		{name: "logging the decision panics at the end of the message", client: clientIP, from: "panic-log@pass.example",
			want: [4]string{"continue", "continue", "continue", internalErrorReply}, stage: "eom", cause: "log handler bug", next: "continue"},
		// The connection data is unknown after a failed CONNECT: every
		// message of that connection is deferred, never passed unchecked.
		{name: "logging a trusted client panics at CONNECT", client: "127.0.0.2", from: "alice@pass.example",
			want: [4]string{internalErrorReply, internalErrorReply, internalErrorReply, ""}, stage: "connect", cause: "log handler bug", next: internalErrorReply},
	}
	stdLog := captureStdLog(t)
	// With noReply, the MTA is told not to wait for the replies at
	// CONNECT and HELO (go-milter's client then answers continue itself):
	// a failure there must be refused at MAIL all the same.
	for _, mode := range []struct {
		ioBuffer int
		noReply  bool
	}{{0, false}, {DefaultIOBuffer, false}, {DefaultIOBuffer, true}} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("io-buffer=%d/no-reply=%v/%s", mode.ioBuffer, mode.noReply, tt.name), func(t *testing.T) {
				leaks := goleak.IgnoreCurrent()
				opts := DaemonOptions{IdleTimeout: time.Minute, IOBuffer: mode.ioBuffer}
				var offer gomilter.OptProtocol
				if mode.noReply {
					opts.SkipReplies, offer = true, postfixProtocol
					tt.want[0], tt.want[1] = "continue", "continue"
				}
				f := startFaultDaemon(t, opts, wrap)
				c := gomilter.NewClientWithOptions("tcp", f.addr, gomilter.ClientOptions{
					ReadTimeout:  10 * time.Second,
					WriteTimeout: 10 * time.Second,
					ActionMask:   gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptQuarantine,
					ProtocolMask: offer,
				})
				cs, err := c.Session()
				if err != nil {
					t.Fatal(err)
				}
				defer cs.Close()
				h := &harness{t: t}
				var got [4]string
				got[0] = reply(must(t)(cs.Conn("client.example", gomilter.FamilyInet, 40000, tt.client)))
				got[1] = reply(must(t)(cs.Helo(passHELO)))
				o := h.send(cs, message{from: tt.from, rcpts: []string{"bob@example.net"}})
				got[2] = reply(o.mail)
				if o.end != nil {
					got[3] = reply(o.end)
				}
				if got != tt.want {
					t.Fatalf("answers %q, want %q", got, tt.want)
				}

				fails := f.rtLogs.lines(t, "spf internal failure, message deferred")
				if len(fails) != 1 || fails[0]["stage"] != tt.stage || fails[0]["error"] != tt.cause ||
					!strings.Contains(fmt.Sprint(fails[0]["stack"]), "panic") {
					t.Errorf("failure log lines %v, want one at %s for %q with a stack", fails, tt.stage, tt.cause)
				}
				if got, want := f.internalErrors(t), map[string]float64{tt.stage: 1}; fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("internal errors counted %v, want %v", got, want)
				}

				// The same connection serves the next message.
				if tt.next == "continue" {
					if err := goodMessage(cs, "QNEXT"); err != nil {
						t.Errorf("next message on the connection: %v", err)
					}
				} else if o := h.send(cs, message{from: "alice@pass.example", rcpts: []string{"bob@example.net"}}); reply(o.mail) != tt.next {
					t.Errorf("next message on the connection: MAIL answered %q, want %q", reply(o.mail), tt.next)
				}
				cs.Close()
				// And a new connection is served normally.
				tr := startTraffic(t, f.addr)
				tr.finish(t)
				waitFor(t, "no session is counted", func() bool { return f.d.Open() == 0 })

				// go-milter's own recovery, which would drop the
				// connection, was never reached.
				if text := stdLog.String(); strings.Contains(text, "panic") {
					t.Errorf("go-milter recovered a panic:\n%s", text)
				}
				f.stop(t)
				goleak.VerifyNone(t, leaks)
			})
		}
	}
}
