package config

import (
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/spf-milter/spf-milter/spf"
)

// The readers of the schema's values: each takes one YAML value, checks it
// with the validators of validate.go, and records a problem naming the
// key's allowed form when it is bad.

// scalar returns the text of a single value. YAML's own types do not
// matter here (a port written 8895 is text like any other); each key's
// reader says what the text may be.
func (l *loader) scalar(key string, v *yaml.Node, allowed string) (string, bool) {
	if v.Kind != yaml.ScalarNode {
		l.valueProblem(v, key, kindName(v)+", where a single value is needed", allowed)
		return "", false
	}
	if v.Tag == "!!null" {
		l.valueProblem(v, key, "empty; leave the key out to keep its default", allowed)
		return "", false
	}
	return v.Value, true
}

// checked reads a scalar that check accepts (returning "") or refuses
// (returning the reason).
func (l *loader) checked(key string, v *yaml.Node, allowed string, check func(string) string) (string, bool) {
	s, ok := l.scalar(key, v, allowed)
	if !ok {
		return "", false
	}
	if reason := check(s); reason != "" {
		l.valueProblem(v, key, reason, allowed)
		return "", false
	}
	return s, true
}

// readListen reads the milter socket.
func readListen(l *loader, key string, v *yaml.Node, allowed string, dst *string) {
	check := func(s string) string { _, _, reason := parseListen(s); return reason }
	if s, ok := l.checked(key, v, allowed, check); ok {
		*dst = s
	}
}

// readMode reads socket_mode, which must be quoted: YAML reads an unquoted
// 0660 as the number 432, or as 660 in YAML 1.2.
func readMode(l *loader, key string, v *yaml.Node, allowed string, dst *fs.FileMode) {
	s, ok := l.scalar(key, v, allowed)
	if !ok {
		return
	}
	if v.Tag != "!!str" {
		l.valueProblem(v, key, "a number, where a string is needed: put the mode in quotes, as in \"0660\", so that YAML does not read it as a number", allowed)
		return
	}
	m, reason := parseMode(s)
	if reason != "" {
		l.valueProblem(v, key, reason, allowed)
		return
	}
	*dst = m
}

// readAuthservID reads authserv_id, which receiver follows when it is not
// given itself.
func readAuthservID(l *loader, key string, v *yaml.Node, allowed string, dst *string) {
	if s, ok := l.checked(key, v, allowed, checkHostname); ok {
		*dst, l.authservGiven = s, true
	}
}

// readReceiver reads receiver.
func readReceiver(l *loader, key string, v *yaml.Node, allowed string, dst *string) {
	if s, ok := l.checked(key, v, allowed, checkHostname); ok {
		*dst, l.receiverGiven = s, true
	}
}

// list walks a list, giving each item to each. A null value is an empty
// list.
func (l *loader) list(key string, v *yaml.Node, allowed string, each func(item *yaml.Node)) {
	if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
		return
	}
	if v.Kind != yaml.SequenceNode {
		l.valueProblem(v, key, kindName(v)+", where a list is needed (write [] for none)", "a list, each item "+allowed)
		return
	}
	for _, item := range v.Content {
		each(resolve(item))
	}
}

// listOf reads a list of scalars, each turned into a T by parse, which
// returns a reason when the value is bad; every bad item is a problem of
// its own, with its line.
func listOf[T any](parse func(string) (T, string)) reader[[]T] {
	return func(l *loader, key string, v *yaml.Node, allowed string, dst *[]T) {
		var out []T
		l.list(key, v, allowed, func(item *yaml.Node) {
			if s, ok := l.scalar(key, item, allowed); ok {
				x, reason := parse(s)
				if reason != "" {
					l.valueProblem(item, key, reason, allowed)
					return
				}
				out = append(out, x)
			}
		})
		*dst = out
	}
}

// bool reads true or false: only YAML's own booleans, so that a "yes"
// (a string in YAML 1.2) is not silently taken for one.
func (l *loader) bool(key string, v *yaml.Node, allowed string, dst *bool) {
	if _, ok := l.scalar(key, v, allowed); !ok {
		return
	}
	if v.Tag != "!!bool" {
		l.valueProblem(v, key, "not a boolean", allowed)
		return
	}
	*dst = strings.ToLower(v.Value) == "true"
}

// duration reads a positive Go duration.
func (l *loader) duration(key string, v *yaml.Node, allowed string, dst *time.Duration) {
	s, ok := l.scalar(key, v, allowed)
	if !ok {
		return
	}
	d, ok := l.parseDuration(key, v, s, allowed)
	switch {
	case !ok:
	case d <= 0:
		l.valueProblem(v, key, "must be more than zero", allowed)
	default:
		*dst = d
	}
}

// parseDuration reads s, the value of v, as a Go duration, reporting a
// problem when it is not one: a bare number is told it needs a unit.
func (l *loader) parseDuration(key string, v *yaml.Node, s, allowed string) (time.Duration, bool) {
	d, err := time.ParseDuration(s)
	switch {
	case err != nil && v.Tag == "!!int":
		l.valueProblem(v, key, "a number needs a unit", allowed)
	case err != nil:
		l.valueProblem(v, key, "not a duration", allowed)
	default:
		return d, true
	}
	return 0, false
}

// upTo reads a whole number from 0 to max. Only plain decimal digits are
// taken: YAML would also read 0x10 or 1e4 as numbers, which nobody means
// for a count of entries.
func upTo(max int) reader[int] {
	return func(l *loader, key string, v *yaml.Node, allowed string, dst *int) {
		s, ok := l.scalar(key, v, allowed)
		if !ok {
			return
		}
		digits := strings.TrimPrefix(s, "-")
		if !isDigits(digits) {
			l.valueProblem(v, key, "not a whole number", allowed)
			return
		}
		n, err := strconv.Atoi(digits)
		switch {
		case digits != s && (err != nil || n != 0):
			l.valueProblem(v, key, "must not be negative", allowed)
		case err != nil || n > max:
			l.valueProblem(v, key, fmt.Sprintf("more than %d", max), allowed)
		default:
			*dst = n
		}
	}
}

// positiveUpTo reads a whole number from 1 to max.
func positiveUpTo(max int) reader[int] {
	count := upTo(max)
	return func(l *loader, key string, v *yaml.Node, allowed string, dst *int) {
		n := -1
		count(l, key, v, allowed, &n)
		switch {
		case n == 0:
			l.valueProblem(v, key, "must be at least 1", allowed)
		case n > 0:
			*dst = n
		}
	}
}

// sizeIn reads a size in bytes from minSize to maxSize, written as
// parseSizeIn reads it.
func sizeIn(minSize, maxSize int64) reader[int64] {
	return func(l *loader, key string, v *yaml.Node, allowed string, dst *int64) {
		s, ok := l.scalar(key, v, allowed)
		if !ok {
			return
		}
		n, reason := parseSizeIn(s, minSize, maxSize)
		if reason != "" {
			l.valueProblem(v, key, reason, allowed)
			return
		}
		*dst = n
	}
}

// oneOf reads a value of a closed set, given as allowed.
func (l *loader) oneOf(key string, v *yaml.Node, allowed string, dst *string) {
	s, ok := l.scalar(key, v, allowed)
	if !ok {
		return
	}
	if !slices.Contains(strings.Split(allowed, ", "), s) {
		l.valueProblem(v, key, "unknown value", allowed)
		return
	}
	*dst = s
}

// resultFields makes one field per SPF result, in RFC order.
func resultFields(set func(r spf.Result, key string, v *yaml.Node)) []field {
	fields := make([]field, len(spf.Results))
	for i, r := range spf.Results {
		fields[i] = field{string(r), func(key string, v *yaml.Node) { set(r, key, v) }}
	}
	return fields
}

// readPolicy reads one identity's result-to-action mapping into *dst,
// which holds the defaults: a result left out keeps its default action.
func readPolicy(l *loader, key string, v *yaml.Node, allowed string, dst *map[spf.Result]Action) {
	m := *dst
	l.mapping(v, key, resultFields(func(r spf.Result, key string, v *yaml.Node) {
		var s string
		if l.oneOf(key, v, allowed, &s); s != "" {
			m[r] = Action(s)
		}
	}))
}

// macro reads an explain-string (RFC 7208 §6.2): the same syntax as an
// exp= text, and the same checks, so that a reply template fails here
// rather than when a message is refused.
func (l *loader) macro(key string, v *yaml.Node, allowed string) (string, bool) {
	return l.checked(key, v, allowed, func(s string) string {
		if s == "" {
			return "empty; leave the key out to keep its default"
		}
		if _, err := spf.ParseMacroString(s, true); err != nil {
			return err.Error()
		}
		return ""
	})
}

// readExplanation reads explanation.
func readExplanation(l *loader, key string, v *yaml.Node, allowed string, dst *string) {
	if s, ok := l.macro(key, v, allowed); ok {
		*dst = s
	}
}

// readReplies reads the reply templates per result, noting those that
// link to the why page: they need why.url, checked once the file is read.
func readReplies(l *loader, key string, v *yaml.Node, allowed string, dst *map[spf.Result]string) {
	m := *dst
	l.mapping(v, key, resultFields(func(r spf.Result, key string, v *yaml.Node) {
		if s, ok := l.macro(key, v, allowed); ok {
			m[r] = s
			if strings.Contains(s, WhyURLToken) {
				l.whyLinks = append(l.whyLinks, whyLink{key, v})
			}
		}
	}))
}

// httpListen reads the HOST:PORT of an HTTP listener (metrics.listen,
// why.listen), normalised; ok is false after a problem was recorded.
func (l *loader) httpListen(key string, v *yaml.Node, allowed string) (addr string, ok bool) {
	s, ok := l.scalar(key, v, allowed)
	if !ok {
		return "", false
	}
	addr, reason := parseHTTPListen(s)
	if reason != "" {
		l.valueProblem(v, key, reason, allowed)
		return "", false
	}
	return addr, true
}

// readHTTPListen reads metrics.listen.
func readHTTPListen(l *loader, key string, v *yaml.Node, allowed string, dst *string) {
	if addr, ok := l.httpListen(key, v, allowed); ok {
		*dst = addr
	}
}

// readWhyListen reads why.listen, kept to be checked against
// metrics.listen once the file is read.
func readWhyListen(l *loader, key string, v *yaml.Node, allowed string, dst *string) {
	if addr, ok := l.httpListen(key, v, allowed); ok {
		*dst, l.whyListen = addr, v
	}
}

// readWhyURL reads why.url. A bad one is reported once, here, rather than
// again at each reply that needs it.
func readWhyURL(l *loader, key string, v *yaml.Node, allowed string, dst *string) {
	l.whyURLBad = true
	if s, ok := l.checked(key, v, allowed, checkWhyURL); ok {
		*dst, l.whyURLBad = s, false
	}
}

// readWhyCache reads why.cache: a duration from 0 (no cache) to an hour.
func readWhyCache(l *loader, key string, v *yaml.Node, allowed string, dst *time.Duration) {
	s, ok := l.scalar(key, v, allowed)
	if !ok {
		return
	}
	if s == "0" {
		*dst = 0
		return
	}
	d, ok := l.parseDuration(key, v, s, allowed)
	switch {
	case !ok:
	case d < 0:
		l.valueProblem(v, key, "must not be negative", allowed)
	case d > maxWhyCache:
		l.valueProblem(v, key, "more than 1h", allowed)
	default:
		*dst = d
	}
}

// readLogPath reads decision_log.path.
func readLogPath(l *loader, key string, v *yaml.Node, allowed string, dst *string) {
	if s, ok := l.checked(key, v, allowed, checkLogPath); ok {
		*dst = s
	}
}

// parseRecipient reads a never-refused recipient, kept as written.
func parseRecipient(s string) (string, string) {
	return s, checkRecipient(s)
}
