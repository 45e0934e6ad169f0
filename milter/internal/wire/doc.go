// Package wire is the milter connection as go-milter v0.5.0's session loop
// sees it: what spf-milter adds under go-milter, on the bytes, to time,
// buffer and shorten the milter protocol without changing go-milter.
package wire
