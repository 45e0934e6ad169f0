package why

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf-milter/spf-milter/spf"
)

// pageCSS is the page's only style, inline so that the page loads nothing
// else; the Content-Security-Policy allows exactly this text by its hash.
const pageCSS = `body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;line-height:1.5;max-width:52rem;margin:1rem auto;padding:0 1rem;color:#1d1d1d;background:#fff}` +
	`h1{font-size:1.5rem;margin-bottom:.5rem}h2{font-size:1.15rem;margin:1.5rem 0 .5rem}` +
	`.verdict{font-size:1.15rem;padding:.75rem 1rem;border-left:.4rem solid #777;background:#f3f3f3}` +
	`.result-pass{border-color:#2e7d32}.result-fail,.result-permerror{border-color:#c62828}` +
	`.result-softfail,.result-temperror{border-color:#ef6c00}.result-neutral,.result-none{border-color:#607d8b}` +
	`pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f3f3f3;padding:.5rem .75rem;margin:.25rem 0}` +
	`mark{background:#ffd54f;font-weight:bold;padding:0 .1rem}` +
	`code{background:#f3f3f3;padding:0 .2rem;overflow-wrap:anywhere}` +
	`dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem}dt{font-weight:bold}dd{margin:0;overflow-wrap:anywhere}` +
	`summary{cursor:pointer;font-weight:bold}` +
	`label{display:block;margin:.4rem 0}input{display:block;width:100%;max-width:32rem;font:inherit;padding:.2rem}` +
	`button{font:inherit;margin-top:.5rem}footer{margin-top:2rem;font-size:.85rem;color:#555}`

// contentSecurityPolicy forbids everything but the inline style above and
// submitting the form to this server.
var contentSecurityPolicy = func() string {
	sum := sha256.Sum256([]byte(pageCSS))
	return "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'; " +
		"form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
}()

const layout = `{{define "head"}}<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{{.}}</title>
<style>` + pageCSS + `</style>
</head>
<body>
<main>
{{end}}
{{define "segs"}}{{range .}}{{if .Code}}<code>{{.Text}}</code>{{else}}{{.Text}}{{end}}{{end}}{{end}}
{{define "form"}}<form method="get" id="form">
<h2>Check a sender</h2>
<label>Sender address (MAIL FROM), empty for a bounce<input name="s" value="{{.Sender}}" maxlength="320"></label>
<label>IP address of the sending server<input name="i" value="{{.IP}}" maxlength="100" required></label>
<label>HELO name the server gave<input name="h" value="{{.HELO}}" maxlength="255"></label>
<button type="submit">Check</button>
</form>
{{end}}
{{define "foot"}}<footer>SPF, the Sender Policy Framework, is defined in RFC 7208.</footer>
</main>
</body>
</html>
{{end}}`

const resultPage = `{{template "head" .Title}}<h1>{{.Heading}}</h1>
<p id="verdict" class="verdict result-{{.Result}}">{{.Verdict}}</p>
<dl id="checked">{{range .Checked}}
<dt>{{.Name}}</dt><dd>{{.Value}}</dd>{{end}}
</dl>
{{if .Records}}<section id="records">
<h2>The published record</h2>
{{range .Records}}<p>{{.Label}}</p>
<pre class="record" id="{{.ID}}">{{range .Parts}}{{if .Mark}}<mark>{{.Text}}</mark>{{else}}{{.Text}}{{end}}{{end}}</pre>
{{end}}</section>
{{end}}<section id="decision">
<h2>What decided</h2>
{{range .Decision}}<p>{{template "segs" .}}</p>
{{end}}{{if .SiteRule}}<p id="site-rule">A rule of the receiving site applies: {{.SiteRule}}.</p>
{{end}}{{if .ListenerUnknown}}<p id="site-listener">The receiving site also has rules that depend on which of its services took the mail (such as the submission port); this page cannot tell which, so they are not applied here.</p>
{{end}}</section>
<section id="advice">
<h2>What to change</h2>
<ul>
{{range .Advice}}<li>{{template "segs" .}}</li>
{{end}}</ul>
</section>
<details id="trace">
<summary>How the check went: {{.Steps}}, {{.Stats}}</summary>
<pre>{{range .Trace}}{{.}}
{{end}}</pre>
</details>
<p id="checked-at">Checked live at {{.CheckedAt}} by the receiving server, with its DNS resolver{{if .CacheFor}}; this answer is reused for up to {{.CacheFor}}{{end}}.</p>
{{template "form" .Form}}{{template "foot"}}`

const formPage = `{{template "head" "Check an SPF result"}}<h1>Check an SPF result</h1>
<p id="problem" class="verdict result-permerror">{{.Problem}}</p>
<p>This page checks, as the receiving mail server does, whether a server (by its IP address) may send mail
for the domain of a sender address under SPF. Give the MAIL FROM address, the IP address of the sending server
and the name it gave in HELO; with an empty sender (a bounce) the HELO name is checked.</p>
{{template "form" .Form}}{{template "foot"}}`

var (
	resultTmpl = template.Must(template.Must(template.New("layout").Parse(layout)).New("result").Parse(resultPage))
	formTmpl   = template.Must(template.Must(template.New("layout").Parse(layout)).New("form-page").Parse(formPage))
)

// fact is one line of the "what was checked" list.
type fact struct{ Name, Value string }

// part is a piece of a record, marked when it is the deciding term.
type part struct {
	Text string
	Mark bool
}

// recordView is a record to show: whose it is, and its text in parts.
type recordView struct {
	ID    string
	Label string
	Parts []part
}

type resultData struct {
	Title, Heading, Result, Verdict   string
	Checked                           []fact
	Records                           []recordView
	Decision, Advice                  []para
	Trace                             []string
	Steps, Stats, CheckedAt, CacheFor string
	SiteRule                          string
	ListenerUnknown                   bool
	Form                              formValues
}

type formData struct {
	Problem string
	Form    formValues
}

// renderResult writes the page explaining o, the outcome of q the
// receiving server decides by; other, when not nil, is the other
// identity's outcome, named in the list of what was checked.
func renderResult(w io.Writer, q query, o, other *spf.Outcome, site siteRules, form formValues, now time.Time, cacheFor time.Duration) error {
	if o == nil {
		return errors.New("no outcome")
	}
	v := newView(o)
	d := resultData{
		Title:     fmt.Sprintf("SPF %s: %s, %s", o.Result, v.domain, v.ip),
		Heading:   fmt.Sprintf("SPF check of %s for %s", v.domain, v.ip),
		Result:    string(o.Result),
		Verdict:   v.verdict(),
		Checked:   checked(q, o, other),
		Records:   records(v),
		Decision:  v.decision(),
		Advice:    v.advice(),
		Stats:     fmt.Sprintf("%s (at most 10 allowed), %d void (at most 2), %s", plural(o.DNSLookups, "DNS lookup"), o.VoidLookups, checkTime(o.Duration)),
		CheckedAt: now.UTC().Format("2006-01-02 15:04:05 UTC"),
		CacheFor:  reuseTime(cacheFor),
		Form:      form,
		// Rule names and domains come from the config and the query;
		// the template escapes them.
		SiteRule:        show(site.note),
		ListenerUnknown: site.listenerUnknown,
	}
	for _, s := range o.Trace {
		d.Trace = append(d.Trace, show(s.String()))
	}
	d.Steps = plural(len(d.Trace), "step")
	return resultTmpl.Execute(w, d)
}

// plural writes n things.
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// checkTime says how long a check took, to the millisecond.
func checkTime(d time.Duration) string {
	if d < time.Millisecond {
		return "in under 1 ms"
	}
	return fmt.Sprintf("in %d ms", d.Milliseconds())
}

// reuseTime says for how long an answer is reused, in words; "" for not
// at all.
func reuseTime(d time.Duration) string {
	switch {
	case d <= 0:
		return ""
	case d%time.Minute == 0 && d >= 2*time.Minute:
		return fmt.Sprintf("%d minutes", d/time.Minute)
	case d == time.Minute:
		return "a minute"
	case d%time.Second == 0:
		return fmt.Sprintf("%d seconds", d/time.Second)
	}
	return d.String()
}

// renderForm writes the page asking for the parameters, saying what was
// wrong with them.
func renderForm(w io.Writer, form formValues, problem string) error {
	return formTmpl.Execute(w, formData{Problem: problem, Form: form})
}

// checked lists what was checked, as the check saw it: o is the outcome
// explained, other the other identity's or nil.
func checked(q query, o, other *spf.Outcome) []fact {
	from := "<" + show(q.sender) + ">"
	if q.sender == "" {
		from = "<> (a bounce), checked as " + show(o.Sender)
	}
	helo := show(q.helo)
	if helo == "" {
		helo = "(not given)"
	}
	facts := []fact{
		{"MAIL FROM", from},
		{"Client IP", o.IP.String()},
		{"HELO", helo},
	}
	if other != nil {
		// Both identities were checked: say which one this page explains.
		name, otherName := "the MAIL FROM address", "the HELO name"
		if o.Identity == spf.IdentityHELO {
			name, otherName = otherName, name
		}
		facts = append(facts, fact{"Explained here", fmt.Sprintf("%s, whose result the receiving server decides by; %s (%s) gave %s",
			name, otherName, show(other.Domain), other.Result)})
	}
	return append(facts,
		fact{"Domain checked", show(o.Domain)},
		fact{"Result", string(o.Result)},
	)
}

// records shows the record of the checked domain and, when the decision
// came through redirect=, the record that holds the deciding term.
func records(v *view) []recordView {
	o := v.o
	if o.Record == "" {
		return nil
	}
	top := recordView{ID: "record", Label: "The SPF record of " + v.domain + ":"}
	switch {
	case v.redirected:
		top.Parts = markTerm(o.Record, func(t string) bool { return strings.HasPrefix(strings.ToLower(t), "redirect=") })
	case o.Mechanism != "" && o.Mechanism != "default":
		top.Parts = markTerm(o.Record, func(t string) bool { return t == o.Mechanism })
	default:
		bad := o.ProblemTerm
		top.Parts = markTerm(o.Record, func(t string) bool { return bad != "" && t == bad })
	}
	out := []recordView{top}
	if v.redirected && v.decidingRecord != "" {
		out = append(out, recordView{
			ID:    "record-decided",
			Label: "The SPF record of " + v.decidedIn + ", reached through redirect=, which decided:",
			Parts: markTerm(v.decidingRecord, func(t string) bool { return t == o.Mechanism }),
		})
	}
	return out
}

// markTerm splits record into its terms and the spaces between them,
// marking the first term that is. Every part is made printable.
func markTerm(record string, is func(string) bool) []part {
	var parts []part
	marked := false
	plain := ""
	for i, t := range strings.Split(record, " ") {
		if i > 0 {
			plain += " "
		}
		if !marked && t != "" && is(t) {
			if plain != "" {
				parts = append(parts, part{Text: show(plain)})
			}
			parts = append(parts, part{Text: show(t), Mark: true})
			marked, plain = true, ""
			continue
		}
		plain += t
	}
	if plain != "" {
		parts = append(parts, part{Text: show(plain)})
	}
	return parts
}

// show makes s printable: control characters, invalid UTF-8 and invisible
// formatting characters (such as bidirectional overrides, which could
// make a record read differently from what it is) are shown escaped.
// HTML escaping is the template's job.
func show(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) && r != ' ' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsPrint(r) || r == ' ':
			b.WriteRune(r)
		default:
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	return b.String()
}
