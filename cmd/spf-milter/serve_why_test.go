package main

import (
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
)

// TestServeWhyOnMetrics follows a refusal's link to the why page, served
// on the metrics listener by the real daemon with its resolver, and checks
// that a reload applies new page limits.
func TestServeWhyOnMetrics(t *testing.T) {
	t.Parallel()
	dns := testDNS(t)
	path := filepath.Join(t.TempDir(), "config.yaml")
	config := func(rate int) string {
		return serveConfig(dns, "inet:127.0.0.1:0", "reject",
			"metrics: {listen: \"127.0.0.1:0\"}\nwhy: {url: \"https://mx.test/why\", rate: "+strconv.Itoa(rate)+"}\n")
	}
	writeFile(t, path, config(2))
	p, web, _ := startWithMetrics(t, path)
	addr := listenAddr(t, p)

	s := milterClient(t, addr)
	defer s.Close()
	act, err := s.Mail("joe@example.org", nil)
	if err != nil {
		t.Fatal(err)
	}
	const link = "https://mx.test/why?s=joe%%40example.org&i=198.51.100.7&h=client.example"
	if act.Code != gomilter.ActReplyCode || act.SMTPCode != 550 || !strings.HasSuffix(act.SMTPText, " See "+link) {
		t.Fatalf("MAIL FROM answered %+v, want 550 ending with the link %s", act, link)
	}
	// The MTA turns %% back into %; the client follows the link.
	u, err := url.Parse(strings.ReplaceAll(link, "%%", "%"))
	if err != nil {
		t.Fatal(err)
	}
	page := "http://" + web + "/why?" + u.RawQuery
	code, body := httpGet(t, page)
	if code != http.StatusOK || !strings.Contains(body, "The SPF record of example.org does not allow 198.51.100.7 to send mail for it (fail).") ||
		!strings.Contains(body, "<mark>-all</mark>") {
		t.Fatalf("GET %s: %d\n%s", page, code, body)
	}
	resp, err := http.Post(page, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", resp.StatusCode)
	}
	if code, _ := httpGet(t, page); code != http.StatusOK {
		t.Errorf("second GET: %d, want 200", code)
	}
	if code, _ := httpGet(t, page); code != http.StatusTooManyRequests {
		t.Errorf("third GET at rate 2: %d, want 429", code)
	}

	// A reload with another rate starts a page with fresh limits.
	writeFile(t, path, config(5))
	before := countLogs(logRecords(p.logs.String()), "config reloaded")
	p.hup <- syscall.SIGHUP
	waitLogs(t, p.logs.String, "config reloaded", before+1)
	if code, _ := httpGet(t, page); code != http.StatusOK {
		t.Errorf("GET after the reload to rate 5: %d, want 200", code)
	}
	if code, _ := httpGet(t, "http://"+web+"/metrics"); code != http.StatusOK {
		t.Errorf("metrics beside the page: %d", code)
	}
}

// TestServeWhyOwnListener serves the page on why.listen, which serves
// nothing of the metrics, and closes with the daemon.
func TestServeWhyOwnListener(t *testing.T) {
	t.Parallel()
	dns := testDNS(t)
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, serveConfig(dns, "inet:127.0.0.1:0", "reject", "why: {listen: \"127.0.0.1:0\"}\n"))
	p, web := startWhyListener(t, path)
	code, body := httpGet(t, "http://"+web+"/why?s=joe%40mail.example.org&i=192.0.2.10&h=mail.example.org")
	if code != http.StatusOK || !strings.Contains(body, "allows 192.0.2.10 to send mail for it (pass).") {
		t.Errorf("GET /why: %d\n%s", code, body)
	}
	// The daemon's policy refuses a HELO fail (the default): a pass for
	// the sender with a HELO name that fails is explained by the HELO check.
	code, body = httpGet(t, "http://"+web+"/why?s=joe%40example.org&i=192.0.2.77&h=mail.example.org")
	if code != http.StatusOK || !strings.Contains(body, "The SPF record of mail.example.org does not allow 192.0.2.77 to send mail for it (fail).") ||
		!strings.Contains(body, "the MAIL FROM address (example.org) gave pass") {
		t.Errorf("GET /why for a HELO fail: %d\n%s", code, body)
	}
	if code, _ := httpGet(t, "http://"+web+"/metrics"); code != http.StatusNotFound {
		t.Errorf("GET /metrics on the why listener: %d, want 404", code)
	}
	if code, _ := httpGet(t, "http://"+web+"/why?i=192.0.2.1"); code != http.StatusBadRequest {
		t.Errorf("GET /why without a sender: %d, want 400", code)
	}
	p.cancel()
	if code := p.wait(t); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
	if c, err := net.DialTimeout("tcp", web, time.Second); err == nil {
		c.Close()
		t.Error("the why listener still accepts after the daemon stopped")
	}
}

// listenAddr is the milter's address, from the "listening on" log line.
func listenAddr(t *testing.T, p *inProcess) string {
	t.Helper()
	for _, r := range logRecords(p.logs.String()) {
		if msg, _ := r["msg"].(string); strings.HasPrefix(msg, "listening on ") {
			if a, _ := r["addr"].(string); a != "" {
				return a
			}
		}
	}
	t.Fatalf("no listening address logged:\n%s", p.logs)
	return ""
}

// TestServeWhyFollowsPolicy checks that the page explains the check the
// daemon's own policy decides by: with a HELO fail accepted, a sender's
// pass is what decides.
func TestServeWhyFollowsPolicy(t *testing.T) {
	t.Parallel()
	dns := testDNS(t)
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, `listen: inet:127.0.0.1:0
authserv_id: mx.test
dns: {servers: ["`+dns+`"], timeout: 2s, check_timeout: 5s}
policy:
  helo: {fail: accept}
log: {format: json, level: info}
why: {listen: "127.0.0.1:0"}
`)
	_, web := startWhyListener(t, path)
	code, body := httpGet(t, "http://"+web+"/why?s=joe%40example.org&i=192.0.2.77&h=mail.example.org")
	if code != http.StatusOK || !strings.Contains(body, "The SPF record of example.org allows 192.0.2.77 to send mail for it (pass).") {
		t.Errorf("GET /why: %d\n%s", code, body)
	}
}

// startWhyListener starts the daemon on the config at path, which sets
// why.listen, and returns it with the why listener's address.
func startWhyListener(t *testing.T, path string) (*inProcess, string) {
	t.Helper()
	whyAddrs := make(chan string, 1)
	p := startInProcess(t, serveOptions{configPath: path, explicit: true, whyReady: func(a net.Addr) { whyAddrs <- a.String() }})
	p.listening(t)
	select {
	case web := <-whyAddrs:
		return p, web
	default:
		t.Fatalf("the milter listens but the why listener was not reported:\n%s", p.logs)
	}
	return nil, ""
}
