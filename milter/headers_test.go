package milter

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/spf-milter/spf-milter/spf"
)

func TestFold(t *testing.T) {
	tests := []struct {
		name, field, value, want string
	}{
		{"short", "Received-SPF", "pass (x) client-ip=192.0.2.1", "pass (x) client-ip=192.0.2.1"},
		{"exactly 78", "X", strings.Repeat("a", 75), strings.Repeat("a", 75)},
		{"77 fits", "X", strings.Repeat("a", 70) + " bcd", strings.Repeat("a", 70) + " bcd"},
		{"81 breaks", "X", strings.Repeat("a", 74) + " bcd", strings.Repeat("a", 74) + "\n bcd"},
		{"several lines", "Received-SPF",
			"fail (mx.example.net: domain of alice@fail.example does not designate 192.0.2.1 as permitted sender) client-ip=192.0.2.1; envelope-from=\"alice@fail.example\"; helo=mx.pass.example; receiver=mx.example.net; mechanism=-all; identity=mailfrom",
			"fail (mx.example.net: domain of alice@fail.example does not\n" +
				" designate 192.0.2.1 as permitted sender) client-ip=192.0.2.1;\n" +
				" envelope-from=\"alice@fail.example\"; helo=mx.pass.example;\n" +
				" receiver=mx.example.net; mechanism=-all; identity=mailfrom"},
		{"unbreakable token stays whole", "X", "a " + strings.Repeat("b", 100) + " c",
			"a\n " + strings.Repeat("b", 100) + "\n c"},
		{"no break at a double space", "X", strings.Repeat("a", 74) + "  b", strings.Repeat("a", 74) + "  b"},
		{"no break at leading or trailing space", "X", " " + strings.Repeat("a", 80) + " ", " " + strings.Repeat("a", 80) + " "},
		{"empty", "X", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fold(tt.field, tt.value)
			if got != tt.want {
				t.Errorf("fold:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

// TestFoldUnfolds checks on random values that unfolding gives the value
// back and that every line that can be short is.
func TestFoldUnfolds(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := "abc  ;=\"()"
	for i := 0; i < 2000; i++ {
		b := make([]byte, rng.IntN(300))
		for j := range b {
			b[j] = alphabet[rng.IntN(len(alphabet))]
		}
		v := string(b)
		got := fold("Received-SPF", v)
		if strings.ReplaceAll(got, "\n", "") != v {
			t.Fatalf("fold(%q) = %q does not unfold to the value", v, got)
		}
		lines := strings.Split("Received-SPF: "+got, "\n")
		for k, line := range lines {
			if k > 0 && (!strings.HasPrefix(line, " ") || strings.TrimSpace(line) == "") {
				t.Fatalf("fold(%q): bad continuation line %q", v, line)
			}
			// A long line is allowed only when it has no place to break.
			if len(line) > maxLineLength && nextBreak(line, 1) < len(line) && k > 0 {
				t.Fatalf("fold(%q): line %q is long but could break", v, line)
			}
		}
	}
}

func TestParseAuthservID(t *testing.T) {
	tests := []struct {
		value  string
		want   string
		wantOK bool
	}{
		{"mx.example.net; spf=pass smtp.mailfrom=example.org", "mx.example.net", true},
		{"  MX.Example.NET;spf=pass", "MX.Example.NET", true},
		{"mx.example.net 1; spf=pass", "mx.example.net", true},
		{"mx.example.net; none", "mx.example.net", true},
		{"(comment) mx.example.net; spf=pass", "mx.example.net", true},
		{"(nested (comment) \\) here)\n\tmx.example.net;\n\tspf=pass", "mx.example.net", true},
		{"\n\tmx.example.net(trailing comment); dkim=pass", "mx.example.net", true},
		{"\"mx.example.net\"; spf=pass", "mx.example.net", true},
		{"\"mx.\\\"odd\\\".net\"; spf=pass", "mx.\"odd\".net", true},
		{"\"unterminated; spf=pass", "", false},
		{"", "", false},
		{"   ", "", false},
		{"(only a comment)", "", false},
		{"; spf=pass", "", false},
	}
	for _, tt := range tests {
		got, ok := parseAuthservID(tt.value)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("parseAuthservID(%q) = %q, %v; want %q, %v", tt.value, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestForgedHeaderChanges(t *testing.T) {
	var f forgedHeaders
	for _, h := range []hdr{
		{"Authentication-Results", "mx.example.net; spf=pass"},       // AR 1, ours
		{"received-spf", "pass"},                                     // RS 1
		{"Authentication-Results", "other.example; spf=pass"},        // AR 2
		{"AUTHENTICATION-RESULTS", "(x) Mx.Example.Net 1; spf=fail"}, // AR 3, ours
		{"Received-SPF", "fail"},                                     // RS 2
		{"Received", "from a by b"},
		{"Authentication-Results", "mx.example.net.evil; spf=pass"}, // AR 4
		{"Authentication-Results", "mx.example.net; dkim=pass"},     // AR 5, ours
	} {
		f.see(h.name, h.value, "mx.example.net")
	}
	want := []headerChange{
		{"Received-SPF", 2}, {"Received-SPF", 1},
		{"Authentication-Results", 5}, {"Authentication-Results", 3}, {"Authentication-Results", 1},
	}
	if got := f.changes(); !slices.Equal(got, want) {
		t.Errorf("changes:\n got %v\nwant %v", got, want)
	}

	// Without an authserv-id of our own, no Authentication-Results is ours.
	var g forgedHeaders
	g.see("Authentication-Results", "; spf=pass", "")
	g.see("Authentication-Results", "mx.example.net; spf=pass", "")
	if got := g.changes(); len(got) != 0 {
		t.Errorf("changes with no authserv-id: %v", got)
	}
}

func TestHeaderFields(t *testing.T) {
	mf := outcomeFor(spf.Pass)
	mf.Mechanism = "mx"
	helo := &spf.Outcome{
		Result: spf.Neutral, Identity: spf.IdentityHELO, Domain: "mx.example.org",
		Sender: "postmaster@mx.example.org", IP: mf.IP, HELO: "mx.example.org", Mechanism: "?all",
	}
	const (
		rsMailFrom = `pass (mx.example.net: domain of alice@example.org designates 192.0.2.1 as permitted sender) client-ip=192.0.2.1; envelope-from="alice@example.org"; helo=mx.example.org; receiver=mx.example.net; mechanism=mx; identity=mailfrom`
		rsHELO     = `neutral (mx.example.net: 192.0.2.1 is neither permitted nor denied by domain of mx.example.org) client-ip=192.0.2.1; envelope-from="postmaster@mx.example.org"; helo=mx.example.org; receiver=mx.example.net; mechanism=?all; identity=helo`
		arBoth     = `mx.example.net; spf=neutral smtp.helo=mx.example.org; spf=pass smtp.mailfrom=example.org`
	)
	tests := []struct {
		name     string
		rs, ar   bool
		outcomes []*spf.Outcome
		want     []hdr
	}{
		{"both, MAIL FROM first whatever the order given", true, true, []*spf.Outcome{helo, mf},
			[]hdr{{"Received-SPF", rsMailFrom}, {"Received-SPF", rsHELO}, {"Authentication-Results", arBoth}}},
		{"nil outcomes skipped", true, true, []*spf.Outcome{nil, mf, nil},
			[]hdr{{"Received-SPF", rsMailFrom}, {"Authentication-Results", "mx.example.net; spf=pass smtp.mailfrom=example.org"}}},
		{"Received-SPF only", true, false, []*spf.Outcome{mf, helo},
			[]hdr{{"Received-SPF", rsMailFrom}, {"Received-SPF", rsHELO}}},
		{"Authentication-Results only", false, true, []*spf.Outcome{mf, helo},
			[]hdr{{"Authentication-Results", arBoth}}},
		{"neither", false, false, []*spf.Outcome{mf}, nil},
		{"no outcome", true, true, []*spf.Outcome{nil}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Headers.ReceivedSPF = tt.rs
			cfg.Headers.AuthenticationResults = tt.ar
			var got []hdr
			for _, f := range HeaderFields(cfg, tt.outcomes...) {
				checkFolded(t, f.Name, f.Value)
				got = append(got, hdr{f.Name, strings.ReplaceAll(f.Value, "\n", "")})
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("HeaderFields:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}
