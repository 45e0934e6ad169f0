package spf

import (
	"bufio"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

// suiteRecords returns the record-like strings of the RFC 7208 suite, to
// seed the fuzzers with the creative syntax its authors collected.
func suiteRecords(f *testing.F) []string {
	path := os.Getenv("SPF_TESTSUITE")
	if path == "" {
		path = "../../shared/spf-testsuite"
	}
	if !strings.HasSuffix(path, ".yml") {
		path += "/rfc7208-tests.yml"
	}
	file, err := os.Open(path)
	if err != nil {
		f.Logf("no suite seeds: %v", err)
		return nil
	}
	defer file.Close()
	var out []string
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		for _, key := range []string{"- SPF:", "- TXT:"} {
			if v, ok := strings.CutPrefix(line, key); ok {
				out = append(out, strings.Trim(strings.TrimSpace(v), `"'`))
			}
		}
	}
	return out
}

func FuzzParse(f *testing.F) {
	for _, s := range suiteRecords(f) {
		f.Add(s)
	}
	f.Add("v=spf1 a:%{H}.bar/24//64 mx:example.org ptr exists:%{ir}.x.example ~all redirect=x.example exp=e.%{d}")
	f.Fuzz(func(t *testing.T, s string) {
		r, err := Parse(s)
		if err != nil {
			if r != nil {
				t.Fatal("record and error")
			}
			for _, c := range err.Error() {
				if c < ' ' || c > '~' {
					t.Fatalf("error %q holds a raw control or non-ASCII character", err)
				}
			}
			return
		}
		// Whatever parses prints back to text that parses to the same.
		again, err := Parse(r.String())
		if err != nil {
			t.Fatalf("%q printed as %q which does not parse: %v", s, r.String(), err)
		}
		if again.String() != r.String() {
			t.Fatalf("%q: %q then %q", s, r.String(), again.String())
		}
	})
}

func FuzzMacro(f *testing.F) {
	for _, s := range suiteRecords(f) {
		f.Add(s, true)
	}
	for _, s := range []string{"%{ir}.%{v}._spf.%{d2}", "%{l1r-}", "%{S}%%%_%-", "%{d99999}", "%{t}%{c}%{r}", "%{p}"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	env := &MacroEnv{
		Sender:   "strong-bad@email.example.com",
		Domain:   "email.example.com",
		IP:       netip.MustParseAddr("2001:db8::cb01"),
		HELO:     "mx.example.org",
		Receiver: "mx.example.net",
		Now:      time.Unix(1e9, 0),
		PTR:      func() string { return "host.example.com" },
	}
	f.Fuzz(func(t *testing.T, s string, explanation bool) {
		m, err := ParseMacroString(s, explanation)
		if err != nil {
			return
		}
		if m.String() != s {
			t.Fatalf("String() = %q, want %q", m.String(), s)
		}
		out := m.Expand(env)
		// An expansion holds only what the input and the values hold:
		// never a control character that was not in the input.
		for i := 0; i < len(out); i++ {
			if out[i] < ' ' && !strings.Contains(s, out[i:i+1]) {
				t.Fatalf("%q expands to %q with a control character", s, out)
			}
		}
	})
}
