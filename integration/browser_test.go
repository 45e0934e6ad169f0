package integration

import (
	"bytes"
	"context"
	"fmt"
	"image/color"
	"image/png"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
	"golang.org/x/net/html"

	"github.com/spf-milter/spf-milter/internal/dnstest"
	"github.com/spf-milter/spf-milter/internal/htmltest"
)

// hostileScript is what a hostile sender, HELO name or DNS record carries:
// run, it would change the page's title.
const hostileScript = `<script>document.title='pwned'</script>`

// Hostile input of TestWhyPageInBrowser: a sender breaking out of an
// attribute into a script, a HELO name and an IP doing the same with an
// element that runs code when it loads, and a domain whose record and
// explanation (exp=) carry both.
const (
	hostileSender = `">` + hostileScript + `@hostile.example`
	hostileHELO   = `"><svg onload="document.title='pwned'">`
	hostileIP     = `"><img src=x onerror="document.title='pwned'">`
	hostileRecord = `v=spf1 ip4:192.0.2.1 x-note=` + hostileScript + ` -all exp=explain.hostile.example`
	hostileExp    = `<img src=x onerror="document.title='pwned'"> %{s} may not send mail here`
)

// whyZone is the DNS the daemon sees in TestWhyPageInBrowser: a domain
// whose record lets the client pass through its mx term, one that fails
// it with -all, one with a typo that makes its record a permerror, and
// the hostile domain.
func whyZone(t *testing.T) *dnstest.Zone {
	t.Helper()
	z := dnstest.NewZone()
	err := z.Add(
		`example.org. TXT "v=spf1 mx ip4:198.51.100.0/28 -all"`,
		`example.org. MX 10 mail.example.org.`,
		`mail.example.org. A 192.0.2.25`,
		`example.com. TXT "v=spf1 ip4:198.51.100.0/24 include:_spf.mailhost.example -all"`,
		`_spf.mailhost.example. TXT "v=spf1 ip4:192.0.2.128/25 -all"`,
		`example.net. TXT "v=spf1 ipv4:198.51.100.20 mx -all"`,
		`example.net. MX 10 mx.example.net.`,
		`mx.example.net. A 198.51.100.20`,
	)
	if err != nil {
		t.Fatal(err)
	}
	// Raw strings: the quotes and markup go into DNS as they are.
	z.AddTXT("hostile.example", hostileRecord)
	z.AddTXT("explain.hostile.example", hostileExp)
	return z
}

// whyCase is one page loaded in the browser, and what it must show.
type whyCase struct {
	name string
	// s, i and h are the query: sender, client IP, HELO name.
	s, i, h string
	// refused is set when the milter refuses a message with that sender,
	// IP and HELO name: the page is then loaded from the link in its
	// refusal, as the sender's admin would follow it from the bounce.
	refused bool
	// form is set for a query the page cannot check: it must answer with
	// its form, the values given put back in it.
	form bool
	// result is the SPF result the page must give, domain the domain its
	// verdict names.
	result, domain string
	// record is the record the page must show, and term the deciding
	// term, the one marked in it.
	record, term string
	// advice are texts the "What to change" section must hold.
	advice []string
	// shown are texts the page must hold somewhere, as a reader sees them.
	shown []string
	// screenshot is the file under docs/ that keeps the page's
	// screenshot; "" for none.
	screenshot string
}

var whyCases = []whyCase{
	{
		name: "pass",
		s:    "alice@example.org", i: "192.0.2.25", h: "mail.example.org",
		result: "pass", domain: "example.org",
		record: "v=spf1 mx ip4:198.51.100.0/28 -all", term: "mx",
		advice:     []string{"Nothing to change"},
		screenshot: "why-pass.png",
	},
	{
		// The bounce that started the project: a server the domain does
		// not list. The advice names the term to add and the record it
		// gives.
		name: "fail",
		s:    "bob@example.com", i: "203.0.113.7", h: "smtp.example.com",
		refused: true,
		result:  "fail", domain: "example.com",
		record: "v=spf1 ip4:198.51.100.0/24 include:_spf.mailhost.example -all", term: "-all",
		advice: []string{
			"add ip4:203.0.113.7 to the SPF record of example.com",
			"v=spf1 ip4:198.51.100.0/24 include:_spf.mailhost.example ip4:203.0.113.7 -all",
			"include:_spf.mailhost.example",
		},
		screenshot: "why-fail.png",
	},
	{
		// "ipv4:" for "ip4:", a typo seen in real records.
		name: "permerror",
		s:    "carol@example.net", i: "198.51.100.20", h: "mx.example.net",
		refused: true,
		result:  "permerror", domain: "example.net",
		record: "v=spf1 ipv4:198.51.100.20 mx -all", term: "ipv4:198.51.100.20",
		advice:     []string{"the term ipv4:198.51.100.20 is not valid"},
		screenshot: "why-permerror.png",
	},
	{
		name: "hostile sender, HELO, record and explanation",
		s:    hostileSender, i: "192.0.2.99", h: hostileHELO,
		refused: true,
		result:  "fail", domain: "hostile.example",
		record: hostileRecord, term: "-all",
		advice: []string{"add ip4:192.0.2.99 to the SPF record of hostile.example"},
		shown: []string{
			hostileSender,
			hostileHELO,
			// The explanation, with %{s} expanded to the hostile sender.
			`<img src=x onerror="document.title='pwned'"> ` + hostileSender + ` may not send mail here`,
		},
	},
	{
		// An IP that does not parse gets the form back, every value in
		// its field as given.
		name: "hostile query that cannot be checked",
		s:    hostileSender, i: hostileIP, h: hostileHELO,
		form:  true,
		shown: []string{"not an IPv4 or IPv6 address"},
	},
}

// TestWhyPageInBrowser serves the why page from the daemon, with the DNS
// of whyZone, and loads it in headless Chromium for a pass, a fail, a
// permerror and hostile input, following the link in the milter's refusal
// where there is one. It checks what a reader sees in the DOM
// Chromium rendered: the verdict, the record with its deciding term
// marked, the decision, the advice and the folded trace; that markup in
// the input or in DNS is shown as text and runs nothing; and that the
// browser reported nothing, such as the page's own style being blocked by
// its Content-Security-Policy. With UPDATE_SCREENSHOTS=1 it keeps the
// screenshots of the pass, fail and permerror pages in docs/.
func TestWhyPageInBrowser(t *testing.T) {
	need(t, "chromium")
	dns := dnstest.StartServer(t, whyZone(t))
	whyAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	m := startMilter(t, fmt.Sprintf(`authserv_id: mx.example.test
dns: {servers: [%q], timeout: 3s, check_timeout: 20s}
policy:
  mailfrom: {permerror: reject}
why:
  listen: %s
  url: http://%s/why
`, dns.Addr(), whyAddr, whyAddr))
	waitListening(t, m, whyAddr)

	update := os.Getenv("UPDATE_SCREENSHOTS") == "1"
	for _, tc := range whyCases {
		t.Run(tc.name, func(t *testing.T) {
			link := "http://" + whyAddr + "/why?" + url.Values{"s": {tc.s}, "i": {tc.i}, "h": {tc.h}}.Encode()
			if tc.refused {
				link = refusalLink(t, m, whyAddr, tc)
			}
			page := loadInBrowser(t, link)
			doc := page.DOM

			if len(page.Console) > 0 {
				t.Errorf("the browser reported:\n%s", strings.Join(page.Console, "\n"))
			}
			htmltest.CheckInert(t, doc)
			if title := htmltest.Text(htmltest.First(doc, "title")); strings.Contains(title, "pwned") {
				t.Errorf("a script ran: the title is %q", title)
			}
			body := htmltest.Text(htmltest.First(doc, "body"))
			for _, s := range tc.shown {
				if !strings.Contains(body, s) {
					t.Errorf("the page does not show %q; it reads:\n%s", s, body)
				}
			}
			checkFormValues(t, doc, map[string]string{"s": tc.s, "i": tc.i, "h": tc.h})
			if tc.form {
				if htmltest.ByID(doc, "verdict") != nil || htmltest.ByID(doc, "record") != nil {
					t.Errorf("a query that cannot be checked got a result page:\n%s", body)
				}
				if htmltest.ByID(doc, "problem") == nil {
					t.Errorf("no #problem saying what is wrong with the query:\n%s", body)
				}
			} else {
				checkResultPage(t, doc, tc)
			}
			checkScreenshot(t, page.Screenshot)

			if update && tc.screenshot != "" && !t.Failed() {
				dir := filepath.Join("..", "docs")
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				path := filepath.Join(dir, tc.screenshot)
				if err := os.WriteFile(path, page.Screenshot, 0o644); err != nil {
					t.Fatal(err)
				}
				t.Logf("wrote %s", path)
			}
		})
	}
}

// reWhyLink finds the link to the why page in a refusal.
var reWhyLink = regexp.MustCompile(`\bSee (http://\S+)`)

// refusalLink plays what Postfix tells the milter of a message from tc.i
// with HELO tc.h and MAIL FROM tc.s, and returns the link to the why page
// in the milter's refusal as Postfix would send it on: with each "%%" made
// "%" again. The link must lead to whyAddr and carry the message's sender,
// IP and HELO name.
func refusalLink(t *testing.T, m *Milter, whyAddr string, tc whyCase) string {
	t.Helper()
	c := gomilter.NewClientWithOptions("tcp", m.Addr, gomilter.ClientOptions{
		Dialer:       &net.Dialer{Timeout: time.Minute},
		ReadTimeout:  time.Minute,
		WriteTimeout: time.Minute,
		// What Postfix offers, as far as go-milter's client (protocol 2)
		// goes.
		ActionMask: gomilter.OptAddHeader | gomilter.OptChangeBody | gomilter.OptAddRcpt |
			gomilter.OptRemoveRcpt | gomilter.OptChangeHeader | gomilter.OptQuarantine,
		ProtocolMask: gomilter.OptNoConnect | gomilter.OptNoHelo | gomilter.OptNoMailFrom |
			gomilter.OptNoRcptTo | gomilter.OptNoBody | gomilter.OptNoHeaders | gomilter.OptNoEOH,
	})
	s, err := c.Session()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	steps := []func() (*gomilter.Action, error){
		func() (*gomilter.Action, error) {
			if err := s.Macros(gomilter.CodeConn, "j", "mx.example.test", "{daemon_name}", "smtpd"); err != nil {
				return nil, err
			}
			return s.Conn("unknown", gomilter.FamilyInet, 40000, tc.i)
		},
		func() (*gomilter.Action, error) { return s.Helo(tc.h) },
		func() (*gomilter.Action, error) {
			if err := s.Macros(gomilter.CodeMail, "{mail_addr}", tc.s); err != nil {
				return nil, err
			}
			return s.Mail(tc.s, nil)
		},
	}
	var act *gomilter.Action
	for i, step := range steps {
		act, err = step()
		if err != nil {
			t.Fatalf("milter session, step %d: %v", i+1, err)
		}
		if i < len(steps)-1 && act.Code != gomilter.ActContinue {
			t.Fatalf("milter session, step %d: got action %q, want continue", i+1, rune(act.Code))
		}
	}
	if act.Code != gomilter.ActReplyCode || act.SMTPCode != 550 {
		t.Fatalf("MAIL FROM: got action %q %d %q, want a 550 refusal", rune(act.Code), act.SMTPCode, act.SMTPText)
	}
	reply := strings.ReplaceAll(act.SMTPText, "%%", "%")
	sub := reWhyLink.FindStringSubmatch(reply)
	if sub == nil {
		t.Fatalf("the refusal has no link to the why page: %q", reply)
	}
	u, err := url.Parse(sub[1])
	if err != nil {
		t.Fatalf("the link in the refusal %q: %v", reply, err)
	}
	q := u.Query()
	if u.Host != whyAddr || u.Path != "/why" || q.Get("s") != tc.s || q.Get("i") != tc.i || q.Get("h") != tc.h {
		t.Fatalf("the link in the refusal is %s: want http://%s/why with s=%q, i=%q and h=%q", u, whyAddr, tc.s, tc.i, tc.h)
	}
	t.Logf("refused: %d %s", act.SMTPCode, reply)
	return sub[1]
}

// checkResultPage checks what a result page tells its reader.
func checkResultPage(t *testing.T, doc *html.Node, tc whyCase) {
	t.Helper()
	title := htmltest.Text(htmltest.First(doc, "title"))
	if !strings.Contains(title, tc.result) || !strings.Contains(title, tc.domain) {
		t.Errorf("title %q: want the result %q and the domain %q in it", title, tc.result, tc.domain)
	}

	verdict := htmltest.ByID(doc, "verdict")
	if verdict == nil {
		t.Fatalf("no #verdict; the page reads:\n%s", htmltest.Text(htmltest.First(doc, "body")))
	}
	v := htmltest.Text(verdict)
	for _, want := range []string{tc.domain, tc.i, "(" + tc.result + ")"} {
		if !strings.Contains(v, want) {
			t.Errorf("verdict %q does not name %q", v, want)
		}
	}
	if !strings.HasSuffix(v, ".") || strings.Contains(v, ". ") {
		t.Errorf("verdict %q: want one sentence", v)
	}
	if class := htmltest.Attr(verdict, "class"); !strings.Contains(" "+class+" ", " result-"+tc.result+" ") {
		t.Errorf("verdict class %q: want result-%s", class, tc.result)
	}

	record := htmltest.ByID(doc, "record")
	if record == nil {
		t.Fatal("no #record")
	}
	if got := htmltest.RawText(record); got != tc.record {
		t.Errorf("record shown as %q, want %q", got, tc.record)
	}
	marks := htmltest.Elements(record, "mark")
	if len(marks) != 1 || htmltest.RawText(marks[0]) != tc.term {
		var got []string
		for _, m := range marks {
			got = append(got, htmltest.RawText(m))
		}
		t.Errorf("marked in the record: %q, want the deciding term %q alone", got, tc.term)
	}

	if d := htmltest.Text(htmltest.ByID(doc, "decision")); !strings.Contains(d, tc.term) {
		t.Errorf("#decision does not name the deciding term %q: %q", tc.term, d)
	}
	advice := htmltest.Text(htmltest.ByID(doc, "advice"))
	for _, want := range tc.advice {
		if !strings.Contains(advice, want) {
			t.Errorf("#advice does not say %q; it says:\n%s", want, advice)
		}
	}

	trace := htmltest.ByID(doc, "trace")
	switch {
	case trace == nil || trace.Data != "details":
		t.Error("no <details id=trace>")
	case htmltest.HasAttr(trace, "open"):
		t.Error("the trace is unfolded: want it folded away")
	case htmltest.First(trace, "summary") == nil || !strings.Contains(htmltest.Text(trace), tc.domain):
		t.Errorf("the trace has no summary or does not name %s: %q", tc.domain, htmltest.Text(trace))
	}
}

// checkFormValues checks that the page's form holds the values given, as
// the browser read them from the input fields: an attribute broken out of
// would cut a value short.
func checkFormValues(t *testing.T, doc *html.Node, want map[string]string) {
	t.Helper()
	form := htmltest.ByID(doc, "form")
	if form == nil {
		t.Error("no #form to check another sender")
		return
	}
	got := map[string]string{}
	for _, in := range htmltest.Elements(form, "input") {
		got[htmltest.Attr(in, "name")] = htmltest.Attr(in, "value")
	}
	for name, v := range want {
		if got[name] != v {
			t.Errorf("form field %s holds %q, want %q", name, got[name], v)
		}
	}
}

// waitListening waits until addr accepts connections, failing the test
// if m exits first or it takes more than a minute.
func waitListening(t *testing.T, m *Milter, addr string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if !m.running() || time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s: %v\nspf-milter log:\n%s", addr, err, m.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// chromiumTimeout bounds one page load, start to exit. Chromium takes a
// few seconds to start on an idle machine and much longer on a loaded
// one; the bound is only there so that a hung browser ends the test.
const chromiumTimeout = 3 * time.Minute

// Window size of the headless browser, and so of the screenshots.
const (
	browserWidth  = 1000
	browserHeight = 1280
)

// browserPage is what headless Chromium made of one URL.
type browserPage struct {
	// DOM is the document after Chromium parsed and rendered it
	// (--dump-dom), parsed again with x/net/html.
	DOM *html.Node
	// Screenshot is the PNG of the window (--screenshot).
	Screenshot []byte
	// Console holds the messages the page logged to the console, such as
	// a Content-Security-Policy violation or a failed load.
	Console []string
}

// reConsole matches a console message in Chromium's --enable-logging
// output: `[...:INFO:CONSOLE:1] "message", source: URL (1)`.
var reConsole = regexp.MustCompile(`(?m)^\[[^\]]*:CONSOLE[^\]]*\] "(.*)", source: `)

// loadInBrowser loads url in a fresh headless Chromium and returns the
// rendered DOM, a screenshot and the console messages. The profile, HOME
// and caches are in a directory of the test, so that nothing is shared
// between runs or left behind.
func loadInBrowser(t *testing.T, url string) browserPage {
	t.Helper()
	dir := workDir(t)
	shot := filepath.Join(dir, "screenshot.png")
	args := []string{
		// The new headless mode is the full browser without a window.
		"--headless=new",
		// Chromium's sandbox does not run as root, and CI runs as root.
		"--no-sandbox",
		"--disable-gpu",
		// Containers often have a small /dev/shm; Debian's wrapper
		// decides this by a check that misfires in some of them.
		"--disable-dev-shm-usage",
		"--no-first-run",
		"--no-default-browser-check",
		"--disable-background-networking",
		"--disable-component-update",
		"--disable-sync",
		"--no-proxy-server",
		"--mute-audio",
		"--hide-scrollbars",
		// Console messages (a blocked style or script) go to stderr,
		// where the test looks for them.
		"--enable-logging=stderr",
		"--v=0",
		"--user-data-dir=" + filepath.Join(dir, "profile"),
		fmt.Sprintf("--window-size=%d,%d", browserWidth, browserHeight),
		"--screenshot=" + shot,
		"--dump-dom",
		url,
	}
	ctx, cancel := context.WithTimeout(context.Background(), chromiumTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "chromium", args...)
	cmd.Env = append(os.Environ(),
		"HOME="+dir,
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"XDG_CACHE_HOME="+filepath.Join(dir, "cache"),
	)
	// Chromium starts helper processes (zygote, GPU, renderers): they go
	// in a process group of their own, so that a timeout ends them all.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start).Round(time.Millisecond)
	if err != nil {
		t.Fatalf("chromium %s: %v after %v\nstderr:\n%s", url, err, took, stderr.String())
	}
	t.Logf("chromium loaded the page in %v", took)
	dom, err := html.Parse(bytes.NewReader(stdout.Bytes()))
	if err != nil || htmltest.First(dom, "body") == nil || stdout.Len() == 0 {
		t.Fatalf("chromium %s: no DOM (%v):\n%s\nstderr:\n%s", url, err, stdout.String(), stderr.String())
	}
	png, err := os.ReadFile(shot)
	if err != nil {
		t.Fatalf("chromium %s: no screenshot: %v\nstderr:\n%s", url, err, stderr.String())
	}
	var console []string
	for _, m := range reConsole.FindAllStringSubmatch(stderr.String(), -1) {
		console = append(console, m[1])
	}
	return browserPage{DOM: dom, Screenshot: png, Console: console}
}

// checkScreenshot fails the test unless b is a PNG of the browser window
// that shows more than a blank page: a few kilobytes at least, and many
// colours (anti-aliased text alone gives dozens).
func checkScreenshot(t *testing.T, b []byte) {
	t.Helper()
	if len(b) < 4<<10 || len(b) > 8<<20 {
		t.Errorf("screenshot of %d bytes: want between 4 KiB and 8 MiB", len(b))
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	r := img.Bounds()
	if r.Dx() != browserWidth || r.Dy() != browserHeight {
		t.Errorf("screenshot is %dx%d, want the window's %dx%d", r.Dx(), r.Dy(), browserWidth, browserHeight)
	}
	colours := map[color.RGBA64]bool{}
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			colours[color.RGBA64Model.Convert(img.At(x, y)).(color.RGBA64)] = true
		}
	}
	if len(colours) < 16 {
		t.Errorf("screenshot has %d colours: the page looks blank", len(colours))
	}
}
