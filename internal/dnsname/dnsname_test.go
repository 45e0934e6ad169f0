package dnsname

import (
	"strings"
	"testing"
)

func TestQueryable(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"example.org", true},
		{"example.org.", true},
		{"macro%percent  space.example.com", true},
		{"", false},
		{".", false},
		{"a..example.org", false},
		{strings.Repeat("a", 63) + ".org", true},
		{strings.Repeat("a", 64) + ".org", false},
		{strings.Repeat("abcdefg.", 31) + "abcde", true},   // 255 octets in wire form
		{strings.Repeat("abcdefg.", 31) + "abcdef", false}, // 256
	}
	for _, tt := range tests {
		if got := Queryable(tt.name); got != tt.want {
			t.Errorf("Queryable(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestEscapeAndKey(t *testing.T) {
	tests := []struct {
		raw, escaped string
	}{
		{"Example.ORG", "Example.ORG."},
		{"a b.example", `a\032b.example.`},
		{`back\slash.example`, `back\092slash.example.`},
		{"q\"u;o(t)e@$.example", `q\034u\059o\040t\041e\064\036.example.`},
		{"caf\xc3\xa9.example", `caf\195\169.example.`},
		{"nul\x00.example", `nul\000.example.`},
	}
	for _, tt := range tests {
		got := Escape(tt.raw)
		if got != tt.escaped {
			t.Errorf("Escape(%q) = %q, want %q", tt.raw, got, tt.escaped)
		}
		if !Same(got, strings.ToUpper(got)) {
			t.Errorf("%q and its upper case are not the same name", got)
		}
	}
	if !Same(`a\032b.example.`, "A\\ b.EXAMPLE") || Same("a.example", "b.example") {
		t.Error("Same does not compare as DNS does")
	}
}
