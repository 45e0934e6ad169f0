package main

import (
	"bufio"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/internal/logtest"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// buildBinary builds spf-milter once for the tests that run the real
// process, and returns its path.
func buildBinary(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool to build the binary with")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "spf-milter-bin")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "spf-milter")
		if out, err := exec.Command(goTool, "build", "-o", builtBin, ".").CombinedOutput(); err != nil {
			buildErr = &buildError{err: err, out: string(out)}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return "go build: " + e.err.Error() + "\n" + e.out }

// binProcess is the built daemon running as a child process.
type binProcess struct {
	cmd  *exec.Cmd
	logs logtest.Buffer
	// exited is closed once the process is gone, with its status in err.
	exited chan struct{}
	err    error
}

// startBinary runs cmd, which runs the daemon, collecting its stderr; the
// process is killed at the end of the test if still running.
func startBinary(t *testing.T, cmd *exec.Cmd) *binProcess {
	t.Helper()
	p := &binProcess{cmd: cmd, exited: make(chan struct{})}
	stderrPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		// Wait only after the pipe is drained, as os/exec requires.
		sc := bufio.NewScanner(stderrPipe)
		for sc.Scan() {
			p.logs.Write(append(sc.Bytes(), '\n'))
		}
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// logAddr waits for the log record whose message starts with prefix and
// returns its addr attribute.
func (p *binProcess) logAddr(t *testing.T, prefix string) string {
	t.Helper()
	waitLogs(t, p.logs.String, prefix, 1)
	for _, r := range logRecords(p.logs.String()) {
		if msg, _ := r["msg"].(string); strings.HasPrefix(msg, prefix) {
			addr, _ := r["addr"].(string)
			return addr
		}
	}
	return ""
}

func (p *binProcess) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// waitExit waits for the process to end and fails unless it exited 0.
func (p *binProcess) waitExit(t *testing.T) {
	t.Helper()
	select {
	case <-p.exited:
		if p.err != nil {
			t.Fatalf("exit: %v, want status 0\n%s", p.err, p.logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the daemon did not exit:\n%s", p.logs.String())
	}
}

// TestServeHostileConfigPath runs the real daemon and points its config
// path at things that are not config files before a SIGHUP: a FIFO no one
// writes to (which used to block the reload, and with it every later
// signal, for ever) and /dev/zero (which used to be read until memory ran
// out). Each reload is refused with the reason logged, the old config
// keeps answering, and SIGTERM still stops the daemon with status 0.
func TestServeHostileConfigPath(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	dns := testDNS(t)
	dir := t.TempDir()
	real := filepath.Join(dir, "real.yaml")
	writeFile(t, real, serveConfig(dns, "inet:127.0.0.1:0", "reject", ""))
	path := filepath.Join(dir, "config.yaml")
	if err := os.Symlink(real, path); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}

	p := startBinary(t, exec.Command(bin, "serve", "--config", path, "--drain-timeout", "10s"))
	addr := p.logAddr(t, "listening on ")
	if got := oneSession(t, addr); got != 550 {
		t.Fatalf("MAIL FROM reply %d, want 550", got)
	}

	steps := []struct {
		target string
		want   string // in the error of the refused reload
	}{
		{fifo, "it is a FIFO (named pipe)"},
		{"/dev/zero", "it is a character device"},
	}
	for _, st := range steps {
		if _, err := os.Stat(st.target); err != nil {
			t.Logf("skipping %s: %v", st.target, err)
			continue
		}
		// Swap the link as an admin's deploy would: a new link renamed
		// over the old.
		tmp := path + ".new"
		if err := os.Symlink(st.target, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
		// Two SIGHUPs: the second must not find the loop stuck in the first.
		p.signal(t, syscall.SIGHUP)
		p.signal(t, syscall.SIGHUP)
		refusedFor := func() bool {
			for _, r := range logRecords(p.logs.String()) {
				if e, _ := r["error"].(string); r["msg"] == "reload failed; the running config is kept" && strings.Contains(e, st.want) {
					return true
				}
			}
			return false
		}
		for deadline := time.Now().Add(20 * time.Second); !refusedFor(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no refused reload saying %q after 20s:\n%s", st.want, p.logs.String())
			}
		}
		if got := oneSession(t, addr); got != 550 {
			t.Fatalf("after a reload from %s: MAIL FROM reply %d, want 550 from the old config", st.target, got)
		}
	}

	p.signal(t, syscall.SIGTERM)
	p.waitExit(t)
}

// TestServeReloadOffLoop holds a reload in the middle of reading the
// config: SIGHUPs sent meanwhile are taken at once and folded into one
// more reload, sessions are answered, and the end of the context stops
// the daemon although a reload still reads. The signal loop used to run
// the reload itself, so the second SIGHUP waited for ever.
func TestServeReloadOffLoop(t *testing.T) {
	t.Parallel()
	dns := testDNS(t)
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, serveConfig(dns, "inet:127.0.0.1:0", "reject", ""))

	var loads atomic.Int32
	entered := make(chan struct{}, 10)
	release := make(chan struct{})
	p := startInProcess(t, serveOptions{configPath: path, explicit: true,
		load: func(path string, explicit bool) (*config.Config, bool, error) {
			loads.Add(1)
			entered <- struct{}{}
			<-release
			return loadServeConfig(path, explicit)
		}})
	t.Cleanup(func() { close(release) })
	addr := p.listening(t)
	logs := p.logs.String

	sighup := func(what string) {
		t.Helper()
		select {
		case p.hup <- syscall.SIGHUP:
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: the signal loop did not take a SIGHUP:\n%s", what, logs())
		}
	}
	waitEntered := func(what string) {
		t.Helper()
		select {
		case <-entered:
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: no reload started:\n%s", what, logs())
		}
	}

	writeFile(t, path, serveConfig(dns, "inet:127.0.0.1:0", "tempfail", ""))
	sighup("first")
	waitEntered("first")
	for range 3 {
		sighup("during a reload")
	}
	if got := oneSession(t, addr); got != 550 {
		t.Errorf("during a reload: MAIL FROM reply %d, want 550 from the running config", got)
	}
	release <- struct{}{}
	waitEntered("the SIGHUPs sent during the first")
	release <- struct{}{}
	waitLogs(t, logs, "config reloaded", 2)
	if got := oneSession(t, addr); got != 451 {
		t.Errorf("after the reloads: MAIL FROM reply %d, want 451 from the new config", got)
	}
	if n := loads.Load(); n != 2 {
		t.Errorf("%d reloads for four SIGHUPs, three of them during the first; want 2", n)
	}

	// A reload that never ends does not hold the shutdown.
	sighup("last")
	waitEntered("last")
	p.cancel()
	if code := p.wait(t); code != 0 {
		t.Errorf("exit %d with a reload reading, want 0", code)
	}
}

// TestServeWebCannotStarveMilter runs the real daemon under a limit of
// 256 descriptors, with both HTTP listeners, and opens 1,100 connections
// to them, each sending one request and then staying open: an MTA session
// must still be answered. Without a cap on the HTTP listeners, their
// connections took every descriptor and the milter listener failed to
// accept with "too many open files" until the clients went away.
func TestServeWebCannotStarveMilter(t *testing.T) {
	t.Parallel()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash to lower the descriptor limit with")
	}
	bin := buildBinary(t)
	dns := testDNS(t)
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, serveConfig(dns, "inet:127.0.0.1:0", "reject",
		"metrics: {listen: \"127.0.0.1:0\"}\nwhy: {listen: \"127.0.0.1:0\"}\n"))
	// ulimit -n sets the hard limit too, so the Go runtime cannot raise it.
	p := startBinary(t, exec.Command(bash, "-c", `ulimit -n 256 && exec "$0" serve --config "$1"`, bin, path))
	metricsAddr := p.logAddr(t, "metrics and /healthz on ")
	whyAddr := p.logAddr(t, "why page on ")
	addr := p.logAddr(t, "listening on ")

	const clients = 1100
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range clients {
		to := metricsAddr
		if i%2 == 1 {
			to = whyAddr
		}
		c, err := net.DialTimeout("tcp", to, 20*time.Second)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		conns = append(conns, c)
		// Into the socket buffer whether or not the daemon accepted yet.
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n"); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
	if got := oneSession(t, addr); got != 550 {
		t.Fatalf("with %d web clients: MAIL FROM reply %d, want 550", clients, got)
	}
	if strings.Contains(p.logs.String(), "accept failed") {
		t.Errorf("the milter listener ran out of descriptors:\n%s", p.logs.String())
	}
	p.signal(t, syscall.SIGTERM)
	p.waitExit(t)
}
