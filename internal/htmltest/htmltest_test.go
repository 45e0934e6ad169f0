package htmltest

import (
	"strings"
	"testing"
)

const page = `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>t</title><style>p{}</style></head>
<body><main><p id="a">one  <code>two</code>
three</p><pre id="record">v=spf1  -all</pre></main></body></html>`

// TestText checks the text helpers on a small page.
func TestText(t *testing.T) {
	doc := Parse(t, page)
	tests := []struct{ name, got, want string }{
		{"raw text keeps white space", RawText(ByID(doc, "record")), "v=spf1  -all"},
		{"text collapses it", Text(ByID(doc, "a")), "one two three"},
		{"nothing for no element", Text(ByID(doc, "missing")), ""},
		{"first element", Text(First(doc, "code")), "two"},
		{"attribute", Attr(First(doc, "html"), "lang"), "en"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, tt.got, tt.want)
		}
	}
	if n := len(Elements(doc, "p")); n != 1 {
		t.Errorf("%d p elements, want 1", n)
	}
}

// recorder is a testing.TB that notes failures instead of failing.
type recorder struct {
	testing.TB
	failed []string
}

func (r *recorder) Helper()                   {}
func (r *recorder) Errorf(f string, a ...any) { r.failed = append(r.failed, f) }
func (r *recorder) Fatalf(f string, a ...any) { r.failed = append(r.failed, f) }

// TestCheckInert checks that CheckInertPage passes the page and fails it
// for each thing that could run or load.
func TestCheckInert(t *testing.T) {
	tests := []struct {
		name   string
		insert string // put into the page's main element
		fail   bool
	}{
		{"the page as it is", "", false},
		{"escaped markup", "&lt;script&gt;alert(1)&lt;/script&gt;", false},
		{"a script", "<script>alert(1)</script>", true},
		{"an image", `<img src=x>`, true},
		{"an event handler", `<p onclick="x()">p</p>`, true},
		{"a link", `<a href="https://example.com/">a</a>`, true},
		{"a second style", `<style>p{}</style>`, true},
		{"a meta refresh", `<meta http-equiv="refresh" content="0">`, true},
		{"a frame", `<iframe src="x"></iframe>`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &recorder{TB: t}
			CheckInertPage(r, strings.Replace(page, "<main>", "<main>"+tt.insert, 1))
			if failed := len(r.failed) > 0; failed != tt.fail {
				t.Errorf("failed = %v (%q), want %v", failed, r.failed, tt.fail)
			}
		})
	}
}
