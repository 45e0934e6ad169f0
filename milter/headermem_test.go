package milter

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// TestHeaderMemoryBounded sends 100,000 header fields in four messages on
// one connection, as a hostile sender can through any MTA: distinct names,
// forged Received-SPF past the bound, and another server's
// Authentication-Results. The heap the connection holds once they are
// answered must not grow with them, and each message is answered as the
// forged-header rules say. The go-milter header map this bound relies on
// emptying is pinned by wire's TestGoMilterHeaderMap.
func TestHeaderMemoryBounded(t *testing.T) {
	h := newHarness(t, testConfig(), testZone(t))
	cs := h.connect(clientIP, passHELO)
	value := strings.Repeat("v", 100)
	fields := func(n int, name func(i int) string, value string) func() []hdr {
		return func() []hdr {
			out := make([]hdr, n)
			for i := range out {
				out[i] = hdr{name(i), value}
			}
			return out
		}
	}
	ours := func() []hdr { return []hdr{{"Authentication-Results", ourAuthID + "; spf=pass"}} }
	tests := []struct {
		name    string
		headers []func() []hdr
		want    string // the end-of-message reply
		deleted int    // fields the milter deletes
	}{
		{"30,000 distinct fields", []func() []hdr{fields(30000, func(i int) string { return fmt.Sprintf("X-Field-%d", i) }, value)}, "continue", 0},
		// More forged fields than can be removed: deferred rather
		// than passed with forged fields in.
		{"30,000 forged Received-SPF", []func() []hdr{fields(30000, func(int) string { return "Received-SPF" }, "pass "+value)}, internalErrorReply, 0},
		{"30,000 of another's Authentication-Results and one of ours",
			[]func() []hdr{fields(30000, func(int) string { return "Authentication-Results" }, "other.example; spf=pass"), ours}, "continue", 1},
		{"9,999 distinct fields", []func() []hdr{fields(9999, func(i int) string { return fmt.Sprintf("Y-%d", i) }, value)}, "continue", 0},
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	for _, tt := range tests {
		// Built here and dropped after, so that only what the daemon
		// keeps of them counts.
		var headers []hdr
		for _, f := range tt.headers {
			headers = append(headers, f()...)
		}
		o := h.send(cs, message{from: "alice@pass.example", rcpts: []string{"bob@example.net"}, headers: headers})
		if got := reply(o.end); got != tt.want {
			t.Errorf("%s: end of message answered %q, want %q", tt.name, got, tt.want)
		}
		if got := len(changes(o.mods)); got != tt.deleted {
			t.Errorf("%s: %d header changes, want %d", tt.name, got, tt.deleted)
		}
	}
	// The connection is still open: what its session keeps is live.
	after := heap()
	const bound = 8 << 20 // the fields take about 20 MB when kept
	if after > before && after-before > bound {
		t.Errorf("the heap grew by %d KiB over 100,000 header fields, want at most %d KiB", (after-before)>>10, bound>>10)
	}
	t.Logf("heap grew by %d KiB", (int64(after)-int64(before))>>10)
}
