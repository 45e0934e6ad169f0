// Package doccheck holds no code: its test checks that every relative link
// in the repository's Markdown pages (README.md and the other pages at the
// root, docs/*.md) points at a file that exists, and that a link to a
// heading of a Markdown page names a heading that page has.
package doccheck
