package milter

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/spf"
)

// Names of the header fields written and, when forged, removed.
const (
	headerReceivedSPF = "Received-SPF"
	headerAuthResults = "Authentication-Results"
)

// maxLineLength is the line length RFC 5322 §2.1.1 asks writers to keep to.
const maxLineLength = 78

// Field is one header field as handed to the MTA. Value is folded already
// (LF followed by the space it was folded at), since go-milter passes it as
// is and both Postfix and Sendmail accept LF line ends from a milter.
type Field struct{ Name, Value string }

// HeaderFields returns the header fields cfg asks for about outcomes, in
// the order they must appear from the top of the message: one Received-SPF
// per outcome, the MAIL FROM one first because OpenDMARC trusts the first
// Received-SPF it finds, then one Authentication-Results carrying every
// outcome. Nil outcomes are skipped; with none left there is no field.
func HeaderFields(cfg *config.Config, outcomes ...*spf.Outcome) []Field {
	checked := make([]*spf.Outcome, 0, len(outcomes))
	for _, o := range outcomes {
		if o != nil {
			checked = append(checked, o)
		}
	}
	if len(checked) == 0 {
		return nil
	}
	slices.SortStableFunc(checked, func(a, b *spf.Outcome) int {
		return mailFromFirst(a.Identity) - mailFromFirst(b.Identity)
	})
	var fields []Field
	if cfg.Headers.ReceivedSPF {
		for _, o := range checked {
			fields = append(fields, Field{headerReceivedSPF, fold(headerReceivedSPF, o.ReceivedSPF(cfg.Receiver))})
		}
	}
	if cfg.Headers.AuthenticationResults {
		fields = append(fields, Field{headerAuthResults, fold(headerAuthResults, spf.AuthenticationResults(cfg.AuthservID, checked...))})
	}
	return fields
}

// mailFromFirst ranks identities for Received-SPF: MAIL FROM before HELO,
// for the reason HeaderFields gives.
func mailFromFirst(id spf.Identity) int {
	if id == spf.IdentityMailFrom {
		return 0
	}
	return 1
}

// fold breaks value at spaces so that no line of "name: value" exceeds
// maxLineLength where a space allows it. It only inserts an LF before an
// existing space (RFC 5322 §2.2.3), so unfolding gives back value exactly,
// inside comments and quoted-strings too. It breaks only at a single space
// between two visible characters, so no line is ever blank.
func fold(name, value string) string {
	if len(name)+len(": ")+len(value) <= maxLineLength {
		return value
	}
	var b strings.Builder
	b.Grow(len(value) + len(value)/maxLineLength + 1)
	lineLen := len(name) + len(": ")
	start := 0 // start of the word not yet written
	for start < len(value) {
		end := nextBreak(value, start)
		word := value[start:end]
		if start > 0 && lineLen+len(word) > maxLineLength {
			// word starts with the space it is folded at.
			b.WriteByte('\n')
			lineLen = 0
		}
		b.WriteString(word)
		lineLen += len(word)
		start = end
	}
	return b.String()
}

// nextBreak returns the index of the next place after start where fold may
// break: a single space with a visible character on each side.
func nextBreak(s string, start int) int {
	for i := start + 1; i < len(s)-1; i++ {
		if s[i] == ' ' && s[i-1] != ' ' && s[i+1] != ' ' {
			return i
		}
	}
	return len(s)
}

// maxForgedFields bounds the forged fields of each name that a message
// may carry and have removed: one header change each at the end of the
// message, which the MTA applies by walking the header. Each hop that
// checks SPF adds at most one of each, and MTAs refuse mail that went
// through 50 or 100 hops, so a message with more is a forgery or a loop.
// It is deferred rather than passed with forged fields left in.
const maxForgedFields = 100

// errTooManyForged defers a message with more forged fields than
// maxForgedFields.
var errTooManyForged = fmt.Errorf("the message carries more than %d forged Received-SPF or Authentication-Results fields to remove", maxForgedFields)

// forgedHeaders records, for one message, the incoming header fields that
// claim to be ours: every Received-SPF (only the receiving MTA may write
// one, RFC 7208 §9.1) and every Authentication-Results carrying our
// authserv-id (RFC 8601 §5). Indices are 1-based and counted per field
// name without regard to case, as Postfix and Sendmail count them for a
// header change.
//
// Its memory is bounded whatever the fields: two counts, and at most
// maxForgedFields indices.
type forgedHeaders struct {
	receivedSPF int   // Received-SPF fields seen
	authResults int   // Authentication-Results fields seen
	forgedAR    []int // indices of those carrying our authserv-id
	// tooMany is set when there are more forged fields of a name than
	// maxForgedFields.
	tooMany bool
}

// see records one incoming field.
func (f *forgedHeaders) see(name, value, authservID string) {
	switch {
	case strings.EqualFold(name, headerReceivedSPF):
		f.receivedSPF++
		if f.receivedSPF > maxForgedFields {
			f.tooMany = true
		}
	case strings.EqualFold(name, headerAuthResults):
		f.authResults++
		if id, ok := parseAuthservID(value); ok && authservID != "" && strings.EqualFold(id, authservID) {
			if len(f.forgedAR) == maxForgedFields {
				f.tooMany = true
			} else {
				f.forgedAR = append(f.forgedAR, f.authResults)
			}
		}
	}
}

// headerChange is a header deletion: the 1-based per-name index of the
// field named Name.
type headerChange struct {
	Name  string
	Index int
}

// changes returns the header changes that delete the forged fields: per
// name from the highest index down, since a deletion renumbers the fields
// after it (the bug behind OpenDKIM's CVE-2022-48521). With more than
// maxForgedFields of a name it returns errTooManyForged and no change.
func (f *forgedHeaders) changes() ([]headerChange, error) {
	if f.tooMany {
		return nil, errTooManyForged
	}
	var out []headerChange
	for i := f.receivedSPF; i >= 1; i-- {
		out = append(out, headerChange{headerReceivedSPF, i})
	}
	for i := len(f.forgedAR) - 1; i >= 0; i-- {
		out = append(out, headerChange{headerAuthResults, f.forgedAR[i]})
	}
	return out, nil
}

// parseAuthservID returns the authserv-id of an Authentication-Results
// value (RFC 8601 §2.2): a token or quoted-string after optional comments
// and folding white space. ok is false when there is none.
func parseAuthservID(v string) (id string, ok bool) {
	i := skipCFWS(v, 0)
	if i >= len(v) {
		return "", false
	}
	if v[i] == '"' {
		var b strings.Builder
		for i++; i < len(v); i++ {
			switch c := v[i]; c {
			case '\\':
				if i+1 < len(v) {
					i++
					b.WriteByte(v[i])
				}
			case '"':
				return b.String(), true
			case '\r', '\n':
				// Folding inside a quoted-string unfolds to nothing.
			default:
				b.WriteByte(c)
			}
		}
		return "", false
	}
	j := i
	for j < len(v) && !strings.ContainsRune(" \t\r\n;()\"", rune(v[j])) {
		j++
	}
	if j == i {
		return "", false
	}
	return v[i:j], true
}

// skipCFWS returns the index of the first byte at or after i that is
// neither white space (folding included) nor part of a comment; comments
// nest and may hold quoted-pairs (RFC 5322 §3.2.2).
func skipCFWS(v string, i int) int {
	depth := 0
	for ; i < len(v); i++ {
		switch c := v[i]; {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case c == '\\' && depth > 0:
			i++
		case depth > 0:
		default:
			return i
		}
	}
	return i
}
