package milter

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// TestSessionKeepsNoTrace opens connections that each stop after MAIL FROM
// of a domain whose record has thousands of terms, all evaluated: every
// check writes a trace of thousands of steps (some 500 KB). The sessions
// keep their outcomes until the message ends; what they keep of such a
// check must be about what they keep of a check of an ordinary record,
// not its trace. Before, each session held the trace while its client
// let it idle.
func TestSessionKeepsNoTrace(t *testing.T) {
	const conns = 40
	z := testZone(t)
	var rec strings.Builder
	rec.WriteString("v=spf1")
	for i := 0; rec.Len() < 60<<10; i++ {
		fmt.Fprintf(&rec, " ip4:10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff)
	}
	rec.WriteString(" ip4:" + clientIP + " -all")
	var strs []string
	for s := rec.String(); s != ""; s = s[min(len(s), 255):] {
		strs = append(strs, s[:min(len(s), 255)])
	}
	z.AddTXT("big.example", strs...)
	h := newHarness(t, testConfig(), z)

	heap := func() int64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return int64(ms.HeapAlloc)
	}
	// grow opens conns connections, each after MAIL FROM of sender, and
	// returns how much the heap grew with them open.
	grow := func(sender string) int64 {
		before := heap()
		for range conns {
			cs := h.connect(clientIP, passHELO)
			h.mustContinue("mail", must(t)(cs.Mail("<"+sender+">", nil)))
		}
		return heap() - before
	}
	ordinary := grow("alice@pass.example")
	large := grow("alice@big.example")
	// Each session keeps the record's text (60 KiB) in its outcome, and
	// no more than an ordinary check beside it.
	limit := ordinary + conns*(128<<10)
	t.Logf("%d sessions after MAIL FROM: heap grew %d KiB for an ordinary record, %d KiB for a large one (limit %d KiB)",
		conns, ordinary>>10, large>>10, limit>>10)
	if large > limit {
		t.Errorf("%d sessions of a large record hold %d KiB, more than %d KiB", conns, large>>10, limit>>10)
	}
}
