package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Unbound is Debian's caching resolver, run in the foreground on a
// loopback port with a stub zone pointing at a test's NSD: the resolver
// the production topology puts beside each milter.
type Unbound struct {
	// Addr is where it answers: 127.0.0.1:PORT.
	Addr string

	dir, conf string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// startUnbound starts Unbound resolving zone (such as "example.test") from
// the authoritative server at nsdAddr, with its cache and statistics on,
// and stops it when the test ends.
func startUnbound(t *testing.T, zone, nsdAddr string) *Unbound {
	t.Helper()
	need(t, "unbound", "unbound-checkconf", "unbound-control")
	dir := workDir(t)
	port := freePort(t)
	nsdHost, nsdPort, ok := strings.Cut(nsdAddr, ":")
	if !ok {
		t.Fatalf("NSD address %q has no port", nsdAddr)
	}
	u := &Unbound{
		Addr: fmt.Sprintf("127.0.0.1:%d", port),
		dir:  dir,
		conf: filepath.Join(dir, "unbound.conf"),
	}
	// No user switch, chroot or trust anchor: the test's zone is unsigned
	// and the files stay in dir. "test." is one of Unbound's default
	// local zones (RFC 6761), answered NXDOMAIN unless let through; NSD
	// listens on loopback, which Unbound does not ask by default. The
	// control socket in dir serves the statistics.
	conf := fmt.Sprintf(`server:
    interface: 127.0.0.1
    port: %[1]d
    do-ip6: no
    num-threads: 1
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "%[2]s"
    pidfile: "%[2]s/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    module-config: "iterator"
    do-not-query-localhost: no
    local-zone: "test." nodefault
    domain-insecure: "%[3]s"
    extended-statistics: yes
stub-zone:
    name: "%[3]s"
    stub-addr: %[4]s@%[5]s
remote-control:
    control-enable: yes
    control-interface: "%[2]s/unbound.ctl"
    control-use-cert: no
`, port, dir, zone, nsdHost, nsdPort)
	if err := os.WriteFile(u.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("unbound-checkconf", u.conf).CombinedOutput(); err != nil {
		t.Fatalf("unbound-checkconf: %v\n%s", err, out)
	}
	out, err := os.Create(filepath.Join(dir, "unbound.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command("unbound", "-d", "-c", u.conf)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting unbound: %v", err)
	}
	u.cmd, u.exited = cmd, make(chan struct{})
	go func() {
		cmd.Wait()
		close(u.exited)
	}()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Unbound output:\n%s", u.Output())
		}
		u.stop()
	})

	// Ready when the control socket answers: asking a name now would put
	// it in the cache before the test counts.
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-u.exited:
			t.Fatalf("unbound exited at start: %s\n%s", cmd.ProcessState, u.Output())
		default:
		}
		if _, err := u.control("status"); err == nil {
			return u
		} else if time.Now().After(deadline) {
			t.Fatalf("unbound-control status: %v\n%s", err, u.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// control runs unbound-control with args and returns its output.
func (u *Unbound) control(args ...string) (string, error) {
	out, err := exec.Command("unbound-control", append([]string{"-c", u.conf}, args...)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("unbound-control %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Stats returns Unbound's counters (total.num.queries,
// total.num.cachehits, total.num.cachemiss, ...) without resetting them.
func (u *Unbound) Stats(t *testing.T) map[string]float64 {
	t.Helper()
	out, err := u.control("stats_noreset")
	if err != nil {
		t.Fatal(err)
	}
	stats := map[string]float64{}
	for line := range strings.SplitSeq(out, "\n") {
		name, value, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			stats[name] = v
		}
	}
	for _, name := range []string{"total.num.queries", "total.num.cachehits", "total.num.cachemiss"} {
		if _, ok := stats[name]; !ok {
			t.Fatalf("unbound-control stats_noreset has no %s:\n%s", name, out)
		}
	}
	return stats
}

// Output returns what Unbound printed.
func (u *Unbound) Output() string {
	out, _ := os.ReadFile(filepath.Join(u.dir, "unbound.out"))
	return string(out)
}

func (u *Unbound) stop() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.cmd == nil {
		return
	}
	syscall.Kill(-u.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-u.exited:
	case <-time.After(30 * time.Second):
		syscall.Kill(-u.cmd.Process.Pid, syscall.SIGKILL)
		<-u.exited
	}
	u.cmd = nil
}

// TestPostfixUnbound runs the recommended production topology: Postfix
// hands each session to spf-milter, which asks a local caching Unbound,
// which resolves the zone from its authoritative server (NSD). The
// milter's own DNS cache is off, so that every check asks Unbound. A first
// round of messages gets its verdicts with Unbound asking NSD; then NSD is
// stopped, and the same messages get the same verdicts, every query
// answered from Unbound's cache (its statistics: hits, and no miss).
func TestPostfixUnbound(t *testing.T) {
	e := postfixFixture(t)
	// A zone of its own, with a TTL that outlives the test: the shared
	// one's TTL of 1s would expire from the cache between the rounds.
	nsd := startNSD(t, "example.test", "$TTL 3600\n"+postfixZone)
	u := startUnbound(t, "example.test", nsd.Addr)
	e.milter.Reload(postfixMilterConfig(u.Addr, authservID))
	t.Cleanup(func() {
		if err := e.milter.reload(postfixMilterConfig(e.nsd.Addr, authservID)); err != nil {
			t.Error(err)
		}
	})

	tests := []struct {
		from string
		// A refusal's whole reply at MAIL FROM, or the result of the
		// delivered message's Received-SPF for MAIL FROM.
		reply, result string
	}{
		{from: "user@pass.example.test", result: "pass"},
		{from: "user@fail.example.test", reply: "550 5.7.23 SPF fail: 192.0.2.10 may not send mail for fail.example.test: 100% sure"},
		{from: "user@softfail.example.test", result: "softfail"},
		{from: "user@perm.example.test", reply: "550 5.7.24 SPF permerror: "},
		{from: "user@none.example.test", result: "none"},
	}
	round := func(t *testing.T, name string) {
		for _, tc := range tests {
			m := newMessage(t.Name()+"-"+name+"-"+tc.from, tc.from)
			r, err := e.sendOne("192.0.2.10", "helo.example.test", m)
			if err != nil {
				t.Fatal(err)
			}
			if tc.reply != "" {
				if got := fmt.Sprintf("%d %s", r.Code, r.Text); r.Stage != "MAIL" || !strings.HasPrefix(got, tc.reply) {
					t.Errorf("%s, %s: %s, want MAIL FROM refused with %q", name, tc.from, r, tc.reply)
				}
				continue
			}
			if r.Stage != "" {
				t.Errorf("%s, %s: refused: %s", name, tc.from, r)
				continue
			}
			d := e.waitDelivered(t, m.ID)
			var got []string
			for _, h := range d.header("Received-SPF") {
				if strings.Contains(h, "identity=mailfrom") {
					got = append(got, h)
				}
			}
			if len(got) != 1 || !strings.HasPrefix(got[0], tc.result+" (mx.example.test: ") {
				t.Errorf("%s, %s: Received-SPF for MAIL FROM %q, want one saying %s", name, tc.from, got, tc.result)
			}
		}
	}

	before := u.Stats(t)
	round(t, "first")
	first := u.Stats(t)
	asked := first["total.num.queries"] - before["total.num.queries"]
	missed := first["total.num.cachemiss"] - before["total.num.cachemiss"]
	// Each message needs the TXT records of its domain and of the HELO
	// name: the first round asks NSD for what it had not seen yet.
	t.Logf("first round: %v queries at Unbound, %v cache misses", asked, missed)
	if asked < float64(len(tests)) || missed < 1 {
		t.Fatalf("first round: Unbound answered %v queries with %v cache misses; want the milter's queries, and NSD asked", asked, missed)
	}
	if t.Failed() {
		return
	}

	// Without the authoritative server, only Unbound's cache can answer:
	// a query that reached NSD's address would go unanswered and the
	// message be deferred as a temperror.
	nsd.Stop()
	round(t, "second")
	second := u.Stats(t)
	asked = second["total.num.queries"] - first["total.num.queries"]
	hits := second["total.num.cachehits"] - first["total.num.cachehits"]
	missed = second["total.num.cachemiss"] - first["total.num.cachemiss"]
	t.Logf("second round, NSD stopped: %v queries at Unbound, %v cache hits, %v misses", asked, hits, missed)
	if asked < float64(len(tests)) || hits != asked || missed != 0 {
		t.Errorf("second round: %v queries, %v cache hits, %v misses; want every query of the milter a hit", asked, hits, missed)
	}
	// The same check through dig's eyes: the record comes from the cache,
	// with its TTL counting down from the zone's.
	c := &dns.Client{Net: "udp", Timeout: 3 * time.Second}
	q := new(dns.Msg)
	q.SetQuestion("pass.example.test.", dns.TypeTXT)
	r, _, err := c.Exchange(q, u.Addr)
	if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("TXT pass.example.test from Unbound with NSD stopped: %v, %v", err, r)
	}
	if txt, ok := r.Answer[0].(*dns.TXT); !ok || strings.Join(txt.Txt, "") != "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all" || txt.Hdr.Ttl > 3600 {
		t.Errorf("TXT pass.example.test from Unbound: %v", r.Answer[0])
	}
}
