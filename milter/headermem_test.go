package milter

import (
	"fmt"
	"net/netip"
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

// TestRelayHeaderMemoryBounded: from a relay, the Received fields are
// read as they stream and none is kept, however many a message carries.
func TestRelayHeaderMemoryBounded(t *testing.T) {
	cfg := testConfig()
	cfg.Relays = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
	h := newHarness(t, cfg, testZone(t))
	cs := h.connect("198.51.100.7", "gw.example.net")
	relayHop := hdr{"Received", "from gw2.example.net (gw2.example.net [198.51.100.8]) by gw.example.net (Postfix) with ESMTP id X; " + strings.Repeat("v", 100)}
	origin := receivedField(passHELO, "192.0.2.1")
	many := func(first hdr, n int) []hdr {
		out := []hdr{first}
		for range n {
			out = append(out, relayHop)
		}
		return out
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	for _, tt := range []struct {
		name    string
		headers func() []hdr
		rspf    string // in the Received-SPF inserted
	}{
		{"50,000 relay hops", func() []hdr { return many(relayHop, 50000) }, "no client to check: more than 50 Received fields of relays"},
		{"the client, then 50,000 more fields", func() []hdr { return many(origin, 50000) }, "client-ip=192.0.2.1;"},
	} {
		o := h.send(cs, message{from: "alice@pass.example", rcpts: []string{"bob@example.net"}, headers: tt.headers()})
		if got := reply(o.end); got != "continue" {
			t.Errorf("%s: end of message answered %q", tt.name, got)
		}
		if ins := inserted(t, o.mods); len(ins) == 0 || !strings.Contains(ins[0].value, tt.rspf) {
			t.Errorf("%s: inserted %q, want a Received-SPF with %q", tt.name, ins, tt.rspf)
		}
	}
	after := heap()
	const bound = 8 << 20 // the fields take about 20 MB when kept
	if after > before && after-before > bound {
		t.Errorf("the heap grew by %d KiB over 100,000 Received fields, want at most %d KiB", (after-before)>>10, bound>>10)
	}
	t.Logf("heap grew by %d KiB", (int64(after)-int64(before))>>10)
}
