package bench

import (
	"context"
	"net"
	"testing"

	blitiri "blitiri.com.ar/go/spf"

	"github.com/spf-milter/spf-milter/spf"
)

var _ blitiri.DNSResolver = blitiriResolver{}

// recordModes are the two ways the answers are served: the same record texts
// on every check (what a receiver mostly sees, and what lets ours reuse
// parsed records), or new texts on every check (so that each check parses
// every record, as blitiri always does).
var recordModes = []struct {
	name   string
	unique bool
}{
	{"repeated", false},
	{"unique", true},
}

// checker is spf-milter's evaluator with its default limits and timeout.
func checker(unique bool) *spf.Checker {
	return &spf.Checker{Resolver: oursResolver{unique: unique}, Receiver: receiver}
}

// checkBlitiri runs blitiri's evaluator with its default limits (10 DNS
// lookups, 2 void lookups: the same as ours, and far above the 4 lookups the
// policy needs) and no trace function.
func checkBlitiri(ctx context.Context, ip net.IP, unique bool) (blitiri.Result, error) {
	return blitiri.CheckHostWithSender(ip, helo, sender,
		blitiri.WithResolver(blitiriResolver{unique: unique}), blitiri.WithContext(ctx))
}

// TestSameResults makes the comparison fair: both libraries must reach the
// expected result on every benchmarked case, so neither can look fast by
// stopping early or taking another path. It checks each case twice to catch
// an evaluator that changes the shared answers.
func TestSameResults(t *testing.T) {
	ctx := context.Background()
	for _, mode := range recordModes {
		c := checker(mode.unique)
		for _, tc := range cases {
			t.Run(tc.name+"/"+mode.name, func(t *testing.T) {
				for range 2 {
					out := c.CheckMailFrom(ctx, tc.ip, sender, helo)
					if out.Result != tc.want {
						t.Fatalf("ours: %s, want %s (problem %q)", out.Result, tc.want, out.Problem)
					}
					// redirect= and the three include: terms.
					if out.DNSLookups != 4 || out.VoidLookups != 0 {
						t.Errorf("ours: %d DNS lookups and %d void, want 4 and 0", out.DNSLookups, out.VoidLookups)
					}
					got, err := checkBlitiri(ctx, net.IP(tc.ip.AsSlice()), mode.unique)
					if string(got) != string(tc.want) {
						t.Fatalf("blitiri: %s (%v), want %s", got, err, tc.want)
					}
				}
			})
		}
	}
}

// BenchmarkCompare measures a warm check (every DNS answer already in
// memory) of the same policy by both libraries, in one run so that the
// figures share a machine and its load. blitiri comes first so that
// `benchstat -col /lib` takes it as the base and prints ours against it.
func BenchmarkCompare(b *testing.B) {
	ctx := context.Background()
	b.Run("lib=blitiri", func(b *testing.B) {
		for _, tc := range cases {
			ip := net.IP(tc.ip.AsSlice())
			for _, mode := range recordModes {
				b.Run("case="+tc.name+"/records="+mode.name, func(b *testing.B) {
					if got, err := checkBlitiri(ctx, ip, mode.unique); string(got) != string(tc.want) {
						b.Fatalf("blitiri: %s (%v), want %s", got, err, tc.want)
					}
					b.ReportAllocs()
					for b.Loop() {
						checkBlitiri(ctx, ip, mode.unique)
					}
				})
			}
		}
	})
	b.Run("lib=ours", func(b *testing.B) {
		for _, tc := range cases {
			for _, mode := range recordModes {
				c := checker(mode.unique)
				b.Run("case="+tc.name+"/records="+mode.name, func(b *testing.B) {
					if out := c.CheckMailFrom(ctx, tc.ip, sender, helo); out.Result != tc.want {
						b.Fatalf("ours: %s, want %s (problem %q)", out.Result, tc.want, out.Problem)
					}
					b.ReportAllocs()
					for b.Loop() {
						c.CheckMailFrom(ctx, tc.ip, sender, helo)
					}
				})
			}
		}
	})
}
