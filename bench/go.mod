module github.com/spf-milter/spf-milter/bench

go 1.26

require (
	blitiri.com.ar/go/spf v1.6.0
	github.com/spf-milter/spf-milter v0.0.0
)

require (
	github.com/emersion/go-msgauth v0.7.0 // indirect
	github.com/miekg/dns v1.1.73 // indirect
	golang.org/x/net v0.57.0 // indirect
	golang.org/x/sys v0.47.0 // indirect
	golang.org/x/text v0.40.0 // indirect
)

// The benchmarks measure the working tree, not a published version.
replace github.com/spf-milter/spf-milter => ../
