package why

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/html"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/internal/dnstest"
	"github.com/spf-milter/spf-milter/internal/htmltest"
	"github.com/spf-milter/spf-milter/policy"
	"github.com/spf-milter/spf-milter/spf"
)

// testZone is the DNS data of the page tests: a domain for each result and
// for each kind of broken record.
func testZone(t *testing.T) *dnstest.Zone {
	t.Helper()
	z := dnstest.NewZone()
	z.AddTXT("topel.com", "v=spf1 mx include:_spf.topel.com ip4:192.0.2.0/24 -all")
	z.AddTXT("_spf.topel.com", "v=spf1 ip4:198.51.100.0/24 ip6:2001:db8:5::/48 -all")
	if err := z.Add("topel.com. MX 10 mail.topel.com.", "mail.topel.com. A 203.0.113.25"); err != nil {
		t.Fatal(err)
	}
	z.AddTXT("soft.example", "v=spf1 a:mail.topel.com ~all")
	z.AddTXT("neutral.example", "v=spf1 ip4:10.0.0.0/8 ?all")
	z.AddTXT("open.example", "v=spf1 ip4:10.0.0.0/8")
	z.AddTXT("nospf.example", "google-site-verification=abc")
	z.AddTXT("syntax.example", "v=spf1 ip4:192.0.2.0/24 bogus:x -all")
	z.AddTXT("two.example", "v=spf1 -all")
	z.AddTXT("two.example", "v=spf1 ip4:192.0.2.0/24 -all")
	z.AddTXT("void.example", "v=spf1 a:n1.void.example a:n2.void.example a:n3.void.example -all")
	z.AddTXT("noinc.example", "v=spf1 include:nothing.example -all")
	var many []string
	for i := range 11 {
		name := fmt.Sprintf("i%d.many.example", i)
		z.AddTXT(name, fmt.Sprintf("v=spf1 ip4:10.9.9.%d -all", i))
		many = append(many, "include:"+name)
	}
	// Two character-strings, which SPF joins (RFC 7208 §3.3).
	z.AddTXT("many.example", "v=spf1 "+strings.Join(many[:6], " "), " "+strings.Join(many[6:], " ")+" -all")
	z.Rcode("broken.example", dns.RcodeServerFailure)
	z.AddTXT("redir.example", "v=spf1 ip4:192.0.2.9 redirect=_spf.provider.example")
	z.AddTXT("_spf.provider.example", "v=spf1 ip4:203.0.113.0/24 -all")
	z.AddTXT("mail.helo.example", "v=spf1 a -all")
	if err := z.Add("mail.helo.example. A 192.0.2.77"); err != nil {
		t.Fatal(err)
	}
	return z
}

// newTest returns a handler over z with options o (Checker filled in) and
// the resolver it asks, for counting queries.
func newTest(t *testing.T, z *dnstest.Zone, o Options) (*handler, *dnstest.MapResolver) {
	t.Helper()
	r := dnstest.NewMapResolver(z)
	c := &spf.Checker{Resolver: r, Receiver: "mx.test"}
	o.Checker = func() *spf.Checker { return c }
	return NewHandler(o).(*handler), r
}

// get sends a GET for target (path and query) from client (IP:port).
func get(h http.Handler, target, client string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, "http://mx.test"+target, nil)
	req.RemoteAddr = client
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// whyURL is the page's target for sender, ip and helo, encoded as a
// reply's link encodes them.
func whyURL(sender, ip, helo string) string {
	return "/why?s=" + url.QueryEscape(sender) + "&i=" + url.QueryEscape(ip) + "&h=" + url.QueryEscape(helo)
}

// TestResults checks the page for every result: the sentence, the record
// with the deciding term marked, the decision and the advice.
func TestResults(t *testing.T) {
	tests := []struct {
		name             string
		sender, ip, helo string
		verdict          string
		record           string // the text of pre#record; "" for none
		mark             string // the marked term; "" for none
		decision         []string
		advice           []string
		trace            string
	}{
		{
			name: "pass through include", sender: "joe@topel.com", ip: "198.51.100.7", helo: "mail.topel.com",
			verdict:  "The SPF record of topel.com allows 198.51.100.7 to send mail for it (pass).",
			record:   "v=spf1 mx include:_spf.topel.com ip4:192.0.2.0/24 -all",
			mark:     "include:_spf.topel.com",
			decision: []string{"The term include:_spf.topel.com in the record of topel.com matched 198.51.100.7, giving pass."},
			advice:   []string{"Nothing to change: 198.51.100.7 may send mail for topel.com."},
			trace:    "record _spf.topel.com: v=spf1 ip4:198.51.100.0/24 ip6:2001:db8:5::/48 -all",
		},
		{
			name: "fail", sender: "joe@topel.com", ip: "69.84.129.239", helo: "mail.example.net",
			verdict:  "The SPF record of topel.com does not allow 69.84.129.239 to send mail for it (fail).",
			record:   "v=spf1 mx include:_spf.topel.com ip4:192.0.2.0/24 -all",
			mark:     "-all",
			decision: []string{"The term -all in the record of topel.com matched 69.84.129.239, giving fail.", "topel.com does not designate 69.84.129.239 as a permitted sender"},
			advice: []string{
				"add ip4:69.84.129.239 to the SPF record of topel.com, before its -all term, so that it reads: v=spf1 mx include:_spf.topel.com ip4:192.0.2.0/24 ip4:69.84.129.239 -all",
				"Or send the mail through a server the record already allows: mx, include:_spf.topel.com, ip4:192.0.2.0/24.",
				"(SRS)",
			},
			trace: "term topel.com: -all (match)",
		},
		{
			name: "fail over IPv6", sender: "joe@topel.com", ip: "2001:db8:6::25", helo: "mail.example.net",
			verdict: "The SPF record of topel.com does not allow 2001:db8:6::25 to send mail for it (fail).",
			record:  "v=spf1 mx include:_spf.topel.com ip4:192.0.2.0/24 -all",
			mark:    "-all",
			advice:  []string{"add ip6:2001:db8:6::25 to the SPF record of topel.com"},
		},
		{
			name: "softfail", sender: "ann@soft.example", ip: "192.0.2.200", helo: "h.example",
			verdict:  "The SPF record of soft.example says 192.0.2.200 is probably not allowed to send mail for it (softfail).",
			record:   "v=spf1 a:mail.topel.com ~all",
			mark:     "~all",
			decision: []string{"The term ~all in the record of soft.example matched 192.0.2.200, giving softfail."},
			advice:   []string{"add ip4:192.0.2.200 to the SPF record of soft.example, before its ~all term, so that it reads: v=spf1 a:mail.topel.com ip4:192.0.2.200 ~all", "A softfail (~all)", "a:mail.topel.com"},
		},
		{
			name: "neutral by ?all", sender: "x@neutral.example", ip: "192.0.2.1", helo: "h.example",
			verdict:  "The SPF record of neutral.example neither allows nor forbids 192.0.2.1 to send mail for it (neutral).",
			record:   "v=spf1 ip4:10.0.0.0/8 ?all",
			mark:     "?all",
			decision: []string{"The term ?all in the record of neutral.example matched 192.0.2.1, giving neutral."},
			advice:   []string{"add ip4:192.0.2.1 to the SPF record of neutral.example.", "End the record with ~all or -all"},
		},
		{
			name: "neutral by default", sender: "x@open.example", ip: "192.0.2.1", helo: "h.example",
			verdict:  "(neutral).",
			record:   "v=spf1 ip4:10.0.0.0/8",
			decision: []string{"No term of the record of open.example matched 192.0.2.1, and the record has no all term: the result is neutral by default"},
			advice:   []string{"End the record with ~all or -all"},
		},
		{
			name: "none", sender: "x@nospf.example", ip: "192.0.2.1", helo: "h.example",
			verdict:  "nospf.example publishes no SPF record, so nothing says whether 192.0.2.1 may send mail for it (none).",
			decision: []string{"There is no TXT record starting with v=spf1 at nospf.example"},
			advice:   []string{"Publish an SPF record: a TXT record at nospf.example such as v=spf1 mx ip4:192.0.2.1 ~all"},
		},
		{
			name: "none for a name SPF does not check", sender: "x@localhost", ip: "192.0.2.1", helo: "h.example",
			verdict:  `"localhost" cannot be checked with SPF: not a multi-label domain name (none).`,
			decision: []string{"no DNS lookup was made"},
			advice:   []string{"fully qualified domain name"},
		},
		{
			name: "bounce checked by HELO", sender: "", ip: "192.0.2.99", helo: "mail.helo.example",
			verdict: "The SPF record of mail.helo.example does not allow 192.0.2.99 to send mail for it (fail).",
			record:  "v=spf1 a -all",
			mark:    "-all",
			advice:  []string{"add ip4:192.0.2.99 to the SPF record of mail.helo.example"},
		},
		{
			name: "permerror: syntax", sender: "x@syntax.example", ip: "192.0.2.1", helo: "h.example",
			verdict:  "The SPF record of syntax.example is broken, so it cannot say whether 192.0.2.1 may send mail for it (permerror).",
			record:   "v=spf1 ip4:192.0.2.0/24 bogus:x -all",
			mark:     "bogus:x",
			decision: []string{`The problem: SPF record of syntax.example: invalid term "bogus:x"`},
			advice:   []string{"Fix the syntax of the record: the term bogus:x is not valid."},
		},
		{
			name: "permerror: too many lookups", sender: "x@many.example", ip: "192.0.2.1", helo: "h.example",
			verdict:  "(permerror).",
			mark:     "include:i10.many.example",
			decision: []string{"The check stopped at the term include:i10.many.example in the record of many.example (permerror).", "more than 10 DNS-querying terms"},
			advice:   []string{"The record needs more than 10 DNS lookups", "flatten an include:"},
		},
		{
			name: "permerror: two records", sender: "x@two.example", ip: "192.0.2.1", helo: "h.example",
			verdict:  "(permerror).",
			decision: []string{"2 SPF records at two.example; there must be one"},
			advice:   []string{"Merge them into one record"},
		},
		{
			name: "permerror: void lookups", sender: "x@void.example", ip: "192.0.2.1", helo: "h.example",
			verdict: "(permerror).",
			mark:    "a:n3.void.example",
			advice:  []string{"void lookups"},
			trace:   "n1.void.example",
		},
		{
			name: "permerror: include without record", sender: "x@noinc.example", ip: "192.0.2.1", helo: "h.example",
			verdict: "(permerror).",
			mark:    "include:nothing.example",
			advice:  []string{"A term points to a domain that publishes no SPF record"},
		},
		{
			name: "temperror", sender: "x@broken.example", ip: "192.0.2.1", helo: "h.example",
			verdict:  "The SPF record of broken.example could not be checked because of a temporary DNS error (temperror).",
			decision: []string{"The problem: DNS failure: TXT broken.example: server answered SERVFAIL"},
			advice:   []string{"Check that every name server of the domain answers", "the sending server tries again"},
		},
		{
			name: "fail through redirect", sender: "x@redir.example", ip: "192.0.2.1", helo: "h.example",
			verdict:  "The SPF record of redir.example does not allow 192.0.2.1 to send mail for it (fail).",
			record:   "v=spf1 ip4:192.0.2.9 redirect=_spf.provider.example",
			mark:     "redirect=_spf.provider.example",
			decision: []string{"The term -all in the record of _spf.provider.example, reached through the redirect= of redir.example, matched 192.0.2.1, giving fail."},
			advice:   []string{"add ip4:192.0.2.1 to the SPF record of _spf.provider.example", "put your own terms in the record of redir.example"},
		},
	}
	z := testZone(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := newTest(t, z, Options{})
			rec := get(h, whyURL(tt.sender, tt.ip, tt.helo), "192.0.2.250:40000")
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d, want 200:\n%s", rec.Code, rec.Body)
			}
			doc := htmltest.Parse(t, rec.Body.String())
			if got := htmltest.Text(htmltest.ByID(doc, "verdict")); !strings.Contains(got, tt.verdict) {
				t.Errorf("verdict %q, want it to hold %q", got, tt.verdict)
			}
			if pre := htmltest.ByID(doc, "record"); tt.record != "" && htmltest.RawText(pre) != tt.record {
				t.Errorf("record %q, want %q", htmltest.RawText(pre), tt.record)
			}
			marks := htmltest.Elements(htmltest.ByID(doc, "records"), "mark")
			switch {
			case tt.mark == "" && len(marks) > 0 && !strings.Contains(tt.name, "redirect"):
				t.Errorf("marked %q, want nothing marked", htmltest.Text(marks[0]))
			case tt.mark != "" && (len(marks) == 0 || htmltest.Text(marks[0]) != tt.mark):
				t.Errorf("marked %d terms (first %q), want %q", len(marks), htmltest.Text(firstOrNil(marks)), tt.mark)
			}
			decision := htmltest.Text(htmltest.ByID(doc, "decision"))
			for _, want := range tt.decision {
				if !strings.Contains(decision, want) {
					t.Errorf("decision %q\nwant it to hold %q", decision, want)
				}
			}
			advice := htmltest.Text(htmltest.ByID(doc, "advice"))
			for _, want := range tt.advice {
				if !strings.Contains(advice, want) {
					t.Errorf("advice %q\nwant it to hold %q", advice, want)
				}
			}
			trace := htmltest.ByID(doc, "trace")
			if trace == nil || trace.Data != "details" || len(htmltest.Elements(trace, "summary")) != 1 {
				t.Fatalf("no folded trace (details#trace with a summary)")
			}
			if tt.trace != "" && !strings.Contains(htmltest.RawText(trace), tt.trace) {
				t.Errorf("trace %q\nwant it to hold %q", htmltest.RawText(trace), tt.trace)
			}
			if htmltest.ByID(doc, "form") == nil {
				t.Error("no form to check again")
			}
		})
	}
}

func firstOrNil(ns []*html.Node) *html.Node {
	if len(ns) == 0 {
		return nil
	}
	return ns[0]
}

// TestRedirectRecords: a decision made through redirect= shows both
// records, each with its term marked.
func TestRedirectRecords(t *testing.T) {
	h, _ := newTest(t, testZone(t), Options{})
	doc := htmltest.Parse(t, get(h, whyURL("x@redir.example", "192.0.2.1", "h.example"), "192.0.2.250:1").Body.String())
	second := htmltest.ByID(doc, "record-decided")
	if got := htmltest.RawText(second); got != "v=spf1 ip4:203.0.113.0/24 -all" {
		t.Errorf("second record %q, want the provider's", got)
	}
	if m := htmltest.Elements(second, "mark"); len(m) != 1 || htmltest.Text(m[0]) != "-all" {
		t.Errorf("second record marks %v, want -all", m)
	}
}

// hostile is what a sender, a client or a DNS zone can put on the page.
const (
	hostileScript = `<script>alert(1)</script>`
	hostileAttr   = `"><img src=x onerror=alert(2)>`
	hostileQuote  = `' onmouseover='alert(3)`
	hostileJS     = `javascript:alert(4)`
)

// TestEscaping puts hostile text into every value the page shows: the
// sender, the HELO name, the record, an exp= explanation, a PTR name and
// the form. Parsed as a browser would, the page must hold no script, no
// event handler, no link or resource, and show the text as text.
func TestEscaping(t *testing.T) {
	z := testZone(t)
	hostileAll := hostileScript + " " + hostileAttr + " " + hostileQuote + " " + hostileJS
	z.AddTXT("evil.example", "v=spf1 ptr:evil.example include:"+hostileScript+" -all exp=exp.evil.example")
	z.AddTXT("exp.evil.example", hostileAll)
	z.AddTXT("exp2.example", "v=spf1 -all exp=exp.evil.example")
	z.AddTXT("rec.example", "v=spf1 a:"+hostileAttr+" "+hostileJS+" -all")
	if err := z.Add(`1.2.0.192.in-addr.arpa. PTR x<b>onload=alert.5</b>.evil.example.`,
		`x<b>onload=alert.5</b>.evil.example. A 192.0.2.1`); err != nil {
		t.Fatal(err)
	}
	z.AddTXT("ptr.example", "v=spf1 ptr:evil.example -all")
	cases := []struct{ name, sender, ip, helo, want string }{
		{"sender", hostileScript + "@" + hostileAttr + ".example", "192.0.2.1", hostileQuote, hostileScript},
		{"HELO with a bounce", "", "192.0.2.1", hostileAll, hostileAttr},
		{"record with a syntax error", "x@evil.example", "192.0.2.1", "h.example", hostileScript},
		{"record", "x@rec.example", "192.0.2.1", "h.example", hostileJS},
		{"exp text", "x@exp2.example", "192.0.2.1", hostileJS, hostileAll},
		{"PTR name", "x@ptr.example", "192.0.2.1", "h.example", "x<b>onload=alert.5</b>.evil.example"},
		{"control characters", "a\x1b[31m\u202e@x.example", "192.0.2.1", "h\x00", ""},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := newTest(t, z, Options{})
			rec := get(h, whyURL(tt.sender, tt.ip, tt.helo), "192.0.2.250:1")
			body := rec.Body.String()
			htmltest.CheckInertPage(t, body)
			if tt.want != "" && !strings.Contains(htmltest.Text(htmltest.Parse(t, body)), tt.want) {
				t.Errorf("the page does not show %q as text:\n%s", tt.want, body)
			}
			if strings.ContainsAny(body, "\x00\x1b\u202e") {
				t.Errorf("the page holds a control or bidi character:\n%q", body)
			}
		})
	}
	// The 400 page repeats the values in its form.
	h, _ := newTest(t, z, Options{})
	rec := get(h, "/why?s="+url.QueryEscape(hostileAll)+"&h="+url.QueryEscape(hostileAttr)+"&i="+url.QueryEscape(hostileScript), "192.0.2.250:1")
	if rec.Code != http.StatusBadRequest {
		t.Fatalf("status %d, want 400", rec.Code)
	}
	htmltest.CheckInertPage(t, rec.Body.String())
	for _, in := range htmltest.Elements(htmltest.Parse(t, rec.Body.String()), "input") {
		for _, a := range in.Attr {
			if a.Key == "value" && a.Val != "" && a.Val != hostileAll && a.Val != hostileAttr && a.Val != hostileScript {
				t.Errorf("input value %q is not the value given", a.Val)
			}
		}
	}
}

// TestHeaders checks the security headers and that the CSP's hash is that
// of the page's style.
func TestHeaders(t *testing.T) {
	clk := &clock{now: time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)}
	h, _ := newTest(t, testZone(t), Options{Now: clk.Now})
	for _, target := range []string{whyURL("joe@topel.com", "192.0.2.1", "h.example"), "/why?i=x"} {
		rec := get(h, target, "192.0.2.250:1")
		hdr := rec.Header()
		style := htmltest.Elements(htmltest.Parse(t, rec.Body.String()), "style")
		if len(style) != 1 {
			t.Fatalf("%s: %d style elements", target, len(style))
		}
		sum := sha256.Sum256([]byte(htmltest.RawText(style[0])))
		wantCSP := "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) +
			"'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
		for k, want := range map[string]string{
			"Content-Security-Policy": wantCSP,
			"X-Content-Type-Options":  "nosniff",
			"Referrer-Policy":         "no-referrer",
			"X-Frame-Options":         "DENY",
			"Content-Type":            "text/html; charset=utf-8",
		} {
			if got := hdr.Get(k); got != want {
				t.Errorf("%s: %s: %q, want %q", target, k, got, want)
			}
		}
	}
	if got := get(h, whyURL("joe@topel.com", "192.0.2.1", "h.example"), "192.0.2.250:1").Header().Get("Cache-Control"); got != "public, max-age=60" {
		t.Errorf("Cache-Control of a result %q, want public, max-age=60", got)
	}
	if got := get(h, "/why?i=x", "192.0.2.250:1").Header().Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control of an error %q, want no-store", got)
	}
}

// TestRequests checks the answers to requests that are not a check.
func TestRequests(t *testing.T) {
	long := strings.Repeat("a", MaxQuery)
	tests := []struct {
		name, method, target string
		code                 int
		problem              string
	}{
		{"POST", http.MethodPost, whyURL("joe@topel.com", "192.0.2.1", "h"), http.StatusMethodNotAllowed, ""},
		{"PUT", http.MethodPut, whyURL("joe@topel.com", "192.0.2.1", "h"), http.StatusMethodNotAllowed, ""},
		{"DELETE", http.MethodDelete, whyURL("joe@topel.com", "192.0.2.1", "h"), http.StatusMethodNotAllowed, ""},
		{"query too long", http.MethodGet, "/why?s=" + long + "&i=192.0.2.1", http.StatusRequestURITooLong, ""},
		{"no query", http.MethodGet, "/why", http.StatusBadRequest, "Give the sender, the IP address and the HELO name"},
		{"no IP", http.MethodGet, "/why?s=joe@topel.com", http.StatusBadRequest, "The IP address (i) is missing."},
		{"bad IP", http.MethodGet, "/why?s=joe@topel.com&i=300.1.1.1", http.StatusBadRequest, "not an IPv4 or IPv6 address"},
		{"IP with a zone", http.MethodGet, "/why?s=joe@topel.com&i=fe80::1%25eth0", http.StatusBadRequest, "not an IPv4 or IPv6 address"},
		{"IP and nothing else", http.MethodGet, "/why?i=192.0.2.1", http.StatusBadRequest, "Give the sender address (s), or the HELO name (h)"},
		{"bad escape", http.MethodGet, "/why?s=%zz&i=192.0.2.1", http.StatusBadRequest, "not well formed"},
		{"sender too long", http.MethodGet, "/why?i=192.0.2.1&s=" + strings.Repeat("a", maxSender+1), http.StatusBadRequest, "longer than 320"},
		{"HELO too long", http.MethodGet, "/why?i=192.0.2.1&h=" + strings.Repeat("a", maxHELO+1), http.StatusBadRequest, "longer than 255"},
		{"NUL", http.MethodGet, "/why?i=192.0.2.1&s=a%00@topel.com", http.StatusBadRequest, "NUL"},
		{"unknown parameters ignored", http.MethodGet, whyURL("joe@topel.com", "192.0.2.1", "h") + "&x=1&receiver=y", http.StatusOK, ""},
		{"IPv4-mapped IPv6", http.MethodGet, whyURL("joe@topel.com", "::ffff:192.0.2.1", "h"), http.StatusOK, ""},
		{"dotted-nibble IPv6 of %{i}", http.MethodGet,
			whyURL("joe@topel.com", "2.0.0.1.0.d.b.8.0.0.0.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1", "h"), http.StatusOK, ""},
		{"IP in brackets", http.MethodGet, whyURL("joe@topel.com", "[2001:db8::1]", "h"), http.StatusOK, ""},
	}
	z := testZone(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, r := newTest(t, z, Options{})
			req := httptest.NewRequest(tt.method, "http://mx.test"+tt.target, nil)
			req.RemoteAddr = "192.0.2.250:1"
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.code {
				t.Fatalf("status %d, want %d:\n%s", rec.Code, tt.code, rec.Body)
			}
			if tt.code == http.StatusMethodNotAllowed && rec.Header().Get("Allow") != "GET, HEAD" {
				t.Errorf("Allow: %q", rec.Header().Get("Allow"))
			}
			if tt.code != http.StatusOK && len(r.Queries()) != 0 {
				t.Errorf("%d DNS queries for a refused request", len(r.Queries()))
			}
			if tt.problem != "" {
				if got := htmltest.Text(htmltest.ByID(htmltest.Parse(t, rec.Body.String()), "problem")); !strings.Contains(got, tt.problem) {
					t.Errorf("problem %q, want it to hold %q", got, tt.problem)
				}
				htmltest.CheckInertPage(t, rec.Body.String())
			}
		})
	}
}

// TestParseIP checks the address forms the page reads.
func TestParseIP(t *testing.T) {
	tests := []struct{ in, want string }{
		{"192.0.2.1", "192.0.2.1"},
		{" 192.0.2.1 ", "192.0.2.1"},
		{"::ffff:192.0.2.1", "192.0.2.1"},
		{"2001:db8::1", "2001:db8::1"},
		{"[2001:db8::1]", "2001:db8::1"},
		{"2.0.0.1.0.D.B.8.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1", "2001:db8::1"},
		{"2.0.0.1.0.d.b.8.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0", ""},
		{"2.0.0.1.0.d.b.8.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.g", ""},
		{"2.0.0.1.0.d.b.8.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.10", ""},
		{"fe80::1%eth0", ""},
		{"192.0.2.1/24", ""},
		{"", ""},
		{"example.com", ""},
	}
	for _, tt := range tests {
		ip, ok := parseIP(tt.in)
		got := ""
		if ok {
			got = ip.String()
		}
		if got != tt.want {
			t.Errorf("parseIP(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestHEAD goes through a real server: HEAD gets the headers of the page
// and no body.
func TestHEAD(t *testing.T) {
	h, _ := newTest(t, testZone(t), Options{})
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := srv.Client().Head(srv.URL + whyURL("joe@topel.com", "192.0.2.1", "h.example"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength <= 0 || resp.Header.Get("Content-Security-Policy") == "" {
		t.Errorf("HEAD: %d, length %d, headers %v", resp.StatusCode, resp.ContentLength, resp.Header)
	}
}

// clock is a settable clock for the limits tests.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// TestRateLimit: one client gets Rate requests, then 429 until its bucket
// refills, while other clients are served; an IPv6 /64 is one client.
func TestRateLimit(t *testing.T) {
	clk := &clock{now: time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)}
	h, _ := newTest(t, testZone(t), Options{Rate: 3, Now: clk.Now})
	target := whyURL("joe@topel.com", "192.0.2.1", "h.example")
	for i := range 3 {
		if rec := get(h, target, "203.0.113.9:1000"); rec.Code != http.StatusOK {
			t.Fatalf("request %d: status %d, want 200", i+1, rec.Code)
		}
	}
	rec := get(h, target, "203.0.113.9:1001")
	if rec.Code != http.StatusTooManyRequests {
		t.Fatalf("request 4: status %d, want 429", rec.Code)
	}
	if ra := rec.Header().Get("Retry-After"); ra != "21" {
		t.Errorf("Retry-After %q, want 21 (one token a 20s)", ra)
	}
	if rec := get(h, target, "203.0.113.10:1000"); rec.Code != http.StatusOK {
		t.Errorf("another client: status %d, want 200", rec.Code)
	}
	clk.advance(20 * time.Second)
	if rec := get(h, target, "203.0.113.9:1000"); rec.Code != http.StatusOK {
		t.Errorf("after 20s: status %d, want 200", rec.Code)
	}
	if rec := get(h, target, "203.0.113.9:1000"); rec.Code != http.StatusTooManyRequests {
		t.Errorf("again after 20s: status %d, want 429", rec.Code)
	}
	// Every request counts, bad ones too.
	if rec := get(h, "/why?i=bad", "203.0.113.9:1000"); rec.Code != http.StatusTooManyRequests {
		t.Errorf("a bad request over the rate: status %d, want 429", rec.Code)
	}

	for i := range 3 {
		get(h, target, fmt.Sprintf("[2001:db8:1:2::%x]:1", i+1))
	}
	if rec := get(h, target, "[2001:db8:1:2:ffff::1]:1"); rec.Code != http.StatusTooManyRequests {
		t.Errorf("4th request from one /64: status %d, want 429", rec.Code)
	}
	if rec := get(h, target, "[2001:db8:1:3::1]:1"); rec.Code != http.StatusOK {
		t.Errorf("another /64: status %d, want 200", rec.Code)
	}
	if rec := get(h, target, "[::ffff:203.0.113.10]:1"); rec.Code != http.StatusOK {
		t.Errorf("203.0.113.10 as a mapped address: status %d, want 200 (its second request)", rec.Code)
	}
}

// TestRateLimiterBounded: many clients cost memory only up to the bound.
func TestRateLimiterBounded(t *testing.T) {
	h, _ := newTest(t, testZone(t), Options{Clients: 50, Rate: 1})
	for i := range 1000 {
		get(h, "/why?i=bad", fmt.Sprintf("10.%d.%d.1:1", i/256, i%256))
	}
	if n := h.limiter.len(); n != 50 {
		t.Errorf("the limiter remembers %d clients, want 50", n)
	}
	// The most recent clients are the ones remembered.
	if rec := get(h, "/why?i=bad", "10.3.231.1:1"); rec.Code != http.StatusTooManyRequests {
		t.Errorf("a client just seen: status %d, want 429", rec.Code)
	}
}

// blockingResolver holds every TXT lookup until release is closed, and
// says on entered when one starts.
type blockingResolver struct {
	spf.Resolver
	entered chan string
	release chan struct{}
}

func (b *blockingResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	b.entered <- name
	select {
	case <-b.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return b.Resolver.LookupTXT(ctx, name)
}

// TestConcurrencyBound: with Concurrent checks blocked in DNS, the next
// request is answered 503 at once; once they finish, checks run again.
func TestConcurrencyBound(t *testing.T) {
	br := &blockingResolver{Resolver: dnstest.NewMapResolver(testZone(t)), entered: make(chan string, 10), release: make(chan struct{})}
	c := &spf.Checker{Resolver: br, Sequential: true}
	h := NewHandler(Options{Checker: func() *spf.Checker { return c }, Concurrent: 2})
	var wg sync.WaitGroup
	codes := make([]int, 2)
	for i, s := range []string{"a@topel.com", "b@topel.com"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = get(h, whyURL(s, "192.0.2.1", "h.example"), fmt.Sprintf("198.51.100.%d:1", i+1)).Code
		}()
	}
	for range 2 {
		select {
		case <-br.entered:
		case <-time.After(10 * time.Second):
			t.Fatal("the checks did not start")
		}
	}
	rec := get(h, whyURL("c@topel.com", "192.0.2.1", "h.example"), "198.51.100.3:1")
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Errorf("third check: status %d, Retry-After %q; want 503 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
	}
	close(br.release)
	wg.Wait()
	if codes[0] != http.StatusOK || codes[1] != http.StatusOK {
		t.Errorf("the blocked checks ended with %v, want 200s", codes)
	}
	if rec := get(h, whyURL("c@topel.com", "192.0.2.1", "h.example"), "198.51.100.3:1"); rec.Code != http.StatusOK {
		t.Errorf("after the others finished: status %d, want 200", rec.Code)
	}
}

// TestCache: an identical request (up to case and spelling) is answered
// without DNS within the TTL, and checked again after it.
func TestCache(t *testing.T) {
	clk := &clock{now: time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)}
	h, r := newTest(t, testZone(t), Options{Now: clk.Now, CacheTTL: time.Minute, CacheSize: 5})
	first := get(h, whyURL("joe@topel.com", "69.84.129.239", "mail.example.net"), "192.0.2.250:1")
	n := len(r.Queries())
	if n == 0 {
		t.Fatal("the first check made no DNS query")
	}
	clk.advance(59 * time.Second)
	for _, target := range []string{
		whyURL("joe@topel.com", "69.84.129.239", "mail.example.net"),
		whyURL(" <joe@TOPEL.com.> ", " 69.84.129.239", "MAIL.example.net."),
		whyURL("joe@topel.com", "::ffff:69.84.129.239", "mail.example.net") + "&x=y",
	} {
		rec := get(h, target, "192.0.2.251:1")
		if got := len(r.Queries()); got != n {
			t.Errorf("%s: %d more DNS queries within the TTL", target, got-n)
		}
		if rec.Body.String() != first.Body.String() {
			t.Errorf("%s: the cached answer differs", target)
		}
		if cc := rec.Header().Get("Cache-Control"); cc != "public, max-age=1" {
			t.Errorf("Cache-Control %q, want what is left of the TTL", cc)
		}
	}
	// The local part is not normalised: macros can see its case.
	get(h, whyURL("Joe@topel.com", "69.84.129.239", "mail.example.net"), "192.0.2.250:1")
	if got := len(r.Queries()); got == n {
		t.Error("another local part was answered from the cache")
	}
	n = len(r.Queries())
	clk.advance(time.Second)
	get(h, whyURL("joe@topel.com", "69.84.129.239", "mail.example.net"), "192.0.2.250:1")
	if got := len(r.Queries()); got == n {
		t.Error("no DNS query after the TTL")
	}
	for i := range 10 {
		get(h, whyURL(fmt.Sprintf("u%d@topel.com", i), "192.0.2.1", "h.example"), "192.0.2.252:1")
	}
	if got := h.cache.len(); got != 5 {
		t.Errorf("%d answers cached, want the bound of 5", got)
	}
}

// TestCacheOff: a negative CacheTTL checks every time.
func TestCacheOff(t *testing.T) {
	h, r := newTest(t, testZone(t), Options{CacheTTL: -1})
	target := whyURL("joe@topel.com", "69.84.129.239", "mail.example.net")
	get(h, target, "192.0.2.250:1")
	n := len(r.Queries())
	rec := get(h, target, "192.0.2.250:1")
	if len(r.Queries()) != 2*n {
		t.Errorf("%d queries after two checks, want %d", len(r.Queries()), 2*n)
	}
	if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q without a cache, want no-store", cc)
	}
	if h.cache.len() != 0 {
		t.Errorf("%d answers kept with the cache off", h.cache.len())
	}
}

// TestClientGone: a check cut short by the client leaving is neither
// answered nor cached.
func TestClientGone(t *testing.T) {
	h, _ := newTest(t, testZone(t), Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := httptest.NewRequest(http.MethodGet, "http://mx.test"+whyURL("joe@topel.com", "192.0.2.1", "h.example"), nil).WithContext(ctx)
	req.RemoteAddr = "192.0.2.250:1"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Body.Len() != 0 || h.cache.len() != 0 {
		t.Errorf("answered %d bytes, cached %d answers; want neither", rec.Body.Len(), h.cache.len())
	}
	if len(h.slots) != 0 {
		t.Errorf("%d check slots still taken", len(h.slots))
	}
}

// TestCurrentChecker: each live check asks Options.Checker, so that a
// daemon's reload applies to the next check.
func TestCurrentChecker(t *testing.T) {
	z1, z2 := dnstest.NewZone(), dnstest.NewZone()
	z1.AddTXT("topel.com", "v=spf1 -all")
	z2.AddTXT("topel.com", "v=spf1 +all")
	var mu sync.Mutex
	cur := &spf.Checker{Resolver: dnstest.NewMapResolver(z1)}
	h := NewHandler(Options{CacheTTL: -1, Checker: func() *spf.Checker {
		mu.Lock()
		defer mu.Unlock()
		return cur
	}})
	target := whyURL("joe@topel.com", "192.0.2.1", "h.example")
	if v := htmltest.Text(htmltest.ByID(htmltest.Parse(t, get(h, target, "192.0.2.250:1").Body.String()), "verdict")); !strings.Contains(v, "(fail)") {
		t.Errorf("first checker: %q", v)
	}
	mu.Lock()
	cur = &spf.Checker{Resolver: dnstest.NewMapResolver(z2)}
	mu.Unlock()
	if v := htmltest.Text(htmltest.ByID(htmltest.Parse(t, get(h, target, "192.0.2.250:1").Body.String()), "verdict")); !strings.Contains(v, "(pass)") {
		t.Errorf("second checker: %q", v)
	}
}

// TestHELOIdentity checks that, given a sender and a HELO name, the page
// explains the check the receiving server decides by: a refusal for the
// HELO name is explained as such, not by a MAIL FROM pass.
func TestHELOIdentity(t *testing.T) {
	// heloWins is a receiver's own policy under which the HELO check
	// decides here: it quarantines on a HELO pass, which outranks the
	// MAIL FROM neutral it is tested with.
	heloWins := func(c *config.Config) { c.Policy.HELO[spf.Pass] = config.Quarantine }
	tests := []struct {
		name             string
		configure        func(*config.Config)
		sender, ip, helo string
		// verdict is the start of the verdict; explained the "Explained
		// here" entry, "" when there must be none.
		verdict, explained string
	}{
		{name: "HELO fail, MAIL FROM pass: the HELO name decides", sender: "joe@topel.com", ip: "198.51.100.7", helo: "mail.helo.example",
			verdict:   "The SPF record of mail.helo.example does not allow 198.51.100.7",
			explained: "the HELO name, whose result the receiving server decides by; the MAIL FROM address (topel.com) gave pass"},
		{name: "both fail: MAIL FROM decides the tie", sender: "joe@topel.com", ip: "69.84.129.239", helo: "mail.helo.example",
			verdict:   "The SPF record of topel.com does not allow 69.84.129.239",
			explained: "the MAIL FROM address, whose result the receiving server decides by; the HELO name (mail.helo.example) gave fail"},
		{name: "HELO pass, MAIL FROM neutral", sender: "joe@neutral.example", ip: "192.0.2.77", helo: "mail.helo.example",
			verdict:   "The SPF record of neutral.example neither allows nor forbids 192.0.2.77",
			explained: "the MAIL FROM address, whose result the receiving server decides by; the HELO name (mail.helo.example) gave pass"},
		{name: "a receiver's own policy", configure: heloWins, sender: "joe@neutral.example", ip: "192.0.2.77", helo: "mail.helo.example",
			verdict:   "The SPF record of mail.helo.example allows 192.0.2.77",
			explained: "the HELO name, whose result the receiving server decides by; the MAIL FROM address (neutral.example) gave neutral"},
		{name: "no HELO name given", sender: "joe@topel.com", ip: "198.51.100.7", helo: "",
			verdict: "The SPF record of topel.com allows 198.51.100.7"},
		{name: "a bounce: the one check is the HELO name's", configure: heloWins, sender: "", ip: "198.51.100.7", helo: "mail.helo.example",
			verdict: "The SPF record of mail.helo.example does not allow 198.51.100.7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := Options{CacheTTL: -1}
			if tt.configure != nil {
				cfg := config.Default()
				tt.configure(cfg)
				pol := policy.New(cfg)
				o.Policy = func() *policy.Policy { return pol }
			}
			h, _ := newTest(t, testZone(t), o)
			rec := get(h, whyURL(tt.sender, tt.ip, tt.helo), "192.0.2.250:1")
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			doc := htmltest.Parse(t, rec.Body.String())
			if v := htmltest.Text(htmltest.ByID(doc, "verdict")); !strings.HasPrefix(v, tt.verdict) {
				t.Errorf("verdict %q, want it to start with %q", v, tt.verdict)
			}
			explained := ""
			for _, dt := range htmltest.Elements(htmltest.ByID(doc, "checked"), "dt") {
				if htmltest.Text(dt) == "Explained here" {
					for dd := dt.NextSibling; dd != nil; dd = dd.NextSibling {
						if dd.Type == html.ElementNode {
							explained = htmltest.Text(dd)
							break
						}
					}
				}
			}
			if explained != tt.explained {
				t.Errorf("Explained here: %q\nwant %q", explained, tt.explained)
			}
		})
	}
}
