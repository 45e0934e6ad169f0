package why

import (
	"net/http"
	"net/url"
	"testing"
	"unicode/utf8"

	"github.com/spf-milter/spf-milter/internal/dnstest"
	"github.com/spf-milter/spf-milter/internal/htmltest"
	"github.com/spf-milter/spf-milter/spf"
)

// FuzzPage renders pages for arbitrary senders, HELO names, records and
// explanations: each must be an inert page (htmltest.CheckInertPage) of valid UTF-8
// without control characters, whatever the input.
func FuzzPage(f *testing.F) {
	f.Add("joe@fuzz.example", "mail.example", "v=spf1 ip4:192.0.2.0/24 -all exp=exp.fuzz.example", "not %{i}", "69.84.129.239")
	f.Add(hostileScript+"@fuzz.example", hostileAttr, "v=spf1 a:"+hostileQuote+" -all", hostileJS, "2001:db8::1")
	f.Add("", "fuzz.example", "v=spf1 \x00\x1b[31m\u202e redirect=x", "\xff\xfe", "192.0.2.1")
	f.Fuzz(func(t *testing.T, sender, helo, record, exp, ip string) {
		z := dnstest.NewZone()
		z.AddTXT("fuzz.example", chunks(record)...)
		z.AddTXT("exp.fuzz.example", chunks(exp)...)
		c := &spf.Checker{Resolver: dnstest.NewMapResolver(z)}
		h := NewHandler(Options{Checker: func() *spf.Checker { return c }, Rate: 1 << 20, CacheTTL: -1})
		target := "/why?s=" + url.QueryEscape(sender) + "&i=" + url.QueryEscape(ip) + "&h=" + url.QueryEscape(helo)
		rec := get(h, target, "192.0.2.250:1")
		switch rec.Code {
		case http.StatusOK, http.StatusBadRequest:
		case http.StatusRequestURITooLong:
			return
		default:
			t.Fatalf("status %d for %q", rec.Code, target)
		}
		body := rec.Body.String()
		if !utf8.ValidString(body) {
			t.Fatalf("the page is not UTF-8")
		}
		for _, r := range body {
			if r < 0x20 && r != '\n' || r == 0x7f || r >= 0x80 && r < 0xa0 || r == '\u202e' {
				t.Fatalf("the page holds %U", r)
			}
		}
		htmltest.CheckInertPage(t, body)
	})
}

// chunks splits s into character-strings of at most 255 octets.
func chunks(s string) []string {
	var out []string
	for len(s) > 255 {
		out = append(out, s[:255])
		s = s[255:]
	}
	return append(out, s)
}
