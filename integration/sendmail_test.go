package integration

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spf-milter/spf-milter/internal/logtest"
)

// Sendmail 8.17 comes from Debian's packages, but is not installed: the
// sendmail-bin package conflicts with postfix (both provide
// mail-transport-agent), which the Postfix tests need on the same machine.
// The .debs are downloaded with "apt-get download" into a cache directory,
// unpacked with "dpkg-deb -x", and the daemon runs from there with a
// sendmail.cf the test builds with m4. It runs in private UTS and mount
// namespaces (unshare -u -m, as root) so that it can have a fully qualified
// host name and its own /etc/hosts and /etc/resolv.conf without touching the
// machine's.

// sendmailDebs are the packages unpacked: the daemon, its base files and
// the m4 files that build sendmail.cf.
var sendmailDebs = []string{"sendmail-bin", "sendmail-base", "sendmail-cf"}

// sendmailAptPackages are the installed packages the unpacked daemon needs
// (libraries sendmail-bin links that postfix does not bring) and the tools
// that set it up.
const sendmailAptPackages = "m4 libwrap0 liblockfile1 util-linux"

// missingPrereq skips the test when something it needs is not on this
// machine, or fails it in CI (CI=true), where scripts/test.sh must have
// installed it.
func missingPrereq(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...) + " (scripts/test.sh installs what the tests need, as root)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// sendmailPrereqs checks what running Sendmail needs: root for the
// namespaces and bind mounts, unshare, m4, and apt-get and dpkg-deb to
// fetch and unpack the packages.
func sendmailPrereqs(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		missingPrereq(t, "Sendmail runs in its own mount namespace with bind mounts: run the tests as root")
	}
	for _, p := range []string{"unshare", "m4", "apt-get", "dpkg-deb"} {
		if _, err := exec.LookPath(p); err != nil {
			missingPrereq(t, "missing %s: install the Debian packages %s", p, sendmailAptPackages)
		}
	}
	if out, err := exec.Command("unshare", "-u", "-m", "true").CombinedOutput(); err != nil {
		missingPrereq(t, "unshare -u -m does not work here (%v: %s): Sendmail needs private UTS and mount namespaces",
			err, bytes.TrimSpace(out))
	}
}

// sendmailOnce guards the download and unpacking, done once per test binary.
var sendmailOnce struct {
	sync.Mutex
	root string
}

// sendmailTree returns the directory the Sendmail packages are unpacked
// in, downloading and unpacking them first unless an earlier run left them
// in the user's cache directory. The packages are fetched from the
// machine's Debian mirror; when apt-get cannot find them (no package lists
// yet) it runs "apt-get update" once and tries again.
func sendmailTree(t testing.TB) string {
	t.Helper()
	sendmailOnce.Lock()
	defer sendmailOnce.Unlock()
	if sendmailOnce.root != "" {
		return sendmailOnce.root
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	root := filepath.Join(cache, "spf-milter-integration", "sendmail")
	if _, err := os.Stat(filepath.Join(root, "usr/libexec/sendmail/sendmail")); err == nil {
		sendmailOnce.root = root
		return root
	}

	// Unpacked next to root and renamed into place, so that an interrupted
	// run never leaves a half-unpacked tree that a later run would trust.
	if err := os.MkdirAll(filepath.Dir(root), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(root), "unpack-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	debs := filepath.Join(tmp, "debs")
	if err := os.Mkdir(debs, 0o755); err != nil {
		t.Fatal(err)
	}
	download := func() ([]byte, error) {
		cmd := exec.Command("apt-get", append([]string{"download", "-q"}, sendmailDebs...)...)
		cmd.Dir = debs
		return cmd.CombinedOutput()
	}
	out, err := download()
	if err != nil {
		t.Logf("apt-get download failed (%v), running apt-get update once:\n%s", err, out)
		if upd, err := exec.Command("apt-get", "update", "-q").CombinedOutput(); err != nil {
			t.Logf("apt-get update: %v\n%s", err, upd)
		}
		out, err = download()
	}
	if err != nil {
		missingPrereq(t, "apt-get download %s: %v\n%s", strings.Join(sendmailDebs, " "), err, out)
	}
	files, _ := filepath.Glob(filepath.Join(debs, "*.deb"))
	if len(files) != len(sendmailDebs) {
		t.Fatalf("apt-get download left %d .deb files, want %d: %q\n%s", len(files), len(sendmailDebs), files, out)
	}
	tree := filepath.Join(tmp, "tree")
	for _, f := range files {
		if out, err := exec.Command("dpkg-deb", "-x", f, tree).CombinedOutput(); err != nil {
			t.Fatalf("dpkg-deb -x %s: %v\n%s", f, err, out)
		}
	}
	os.RemoveAll(root)
	if err := os.Rename(tree, root); err != nil {
		t.Fatal(err)
	}
	sendmailOnce.root = root
	return root
}

// Sendmail is a Sendmail daemon listening on a loopback port, with one
// milter and every recipient in example.test delivered to a file.
type Sendmail struct {
	// Addr is its SMTP address: 127.0.0.1:PORT.
	Addr string
	// Hostname is the fully qualified name it runs under, in its own UTS
	// namespace.
	Hostname string

	dir  string // its queue, config and the delivered mail
	sink string // every message delivered, appended

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}

	out logtest.Buffer
}

// sendmailClientIP is the loopback address the test's SMTP client sends
// from, so that the milter sees a client other than 127.0.0.1; the hosts
// file gives it the name the client says in EHLO.
const (
	sendmailClientIP   = "127.0.0.2"
	sendmailClientHELO = "client.example.test"
)

// startSendmail builds a sendmail.cf whose INPUT_MAIL_FILTER points at the
// milter listening on milterAddr (127.0.0.1:PORT), with F=T (mail is
// deferred while the milter cannot be reached), starts the daemon from the
// unpacked tree root and waits until it accepts SMTP connections. It is
// stopped when the test ends.
func startSendmail(t testing.TB, root, milterAddr string) *Sendmail {
	t.Helper()
	milterHost, milterPort, err := net.SplitHostPort(milterAddr)
	if err != nil {
		t.Fatal(err)
	}
	dir := workDir(t)
	s := &Sendmail{
		Addr:     fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		Hostname: "smx.example.test",
		dir:      dir,
		sink:     filepath.Join(dir, "mail", "sink"),
	}
	_, smtpPort, _ := net.SplitHostPort(s.Addr)

	// Sendmail refuses a queue directory others can read (0700), and the
	// local mailer below runs as root (the S flag), so only dir itself
	// must be traversable.
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{"mqueue", 0o700}, {"mail", 0o755}} {
		if err := os.Mkdir(filepath.Join(dir, d.path), d.mode); err != nil {
			t.Fatal(err)
		}
	}
	files := []struct {
		name, text string
		mode       os.FileMode
	}{
		{"statistics", "", 0o644},
		{"aliases", "postmaster: root\n", 0o644},
		// Only the hosts file: no name Sendmail looks up may reach the
		// machine's resolver.
		{"service.switch", "hosts files\naliases files\n", 0o644},
		{"hosts", fmt.Sprintf("127.0.0.1 %[1]s smx localhost\n%[2]s %[3]s\n::1 %[1]s localhost ip6-localhost\n",
			s.Hostname, sendmailClientIP, sendmailClientHELO), 0o644},
		// Nothing listens there: a stray query fails at once instead of
		// leaving the machine.
		{"resolv.conf", "nameserver 127.0.0.1\n", 0o644},
		// The local mailer: appends each message to the sink, with an mbox
		// "From " line so that messages can be told apart.
		{"deliver.sh", fmt.Sprintf("#!/bin/sh\n{ echo \"From MAILER-DAEMON $(date)\"; cat; echo; } >> %s\n", s.sink), 0o755},
		{"test.mc", sendmailMC(root, dir, smtpPort, milterHost, milterPort, s.Hostname), 0o644},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.name), []byte(f.text), f.mode); err != nil {
			t.Fatal(err)
		}
	}
	cf, err := exec.Command("m4", filepath.Join(dir, "test.mc")).Output()
	if err != nil {
		t.Fatalf("m4 test.mc: %v\n%s", err, sendmailStderr(err))
	}
	if err := os.WriteFile(filepath.Join(dir, "sendmail.cf"), cf, 0o644); err != nil {
		t.Fatal(err)
	}

	// The aliases database, which the daemon would otherwise rebuild
	// itself, complaining.
	if out, err := s.command(root, "-bi").CombinedOutput(); err != nil {
		if bytes.Contains(out, []byte("error while loading shared libraries")) {
			missingPrereq(t, "the unpacked sendmail does not start: install the Debian packages %s\n%s", sendmailAptPackages, out)
		}
		t.Fatalf("sendmail -bi: %v\n%s", err, out)
	}

	// -bD: the daemon in the foreground; -X: a transcript of every SMTP
	// session and milter exchange, printed when a test fails.
	cmd := s.command(root, "-bD", "-X", filepath.Join(dir, "transcript"))
	cmd.Stdout = &s.out
	cmd.Stderr = cmd.Stdout
	// Its own process group, so that the children forked for SMTP
	// sessions and deliveries are stopped with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting sendmail: %v", err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func() {
		cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("sendmail output:\n%s", s.Output())
		}
	})

	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-s.exited:
			t.Fatalf("sendmail exited at start: %s\n%s", cmd.ProcessState, s.Output())
		default:
		}
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			c.Close()
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("sendmail does not accept connections on %s: %v\n%s", s.Addr, err, s.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sendmailMC is the sendmail.mc the tests run Sendmail with: every file in
// dir, no DNS, interactive delivery, and our milter with F=T.
func sendmailMC(root, dir, smtpPort, milterHost, milterPort, hostname string) string {
	// m4 quotes are `...'; the backquote cannot appear in a Go raw string.
	q := func(s string) string { return "`" + s + "'" }
	lines := []string{
		"divert(-1)",
		"divert(0)dnl",
		"include(" + q(filepath.Join(root, "usr/share/sendmail/cf/m4/cf.m4")) + ")dnl",
		"VERSIONID(" + q("spf-milter integration test") + ")dnl",
		"OSTYPE(" + q("linux") + ")dnl",
		"define(" + q("confDONT_PROBE_INTERFACES") + ", " + q("True") + ")dnl",
		"define(" + q("QUEUE_DIR") + ", " + q(filepath.Join(dir, "mqueue")) + ")dnl",
		"define(" + q("STATUS_FILE") + ", " + q(filepath.Join(dir, "statistics")) + ")dnl",
		"define(" + q("confPID_FILE") + ", " + q(filepath.Join(dir, "sendmail.pid")) + ")dnl",
		"define(" + q("confSERVICE_SWITCH_FILE") + ", " + q(filepath.Join(dir, "service.switch")) + ")dnl",
		"define(" + q("ALIAS_FILE") + ", " + q(filepath.Join(dir, "aliases")) + ")dnl",
		"define(" + q("confHELP_FILE") + ", " + q("") + ")dnl",
		"define(" + q("confDEF_USER_ID") + ", " + q("nobody:nogroup") + ")dnl",
		// The work directory is under /tmp, which Sendmail's file safety
		// checks would refuse.
		"define(" + q("confDONT_BLAME_SENDMAIL") + ", " + q("TrustStickyBit,MapInUnsafeDirPath,RunProgramInUnsafeDirPath") + ")dnl",
		// Delivered before the reply to the end of DATA, not queued.
		"define(" + q("confDELIVERY_MODE") + ", " + q("interactive") + ")dnl",
		"define(" + q("confTO_IDENT") + ", " + q("0") + ")dnl",
		"define(" + q("confDOMAIN_NAME") + ", " + q(hostname) + ")dnl",
		"define(" + q("confMILTER_LOG_LEVEL") + ", " + q("6") + ")dnl",
		"define(" + q("LOCAL_MAILER_PATH") + ", " + q(filepath.Join(dir, "deliver.sh")) + ")dnl",
		"define(" + q("LOCAL_MAILER_ARGS") + ", " + q("deliver.sh $u") + ")dnl",
		"FEATURE(" + q("nouucp") + ", " + q("reject") + ")dnl",
		"FEATURE(" + q("accept_unresolvable_domains") + ")dnl",
		"FEATURE(" + q("accept_unqualified_senders") + ")dnl",
		"FEATURE(" + q("no_default_msa") + ")dnl",
		"DAEMON_OPTIONS(" + q("Port="+smtpPort+", Addr=127.0.0.1, Name=MTA") + ")dnl",
		// The line the README tells Sendmail users to add. F=T: while the
		// milter cannot be reached, mail is deferred, never let through
		// unchecked.
		"INPUT_MAIL_FILTER(" + q("spf-milter") + ", " +
			q("S=inet:"+milterPort+"@"+milterHost+", F=T, T=C:10s;S:30s;R:30s;E:1m") + ")dnl",
		"LOCAL_DOMAIN(" + q("example.test") + ")dnl",
		// -w: recipients need no passwd entry; -P: no Return-Path, so that
		// the milter's fields are the first lines of the delivered header.
		"MODIFY_MAILER_FLAGS(" + q("LOCAL") + ", " + q("-wP") + ")dnl",
		"MAILER(" + q("local") + ")dnl",
		"MAILER(" + q("smtp") + ")dnl",
	}
	return strings.Join(lines, "\n") + "\n"
}

// command returns the unpacked sendmail run with args and this instance's
// config inside fresh UTS and mount namespaces, where the host name, the
// hosts file and resolv.conf are this instance's own. unshare without
// --fork and the shell's exec keep one PID from start to end: the process
// started is Sendmail itself.
func (s *Sendmail) command(root string, args ...string) *exec.Cmd {
	script := fmt.Sprintf("hostname %s && mount --bind %s /etc/hosts && mount --bind %s /etc/resolv.conf && exec %s -C %s %s",
		s.Hostname, filepath.Join(s.dir, "hosts"), filepath.Join(s.dir, "resolv.conf"),
		filepath.Join(root, "usr/libexec/sendmail/sendmail"), filepath.Join(s.dir, "sendmail.cf"),
		strings.Join(args, " "))
	return exec.Command("unshare", "-u", "-m", "sh", "-c", script)
}

// stop ends the daemon and the children it forked, and waits for them.
func (s *Sendmail) stop() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	pgid := cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-exited
	}
	deadline := time.Now().Add(30 * time.Second)
	for syscall.Kill(-pgid, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

// Output returns what the daemon printed and the SMTP and milter
// transcript written so far.
func (s *Sendmail) Output() string {
	out := s.out.String()
	transcript, _ := os.ReadFile(filepath.Join(s.dir, "transcript"))
	return out + "--- transcript ---\n" + string(transcript)
}

// WaitDelivered waits until a message with the given Subject has been
// delivered and returns it: the header and body as Sendmail handed them to
// the local mailer, without the "From " line.
func (s *Sendmail) WaitDelivered(t testing.TB, subject string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if msg, ok := s.delivered(subject); ok {
			return msg
		}
		if time.Now().After(deadline) {
			data, _ := os.ReadFile(s.sink)
			t.Fatalf("no message with Subject %q delivered within 30s; delivered:\n%s", subject, data)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// delivered returns the delivered message whose Subject is subject.
func (s *Sendmail) delivered(subject string) (string, bool) {
	data, err := os.ReadFile(s.sink)
	if err != nil {
		return "", false
	}
	for _, msg := range strings.Split("\n"+string(data), "\nFrom MAILER-DAEMON ") {
		_, msg, ok := strings.Cut(msg, "\n") // the rest of the "From " line
		if !ok {
			continue
		}
		head, _, _ := strings.Cut(msg, "\n\n")
		for _, f := range sendmailHeaderFields(head) {
			if strings.EqualFold(f.name, "Subject") && f.value == subject {
				return msg, true
			}
		}
	}
	return "", false
}

// sendmailField is one header field, unfolded: the CRLF or LF before each
// continuation line removed, as RFC 5322 §2.2.3 says.
type sendmailField struct{ name, value string }

// sendmailHeaderFields splits a message header into its fields, in order.
func sendmailHeaderFields(head string) []sendmailField {
	var fields []sendmailField
	for line := range strings.SplitSeq(strings.ReplaceAll(head, "\r\n", "\n"), "\n") {
		if (strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t")) && len(fields) > 0 {
			fields[len(fields)-1].value += line
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		fields = append(fields, sendmailField{name, strings.TrimLeft(value, " \t")})
	}
	return fields
}

// sendmailSend sends one message from sendmailClientIP over SMTP: EHLO
// sendmailClientHELO, MAIL FROM from, RCPT TO rcpt, DATA with subject. It
// returns nil when the message was accepted, or the first refusal: an
// error naming the command ("MAIL FROM: ...") that wraps a *textproto.Error
// with the reply code and text.
func sendmailSend(addr, from, rcpt, subject string) error {
	d := net.Dialer{
		Timeout:   30 * time.Second,
		LocalAddr: &net.TCPAddr{IP: net.ParseIP(sendmailClientIP)},
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	// Bounds the whole session, milter round trips included.
	conn.SetDeadline(time.Now().Add(2 * time.Minute))
	c, err := smtp.NewClient(conn, "smx.example.test")
	if err != nil {
		conn.Close()
		return err
	}
	defer c.Close()
	if err := c.Hello(sendmailClientHELO); err != nil {
		return fmt.Errorf("EHLO: %w", err)
	}
	if err := c.Mail(from); err != nil {
		return fmt.Errorf("MAIL FROM: %w", err)
	}
	if err := c.Rcpt(rcpt); err != nil {
		return fmt.Errorf("RCPT TO: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	fmt.Fprintf(w, "From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%d.%s>\r\n\r\nThe body of %s.\r\n",
		from, rcpt, subject, time.Now().UnixNano(), from, subject)
	if err := w.Close(); err != nil {
		return fmt.Errorf("end of DATA: %w", err)
	}
	return c.Quit()
}

// sendmailStderr returns the standard error an *exec.ExitError carries.
func sendmailStderr(err error) []byte {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.Stderr
	}
	return nil
}

// sendmailZone is the test zone: one domain per SPF result the Sendmail
// tests need. temp's include names a zone NSD does not serve, which it
// answers with REFUSED: a temporary error.
const sendmailZone = `
pass  IN TXT "v=spf1 ip4:127.0.0.2 -all"
fail  IN TXT "v=spf1 ip4:192.0.2.1 -all"
temp  IN TXT "v=spf1 include:spf.unserved.test -all"
`

// TestSendmail runs Sendmail 8.17 with spf-milter as its INPUT_MAIL_FILTER
// and NSD as the milter's resolver: a pass is delivered with our header
// fields at the top, a fail refused at MAIL FROM with 550 5.7.23 and our
// text, a temperror deferred with 451 4.7.24, and while the milter is down
// Sendmail defers mail (F=T) until it is back.
func TestSendmail(t *testing.T) {
	sendmailPrereqs(t)
	need(t, "nsd")
	root := sendmailTree(t)

	n := startNSD(t, "example.test", sendmailZone)
	m := startMilter(t, fmt.Sprintf(`authserv_id: smx.example.test
dns: {servers: [%q], timeout: 2s, check_timeout: 10s}
# The client is on loopback (127.0.0.2): check it all the same.
trusted_networks: []
# The protocol negotiated is logged at debug level.
log: {level: debug}
`, n.Addr))
	sm := startSendmail(t, root, m.Addr)

	tests := []struct {
		name string
		from string
		// wantCode and wantText are the refusal's reply code and text, 0
		// for a message that must be delivered.
		wantCode int
		wantText string
		// wantFields are the first header fields of the delivered message,
		// unfolded, in order.
		wantFields []sendmailField
	}{
		{
			name: "pass",
			from: "user@pass.example.test",
			// The HELO name is checked too, since the default HELO policy
			// refuses a fail; it has no SPF record.
			wantFields: []sendmailField{
				{"Received-SPF", "pass (smx.example.test: domain of user@pass.example.test" +
					" designates 127.0.0.2 as permitted sender) client-ip=127.0.0.2;" +
					` envelope-from="user@pass.example.test"; helo=client.example.test;` +
					` receiver=smx.example.test; mechanism="ip4:127.0.0.2"; identity=mailfrom`},
				{"Received-SPF", "none (smx.example.test: client.example.test does not provide an" +
					" SPF record) client-ip=127.0.0.2;" +
					` envelope-from="postmaster@client.example.test"; helo=client.example.test;` +
					` receiver=smx.example.test; problem="no SPF record at client.example.test";` +
					" identity=helo"},
				{"Authentication-Results", `smx.example.test; spf=none reason="no SPF record at` +
					` client.example.test" smtp.helo=client.example.test; spf=pass` +
					" smtp.mailfrom=pass.example.test"},
			},
		},
		{
			name:     "fail",
			from:     "user@fail.example.test",
			wantCode: 550,
			// Sendmail puts the address after the enhanced code of a 5xx
			// reply, and keeps the milter's text because the code's class
			// matches the reply's (it would say "Command rejected"
			// otherwise).
			wantText: "5.7.23 <user@fail.example.test>... SPF fail: fail.example.test" +
				" does not designate 127.0.0.2 as a permitted sender",
		},
		{
			name:     "temperror",
			from:     "user@temp.example.test",
			wantCode: 451,
			// A 4xx reply gets no address inserted.
			wantText: "4.7.24 SPF temperror: DNS failure:" +
				" TXT spf.unserved.test: server answered REFUSED, try again later",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			subject := "sendmail " + tc.name
			err := sendmailSend(sm.Addr, tc.from, "rcpt@example.test", subject)
			if tc.wantCode == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				msg := sm.WaitDelivered(t, subject)
				head, _, _ := strings.Cut(msg, "\n\n")
				fields := sendmailHeaderFields(head)
				if len(fields) < len(tc.wantFields) {
					t.Fatalf("delivered with %d header fields, want at least %d:\n%s", len(fields), len(tc.wantFields), msg)
				}
				for i, want := range tc.wantFields {
					if fields[i] != want {
						t.Errorf("header field %d:\n got %s: %s\nwant %s: %s\nmessage:\n%s",
							i+1, fields[i].name, fields[i].value, want.name, want.value, msg)
					}
				}
				return
			}
			var te *textproto.Error
			if !errors.As(err, &te) {
				t.Fatalf("want a %d reply, got %v", tc.wantCode, err)
			}
			if te.Code != tc.wantCode || te.Msg != tc.wantText {
				t.Errorf("reply:\n got %d %s\nwant %d %s", te.Code, te.Msg, tc.wantCode, tc.wantText)
			}
			if !strings.HasPrefix(err.Error(), "MAIL FROM: ") {
				t.Errorf("refused after MAIL FROM, want at MAIL FROM: %v", err)
			}
			if _, ok := sm.delivered(subject); ok {
				t.Errorf("refused message delivered all the same")
			}
		})
	}

	// F=T: with the milter gone Sendmail defers mail rather than let it
	// through unchecked, and takes it again once the milter is back.
	t.Run("milter down", func(t *testing.T) {
		m.Kill()
		subject := "sendmail milter down"
		err := sendmailSend(sm.Addr, "user@pass.example.test", "rcpt@example.test", subject)
		var te *textproto.Error
		if !errors.As(err, &te) || te.Code/100 != 4 {
			t.Errorf("with the milter down: want a 4xx reply, got %v", err)
		} else {
			t.Logf("with the milter down: %v", err)
		}
		if _, ok := sm.delivered(subject); ok {
			t.Errorf("delivered while the milter was down")
		}
		m.Restart()
		if err := sendmailSend(sm.Addr, "user@pass.example.test", "rcpt@example.test", subject); err != nil {
			t.Fatalf("after the milter's restart: %v", err)
		}
		msg := sm.WaitDelivered(t, subject)
		if !strings.HasPrefix(msg, "Received-SPF: pass ") {
			t.Errorf("after the milter's restart: delivered without our header on top:\n%s", msg)
		}
	})
	// Sendmail 8.14 and later offer milter protocol 6: the replies at
	// CONNECT, HELO and each header field were skipped throughout.
	if log := m.Log(); !strings.Contains(log, "milter protocol 6 negotiated, replies skipped") ||
		!strings.Contains(log, "connect,helo,header,eoh") {
		t.Errorf("no protocol 6 negotiation with replies skipped in the milter's log")
	}
}
