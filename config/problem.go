package config

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// Problem is one thing wrong in a config file.
type Problem struct {
	File string
	// Line is 1-based; it points at the bad value, or at the key for a
	// problem with the key itself.
	Line int
	// Key is the dotted path of the key, such as "policy.mailfrom.fail";
	// empty for a problem with the file as a whole.
	Key string
	// Value is the bad value as written (a list or mapping is shown in
	// YAML's flow form).
	Value string
	// Reason says what is wrong; Allowed what would be right, when that is
	// a closed set or a form (empty otherwise).
	Reason  string
	Allowed string

	// keyOnly marks a problem with a key (unknown, duplicate) rather than
	// with a value, so that no "bad value" is printed for it.
	keyOnly bool
}

// String formats the problem as
//
//	FILE:LINE: KEY: bad value "VALUE": REASON (allowed: X, Y, Z)
//
// A problem with a key itself (unknown or duplicate) has no value part, and
// one with the file as a whole (a YAML syntax error) has no key part.
func (p Problem) String() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		b.WriteByte(':')
	}
	if p.Line > 0 {
		b.WriteString(strconv.Itoa(p.Line))
		b.WriteByte(':')
	}
	if b.Len() > 0 {
		b.WriteByte(' ')
	}
	if p.Key != "" {
		b.WriteString(formatKey(p.Key))
		b.WriteString(": ")
	}
	if !p.keyOnly && (p.Key != "" || p.Value != "") {
		b.WriteString("bad value ")
		b.WriteString(quoteValue(p.Value))
		b.WriteString(": ")
	}
	b.WriteString(p.Reason)
	if p.Allowed != "" {
		b.WriteString(" (allowed: ")
		b.WriteString(p.Allowed)
		b.WriteByte(')')
	}
	return b.String()
}

// quoteValue quotes a value for an error line: escaped, so that a value
// holding a newline or a terminal escape cannot break the one-line-per-
// problem layout, and shortened, so that a whole pasted certificate does
// not drown the message.
func quoteValue(s string) string {
	const max = 80
	if utf8.RuneCountInString(s) > max {
		s = string([]rune(s)[:max]) + "..."
	}
	return strconv.Quote(s)
}

// formatKey writes a key path as it is when it is made of plain words,
// and quoted otherwise: an unknown key is the file's text, and may hold a
// newline or be as long as a paragraph.
func formatKey(key string) string {
	for _, c := range key {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' || c == '[' || c == ']') {
			return quoteValue(key)
		}
	}
	if len(key) > 80 {
		return quoteValue(key)
	}
	return key
}

// Error is every problem found in a config file. Load and Parse return it
// so that an administrator fixes them all in one round.
type Error struct {
	Problems []Problem
}

// Error returns one line per problem, in the order of the file.
func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}
