package milter

import (
	"fmt"
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

// Refuses reports whether the decision is a refusal that is applied: a
// reject or tempfail outside a dry run.
func (d Decision) Refuses() bool {
	return d.Code != 0 && !d.DryRun
}

// Decide applies cfg's policy to o: the action for o's identity and result,
// and for a refusal its reply. A nil outcome (nothing checked) is accepted.
// A result the policy does not name is accepted, since config fills in
// every result.
func Decide(cfg *config.Config, o *spf.Outcome) Decision {
	d := Decision{Action: config.Accept, DryRun: cfg.DryRun}
	if o == nil {
		return d
	}
	policy := cfg.Policy.MailFrom
	if o.Identity == spf.IdentityHELO {
		policy = cfg.Policy.HELO
	}
	if a, ok := policy[o.Result]; ok && a != "" {
		d.Action = a
	}
	switch d.Action {
	case config.Reject, config.Tempfail:
		d.Code, d.Enhanced = replyCode(d.Action, o.Result)
		d.Text = replyText(cfg, o)
	case config.Quarantine:
		d.Text = quarantineReason(o)
	default:
		d.Action = config.Accept
	}
	return d
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
// the built-in text; sanitised either way since both carry DNS text.
func replyText(cfg *config.Config, o *spf.Outcome) string {
	if tmpl := cfg.Replies[o.Result]; tmpl != "" {
		// config validates templates; one that still does not parse falls
		// back to the built-in text rather than failing the message.
		if ms, err := spf.ParseMacroString(tmpl, true); err == nil {
			env := &spf.MacroEnv{
				Sender:   o.Sender,
				Domain:   o.Domain,
				IP:       o.IP,
				HELO:     o.HELO,
				Receiver: cfg.Receiver,
				Now:      time.Now(),
			}
			if t := sanitizeReply(ms.Expand(env)); t != "" {
				return t
			}
		}
	}
	return sanitizeReply(defaultText(o))
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
	return prefix + sentence(o)
}

// sentence explains the result in words, in the style of RFC 7208 §9.1.
func sentence(o *spf.Outcome) string {
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
	var b strings.Builder
	space := true // drop leading spaces
	for _, r := range s {
		if b.Len() > maxReplyText {
			// Stop early: an explanation from DNS may be long.
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
	t := strings.TrimRight(b.String(), " ")
	if escapedLen(t) > maxReplyText {
		// Cut so that the text still fits once Reply doubles its '%'.
		n, width := 0, 0
		for ; n < len(t); n++ {
			w := 1
			if t[n] == '%' {
				w = 2
			}
			if width+w > maxReplyText-3 {
				break
			}
			width += w
		}
		t = strings.TrimRight(t[:n], " ") + "..."
	}
	return t
}

// escapedLen is the length of s once Reply has doubled its '%'.
func escapedLen(s string) int {
	return len(s) + strings.Count(s, "%")
}
