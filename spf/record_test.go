package spf

import (
	"strings"
	"testing"
)

func TestParseValid(t *testing.T) {
	tests := []struct {
		in   string
		want string // canonical form; "" means same as in
	}{
		{in: "v=spf1"},
		{in: "V=SPF1 -ALL", want: "v=spf1 -all"},
		{in: "v=spf1  a   -all ", want: "v=spf1 a -all"},
		{in: "v=spf1 +all", want: "v=spf1 all"},
		{in: "v=spf1 ?all ~all -all"},
		{in: "v=spf1 ip4:192.0.2.0/24 ip4:192.0.2.7 ip6:2001:db8::/32 -all"},
		{in: "v=spf1 ip4:192.0.2.7/24", want: "v=spf1 ip4:192.0.2.0/24"},
		{in: "v=spf1 ip4:0.0.0.0/0 ip6:::/0"},
		{in: "v=spf1 ip6:::ffff:1.2.3.4", want: "v=spf1 ip6:::ffff:1.2.3.4"},
		{in: "v=spf1 a a:mail.example.org a/24 a//64 a/24//64 a:example.org/28//48"},
		{in: "v=spf1 mx mx:example.org mx/30 mx:example.org//0"},
		{in: "v=spf1 a/32//128", want: "v=spf1 a"},
		{in: "v=spf1 ptr ptr:example.org"},
		{in: "v=spf1 include:_spf.example.org exists:%{i}.%{l1r+-}._spf.%{d}"},
		{in: "v=spf1 a:foo:bar/baz.example.com"},
		{in: "v=spf1 a:foo.example.xn--zckzah"},
		{in: "v=spf1 a:%{H}.bar -all"},
		{in: "v=spf1 redirect=_spf.example.org"},
		{in: "v=spf1 -all exp=explain.%{d}"},
		{in: "v=spf1 Redirect=example.org EXP=x.example.org", want: "v=spf1 redirect=example.org exp=x.example.org"},
		{in: "v=spf1 moo.cow-far_out=man:dog/cat ip4:1.2.3.4 -all"},
		{in: "v=spf1 foo= bar=%{d}%%%_%-"},
		{in: "v=spf1 default=pass"},
		{in: "v=spf1 a:example.com."},
		{in: "v=spf1 exists:%{ir}.%{v}._spf.%{d2}"},
		{in: "v=spf1 a:x.123-456"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			want := tt.want
			if want == "" {
				want = tt.in
			}
			if got := r.String(); got != want {
				t.Errorf("String() = %q, want %q", got, want)
			}
			// What prints back parses back to the same thing.
			r2, err := Parse(r.String())
			if err != nil || r2.String() != r.String() {
				t.Errorf("round trip of %q: %v, %q", r.String(), err, r2)
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	tests := []struct {
		in      string
		problem string // a part of the error text
	}{
		{"v=spf10", "does not start with v=spf1"},
		{"spf1 -all", "does not start with v=spf1"},
		{"v=spf1 ip4:1.2.3.4 -all moo", `invalid term "moo": unknown mechanism`},
		{"v=spf1 -all.", `"-all.": unknown mechanism`},
		{"v=spf1 -all:foobar", "all takes no argument"},
		{"v=spf1 -all/8", "all takes no argument"},
		{"v=spf1 moo.cow/far_out=man:dog/cat", "unknown mechanism"},
		{"v=spf1 moo.cow:far_out=man:dog/cat", "unknown mechanism"},
		{"v=spf1 ip4:1.2.3.4 redirect:t2.example.com", `"redirect:t2.example.com": unknown mechanism`},
		{"v=spf1 1up=foo", "modifier name"},
		{"v=spf1 =all", "modifier name"},
		{"v=spf1 a:foo-bar -all", "top-level label"},
		{"v=spf1 a:museum", "top-level label"},
		{"v=spf1 a:museum.", "top-level label"},
		{"v=spf1 a:111.222.33.44", "top-level label"},
		{"v=spf1 a:abc.123", "top-level label"},
		{"v=spf1 a:example.-com", "top-level label"},
		{"v=spf1 a:example.com:8080", "top-level label"},
		{"v=spf1 a:", "empty domain-spec"},
		{"v=spf1 a/33", "over 32"},
		{"v=spf1 a//129", "over 128"},
		{"v=spf1 a/24/64", "bad CIDR length"},
		{"v=spf1 a/024", "bad CIDR length"},
		{"v=spf1 a:ex.com/24/64", "over 32"},
		{"v=spf1 a:foo.example.com\x00", "not allowed"},
		{"v=spf1 a:ctrl.example.com\rptr -all", "not allowed"},
		{"v=spf1 ip4:192.0.2.5\n include:x.example.com", "bad address"},
		{"v=spf1 ip4:", "bad address"},
		{"v=spf1 ip4:1.2.3.4/33", "over 32"},
		{"v=spf1 ip4:1.2.3", "bad address"},
		{"v=spf1 ip4:01.2.3.4", "bad address"},
		{"v=spf1 ip4:2001:db8::1", "not an IPv4 address"},
		{"v=spf1 ip6:1.2.3.4", "not an IPv6 address"},
		{"v=spf1 ip6:fe80::1%eth0", "bad address"},
		{"v=spf1 ip6:2001:db8::/129", "over 128"},
		{"v=spf1 ip6", "ip6 needs :network"},
		{"v=spf1 ptr/0", "ptr takes no CIDR length"},
		{"v=spf1 ptr:", "empty domain-spec"},
		{"v=spf1 include", "include needs :domain"},
		{"v=spf1 include:", "empty domain-spec"},
		{"v=spf1 include:ip5.example.com/24", "top-level label"},
		{"v=spf1 exists", "exists needs :domain"},
		{"v=spf1 exp=", "empty domain-spec"},
		{"v=spf1 exp=-all", "top-level label"},
		{"v=spf1 redirect=-all ?all", "top-level label"},
		{"v=spf1 ?all redirect=", "empty domain-spec"},
		{"v=spf1 exp=a.example.com -all exp=b.example.com", "exp= given more than once"},
		{"v=spf1 redirect=a.example.com redirect=a.example.com", "redirect= given more than once"},
		{"v=spf1 -all foo=%abc", "must be followed by"},
		{"v=spf1 a:%{x}.example.com", "unknown macro letter"},
		{"v=spf1 a:%{c}.example.com", "only allowed in explanations"},
		{"v=spf1 a:%{d0}.example.com", "must not be zero"},
		{"v=spf1 a:%{d.example.com", "unterminated macro"},
		{"v=spf1 a:foo%", "lone '%'"},
		{"v=spf1 a:\xEF\xBB\xBFgarbage.example.net -all", "not allowed"},
		{"v=spf1 \x80a:example.net -all", "unknown mechanism"},
		{"v=spf1 a:example.net \x96all", "unknown mechanism"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := Parse(tt.in)
			if err == nil {
				t.Fatalf("Parse(%q) = %q, want an error", tt.in, r)
			}
			if !strings.Contains(err.Error(), tt.problem) {
				t.Errorf("Parse(%q) error %q does not mention %q", tt.in, err, tt.problem)
			}
			for _, c := range err.Error() {
				if c < ' ' || c > '~' {
					t.Errorf("error text %q holds a control or non-ASCII character", err)
				}
			}
		})
	}
}

func TestParseDualCIDR(t *testing.T) {
	r, err := Parse("v=spf1 a:example.org/24//64 mx//48 a/0")
	if err != nil {
		t.Fatal(err)
	}
	want := [][2]int{{24, 64}, {32, 48}, {0, 128}}
	for i, d := range r.Directives {
		if d.CIDR4 != want[i][0] || d.CIDR6 != want[i][1] {
			t.Errorf("%s: CIDR %d/%d, want %d/%d", d, d.CIDR4, d.CIDR6, want[i][0], want[i][1])
		}
	}
	if got := r.Directives[0].Domain.String(); got != "example.org" {
		t.Errorf("domain %q", got)
	}
}
