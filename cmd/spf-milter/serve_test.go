package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/spf-milter/spf-milter/internal/logtest"
)

// logRecords parses JSON log lines; other lines are skipped.
func logRecords(s string) []map[string]any {
	var recs []map[string]any
	for _, line := range strings.Split(s, "\n") {
		var r map[string]any
		if json.Unmarshal([]byte(line), &r) == nil {
			recs = append(recs, r)
		}
	}
	return recs
}

// countLogs counts the records whose message starts with prefix.
func countLogs(recs []map[string]any, prefix string) int {
	n := 0
	for _, r := range recs {
		if msg, _ := r["msg"].(string); strings.HasPrefix(msg, prefix) {
			n++
		}
	}
	return n
}

// serveConfig is a config file for serve tests: DNS from dns, JSON logs,
// and the given MAIL FROM action for a fail result. extra is appended.
func serveConfig(dns, listen string, fail string, extra string) string {
	return fmt.Sprintf(`listen: %s
authserv_id: mx.test
dns:
  servers: ["%s"]
  timeout: 2s
  check_timeout: 5s
policy:
  mailfrom: {fail: %s}
log: {format: json, level: info}
%s`, listen, dns, fail, extra)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// milterClient opens a milter session with the daemon at addr, as an MTA
// would, up to and including HELO from a client outside the trusted
// networks.
func milterClient(t *testing.T, addr string) *gomilter.ClientSession {
	t.Helper()
	network := "tcp"
	if strings.HasPrefix(addr, "/") {
		network = "unix"
	}
	c := gomilter.NewClientWithOptions(network, addr, gomilter.ClientOptions{
		ReadTimeout:  15 * time.Second,
		WriteTimeout: 15 * time.Second,
		ActionMask:   gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptQuarantine,
	})
	s, err := c.Session()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Conn("client.example", gomilter.FamilyInet, 4025, "198.51.100.7"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Helo("client.example"); err != nil {
		t.Fatal(err)
	}
	return s
}

// mailFromReply is the daemon's reply code to a MAIL FROM whose SPF result
// is fail (joe@example.org from 198.51.100.7), or 0 when it lets it pass.
func mailFromReply(t *testing.T, s *gomilter.ClientSession) int {
	t.Helper()
	act, err := s.Mail("joe@example.org", nil)
	if err != nil {
		t.Fatal(err)
	}
	switch act.Code {
	case gomilter.ActReplyCode:
		return act.SMTPCode
	case gomilter.ActContinue:
		return 0
	default:
		t.Fatalf("MAIL FROM answered with action %q, want a reply code or continue", act.Code)
		return -1
	}
}

// oneSession runs one transaction and returns mailFromReply's answer.
func oneSession(t *testing.T, addr string) int {
	t.Helper()
	s := milterClient(t, addr)
	defer s.Close()
	return mailFromReply(t, s)
}

// inProcess is serve running in this process.
type inProcess struct {
	cancel context.CancelFunc
	hup    chan os.Signal
	logs   *logtest.Buffer
	addr   chan net.Addr
	// done is closed when serve has returned code.
	done chan struct{}
	code int
}

func startInProcess(t *testing.T, o serveOptions) *inProcess {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &inProcess{
		cancel: cancel,
		hup:    make(chan os.Signal),
		logs:   &logtest.Buffer{},
		addr:   make(chan net.Addr, 1),
		done:   make(chan struct{}),
	}
	o.ready = func(a net.Addr) { p.addr <- a }
	if o.drainTimeout == 0 {
		o.drainTimeout = 10 * time.Second
	}
	go func() {
		p.code = serve(ctx, o, p.hup, p.logs)
		close(p.done)
	}()
	t.Cleanup(func() {
		cancel()
		p.wait(t)
	})
	return p
}

// wait waits for serve to return and gives its exit status.
func (p *inProcess) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(20 * time.Second):
		t.Fatalf("serve did not stop:\n%s", p.logs)
		return -1
	}
}

// listening waits for the daemon's address, or fails when serve exits.
func (p *inProcess) listening(t *testing.T) string {
	t.Helper()
	select {
	case a := <-p.addr:
		return a.String()
	case <-p.done:
		t.Fatalf("serve exited %d before listening:\n%s", p.code, p.logs)
	case <-time.After(20 * time.Second):
		t.Fatalf("serve did not start listening:\n%s", p.logs)
	}
	return ""
}

// waitLogs waits until a log message starting with prefix has been
// written n times.
func waitLogs(t *testing.T, logs func() string, prefix string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for countLogs(logRecords(logs()), prefix) < n {
		if time.Now().After(deadline) {
			t.Fatalf("no %d log records %q after 20s:\n%s", n, prefix, logs())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestServeConfigErrors(t *testing.T) {
	t.Parallel()
	dns := testDNS(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "never.sock")
	broken := filepath.Join(dir, "broken.yaml")
	writeFile(t, broken, serveConfig(dns, "unix:"+sock, "rejectt", "frobnicate: 1\n"))
	// A port that is taken: listening fails after the config was read.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { taken.Close() })
	busy := filepath.Join(dir, "busy.yaml")
	writeFile(t, busy, serveConfig(dns, "inet:"+taken.Addr().String(), "reject", ""))
	// The metrics port is taken: the milter's socket, open by then, is
	// closed again.
	metricsSock := filepath.Join(dir, "metrics-busy.sock")
	metricsBusy := filepath.Join(dir, "metrics-busy.yaml")
	writeFile(t, metricsBusy, serveConfig(dns, "unix:"+metricsSock, "reject", "metrics: {listen: \""+taken.Addr().String()+"\"}\n"))

	tests := []struct {
		name string
		path string
		// loaded is set when the config is good, so that the log says so
		// before the error line.
		loaded bool
		want   []string // fragments of the error line
	}{
		{"missing explicit file", filepath.Join(dir, "nope.yaml"), false, []string{"nope.yaml", "no such file"}},
		{"every problem on one line", broken, false, []string{
			`broken.yaml:8: policy.mailfrom.fail: bad value "rejectt"`,
			"; ",
			"broken.yaml:10: frobnicate",
		}},
		{"listen fails", busy, true, []string{taken.Addr().String(), "address already in use"}},
		{"metrics listen fails", metricsBusy, true, []string{"metrics listener on " + taken.Addr().String(), "address already in use"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A deadline, so that a daemon started by mistake fails the
			// test instead of hanging it.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var stderr logtest.Buffer
			started := false
			code := serve(ctx, serveOptions{
				configPath: tt.path, explicit: true, drainTimeout: time.Second,
				ready: func(net.Addr) { started = true },
			}, nil, &stderr)
			out := stderr.String()
			if code != 1 || started {
				t.Fatalf("exit %d (started %v), want 1 with nothing started; stderr:\n%s", code, started, out)
			}
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			wantLines := 1
			if tt.loaded {
				wantLines = 2 // "config loaded", then the error
			}
			errLine := lines[len(lines)-1]
			if len(lines) != wantLines || !strings.HasPrefix(errLine, "spf-milter serve: ") {
				t.Errorf("stderr is not %d lines ending in the error: %q", wantLines, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(errLine, w) {
					t.Errorf("error line lacks %q: %q", w, errLine)
				}
			}
		})
	}
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a broken config still created its socket (stat error %v)", err)
	}
	if _, err := os.Lstat(metricsSock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the milter socket is left behind after the metrics listener failed (stat error %v)", err)
	}
}

// TestServeDefaults: without a file at the default path the daemon runs on
// the built-in config, which listens on 127.0.0.1:8895, and says so.
func TestServeDefaults(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "config.yaml") // never created
	cfg, defaults, err := loadServeConfig(path, false)
	if err != nil || !defaults || cfg.Listen != "inet:127.0.0.1:8895" {
		t.Fatalf("loadServeConfig(missing default) = %+v, %v, %v; want the defaults", cfg, defaults, err)
	}
	if _, _, err := loadServeConfig(path, true); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("loadServeConfig(missing explicit) error = %v, want not-exist", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr logtest.Buffer
	exit := make(chan int, 1)
	addr := make(chan net.Addr, 1)
	go func() {
		exit <- serve(ctx, serveOptions{configPath: path, drainTimeout: time.Second,
			ready: func(a net.Addr) { addr <- a }}, nil, &stderr)
	}()
	select {
	case a := <-addr:
		if a.String() != "127.0.0.1:8895" {
			t.Errorf("listening on %v, want 127.0.0.1:8895", a)
		}
		cancel()
		if code := <-exit; code != 0 {
			t.Errorf("exit %d after the context ended, want 0", code)
		}
	case code := <-exit:
		// Something else holds the default port on this machine: the
		// daemon must then have said so, after reading the defaults.
		if code != 1 || !strings.Contains(stderr.String(), "127.0.0.1:8895") {
			t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve neither listened nor failed")
	}
	if !strings.Contains(stderr.String(), "running on the built-in defaults") {
		t.Errorf("the log does not say it runs on the defaults:\n%s", stderr.String())
	}
}

// TestServeReload drives reloads in-process: a broken file keeps the old
// policy, a good one replaces it, a changed listen address is only
// reported, and the end of the context drains and exits 0.
func TestServeReload(t *testing.T) {
	t.Parallel()
	dns := testDNS(t)
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, serveConfig(dns, "inet:127.0.0.1:0", "reject", ""))
	// A short drain: the session left open at the end is cut.
	p := startInProcess(t, serveOptions{configPath: path, explicit: true, drainTimeout: time.Second})
	addr := p.listening(t)
	logs := p.logs.String

	if got := oneSession(t, addr); got != 550 {
		t.Fatalf("first config: MAIL FROM reply %d, want 550", got)
	}

	// A session opened before a reload keeps the config it started with.
	early := milterClient(t, addr)
	defer early.Close()

	steps := []struct {
		name   string
		config string
		want   int    // reply code to the failing MAIL FROM after the reload
		log    string // the log message the reload must write
	}{
		{"broken file keeps the old config", serveConfig(dns, "inet:127.0.0.1:0", "tempfail", "frobnicate: 1\n"), 550, "reload failed; the running config is kept"},
		{"bad value keeps the old config", serveConfig(dns, "inet:127.0.0.1:0", "rejectt", ""), 550, "reload failed; the running config is kept"},
		{"good file applies", serveConfig(dns, "inet:127.0.0.1:0", "tempfail", ""), 451, "config reloaded"},
		{"changed listen is not applied", serveConfig(dns, "inet:127.0.0.1:1", "accept", ""), 0, "listen or socket_mode changed; restart spf-milter to apply it"},
	}
	for _, st := range steps {
		before := countLogs(logRecords(logs()), st.log)
		writeFile(t, path, st.config)
		p.hup <- syscall.SIGHUP
		waitLogs(t, logs, st.log, before+1)
		if got := oneSession(t, addr); got != st.want {
			t.Errorf("%s: MAIL FROM reply %d, want %d\n%s", st.name, got, st.want, logs())
		}
	}
	recs := logRecords(logs())
	if n := countLogs(recs, "config problem"); n < 2 {
		t.Errorf("the broken files' problems were not logged one by one (%d records):\n%s", n, logs())
	}
	for _, r := range recs {
		if r["msg"] == "reload failed; the running config is kept" && r["level"] != "ERROR" {
			t.Errorf("a failed reload is logged at %v, want ERROR", r["level"])
		}
	}
	if got := mailFromReply(t, early); got != 550 {
		t.Errorf("session opened under the first config: MAIL FROM reply %d, want 550", got)
	}

	p.cancel()
	if code := p.wait(t); code != 0 {
		t.Errorf("exit %d after the context ended, want 0", code)
	}
	// The session still open was closed once the drain time was over.
	if _, err := early.Mail("joe@example.org", nil); err == nil {
		t.Error("a session outlived the daemon")
	}
}

// TestServeUnixSocket: the socket gets the configured mode, serves, and is
// gone once the daemon has stopped.
func TestServeUnixSocket(t *testing.T) {
	t.Parallel()
	dns := testDNS(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "spf.sock")
	path := filepath.Join(dir, "config.yaml")
	writeFile(t, path, serveConfig(dns, "unix:"+sock, "reject", `socket_mode: "0600"`+"\n"))
	p := startInProcess(t, serveOptions{configPath: path, explicit: true})
	if addr := p.listening(t); addr != sock {
		t.Fatalf("listening on %q, want %q", addr, sock)
	}
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}
	if got := oneSession(t, sock); got != 550 {
		t.Errorf("MAIL FROM over the unix socket: reply %d, want 550", got)
	}
	p.cancel()
	if code := p.wait(t); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket still there after the daemon stopped (stat error %v)", err)
	}
}

func TestServeUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--frob"}, "flag provided but not defined: -frob"},
		{[]string{"serve", "extra"}, `unexpected argument "extra"`},
		{[]string{"serve", "--config", ""}, "--config needs a path"},
		{[]string{"serve", "--drain-timeout", "0s"}, "bad --drain-timeout 0s"},
		{[]string{"serve", "--io-buffer", "-1"}, "bad --io-buffer -1"},
		{[]string{"serve", "--io-buffer", "2000000"}, "bad --io-buffer 2000000"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := runCmd(tt.args...)
			if code != exitUsage || stdout != "" || !strings.Contains(stderr, tt.want) || strings.Count(stderr, "\n") != 1 {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d and one line with %q", code, stdout, stderr, exitUsage, tt.want)
			}
		})
	}
	code, stdout, _ := runCmd("serve", "-h")
	if code != 0 || !strings.Contains(stdout, "Usage: spf-milter serve") || !strings.Contains(stdout, "-drain-timeout") {
		t.Errorf("serve -h: exit %d, stdout %q", code, stdout)
	}
}

// TestServeSignals runs the real binary and signals it: SIGHUP with a
// broken file keeps the old config serving; SIGTERM stops accepting, lets
// the session in flight finish, and exits 0.
func TestServeSignals(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	dir := t.TempDir()
	dns := testDNS(t)
	path := filepath.Join(dir, "config.yaml")
	writeFile(t, path, serveConfig(dns, "inet:127.0.0.1:0", "reject", ""))

	cmd := exec.Command(bin, "serve", "--config", path, "--drain-timeout", "30s")
	stderrPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var logs logtest.Buffer
	exited := make(chan struct{})
	var exitErr error
	go func() {
		// Wait only after the pipe is drained, as os/exec requires.
		sc := bufio.NewScanner(stderrPipe)
		for sc.Scan() {
			logs.Write(append(sc.Bytes(), '\n'))
		}
		exitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	})

	waitLogs(t, logs.String, "listening on ", 1)
	var addr string
	for _, r := range logRecords(logs.String()) {
		if msg, _ := r["msg"].(string); strings.HasPrefix(msg, "listening on ") {
			addr, _ = r["addr"].(string)
		}
	}
	if got := oneSession(t, addr); got != 550 {
		t.Fatalf("MAIL FROM reply %d, want 550", got)
	}

	// SIGHUP with a broken file: the old policy keeps answering.
	writeFile(t, path, serveConfig(dns, "inet:127.0.0.1:0", "tempfail", "frobnicate: 1\n"))
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLogs(t, logs.String, "reload failed; the running config is kept", 1)
	if got := oneSession(t, addr); got != 550 {
		t.Fatalf("after a broken reload: MAIL FROM reply %d, want 550 from the old config", got)
	}

	// SIGTERM with a session in flight.
	inFlight := milterClient(t, addr)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitLogs(t, logs.String, "stopped accepting", 1)
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Error("the daemon still accepts connections after SIGTERM")
	}
	if got := mailFromReply(t, inFlight); got != 550 {
		t.Errorf("session in flight during the drain: MAIL FROM reply %d, want 550", got)
	}
	select {
	case <-exited:
		t.Fatalf("the daemon exited (%v) before its last session ended", exitErr)
	default:
	}
	if err := inFlight.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if exitErr != nil {
			t.Fatalf("exit after SIGTERM: %v, want status 0\n%s", exitErr, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the daemon did not exit after its last session ended:\n%s", logs.String())
	}
	recs := logRecords(logs.String())
	if last := recs[len(recs)-1]; last["msg"] != "stopped" {
		t.Errorf("the last log record is %v, want the final \"stopped\":\n%s", last, logs.String())
	}
}

// httpGet fetches url and returns the status and body.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 15 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// scrapeMetrics fetches /metrics from the listener at addr and returns
// each sample's value by its series as written (name{labels}).
func scrapeMetrics(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	code, body := httpGet(t, "http://"+addr+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	samples := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("bad sample line %q", line)
		}
		samples[line[:i]] = v
	}
	return samples
}

// checkSamples compares the series named in want with a scrape.
func checkSamples(t *testing.T, step string, got map[string]float64, want map[string]float64) {
	t.Helper()
	for series, v := range want {
		if g, ok := got[series]; !ok || g != v {
			t.Errorf("%s: %s = %v (present %v), want %v", step, series, g, ok, v)
		}
	}
}

// startWithMetrics starts serve in-process on the config at path, which
// must set metrics.listen, and returns it with the metrics address. The
// health check is also asked while the metrics listener is up but the
// milter is not yet: that answer is returned too.
func startWithMetrics(t *testing.T, path string) (p *inProcess, httpAddr string, early string) {
	t.Helper()
	httpAddrs := make(chan string, 1)
	var earlyCode int
	var earlyBody string
	p = startInProcess(t, serveOptions{configPath: path, explicit: true, httpReady: func(a net.Addr) {
		// Called by serve before the milter serves.
		earlyCode, earlyBody = httpGet(t, "http://"+a.String()+"/healthz")
		httpAddrs <- a.String()
	}})
	p.listening(t)
	select {
	case httpAddr = <-httpAddrs:
	default:
		t.Fatalf("the milter listens but the metrics listener was not reported:\n%s", p.logs)
	}
	return p, httpAddr, fmt.Sprintf("%d %s", earlyCode, earlyBody)
}

// TestServeMetrics runs the daemon with a metrics listener: /healthz turns
// 200 once the milter listens, a check shows in /metrics, and during the
// shutdown drain /healthz answers 503 until the listener closes.
func TestServeMetrics(t *testing.T) {
	t.Parallel()
	dns := testDNS(t)
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, serveConfig(dns, "inet:127.0.0.1:0", "reject", "metrics: {listen: \"127.0.0.1:0\"}\n"))
	p, web, early := startWithMetrics(t, path)
	addr := ""
	for _, r := range logRecords(p.logs.String()) {
		if msg, _ := r["msg"].(string); strings.HasPrefix(msg, "listening on ") {
			addr, _ = r["addr"].(string)
		}
	}

	if early != "503 not ready\n" {
		t.Errorf("/healthz before the milter listened: %q, want 503 not ready", early)
	}
	if code, body := httpGet(t, "http://"+web+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz once listening: %d %q, want 200 ok", code, body)
	}
	checkSamples(t, "before any session", scrapeMetrics(t, web), map[string]float64{
		`spf_milter_sessions_total`:                                  0,
		`spf_milter_checks_total{identity="mailfrom",result="fail"}`: 0,
		`spf_milter_dns_cache_entries`:                               0,
		// Wired to the decision log writer, which exists with no file.
		`spf_milter_decision_log_lost_total{reason="queue_full"}`:  0,
		`spf_milter_decision_log_lost_total{reason="write_error"}`: 0,
		`spf_milter_decision_log_lost_total{reason="open_error"}`:  0,
	})

	if got := oneSession(t, addr); got != 550 {
		t.Fatalf("MAIL FROM reply %d, want 550", got)
	}
	// A session kept open through the shutdown below.
	inFlight := milterClient(t, addr)
	defer inFlight.Close()
	if got := mailFromReply(t, inFlight); got != 550 {
		t.Fatalf("second session: MAIL FROM reply %d, want 550", got)
	}
	m := scrapeMetrics(t, web)
	checkSamples(t, "after two checks", m, map[string]float64{
		`spf_milter_sessions_total`:                                    2,
		`spf_milter_checks_total{identity="mailfrom",result="fail"}`:   2,
		`spf_milter_checks_total{identity="helo",result="none"}`:       2,
		`spf_milter_check_duration_seconds_count{identity="mailfrom"}`: 2,
		`spf_milter_actions_total{action="reject",rule=""}`:            2,
		`spf_milter_actions_total{action="accept",rule=""}`:            0,
		`spf_milter_dns_queries_total{outcome="noerror",type="TXT"}`:   1, // example.org, then from the cache
		`spf_milter_dns_cache_hits_total{type="TXT"}`:                  1,
		`spf_milter_dns_cache_entries`:                                 1,
		`spf_milter_config_reloads_total{result="ok"}`:                 0,
	})
	if m[`spf_milter_dns_queries_total{outcome="nxdomain",type="TXT"}`] < 2 {
		t.Errorf("the HELO names' NXDOMAIN answers were not counted: %v", m[`spf_milter_dns_queries_total{outcome="nxdomain",type="TXT"}`])
	}
	if m["process_resident_memory_bytes"] <= 0 || m["go_goroutines"] <= 0 {
		t.Errorf("no process or Go runtime metrics")
	}
	// The first session ends on the daemon's side a moment after the
	// client closed it.
	waitMetric(t, web, "spf_milter_sessions_open", "", 1)

	p.cancel()
	waitLogs(t, p.logs.String, "stopped accepting", 1)
	if code, body := httpGet(t, "http://"+web+"/healthz"); code != 503 || body != "shutting down\n" {
		t.Errorf("/healthz while draining: %d %q, want 503 shutting down", code, body)
	}
	if got := scrapeMetrics(t, web)["spf_milter_sessions_open"]; got != 1 {
		t.Errorf("while draining: %v sessions open, want 1", got)
	}
	if err := inFlight.Close(); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
	if c, err := net.Dial("tcp", web); err == nil {
		c.Close()
		t.Error("the metrics listener still accepts after the daemon stopped")
	}
}

// TestServeReloadKeepsCache: a reload that leaves the dns settings alone
// keeps the resolver and its cache; one that changes them starts a new,
// empty one. Reloads are counted, and a changed metrics.listen is only
// reported.
func TestServeReloadKeepsCache(t *testing.T) {
	t.Parallel()
	dns := testDNS(t)
	path := filepath.Join(t.TempDir(), "config.yaml")
	metricsKey := "metrics: {listen: \"127.0.0.1:0\"}\n"
	writeFile(t, path, serveConfig(dns, "inet:127.0.0.1:0", "reject", metricsKey))
	p, web, _ := startWithMetrics(t, path)
	addr := ""
	for _, r := range logRecords(p.logs.String()) {
		if msg, _ := r["msg"].(string); strings.HasPrefix(msg, "listening on ") {
			addr, _ = r["addr"].(string)
		}
	}
	logs := p.logs.String
	if got := oneSession(t, addr); got != 550 {
		t.Fatalf("MAIL FROM reply %d, want 550", got)
	}
	const noerror = `spf_milter_dns_queries_total{outcome="noerror",type="TXT"}`
	checkSamples(t, "first check", scrapeMetrics(t, web), map[string]float64{noerror: 1, `spf_milter_dns_cache_entries`: 1})

	steps := []struct {
		name   string
		config string
		log    string // the log message the reload must write
		reply  int    // to the failing MAIL FROM after the reload
		// the metrics right after the reload, and after one more session
		after, then map[string]float64
	}{
		{
			name:   "new policy, same DNS",
			config: serveConfig(dns, "inet:127.0.0.1:0", "tempfail", metricsKey),
			log:    "DNS settings unchanged; the resolver and its cache are kept",
			reply:  451,
			after:  map[string]float64{`spf_milter_dns_cache_entries`: 1, `spf_milter_config_reloads_total{result="ok"}`: 1},
			then:   map[string]float64{noerror: 1, `spf_milter_dns_cache_hits_total{type="TXT"}`: 1},
		},
		{
			name:   "broken file",
			config: serveConfig(dns, "inet:127.0.0.1:0", "reject", metricsKey+"frobnicate: 1\n"),
			log:    "reload failed; the running config is kept",
			reply:  451,
			after:  map[string]float64{`spf_milter_dns_cache_entries`: 1, `spf_milter_config_reloads_total{result="failed"}`: 1},
			then:   map[string]float64{noerror: 1, `spf_milter_dns_cache_hits_total{type="TXT"}`: 2},
		},
		{
			name:   "new DNS timeout",
			config: strings.Replace(serveConfig(dns, "inet:127.0.0.1:0", "reject", metricsKey), "timeout: 2s", "timeout: 3s", 1),
			log:    "DNS settings changed; a new resolver starts with an empty cache",
			reply:  550,
			after:  map[string]float64{`spf_milter_dns_cache_entries`: 0, `spf_milter_config_reloads_total{result="ok"}`: 2},
			then:   map[string]float64{noerror: 2, `spf_milter_dns_cache_entries`: 1, `spf_milter_dns_cache_hits_total{type="TXT"}`: 2},
		},
		{
			name:   "cache turned off",
			config: strings.Replace(serveConfig(dns, "inet:127.0.0.1:0", "reject", metricsKey), "check_timeout: 5s", "check_timeout: 5s\n  cache_size: 0", 1),
			log:    "DNS settings changed; a new resolver starts with an empty cache",
			reply:  550,
			after:  map[string]float64{`spf_milter_dns_cache_entries`: 0},
			then:   map[string]float64{noerror: 3, `spf_milter_dns_cache_entries`: 0},
		},
		{
			name:   "metrics.listen changed",
			config: serveConfig(dns, "inet:127.0.0.1:0", "reject", "metrics: {listen: \"127.0.0.1:1\"}\n"),
			log:    "metrics.listen changed; restart spf-milter to apply it",
			reply:  550,
			after:  map[string]float64{`spf_milter_config_reloads_total{result="ok"}`: 4},
		},
	}
	for _, st := range steps {
		before := countLogs(logRecords(logs()), st.log)
		writeFile(t, path, st.config)
		p.hup <- syscall.SIGHUP
		waitLogs(t, logs, st.log, before+1)
		// The reload is counted after its log lines: wait for the count.
		waitMetric(t, web, `spf_milter_config_reloads_total{result="ok"}`, `spf_milter_config_reloads_total{result="failed"}`, countReloads(logs()))
		checkSamples(t, st.name+", after the reload", scrapeMetrics(t, web), st.after)
		if got := oneSession(t, addr); got != st.reply {
			t.Errorf("%s: MAIL FROM reply %d, want %d", st.name, got, st.reply)
		}
		checkSamples(t, st.name+", after a session", scrapeMetrics(t, web), st.then)
	}
}

// countReloads counts the reloads the log reports as done or failed.
func countReloads(logs string) int {
	recs := logRecords(logs)
	return countLogs(recs, "config reloaded") + countLogs(recs, "reload failed; the running config is kept")
}

// waitMetric waits until the two series add up to n.
func waitMetric(t *testing.T, web, a, b string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		m := scrapeMetrics(t, web)
		if int(m[a]+m[b]) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s + %s = %v, want %d", a, b, m[a]+m[b], n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
