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

	"github.com/spf-milter/spf-milter/internal/logtest"
)

// Milter is the spf-milter binary under test, running `serve --config` as
// a child process.
type Milter struct {
	// Addr is the TCP address it listens on: 127.0.0.1:PORT.
	Addr string
	// Listen is the same address in the MTA's notation, as in the config:
	// inet:127.0.0.1:PORT.
	Listen string
	// ConfigPath is the config file it reads, also on SIGHUP.
	ConfigPath string
	// Cmd is the running process; nil after Kill or Stop.
	Cmd *exec.Cmd

	tb testing.TB // where errors go; nil for the package's fixtures (they panic)

	mu     sync.Mutex
	exited chan struct{} // closed once Cmd has been waited for

	log logtest.Buffer // stderr of every run, in order
}

var (
	reListenKey = regexp.MustCompile(`(?m)^listen:[ \t]*"?([^"\s#]+)"?`)
	reInetAddr  = regexp.MustCompile(`^inet:(?:([0-9.]+):(\d+)|(\d+)@([0-9.]+))$`)
)

// startMilter writes configYAML to a file, with `listen:
// inet:127.0.0.1:PORT` on a free port added unless it has a listen key,
// starts `spf-milter serve --config` and waits until the port accepts
// connections. The milter is stopped (SIGTERM) when the test ends, and its
// log printed if the test failed.
func startMilter(t testing.TB, configYAML string) *Milter {
	t.Helper()
	m, err := newMilter(workDir(t), configYAML)
	if err != nil {
		t.Fatal(err)
	}
	m.tb = t
	t.Cleanup(func() {
		if err := m.stop(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("spf-milter log:\n%s", m.Log())
		}
	})
	return m
}

// newMilter is startMilter without a test: the caller stops it.
func newMilter(dir, configYAML string) (*Milter, error) {
	m := &Milter{ConfigPath: filepath.Join(dir, "spf-milter.yaml")}
	if sub := reListenKey.FindStringSubmatch(configYAML); sub != nil {
		a := reInetAddr.FindStringSubmatch(sub[1])
		if a == nil {
			return nil, fmt.Errorf("startMilter: listen %q: only inet:IPv4:PORT or inet:PORT@IPv4 are supported here", sub[1])
		}
		host, port := a[1], a[2]
		if host == "" {
			host, port = a[4], a[3]
		}
		m.Addr, m.Listen = net.JoinHostPort(host, port), sub[1]
	} else {
		port, err := findFreePort()
		if err != nil {
			return nil, err
		}
		m.Addr = fmt.Sprintf("127.0.0.1:%d", port)
		m.Listen = "inet:" + m.Addr
		configYAML = "listen: " + m.Listen + "\n" + configYAML
	}
	if err := os.WriteFile(m.ConfigPath, []byte(configYAML), 0o644); err != nil {
		return nil, err
	}
	if err := m.start(); err != nil {
		return nil, err
	}
	return m, nil
}

// start runs the binary and waits until its port accepts connections.
func (m *Milter) start() error {
	m.mu.Lock()
	if m.Cmd != nil {
		m.mu.Unlock()
		return errors.New("spf-milter is already running")
	}
	cmd := exec.Command(spfMilterBin, "serve", "--config", m.ConfigPath)
	cmd.Stdout = &m.log
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		m.mu.Unlock()
		return fmt.Errorf("starting spf-milter: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	m.Cmd, m.exited = cmd, exited
	m.mu.Unlock()

	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			m.mu.Lock()
			m.Cmd = nil
			m.mu.Unlock()
			return fmt.Errorf("spf-milter exited at start: %s\n%s", cmd.ProcessState, m.Log())
		default:
		}
		c, err := net.DialTimeout("tcp", m.Addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			m.signalAndWait(syscall.SIGKILL)
			return fmt.Errorf("spf-milter does not accept connections on %s: %v\n%s", m.Addr, err, m.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// signalAndWait sends sig to the process and waits until it has exited,
// returning its exit status (-1 when it was not running or was killed).
func (m *Milter) signalAndWait(sig syscall.Signal) (int, error) {
	m.mu.Lock()
	cmd, exited := m.Cmd, m.exited
	m.Cmd = nil
	m.mu.Unlock()
	if cmd == nil {
		return -1, nil
	}
	cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-exited
		return -1, fmt.Errorf("spf-milter did not exit within 60s of %v", sig)
	}
	return cmd.ProcessState.ExitCode(), nil
}

// running reports whether the milter was started and not stopped since.
func (m *Milter) running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.Cmd != nil
}

// stop is Stop without a test to report to.
func (m *Milter) stop() error {
	code, err := m.signalAndWait(syscall.SIGTERM)
	if err == nil && code != 0 && code != -1 {
		err = fmt.Errorf("spf-milter exited with status %d after SIGTERM", code)
	}
	return err
}

// Stop sends SIGTERM, waits for the drain to finish and checks that the
// exit status is 0.
func (m *Milter) Stop() {
	if err := m.stop(); err != nil {
		m.fail(err)
	}
}

// Kill ends the milter with SIGKILL, as a crash would, and waits for it.
func (m *Milter) Kill() {
	m.signalAndWait(syscall.SIGKILL)
}

// Restart starts the milter again after Kill or Stop, on the same port
// with the current config file.
func (m *Milter) Restart() {
	if err := m.start(); err != nil {
		m.fail(err)
	}
}

// reloadDone matches the log lines that end a reload, good or bad.
var reloadDone = regexp.MustCompile(`config reloaded|reload failed`)

// Reload writes newYAML as the config (with the running listen address
// added when it has none), sends SIGHUP and waits until the milter has
// logged the outcome; a refused config fails the test.
func (m *Milter) Reload(newYAML string) {
	if err := m.reload(newYAML); err != nil {
		m.fail(err)
	}
}

// ReloadRefused writes newYAML, a config the milter must refuse, sends
// SIGHUP and waits until the milter has logged the refusal. The same
// process must still be running afterwards, on its old config: a bad file
// must never take the milter down. The caller writes a good config (Reload)
// before the next Restart, which would read the bad file.
func (m *Milter) ReloadRefused(newYAML string) {
	if err := m.reloadWant(newYAML, false); err != nil {
		m.fail(err)
	}
}

func (m *Milter) reload(newYAML string) error {
	return m.reloadWant(newYAML, true)
}

// reloadWant is Reload (wantOK) or ReloadRefused (!wantOK).
func (m *Milter) reloadWant(newYAML string, wantOK bool) error {
	if !reListenKey.MatchString(newYAML) {
		newYAML = "listen: " + m.Listen + "\n" + newYAML
	}
	// Write a new file and rename it over the old, so that the milter
	// never reads a half-written config.
	tmp := m.ConfigPath + ".new"
	if err := os.WriteFile(tmp, []byte(newYAML), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, m.ConfigPath); err != nil {
		return err
	}
	m.mu.Lock()
	cmd, exited := m.Cmd, m.exited
	m.mu.Unlock()
	if cmd == nil {
		return errors.New("Reload: spf-milter is not running")
	}
	before := len(reloadDone.FindAllString(m.Log(), -1))
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		log := m.Log()
		done := reloadDone.FindAllString(log, -1)
		if len(done) > before {
			switch ok := done[len(done)-1] == "config reloaded"; {
			case ok && !wantOK:
				return fmt.Errorf("spf-milter accepted a config it must refuse:\n%s", log)
			case !ok && wantOK:
				return fmt.Errorf("spf-milter refused the new config:\n%s", log)
			}
			select {
			case <-exited:
				return fmt.Errorf("spf-milter exited after a reload: %s\n%s", cmd.ProcessState, log)
			default:
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("spf-milter did not log a reload within 30s of SIGHUP:\n%s", log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Log returns what the milter wrote to stderr (and stdout) so far, over
// every run.
func (m *Milter) Log() string {
	return m.log.String()
}

// LogLines returns the lines of Log containing every one of substrings.
func (m *Milter) LogLines(substrings ...string) []string {
	var lines []string
	for line := range strings.SplitSeq(m.Log(), "\n") {
		ok := true
		for _, s := range substrings {
			if !strings.Contains(line, s) {
				ok = false
				break
			}
		}
		if ok && line != "" {
			lines = append(lines, line)
		}
	}
	return lines
}

func (m *Milter) fail(err error) {
	if m.tb != nil {
		m.tb.Helper()
		m.tb.Fatal(err)
	}
	panic(err)
}

// TestHelpers checks the fixtures the other tests build on: NSD answers
// its zone and can be stopped and started again, and the milter starts,
// reloads, survives a SIGKILL by restarting, and stops with status 0.
func TestHelpers(t *testing.T) {
	n := startNSD(t, "helpers.test", `@ IN TXT "v=spf1 -all"`)
	n.Stop()
	n.Start()
	n.SetZone(`@ IN TXT "v=spf1 +all"`)
	q := new(dns.Msg)
	q.SetQuestion("helpers.test.", dns.TypeTXT)
	r, err := dns.Exchange(q, n.Addr)
	if err != nil || len(r.Answer) != 1 || !strings.Contains(r.Answer[0].String(), "+all") {
		t.Fatalf("after SetZone: %v %v", r, err)
	}

	m := startMilter(t, fmt.Sprintf("authserv_id: mx.helpers.test\ndns: {servers: [%q], timeout: 1s, check_timeout: 5s}\n", n.Addr))
	m.Reload(fmt.Sprintf("authserv_id: mx2.helpers.test\ndns: {servers: [%q]}\n", n.Addr))
	m.Kill()
	m.Restart()
	m.Stop()
	if got := m.LogLines("config reloaded"); len(got) != 1 {
		t.Errorf("want one reload in the log, got %q", got)
	}
}
