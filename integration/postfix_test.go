package integration

import (
	"fmt"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The zone every Postfix test reads, as the milter's only resolver sees
// it. Clients present themselves (XCLIENT) as 192.0.2.0/24 or
// 2001:db8::/32 addresses, which the "pass" domain and the HELO name
// helo.example.test authorise.
const postfixZone = `
pass      IN TXT "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all"
helo      IN TXT "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all"
helo-fail IN TXT "v=spf1 -all"
fail      IN TXT "v=spf1 ip4:198.51.100.1 exp=why.fail.example.test -all"
why.fail  IN TXT "%{i} may not send mail for %{o}: 100%% sure"
softfail  IN TXT "v=spf1 ~all"
neutral   IN TXT "v=spf1 ?all"
none      IN TXT "not an spf record"
perm      IN TXT "v=spf1 ip4:192.0.2.0/24 bogus:mechanism -all"
twice     IN TXT "v=spf1 -all"
twice     IN TXT "v=spf1 +all"
`

// authservID is the milter's authserv-id and receiver name in the Postfix
// tests, and Postfix's own myhostname.
const authservID = "mx.example.test"

// postfixMilterConfig is the milter's config for the Postfix tests: the
// defaults, except that a permerror of MAIL FROM is refused and only
// 127.0.0.1 (the tests' own connections without XCLIENT) is trusted.
// receiver is the host named in Received-SPF. The DNS cache is off: the
// temperror tests stop the DNS server and must see the next check fail,
// not an answer another test left in the cache (TestPostfixNothingLost
// runs with the cache on). The debug level logs the protocol negotiated.
func postfixMilterConfig(dnsAddr, receiver string) string {
	return fmt.Sprintf(`authserv_id: %s
receiver: %s
dns: {servers: [%q], timeout: 3s, check_timeout: 10s, cache_size: 0}
policy:
  mailfrom: {permerror: reject}
trusted_networks: [127.0.0.1/32]
log: {level: debug}
`, authservID, receiver, dnsAddr)
}

// postfixEnv is the package's one Postfix instance, wired to one
// spf-milter that resolves through one NSD. Tests using it run one after
// the other (none is parallel): some stop the milter or NSD for a while.
type postfixEnv struct {
	nsd    *NSD
	milter *Milter

	dir      string
	smtpAddr string
	// submissionAddr is a second smtpd service, which names itself
	// "submission" to the milter ({daemon_name}).
	submissionAddr string
	mbox           string // every delivered message is appended here
	maillog        string
	// mainCF is added to the end of main.cf, where a setting overrides
	// the same one above.
	mainCF string

	wrapper   *exec.Cmd     // "postfix start-fg"
	wrapperCh chan struct{} // closed when wrapper has exited
	masterPID int
}

var (
	postfixOnce sync.Once
	postfixErr  error
	postfixInst *postfixEnv
)

// postfixFixture returns the shared Postfix environment, starting it on
// first use; it is stopped by TestMain once every test has run. A test
// that fails gets the milter's log and Postfix's log printed.
func postfixFixture(t *testing.T) *postfixEnv {
	t.Helper()
	need(t, "postfix", "postconf", "nsd", "nsd-checkconf")
	if os.Geteuid() != 0 {
		// Postfix's master must start as root, to run its services as the
		// postfix user.
		msg := "the Postfix tests need root (scripts/test.sh run as root in CI)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	postfixOnce.Do(func() {
		postfixInst, postfixErr = startPostfixEnv()
	})
	if postfixErr != nil {
		t.Fatal(postfixErr)
	}
	e := postfixInst
	// Errors of the shared fixtures' methods go to the test using them.
	e.nsd.tb, e.milter.tb = t, t
	// The logs are shared too: a failed test shows only its own part.
	milterLogStart := len(e.milter.Log())
	maillogStart := 0
	if fi, err := os.Stat(e.maillog); err == nil {
		maillogStart = int(fi.Size())
	}
	t.Cleanup(func() {
		e.nsd.tb, e.milter.tb = nil, nil
		// A test that failed halfway may have left NSD or the milter
		// stopped: the next test gets them running.
		if !e.nsd.running() {
			if err := e.nsd.start(); err != nil {
				t.Error(err)
			}
		}
		if !e.milter.running() {
			if err := e.milter.start(); err != nil {
				t.Error(err)
			}
		}
		if t.Failed() {
			t.Logf("spf-milter log during the test:\n%s", e.milter.Log()[milterLogStart:])
			log, _ := os.ReadFile(e.maillog)
			t.Logf("Postfix log during the test:\n%s", log[min(maillogStart, len(log)):])
		}
	})
	return e
}

// startPostfixEnv starts NSD, the milter and Postfix. Its stop is
// registered first, so that TestMain stops whatever started even when a
// later step fails.
func startPostfixEnv() (e *postfixEnv, err error) {
	dir, err := os.MkdirTemp(baseDir, "postfix-")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	e = &postfixEnv{dir: dir}
	addPackageCleanup(e.stop)

	dnsDir := filepath.Join(dir, "dns")
	if err := os.Mkdir(dnsDir, 0o755); err != nil {
		return nil, err
	}
	if e.nsd, err = newNSD(dnsDir, "example.test", postfixZone); err != nil {
		return nil, err
	}
	milterDir := filepath.Join(dir, "milter")
	if err := os.Mkdir(milterDir, 0o755); err != nil {
		return nil, err
	}
	if e.milter, err = newMilter(milterDir, postfixMilterConfig(e.nsd.Addr, authservID)); err != nil {
		return nil, err
	}
	if err := e.startPostfix(); err != nil {
		return nil, err
	}
	return e, nil
}

// startPostfix writes a Postfix instance of its own (config, queue, data
// and mail directories under e.dir) and runs it with "postfix start-fg".
func (e *postfixEnv) startPostfix() error {
	pf := filepath.Join(e.dir, "pf")
	etc, spool, data, mail := filepath.Join(pf, "etc"), filepath.Join(pf, "spool"), filepath.Join(pf, "data"), filepath.Join(pf, "mail")
	for _, d := range []string{etc, spool, data, mail} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	pfUser, err := user.Lookup("postfix")
	if err != nil {
		return fmt.Errorf("the postfix user (Debian package postfix): %v", err)
	}
	uid, _ := strconv.Atoi(pfUser.Uid)
	gid, _ := strconv.Atoi(pfUser.Gid)
	// Postfix wants its data directory owned by mail_owner, and the
	// virtual delivery agent writes the mbox as that user.
	for _, d := range []string{data, mail} {
		if err := os.Chown(d, uid, gid); err != nil {
			return err
		}
	}
	// Debian's postfix package ships master.cf even when configured with
	// "No configuration".
	masterCF, err := os.ReadFile("/etc/postfix/master.cf")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(etc, "master.cf"), masterCF, 0o644); err != nil {
		return err
	}
	port, err := findFreePort()
	if err != nil {
		return err
	}
	e.smtpAddr = fmt.Sprintf("127.0.0.1:%d", port)
	if port, err = findFreePort(); err != nil {
		return err
	}
	e.submissionAddr = fmt.Sprintf("127.0.0.1:%d", port)
	e.mbox = filepath.Join(mail, "sink")
	e.maillog = filepath.Join(pf, "maillog")
	mainCF := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s
data_directory = %[2]s
mail_owner = postfix
setgid_group = postdrop
myhostname = %[3]s
mydomain = example.test
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
# all, not ipv4: with ipv4 only, XCLIENT ADDR=IPV6:... is refused as bad syntax
inet_protocols = all
mynetworks = 127.0.0.0/8
relayhost =
alias_maps =
alias_database =
local_recipient_maps =
biff = no
append_dot_mydomain = no
smtputf8_enable = no
# Nothing may ask the machine's own resolver: no PTR lookups of clients,
# no DNS for outgoing mail (there is none).
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
# Logging without syslogd, through Debian's postlogd service.
maillog_file_prefixes = %[4]s
maillog_file = %[5]s
# Every recipient of these domains goes into the one mbox file "sink".
virtual_mailbox_domains = example.test, localhost
virtual_mailbox_base = %[6]s
virtual_mailbox_maps = static:sink
virtual_uid_maps = static:%[7]d
virtual_gid_maps = static:%[8]d
virtual_minimum_uid = 1
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
# The tests present any client address and HELO name with XCLIENT;
# Postfix then replays connect and HELO to the milter.
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_milters = %[9]s
non_smtpd_milters =
milter_default_action = tempfail
milter_protocol = 6
milter_connect_timeout = 5s
milter_command_timeout = 30s
# Retry deferred mail soon, in case a delivery attempt fails for a moment.
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
`, spool, data, authservID, e.dir, e.maillog, mail, uid, gid, e.milter.Listen) + e.mainCF
	if err := os.WriteFile(filepath.Join(etc, "main.cf"), []byte(mainCF), 0o644); err != nil {
		return err
	}
	// master.cf: no port 25 listener but one on our port, a second one
	// standing for the submission port, and no chroot (the chroot would
	// lack the files of this instance).
	for _, args := range [][]string{
		{"-M#", "smtp/inet"},
		{"-M", fmt.Sprintf("%s/inet = %s inet n - n - - smtpd", e.smtpAddr, e.smtpAddr)},
		{"-M", fmt.Sprintf("%s/inet = %s inet n - n - - smtpd -o milter_macro_daemon_name=submission", e.submissionAddr, e.submissionAddr)},
		{"-F", "*/*/chroot = n"},
	} {
		cmd := exec.Command("postconf", append([]string{"-c", etc}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("postconf %q: %v\n%s", args, err, out)
		}
	}

	cmd := exec.Command("postfix", "-c", etc, "start-fg")
	out, err := os.Create(filepath.Join(pf, "start-fg.out"))
	if err != nil {
		return err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("postfix start-fg: %v", err)
	}
	e.wrapper, e.wrapperCh = cmd, make(chan struct{})
	go func() {
		cmd.Wait()
		close(e.wrapperCh)
	}()

	// Ready once it accepts SMTP connections; then the master's PID is in
	// its pid file. Killing the start-fg wrapper would leave master running.
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", e.smtpAddr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-e.wrapperCh:
			b, _ := os.ReadFile(out.Name())
			log, _ := os.ReadFile(e.maillog)
			return fmt.Errorf("postfix start-fg exited: %s\n%s\n%s", cmd.ProcessState, b, log)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postfix does not accept connections on %s: %v", e.smtpAddr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, err := os.ReadFile(filepath.Join(spool, "pid", "master.pid"))
	if err != nil {
		return err
	}
	if e.masterPID, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
		return fmt.Errorf("master.pid: %v", err)
	}
	return nil
}

// stop stops Postfix (its master by PID, then the wrapper is waited for),
// the milter and NSD. It reports the milter exiting badly: a status other
// than 0 after SIGTERM, such as a race found under -race.
func (e *postfixEnv) stop() error {
	if e.masterPID == 0 && e.wrapper != nil {
		// Start failed halfway: the master may be running all the same.
		b, _ := os.ReadFile(filepath.Join(e.dir, "pf", "spool", "pid", "master.pid"))
		e.masterPID, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	if e.masterPID > 0 {
		syscall.Kill(e.masterPID, syscall.SIGTERM)
		deadline := time.Now().Add(30 * time.Second)
		for syscall.Kill(e.masterPID, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if e.wrapper != nil {
		select {
		case <-e.wrapperCh:
		case <-time.After(30 * time.Second):
			e.wrapper.Process.Kill()
			<-e.wrapperCh
		}
	}
	var err error
	if e.milter != nil {
		if err = e.milter.stop(); err != nil {
			err = fmt.Errorf("%v\n%s", err, e.milter.Log())
		}
	}
	if e.nsd != nil {
		e.nsd.stop()
	}
	return err
}

// message is one mail to send: an envelope and a few header fields. ID
// makes it unique, as its Message-ID and in its Subject, so that a test
// finds it in the shared mbox.
type message struct {
	From, To string
	ID       string
	// Headers are extra header lines ("Name: value"), written first.
	Headers []string
}

// newMessage returns a message from sender to rcpt@example.test with a
// unique ID built from name.
func newMessage(name, from string) message {
	return message{
		From: from,
		To:   "rcpt@example.test",
		ID:   fmt.Sprintf("%s.%d.%d", strings.NewReplacer("/", ".", " ", "-").Replace(name), os.Getpid(), msgSeq.Add(1)),
	}
}

var msgSeq atomic.Int64

// data is the message as handed to textproto's DotWriter after DATA,
// which dot-stuffs it and writes CRLF line ends.
func (m message) data() string {
	var b strings.Builder
	for _, h := range m.Headers {
		b.WriteString(h + "\n")
	}
	fmt.Fprintf(&b, "From: <%s>\nTo: <%s>\nSubject: spf-milter integration %s\n", m.From, m.To, m.ID)
	fmt.Fprintf(&b, "Message-ID: <%s@it.example.test>\nDate: %s\n\n", m.ID, time.Now().Format(time.RFC1123Z))
	b.WriteString("Hello from the spf-milter integration tests.\n. A line starting with a dot.\n")
	return b.String()
}

// reply is an SMTP server's answer; Stage names the command it answered
// ("" when the message was accepted for delivery).
type reply struct {
	Stage string
	Code  int
	Text  string // every line of the reply, joined by "\n"
}

func (r reply) String() string {
	if r.Stage == "" {
		return fmt.Sprintf("accepted (%d %s)", r.Code, r.Text)
	}
	return fmt.Sprintf("%s: %d %s", r.Stage, r.Code, r.Text)
}

// smtpClient speaks just enough SMTP, XCLIENT included, to hand Postfix
// messages as any client: net/smtp has no XCLIENT.
type smtpClient struct {
	conn net.Conn
	tp   *textproto.Conn
}

// dialSMTP connects to addr, says EHLO and, when clientIP is set, uses
// XCLIENT to present clientIP ("IPV6:..." for IPv6) and then EHLO helo.
func dialSMTP(addr, clientIP, helo string) (*smtpClient, error) {
	conn, err := net.DialTimeout("tcp", addr, 30*time.Second)
	if err != nil {
		return nil, err
	}
	c := &smtpClient{conn: conn, tp: textproto.NewConn(conn)}
	// "" reads the greeting.
	steps := []string{"", "EHLO " + helo}
	if clientIP != "" {
		// XCLIENT starts the session over with a new greeting, after
		// which the client says EHLO again.
		steps = append(steps, "XCLIENT ADDR="+clientIP+" NAME=[UNAVAILABLE]", "EHLO "+helo)
	}
	for _, line := range steps {
		r, err := c.cmd(line)
		if err == nil && r.Code/100 != 2 {
			err = fmt.Errorf("%q: %s", line, r)
		}
		if err != nil {
			conn.Close()
			return nil, err
		}
	}
	return c, nil
}

// cmd sends line (nothing when empty) and reads the reply.
func (c *smtpClient) cmd(line string) (reply, error) {
	c.conn.SetDeadline(time.Now().Add(60 * time.Second))
	if line != "" {
		if err := c.tp.PrintfLine("%s", line); err != nil {
			return reply{}, err
		}
	}
	code, text, err := c.tp.ReadResponse(0)
	stage, _, _ := strings.Cut(line, " ")
	stage, _, _ = strings.Cut(stage, ":")
	return reply{Stage: stage, Code: code, Text: text}, err
}

// send runs one mail transaction. A refusal is returned as the reply
// naming the command refused (after which the transaction is reset so
// that the connection can carry another message); an error is a broken
// connection or protocol.
func (c *smtpClient) send(m message) (reply, error) {
	for _, line := range []string{"MAIL FROM:<" + m.From + ">", "RCPT TO:<" + m.To + ">", "DATA"} {
		r, err := c.cmd(line)
		if err != nil {
			return r, err
		}
		want := 2
		if line == "DATA" {
			want = 3
		}
		if r.Code/100 != want {
			if _, err := c.cmd("RSET"); err != nil {
				return r, err
			}
			return r, nil
		}
	}
	c.conn.SetDeadline(time.Now().Add(60 * time.Second))
	w := c.tp.DotWriter()
	if _, err := w.Write([]byte(m.data())); err != nil {
		return reply{}, err
	}
	if err := w.Close(); err != nil {
		return reply{}, err
	}
	r, err := c.cmd("")
	r.Stage = "end of DATA"
	if err == nil && r.Code/100 == 2 {
		r.Stage = ""
	}
	return r, err
}

// Close says QUIT and closes the connection.
func (c *smtpClient) Close() {
	c.cmd("QUIT")
	c.conn.Close()
}

// sendOne sends m in a connection of its own from clientIP with helo.
func (e *postfixEnv) sendOne(clientIP, helo string, m message) (reply, error) {
	c, err := dialSMTP(e.smtpAddr, clientIP, helo)
	if err != nil {
		return reply{}, err
	}
	defer c.Close()
	return c.send(m)
}

// delivered is one message as found in the mbox.
type delivered struct {
	// Headers are its header fields in order, each "Name: value" as
	// written: a folded field keeps its line breaks ("\n ").
	Headers []string
	// Raw is the whole message, from its mbox "From " line.
	Raw string
}

// header returns the values of the fields called name, in order, as
// written.
func (d delivered) header(name string) []string {
	var vs []string
	for _, h := range d.Headers {
		n, v, _ := strings.Cut(h, ":")
		if strings.EqualFold(n, name) {
			vs = append(vs, strings.TrimPrefix(v, " "))
		}
	}
	return vs
}

// findMessage returns the message with id from the mbox, if delivered.
func (e *postfixEnv) findMessage(id string) (delivered, bool) {
	b, err := os.ReadFile(e.mbox)
	if err != nil {
		return delivered{}, false
	}
	needle := "Message-ID: <" + id + "@it.example.test>"
	// Each mbox message starts with a "From " line; Postfix quotes body
	// lines starting so with ">".
	for _, raw := range strings.Split("\n"+string(b), "\nFrom ") {
		head, _, _ := strings.Cut(raw, "\n\n")
		if !strings.Contains(head, "\n"+needle+"\n") && !strings.HasSuffix(head, "\n"+needle) {
			continue
		}
		var d delivered
		d.Raw = "From " + raw
		for i, line := range strings.Split(head, "\n") {
			switch {
			case i == 0: // the mbox "From sender date" line
			case strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t"):
				if len(d.Headers) > 0 {
					d.Headers[len(d.Headers)-1] += "\n" + line
				}
			default:
				d.Headers = append(d.Headers, line)
			}
		}
		return d, true
	}
	return delivered{}, false
}

// waitDelivered waits until the message with id is in the mbox.
func (e *postfixEnv) waitDelivered(t *testing.T, id string) delivered {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if d, ok := e.findMessage(id); ok {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("message %s not delivered within 30s", id)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitAllDelivered waits until every message of ids is in the mbox and
// returns the ids that are not.
func (e *postfixEnv) waitAllDelivered(ids []string) []string {
	deadline := time.Now().Add(60 * time.Second)
	for {
		// One reading of the mbox per round, not one per message: the
		// shared mbox holds thousands of messages by now.
		box := e.mailbox()
		var missing []string
		for _, id := range ids {
			if len(box[id]) == 0 {
				missing = append(missing, id)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			return missing
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// unfold joins a folded header field into one line.
func unfold(s string) string {
	return strings.NewReplacer("\r\n ", " ", "\n ", " ", "\r\n\t", "\t", "\n\t", "\t").Replace(s)
}

// deliveryFields are the header fields Postfix's delivery agent adds above
// the message as received; the message's own fields follow them.
var deliveryFields = []string{"Return-Path:", "X-Original-To:", "Delivered-To:"}

// receivedHeaders returns the message's header fields as received by
// Postfix, unfolded: the delivery agent's fields left out.
func (d delivered) receivedHeaders() []string {
	hs := d.Headers
	for len(hs) > 0 && slices.ContainsFunc(deliveryFields, func(p string) bool { return strings.HasPrefix(hs[0], p) }) {
		hs = hs[1:]
	}
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = unfold(h)
	}
	return out
}

// Header fields the tests expect, unfolded. The HELO identity is checked
// for every message because the default HELO policy refuses a fail.
const (
	heloPassV4 = `Received-SPF: pass (mx.example.test: domain of helo.example.test designates 192.0.2.10 as permitted sender) client-ip=192.0.2.10; envelope-from="postmaster@helo.example.test"; helo=helo.example.test; receiver=mx.example.test; mechanism="ip4:192.0.2.0/24"; identity=helo`
	heloPassV6 = `Received-SPF: pass (mx.example.test: domain of helo.example.test designates 2001:db8::25 as permitted sender) client-ip="2001:db8::25"; envelope-from="postmaster@helo.example.test"; helo=helo.example.test; receiver=mx.example.test; mechanism="ip6:2001:db8::/32"; identity=helo`
	passV4     = `Received-SPF: pass (mx.example.test: domain of user@pass.example.test designates 192.0.2.10 as permitted sender) client-ip=192.0.2.10; envelope-from="user@pass.example.test"; helo=helo.example.test; receiver=mx.example.test; mechanism="ip4:192.0.2.0/24"; identity=mailfrom`
	arPass     = `Authentication-Results: mx.example.test; spf=pass smtp.helo=helo.example.test; spf=pass smtp.mailfrom=pass.example.test`
)

// forgedHeaders are header fields a sender adds to pass for checked: every
// Received-SPF and our authserv-id's Authentication-Results must go,
// another host's Authentication-Results must stay.
var forgedHeaders = []string{
	"Received-SPF: pass (mx.example.test: forged) identity=mailfrom",
	"Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=forged.example",
	"Authentication-Results: other.example; spf=fail smtp.mailfrom=forged.example",
}

// TestPostfixVerdicts sends one message per case through Postfix, each on
// a connection of its own presenting the client with XCLIENT, and checks
// the SMTP reply and, for a delivered message, the header fields at its
// top, exactly.
func TestPostfixVerdicts(t *testing.T) {
	e := postfixFixture(t)
	tests := []struct {
		name     string
		clientIP string // for XCLIENT; "" keeps the real 127.0.0.1
		helo     string
		from     string
		headers  []string // sent in the message
		// A refusal: the command refused and the whole reply.
		refusedAt, reply string
		// A delivery: the fields at the top of the received message,
		// before Postfix's own Received.
		top []string
		// Fields that must (not) be anywhere in the delivered message.
		present, absent []string
	}{
		{
			name: "pass", clientIP: "192.0.2.10", helo: "helo.example.test", from: "user@pass.example.test",
			top: []string{passV4, heloPassV4, arPass},
		},
		{
			// The domain's own explanation (exp=), with its "%" kept
			// through Postfix's reply formatting.
			name: "fail", clientIP: "192.0.2.10", helo: "helo.example.test", from: "user@fail.example.test",
			refusedAt: "MAIL", reply: "550 5.7.23 SPF fail: 192.0.2.10 may not send mail for fail.example.test: 100% sure",
		},
		{
			name: "softfail", clientIP: "192.0.2.10", helo: "helo.example.test", from: "user@softfail.example.test",
			top: []string{
				`Received-SPF: softfail (mx.example.test: domain of transitioning user@softfail.example.test does not designate 192.0.2.10 as permitted sender) client-ip=192.0.2.10; envelope-from="user@softfail.example.test"; helo=helo.example.test; receiver=mx.example.test; mechanism=~all; identity=mailfrom`,
				heloPassV4,
				`Authentication-Results: mx.example.test; spf=pass smtp.helo=helo.example.test; spf=softfail smtp.mailfrom=softfail.example.test`,
			},
		},
		{
			name: "neutral", clientIP: "192.0.2.10", helo: "helo.example.test", from: "user@neutral.example.test",
			top: []string{
				`Received-SPF: neutral (mx.example.test: 192.0.2.10 is neither permitted nor denied by domain of user@neutral.example.test) client-ip=192.0.2.10; envelope-from="user@neutral.example.test"; helo=helo.example.test; receiver=mx.example.test; mechanism=?all; identity=mailfrom`,
				heloPassV4,
				`Authentication-Results: mx.example.test; spf=pass smtp.helo=helo.example.test; spf=neutral smtp.mailfrom=neutral.example.test`,
			},
		},
		{
			name: "none", clientIP: "192.0.2.10", helo: "helo.example.test", from: "user@none.example.test",
			top: []string{
				`Received-SPF: none (mx.example.test: none.example.test does not provide an SPF record) client-ip=192.0.2.10; envelope-from="user@none.example.test"; helo=helo.example.test; receiver=mx.example.test; problem="no SPF record at none.example.test"; identity=mailfrom`,
				heloPassV4,
				`Authentication-Results: mx.example.test; spf=pass smtp.helo=helo.example.test; spf=none reason="no SPF record at none.example.test" smtp.mailfrom=none.example.test`,
			},
		},
		{
			name: "permerror refused by policy", clientIP: "192.0.2.10", helo: "helo.example.test", from: "user@perm.example.test",
			refusedAt: "MAIL", reply: `550 5.7.24 SPF permerror: SPF record of perm.example.test: invalid term "bogus:mechanism": unknown mechanism`,
		},
		{
			name: "permerror two records", clientIP: "192.0.2.10", helo: "helo.example.test", from: "user@twice.example.test",
			refusedAt: "MAIL", reply: "550 5.7.24 SPF permerror: 2 SPF records at twice.example.test; there must be one",
		},
		{
			name: "IPv6 pass", clientIP: "IPV6:2001:db8::25", helo: "helo.example.test", from: "user@pass.example.test",
			top: []string{
				`Received-SPF: pass (mx.example.test: domain of user@pass.example.test designates 2001:db8::25 as permitted sender) client-ip="2001:db8::25"; envelope-from="user@pass.example.test"; helo=helo.example.test; receiver=mx.example.test; mechanism="ip6:2001:db8::/32"; identity=mailfrom`,
				heloPassV6,
				arPass,
			},
		},
		{
			// %{i} of an IPv6 address is its nibbles, dot-separated
			// (RFC 7208 §7.3), upper case as the RFC 7208 test suite has it.
			name: "IPv6 fail", clientIP: "IPV6:2001:db8::25", helo: "helo.example.test", from: "user@fail.example.test",
			refusedAt: "MAIL", reply: "550 5.7.23 SPF fail: 2.0.0.1.0.D.B.8.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.5 may not send mail for fail.example.test: 100% sure",
		},
		{
			// The null sender is checked as postmaster@<HELO name>.
			name: "null sender", clientIP: "192.0.2.10", helo: "helo.example.test", from: "",
			top: []string{
				`Received-SPF: pass (mx.example.test: domain of postmaster@helo.example.test designates 192.0.2.10 as permitted sender) client-ip=192.0.2.10; envelope-from="postmaster@helo.example.test"; helo=helo.example.test; receiver=mx.example.test; mechanism="ip4:192.0.2.0/24"; identity=mailfrom`,
				heloPassV4,
				`Authentication-Results: mx.example.test; spf=pass smtp.helo=helo.example.test; spf=pass smtp.mailfrom=helo.example.test`,
			},
		},
		{
			name: "null sender with failing HELO", clientIP: "192.0.2.10", helo: "helo-fail.example.test", from: "",
			refusedAt: "MAIL", reply: "550 5.7.23 SPF fail: helo-fail.example.test does not designate 192.0.2.10 as a permitted sender",
		},
		{
			// The HELO policy refuses a HELO fail even when MAIL FROM
			// passes; the refusal is given at MAIL FROM.
			name: "HELO fail refused", clientIP: "192.0.2.10", helo: "helo-fail.example.test", from: "user@pass.example.test",
			refusedAt: "MAIL", reply: "550 5.7.23 SPF fail: helo-fail.example.test does not designate 192.0.2.10 as a permitted sender",
		},
		{
			// 127.0.0.1 is in trusted_networks: not checked, no header,
			// and a fail domain goes through.
			name: "trusted network", helo: "helo-fail.example.test", from: "user@fail.example.test",
			absent: []string{"Received-SPF:", "Authentication-Results:"},
		},
		{
			name: "forged headers removed", clientIP: "192.0.2.10", helo: "helo.example.test", from: "user@pass.example.test",
			headers: forgedHeaders,
			top:     []string{passV4, heloPassV4, arPass},
			present: []string{forgedHeaders[2]},
			absent:  []string{forgedHeaders[0], forgedHeaders[1]},
		},
	}
	var refusedIDs []string
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newMessage(t.Name(), tc.from)
			m.Headers = tc.headers
			r, err := e.sendOne(tc.clientIP, tc.helo, m)
			if err != nil {
				t.Fatal(err)
			}
			if tc.refusedAt != "" {
				refusedIDs = append(refusedIDs, m.ID)
				if r.Stage != tc.refusedAt || fmt.Sprintf("%d %s", r.Code, r.Text) != tc.reply {
					t.Fatalf("reply\n got %s\nwant %s: %s", r, tc.refusedAt, tc.reply)
				}
				return
			}
			if r.Stage != "" {
				t.Fatalf("refused: %s", r)
			}
			d := e.waitDelivered(t, m.ID)
			hs := d.receivedHeaders()
			if len(hs) < len(tc.top)+1 || !slices.Equal(hs[:len(tc.top)], tc.top) {
				t.Errorf("top header fields\n got %q\nwant %q", hs[:min(len(hs), len(tc.top)+1)], tc.top)
			} else if received := "Received: from " + tc.helo + " "; !strings.HasPrefix(hs[len(tc.top)], received) {
				t.Errorf("after our fields: got %q, want Postfix's %q...", hs[len(tc.top)], received)
			}
			for _, h := range tc.present {
				if n := countPrefix(hs, h); n != 1 {
					t.Errorf("%d fields %q, want 1", n, h)
				}
			}
			for _, h := range tc.absent {
				if n := countPrefix(hs, h); n != 0 {
					t.Errorf("%d fields %q, want none", n, h)
				}
			}
			if t.Failed() {
				t.Logf("delivered:\n%s", d.Raw)
			}
		})
	}
	// Refused at MAIL FROM means never queued: the messages cannot be in
	// the mailbox, after everything accepted above has been delivered.
	for _, id := range refusedIDs {
		if _, ok := e.findMessage(id); ok {
			t.Errorf("refused message %s was delivered", id)
		}
	}
}

// countPrefix counts the fields of hs starting with prefix.
func countPrefix(hs []string, prefix string) int {
	n := 0
	for _, h := range hs {
		if strings.HasPrefix(h, prefix) {
			n++
		}
	}
	return n
}

// TestPostfixOneConnection sends several messages over one SMTP
// connection: each is checked afresh (the milter library starts a new
// session object after every final reply), and a refusal does not end the
// connection.
func TestPostfixOneConnection(t *testing.T) {
	e := postfixFixture(t)
	c, err := dialSMTP(e.smtpAddr, "192.0.2.10", "helo.example.test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i, tc := range []struct {
		from, result string // result: "refused" or the mailfrom result
	}{
		{"user@fail.example.test", "refused"},
		{"user@pass.example.test", "pass"},
		{"user@softfail.example.test", "softfail"},
		{"user@fail.example.test", "refused"},
		{"user@pass.example.test", "pass"},
	} {
		m := newMessage(fmt.Sprintf("%s-%d", t.Name(), i), tc.from)
		r, err := c.send(m)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if tc.result == "refused" {
			if r.Stage != "MAIL" || r.Code != 550 || !strings.HasPrefix(r.Text, "5.7.23 ") {
				t.Errorf("message %d from %s: %s, want 550 5.7.23 at MAIL", i, tc.from, r)
			}
			continue
		}
		if r.Stage != "" {
			t.Fatalf("message %d from %s: %s", i, tc.from, r)
		}
		d := e.waitDelivered(t, m.ID)
		want := "Received-SPF: " + tc.result + " "
		if got := d.receivedHeaders(); len(got) < 3 || !strings.HasPrefix(got[0], want) ||
			countPrefix(got, "Received-SPF:") != 2 || countPrefix(got, "Authentication-Results:") != 1 {
			t.Errorf("message %d from %s: fields %q, want %q... first, two Received-SPF, one Authentication-Results", i, tc.from, got, want)
		}
	}
	// Postfix offers milter protocol 6 (milter_protocol's default), so
	// the daemon told it not to wait for the replies at CONNECT, HELO and
	// each header field: all the above went through that way.
	if log := e.milter.Log(); !strings.Contains(log, "milter protocol 6 negotiated, replies skipped") ||
		!strings.Contains(log, "connect,helo,header,eoh") {
		t.Errorf("no protocol 6 negotiation with replies skipped in the milter's log")
	}
}

// blackHole holds a loopback UDP and TCP port open without ever
// answering: a DNS server that does not respond.
type blackHole struct {
	pc net.PacketConn
	ln net.Listener
}

func newBlackHole(t *testing.T, addr string) *blackHole {
	t.Helper()
	var b blackHole
	var err error
	// NSD's processes may hold the port for a moment after Stop.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b.pc, err = net.ListenPacket("udp", addr); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if b.ln, err = net.Listen("tcp", addr); err != nil {
		b.pc.Close()
		t.Fatal(err)
	}
	return &b
}

func (b *blackHole) Close() {
	b.pc.Close()
	b.ln.Close()
}

// TestPostfixTemperror makes the zone's server stop answering: the
// message is deferred with 451 4.7.24, and the same message sent again
// once DNS answers is delivered, once.
func TestPostfixTemperror(t *testing.T) {
	e := postfixFixture(t)
	m := newMessage(t.Name(), "user@pass.example.test")

	e.nsd.Stop()
	hole := newBlackHole(t, e.nsd.Addr)
	r, err := e.sendOne("192.0.2.10", "helo.example.test", m)
	hole.Close()
	e.nsd.Start()
	if err != nil {
		t.Fatal(err)
	}
	if r.Stage != "MAIL" || r.Code != 451 || !strings.HasPrefix(r.Text, "4.7.24 SPF temperror: ") {
		t.Fatalf("with DNS not answering: %s, want 451 4.7.24 SPF temperror at MAIL", r)
	}
	t.Logf("with DNS not answering: %s", r)

	// What a sending MTA does with a 4xx: try the same message again.
	r, err = e.sendOne("192.0.2.10", "helo.example.test", m)
	if err != nil {
		t.Fatal(err)
	}
	if r.Stage != "" {
		t.Fatalf("with DNS answering again: %s", r)
	}
	d := e.waitDelivered(t, m.ID)
	if hs := d.receivedHeaders(); !slices.Equal(hs[:min(3, len(hs))], []string{passV4, heloPassV4, arPass}) {
		t.Errorf("top header fields %q", hs)
	}
	if n := strings.Count(e.mboxText(), "Message-ID: <"+m.ID+"@"); n != 1 {
		t.Errorf("message delivered %d times, want once", n)
	}
}

// mboxText returns the whole mailbox.
func (e *postfixEnv) mboxText() string {
	b, _ := os.ReadFile(e.mbox)
	return string(b)
}

// TestPostfixMilterStopped stops the milter, cleanly and by a crash:
// Postfix defers the message (milter_default_action = tempfail) rather than
// passing it unchecked, and the same message is delivered, checked, once
// the milter is back.
func TestPostfixMilterStopped(t *testing.T) {
	e := postfixFixture(t)
	for _, tc := range []struct {
		name string
		stop func()
	}{
		{"SIGTERM", e.milter.Stop},
		{"SIGKILL", e.milter.Kill},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMessage(t.Name(), "user@pass.example.test")
			tc.stop()
			r, err := e.sendOne("192.0.2.10", "helo.example.test", m)
			e.milter.Restart()
			if err != nil {
				t.Fatal(err)
			}
			if r.Code != 451 || !strings.HasPrefix(r.Text, "4.7.1 ") {
				t.Fatalf("with the milter stopped: %s, want 451 4.7.1", r)
			}

			r, err = e.sendOne("192.0.2.10", "helo.example.test", m)
			if err != nil {
				t.Fatal(err)
			}
			if r.Stage != "" {
				t.Fatalf("with the milter back: %s", r)
			}
			d := e.waitDelivered(t, m.ID)
			if hs := d.receivedHeaders(); !slices.Equal(hs[:min(3, len(hs))], []string{passV4, heloPassV4, arPass}) {
				t.Errorf("top header fields %q", hs)
			}
			if n := strings.Count(e.mboxText(), "Message-ID: <"+m.ID+"@"); n != 1 {
				t.Errorf("message delivered %d times, want once", n)
			}
		})
	}
}

// TestPostfixReloadUnderLoad reloads the milter's config with SIGHUP again
// and again while a sender keeps handing Postfix mail that passes: no
// message may be refused or lost, and the new config is in force after
// the reloads. A message deferred with a 4xx (a DNS answer lost on the
// loopback, seen rarely under -race) is not refused: like an MTA, the
// test sends it again afterwards, and it must then be delivered.
func TestPostfixReloadUnderLoad(t *testing.T) {
	e := postfixFixture(t)
	t.Cleanup(func() { e.milter.reload(postfixMilterConfig(e.nsd.Addr, authservID)) })

	const reloads = 6
	var (
		stop     atomic.Bool
		sent     atomic.Int64
		mu       sync.Mutex
		accepted []string
		deferred []message
		problems []string
		done     = make(chan struct{})
	)
	go func() {
		defer close(done)
		for i := 0; !stop.Load(); i++ {
			// A few messages per connection, so that reloads land both
			// between connections and inside one.
			c, err := dialSMTP(e.smtpAddr, "192.0.2.10", "helo.example.test")
			if err != nil {
				mu.Lock()
				problems = append(problems, err.Error())
				mu.Unlock()
				sent.Add(1)
				continue
			}
			for j := 0; j < 3 && !stop.Load(); j++ {
				m := newMessage(fmt.Sprintf("%s-%d-%d", t.Name(), i, j), "user@pass.example.test")
				r, err := c.send(m)
				mu.Lock()
				switch {
				case err != nil:
					problems = append(problems, fmt.Sprintf("%s: %v", m.ID, err))
				case r.Stage != "" && r.Code/100 == 4:
					deferred = append(deferred, m)
				case r.Stage != "":
					problems = append(problems, fmt.Sprintf("%s: %s", m.ID, r))
				default:
					accepted = append(accepted, m.ID)
				}
				mu.Unlock()
				sent.Add(1)
			}
			c.Close()
		}
	}()

	receivers := []string{"mx-a.example.test", "mx-b.example.test"}
	for i := range reloads {
		// Let a few messages through between reloads: progress, not time.
		waitFor := sent.Load() + 3
		deadline := time.Now().Add(60 * time.Second)
		for sent.Load() < waitFor && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		e.milter.Reload(postfixMilterConfig(e.nsd.Addr, receivers[i%2]))
	}
	waitFor := sent.Load() + 3
	deadline := time.Now().Add(60 * time.Second)
	for sent.Load() < waitFor && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	stop.Store(true)
	<-done

	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d messages sent, %d accepted, %d deferred, across %d reloads", sent.Load(), len(accepted), len(deferred), reloads)
	for _, m := range deferred {
		c, err := dialSMTP(e.smtpAddr, "192.0.2.10", "helo.example.test")
		if err != nil {
			t.Fatalf("resending %s: %v", m.ID, err)
		}
		r, err := c.send(m)
		c.Close()
		if err != nil || r.Stage != "" {
			t.Errorf("deferred %s sent again: %v %s, want it accepted", m.ID, err, r)
			continue
		}
		accepted = append(accepted, m.ID)
	}
	for _, p := range problems {
		t.Errorf("refused or failed during reloads: %s", p)
	}
	if len(accepted) < reloads*3 {
		t.Errorf("only %d messages accepted", len(accepted))
	}
	if missing := e.waitAllDelivered(accepted); len(missing) > 0 {
		t.Errorf("%d accepted messages not delivered: %q", len(missing), missing)
	}

	// The last config is in force: a new message names its receiver.
	last := receivers[(reloads-1)%2]
	m := newMessage(t.Name()+"-after", "user@pass.example.test")
	r, err := e.sendOne("192.0.2.10", "helo.example.test", m)
	if err != nil || r.Stage != "" {
		t.Fatalf("after the reloads: %v %v", r, err)
	}
	d := e.waitDelivered(t, m.ID)
	if got := d.header("Received-SPF"); len(got) == 0 || !strings.Contains(unfold(got[0]), "receiver="+last+";") {
		t.Errorf("after the reloads, Received-SPF %q does not name receiver %s", got, last)
	}
}
