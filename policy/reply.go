package policy

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/spf"
)

// maxReplyText caps the text of an SMTP reply. RFC 5321 §4.5.3.1.5 allows
// 512 octets for a whole reply line; the code, the enhanced code and the
// doubling of '%' for the MTA must still fit.
const maxReplyText = 400

// Decision is what the milter does with a message after one SPF outcome.
type Decision struct {
	// Action is the action the policy names for the result, even in a dry
	// run.
	Action config.Action
	// Code and Enhanced are the SMTP reply code and RFC 3463 enhanced
	// status code of a reject or tempfail (0 and "" otherwise).
	Code     int
	Enhanced string
	// Text is the reply text of a reject or tempfail as the SMTP client
	// will read it, or the hold reason of a quarantine: one line of
	// printable ASCII.
	Text string
	// DryRun reports that the action is only logged, never applied.
	DryRun bool
	// Rule names the rule that applied to the message, "" when none;
	// ByRule tells that its overrides named the result (else the global
	// matrix decided), and RuleUntil is its until, zero for none.
	Rule      string
	ByRule    bool
	RuleUntil time.Time
}

// Reply returns the reply line handed to the MTA for a reject or tempfail,
// such as "550 5.7.23 SPF fail: ...", with every '%' of the text doubled
// because Postfix and libmilter treat a lone '%' as a format character.
// It is "" for accept and quarantine. A dry run still has its reply: it is
// what would have been sent.
func (d Decision) Reply() string {
	if d.Code == 0 {
		return ""
	}
	return fmt.Sprintf("%d %s %s", d.Code, d.Enhanced, strings.ReplaceAll(d.Text, "%", "%%"))
}

// ClientReply is the reply line as the SMTP client reads it: the MTA
// undoes the doubling of '%' that Reply does. "" for accept and
// quarantine.
func (d Decision) ClientReply() string {
	if d.Code == 0 {
		return ""
	}
	return fmt.Sprintf("%d %s %s", d.Code, d.Enhanced, d.Text)
}

// Refuses reports whether the decision is a refusal that is applied: a
// reject or tempfail outside a dry run.
func (d Decision) Refuses() bool {
	return d.Code != 0 && !d.DryRun
}

// replyCode returns the codes of a refusal: RFC 7372's x.7.23 for fail and
// x.7.24 for the error results, x.7.1 (delivery not authorized) for a
// refused result that is not a validation failure. A temperror is never
// refused permanently, whatever the action: the next attempt may well pass.
func replyCode(a config.Action, r spf.Result) (int, string) {
	if r == spf.TempError {
		return 451, "4.7.24"
	}
	if a == config.Tempfail {
		return 451, "4.7.1"
	}
	switch r {
	case spf.Fail:
		return 550, "5.7.23"
	case spf.PermError:
		return 550, "5.7.24"
	}
	return 550, "5.7.1"
}

// replyText is the admin's template for the result, macros expanded, or
// the built-in text; sanitised either way since both carry DNS text. With
// why.url set, the built-in text ends with a link to the why page, and a
// template gets it where it says config.WhyURLToken.
func replyText(cfg *config.Config, o *spf.Outcome) string {
	link := whyLink(cfg.Why.URL, o)
	if tmpl := cfg.Replies[o.Result]; tmpl != "" {
		env := &spf.MacroEnv{
			Sender:   o.Sender,
			Domain:   o.Domain,
			IP:       o.IP,
			HELO:     o.HELO,
			Receiver: cfg.Receiver,
			Now:      time.Now(),
		}
		// The link is put in after expansion, not expanded: its
		// URL-encoding would read as macros. config validates templates;
		// one that still does not parse falls back to the built-in text
		// rather than failing the message.
		pieces := strings.Split(tmpl, config.WhyURLToken)
		texts := make([]string, 0, len(pieces))
		for _, p := range pieces {
			ms, err := spf.ParseMacroString(p, true)
			if err != nil {
				texts = nil
				break
			}
			texts = append(texts, ms.Expand(env))
		}
		if texts != nil {
			if t := sanitizeLinked(texts, link); t != "" {
				return t
			}
		}
	}
	t := defaultText(o)
	if link == "" {
		return sanitizeReply(t)
	}
	if t = strings.TrimRight(t, " "); !strings.HasSuffix(t, ".") {
		t += "."
	}
	// " See " goes with the link, so that cutting a long text keeps it.
	return sanitizeLinked([]string{t, ""}, " See "+link)
}

// maxWhyLink bounds the link to the why page in a reply, so that the
// reply keeps room for its text; a longer link (a sender of hundreds of
// octets, mostly URL-encoded) is left out.
const maxWhyLink = 250

// whyLink is the link to the why page at base for o: its sender, client
// IP and HELO name, URL-encoded (so that the link is one word of printable
// ASCII). It leaves out the HELO name, then the whole link, when the link
// would be too long for a reply, and is "" without base.
func whyLink(base string, o *spf.Outcome) string {
	if base == "" {
		return ""
	}
	ip := ""
	if o.IP.IsValid() {
		ip = o.IP.String()
	}
	link := base + "?s=" + url.QueryEscape(o.Sender) + "&i=" + url.QueryEscape(ip)
	if o.HELO != "" {
		if full := link + "&h=" + url.QueryEscape(o.HELO); escapedLen(full) <= maxWhyLink {
			return full
		}
	}
	if escapedLen(link) > maxWhyLink {
		return ""
	}
	return link
}

// defaultText says what the result means for this message, carrying the
// domain's own explanation for a fail.
func defaultText(o *spf.Outcome) string {
	prefix := "SPF " + string(o.Result) + ": "
	switch o.Result {
	case spf.Fail:
		if o.Explanation != "" {
			return prefix + o.Explanation
		}
	case spf.PermError:
		if o.Problem != "" {
			return prefix + o.Problem
		}
	case spf.TempError:
		if o.Problem != "" {
			return prefix + o.Problem + ", try again later"
		}
		return prefix + "try again later"
	case spf.None:
		if o.Problem != "" {
			return prefix + o.Problem
		}
	}
	return prefix + replyMeaning(o)
}

// replyMeaning says what the result means in the words of RFC 7208
// §9.1's examples. The Received-SPF comment says much the same, but
// cleaned for a header rather than for a reply line.
func replyMeaning(o *spf.Outcome) string {
	subject := o.Sender
	if o.Identity == spf.IdentityHELO {
		subject = o.HELO
	}
	ip := "an unknown address"
	if o.IP.IsValid() {
		ip = o.IP.String()
	}
	switch o.Result {
	case spf.Pass:
		return "domain of " + subject + " designates " + ip + " as permitted sender"
	case spf.Fail:
		return "domain of " + subject + " does not designate " + ip + " as permitted sender"
	case spf.Softfail:
		return "domain of transitioning " + subject + " does not designate " + ip + " as permitted sender"
	case spf.Neutral:
		return ip + " is neither permitted nor denied by domain of " + subject
	case spf.None:
		return "domain of " + subject + " does not provide an SPF record"
	case spf.TempError:
		return "temporary error while checking domain of " + subject
	}
	return "permanent error in the SPF policy for domain of " + subject
}

// quarantineReason names the result for the MTA's hold queue, where an
// admin reads it with postcat or mailq.
func quarantineReason(o *spf.Outcome) string {
	r := "SPF " + string(o.Result) + " for " + string(o.Identity) + " " + o.Sender
	if o.Identity == spf.IdentityHELO {
		r = "SPF " + string(o.Result) + " for helo " + o.HELO
	}
	if o.IP.IsValid() {
		r += " from " + o.IP.String()
	}
	return sanitizeReply(r)
}

// sanitizeReply makes s one line of printable ASCII fit for an SMTP reply:
// control characters (CR and LF included) become spaces, runs of spaces
// collapse, other bytes outside ASCII become '?', and the text is cut to
// maxReplyText ending in "...", counting each '%' twice since Reply
// doubles it.
func sanitizeReply(s string) string {
	return cut(strings.TrimRight(replyLine(s, true), " "), maxReplyText)
}

// sanitizeLinked is sanitizeReply for texts with link between each two of
// them. The link, printable ASCII already, is never cut: when the whole
// is too long the texts are cut instead, and when the links alone would
// leave the text too little room they are left out.
func sanitizeLinked(texts []string, link string) string {
	links := len(texts) - 1
	if link == "" || links < 1 || links*escapedLen(link) > maxReplyText-minReplyText {
		return sanitizeReply(strings.Join(texts, ""))
	}
	budget := maxReplyText - links*escapedLen(link)
	var b strings.Builder
	for i, t := range texts {
		t = replyLine(t, i == 0)
		if i == links {
			t = strings.TrimRight(t, " ")
		}
		if i > 0 {
			b.WriteString(link)
		}
		t = cut(t, budget)
		budget -= escapedLen(t)
		b.WriteString(t)
	}
	return strings.TrimRight(b.String(), " ")
}

// minReplyText is the room a link must leave for the words of a reply.
const minReplyText = 100

// replyLine makes s printable ASCII on one line, as sanitizeReply says,
// dropping its leading spaces when trimLeft is set. It stops after
// maxReplyText bytes: an explanation from DNS may be long.
func replyLine(s string, trimLeft bool) string {
	var b strings.Builder
	space := trimLeft
	for _, r := range s {
		if b.Len() > maxReplyText {
			break
		}
		switch {
		case r < 0x20 || r == 0x7f || r == ' ':
			if !space {
				b.WriteByte(' ')
			}
			space = true
			continue
		case r > 0x7f:
			// Invalid UTF-8 yields utf8.RuneError, which lands here too.
			r = '?'
		}
		b.WriteByte(byte(r))
		space = false
	}
	return b.String()
}

// cut shortens t to at most width once Reply doubles its '%', ending it in
// "..." when anything is cut.
func cut(t string, width int) string {
	if escapedLen(t) <= width {
		return t
	}
	if width < 3 {
		return ""
	}
	n, w := 0, 0
	for ; n < len(t); n++ {
		cw := 1
		if t[n] == '%' {
			cw = 2
		}
		if w+cw > width-3 {
			break
		}
		w += cw
	}
	return strings.TrimRight(t[:n], " ") + "..."
}

// escapedLen is the length of s once Reply has doubled its '%'.
func escapedLen(s string) int {
	return len(s) + strings.Count(s, "%")
}
