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
	"net/netip"
	"os"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
	"github.com/emersion/go-msgauth/authres"
	"github.com/miekg/dns"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/internal/dnstest"
	"github.com/spf-milter/spf-milter/internal/logtest"
	"github.com/spf-milter/spf-milter/milter/internal/wire"
	"github.com/spf-milter/spf-milter/spf"
)

// FuzzSession plays random packet streams, as a broken or hostile MTA
// would send them, into a real session: go-milter's Server running our
// NewServer milter over a unix socket pair, either plain or through our
// Daemon with SkipReplies, with checks answered from an
// in-memory zone. For every input:
//
//   - no panic happens, in our callbacks (the guard would hide it as a
//     tempfail) or in go-milter (whose own recover would drop the
//     connection);
//   - the session ends within fuzzSessionBound once the MTA's input ends,
//     and every goroutine it started has ended;
//   - every command go-milter hands to a callback is answered, exactly
//     once and in order, and nothing else is sent;
//   - every reply is well-formed: a custom reply is one valid SMTP reply
//     line, header changes come only at the end of a message and carry a
//     valid field name and a correctly folded value with no control
//     characters, deletions name a header the MTA sent, from the highest
//     index down, and remove exactly the forged copies of our headers;
//   - through the Daemon, the answer to a negotiation is go-milter's
//     (version 2) unless the MTA offers version 6 or later and some of
//     wire.NoReplyStages: then it is version 6 with exactly those bits added;
//     the commands of the stages negotiated get no reply at all, and the
//     Daemon closes a session for a protocol error only where go-milter
//     itself answers such a command with something the MTA cannot be
//     left to miss (a connect packet without a port).
//
// An input is one flags byte choosing the config (fuzzConfig), one mode
// byte, and the stream. Bit 0 of the mode byte (fuzzRaw) sends the rest as
// it is (lengths and all); without it the rest is a list of packets, each
// a command byte, a length (one byte, or 0xff and two bytes) and that much
// payload, framed here, so that mutations of a payload keep the framing
// right. Bit 1 (fuzzViaDaemon) serves the session through a Daemon
// instead of go-milter's Server alone.
func FuzzSession(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	zone := fuzzZone(f)
	// go-milter writes to the standard logger (a recovered panic among
	// it): collected, so that its complaints about malformed packets do not
	// flood the fuzzer's output.
	stdLog := &logtest.Buffer{}
	prevOut, prevFlags := log.Writer(), log.Flags()
	log.SetOutput(stdLog)
	log.SetFlags(0)
	f.Cleanup(func() {
		log.SetOutput(prevOut)
		log.SetFlags(prevFlags)
	})
	metrics := NewMetrics()
	f.Fuzz(func(t *testing.T, data []byte) {
		flags, viaDaemon, stream := decodeFuzzInput(data)
		cfg := fuzzConfig(flags)
		logs := fuzzLogHandler()
		rt := &Runtime{
			Config: cfg,
			Checker: &spf.Checker{
				Resolver:    dnstest.NewMapResolver(zone),
				Receiver:    cfg.Receiver,
				Explanation: cfg.Explanation,
				Timeout:     5 * time.Second,
			},
			Log:     slog.New(logs),
			Metrics: metrics,
		}
		stdLog.Reset()
		before := runtime.NumGoroutine()

		resps, srv, events := runFuzzSession(t, rt, stream, viaDaemon)

		for _, p := range recoveredPanics(logs) {
			t.Errorf("panic recovered by the guard:\n%s", p)
		}
		if s := stdLog.String(); strings.Contains(s, "panic") {
			t.Errorf("panic in the session goroutine (recovered by go-milter, connection dropped):\n%s", s)
		}
		for _, e := range events {
			t.Logf("daemon: %s", e)
		}
		var noReply gomilter.OptProtocol
		if viaDaemon {
			noReply = wire.NoReplyStages
		}
		refused := checkResponses(t, cfg, srv, stream, resps, noReply)
		checkDaemonEvents(t, events, refused)
		waitGoroutines(t, before)
	})
}

// fuzzSessionBound is how long a session may take from the start of an
// input to its end. With the answers in memory a session takes
// milliseconds; the bound only has to tell a hang from a slow machine.
const fuzzSessionBound = 20 * time.Second

// fuzzZone publishes a domain per SPF result and the records that carry
// hostile text into headers and replies: explanations with macros and with
// control characters, a PTR name with CR and LF, macros of the client's own
// HELO and sender in mechanisms.
func fuzzZone(tb testing.TB) *dnstest.Zone {
	tb.Helper()
	z := dnstest.NewZone()
	if err := z.Add(
		`pass.example. TXT "v=spf1 ip4:192.0.2.0/25 ip6:2001:db8::/64 -all"`,
		`fail.example. TXT "v=spf1 -all"`,
		`softfail.example. TXT "v=spf1 ~all"`,
		`neutral.example. TXT "v=spf1 ?all"`,
		`none.example. A 192.0.2.99`,
		`permerror.example. TXT "v=spf1 foo -all"`,
		`mx.pass.example. TXT "v=spf1 a -all"`,
		`mx.pass.example. A 192.0.2.1`,
		`mx.pass.example. AAAA 2001:db8::25`,
		`mx.fail.example. TXT "v=spf1 -all"`,
		`exp.example. TXT "v=spf1 -all exp=why.exp.example"`,
		`why.exp.example. TXT "%{s} %{l} %{o} %{d} %{i} %{p} %{v} %{h} %{c} %{r} %{t} %% %_ %- %{ir}.%{l1r-}"`,
		`badexp.example. TXT "v=spf1 -all exp=why.badexp.example"`,
		`macro.example. TXT "v=spf1 exists:%{l}.%{o}.x.example include:%{h} a:%{d} mx ptr ~all"`,
		`macro.example. MX 10 mx.pass.example.`,
		`helomacro.example. TXT "v=spf1 a:%{h}.%{l}.example ptr:%{h} -all exp=why.exp.example"`,
		`include.example. TXT "v=spf1 include:pass.example include:fail.example ~all"`,
		`redirect.example. TXT "v=spf1 redirect=%{h}"`,
		`ptr.example. TXT "v=spf1 ptr -all exp=why.exp.example"`,
		`loop.example. TXT "v=spf1 include:loop.example -all"`,
		`two.example. TXT "v=spf1 -all"`,
		`two.example. TXT "v=spf1 +all"`,
		`1.2.0.192.in-addr.arpa. PTR mx.pass.example.`,
		`9.2.0.192.in-addr.arpa. PTR evil\013\010Injected:\032yes.example.`,
		`9.2.0.192.in-addr.arpa. PTR %\037%{s}.example.`,
	); err != nil {
		tb.Fatal(err)
	}
	z.AddTXT("why.badexp.example", "bad\r\nX-Injected: yes\x00 \xc3\xa9 %% \x7f tab\tend")
	z.AddTXT("long.example", "v=spf1 -all exp=why.long.example")
	long := make([]string, 3)
	for i := range long {
		long[i] = strings.Repeat("%{s} %% very long text ", 10)
	}
	z.AddTXT("why.long.example", long...)
	z.Rcode("temperror.example", dns.RcodeServerFailure)
	z.Rcode("mx.temperror.example", dns.RcodeServerFailure)
	z.Timeout("timeout.example")
	return z
}

// Bits of the flags byte that choose the config variant of an input.
const (
	fuzzStrict      = 1 << iota // refuse every result but pass
	fuzzTemplates               // reply templates and explanation with macros
	fuzzQuarantine              // quarantine instead of reject
	fuzzNeverRefuse             // refusals move to RCPT TO
	fuzzDryRun                  // decide, never refuse
	fuzzHELOPolicy              // act on HELO results too
	fuzzFewHeaders              // only Authentication-Results, forged kept
	fuzzSkips                   // trusted and skipped clients and senders
)

// fuzzConfig builds the config variant flags asks for: the default one,
// with our names, when flags is 0.
func fuzzConfig(flags byte) *config.Config {
	cfg := config.Default()
	cfg.AuthservID = ourAuthID
	cfg.Receiver = ourAuthID
	cfg.TrustedNetworks = nil
	if flags&fuzzStrict != 0 {
		for _, r := range spf.Results {
			if r != spf.Pass {
				cfg.Policy.MailFrom[r] = config.Reject
			}
		}
		cfg.Policy.MailFrom[spf.TempError] = config.Tempfail
	}
	if flags&fuzzTemplates != 0 {
		cfg.Explanation = "%{s} %{h} may not send from %{i} (%{l} at %{o}) %% %_ %-"
		for _, r := range spf.Results {
			cfg.Replies[r] = "%{s} via %{h} from %{i}: " + string(r) + " %% %{r} %{l}%_%{o}%-"
		}
	}
	if flags&fuzzQuarantine != 0 {
		cfg.Policy.MailFrom[spf.Fail] = config.Quarantine
		cfg.Policy.MailFrom[spf.Softfail] = config.Quarantine
		cfg.Policy.HELO[spf.Fail] = config.Quarantine
	}
	if flags&fuzzNeverRefuse != 0 {
		cfg.NeverRefuse = []string{"postmaster", "abuse@example.net"}
	}
	cfg.DryRun = flags&fuzzDryRun != 0
	if flags&fuzzHELOPolicy != 0 {
		for _, r := range spf.Results {
			if r != spf.Pass && r != spf.None {
				cfg.Policy.HELO[r] = config.Reject
			}
		}
		cfg.Policy.HELO[spf.TempError] = config.Tempfail
	}
	if flags&fuzzFewHeaders != 0 {
		cfg.Headers.ReceivedSPF = false
		cfg.Headers.RemoveForged = false
	}
	if flags&fuzzSkips != 0 {
		cfg.TrustedNetworks = []netip.Prefix{netip.MustParsePrefix("192.0.2.128/26")}
		cfg.SkipClients = []netip.Prefix{netip.MustParsePrefix("192.0.2.192/26")}
		cfg.SkipSenders = []string{"skip.example"}
		cfg.SkipAuthenticated = false
		cfg.Relays = []netip.Prefix{netip.MustParsePrefix("192.0.2.64/27")}
	}
	return cfg
}

// Bits of the mode byte of an input.
const (
	fuzzRaw       = 1 << iota // the stream is sent as it is, not framed here
	fuzzViaDaemon             // the session runs through a Daemon with SkipReplies
)

// decodeFuzzInput splits an input into its config flags, whether the
// session runs through a Daemon, and the byte stream the MTA sends (see
// FuzzSession).
func decodeFuzzInput(data []byte) (flags byte, viaDaemon bool, stream []byte) {
	if len(data) < 2 {
		return 0, false, nil
	}
	flags, mode, rest := data[0], data[1], data[2:]
	viaDaemon = mode&fuzzViaDaemon != 0
	if mode&fuzzRaw != 0 {
		return flags, viaDaemon, rest
	}
	for len(rest) > 0 {
		code := rest[0]
		rest = rest[1:]
		n := 0
		if len(rest) > 0 {
			n, rest = int(rest[0]), rest[1:]
			if n == 0xff && len(rest) >= 2 {
				n, rest = int(binary.BigEndian.Uint16(rest)), rest[2:]
			}
		}
		n = min(n, len(rest))
		stream = appendPacket(stream, code, rest[:n])
		rest = rest[n:]
	}
	return flags, viaDaemon, stream
}

// appendPacket frames one milter packet: its length, then the command
// byte and the payload.
func appendPacket(b []byte, code byte, payload []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)+1))
	b = append(b, code)
	return append(b, payload...)
}

// fuzzResponse is one packet the milter sent.
type fuzzResponse struct {
	code byte
	data []byte
}

// runFuzzSession serves one session over a socket pair, sends stream and
// half-closes, and returns every packet the milter sent until it closed
// its end. viaDaemon serves it through a Daemon with SkipReplies,
// instead of go-milter's Server alone; the Daemon's events
// about the session are returned too (fuzzDaemonLog). It fails t if the
// session or one of its goroutines does not end within fuzzSessionBound,
// or if the Daemon does not shut down cleanly after it.
func runFuzzSession(t *testing.T, rt *Runtime, stream []byte, viaDaemon bool) ([]fuzzResponse, *gomilter.Server, []string) {
	client, server, err := socketPair()
	if err != nil {
		t.Fatal(err)
	}
	sc := &fuzzConn{Conn: server, closed: make(chan struct{})}
	ln := &fuzzListener{conn: make(chan net.Conn, 1), closed: make(chan struct{})}
	ln.conn <- sc
	srv := NewServer(func() *Runtime { return rt })

	// serve runs until stop is called. Both go-milter's Serve and the
	// Daemon's end with the listener's error once it is closed; the
	// Daemon's Shutdown closes it, and then checks that no session is left
	// open (the session's conn is untracked just after it closes sc).
	serve := func() { _ = srv.Serve(ln) }
	stop := func() error { return ln.Close() }
	dlog := fuzzDaemonLog()
	if viaDaemon {
		d := NewDaemon(srv, DaemonOptions{
			// The whole stream is sent at once: an idle timeout means a
			// session stuck on something else, and is reported by the log
			// well before fuzzSessionBound.
			IdleTimeout: fuzzSessionBound / 2,
			IOBuffer:    DefaultIOBuffer,
			SkipReplies: true,
			Log:         slog.New(dlog),
		})
		serve = func() { _ = d.Serve(ln) }
		stop = func() error {
			ctx, cancel := context.WithTimeout(context.Background(), fuzzSessionBound)
			defer cancel()
			return d.Shutdown(ctx)
		}
	}

	var (
		wg      sync.WaitGroup
		resps   []fuzzResponse
		readErr error
	)
	wg.Add(3)
	go func() {
		defer wg.Done()
		serve()
	}()
	go func() {
		defer wg.Done()
		resps, readErr = readResponses(client)
	}()
	go func() {
		defer wg.Done()
		// The milter may close first (a Quit, an unknown command): the
		// rest of the stream then fails to send, which is fine.
		_, _ = client.Write(stream)
		_ = client.CloseWrite()
	}()

	timer := time.NewTimer(fuzzSessionBound)
	defer timer.Stop()
	select {
	case <-sc.closed:
	case <-timer.C:
		stacks := allStacks()
		// Unblock what can be unblocked; a callback that loops for ever
		// stays, and the failure stops the fuzzer anyway.
		client.Close()
		ln.Close()
		t.Fatalf("session still open %v after its input started (%d bytes)\n%s", fuzzSessionBound, len(stream), stacks)
	}
	if err := stop(); err != nil {
		client.Close()
		ln.Close()
		t.Fatalf("shutting down after the session: %v", err)
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-timer.C:
		stacks := allStacks()
		client.Close()
		t.Fatalf("session closed but its goroutines still run after %v\n%s", fuzzSessionBound, stacks)
	}
	client.Close()
	if readErr != nil {
		t.Fatalf("reading the milter's replies: %v", readErr)
	}
	return resps, srv, sessionEvents(dlog)
}

// fuzzDaemonLog keeps the events a Daemon logs about how a session was
// closed (a timeout, a protocol error); its notes about shutting down are
// not kept.
func fuzzDaemonLog() *logtest.Handler {
	return &logtest.Handler{Level: slog.LevelInfo, Keep: func(r slog.Record) bool {
		return strings.HasPrefix(r.Message, "session closed")
	}}
}

// sessionEvents renders the records of a fuzzDaemonLog one line each,
// message then attributes.
func sessionEvents(h *logtest.Handler) []string {
	var list []string
	for _, r := range h.Records() {
		var b strings.Builder
		b.WriteString(r.Message)
		r.Attrs(func(a slog.Attr) bool {
			fmt.Fprintf(&b, " %s=%q", a.Key, a.Value.String())
			return true
		})
		list = append(list, b.String())
	}
	return list
}

// checkDaemonEvents checks how the Daemon closed the session: for a
// protocol error exactly when refused (checkResponses says go-milter
// answered a command the MTA was told not to wait for with something it
// must not miss), and never for a timeout.
func checkDaemonEvents(t *testing.T, events []string, refused bool) {
	t.Helper()
	switch {
	case refused && (len(events) != 1 || !strings.HasPrefix(events[0], "session closed: protocol error")):
		t.Fatalf("the daemon should have closed the session for a protocol error; it logged %q", events)
	case !refused && len(events) > 0:
		t.Fatalf("the daemon closed the session: %q", events)
	}
}

// socketPair returns the two ends of a connected unix stream socket pair:
// like net.Pipe, but with kernel buffers and a half-close, so that the
// MTA side can say "no more input" and still read every reply.
func socketPair() (*net.UnixConn, *net.UnixConn, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	a, errA := fileConn(fds[0], "mta")
	b, errB := fileConn(fds[1], "milter")
	if err := errors.Join(errA, errB); err != nil {
		if a != nil {
			a.Close()
		}
		if b != nil {
			b.Close()
		}
		return nil, nil, err
	}
	return a, b, nil
}

// fileConn makes a net.Conn of fd and closes fd (net.FileConn has its own
// copy).
func fileConn(fd int, name string) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	return c.(*net.UnixConn), nil
}

// fuzzConn is the milter's end of a session; closed is closed when
// go-milter closes it, which it does last, as its session goroutine ends.
type fuzzConn struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
}

func (c *fuzzConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.closed) })
	return err
}

// fuzzListener hands go-milter's Serve one connection, then blocks its
// next Accept until closed.
type fuzzListener struct {
	conn   chan net.Conn
	once   sync.Once
	closed chan struct{}
}

func (l *fuzzListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conn:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *fuzzListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *fuzzListener) Addr() net.Addr { return &net.UnixAddr{Name: "fuzz", Net: "unix"} }

// readResponses reads milter packets from c until the milter closes it.
// A packet that is not well framed is an error; the rest is then drained
// so that the milter never blocks writing.
func readResponses(c net.Conn) ([]fuzzResponse, error) {
	var out []fuzzResponse
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			// A unix socket closed with input unread resets its peer:
			// that is how the milter hangs up on a stream it stopped
			// reading (a Quit, an unknown command). A reply lost to it
			// shows up as a command without a reply.
			if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
				return out, nil
			}
			_, _ = io.Copy(io.Discard, c)
			return out, fmt.Errorf("after %d packets: %w", len(out), err)
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n == 0 || n > 1<<20 {
			_, _ = io.Copy(io.Discard, c)
			return out, fmt.Errorf("after %d packets: packet length %d", len(out), n)
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(c, buf); err != nil {
			_, _ = io.Copy(io.Discard, c)
			return out, fmt.Errorf("after %d packets: truncated packet: %w", len(out), err)
		}
		out = append(out, fuzzResponse{code: buf[0], data: buf[1:]})
	}
}

// sentPacket is one packet of the stream as go-milter reads it.
type sentPacket struct {
	code byte
	data []byte
}

// serverPackets splits stream the way go-milter's readPacket does: it
// stops at a zero or oversized length, and a packet cut short by the end
// of the input is never processed.
func serverPackets(stream []byte) []sentPacket {
	var out []sentPacket
	for len(stream) >= 4 {
		n := binary.BigEndian.Uint32(stream)
		if n == 0 || n > 1<<20 || uint64(len(stream)-4) < uint64(n) {
			break
		}
		out = append(out, sentPacket{code: stream[4], data: stream[5 : 4+n]})
		stream = stream[4+n:]
	}
	return out
}

// expectation says what go-milter v0.5.0 (session.go, Process) does with
// one packet: whether a callback answers it, and whether the session
// ends there (Quit, an unknown command, a malformed connect or macro
// packet).
func expectation(p sentPacket) (answered, ends bool) {
	switch p.code {
	case 'A':
		return false, false
	case 'D':
		return false, len(p.data) == 0
	case 'Q':
		return false, true
	case 'C':
		host := cstring(p.data)
		return len(p.data) >= len(host)+2, len(p.data) < len(host)+2
	case 'B', 'E', 'H', 'L', 'M', 'N', 'O', 'R', 'T':
		return true, false
	}
	return false, true
}

// cstring is the text up to the first NUL, or all of b.
func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return string(b[:i])
	}
	return string(b)
}

// shortConnect reports whether go-milter answers a connect packet itself
// with its fixed tempfail: an inet family with fewer than two bytes of
// port.
func shortConnect(data []byte) bool {
	host := cstring(data)
	rest := data[len(host)+1:]
	return (rest[0] == '4' || rest[0] == '6') && len(rest[1:]) < 2
}

// headerName is the field name go-milter hands to the Header callback for
// a header packet, and whether it calls it at all.
func headerName(data []byte) (string, string, bool) {
	if len(data) == 0 {
		return "", "", false
	}
	parts := strings.Split(strings.Trim(string(data), "\x00"), "\x00")
	switch len(parts) {
	case 1:
		return parts[0], "", true
	case 2:
		return parts[0], parts[1], true
	}
	return "", "", false
}

// sentHeader is a header field the MTA sent in the current message.
type sentHeader struct{ name, value string }

// checkResponses matches the milter's packets with the commands of
// stream, in order, and checks each one. noReply is the stages a Daemon
// with SkipReplies may negotiate (wire.NoReplyStages) when the session ran
// through one (0 for go-milter's Server alone): the
// commands of the stages a negotiation answer then lists in its protocol
// mask get no reply. It returns whether the Daemon must have closed the
// session for a protocol error: go-milter answered such a command with
// something other than continue or a custom reply.
func checkResponses(t *testing.T, cfg *config.Config, srv *gomilter.Server, stream []byte, resps []fuzzResponse, noReply gomilter.OptProtocol) (refused bool) {
	t.Helper()
	var headers []sentHeader // since the last MAIL FROM
	// quiet is the protocol mask of the last negotiation answered: the
	// commands whose SMFIP_NR_* bit it has get no reply.
	var quiet gomilter.OptProtocol
	next := 0
	for i, p := range serverPackets(stream) {
		answered, ends := expectation(p)
		switch p.code {
		case 'M':
			headers = nil
		case 'L':
			if name, value, ok := headerName(p.data); ok {
				headers = append(headers, sentHeader{name, value})
			}
		}
		if answered && quiet&wire.CommandBit(p.code) != 0 {
			answered = false
			if p.code == 'C' && shortConnect(p.data) {
				// go-milter answers its fixed tempfail itself, which the
				// MTA would not read: the Daemon closes the session
				// instead of dropping it.
				refused, ends = true, true
			}
		}
		if answered {
			var mods []fuzzResponse
			for next < len(resps) && isModification(resps[next].code) {
				mods = append(mods, resps[next])
				next++
			}
			if next == len(resps) {
				t.Fatalf("command %d %q (%q) got no reply (%d replies in all)", i, p.code, p.data, len(resps))
			}
			if len(mods) > 0 && p.code != 'E' {
				t.Fatalf("command %d %q answered with changes %q: changes are only allowed at end of message", i, p.code, mods)
			}
			if p.code == 'O' {
				quiet = checkNegotiation(t, srv, noReply, p.data, resps[next])
			} else {
				checkFinal(t, p, resps[next])
			}
			if p.code == 'E' {
				checkChanges(t, cfg, headers, mods)
			}
			next++
		}
		if ends {
			break
		}
	}
	if next != len(resps) {
		t.Fatalf("%d replies that answer no command: %q", len(resps)-next, resps[next:])
	}
	return refused
}

// checkNegotiation checks the answer r to the MTA's negotiation packet
// (its data offer) and returns the protocol mask it sets. go-milter
// answers version 2 with its server's actions and protocol, whatever the
// MTA offers. A Daemon with SkipReplies adds, with version 6, the bits of
// noReply the MTA offers when it offers version 6 or later, and leaves the answer
// alone otherwise.
func checkNegotiation(t *testing.T, srv *gomilter.Server, noReply gomilter.OptProtocol, offer []byte, r fuzzResponse) gomilter.OptProtocol {
	t.Helper()
	if r.code != 'O' || len(r.data) != 12 {
		t.Fatalf("negotiation %x answered %q %x", offer, r.code, r.data)
	}
	version := binary.BigEndian.Uint32(r.data)
	actions := gomilter.OptAction(binary.BigEndian.Uint32(r.data[4:]))
	protocol := gomilter.OptProtocol(binary.BigEndian.Uint32(r.data[8:]))
	// Version 6 is the first to define all the SMFIP_NR_* bits.
	var want gomilter.OptProtocol
	if len(offer) >= 12 && binary.BigEndian.Uint32(offer) >= 6 {
		want = noReply & gomilter.OptProtocol(binary.BigEndian.Uint32(offer[8:]))
	}
	added := protocol &^ srv.Protocol
	switch {
	case actions != srv.Actions || protocol&srv.Protocol != srv.Protocol:
		t.Fatalf("negotiation %x answered %x: actions %#x and protocol %#x, want %#x and %#x plus NR bits",
			offer, r.data, actions, protocol, srv.Actions, srv.Protocol)
	case added != want:
		t.Fatalf("negotiation %x answered %x: protocol bits %#x added, want %#x", offer, r.data, added, want)
	case (version == 6) != (added != 0):
		t.Fatalf("negotiation %x answered %x: version %d with protocol bits %#x added", offer, r.data, version, added)
	case added == 0 && version != 2:
		t.Fatalf("negotiation %x answered %x: version %d, want go-milter's 2", offer, r.data, version)
	}
	return protocol
}

func isModification(code byte) bool {
	switch code {
	case '+', '-', 'b', 'e', 'h', 'i', 'm', 'q', '2':
		return true
	}
	return false
}

// replyLine is a custom SMTP reply as the MTA passes it on: a 4xx or 5xx
// code, an RFC 3463 enhanced code of the same class, and text.
var replyLine = regexp.MustCompile(`^([45])[0-9][0-9] ([45])\.[0-9]{1,3}\.[0-9]{1,3} [!-~][ -~]*$`)

// checkFinal checks the reply that answers command p, other than a
// negotiation (checkNegotiation).
func checkFinal(t *testing.T, p sentPacket, r fuzzResponse) {
	t.Helper()
	switch {
	case r.code == 'c':
		if len(r.data) != 0 {
			t.Fatalf("continue with data %q", r.data)
		}
	case r.code == 'y':
		if err := checkReplyPacket(r.data); err != nil {
			t.Fatalf("command %q (%q): custom reply %q: %v", p.code, p.data, r.data, err)
		}
	case r.code == 't' && p.code == 'C' && shortConnect(p.data):
		// go-milter's own answer to a connect packet without a port.
	default:
		// Fixed accept, reject, discard or tempfail would make go-milter
		// drop the connection's data (docs/wire.md); anything else is no reply.
		t.Fatalf("command %q (%q) answered %q %q", p.code, p.data, r.code, r.data)
	}
}

// checkReplyPacket checks the data of a custom reply packet: one reply line
// ending in NUL.
func checkReplyPacket(data []byte) error {
	if len(data) == 0 || bytes.IndexByte(data, 0) != len(data)-1 {
		return errors.New("not one NUL-terminated string")
	}
	text := string(data[:len(data)-1])
	m := replyLine.FindStringSubmatch(text)
	if m == nil {
		return errors.New("not one reply line of printable ASCII with an enhanced code")
	}
	if m[1] != m[2] {
		return errors.New("enhanced code of another class than the reply code")
	}
	// RFC 5321 §4.5.3.1.5: 512 octets with the CRLF.
	if len(text) > 510 {
		return fmt.Errorf("%d octets", len(text))
	}
	// The MTA reads '%' as a format character: every one is doubled.
	if strings.Contains(strings.ReplaceAll(text, "%%", ""), "%") {
		return errors.New("a lone '%'")
	}
	return nil
}

// Header fields we write.
var ourHeaders = []string{headerReceivedSPF, headerAuthResults}

// receivedSPFValue is how SpamAssassin recognises a Received-SPF value.
var receivedSPFValue = regexp.MustCompile(`^(pass|neutral|(soft)?fail|(temp|perm)error|none)\b`)

// checkChanges checks the changes that came with an end of message:
// each is well-formed, deletions name fields the MTA sent, from the
// highest index down, and a message that got our headers had exactly the
// forged copies of them removed.
func checkChanges(t *testing.T, cfg *config.Config, headers []sentHeader, mods []fuzzResponse) {
	t.Helper()
	lastDeleted := map[string]uint32{}
	deleted := map[string]map[uint32]bool{}
	inserted := map[string]int{}
	for _, r := range mods {
		var index uint32
		data := r.data
		switch r.code {
		case 'i', 'm':
			if len(data) < 4 {
				t.Fatalf("change %q without an index: %q", r.code, data)
			}
			index, data = binary.BigEndian.Uint32(data), data[4:]
		case 'h':
		case 'q':
			if err := checkQuarantineReason(data); err != nil {
				t.Fatalf("quarantine %q: %v", data, err)
			}
			continue
		default:
			t.Fatalf("change %q %q: we never send one", r.code, r.data)
		}
		parts := bytes.Split(data, []byte{0})
		if len(parts) != 3 || len(parts[2]) != 0 {
			t.Fatalf("change %q %q: not a name and a value, each NUL-terminated", r.code, data)
		}
		name, value := string(parts[0]), string(parts[1])
		if err := checkWrittenField(name, value); err != nil {
			t.Fatalf("change %q #%d %q: %q: %v", r.code, index, name, value, err)
		}
		canon := canonicalOurs(name)
		if canon == "" {
			t.Fatalf("change %q of %q: not one of our fields", r.code, name)
		}
		switch {
		case r.code == 'm' && value == "":
			n := 0
			var target sentHeader
			for _, h := range headers {
				if strings.EqualFold(h.name, name) {
					n++
					if uint32(n) == index {
						target = h
					}
				}
			}
			if index < 1 || index > uint32(n) {
				t.Fatalf("deletes %s #%d of %d sent", name, index, n)
			}
			if last, ok := lastDeleted[canon]; ok && index >= last {
				t.Fatalf("deletes %s #%d after #%d: deletions must go from the highest index down", name, index, last)
			}
			lastDeleted[canon] = index
			if deleted[canon] == nil {
				deleted[canon] = map[uint32]bool{}
			}
			deleted[canon][index] = true
			if canon == headerAuthResults && !strings.Contains(strings.ToLower(target.value), strings.ToLower(cfg.AuthservID)) {
				t.Fatalf("deletes %s #%d %q, which is not ours", name, index, target.value)
			}
		case r.code == 'm':
			t.Fatalf("changes %s #%d to %q: we only delete", name, index, value)
		default:
			inserted[canon]++
			unfolded := strings.ReplaceAll(value, "\n", "")
			switch canon {
			case headerAuthResults:
				id, _, err := authres.Parse(unfolded)
				if err != nil || id != cfg.AuthservID {
					t.Fatalf("inserts %s %q: authres.Parse gives %q, %v", name, value, id, err)
				}
			case headerReceivedSPF:
				if !receivedSPFValue.MatchString(unfolded) {
					t.Fatalf("inserts %s %q: no result first", name, value)
				}
			}
		}
	}
	if len(inserted) == 0 {
		return
	}
	// A checked message: one header of each kind asked for (Received-SPF
	// once per identity checked), and the forged copies removed.
	if n := inserted[headerReceivedSPF]; cfg.Headers.ReceivedSPF && (n < 1 || n > 2) || !cfg.Headers.ReceivedSPF && n != 0 {
		t.Fatalf("%d %s inserted", n, headerReceivedSPF)
	}
	if n := inserted[headerAuthResults]; cfg.Headers.AuthenticationResults && n != 1 || !cfg.Headers.AuthenticationResults && n != 0 {
		t.Fatalf("%d %s inserted", n, headerAuthResults)
	}
	counts := map[string]uint32{}
	for _, h := range headers {
		canon := canonicalOurs(h.name)
		if canon == "" {
			continue
		}
		counts[canon]++
		i := counts[canon]
		gone := deleted[canon][i]
		var must, mustNot bool
		switch canon {
		case headerReceivedSPF:
			must = true
		case headerAuthResults:
			v := strings.ToLower(strings.TrimLeft(h.value, " \t"))
			id := strings.ToLower(cfg.AuthservID)
			rest, isOurs := strings.CutPrefix(v, id)
			must = isOurs && (rest == "" || rest[0] == ';' || rest[0] == ' ' || rest[0] == '\t')
			mustNot = !strings.Contains(v, id)
		}
		must = must && cfg.Headers.RemoveForged
		mustNot = mustNot || !cfg.Headers.RemoveForged
		if must && !gone {
			t.Fatalf("forged %s #%d %q kept", h.name, i, h.value)
		}
		if mustNot && gone {
			t.Fatalf("%s #%d %q removed", h.name, i, h.value)
		}
	}
}

// canonicalOurs returns the spelling of our field name that name is, in
// any letter case, or "".
func canonicalOurs(name string) string {
	for _, h := range ourHeaders {
		if strings.EqualFold(h, name) {
			return h
		}
	}
	return ""
}

// checkWrittenField checks a header field we write (RFC 5322 §2.2, §3.6.8): a
// name of printable ASCII without ':', and a value of printable ASCII
// folded with LF before white space, no continuation line blank, none
// longer than 998 octets. An empty value is a deletion.
func checkWrittenField(name, value string) error {
	if name == "" {
		return errors.New("empty name")
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < '!' || c > '~' || c == ':' {
			return fmt.Errorf("name byte %q", c)
		}
	}
	for i, line := range strings.Split(value, "\n") {
		for j := 0; j < len(line); j++ {
			if c := line[j]; (c < ' ' && c != '\t') || c > '~' {
				return fmt.Errorf("line %d: byte %q", i+1, c)
			}
		}
		n := len(line)
		if i == 0 {
			n += len(name) + len(": ")
		} else if line == "" || (line[0] != ' ' && line[0] != '\t') {
			return fmt.Errorf("line %d is not a folded continuation", i+1)
		}
		if i > 0 && strings.Trim(line, " \t") == "" {
			return fmt.Errorf("line %d is blank", i+1)
		}
		if n > 998 {
			return fmt.Errorf("line %d is %d octets", i+1, n)
		}
	}
	return nil
}

// checkQuarantineReason checks a quarantine reason: one line of printable ASCII,
// NUL-terminated.
func checkQuarantineReason(data []byte) error {
	if len(data) < 2 || bytes.IndexByte(data, 0) != len(data)-1 {
		return errors.New("not one non-empty NUL-terminated string")
	}
	for _, c := range data[:len(data)-1] {
		if c < ' ' || c > '~' {
			return fmt.Errorf("byte %q", c)
		}
	}
	return nil
}

// fuzzLogHandler keeps the panics the session's guard recovered; it
// asks for error records only, so that the decision lines of millions of
// sessions cost nothing.
func fuzzLogHandler() *logtest.Handler {
	return &logtest.Handler{Level: slog.LevelError, Keep: func(r slog.Record) bool {
		return logtest.Attr(r, "stack") != ""
	}}
}

// recoveredPanics renders the records of a fuzzLogHandler as the cause
// and the stack of each panic.
func recoveredPanics(h *logtest.Handler) []string {
	var list []string
	for _, r := range h.Records() {
		list = append(list, logtest.Attr(r, "error")+"\n"+logtest.Attr(r, "stack"))
	}
	return list
}

// waitGoroutines fails t unless the goroutine count falls back to before:
// the fuzzer runs millions of sessions, and one goroutine left by each
// would soon exhaust memory. The session's goroutines have returned or
// are returning (runFuzzSession waited for them), so this yields rather
// than sleeps.
func waitGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(fuzzSessionBound)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after the session, %d before\n%s", runtime.NumGoroutine(), before, allStacks())
		}
		runtime.Gosched()
	}
}

func allStacks() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// Builders of the seed sessions, in go-milter's packet formats
// (milter-protocol.txt).

// fuzzPacket is one packet of a seed.
type fuzzPacket struct {
	code byte
	data []byte
}

// encodeSeed writes packets in the structured form of FuzzSession's input.
func encodeSeed(flags byte, pkts ...fuzzPacket) []byte {
	out := []byte{flags, 0}
	for _, p := range pkts {
		data := p.data[:min(len(p.data), 0xffff)]
		out = append(out, p.code)
		if len(data) < 0xff {
			out = append(out, byte(len(data)))
		} else {
			out = append(out, 0xff)
			out = binary.BigEndian.AppendUint16(out, uint16(len(data)))
		}
		out = append(out, data...)
	}
	return out
}

// rawSeed is a raw-mode input: stream is sent as it is.
func rawSeed(flags byte, stream []byte) []byte {
	return append([]byte{flags, 1}, stream...)
}

func cstrings(ss ...string) []byte {
	var b []byte
	for _, s := range ss {
		b = append(b, s...)
		b = append(b, 0)
	}
	return b
}

// pNegotiate is the negotiation of an MTA of protocol 6 that offers every
// action and protocol bit, as Postfix does.
func pNegotiate() fuzzPacket { return pNegotiateWith(6, 0x1fffff) }

// pNegotiateWith offers every action, and the protocol version and mask
// given.
func pNegotiateWith(version, protocol uint32) fuzzPacket {
	d := binary.BigEndian.AppendUint32(nil, version)
	d = binary.BigEndian.AppendUint32(d, 0x1ff)
	d = binary.BigEndian.AppendUint32(d, protocol)
	return fuzzPacket{'O', d}
}

func pMacros(stage byte, kv ...string) fuzzPacket {
	return fuzzPacket{'D', append([]byte{stage}, cstrings(kv...)...)}
}

func pConnect(host string, family byte, port uint16, addr string) fuzzPacket {
	d := cstrings(host)
	d = append(d, family)
	if family == '4' || family == '6' {
		d = binary.BigEndian.AppendUint16(d, port)
	}
	return fuzzPacket{'C', append(d, cstrings(addr)...)}
}

func pHelo(name string) fuzzPacket { return fuzzPacket{'H', cstrings(name)} }

func pMail(from string, args ...string) fuzzPacket {
	return fuzzPacket{'M', cstrings(append([]string{"<" + from + ">"}, args...)...)}
}

func pRcpt(to string) fuzzPacket { return fuzzPacket{'R', cstrings("<" + to + ">")} }

func pHeader(name, value string) fuzzPacket { return fuzzPacket{'L', cstrings(name, value)} }

var (
	pEOH   = fuzzPacket{'N', nil}
	pEOM   = fuzzPacket{'E', nil}
	pAbort = fuzzPacket{'A', nil}
	pQuit  = fuzzPacket{'Q', nil}
	pData  = fuzzPacket{'T', nil}
)

// seedMessage is the packets of one message after the connection's HELO, as
// Postfix sends them, with forged copies of our headers among others.
func seedMessage(qid, from string, rcpts ...string) []fuzzPacket {
	pkts := []fuzzPacket{
		pMacros('M', "i", qid, "{auth_authen}", "", "{mail_addr}", from),
		pMail(from, "SIZE=1000", "BODY=8BITMIME"),
	}
	for _, r := range rcpts {
		pkts = append(pkts, pMacros('R', "{rcpt_addr}", r), pRcpt(r))
	}
	return append(pkts,
		pData,
		pHeader("Received", "from client.example by mx.example.net"),
		pHeader("Received-SPF", "pass (forged) client-ip=192.0.2.1;"),
		pHeader("X-Other", "x"),
		pHeader("RECEIVED-SPF", "softfail"),
		pHeader("Authentication-Results", ourAuthID+"; spf=pass smtp.mailfrom=forged.example"),
		pHeader("authentication-results", "other.example; spf=fail"),
		pHeader("Authentication-Results", " (comment) "+strings.ToUpper(ourAuthID)+";\n\tspf=pass"),
		pHeader("Authentication-Results", "\"mx.example.net\" (quoted; \\\"id) ; spf=pass"),
		pHeader("Subject", "hello"),
		pMacros('N', "i", qid),
		pEOH,
		pMacros('E', "i", qid),
		pEOM,
	)
}

// seedSession is a whole connection: negotiation, connect, HELO, the
// messages, and quit.
func seedSession(ip, helo string, msgs ...[]fuzzPacket) []fuzzPacket {
	family := byte('4')
	if strings.Contains(ip, ":") {
		family = '6'
	}
	pkts := []fuzzPacket{
		pNegotiate(),
		pMacros('C', "j", ourAuthID, "{daemon_name}", "smtpd", "{client_addr}", ip, "{client_name}", "client.example"),
		pConnect("client.example", family, 40000, ip),
		pMacros('H', "{tls_version}", "TLSv1.3"),
		pHelo(helo),
	}
	for _, m := range msgs {
		pkts = append(pkts, m...)
	}
	return append(pkts, pQuit)
}

// fuzzSeeds are valid sessions through every result and config variant,
// hostile values, and the malformed streams the MTA-side tests use, each
// served by go-milter's Server alone; the sessions (and a few others)
// again through a Daemon with SkipReplies; and negotiations that a Daemon
// must or must not upgrade.
func fuzzSeeds() [][]byte {
	var seeds, viaDaemon [][]byte
	add := func(flags byte, pkts ...fuzzPacket) { seeds = append(seeds, encodeSeed(flags, pkts...)) }
	// session adds a seed that runs both ways.
	session := func(flags byte, pkts ...fuzzPacket) {
		add(flags, pkts...)
		viaDaemon = append(viaDaemon, daemonSeed(encodeSeed(flags, pkts...)))
	}

	for _, d := range []string{"pass", "fail", "softfail", "neutral", "none", "permerror", "temperror", "timeout", "exp", "badexp", "long", "macro", "include", "redirect", "ptr", "loop", "two", "unknown"} {
		session(0, seedSession("192.0.2.1", "mx.pass.example", seedMessage("Q1", "user@"+d+".example", "rcpt@example.net"))...)
	}
	for _, d := range []string{"softfail", "neutral", "none", "permerror", "temperror"} {
		session(fuzzStrict, seedSession("192.0.2.9", "mx.pass.example", seedMessage("Q1", "user@"+d+".example", "rcpt@example.net"))...)
	}
	for flags := 1; flags < 256; flags <<= 1 {
		session(byte(flags), seedSession("192.0.2.9", "mx.fail.example",
			seedMessage("Q2", "user@exp.example", "postmaster@example.net", "rcpt@example.net"),
			seedMessage("Q3", "a@helomacro.example", "abuse@example.net"))...)
	}
	session(fuzzTemplates|fuzzHELOPolicy|fuzzStrict, seedSession("2001:db8::25", "helomacro.example",
		seedMessage("Q4", "", "rcpt@example.net"),
		seedMessage("Q5", "weird%{s}%%\"\\;=name@macro.example", "rcpt@example.net"))...)
	session(fuzzSkips, seedSession("192.0.2.130", "mx.pass.example", seedMessage("Q6", "user@fail.example", "r@example.net"))...)
	session(fuzzSkips, seedSession("192.0.2.1", "mx.pass.example", seedMessage("Q7", "user@sub.skip.example", "r@example.net"))...)
	// From a relay: the client is read from the Received fields, and
	// the answer given at the end of the message.
	relayed := func(qid, from, received string) []fuzzPacket {
		m := seedMessage(qid, from, "r@example.net")
		// Right after DATA, the first header field.
		return append(m[:5:5], append([]fuzzPacket{pHeader("Received", received)}, m[5:]...)...)
	}
	session(fuzzSkips, seedSession("192.0.2.70", "gw.example",
		relayed("QR1", "user@fail.example", "from mx.pass.example (unknown [192.0.2.1])\r\n\tby gw.example (Postfix) with ESMTP id X; Tue, 3 Dec 2024 10:11:12 +0100"),
		relayed("QR2", "user@pass.example", "from gw2.example ([192.0.2.71]:2525 helo=gw2.example) by gw.example with esmtp"),
		relayed("QR3", "user@pass.example", "from mx.pass.example (mx.pass.example. [IPv6:2001:db8::25]) by gw.example with ESMTPSA id Y"))...)

	// Hostile values: control characters, non-ASCII, very long.
	long := strings.Repeat("a", 300) + "." + strings.Repeat("b", 70) + ".example"
	session(fuzzTemplates, seedSession("192.0.2.9", "evil\r\nX-Injected: yes\x01\xc3\xa9",
		seedMessage("Q8", "us\r\ner\"@fail.example", "r\n@example.net"),
		seedMessage("Q9", strings.Repeat("x", 2000)+"@"+long, "r@example.net"))...)
	session(fuzzStrict, seedSession("192.0.2.9", long+" "+long, seedMessage("QA", "\xff\xfe@\xc3\xa9.example", "r@example.net"))...)

	// Out of order, repeated, aborted, and without connect data.
	session(0, pNegotiate(), pMail("user@fail.example"), pRcpt("r@example.net"), pEOH, pEOM, pQuit)
	add(0, pMacros('M', "{client_addr}", "IPv6:2001:db8::25", "s", "mx.pass.example"), pMail("user@pass.example"), pHeader("Received-SPF", "x"), pEOM)
	aborted := seedSession("192.0.2.1", "mx.pass.example")
	aborted = append(aborted[:len(aborted)-1], seedMessage("QB", "user@pass.example", "r@example.net")[:4]...)
	session(0, append(aborted, pAbort, pEOM, pAbort, pHelo("again.example"), pEOM)...)
	add(0, pConnect("unknown", 'U', 0, ""), pConnect("sock", 'L', 0, "/run/x"), pHelo(""), pMail(""), pEOM)
	add(0, fuzzPacket{'C', cstrings("host")}, pHelo("x"))
	add(0, fuzzPacket{'C', []byte("host\x004")}, pMail("user@fail.example"), pEOM)
	add(0, fuzzPacket{'D', nil}, pHelo("x"))
	add(0, fuzzPacket{'L', []byte("a\x00b\x00c\x00")}, fuzzPacket{'L', []byte("\x00\x00")}, fuzzPacket{'B', []byte("body")}, fuzzPacket{'K', nil})
	add(0, pConnect("client.example", '4', 1, "192.0.2.1"), pConnect("client.example", '6', 1, "2001:db8::1"), pConnect("client.example", '4', 1, "not an ip"), pHelo("mx.pass.example"), pMail("user@pass.example"), pEOM)

	// Malformed framing, sent raw.
	good := appendPacket(nil, 'O', pNegotiate().data)
	seeds = append(seeds,
		rawSeed(0, nil),
		rawSeed(0, append(good, 0, 0, 0, 0)),
		rawSeed(0, append(good, 0xff, 0xff, 0xff, 0xff, 'C')),
		rawSeed(0, append(good, 0, 0, 0, 100, 'H', 'x')),
		rawSeed(0, append(good, 0, 0, 0, 1, 'Z')),
		rawSeed(0, append(good, 0, 0)),
	)
	viaDaemon = append(viaDaemon,
		daemonSeed(rawSeed(0, append(good, 0, 0, 0, 100, 'H', 'x'))),
		daemonSeed(rawSeed(0, append(good, 0, 0, 0, 1, 'Z'))),
	)

	// Negotiations through a Daemon: protocol 2 with SMFIP_NOHREPL (bit
	// 0x80, SMFIP_NR_HDR in protocol 6), which it must not upgrade;
	// protocol 6 with only SMFIP_NR_HDR; with every bit but the NR ones;
	// twice in a session, the second taking the first back; and a connect
	// packet without a port, which go-milter answers with a tempfail the
	// MTA was told not to wait for.
	msg := seedMessage("QC", "user@fail.example", "r@example.net")
	for _, neg := range []fuzzPacket{
		pNegotiateWith(2, 0xff),
		pNegotiateWith(6, uint32(gomilter.OptNoHeaderReply)),
		pNegotiateWith(6, 0x1fffff&^uint32(wire.NoReplyStages)),
		pNegotiateWith(7, uint32(gomilter.OptNoHeloReply|gomilter.OptNoMailReply)),
	} {
		pkts := seedSession("192.0.2.9", "mx.fail.example", msg)
		pkts[0] = neg
		viaDaemon = append(viaDaemon, daemonSeed(encodeSeed(fuzzHELOPolicy, pkts...)))
	}
	twice := seedSession("192.0.2.9", "mx.fail.example", msg)
	twice = append(twice[:3:3], append([]fuzzPacket{pNegotiateWith(2, 0xff)}, twice[3:]...)...)
	viaDaemon = append(viaDaemon,
		daemonSeed(encodeSeed(0, twice...)),
		daemonSeed(encodeSeed(0, pNegotiate(), fuzzPacket{'C', []byte("host\x004")}, pHelo("x"), pMail("user@fail.example"), pEOM)),
		daemonSeed(encodeSeed(0, pNegotiate(), fuzzPacket{'C', cstrings("host")}, pHelo("x"))),
	)
	return append(seeds, viaDaemon...)
}

// daemonSeed is seed with its mode byte asking for a Daemon.
func daemonSeed(seed []byte) []byte {
	seed = bytes.Clone(seed)
	seed[1] |= fuzzViaDaemon
	return seed
}
