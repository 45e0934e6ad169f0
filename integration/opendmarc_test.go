package integration

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// downstreamZone is the zone of the downstream tests: a passing and a
// failing MAIL FROM domain, both with a DMARC policy of p=reject, and a
// HELO name that passes (the default HELO policy refuses a HELO fail).
const downstreamZone = `
pass        IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
_dmarc.pass IN TXT "v=DMARC1; p=reject"
fail        IN TXT "v=spf1 ip4:198.51.100.1 -all"
_dmarc.fail IN TXT "v=DMARC1; p=reject"
helo        IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
`

// downstreamMilterConfig is the milter's config for the downstream tests:
// a MAIL FROM fail is accepted with its headers, so that the programs
// reading them get to see a fail.
func downstreamMilterConfig(dnsAddr string) string {
	return fmt.Sprintf(`authserv_id: %s
receiver: %s
dns: {servers: [%q], timeout: 1s, check_timeout: 5s}
policy:
  mailfrom: {fail: accept}
trusted_networks: [127.0.0.1/32]
`, authservID, authservID, dnsAddr)
}

// startDownstream starts NSD with downstreamZone, our milter with
// downstreamMilterConfig and a Postfix instance of the test's own whose
// smtpd_milters are ours and then, when withOpenDMARC, OpenDMARC. All of
// it is stopped when the test ends.
func startDownstream(t *testing.T, withOpenDMARC bool) *postfixEnv {
	t.Helper()
	need(t, "postfix", "postconf", "nsd", "nsd-checkconf")
	if withOpenDMARC {
		need(t, "opendmarc", "unshare", "mount")
	}
	if os.Geteuid() != 0 {
		// Postfix's master and the mount namespace of OpenDMARC need root.
		msg := "the downstream tests need root (scripts/test.sh runs as root in CI)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	nsd := startNSD(t, "example.test", downstreamZone)
	ours := startMilter(t, downstreamMilterConfig(nsd.Addr))
	milters := ours.Listen
	if withOpenDMARC {
		milters += ", " + startOpenDMARC(t, nsd.Addr)
	}

	// startPostfix reads only the milter's Listen: a stand-in carries
	// both milters' addresses into smtpd_milters.
	e := &postfixEnv{dir: workDir(t), milter: &Milter{Listen: milters}}
	err := e.startPostfix()
	e.milter = nil
	t.Cleanup(func() {
		if t.Failed() {
			log, _ := os.ReadFile(e.maillog)
			t.Logf("Postfix log:\n%s", log)
		}
		if err := e.stop(); err != nil {
			t.Error(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// startOpenDMARC runs OpenDMARC in the foreground as a milter on a free
// loopback port and returns its address in Postfix's notation. Its SPF
// checking is off, so it can only use our headers. OpenDMARC looks up the
// _dmarc records through the C library's resolver, which reads only
// /etc/resolv.conf and only port 53: it runs in a mount namespace of its
// own (unshare -m) where a resolv.conf of the test's is bind-mounted over
// that file, naming a forwarder on port 53 of a loopback address that
// hands the queries to nsdAddr. Nothing asks the machine's resolver.
func startOpenDMARC(t *testing.T, nsdAddr string) string {
	t.Helper()
	dir := workDir(t)
	dnsIP := startDNSForwarder(t, nsdAddr)
	resolvConf := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(resolvConf, []byte("nameserver "+dnsIP+"\noptions timeout:2 attempts:3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	conf := filepath.Join(dir, "opendmarc.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`AuthservID %s
TrustedAuthservIDs %s
Socket inet:%d@127.0.0.1
PidFile %s
Background false
Syslog false
SPFSelfValidate false
SPFIgnoreResults false
RejectFailures false
FailureReports false
PublicSuffixList /usr/share/publicsuffix/public_suffix_list.dat
`, authservID, authservID, port, filepath.Join(dir, "opendmarc.pid"))), 0o644); err != nil {
		t.Fatal(err)
	}

	out, err := os.Create(filepath.Join(dir, "opendmarc.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	// unshare execs sh, which execs opendmarc: one process, one PID.
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c",
		`mount --bind "$1" /etc/resolv.conf && exec opendmarc -f -c "$2"`, "sh", resolvConf, conf)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(out.Name())
			t.Logf("OpenDMARC output:\n%s", b)
		}
	})

	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return "inet:" + addr
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(out.Name())
			t.Fatalf("opendmarc exited at start: %s\n%s", cmd.ProcessState, b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("opendmarc does not accept connections on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startDNSForwarder serves DNS over UDP and TCP on port 53 of a loopback
// address of its own (127.53.x.y: the whole of 127/8 is loopback on
// Linux), passing every query to nsdAddr and its answer back, until the
// test ends. It returns the address.
func startDNSForwarder(t *testing.T, nsdAddr string) string {
	t.Helper()
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
		if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
			c.Net = "tcp"
		}
		r, _, err := c.Exchange(q, nsdAddr)
		if err != nil {
			r = new(dns.Msg)
			r.SetRcode(q, dns.RcodeServerFailure)
		}
		w.WriteMsg(r)
	})
	var lastErr error
	for range 20 {
		ip := fmt.Sprintf("127.53.%d.%d", rand.IntN(256), 1+rand.IntN(254))
		addr := net.JoinHostPort(ip, "53")
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			lastErr = err
			continue
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			pc.Close()
			lastErr = err
			continue
		}
		for _, s := range []*dns.Server{{PacketConn: pc, Handler: handler}, {Listener: ln, Handler: handler}} {
			go s.ActivateAndServe()
			t.Cleanup(func() { s.Shutdown() })
		}
		return ip
	}
	t.Fatalf("no loopback address with port 53 free: %v", lastErr)
	return ""
}

// TestOpenDMARC runs OpenDMARC after our milter in Postfix, with its own
// SPF checking off: its DMARC verdict on a p=reject domain can only come
// from our Authentication-Results. An aligned SPF pass gives dmarc=pass;
// an SPF fail that our policy accepts gives dmarc=fail, and the message
// is still delivered (RejectFailures false, OpenDMARC's default).
func TestOpenDMARC(t *testing.T) {
	e := startDownstream(t, true)
	for _, tc := range []struct {
		name, from string
		// want are the fields at the top of the received message, before
		// Postfix's own Received: OpenDMARC's, then ours.
		want []string
	}{
		{
			name: "aligned SPF pass", from: "user@pass.example.test",
			want: []string{
				"Authentication-Results: mx.example.test; dmarc=pass (p=reject dis=none) header.from=pass.example.test",
				passV4,
				heloPassV4,
				arPass,
			},
		},
		{
			name: "SPF fail accepted by our policy", from: "user@fail.example.test",
			want: []string{
				"Authentication-Results: mx.example.test; dmarc=fail (p=reject dis=none) header.from=fail.example.test",
				`Received-SPF: fail (mx.example.test: domain of user@fail.example.test does not designate 192.0.2.10 as permitted sender) client-ip=192.0.2.10; envelope-from="user@fail.example.test"; helo=helo.example.test; receiver=mx.example.test; mechanism=-all; identity=mailfrom`,
				heloPassV4,
				"Authentication-Results: mx.example.test; spf=pass smtp.helo=helo.example.test; spf=fail smtp.mailfrom=fail.example.test",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMessage(t.Name(), tc.from)
			r, err := e.sendOne("192.0.2.10", "helo.example.test", m)
			if err != nil {
				t.Fatal(err)
			}
			if r.Stage != "" {
				t.Fatalf("refused: %s", r)
			}
			d := e.waitDelivered(t, m.ID)
			hs := d.receivedHeaders()
			if len(hs) < len(tc.want) || !slices.Equal(hs[:len(tc.want)], tc.want) {
				t.Errorf("top header fields\n got %q\nwant %q", hs[:min(len(hs), len(tc.want))], tc.want)
			}
			if t.Failed() {
				t.Logf("delivered:\n%s", d.Raw)
			}
		})
	}
}
