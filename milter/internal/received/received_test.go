package received

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// corpusCase is one field of a testdata file: a block of lines
//
//	# what the field is
//	ok IP helo=HELO [auth]      or      error TEXT IN THE ERROR
//	the field value, folded as the MTA folds it
type corpusCase struct {
	file, name, want, value string
}

// readCorpus reads every testdata/*.txt file; a blank line ends a case.
func readCorpus(t testing.TB) []corpusCase {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no corpus files: %v", err)
	}
	var out []corpusCase
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, block := range strings.Split(strings.TrimSpace(string(b)), "\n\n") {
			lines := strings.Split(block, "\n")
			if len(lines) < 3 || !strings.HasPrefix(lines[0], "# ") {
				t.Fatalf("%s: malformed case %q", f, block)
			}
			out = append(out, corpusCase{filepath.Base(f), lines[0][2:], lines[1], strings.Join(lines[2:], "\n")})
		}
	}
	return out
}

// TestCorpus parses a field of each MTA family and hostile variants, each
// with LF and with CRLF line folds.
func TestCorpus(t *testing.T) {
	cases := readCorpus(t)
	families := map[string]int{}
	for _, c := range cases {
		families[c.file]++
		for _, eol := range []string{"\n", "\r\n"} {
			value := strings.ReplaceAll(c.value, "\n", eol)
			got, err := Parse(value)
			label := c.file + ": " + c.name + " (" + map[string]string{"\n": "LF", "\r\n": "CRLF"}[eol] + ")"
			if msg, ok := strings.CutPrefix(c.want, "error "); ok {
				if err == nil {
					t.Errorf("%s: got %+v, want an error with %q", label, got, msg)
				} else if !strings.Contains(err.Error(), msg) {
					t.Errorf("%s: error %q, want one with %q", label, err, msg)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s: %v", label, err)
				continue
			}
			f := strings.Fields(c.want)
			if len(f) < 3 || f[0] != "ok" || !strings.HasPrefix(f[2], "helo=") {
				t.Fatalf("%s: malformed want %q", label, c.want)
			}
			want := Hop{IP: netip.MustParseAddr(f[1]), HELO: f[2][len("helo="):], Authenticated: len(f) > 3 && f[3] == "auth"}
			if got != want {
				t.Errorf("%s: got %+v, want %+v", label, got, want)
			}
		}
	}
	for _, f := range []string{"postfix.txt", "sendmail.txt", "exim.txt", "exchange.txt", "gmail.txt", "hostile.txt"} {
		if families[f] == 0 {
			t.Errorf("no case in %s", f)
		}
	}
}

// TestHostileBytes: very long fields and control characters are refused,
// not cut or cleaned into something that parses.
func TestHostileBytes(t *testing.T) {
	good := "from mail.sender.example (unknown [203.0.113.5]) by mx.example.net (Postfix) with ESMTP id X"
	if _, err := Parse(good); err != nil {
		t.Fatalf("the base field: %v", err)
	}
	long := good + " (" + strings.Repeat("x", MaxLen) + ")"
	if _, err := Parse(long); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("a %d-octet field: %v, want refused as too long", len(long), err)
	}
	// Just under the bound, a long comment after the from clause is read.
	fits := good + " (" + strings.Repeat("x", MaxLen-len(good)-3) + ")"
	if len(fits) > MaxLen {
		t.Fatalf("test field of %d octets", len(fits))
	}
	if h, err := Parse(fits); err != nil || h.IP != netip.MustParseAddr("203.0.113.5") {
		t.Errorf("a %d-octet field: %+v, %v", len(fits), h, err)
	}
	// A very long name is one word, whatever it holds.
	longName := "from " + strings.Repeat("a", 1500) + " (unknown [203.0.113.5]) by mx.example.net"
	if h, err := Parse(longName); err != nil || h.IP != netip.MustParseAddr("203.0.113.5") {
		t.Errorf("a long HELO name: %+v, %v", h, err)
	}
	for _, c := range []string{"\x00", "\x1b", "\x7f", "\v"} {
		v := strings.Replace(good, "unknown", "unk"+c+"nown", 1)
		if _, err := Parse(v); err == nil || !strings.Contains(err.Error(), "control character") {
			t.Errorf("field with %q: %v, want refused", c, err)
		}
	}
	// Many nested comments.
	deep := "from x (" + strings.Repeat("(", 500) + "[203.0.113.5]" + strings.Repeat(")", 500) + ") by y"
	if h, err := Parse(deep); err != nil || h.IP != netip.MustParseAddr("203.0.113.5") {
		t.Errorf("deeply nested comments: %+v, %v", h, err)
	}
}

// FuzzParse: no input panics, and an accepted one gives a valid,
// unscoped, unmapped address.
func FuzzParse(f *testing.F) {
	for _, c := range readCorpus(f) {
		f.Add(c.value)
	}
	f.Fuzz(func(t *testing.T, v string) {
		h, err := Parse(v)
		if err != nil {
			return
		}
		if !h.IP.IsValid() || h.IP.Zone() != "" || h.IP.Is4In6() {
			t.Fatalf("Parse(%q) = %+v", v, h)
		}
	})
}
