package integration

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// NSD is an authoritative DNS server (Debian's nsd) serving one zone on a
// loopback port, run in the foreground as a child process.
type NSD struct {
	// Addr is where it answers, over UDP and TCP: 127.0.0.1:PORT.
	Addr string
	// Origin is the zone's name, without the trailing dot.
	Origin string

	dir  string
	conf string
	tb   testing.TB // for errors of Stop, Start and SetZone; nil for package fixtures

	mu     sync.Mutex
	cmd    *exec.Cmd     // nil when stopped
	exited chan struct{} // closed when cmd has been waited for
}

// startNSD starts NSD serving zoneText as the zone zoneOrigin (say
// "example.test") and stops it when the test ends. zoneText may leave out
// $ORIGIN, $TTL, SOA and NS: they are added when missing.
func startNSD(t testing.TB, zoneOrigin, zoneText string) *NSD {
	t.Helper()
	need(t, "nsd")
	n, err := newNSD(workDir(t), zoneOrigin, zoneText)
	if err != nil {
		t.Fatal(err)
	}
	n.tb = t
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("NSD output:\n%s", n.Output())
		}
		if err := n.stop(); err != nil {
			t.Error(err)
		}
	})
	return n
}

// newNSD is startNSD without a test: it writes the config and zone under
// dir and starts NSD. The caller stops it.
func newNSD(dir, zoneOrigin, zoneText string) (*NSD, error) {
	port, err := findFreePort()
	if err != nil {
		return nil, err
	}
	n := &NSD{
		Addr:   fmt.Sprintf("127.0.0.1:%d", port),
		Origin: strings.TrimSuffix(zoneOrigin, "."),
		dir:    dir,
		conf:   filepath.Join(dir, "nsd.conf"),
	}
	// No chroot and no user switch: the files stay where the test wrote
	// them; the database and control socket are off so that nothing is
	// written outside dir.
	conf := fmt.Sprintf(`server:
    ip-address: %[1]s@%[2]d
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "%[3]s"
    database: ""
    zonelistfile: "%[3]s/zone.list"
    xfrdfile: "%[3]s/xfrd.state"
    xfrdir: "%[3]s"
    pidfile: "%[3]s/nsd.pid"
    logfile: "%[3]s/nsd.log"
    verbosity: 1
remote-control:
    control-enable: no
zone:
    name: %[4]s
    zonefile: zone
`, "127.0.0.1", port, dir, n.Origin)
	if err := os.WriteFile(n.conf, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	if err := n.writeZone(zoneText); err != nil {
		return nil, err
	}
	if err := n.start(); err != nil {
		return nil, err
	}
	return n, nil
}

var (
	reSOA    = regexp.MustCompile(`(?im)^\S*\s+(\d+\s+)?(IN\s+)?SOA\s`)
	reOrigin = regexp.MustCompile(`(?im)^\$ORIGIN\s`)
	reTTL    = regexp.MustCompile(`(?im)^\$TTL\s`)
)

// writeZone writes the zone file, adding what zoneText leaves out.
func (n *NSD) writeZone(zoneText string) error {
	var b strings.Builder
	if !reOrigin.MatchString(zoneText) {
		fmt.Fprintf(&b, "$ORIGIN %s.\n", n.Origin)
	}
	if !reTTL.MatchString(zoneText) {
		// Short, so that nothing downstream caches a test's answers
		// across a zone change for long.
		b.WriteString("$TTL 1\n")
	}
	if !reSOA.MatchString(zoneText) {
		// The name server is outside the zone, so the zone needs no glue
		// record and the test's own names cannot clash with it.
		fmt.Fprintf(&b, "@ IN SOA localhost. hostmaster.%s. ( 1 3600 600 86400 1 )\n", n.Origin)
		b.WriteString("@ IN NS localhost.\n")
	}
	b.WriteString(zoneText)
	b.WriteString("\n")
	return os.WriteFile(filepath.Join(n.dir, "zone"), []byte(b.String()), 0o644)
}

// start runs NSD and waits until it answers the zone's SOA query.
func (n *NSD) start() error {
	if out, err := exec.Command("nsd-checkconf", n.conf).CombinedOutput(); err != nil {
		return fmt.Errorf("nsd-checkconf %s: %v\n%s", n.conf, err, out)
	}
	n.mu.Lock()
	if n.cmd != nil {
		n.mu.Unlock()
		return errors.New("NSD is already running")
	}
	// Output goes to a file, not a pipe: NSD's children would hold a pipe
	// open after the parent exits, and Wait would wait for them.
	out, err := os.OpenFile(filepath.Join(n.dir, "nsd.out"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		n.mu.Unlock()
		return err
	}
	defer out.Close()
	cmd := exec.Command("nsd", "-d", "-c", n.conf)
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so that the server and xfrd processes NSD
	// forks can be stopped with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		n.mu.Unlock()
		return fmt.Errorf("starting nsd: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	n.cmd, n.exited = cmd, exited
	n.mu.Unlock()

	deadline := time.Now().Add(30 * time.Second)
	c := &dns.Client{Net: "udp", Timeout: 500 * time.Millisecond}
	q := new(dns.Msg)
	q.SetQuestion(n.Origin+".", dns.TypeSOA)
	for {
		select {
		case <-exited:
			n.mu.Lock()
			n.cmd = nil
			n.mu.Unlock()
			return fmt.Errorf("nsd exited at start: %s\n%s", cmd.ProcessState, n.Output())
		default:
		}
		r, _, err := c.Exchange(q, n.Addr)
		if err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			n.stop()
			return fmt.Errorf("nsd on %s does not answer the SOA of %s (last error %v, rcode %v)\n%s",
				n.Addr, n.Origin, err, rcode(r), n.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rcode names the response code of r, or "none" without a response.
func rcode(r *dns.Msg) string {
	if r == nil {
		return "none"
	}
	return dns.RcodeToString[r.Rcode]
}

// running reports whether NSD was started and not stopped since.
func (n *NSD) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

// stop ends NSD and its children and waits for them.
func (n *NSD) stop() error {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.cmd = nil
	n.mu.Unlock()
	if cmd == nil {
		return nil
	}
	// The negative PID is the process group this test created for NSD.
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	// NSD's server and xfrd children take a second and more to follow
	// their parent out; they hold nothing a test needs, so end them now
	// (they are in the process group created for this NSD) and wait until
	// the port is free again for Start. (Their exit can take a while to
	// be reaped, so the port, not the process table, says when.)
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	deadline := time.Now().Add(30 * time.Second)
	for !portFree(n.Addr) {
		if time.Now().After(deadline) {
			return fmt.Errorf("NSD's port %s still taken 30s after SIGKILL", n.Addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// portFree reports whether addr can be bound for both UDP and TCP.
func portFree(addr string) bool {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	pc.Close()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// Stop stops NSD: queries to Addr then go unanswered.
func (n *NSD) Stop() {
	if err := n.stop(); err != nil {
		n.fail(err)
	}
}

// Start starts NSD again after Stop, on the same port with the same zone.
func (n *NSD) Start() {
	if err := n.start(); err != nil {
		n.fail(err)
	}
}

// SetZone replaces the zone's records (completed like startNSD's) and
// restarts NSD so that it serves them.
func (n *NSD) SetZone(zoneText string) {
	n.Stop()
	if err := n.writeZone(zoneText); err != nil {
		n.fail(err)
		return
	}
	n.Start()
}

// Output returns what NSD printed so far, and its log file.
func (n *NSD) Output() string {
	out, _ := os.ReadFile(filepath.Join(n.dir, "nsd.out"))
	log, _ := os.ReadFile(filepath.Join(n.dir, "nsd.log"))
	return string(out) + string(log)
}

func (n *NSD) fail(err error) {
	if n.tb != nil {
		n.tb.Helper()
		n.tb.Fatal(err)
	}
	panic(err)
}
