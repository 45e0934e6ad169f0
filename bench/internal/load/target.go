package load

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// PySPFRunner is the Python that has Debian's pyspf-milter modules: the
// system one, not whatever python3 comes first on PATH.
const PySPFRunner = "/usr/bin/python3"

// PySPFInstalled reports whether Debian's pyspf-milter is installed.
func PySPFInstalled() bool {
	if _, err := os.Stat("/usr/bin/pyspf-milter"); err != nil {
		return false
	}
	_, err := os.Stat(PySPFRunner)
	return err == nil
}

// Process is a milter under test, running in a process of its own.
type Process struct {
	Name string
	Addr string // host:port of its milter socket
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // of Wait, once done is closed
}

// PID returns the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// RSS returns the resident memory of the process in bytes (VmRSS).
func (p *Process) RSS() (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.PID()))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("odd VmRSS line %q", line)
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// clockTick is the unit of the CPU times in /proc/PID/stat: USER_HZ, 100
// on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// CPU returns the CPU time (user and system, all threads) the process has
// used so far.
func (p *Process) CPU() (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID()))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: count fields
	// from after its closing parenthesis, where field 3 (state) starts.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("odd /proc stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// selfCPU returns the CPU time this process (the load generator and the
// DNS server) has used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Alive reports whether the process still runs.
func (p *Process) Alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// LogTail returns the end of what the process wrote to stdout and stderr.
func (p *Process) LogTail() string {
	data, _ := os.ReadFile(p.log)
	if len(data) > 2000 {
		data = data[len(data)-2000:]
	}
	return strings.TrimSpace(string(data))
}

// Stop ends the process with SIGTERM, then SIGKILL if it lingers.
func (p *Process) Stop() {
	if !p.Alive() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(10 * time.Second):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// startProcess runs argv with its output in logPath and waits until its
// milter socket at addr accepts connections.
func startProcess(name, addr, logPath string, argv ...string) (*Process, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so that a ^C to the load generator reaches
	// it only through Stop.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, Addr: addr, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()

	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return p, nil
		}
		if !p.Alive() {
			return nil, fmt.Errorf("%s exited before listening (%v): %s", name, p.err, p.LogTail())
		}
		if time.Now().After(deadline) {
			p.Stop()
			return nil, fmt.Errorf("%s not listening on %s after 20s: %s", name, addr, p.LogTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freePort returns a TCP port on 127.0.0.1 that nothing listens on now.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Binaries are the programs the targets run.
type Binaries struct {
	SPFMilter  string
	NullMilter string
}

// BuildBinaries builds spf-milter (the working tree, through the bench
// module's replace directive) and the do-nothing milter into dir. It runs
// the go command in the current directory, which must be inside the bench
// module.
func BuildBinaries(ctx context.Context, dir string) (Binaries, error) {
	b := Binaries{SPFMilter: filepath.Join(dir, "spf-milter"), NullMilter: filepath.Join(dir, "nullmilter")}
	for _, x := range []struct{ out, pkg string }{
		{b.SPFMilter, "github.com/spf-milter/spf-milter/cmd/spf-milter"},
		{b.NullMilter, "github.com/spf-milter/spf-milter/bench/cmd/nullmilter"},
	} {
		cmd := exec.CommandContext(ctx, goCommand(), "build", "-o", x.out, x.pkg)
		if out, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("go build %s: %v\n%s", x.pkg, err, out)
		}
	}
	return b, nil
}

func goCommand() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(os.Getenv("GOROOT"), "bin", "go")
}

// SPFMilterFeatures are what the spf-milter binary at hand supports, found
// out by asking it, so that the tool runs against older and newer trees.
type SPFMilterFeatures struct {
	// IOBuffer: serve has --io-buffer.
	IOBuffer bool
	// CacheSize: the config has dns.cache_size.
	CacheSize bool
	// SkipReplies: serve has --skip-replies, on by default: the daemon
	// answers an MTA of protocol 6 with version 6 and lets it skip the
	// replies of the stages milter.DaemonOptions.SkipReplies covers.
	SkipReplies bool
}

// DetectFeatures asks the binary.
func DetectFeatures(bin, dir string) SPFMilterFeatures {
	var f SPFMilterFeatures
	out, _ := exec.Command(bin, "serve", "-h").CombinedOutput()
	f.IOBuffer = bytes.Contains(out, []byte("io-buffer"))
	f.SkipReplies = bytes.Contains(out, []byte("skip-replies"))
	cfg := filepath.Join(dir, "probe.yaml")
	if err := os.WriteFile(cfg, []byte("dns:\n  cache_size: 0\n"), 0o644); err == nil {
		f.CacheSize = exec.Command(bin, "validate", "--config", cfg).Run() == nil
	}
	return f
}

// SPFMilterOptions select how spf-milter runs.
type SPFMilterOptions struct {
	// IOBuffer is passed as --io-buffer; -1 leaves the flag out.
	IOBuffer int
	// CacheSize is written as dns.cache_size; -1 leaves the key out.
	CacheSize int
	// GOGC, when set, is put in the daemon's environment, overriding its
	// own garbage collector setting.
	GOGC string
	// MetricsListen, when set, is written as metrics.listen: the daemon
	// then serves /metrics there.
	MetricsListen string
	// WaitReplies passes --skip-replies=false: every command answered,
	// as plain go-milter does.
	WaitReplies bool
}

// StartSPFMilter runs spf-milter serve with a config pointing at dnsAddr,
// logging only warnings so that logging stays out of the measure.
func StartSPFMilter(bin, dir, name, dnsAddr string, o SPFMilterOptions) (*Process, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cache := ""
	if o.CacheSize >= 0 {
		cache = fmt.Sprintf("  cache_size: %d\n", o.CacheSize)
	}
	metrics := ""
	if o.MetricsListen != "" {
		metrics = fmt.Sprintf("metrics:\n  listen: %q\n", o.MetricsListen)
	}
	cfg := fmt.Sprintf(`listen: inet:127.0.0.1:%d
authserv_id: %s
dns:
  servers: ["%s"]
  timeout: 5s
  check_timeout: 20s
%s%slog:
  level: warn
`, port, receiverName, dnsAddr, cache, metrics)
	base := filepath.Join(dir, slug(name))
	if err := os.WriteFile(base+".yaml", []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	argv := []string{bin, "serve", "--config", base + ".yaml"}
	if o.GOGC != "" {
		// env execs the daemon: the PID measured stays the daemon's.
		argv = append([]string{"/usr/bin/env", "GOGC=" + o.GOGC}, argv...)
	}
	if o.IOBuffer >= 0 {
		argv = append(argv, "--io-buffer", strconv.Itoa(o.IOBuffer))
	}
	if o.WaitReplies {
		argv = append(argv, "--skip-replies=false")
	}
	return startProcess(name, fmt.Sprintf("127.0.0.1:%d", port), base+".log", argv...)
}

// StartNullMilter runs the do-nothing milter with the given I/O buffer
// (0: plain go-milter; over 0: through spf-milter's daemon, which also
// lets an MTA of protocol 6 skip the replies spf-milter's do).
func StartNullMilter(bin, dir, name string, ioBuffer int) (*Process, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	return startProcess(name, addr, filepath.Join(dir, slug(name)+".log"),
		bin, "-listen", addr, "-io-buffer", strconv.Itoa(ioBuffer))
}

// StartPySPF runs Debian's pyspf-milter, pointed at dnsAddr by a small
// wrapper that sets pydns's server before the milter starts (its config
// has no such setting). It refuses fail at MAIL FROM for both identities,
// as spf-milter's default policy does, and checks every client.
func StartPySPF(dir, name, dnsAddr string) (*Process, error) {
	host, dnsPort, err := net.SplitHostPort(dnsAddr)
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	// It changes to UserID after starting, and chowns its pid file to it
	// even when not root, which only works for the user it runs as.
	userID := "pyspf-milter"
	if os.Getuid() != 0 {
		u, err := user.Current()
		if err != nil {
			return nil, err
		}
		userID = u.Username
	}
	base := filepath.Join(dir, slug(name))
	conf := fmt.Sprintf(`debugLevel = 0
TestOnly = 1
HELO_reject = Fail
Mail_From_reject = Fail
PermError_reject = False
TempError_Defer = False
skip_addresses = 127.0.0.0/8,::1
Socket = inet:%d@127.0.0.1
PidFile = %s.pid
UserID = %s
Authserv_Id = %s
`, port, base, userID, receiverName)
	run := fmt.Sprintf(`import sys, DNS
import spf  # reads /etc/resolv.conf at import; overridden below
DNS.defaults['server'] = [%q]
DNS.defaults['port'] = %s
from spf_engine.milter_spf import main
sys.argv = ['pyspf-milter', sys.argv[1]]
sys.exit(main())
`, host, dnsPort)
	if err := os.WriteFile(base+".conf", []byte(conf), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(base+".py", []byte(run), 0o644); err != nil {
		return nil, err
	}
	_ = os.Remove(base + ".pid") // it refuses to start over a stale one
	return startProcess(name, fmt.Sprintf("127.0.0.1:%d", port), base+".log", PySPFRunner, base+".py", base+".conf")
}

func slug(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else if b.Len() > 0 && !strings.HasSuffix(b.String(), "-") {
			b.WriteByte('-')
		}
	}
	return strings.TrimSuffix(b.String(), "-")
}
