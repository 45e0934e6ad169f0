package load

import (
	"fmt"
	"strings"

	"github.com/emersion/go-milter"
)

// Kind is the kind of milter a target runs, which says what it must answer
// to each message.
type Kind int

// The kinds of target.
const (
	// KindSPFMilter is spf-milter on its default policy: fail refused at
	// MAIL FROM with 550 5.7.23; otherwise Received-SPF for MAIL FROM and
	// HELO and one Authentication-Results inserted at the top.
	KindSPFMilter Kind = iota
	// KindNull is the do-nothing milter: it inserts NullHeader, whatever
	// the message.
	KindNull
	// KindPySPF is pyspf-milter told to refuse fail at MAIL FROM
	// (550 5.7.23); otherwise it inserts one Authentication-Results.
	KindPySPF
)

// NullHeader is the field the do-nothing milter inserts at the top of
// every message.
var NullHeader = [2]string{"X-Null-Milter", "seen"}

// Verify says whether a target of kind k answered m as it should for m's
// case; a nil error means the verdict is right.
func (k Kind) Verify(m *Message) error {
	c := m.Case
	refused := c.MailFrom == "fail" && k != KindNull
	if refused {
		if m.Mail.Code != milter.ActReplyCode || m.Mail.SMTPCode != 550 || !strings.HasPrefix(m.Mail.SMTPText, "5.7.23 ") {
			return fmt.Errorf("MAIL FROM: got %s, want reply 550 5.7.23", describe(m.Mail))
		}
		return nil
	}
	if m.Mail.Code != milter.ActContinue {
		return fmt.Errorf("MAIL FROM: got %s, want continue", describe(m.Mail))
	}
	if m.End == nil || m.End.Code != milter.ActContinue {
		got := "nothing"
		if m.End != nil {
			got = describe(m.End)
		}
		return fmt.Errorf("end of message: got %s, want continue", got)
	}
	for _, mod := range m.Mods {
		if mod.Code != milter.ActInsertHeader || mod.HeaderIndex != 0 {
			return fmt.Errorf("end of message: unexpected modification %q %s (index %d)", rune(mod.Code), mod.HeaderName, mod.HeaderIndex)
		}
	}
	switch k {
	case KindNull:
		if len(m.Mods) != 1 || m.Mods[0].HeaderName != NullHeader[0] || m.Mods[0].HeaderValue != NullHeader[1] {
			return fmt.Errorf("end of message: got %s, want only %s", fields(m.Mods), NullHeader[0])
		}
	case KindSPFMilter:
		return verifySPFMilter(m)
	case KindPySPF:
		if len(m.Mods) != 1 || m.Mods[0].HeaderName != "Authentication-Results" {
			return fmt.Errorf("end of message: got %s, want one Authentication-Results", fields(m.Mods))
		}
		v := unfold(m.Mods[0].HeaderValue)
		for _, want := range []string{receiverName + ";", "spf=" + c.MailFrom + " ", "smtp.mailfrom=" + c.Domain()} {
			if !strings.Contains(v, want) {
				return fmt.Errorf("Authentication-Results %q: no %q", v, want)
			}
		}
	}
	return nil
}

// verifySPFMilter checks the three fields spf-milter inserts, in the order
// they must end up at the top of the message: each insertion at index 0
// goes above the previous one, so they arrive bottom first.
func verifySPFMilter(m *Message) error {
	c := m.Case
	if len(m.Mods) != 3 || m.Mods[0].HeaderName != "Authentication-Results" ||
		m.Mods[1].HeaderName != "Received-SPF" || m.Mods[2].HeaderName != "Received-SPF" {
		return fmt.Errorf("end of message: got %s, want Authentication-Results, Received-SPF, Received-SPF inserted in that order", fields(m.Mods))
	}
	mailFrom, helo, ar := unfold(m.Mods[2].HeaderValue), unfold(m.Mods[1].HeaderValue), unfold(m.Mods[0].HeaderValue)
	checks := []struct {
		what, value string
		prefix      string
		contains    []string
		pairs       [][2]string
	}{
		{"Received-SPF (MAIL FROM)", mailFrom, c.MailFrom + " (", []string{"identity=mailfrom"},
			[][2]string{{"client-ip", m.ClientIP}, {"envelope-from", c.Sender}, {"helo", c.HELO}}},
		{"Received-SPF (HELO)", helo, c.HELOResult + " (", []string{"identity=helo"},
			[][2]string{{"client-ip", m.ClientIP}, {"helo", c.HELO}}},
		{"Authentication-Results", ar, receiverName + ";", []string{
			"spf=" + c.MailFrom + " ", "smtp.mailfrom=" + c.Domain(), "spf=" + c.HELOResult + " ", "smtp.helo=" + c.HELO,
		}, nil},
	}
	if c.Mechanism != "" {
		checks[0].pairs = append(checks[0].pairs, [2]string{"mechanism", c.Mechanism})
	}
	for _, ch := range checks {
		if !strings.HasPrefix(ch.value, ch.prefix) {
			return fmt.Errorf("%s %q: does not start with %q", ch.what, ch.value, ch.prefix)
		}
		for _, want := range ch.contains {
			if !strings.Contains(ch.value, want) {
				return fmt.Errorf("%s %q: no %q", ch.what, ch.value, want)
			}
		}
		for _, p := range ch.pairs {
			// RFC 7208 §9.1 key-value pairs: a dot-atom, or a quoted
			// string when the value holds other characters (":" or "@").
			if !strings.Contains(ch.value, " "+p[0]+"="+p[1]+";") && !strings.Contains(ch.value, " "+p[0]+`="`+p[1]+`";`) {
				return fmt.Errorf("%s %q: no %s=%s", ch.what, ch.value, p[0], p[1])
			}
		}
	}
	return nil
}

// unfold undoes header folding: a line break followed by white space.
func unfold(v string) string {
	v = strings.ReplaceAll(v, "\r\n", "\n")
	return strings.ReplaceAll(v, "\n", "")
}

func fields(mods []milter.ModifyAction) string {
	if len(mods) == 0 {
		return "no fields"
	}
	names := make([]string, len(mods))
	for i, m := range mods {
		names[i] = m.HeaderName
	}
	return strings.Join(names, ", ")
}
