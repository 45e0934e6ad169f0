// Package htmltest reads the why page as a browser would, for the tests
// of the page itself and for the end-to-end test that loads it in a real
// browser: one definition of "the text of an element" and one of "the page
// is inert", so that both hold the page to the same rule.
package htmltest

import (
	"bytes"
	"strings"
	"testing"

	"golang.org/x/net/html"
)

// Parse parses a page, failing t if it is not HTML.
func Parse(t testing.TB, body string) *html.Node {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(body))
	if err != nil {
		t.Fatalf("page does not parse: %v", err)
	}
	return doc
}

// Walk calls f for every element below n (n included) in document order,
// until f returns false; it reports whether f never did. A nil n has no
// elements.
func Walk(n *html.Node, f func(*html.Node) bool) bool {
	if n == nil {
		return true
	}
	if n.Type == html.ElementNode && !f(n) {
		return false
	}
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		if !Walk(c, f) {
			return false
		}
	}
	return true
}

// ByID returns the first element with the given id below n, or nil.
func ByID(n *html.Node, id string) *html.Node {
	var found *html.Node
	Walk(n, func(e *html.Node) bool {
		if Attr(e, "id") == id {
			found = e
			return false
		}
		return true
	})
	return found
}

// First returns the first element named tag below n, or nil.
func First(n *html.Node, tag string) *html.Node {
	if es := Elements(n, tag); len(es) > 0 {
		return es[0]
	}
	return nil
}

// Elements returns every element named tag below n, in document order.
func Elements(n *html.Node, tag string) []*html.Node {
	var out []*html.Node
	Walk(n, func(e *html.Node) bool {
		if e.Data == tag {
			out = append(out, e)
		}
		return true
	})
	return out
}

// Attr returns the value of e's attribute key, or "".
func Attr(e *html.Node, key string) string {
	for _, a := range e.Attr {
		if a.Namespace == "" && a.Key == key {
			return a.Val
		}
	}
	return ""
}

// HasAttr reports whether e has the attribute key, with any value.
func HasAttr(e *html.Node, key string) bool {
	for _, a := range e.Attr {
		if a.Namespace == "" && a.Key == key {
			return true
		}
	}
	return false
}

// RawText returns the text below n as written, white space included; ""
// for a nil n.
func RawText(n *html.Node) string {
	if n == nil {
		return ""
	}
	var b strings.Builder
	var collect func(*html.Node)
	collect = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			collect(c)
		}
	}
	collect(n)
	return b.String()
}

// Text returns the text below n with each run of white space made one
// space, as a reader sees it.
func Text(n *html.Node) string {
	return strings.Join(strings.Fields(RawText(n)), " ")
}

// Render returns n as HTML, for a message.
func Render(n *html.Node) string {
	var b bytes.Buffer
	html.Render(&b, n)
	return b.String()
}

// The elements and attributes the why page is made of. Anything else in a
// page came from its input or from DNS and was not escaped: an element
// that can run code or load something, an event handler, a link.
var (
	pageElements = map[string]bool{
		"html": true, "head": true, "body": true, "meta": true, "title": true, "style": true, "main": true,
		"h1": true, "h2": true, "p": true, "dl": true, "dt": true, "dd": true, "section": true, "pre": true,
		"mark": true, "code": true, "ul": true, "li": true, "details": true, "summary": true, "form": true,
		"label": true, "input": true, "button": true, "footer": true,
	}
	pageAttributes = map[string]bool{
		"lang": true, "charset": true, "name": true, "content": true, "id": true, "class": true,
		"method": true, "value": true, "maxlength": true, "required": true, "type": true,
	}
)

// CheckInert fails t if the document could run or load anything: an
// element or attribute the page does not write itself (script, style or
// event attributes, links, frames, images, objects, forms sent
// elsewhere, a meta refresh) or a second style element.
func CheckInert(t testing.TB, doc *html.Node) {
	t.Helper()
	Walk(doc, func(e *html.Node) bool {
		if !pageElements[e.Data] {
			t.Errorf("the page holds a <%s> element: %s", e.Data, Render(e))
		}
		for _, a := range e.Attr {
			if !pageAttributes[a.Key] {
				t.Errorf("unexpected attribute %s=%q on <%s>", a.Key, a.Val, e.Data)
			}
		}
		if e.Data == "meta" && !HasAttr(e, "charset") && Attr(e, "name") == "" {
			t.Errorf("the page holds a <meta> that is neither its charset nor named: %s", Render(e))
		}
		return true
	})
	if n := len(Elements(doc, "style")); n != 1 {
		t.Errorf("%d <style> elements, want the page's own only", n)
	}
}

// CheckInertPage is CheckInert for a page as served, which must also not
// hold script or image markup anywhere, even where a parser would not
// make an element of it.
func CheckInertPage(t testing.TB, body string) {
	t.Helper()
	CheckInert(t, Parse(t, body))
	if lower := strings.ToLower(body); strings.Contains(lower, "<script") || strings.Contains(lower, "<img") {
		t.Errorf("raw markup in the page:\n%s", body)
	}
}
