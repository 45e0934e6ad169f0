package milter

import (
	"fmt"
	"net"
	"net/textproto"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
)

// headerMapMilter records what go-milter shows of its header map: the map
// behind Modifier.Headers at each field, and the one Headers gets.
type headerMapMilter struct {
	gomilter.NoOpMilter
	clear bool
	// held is, per field, whether Modifier.Headers held it when Header
	// ran; same whether it was the map later handed to Headers.
	held, same []bool
	last       uintptr
	atEOH      []int // fields in the map handed to Headers, per message
}

func (m *headerMapMilter) Header(name, value string, mod *gomilter.Modifier) (gomilter.Response, error) {
	m.held = append(m.held, mod.Headers.Get(name) == value)
	m.last = reflect.ValueOf(mod.Headers).Pointer()
	if m.clear {
		clear(mod.Headers)
	}
	return gomilter.RespContinue, nil
}

func (m *headerMapMilter) Headers(h textproto.MIMEHeader, _ *gomilter.Modifier) (gomilter.Response, error) {
	m.same = append(m.same, reflect.ValueOf(h).Pointer() == m.last)
	n := 0
	for _, vs := range h {
		n += len(vs)
	}
	m.atEOH = append(m.atEOH, n)
	return gomilter.RespContinue, nil
}

func (m *headerMapMilter) Body(*gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}

// TestGoMilterHeaderMap pins what the session's bound on header memory
// relies on in go-milter v0.5.0: it adds every field to a map of its own
// that only an abort resets, so that the map grows across the messages of
// a connection; that map is Modifier.Headers in Header, with the field
// already in it; and emptying it there leaves it empty (and small) for the
// next field. If go-milter changes any of this, session.Header's clear
// must be looked at again.
func TestGoMilterHeaderMap(t *testing.T) {
	for _, clearing := range []bool{false, true} {
		t.Run(fmt.Sprintf("clear=%v", clearing), func(t *testing.T) {
			m := &headerMapMilter{clear: clearing}
			srv := &gomilter.Server{
				NewMilter: func() gomilter.Milter { return m },
				Protocol:  gomilter.OptNoBody,
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				srv.Serve(ln)
			}()
			defer func() {
				srv.Close()
				<-done
			}()
			c := gomilter.NewClientWithOptions("tcp", ln.Addr().String(), gomilter.ClientOptions{
				ReadTimeout: time.Minute, WriteTimeout: time.Minute,
			})
			cs, err := c.Session()
			if err != nil {
				t.Fatal(err)
			}
			must(t)(cs.Conn("client.example", gomilter.FamilyInet, 25, clientIP))
			for msg := range 2 {
				must(t)(cs.Mail("alice@pass.example", nil))
				must(t)(cs.Rcpt("bob@example.net", nil))
				for i := range 3 {
					must(t)(cs.HeaderField(fmt.Sprintf("X-%d-%d", msg, i), "v"))
				}
				must(t)(cs.HeaderEnd())
				if _, _, err := cs.End(); err != nil {
					t.Fatal(err)
				}
			}
			// End and Close run the session loop to its end before m is read.
			if err := cs.Close(); err != nil {
				t.Fatal(err)
			}
			srv.Close()
			<-done

			for i, ok := range m.held {
				if !ok {
					t.Errorf("field %d was not in Modifier.Headers when Header ran", i)
				}
			}
			for i, ok := range m.same {
				if !ok {
					t.Errorf("message %d: Headers got another map than Modifier.Headers", i)
				}
			}
			want := []int{3, 6} // kept across messages: no abort between them
			if clearing {
				want = []int{0, 0}
			}
			if fmt.Sprint(m.atEOH) != fmt.Sprint(want) {
				t.Errorf("fields in the map at the end of each message: %v, want %v", m.atEOH, want)
			}
		})
	}
}

// TestHeaderMemoryBounded sends 100,000 header fields in four messages on
// one connection, as a hostile sender can through any MTA: distinct names,
// forged Received-SPF past the bound, and another server's
// Authentication-Results. The heap the connection holds once they are
// answered must not grow with them, and each message is answered as the
// forged-header rules say.
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
