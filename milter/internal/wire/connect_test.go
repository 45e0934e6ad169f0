package wire

import (
	"bytes"
	"strings"
	"testing"
)

// TestParseClientAddr covers the address forms one by one, including
// those an MTA would not send together.
func TestParseClientAddr(t *testing.T) {
	tests := []struct {
		in, want string // want "" for unreadable
	}{
		{"192.0.2.1", "192.0.2.1"},
		{" 192.0.2.1 ", "192.0.2.1"},
		{"[192.0.2.1]", "192.0.2.1"},
		{"::ffff:192.0.2.1", "192.0.2.1"},
		{"IPv6:::ffff:192.0.2.1", "192.0.2.1"},
		{"ipv6:::FFFF:C000:0201", "192.0.2.1"},
		{"[IPv6:::ffff:192.0.2.1]", "192.0.2.1"},
		{"2001:db8::1", "2001:db8::1"},
		{"IPv6:2001:db8::1", "2001:db8::1"},
		{"[IPv6:2001:db8::1]", "2001:db8::1"},
		{"[2001:db8::1]", "2001:db8::1"},
		{"192.0.2.1%eth0", "192.0.2.1"},
		{"fe80::1%eth0", "fe80::1"},
		{"[IPv6:fe80::1%25eth0]", "fe80::1"},
		{"", ""},
		{"[]", ""},
		{"IPv6:", ""},
		{"[192.0.2.1", ""},
		{"192.0.2.1]", ""},
		{"192.0.2.300", ""},
		{"192.0.2", ""},
		{"IPv6:192.0.2.1x", ""},
		{"client.example", ""},
		{"%eth0", ""},
		{"unix:/var/run/smtp.sock", ""},
	}
	for _, tt := range tests {
		a, ok := ParseClientAddr(tt.in)
		got := ""
		if ok {
			got = a.String()
		}
		if got != tt.want {
			t.Errorf("ParseClientAddr(%q) = %q, %v; want %q", tt.in, got, ok, tt.want)
		}
	}
}

// TestNormalizeConnect checks the rewriting of the connect data: the
// address go-milter reads (up to the first NUL) is what ParseClientAddr
// reads, and the packet keeps its length.
func TestNormalizeConnect(t *testing.T) {
	port := []byte{0, 25}
	tests := []struct {
		name string
		data []byte
		want string // the address as go-milter reads it
	}{
		{"plain", join("host\x00", "4", port, "192.0.2.1\x00"), "192.0.2.1"},
		{"bracketed", join("host\x00", "4", port, "[192.0.2.1]\x00"), "192.0.2.1"},
		{"prefixed mapped", join("host\x00", "6", port, "IPv6:::ffff:192.0.2.1\x00"), "192.0.2.1"},
		{"zone", join("host\x00", "6", port, "fe80::1%eth0\x00"), "fe80::1"},
		{"no NUL at the end", join("host\x00", "4", port, "[192.0.2.1]"), "192.0.2.1"},
		{"unknown family", join("host\x00", "U", "[192.0.2.1]\x00"), "192.0.2.1"},
		{"unreadable left alone", join("host\x00", "4", port, "[nope]\x00"), "[nope]"},
		{"unix path left alone", join("host\x00", "L", "/run/x\x00"), "/run/x"},
		{"no port", join("host\x00", "4"), ""},
		{"no family", join("host\x00"), ""},
		{"no host NUL", join("host"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(tt.data)
			normalizeConnect(tt.data)
			if len(tt.data) != before {
				t.Fatalf("length %d, want %d", len(tt.data), before)
			}
			got := ""
			if i := bytes.IndexByte(tt.data, 0); i >= 0 && i+1 < len(tt.data) {
				rest := tt.data[i+2:]
				if f := tt.data[i+1]; f == '4' || f == '6' {
					rest = rest[min(2, len(rest)):]
				}
				got, _, _ = strings.Cut(string(rest), "\x00")
			}
			if got != tt.want {
				t.Errorf("address %q, want %q", got, tt.want)
			}
		})
	}
}

// join concatenates strings and byte slices.
func join(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch p := p.(type) {
		case string:
			b = append(b, p...)
		case []byte:
			b = append(b, p...)
		}
	}
	return b
}
