package milter

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
	"github.com/emersion/go-msgauth/authres"
	"github.com/miekg/dns"

	"log/slog"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/internal/dnstest"
	"github.com/spf-milter/spf-milter/internal/logtest"
	"github.com/spf-milter/spf-milter/spf"
)

// The client of most tests: 192.0.2.1 is allowed by pass.example and by
// the HELO name mx.pass.example.
const (
	clientIP  = "192.0.2.1"
	passHELO  = "mx.pass.example"
	failHELO  = "mx.fail.example"
	ourAuthID = "mx.example.net"
)

// testZone publishes one domain per SPF result, plus HELO names and the
// explanation used by the hostile-text tests.
func testZone(t *testing.T) *dnstest.Zone {
	t.Helper()
	z := dnstest.NewZone()
	if err := z.Add(
		`pass.example. TXT "v=spf1 ip4:192.0.2.1 ip6:2001:db8::25 -all"`,
		`fail.example. TXT "v=spf1 -all"`,
		`softfail.example. TXT "v=spf1 ~all"`,
		`neutral.example. TXT "v=spf1 ?all"`,
		`none.example. A 192.0.2.99`,
		`permerror.example. TXT "v=spf1 foo -all"`,
		`mx.pass.example. TXT "v=spf1 ip4:192.0.2.1 ip6:2001:db8::25 -all"`,
		`mx.fail.example. TXT "v=spf1 -all"`,
		`exp.example. TXT "v=spf1 -all exp=why.exp.example"`,
		`why.exp.example. TXT "100%% sure: %{s} may not use %{i}"`,
		`badexp.example. TXT "v=spf1 -all exp=why.badexp.example"`,
	); err != nil {
		t.Fatal(err)
	}
	// An exp= text with CR, LF and non-ASCII is not a valid explain-string:
	// the engine ignores it and the default explanation is used.
	z.AddTXT("why.badexp.example", "bad\r\nX-Injected: yes \xc3\xa9")
	z.Rcode("temperror.example", dns.RcodeServerFailure)
	z.Rcode("mx.temperror.example", dns.RcodeServerFailure)
	return z
}

// testConfig is the default config with fixed names.
func testConfig() *config.Config {
	cfg := config.Default()
	cfg.AuthservID = ourAuthID
	cfg.Receiver = ourAuthID
	return cfg
}

// logBuffer collects the JSON log lines of a server.
type logBuffer struct{ logtest.Buffer }

// lines returns the records whose msg is msg.
func (l *logBuffer) lines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// harness is a milter server on 127.0.0.1 whose checks ask an in-process
// DNS server.
type harness struct {
	t    *testing.T
	addr string
	dns  *dnstest.Server
	logs *logBuffer
	// offer is the protocol mask the MTA offers (postfixProtocol unless
	// a test changes it before it connects).
	offer gomilter.OptProtocol
}

func newHarness(t *testing.T, cfg *config.Config, z *dnstest.Zone) *harness {
	t.Helper()
	srv := dnstest.StartServer(t, z)
	r, err := spf.NewDNSResolver(spf.DNSOptions{Servers: []string{srv.Addr()}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return newHarnessResolver(t, cfg, r, srv)
}

func newHarnessResolver(t *testing.T, cfg *config.Config, r spf.Resolver, srv *dnstest.Server) *harness {
	t.Helper()
	logs := &logBuffer{}
	rt := &Runtime{
		Config:  cfg,
		Checker: &spf.Checker{Resolver: r, Receiver: cfg.Receiver, Timeout: 10 * time.Second},
		Log:     slog.New(slog.NewJSONHandler(logs, nil)),
	}
	return startServer(t, func() *Runtime { return rt }, srv, logs)
}

func startServer(t *testing.T, current func() *Runtime, srv *dnstest.Server, logs *logBuffer) *harness {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Served as spf-milter serve does by default, to an MTA that offers
	// what Postfix does (harness.open): the replies of the stages
	// SkipReplies covers are not waited for.
	d := NewDaemon(NewServer(current), DaemonOptions{IOBuffer: DefaultIOBuffer, SkipReplies: true, Log: slog.New(slog.DiscardHandler)})
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.Serve(ln)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d.Shutdown(ctx)
		<-done
	})
	return &harness{t: t, addr: ln.Addr().String(), dns: srv, logs: logs, offer: postfixProtocol}
}

// connect opens a milter session for an SMTP client at ip (IPv4 or IPv6)
// that said HELO helo.
func (h *harness) connect(ip, helo string) *gomilter.ClientSession {
	h.t.Helper()
	cs := h.open()
	family := gomilter.FamilyInet
	if strings.Contains(ip, ":") {
		family = gomilter.FamilyInet6
	}
	h.mustContinue("connect", must(h.t)(cs.Conn("client.example", family, 40000, ip)))
	h.mustContinue("helo", must(h.t)(cs.Helo(helo)))
	return cs
}

// expand puts the DNS server's address into an expected text: the engine
// names the server that failed.
func (h *harness) expand(s string) string {
	if h.dns == nil {
		return s
	}
	return strings.ReplaceAll(s, "{dns}", h.dns.Addr())
}

func (h *harness) open() *gomilter.ClientSession {
	h.t.Helper()
	c := gomilter.NewClientWithOptions("tcp", h.addr, gomilter.ClientOptions{
		ReadTimeout:  30 * time.Second,
		WriteTimeout: 30 * time.Second,
		ActionMask:   gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptQuarantine,
		ProtocolMask: h.offer,
	})
	cs, err := c.Session()
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { cs.Close() })
	return cs
}

func must(t *testing.T) func(*gomilter.Action, error) *gomilter.Action {
	return func(a *gomilter.Action, err error) *gomilter.Action {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
}

func (h *harness) mustContinue(stage string, a *gomilter.Action) {
	h.t.Helper()
	if a.Code != gomilter.ActContinue {
		h.t.Fatalf("%s: got action %q %d %q, want continue", stage, a.Code, a.SMTPCode, a.SMTPText)
	}
}

// hdr is one header field of a message as the MTA holds it.
type hdr struct{ name, value string }

// message is one transaction to send.
type message struct {
	from      string
	mailMacro []string // macros sent with MAIL FROM
	rcpts     []string
	headers   []hdr
}

// outcome is what the milter answered to one transaction.
type outcome struct {
	mail  *gomilter.Action
	rcpts []*gomilter.Action
	mods  []gomilter.ModifyAction
	end   *gomilter.Action
	// final is the header of the message after the MTA applied mods.
	final []hdr
}

// reply renders an answer as "CODE TEXT", "continue", or the action code.
func reply(a *gomilter.Action) string {
	switch {
	case a == nil:
		return "<none>"
	case a.Code == gomilter.ActContinue:
		return "continue"
	case a.Code == gomilter.ActReplyCode:
		return strings.TrimSpace(itoa(a.SMTPCode) + " " + a.SMTPText)
	}
	return "action " + string(rune(a.Code))
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// send runs one transaction as Postfix would: it stops after a refused
// MAIL FROM, and aborts when no recipient was accepted.
func (h *harness) send(cs *gomilter.ClientSession, m message) outcome {
	h.t.Helper()
	t := h.t
	var o outcome
	macros := append([]string{"{mail_addr}", m.from}, m.mailMacro...)
	if err := cs.Macros(gomilter.CodeMail, macros...); err != nil {
		t.Fatal(err)
	}
	o.mail = must(t)(cs.Mail(m.from, nil))
	if o.mail.Code != gomilter.ActContinue {
		return o
	}
	accepted := 0
	for i, r := range m.rcpts {
		// Postfix knows the queue id from the first accepted recipient on.
		if err := cs.Macros(gomilter.CodeRcpt, "{rcpt_addr}", r, "i", "QID"+itoa(i)); err != nil {
			t.Fatal(err)
		}
		a := must(t)(cs.Rcpt(r, nil))
		o.rcpts = append(o.rcpts, a)
		if a.Code == gomilter.ActContinue {
			accepted++
		}
	}
	if accepted == 0 {
		if err := cs.Abort(); err != nil {
			t.Fatal(err)
		}
		return o
	}
	for _, f := range m.headers {
		h.mustContinue("header", must(t)(cs.HeaderField(f.name, f.value)))
	}
	h.mustContinue("eoh", must(t)(cs.HeaderEnd()))
	mods, end, err := cs.End()
	if err != nil {
		t.Fatal(err)
	}
	o.mods, o.end = mods, end
	o.final = applyMods(m.headers, mods)
	return o
}

// applyMods applies header changes as Postfix does: a change names the
// n-th field of that name (1-based, any case), an empty value deletes it,
// and an insertion at 0 goes on top.
func applyMods(in []hdr, mods []gomilter.ModifyAction) []hdr {
	out := slices.Clone(in)
	for _, m := range mods {
		switch m.Code {
		case gomilter.ActInsertHeader:
			i := min(int(m.HeaderIndex), len(out))
			out = slices.Insert(out, i, hdr{m.HeaderName, m.HeaderValue})
		case gomilter.ActAddHeader:
			out = append(out, hdr{m.HeaderName, m.HeaderValue})
		case gomilter.ActChangeHeader:
			n := 0
			for i := range out {
				if !strings.EqualFold(out[i].name, m.HeaderName) {
					continue
				}
				if n++; n == int(m.HeaderIndex) {
					if m.HeaderValue == "" {
						out = slices.Delete(out, i, i+1)
					} else {
						out[i].value = m.HeaderValue
					}
					break
				}
			}
		}
	}
	return out
}

// inserted returns the fields the milter inserted, top first, unfolded,
// after checking that every one is well-formed and folded within 78
// characters a line.
func inserted(t *testing.T, mods []gomilter.ModifyAction) []hdr {
	t.Helper()
	var out []hdr
	for _, m := range mods {
		if m.Code != gomilter.ActInsertHeader {
			continue
		}
		if m.HeaderIndex != 0 {
			t.Errorf("%s inserted at %d, want 0", m.HeaderName, m.HeaderIndex)
		}
		checkFolded(t, m.HeaderName, m.HeaderValue)
		out = append(out, hdr{m.HeaderName, strings.ReplaceAll(m.HeaderValue, "\n", "")})
	}
	slices.Reverse(out)
	return out
}

// checkFolded checks that a field is printable ASCII folded at spaces with
// no line over 78 characters (the values here allow that everywhere).
func checkFolded(t *testing.T, name, value string) {
	t.Helper()
	for i, line := range strings.Split(name+": "+value, "\n") {
		if len(line) > maxLineLength {
			t.Errorf("%s: line %d is %d characters: %q", name, i+1, len(line), line)
		}
		if i > 0 && !strings.HasPrefix(line, " ") {
			t.Errorf("%s: continuation line %d does not start with a space: %q", name, i+1, line)
		}
		if strings.TrimSpace(line) == "" {
			t.Errorf("%s: blank line %d", name, i+1)
		}
		for _, c := range []byte(line) {
			if c < 0x20 || c >= 0x7f {
				t.Errorf("%s: byte %#x in %q", name, c, line)
			}
		}
	}
}

func quarantineReasons(mods []gomilter.ModifyAction) []string {
	var out []string
	for _, m := range mods {
		if m.Code == gomilter.ActQuarantine {
			out = append(out, m.Reason)
		}
	}
	return out
}

// Expected Received-SPF (unfolded) of the MAIL FROM check of
// alice@<result>.example from 192.0.2.1 after HELO mx.pass.example.
var wantReceivedSPF = map[spf.Result]string{
	spf.Pass:      `pass (mx.example.net: domain of alice@pass.example designates 192.0.2.1 as permitted sender) client-ip=192.0.2.1; envelope-from="alice@pass.example"; helo=mx.pass.example; receiver=mx.example.net; mechanism="ip4:192.0.2.1"; identity=mailfrom`,
	spf.Fail:      `fail (mx.example.net: domain of alice@fail.example does not designate 192.0.2.1 as permitted sender) client-ip=192.0.2.1; envelope-from="alice@fail.example"; helo=mx.pass.example; receiver=mx.example.net; mechanism=-all; identity=mailfrom`,
	spf.Softfail:  `softfail (mx.example.net: domain of transitioning alice@softfail.example does not designate 192.0.2.1 as permitted sender) client-ip=192.0.2.1; envelope-from="alice@softfail.example"; helo=mx.pass.example; receiver=mx.example.net; mechanism=~all; identity=mailfrom`,
	spf.Neutral:   `neutral (mx.example.net: 192.0.2.1 is neither permitted nor denied by domain of alice@neutral.example) client-ip=192.0.2.1; envelope-from="alice@neutral.example"; helo=mx.pass.example; receiver=mx.example.net; mechanism=?all; identity=mailfrom`,
	spf.None:      `none (mx.example.net: none.example does not provide an SPF record) client-ip=192.0.2.1; envelope-from="alice@none.example"; helo=mx.pass.example; receiver=mx.example.net; problem="no SPF record at none.example"; identity=mailfrom`,
	spf.TempError: `temperror (mx.example.net: temporary error while checking domain of alice@temperror.example) client-ip=192.0.2.1; envelope-from="alice@temperror.example"; helo=mx.pass.example; receiver=mx.example.net; problem="DNS failure: TXT temperror.example: server answered SERVFAIL"; identity=mailfrom`,
	spf.PermError: `permerror (mx.example.net: permanent error in the SPF policy for domain of alice@permerror.example) client-ip=192.0.2.1; envelope-from="alice@permerror.example"; helo=mx.pass.example; receiver=mx.example.net; problem="SPF record of permerror.example: invalid term \"foo\": unknown mechanism"; identity=mailfrom`,
}

// The spf= entry of each result in Authentication-Results.
var wantAuthRes = map[spf.Result]string{
	spf.Pass:      `spf=pass smtp.mailfrom=pass.example`,
	spf.Fail:      `spf=fail smtp.mailfrom=fail.example`,
	spf.Softfail:  `spf=softfail smtp.mailfrom=softfail.example`,
	spf.Neutral:   `spf=neutral smtp.mailfrom=neutral.example`,
	spf.None:      `spf=none reason="no SPF record at none.example" smtp.mailfrom=none.example`,
	spf.TempError: `spf=temperror reason="DNS failure: TXT temperror.example: server answered SERVFAIL" smtp.mailfrom=temperror.example`,
	spf.PermError: `spf=permerror reason="SPF record of permerror.example: invalid term \"foo\": unknown mechanism" smtp.mailfrom=permerror.example`,
}

// The reply of each result when the action is reject.
var wantReject = map[spf.Result]string{
	spf.Pass:      `550 5.7.1 SPF pass: domain of alice@pass.example designates 192.0.2.1 as permitted sender`,
	spf.Fail:      `550 5.7.23 SPF fail: fail.example does not designate 192.0.2.1 as a permitted sender`,
	spf.Softfail:  `550 5.7.1 SPF softfail: domain of transitioning alice@softfail.example does not designate 192.0.2.1 as permitted sender`,
	spf.Neutral:   `550 5.7.1 SPF neutral: 192.0.2.1 is neither permitted nor denied by domain of alice@neutral.example`,
	spf.None:      `550 5.7.1 SPF none: no SPF record at none.example`,
	spf.TempError: `451 4.7.24 SPF temperror: DNS failure: TXT temperror.example: server answered SERVFAIL, try again later`,
	spf.PermError: `550 5.7.24 SPF permerror: SPF record of permerror.example: invalid term "foo": unknown mechanism`,
}

// The HELO Received-SPF of mx.pass.example, written under the MAIL FROM one.
const wantHELOReceivedSPF = `pass (mx.example.net: domain of mx.pass.example designates 192.0.2.1 as permitted sender) client-ip=192.0.2.1; envelope-from="postmaster@mx.pass.example"; helo=mx.pass.example; receiver=mx.example.net; mechanism="ip4:192.0.2.1"; identity=helo`

// TestResultsAndActions sends one message per SPF result under the default
// policy and under each action, and checks the reply, the hold reason and
// the exact headers.
func TestResultsAndActions(t *testing.T) {
	z := testZone(t)
	policies := []string{"default", "accept", "reject", "tempfail", "quarantine"}
	for _, pol := range policies {
		for _, res := range spf.Results {
			t.Run(pol+"/"+string(res), func(t *testing.T) {
				cfg := testConfig()
				action := cfg.Policy.MailFrom[res]
				if pol != "default" {
					action = config.Action(pol)
					cfg.Policy.MailFrom[res] = action
					// Only the MAIL FROM identity is checked.
					for r := range cfg.Policy.HELO {
						cfg.Policy.HELO[r] = config.Accept
					}
				}
				h := newHarness(t, cfg, z)
				cs := h.connect(clientIP, passHELO)
				o := h.send(cs, message{
					from:    "alice@" + string(res) + ".example",
					rcpts:   []string{"bob@example.net"},
					headers: []hdr{{"Received", "from client.example by mx.example.net"}, {"Subject", "hi"}},
				})

				var wantMail string
				switch action {
				case config.Reject:
					wantMail = wantReject[res]
				case config.Tempfail:
					wantMail = wantReject[res]
					if res != spf.TempError {
						wantMail = "451 4.7.1 " + strings.SplitN(wantReject[res], " ", 3)[2]
					}
				default:
					wantMail = "continue"
				}
				wantMail = h.expand(wantMail)
				if got := reply(o.mail); got != wantMail {
					t.Fatalf("MAIL FROM answered %q, want %q", got, wantMail)
				}
				logs := h.logs.lines(t, "spf decision")
				if len(logs) != 1 {
					t.Fatalf("%d decision log lines, want 1", len(logs))
				}
				if logs[0]["result"] != string(res) || logs[0]["action"] != string(action) || logs[0]["identity"] != "mailfrom" {
					t.Errorf("log line %v: want result %s, action %s, identity mailfrom", logs[0], res, action)
				}
				if wantMail != "continue" {
					return
				}
				if reply(o.end) != "continue" {
					t.Errorf("end of message answered %q, want continue", reply(o.end))
				}
				want := []hdr{{"Received-SPF", h.expand(wantReceivedSPF[res])}}
				if pol == "default" {
					want = append(want, hdr{"Received-SPF", wantHELOReceivedSPF})
				}
				ar := "mx.example.net; " + wantAuthRes[res]
				if pol == "default" {
					ar = "mx.example.net; spf=pass smtp.helo=mx.pass.example; " + wantAuthRes[res]
				}
				want = append(want, hdr{"Authentication-Results", h.expand(ar)})
				if got := inserted(t, o.mods); !slices.Equal(got, want) {
					t.Errorf("headers:\n got %q\nwant %q", got, want)
				}
				if top := o.final[0]; top.name != "Received-SPF" || !strings.HasPrefix(top.value, string(res)+" ") {
					t.Errorf("top header is %q, want the MAIL FROM Received-SPF", top)
				}
				var wantHold []string
				if action == config.Quarantine {
					wantHold = []string{"SPF " + string(res) + " for mailfrom alice@" + string(res) + ".example from 192.0.2.1"}
				}
				if got := quarantineReasons(o.mods); !slices.Equal(got, wantHold) {
					t.Errorf("quarantine %q, want %q", got, wantHold)
				}
				if q := logs[0]["queue_id"]; q != "QID0" {
					t.Errorf("logged queue id %v, want QID0", q)
				}
			})
		}
	}
}

// TestNullSender checks MAIL FROM:<> as postmaster@<HELO>, identity
// mailfrom.
func TestNullSender(t *testing.T) {
	cfg := testConfig()
	h := newHarness(t, cfg, testZone(t))

	cs := h.connect(clientIP, passHELO)
	o := h.send(cs, message{from: "", rcpts: []string{"bob@example.net"}})
	if reply(o.mail) != "continue" {
		t.Fatalf("MAIL FROM:<> after a passing HELO answered %q", reply(o.mail))
	}
	want := []hdr{
		{"Received-SPF", `pass (mx.example.net: domain of postmaster@mx.pass.example designates 192.0.2.1 as permitted sender) client-ip=192.0.2.1; envelope-from="postmaster@mx.pass.example"; helo=mx.pass.example; receiver=mx.example.net; mechanism="ip4:192.0.2.1"; identity=mailfrom`},
		{"Received-SPF", wantHELOReceivedSPF},
		{"Authentication-Results", "mx.example.net; spf=pass smtp.helo=mx.pass.example; spf=pass smtp.mailfrom=mx.pass.example"},
	}
	if got := inserted(t, o.mods); !slices.Equal(got, want) {
		t.Errorf("headers:\n got %q\nwant %q", got, want)
	}

	// With the HELO policy accepting everything, only the MAIL FROM
	// identity refuses the null sender from a failing HELO name.
	cfg2 := testConfig()
	for r := range cfg2.Policy.HELO {
		cfg2.Policy.HELO[r] = config.Accept
	}
	h2 := newHarness(t, cfg2, testZone(t))
	cs2 := h2.connect(clientIP, failHELO)
	o2 := h2.send(cs2, message{from: "", rcpts: []string{"bob@example.net"}})
	if got, want := reply(o2.mail), "550 5.7.23 SPF fail: mx.fail.example does not designate 192.0.2.1 as a permitted sender"; got != want {
		t.Errorf("MAIL FROM:<> after a failing HELO answered %q, want %q", got, want)
	}
	logs := h2.logs.lines(t, "spf decision")
	if len(logs) != 1 || logs[0]["identity"] != "mailfrom" || logs[0]["sender"] != "<>" {
		t.Errorf("log lines %v, want one for identity mailfrom, sender <>", logs)
	}
}

// TestClientAddress covers IPv6 clients and the ways the MTA may give the
// address: in the connect data, which the connection layer normalises for
// go-milter, or in {client_addr}. Every form an MTA sends must be checked
// as the address it names; anything unreadable is deferred, never checked
// as a permerror, which the default policy accepts.
func TestClientAddress(t *testing.T) {
	const unknown = internalErrorReply
	failReply := func(ip string) string {
		return "550 5.7.23 SPF fail: pass.example does not designate " + ip + " as a permitted sender"
	}
	tests := []struct {
		name    string
		family  gomilter.ProtoFamily
		addr    string
		macro   string // {client_addr} sent with the connect data
		want    string // MAIL FROM answer for alice@pass.example
		wantLog string // client_ip logged; "" when the message is deferred
	}{
		{"IPv6", gomilter.FamilyInet6, "2001:db8::25", "", "continue", "2001:db8::25"},
		{"IPv6 not allowed", gomilter.FamilyInet6, "2001:db8::26", "", failReply("2001:db8::26"), "2001:db8::26"},
		{"IPv4-mapped", gomilter.FamilyInet6, "::ffff:192.0.2.1", "", "continue", "192.0.2.1"},
		{"macro IPv6 literal", gomilter.FamilyUnknown, "", "IPv6:2001:db8::25", "continue", "2001:db8::25"},
		{"macro IPv4", gomilter.FamilyUnknown, "", "192.0.2.1", "continue", "192.0.2.1"},
		{"unparsable address, macro", gomilter.FamilyInet6, "not-an-address", "192.0.2.7", failReply("192.0.2.7"), "192.0.2.7"},

		// The forms MTAs write, in the connect data: each is checked as
		// the address it names, so 192.0.2.7 and 2001:db8::1 fail.
		{"bracketed", gomilter.FamilyInet, "[192.0.2.7]", "", failReply("192.0.2.7"), "192.0.2.7"},
		{"bracketed, allowed", gomilter.FamilyInet, "[192.0.2.1]", "", "continue", "192.0.2.1"},
		{"IPv6: prefix, IPv4-mapped", gomilter.FamilyInet6, "IPv6:::ffff:192.0.2.7", "", failReply("192.0.2.7"), "192.0.2.7"},
		{"IPv6: prefix, IPv4-mapped, allowed", gomilter.FamilyInet6, "IPv6:::ffff:192.0.2.1", "", "continue", "192.0.2.1"},
		{"IPv6: prefix", gomilter.FamilyInet6, "IPv6:2001:db8::1", "", failReply("2001:db8::1"), "2001:db8::1"},
		{"bracketed IPv6: prefix", gomilter.FamilyInet6, "[IPv6:2001:db8::1]", "", failReply("2001:db8::1"), "2001:db8::1"},
		{"IPv4 with a zone", gomilter.FamilyInet, "192.0.2.7%eth0", "", failReply("192.0.2.7"), "192.0.2.7"},
		{"IPv6 with a zone", gomilter.FamilyInet6, "fe80::1%eth0", "", failReply("fe80::1"), "fe80::1"},
		{"IPv6 with a zone, macro ignored", gomilter.FamilyInet6, "fe80::1%eth0", "192.0.2.1", failReply("fe80::1"), "fe80::1"},
		// The same in {client_addr}.
		{"macro bracketed", gomilter.FamilyUnknown, "", "[192.0.2.7]", failReply("192.0.2.7"), "192.0.2.7"},
		{"macro IPv6: prefix, IPv4-mapped", gomilter.FamilyUnknown, "", "IPv6:::ffff:192.0.2.7", failReply("192.0.2.7"), "192.0.2.7"},
		{"macro bracketed IPv6: prefix", gomilter.FamilyUnknown, "", "[IPv6:2001:db8::1]", failReply("2001:db8::1"), "2001:db8::1"},
		{"macro IPv4 with a zone", gomilter.FamilyUnknown, "", "192.0.2.7%eth0", failReply("192.0.2.7"), "192.0.2.7"},
		{"macro IPv6 with a zone", gomilter.FamilyUnknown, "", "fe80::1%eth0", failReply("fe80::1"), "fe80::1"},

		// Nothing that can be read: deferred.
		{"no address", gomilter.FamilyUnknown, "", "", unknown, ""},
		{"unreadable address", gomilter.FamilyInet, "192.0.2.300", "", unknown, ""},
		{"unreadable address and macro", gomilter.FamilyInet6, "[IPv6:zz::1]", "client.example", unknown, ""},
		{"unreadable macro", gomilter.FamilyUnknown, "", "[192.0.2]", unknown, ""},
		{"unix socket path", gomilter.FamilyUnix, "/var/run/smtp.sock", "", unknown, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig(), testZone(t))
			cs := h.open()
			if tt.macro != "" {
				if err := cs.Macros(gomilter.CodeConn, "{client_addr}", tt.macro); err != nil {
					t.Fatal(err)
				}
			}
			h.mustContinue("connect", must(t)(cs.Conn("client.example", tt.family, 25, tt.addr)))
			h.mustContinue("helo", must(t)(cs.Helo("client.example")))
			o := h.send(cs, message{from: "alice@pass.example", rcpts: []string{"bob@example.net"}})
			if got := reply(o.mail); got != tt.want {
				t.Fatalf("MAIL FROM answered %q, want %q", got, tt.want)
			}
			logs := h.logs.lines(t, "spf decision")
			if tt.wantLog == "" {
				deferred := h.logs.lines(t, "spf client address unknown, message deferred")
				if len(logs) != 0 || len(deferred) != 1 || deferred[0]["reason"] == "" {
					t.Errorf("decisions %v, deferrals %v; want one deferral that says why", logs, deferred)
				} else {
					t.Logf("reason: %v", deferred[0]["reason"])
				}
				return
			}
			if len(logs) != 1 || logs[0]["client_ip"] != tt.wantLog {
				t.Errorf("log lines %v, want one with client_ip %s", logs, tt.wantLog)
			}
		})
	}
}

// TestNoAddressSkipped checks the skips that need no client address: they
// still let the message through unchecked when the address is unknown.
func TestNoAddressSkipped(t *testing.T) {
	cfg := testConfig()
	cfg.SkipAuthenticated = true
	cfg.SkipSenders = []string{"skipped.example"}
	tests := []struct {
		name  string
		from  string
		macro []string
		want  string
	}{
		{"authenticated", "alice@fail.example", []string{"{auth_authen}", "alice"}, "continue"},
		{"skip_senders", "alice@skipped.example", nil, "continue"},
		{"neither", "alice@fail.example", nil, internalErrorReply},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, cfg, testZone(t))
			cs := h.open()
			h.mustContinue("connect", must(t)(cs.Conn("client.example", gomilter.FamilyUnknown, 0, "")))
			h.mustContinue("helo", must(t)(cs.Helo("client.example")))
			o := h.send(cs, message{from: tt.from, mailMacro: tt.macro, rcpts: []string{"bob@example.net"}})
			if got := reply(o.mail); got != tt.want {
				t.Fatalf("MAIL FROM answered %q, want %q", got, tt.want)
			}
		})
	}
}

// TestTwoMessagesOneConnection checks that a refused first message leaves
// the connection data intact and the second message is checked on its own.
func TestTwoMessagesOneConnection(t *testing.T) {
	h := newHarness(t, testConfig(), testZone(t))
	cs := h.connect(clientIP, passHELO)

	o1 := h.send(cs, message{from: "alice@fail.example", rcpts: []string{"bob@example.net"}})
	if got, want := reply(o1.mail), wantReject[spf.Fail]; got != want {
		t.Fatalf("first MAIL FROM answered %q, want %q", got, want)
	}
	forged := []hdr{{"Received-SPF", "pass (forged)"}}
	o2 := h.send(cs, message{from: "alice@pass.example", rcpts: []string{"bob@example.net"}, headers: forged})
	if reply(o2.mail) != "continue" || reply(o2.end) != "continue" {
		t.Fatalf("second message answered %q, %q", reply(o2.mail), reply(o2.end))
	}
	if got := inserted(t, o2.mods); len(got) != 3 || got[0].value != wantReceivedSPF[spf.Pass] {
		t.Errorf("second message headers %q, want the pass of alice@pass.example on top", got)
	}
	// An aborted third message, then a fourth: the third's forged header
	// must not be deleted again in the fourth.
	if err := cs.Macros(gomilter.CodeMail, "i", "Q3"); err != nil {
		t.Fatal(err)
	}
	h.mustContinue("mail", must(t)(cs.Mail("alice@softfail.example", nil)))
	h.mustContinue("header", must(t)(cs.HeaderField("Received-SPF", "forged")))
	if err := cs.Abort(); err != nil {
		t.Fatal(err)
	}
	o4 := h.send(cs, message{from: "alice@fail.example", rcpts: []string{"bob@example.net"}})
	if got, want := reply(o4.mail), wantReject[spf.Fail]; got != want {
		t.Fatalf("fourth MAIL FROM answered %q, want %q", got, want)
	}
	if got := changes(o2.mods); !slices.Equal(got, []string{"Received-SPF#1"}) {
		t.Errorf("second message header deletions %q, want [Received-SPF#1]", got)
	}

	logs := h.logs.lines(t, "spf decision")
	var got []string
	for _, l := range logs {
		got = append(got, l["sender"].(string)+" "+l["result"].(string)+" "+l["action"].(string)+" "+l["queue_id"].(string))
	}
	want := []string{
		"alice@fail.example fail reject ",
		"alice@pass.example pass accept QID0",
		"alice@softfail.example softfail accept Q3",
		"alice@fail.example fail reject ",
	}
	if !slices.Equal(got, want) {
		t.Errorf("decisions logged:\n got %q\nwant %q", got, want)
	}
}

func changes(mods []gomilter.ModifyAction) []string {
	var out []string
	for _, m := range mods {
		if m.Code == gomilter.ActChangeHeader {
			out = append(out, m.HeaderName+"#"+itoa(int(m.HeaderIndex))+m.HeaderValue)
		}
	}
	return out
}

// TestNotChecked covers the clients and messages that are never checked:
// no DNS query, no header, no refusal, and a log line saying why. Forged
// copies of our headers are removed from mail of authenticated clients and
// skipped senders, which comes from outside; trusted and skipped clients
// (such as our own content filter) keep theirs.
func TestNotChecked(t *testing.T) {
	tests := []struct {
		name      string
		configure func(*config.Config)
		ip        string
		mailMacro []string
		from      string
		reason    string
		logLines  int // "spf skipped" lines for two messages
		// removed are the header changes expected: the forged copies deleted.
		removed []string
	}{
		{"trusted IPv4", nil, "127.0.0.1", nil, "alice@fail.example", "trusted network", 1, nil},
		{"trusted IPv6", nil, "::1", nil, "alice@fail.example", "trusted network", 1, nil},
		{"skip_clients", func(c *config.Config) {
			c.SkipClients = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
		}, clientIP, nil, "alice@fail.example", "skip_clients", 1, nil},
		{"authenticated", nil, clientIP, []string{"{auth_authen}", "alice"}, "alice@fail.example", "authenticated", 2,
			[]string{"Authentication-Results#1", "Received-SPF#1"}},
		{"skip_senders subdomain", func(c *config.Config) {
			c.SkipSenders = []string{"example", "other.test"}
		}, clientIP, nil, "alice@Fail.Example", "skip_senders", 2,
			[]string{"Authentication-Results#1", "Received-SPF#1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			if tt.configure != nil {
				tt.configure(cfg)
			}
			h := newHarness(t, cfg, testZone(t))
			cs := h.connect(tt.ip, failHELO)
			for range 2 {
				o := h.send(cs, message{
					from: tt.from, mailMacro: tt.mailMacro, rcpts: []string{"bob@example.net"},
					headers: []hdr{
						{"Received-SPF", "pass (forged)"},
						{"Authentication-Results", ourAuthID + "; spf=pass smtp.mailfrom=fail.example"},
						{"Authentication-Results", "other.example; spf=pass smtp.mailfrom=fail.example"},
					},
				})
				if reply(o.mail) != "continue" || reply(o.end) != "continue" {
					t.Fatalf("answered %q, %q; want continue", reply(o.mail), reply(o.end))
				}
				got := changes(o.mods)
				slices.Sort(got)
				if len(o.mods) != len(tt.removed) || !slices.Equal(got, tt.removed) {
					t.Errorf("modifications %+v, want the deletions %v only", o.mods, tt.removed)
				}
			}
			if q := h.dns.Queries(); len(q) != 0 {
				t.Errorf("DNS queries %v, want none", q)
			}
			logs := h.logs.lines(t, "spf skipped")
			if len(logs) != tt.logLines {
				t.Fatalf("%d skip log lines, want %d: %v", len(logs), tt.logLines, logs)
			}
			if logs[0]["reason"] != tt.reason {
				t.Errorf("reason %v, want %q", logs[0]["reason"], tt.reason)
			}
			if d := h.logs.lines(t, "spf decision"); len(d) != 0 {
				t.Errorf("decision lines %v, want none", d)
			}
		})
	}

	// Without skip_authenticated, an authenticated client is checked.
	cfg := testConfig()
	cfg.SkipAuthenticated = false
	h := newHarness(t, cfg, testZone(t))
	cs := h.connect(clientIP, passHELO)
	o := h.send(cs, message{from: "alice@fail.example", mailMacro: []string{"{auth_authen}", "alice"}, rcpts: []string{"bob@example.net"}})
	if got := reply(o.mail); got != wantReject[spf.Fail] {
		t.Errorf("authenticated client without skip_authenticated: %q, want %q", got, wantReject[spf.Fail])
	}
}

// TestDryRun checks that a dry run decides and logs but never refuses or
// holds.
func TestDryRun(t *testing.T) {
	for _, res := range []spf.Result{spf.Fail, spf.TempError} {
		t.Run(string(res), func(t *testing.T) {
			cfg := testConfig()
			cfg.DryRun = true
			cfg.Policy.MailFrom[spf.Fail] = config.Quarantine
			h := newHarness(t, cfg, testZone(t))
			cs := h.connect(clientIP, passHELO)
			o := h.send(cs, message{from: "alice@" + string(res) + ".example", rcpts: []string{"bob@example.net"}})
			if reply(o.mail) != "continue" || reply(o.end) != "continue" {
				t.Fatalf("answered %q, %q; want continue", reply(o.mail), reply(o.end))
			}
			if got := inserted(t, o.mods); len(got) != 3 || got[0].value != h.expand(wantReceivedSPF[res]) {
				t.Errorf("headers %q, want the %s Received-SPF on top", got, res)
			}
			if q := quarantineReasons(o.mods); len(q) != 0 {
				t.Errorf("quarantined %q in a dry run", q)
			}
			logs := h.logs.lines(t, "spf decision")
			if len(logs) != 1 || logs[0]["dry_run"] != true {
				t.Fatalf("log lines %v, want one with dry_run", logs)
			}
			wantAction, wantReply := "quarantine", any(nil)
			if res == spf.TempError {
				wantAction, wantReply = "tempfail", h.expand(wantReject[spf.TempError])
			}
			if logs[0]["action"] != wantAction || logs[0]["reply"] != wantReply {
				t.Errorf("logged action %v reply %v, want %v %v", logs[0]["action"], logs[0]["reply"], wantAction, wantReply)
			}
		})
	}
}

// TestHELOPolicy checks when the HELO identity is checked and that its
// refusal comes at MAIL FROM, never replacing the MAIL FROM result.
func TestHELOPolicy(t *testing.T) {
	allAccept := func(c *config.Config) {
		for r := range c.Policy.HELO {
			c.Policy.HELO[r] = config.Accept
		}
	}
	tests := []struct {
		name      string
		configure func(*config.Config)
		helo      string
		from      string
		want      string
		heloQuery bool // whether the HELO name was looked up
		wantID    string
	}{
		{"HELO fail refuses a MAIL FROM pass", nil, failHELO, "alice@pass.example",
			"550 5.7.23 SPF fail: mx.fail.example does not designate 192.0.2.1 as a permitted sender", true, "helo"},
		{"HELO pass does not stand in for a MAIL FROM fail", nil, passHELO, "alice@fail.example",
			wantReject[spf.Fail], true, "mailfrom"},
		{"HELO temperror tempfails when asked", func(c *config.Config) { c.Policy.HELO[spf.TempError] = config.Tempfail },
			"mx.temperror.example", "alice@pass.example",
			"451 4.7.24 SPF temperror: DNS failure: TXT mx.temperror.example: server answered SERVFAIL, try again later", true, "helo"},
		{"HELO temperror accepted by default", nil, "mx.temperror.example", "alice@pass.example", "continue", true, "mailfrom"},
		{"HELO policy all accept: not checked", allAccept, failHELO, "alice@pass.example", "continue", false, "mailfrom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			if tt.configure != nil {
				tt.configure(cfg)
			}
			h := newHarness(t, cfg, testZone(t))
			cs := h.connect(clientIP, tt.helo)
			o := h.send(cs, message{from: tt.from, rcpts: []string{"bob@example.net"}})
			if got, want := reply(o.mail), h.expand(tt.want); got != want {
				t.Fatalf("MAIL FROM answered %q, want %q", got, want)
			}
			asked := false
			for _, q := range h.dns.Queries() {
				if strings.EqualFold(q.Name, tt.helo+".") {
					asked = true
				}
			}
			if asked != tt.heloQuery {
				t.Errorf("HELO name looked up: %v, want %v", asked, tt.heloQuery)
			}
			logs := h.logs.lines(t, "spf decision")
			if len(logs) != 1 || logs[0]["identity"] != tt.wantID {
				t.Errorf("log lines %v, want one deciding on identity %s", logs, tt.wantID)
			}
			if tt.want == "continue" {
				n := 0
				for _, f := range inserted(t, o.mods) {
					if f.name == "Received-SPF" {
						n++
					}
				}
				if want := map[bool]int{true: 2, false: 1}[tt.heloQuery]; n != want {
					t.Errorf("%d Received-SPF fields, want %d", n, want)
				}
			}
		})
	}

	// The HELO check is made once per connection, not once per message.
	h := newHarness(t, testConfig(), testZone(t))
	cs := h.connect(clientIP, passHELO)
	for range 3 {
		h.send(cs, message{from: "alice@pass.example", rcpts: []string{"bob@example.net"}})
	}
	n := 0
	for _, q := range h.dns.Queries() {
		if strings.EqualFold(q.Name, passHELO+".") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("HELO name looked up %d times for three messages, want 1", n)
	}
}

// TestNeverRefuse checks that a refusal moves to RCPT TO and spares the
// listed recipients.
func TestNeverRefuse(t *testing.T) {
	cfg := testConfig()
	cfg.NeverRefuse = []string{"postmaster", "abuse@example.net"}
	h := newHarness(t, cfg, testZone(t))
	cs := h.connect(clientIP, passHELO)
	o := h.send(cs, message{
		from:  "alice@fail.example",
		rcpts: []string{"bob@example.net", "PostMaster@example.net", "ABUSE@Example.Net", "abuse@other.example", "postmaster"},
	})
	if reply(o.mail) != "continue" {
		t.Fatalf("MAIL FROM answered %q, want continue", reply(o.mail))
	}
	var got []string
	for _, a := range o.rcpts {
		got = append(got, reply(a))
	}
	refused := wantReject[spf.Fail]
	want := []string{refused, "continue", "continue", refused, "continue"}
	if !slices.Equal(got, want) {
		t.Errorf("RCPT answers:\n got %q\nwant %q", got, want)
	}
	if reply(o.end) != "continue" || len(inserted(t, o.mods)) != 3 {
		t.Errorf("end of message %q with %d headers, want continue with 3", reply(o.end), len(inserted(t, o.mods)))
	}
	logs := h.logs.lines(t, "spf decision")
	if len(logs) != 1 || logs[0]["at_rcpt"] != true || logs[0]["action"] != "reject" {
		t.Errorf("log lines %v, want one reject at_rcpt", logs)
	}

	// Every recipient refused: the MTA aborts, and the decision is logged
	// then. The next message makes sure the abort was processed.
	o2 := h.send(cs, message{from: "alice@fail.example", rcpts: []string{"bob@example.net"}})
	if reply(o2.rcpts[0]) != refused {
		t.Errorf("RCPT answered %q, want %q", reply(o2.rcpts[0]), refused)
	}
	h.send(cs, message{from: "alice@pass.example", rcpts: []string{"bob@example.net"}})
	logs = h.logs.lines(t, "spf decision")
	if len(logs) != 3 || logs[1]["at_rcpt"] != true || logs[1]["queue_id"] != "QID0" || logs[2]["result"] != "pass" {
		t.Errorf("decision lines %v, want the aborted refusal then the pass", logs)
	}
}

// spamAssassinRE is how SpamAssassin 4.0 reads a Received-SPF (docs/interop.md).
var spamAssassinRE = regexp.MustCompile(`(?i)^received-spf:\s*(pass|neutral|(?:soft)?fail|(?:temp|perm)error|none)\b(?:.*\bidentity=(\S+?);?\b)?`)

// TestHostileText sends an explanation with '%' and a sender with quotes,
// spaces, CR, LF and non-ASCII: the reply and the headers stay one
// well-formed line each.
func TestHostileText(t *testing.T) {
	sender := "\"john \r\nX-Evil: smith \xc3\xa9 100%\"@exp.example"
	tests := []struct {
		name      string
		from      string
		configure func(*config.Config)
		want      string
	}{
		{"exp text", sender, nil,
			`550 5.7.23 SPF fail: 100%% sure: "john X-Evil: smith ? 100%%"@exp.example may not use 192.0.2.1`},
		{"invalid exp text ignored", "alice@badexp.example", nil,
			`550 5.7.23 SPF fail: badexp.example does not designate 192.0.2.1 as a permitted sender`},
		{"reply template", sender, func(c *config.Config) {
			c.Replies[spf.Fail] = "Rejected: see https://www.example.net/why?s=%{S}&ip=%{i}&r=%{r} for %{s}"
		}, `550 5.7.23 Rejected: see https://www.example.net/why?s=%%22john%%20%%0D%%0AX-Evil%%3A%%20smith%%20%%C3%%A9%%20100%%25%%22%%40exp.example&ip=192.0.2.1&r=mx.example.net for "john X-Evil: smith ? 100%%"@exp.example`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			if tt.configure != nil {
				tt.configure(cfg)
			}
			h := newHarness(t, cfg, testZone(t))
			cs := h.connect(clientIP, passHELO)
			o := h.send(cs, message{from: tt.from, rcpts: []string{"bob@example.net"}})
			if got := reply(o.mail); got != tt.want {
				t.Errorf("MAIL FROM answered\n%q, want\n%q", got, tt.want)
			}
			checkReplyWellFormed(t, reply(o.mail))
		})
	}

	// Accepted, the same sender's headers stay well-formed and parsable.
	cfg := testConfig()
	cfg.Policy.MailFrom[spf.Fail] = config.Accept
	h := newHarness(t, cfg, testZone(t))
	cs := h.connect(clientIP, passHELO)
	o := h.send(cs, message{from: sender, rcpts: []string{"bob@example.net"}})
	fields := inserted(t, o.mods)
	if len(fields) != 3 {
		t.Fatalf("headers %q, want 3", fields)
	}
	wantRS := `fail (mx.example.net: domain of "john ??X-Evil: smith ? 100%"@exp.example does not designate 192.0.2.1 as permitted sender) client-ip=192.0.2.1; envelope-from="\"john ??X-Evil: smith ? 100%\"@exp.example"; helo=mx.pass.example; receiver=mx.example.net; mechanism=-all; identity=mailfrom`
	if fields[0].value != wantRS {
		t.Errorf("Received-SPF\n got %q\nwant %q", fields[0].value, wantRS)
	}
	m := spamAssassinRE.FindStringSubmatch("Received-SPF: " + fields[0].value)
	if m == nil || m[1] != "fail" || m[2] != "mailfrom" {
		t.Errorf("SpamAssassin reads %q from %q", m, fields[0].value)
	}
	id, results, err := authres.Parse(fields[2].value)
	if err != nil || id != ourAuthID || len(results) != 2 {
		t.Fatalf("Authentication-Results %q parses as %q %v %v", fields[2].value, id, results, err)
	}
	if r, ok := results[1].(*authres.SPFResult); !ok || r.Value != authres.ResultFail || r.From != "exp.example" {
		t.Errorf("last spf= entry %+v, want fail for exp.example", results[1])
	}
}

// checkReplyWellFormed checks a reply as an MTA needs it: one line of
// printable ASCII, the code's class in the enhanced code, and every '%'
// doubled.
func checkReplyWellFormed(t *testing.T, r string) {
	t.Helper()
	if !regexp.MustCompile(`^([45])[0-9][0-9] ([45])\.[0-9]{1,3}\.[0-9]{1,3} [ -~]+$`).MatchString(r) || r[0] != r[4] {
		t.Errorf("reply %q is not one printable line with matching codes", r)
	}
	if strings.Contains(strings.ReplaceAll(r, "%%", ""), "%") {
		t.Errorf("reply %q has a lone %%", r)
	}
	if len(r) > 512 {
		t.Errorf("reply is %d octets", len(r))
	}
}

// TestForgedHeaders checks which incoming headers are removed, with which
// indices and in which order.
func TestForgedHeaders(t *testing.T) {
	incoming := []hdr{
		{"Received", "from client.example by mx.example.net"},
		{"Authentication-Results", "other.example; spf=pass smtp.mailfrom=pass.example"},
		{"received-spf", "pass (forged 1)"},
		{"Authentication-Results", " MX.Example.NET; spf=pass smtp.mailfrom=pass.example"},
		{"Subject", "hi"},
		{"RECEIVED-SPF", "pass (forged 2)"},
		{"authentication-results", "(comment (nested)) mx.example.net 1;\n\tspf=pass smtp.mailfrom=pass.example"},
		{"Authentication-Results", "\"mx.example.net\"; dkim=pass"},
		{"Authentication-Results", "mx.example.net.other; spf=pass"},
		{"Received-SPF", "pass (forged 3)"},
	}
	t.Run("removed", func(t *testing.T) {
		h := newHarness(t, testConfig(), testZone(t))
		cs := h.connect(clientIP, passHELO)
		o := h.send(cs, message{from: "alice@pass.example", rcpts: []string{"bob@example.net"}, headers: incoming})
		wantChanges := []string{
			"Received-SPF#3", "Received-SPF#2", "Received-SPF#1",
			"Authentication-Results#4", "Authentication-Results#3", "Authentication-Results#2",
		}
		if got := changes(o.mods); !slices.Equal(got, wantChanges) {
			t.Errorf("header changes\n got %q\nwant %q", got, wantChanges)
		}
		var names []string
		for _, f := range o.final {
			names = append(names, f.name+": "+strings.ReplaceAll(f.value, "\n", ""))
		}
		want := []string{
			"Received-SPF: " + wantReceivedSPF[spf.Pass],
			"Received-SPF: " + wantHELOReceivedSPF,
			"Authentication-Results: mx.example.net; spf=pass smtp.helo=mx.pass.example; spf=pass smtp.mailfrom=pass.example",
			"Received: from client.example by mx.example.net",
			"Authentication-Results: other.example; spf=pass smtp.mailfrom=pass.example",
			"Subject: hi",
			"Authentication-Results: mx.example.net.other; spf=pass",
		}
		if !slices.Equal(names, want) {
			t.Errorf("final header\n got %q\nwant %q", names, want)
		}
	})
	t.Run("kept when remove_forged is off", func(t *testing.T) {
		cfg := testConfig()
		cfg.Headers.RemoveForged = false
		cfg.Headers.AuthenticationResults = false
		h := newHarness(t, cfg, testZone(t))
		cs := h.connect(clientIP, passHELO)
		o := h.send(cs, message{from: "alice@pass.example", rcpts: []string{"bob@example.net"}, headers: incoming})
		if got := changes(o.mods); len(got) != 0 {
			t.Errorf("header changes %q, want none", got)
		}
		if len(o.final) != len(incoming)+2 || o.final[0].name != "Received-SPF" || o.final[2] != incoming[0] {
			t.Errorf("final header %q, want two Received-SPF above the incoming fields", o.final)
		}
	})
}

// panicResolver panics when asked about panic.example, as a bug in the
// resolver would.
type panicResolver struct{ spf.Resolver }

func (p panicResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	if strings.EqualFold(strings.TrimSuffix(name, "."), "panic.example") {
		panic("resolver bug")
	}
	return p.Resolver.LookupTXT(ctx, name)
}

// TestInternalFailure checks that a failure inside a session tempfails the
// message and leaves the connection usable.
func TestInternalFailure(t *testing.T) {
	cfg := testConfig()
	cfg.DryRun = true // even a dry run does not let an unchecked message through
	h := newHarnessResolver(t, cfg, panicResolver{dnstest.NewMapResolver(testZone(t))}, nil)
	cs := h.connect(clientIP, passHELO)
	o := h.send(cs, message{from: "alice@panic.example", rcpts: []string{"bob@example.net"}})
	if got := reply(o.mail); got != internalErrorReply {
		t.Fatalf("MAIL FROM answered %q, want %q", got, internalErrorReply)
	}
	logs := h.logs.lines(t, "spf internal failure, message deferred")
	if len(logs) != 1 || logs[0]["stage"] != "mail" || logs[0]["error"] != "resolver bug" {
		t.Errorf("failure log lines %v", logs)
	}
	o2 := h.send(cs, message{from: "alice@pass.example", rcpts: []string{"bob@example.net"}})
	if reply(o2.mail) != "continue" || reply(o2.end) != "continue" || len(inserted(t, o2.mods)) != 3 {
		t.Errorf("next message answered %q, %q with %d headers", reply(o2.mail), reply(o2.end), len(o2.mods))
	}

	// No runtime at all: every stage answered tempfails, nothing is
	// accepted. An MTA that waits for no reply at CONNECT and HELO (go-milter's
	// client then says continue itself) is refused at MAIL.
	h2 := startServer(t, func() *Runtime { return nil }, nil, &logBuffer{})
	for _, offer := range []gomilter.OptProtocol{0, postfixProtocol} {
		h2.offer = offer
		cs2 := h2.open()
		answers := []*gomilter.Action{
			must(t)(cs2.Conn("client.example", gomilter.FamilyInet, 25, clientIP)),
			must(t)(cs2.Helo(passHELO)),
			must(t)(cs2.Mail("alice@pass.example", nil)),
		}
		want := []string{internalErrorReply, internalErrorReply, internalErrorReply}
		if offer != 0 {
			want[0], want[1] = "continue", "continue"
		}
		for i, a := range answers {
			if reply(a) != want[i] {
				t.Errorf("offering %#x: %s answered %q without a runtime, want %q", offer, []string{"connect", "helo", "mail"}[i], reply(a), want[i])
			}
		}
	}
}

// TestMidConnectionObject checks a session object made after the connect
// data went by: it rebuilds the client from the macros.
func TestMidConnectionObject(t *testing.T) {
	cfg := testConfig()
	rt := &Runtime{
		Config:  cfg,
		Checker: &spf.Checker{Resolver: dnstest.NewMapResolver(testZone(t)), Receiver: cfg.Receiver},
		Log:     slog.New(slog.NewJSONHandler(&logBuffer{}, nil)),
	}
	tests := []struct {
		name   string
		macros map[string]string
		from   string
		want   string
	}{
		{"refused from macros", map[string]string{"{client_addr}": clientIP, "s": passHELO}, "alice@fail.example", wantReject[spf.Fail]},
		{"trusted from macros", map[string]string{"{client_addr}": "127.0.0.1"}, "alice@fail.example", "continue"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewServer(func() *Runtime { return rt }).NewMilter()
			resp, err := s.MailFrom(tt.from, &gomilter.Modifier{Macros: tt.macros})
			if err != nil {
				t.Fatal(err)
			}
			got := "continue"
			if msg := resp.Response(); msg.Code == byte(gomilter.ActReplyCode) {
				got = strings.TrimSuffix(string(msg.Data), "\x00")
			} else if msg.Code != byte(gomilter.ActContinue) {
				got = "action " + string(rune(msg.Code))
			}
			if got != tt.want {
				t.Errorf("answered %q, want %q", got, tt.want)
			}
		})
	}
}
