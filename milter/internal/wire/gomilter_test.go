package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/textproto"
	"os"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
)

// These tests pin the go-milter v0.5.0 behaviours the package doc lists:
// each fails if an upgrade changes one. They run go-milter's Server on one
// end of a net.Pipe, with a connection that records what go-milter does
// with it, and play the MTA on the other end.

// recConn records go-milter's use of a connection.
type recConn struct {
	net.Conn
	mu sync.Mutex
	// ops is every call, in order: "read N", "write N", "deadline",
	// "close".
	ops []string
	// got counts the bytes read; reading is set while a Read runs.
	got     int
	reading atomic.Bool
	closed  chan struct{}
	once    sync.Once
}

func newRecConn(c net.Conn) *recConn { return &recConn{Conn: c, closed: make(chan struct{})} }

func (c *recConn) note(op string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ops = append(c.ops, op)
}

func (c *recConn) Read(p []byte) (int, error) {
	c.reading.Store(true)
	n, err := c.Conn.Read(p)
	c.reading.Store(false)
	c.mu.Lock()
	c.got += n
	c.mu.Unlock()
	c.note(fmt.Sprintf("read %d", n))
	return n, err
}

func (c *recConn) Write(p []byte) (int, error) {
	c.note(fmt.Sprintf("write %d", len(p)))
	return c.Conn.Write(p)
}

func (c *recConn) SetDeadline(t time.Time) error {
	c.note("deadline")
	return c.Conn.SetDeadline(t)
}

func (c *recConn) SetReadDeadline(t time.Time) error {
	c.note("deadline")
	return c.Conn.SetReadDeadline(t)
}

func (c *recConn) SetWriteDeadline(t time.Time) error {
	c.note("deadline")
	return c.Conn.SetWriteDeadline(t)
}

func (c *recConn) Close() error {
	c.note("close")
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// bytesRead is what go-milter has read so far.
func (c *recConn) bytesRead() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got
}

// opList is the calls made so far.
func (c *recConn) opList() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.ops...)
}

// onceListener hands out one connection, then fails as a closed listener.
type onceListener struct {
	c      net.Conn
	done   bool
	closes atomic.Int32
}

func (l *onceListener) Accept() (net.Conn, error) {
	if l.done {
		return nil, net.ErrClosed
	}
	l.done = true
	return l.c, nil
}

func (l *onceListener) Close() error   { l.closes.Add(1); return nil }
func (l *onceListener) Addr() net.Addr { return l.c.LocalAddr() }

// pipeMTA is the MTA end of a session.
type pipeMTA struct {
	t *testing.T
	c net.Conn
}

// serveOne serves one session of srv over a pipe and returns both ends.
// Serve must return as soon as it has started the session, with the
// listener's error, and close the listener: a Daemon hands each connection
// to Serve that way.
func serveOne(t *testing.T, srv *gomilter.Server) (*pipeMTA, *recConn) {
	t.Helper()
	client, server := net.Pipe()
	rc := newRecConn(server)
	ln := &onceListener{c: rc}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Serve returned %v, want the listener's net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return once its listener failed")
	}
	if ln.closes.Load() == 0 {
		t.Error("Serve returned without closing its listener")
	}
	if err := client.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return &pipeMTA{t: t, c: client}, rc
}

// send writes one packet in one write.
func (m *pipeMTA) send(code byte, data string) {
	m.t.Helper()
	p := appendPacket(nil, code, []byte(data))
	if _, err := m.c.Write(p); err != nil {
		m.t.Fatalf("send %q: %v", code, err)
	}
}

// recv reads one packet.
func (m *pipeMTA) recv() (code byte, data []byte) {
	m.t.Helper()
	var n uint32
	if err := binary.Read(m.c, binary.BigEndian, &n); err != nil {
		m.t.Fatalf("recv: %v", err)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(m.c, b); err != nil {
		m.t.Fatalf("recv: %v", err)
	}
	return b[0], b[1:]
}

// offer is the data of an SMFIC_OPTNEG packet.
func offer(version uint32, actions gomilter.OptAction, proto gomilter.OptProtocol) string {
	b := binary.BigEndian.AppendUint32(nil, version)
	b = binary.BigEndian.AppendUint32(b, uint32(actions))
	return string(binary.BigEndian.AppendUint32(b, uint32(proto)))
}

// connectData is the data of an SMFIC_CONNECT packet.
func connectData(host string, family byte, port uint16, addr string) string {
	b := append([]byte(host), 0, family)
	if family == '4' || family == '6' {
		b = binary.BigEndian.AppendUint16(b, port)
	}
	return string(append(append(b, addr...), 0))
}

// probe is a Milter whose callbacks a test sets.
type probe struct {
	gomilter.NoOpMilter
	connect func(addr net.IP, family string) gomilter.Response
	helo    func(name string, m *gomilter.Modifier) gomilter.Response
	mail    func(from string, m *gomilter.Modifier) gomilter.Response
	rcpt    func(to string) gomilter.Response
	body    func(m *gomilter.Modifier) gomilter.Response
	// each runs at the start of every callback.
	each func(callback string)
}

func (p *probe) run(name string) {
	if p.each != nil {
		p.each(name)
	}
}

func (p *probe) Connect(_ string, family string, _ uint16, addr net.IP, _ *gomilter.Modifier) (gomilter.Response, error) {
	p.run("connect")
	if p.connect != nil {
		return p.connect(addr, family), nil
	}
	return gomilter.RespContinue, nil
}

func (p *probe) Helo(name string, m *gomilter.Modifier) (gomilter.Response, error) {
	p.run("helo")
	if p.helo != nil {
		return p.helo(name, m), nil
	}
	return gomilter.RespContinue, nil
}

func (p *probe) MailFrom(from string, m *gomilter.Modifier) (gomilter.Response, error) {
	p.run("mail")
	if p.mail != nil {
		return p.mail(from, m), nil
	}
	return gomilter.RespContinue, nil
}

func (p *probe) RcptTo(to string, _ *gomilter.Modifier) (gomilter.Response, error) {
	p.run("rcpt")
	if p.rcpt != nil {
		return p.rcpt(to), nil
	}
	return gomilter.RespContinue, nil
}

func (p *probe) Header(string, string, *gomilter.Modifier) (gomilter.Response, error) {
	p.run("header")
	return gomilter.RespContinue, nil
}

func (p *probe) Headers(textproto.MIMEHeader, *gomilter.Modifier) (gomilter.Response, error) {
	p.run("eoh")
	return gomilter.RespContinue, nil
}

func (p *probe) Body(m *gomilter.Modifier) (gomilter.Response, error) {
	p.run("body")
	if p.body != nil {
		return p.body(m), nil
	}
	return gomilter.RespContinue, nil
}

func (p *probe) Abort(*gomilter.Modifier) error {
	p.run("abort")
	return nil
}

// TestGoMilterNegotiatesVersion2 pins that go-milter answers SMFIC_OPTNEG
// with version 2 and exactly its Server's Actions and Protocol, whatever
// the MTA offers: the reply filter adds the SMFIP_NR_* bits and version 6.
func TestGoMilterNegotiatesVersion2(t *testing.T) {
	srv := &gomilter.Server{
		NewMilter: func() gomilter.Milter { return &probe{} },
		Actions:   gomilter.OptAddHeader | gomilter.OptChangeHeader,
		Protocol:  gomilter.OptNoBody | gomilter.OptNoData,
	}
	for _, tt := range []struct {
		version uint32
		proto   gomilter.OptProtocol
	}{
		{6, 0x1fffff},
		{6, 0},
		{2, 0x7f},
	} {
		t.Run(fmt.Sprintf("version=%d/protocol=%#x", tt.version, tt.proto), func(t *testing.T) {
			mta, _ := serveOne(t, srv)
			mta.send('O', offer(tt.version, 0x1ff, tt.proto))
			code, data := mta.recv()
			if want := offer(2, srv.Actions, srv.Protocol); code != 'O' || string(data) != want {
				t.Errorf("answered %q % x, want 'O' % x", code, data, want)
			}
		})
	}
}

// TestGoMilterOnePacketAtATime pins how go-milter uses the connection,
// which the reply filter, the held writes, the per-packet deadlines and
// the watch all rely on:
//   - it reads a packet in two reads, its length and then its body, and
//     never past the packet it is about to handle;
//   - it reads nothing while a callback runs;
//   - it answers every command except SMFIC_MACRO, SMFIC_ABORT and
//     SMFIC_QUIT with exactly one packet, after the changes the callback
//     made, each packet in one write, before it reads again;
//   - it sets no deadline of its own;
//   - it closes the connection when its loop ends (here at SMFIC_QUIT).
func TestGoMilterOnePacketAtATime(t *testing.T) {
	var (
		rc      *recConn
		mta     *pipeMTA
		faults  []string
		faultMu sync.Mutex
		// readAt is, per callback, the bytes read when it ran.
		readAt = map[string]int{}
	)
	fault := func(format string, args ...any) {
		faultMu.Lock()
		defer faultMu.Unlock()
		faults = append(faults, fmt.Sprintf(format, args...))
	}
	p := &probe{
		each: func(callback string) {
			if rc.reading.Load() {
				fault("%s: a Read was running during the callback", callback)
			}
			readAt[callback] = rc.bytesRead()
		},
		body: func(m *gomilter.Modifier) gomilter.Response {
			if err := m.InsertHeader(0, "X-A", "a"); err != nil {
				fault("InsertHeader: %v", err)
			}
			return gomilter.RespContinue
		},
	}
	srv := &gomilter.Server{
		NewMilter: func() gomilter.Milter { return p },
		Actions:   gomilter.OptAddHeader,
	}
	mta, rc = serveOne(t, srv)

	steps := []struct {
		code     byte
		data     string
		reply    string // the codes of the packets answered, in order
		callback string // the callback it runs, if any
	}{
		{'O', offer(6, 0x1ff, 0), "O", ""},
		{'D', "C{daemon_name}\x00x\x00", "", ""},
		{'C', connectData("client.example", '4', 25, "192.0.2.1"), "c", "connect"},
		{'H', "mx.example\x00", "c", "helo"},
		{'M', "<a@example.org>\x00", "c", "mail"},
		{'R', "<b@example.net>\x00", "c", "rcpt"},
		{'T', "", "c", ""},
		{'L', "Subject\x00hi\x00", "c", "header"},
		{'N', "", "c", "eoh"},
		{'E', "", "ic", "body"},
		{'A', "", "", "abort"},
	}
	// ends is, per callback, where its packet ends in the stream.
	ends := map[string]int{}
	end := 0
	for _, st := range steps {
		end += 4 + 1 + len(st.data)
		if st.callback != "" {
			ends[st.callback] = end
		}
	}
	for _, st := range steps {
		mta.send(st.code, st.data)
		var got []byte
		for range st.reply {
			code, _ := mta.recv()
			got = append(got, code)
		}
		if string(got) != st.reply {
			t.Errorf("%q answered %q, want %q", st.code, got, st.reply)
		}
	}
	mta.send('Q', "")
	select {
	case <-rc.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("go-milter did not close the connection after SMFIC_QUIT")
	}
	faultMu.Lock()
	for _, f := range faults {
		t.Error(f)
	}
	faultMu.Unlock()
	// Read once the connection is closed: the callbacks are over.
	if !reflect.DeepEqual(readAt, ends) {
		t.Errorf("bytes read when each callback ran: %v, want where its packet ends: %v", readAt, ends)
	}

	// The calls, packet by packet: two reads each, then the writes of its
	// answer, each one whole packet.
	var want []string
	for _, st := range append(steps, struct {
		code     byte
		data     string
		reply    string
		callback string
	}{'Q', "", "", ""}) {
		want = append(want, "read 4", fmt.Sprintf("read %d", 1+len(st.data)))
		switch st.code {
		case 'O':
			want = append(want, "write 17")
		case 'E':
			want = append(want, fmt.Sprintf("write %d", 4+1+4+len("X-A\x00a\x00")), "write 5")
		default:
			for range st.reply {
				want = append(want, "write 5")
			}
		}
	}
	want = append(want, "close")
	if got := rc.opList(); strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Errorf("go-milter's calls:\n%s\nwant\n%s", strings.Join(got, ", "), strings.Join(want, ", "))
	}
}

// TestGoMilterReadErrors pins that go-milter ends a session quietly on
// io.EOF and logs any other read error on its own (with the standard
// log), closing the connection either way: Conn reports its timeouts as
// io.EOF, having logged them itself.
func TestGoMilterReadErrors(t *testing.T) {
	for _, tt := range []struct {
		name    string
		end     func(mta *pipeMTA, server *recConn)
		wantLog string
	}{
		{"end of stream", func(mta *pipeMTA, _ *recConn) { mta.c.Close() }, ""},
		{"timeout", func(_ *pipeMTA, server *recConn) { server.Conn.SetReadDeadline(time.Unix(1, 0)) }, "Error reading milter command"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			prev := log.Writer()
			log.SetOutput(&logs)
			defer log.SetOutput(prev)
			srv := &gomilter.Server{NewMilter: func() gomilter.Milter { return &probe{} }}
			mta, rc := serveOne(t, srv)
			mta.send('H', "mx.example\x00")
			mta.recv()
			tt.end(mta, rc)
			select {
			case <-rc.closed:
			case <-time.After(10 * time.Second):
				t.Fatal("go-milter did not close the connection")
			}
			// go-milter logs before it closes.
			got := logs.String()
			if tt.wantLog == "" && got != "" || !strings.Contains(got, tt.wantLog) {
				t.Errorf("go-milter logged %q, want %q", got, tt.wantLog)
			}
		})
	}
}

// TestGoMilterNewMilterPerFinalReply pins when go-milter calls its
// Server's NewMilter: once when Serve accepts the connection, and again
// after every reply that ends the message (accept, reject, tempfail,
// discard), but not after continue or a custom SMTP reply. The daemon
// binds each of them to the connection; the copy of the Server it serves
// each connection with is the one whose NewMilter is called.
func TestGoMilterNewMilterPerFinalReply(t *testing.T) {
	var made atomic.Int32
	replies := map[string]gomilter.Response{
		"continue": gomilter.RespContinue,
		"custom":   gomilter.NewResponseStr('y', "451 4.3.0 later"),
		"accept":   gomilter.RespAccept,
		"reject":   gomilter.RespReject,
		"tempfail": gomilter.RespTempFail,
		"discard":  gomilter.RespDiscard,
	}
	orig := &gomilter.Server{NewMilter: func() gomilter.Milter { panic("the original Server's NewMilter was called") }}
	srv := *orig
	srv.NewMilter = func() gomilter.Milter {
		made.Add(1)
		return &probe{mail: func(from string, _ *gomilter.Modifier) gomilter.Response { return replies[from] }}
	}
	mta, _ := serveOne(t, &srv)
	if n := made.Load(); n != 1 {
		t.Fatalf("NewMilter called %d times at accept, want 1", n)
	}
	for _, tt := range []struct {
		reply string
		more  int32
	}{
		{"continue", 0}, {"custom", 0}, {"accept", 1}, {"reject", 1}, {"tempfail", 1}, {"discard", 1},
	} {
		before := made.Load()
		mta.send('M', "<"+tt.reply+">\x00")
		mta.recv()
		// The next reply proves the loop has moved on.
		mta.send('H', "x\x00")
		mta.recv()
		if got := made.Load() - before; got != tt.more {
			t.Errorf("after %s: NewMilter called %d more times, want %d", tt.reply, got, tt.more)
		}
	}
}

// TestGoMilterMacros pins that each SMFIC_MACRO packet replaces the macros
// a callback sees (Modifier.Macros) rather than adding to them, and that
// an abort drops them: a session must read a macro at the stage it is sent
// for, and keep what it needs.
func TestGoMilterMacros(t *testing.T) {
	var seen []map[string]string
	p := &probe{
		helo: func(_ string, m *gomilter.Modifier) gomilter.Response {
			seen = append(seen, m.Macros)
			return gomilter.RespContinue
		},
		mail: func(_ string, m *gomilter.Modifier) gomilter.Response {
			seen = append(seen, m.Macros)
			return gomilter.RespContinue
		},
	}
	mta, _ := serveOne(t, &gomilter.Server{NewMilter: func() gomilter.Milter { return p }})
	mta.send('D', "C{client_addr}\x00192.0.2.1\x00j\x00mx\x00")
	mta.send('D', "H{tls_version}\x00TLSv1.3\x00")
	mta.send('H', "mx.example\x00")
	mta.recv()
	mta.send('D', "Mi\x00Q1\x00")
	mta.send('M', "<a@example.org>\x00")
	mta.recv()
	mta.send('A', "")
	mta.send('M', "<a@example.org>\x00")
	mta.recv()
	want := []map[string]string{{"{tls_version}": "TLSv1.3"}, {"i": "Q1"}, nil}
	if !reflect.DeepEqual(seen, want) {
		t.Errorf("macros seen %v, want %v", seen, want)
	}
}

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

// must fails t on an error from a go-milter client call.
func must(t *testing.T) func(*gomilter.Action, error) *gomilter.Action {
	return func(a *gomilter.Action, err error) *gomilter.Action {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
}

// TestGoMilterHeaderMap pins what the session's bound on header memory
// relies on in go-milter v0.5.0: it adds every field to a map of its own
// that only an abort resets, so that the map grows across the messages of
// a connection; that map is Modifier.Headers in Header, with the field
// already in it; and emptying it there leaves it empty (and small) for the
// next field. If go-milter changes any of this, the session's Header,
// which empties the map, must be looked at again.
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
			must(t)(cs.Conn("client.example", gomilter.FamilyInet, 25, "192.0.2.1"))
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

// TestGoMilterHeaderChanges pins how go-milter writes header changes: the
// index given to ChangeHeader and InsertHeader goes to the MTA as it is
// (the MTA counts ChangeHeader's 1-based among the fields of that name,
// and InsertHeader's 0 as the top of the header), an empty value asks for
// a deletion, and CRLF in a value is sent as LF.
func TestGoMilterHeaderChanges(t *testing.T) {
	p := &probe{body: func(m *gomilter.Modifier) gomilter.Response {
		if err := m.ChangeHeader(2, "Received-SPF", ""); err != nil {
			t.Error(err)
		}
		if err := m.InsertHeader(0, "Received-SPF", "pass\r\n (folded)"); err != nil {
			t.Error(err)
		}
		return gomilter.RespContinue
	}}
	mta, _ := serveOne(t, &gomilter.Server{NewMilter: func() gomilter.Milter { return p }, Actions: gomilter.OptAddHeader | gomilter.OptChangeHeader})
	mta.send('E', "")
	var got []string
	for range 3 {
		code, data := mta.recv()
		got = append(got, fmt.Sprintf("%c %q", code, data))
	}
	want := []string{
		`m "\x00\x00\x00\x02Received-SPF\x00\x00"`,
		`i "\x00\x00\x00\x00Received-SPF\x00pass\n (folded)\x00"`,
		`c ""`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("sent\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestGoMilterEnvelope pins what go-milter hands the envelope callbacks:
// the address of MAIL and RCPT without its angle brackets and without the
// ESMTP arguments after it ("<>" is ""), and the HELO name as sent.
func TestGoMilterEnvelope(t *testing.T) {
	var got []string
	p := &probe{
		helo: func(name string, _ *gomilter.Modifier) gomilter.Response {
			got = append(got, "helo "+name)
			return gomilter.RespContinue
		},
		mail: func(from string, _ *gomilter.Modifier) gomilter.Response {
			got = append(got, "mail "+from)
			return gomilter.RespContinue
		},
		rcpt: func(to string) gomilter.Response {
			got = append(got, "rcpt "+to)
			return gomilter.RespContinue
		},
	}
	mta, _ := serveOne(t, &gomilter.Server{NewMilter: func() gomilter.Milter { return p }})
	for _, pkt := range []struct {
		code byte
		data string
	}{
		{'H', "mx.example\x00"},
		{'M', "<a@example.org>\x00SIZE=100\x00BODY=8BITMIME\x00"},
		{'M', "<>\x00"},
		{'R', "<b@example.net>\x00NOTIFY=NEVER\x00"},
	} {
		mta.send(pkt.code, pkt.data)
		mta.recv()
	}
	want := "helo mx.example|mail a@example.org|mail |rcpt b@example.net"
	if strings.Join(got, "|") != want {
		t.Errorf("callbacks got %q, want %q", strings.Join(got, "|"), want)
	}
}

// TestGoMilterConnectAddress pins what go-milter hands Connect: the
// address read up to the first NUL and parsed with net.ParseIP, so nil for
// the forms MTAs also write ("[192.0.2.1]", "IPv6:2001:db8::1", a zone),
// which is why Conn rewrites the connect packet; and that it answers a
// connect packet of family '4' or '6' without a port with a tempfail of
// its own, not calling Connect.
func TestGoMilterConnectAddress(t *testing.T) {
	tests := []struct {
		family byte
		addr   string
		want   string // the address Connect gets, "<nil>" for none
	}{
		{'4', "192.0.2.1", "192.0.2.1"},
		{'4', "192.0.2.1\x00\x00\x00\x00", "192.0.2.1"},
		{'4', "[192.0.2.1]", "<nil>"},
		{'6', "IPv6:2001:db8::1", "<nil>"},
		{'6', "fe80::1%eth0", "<nil>"},
		{'6', "2001:db8::1", "2001:db8::1"},
		{'L', "/run/x", "<nil>"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%c %q", tt.family, tt.addr), func(t *testing.T) {
			var got string
			p := &probe{connect: func(addr net.IP, _ string) gomilter.Response {
				got = addr.String()
				return gomilter.RespContinue
			}}
			mta, _ := serveOne(t, &gomilter.Server{NewMilter: func() gomilter.Milter { return p }})
			mta.send('C', connectData("client.example", tt.family, 25, tt.addr))
			mta.recv()
			if got != tt.want {
				t.Errorf("Connect got %s, want %s", got, tt.want)
			}
		})
	}
	t.Run("no port", func(t *testing.T) {
		called := false
		p := &probe{connect: func(net.IP, string) gomilter.Response { called = true; return gomilter.RespContinue }}
		mta, _ := serveOne(t, &gomilter.Server{NewMilter: func() gomilter.Milter { return p }})
		mta.send('C', "client.example\x004")
		if code, _ := mta.recv(); code != 't' || called {
			t.Errorf("answered %q with Connect called %v, want go-milter's own 't'", code, called)
		}
	})
}

// TestGoMilterServerClose pins that Server.Close closes only the
// listeners given to Serve: a session already open goes on answering. The
// daemon drains and closes sessions itself.
func TestGoMilterServerClose(t *testing.T) {
	srv := &gomilter.Server{NewMilter: func() gomilter.Milter { return &probe{} }}
	mta, rc := serveOne(t, srv)
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	mta.send('H', "mx.example\x00")
	if code, _ := mta.recv(); code != 'c' {
		t.Errorf("after Close the session answered %q, want 'c'", code)
	}
	select {
	case <-rc.closed:
		t.Error("Server.Close closed an open session's connection")
	default:
	}
}

// TestDocNamesPins keeps the package doc's list and these tests together:
// every test the list names exists, and every TestGoMilter test is named.
func TestDocNamesPins(t *testing.T) {
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile("gomilter_test.go")
	if err != nil {
		t.Fatal(err)
	}
	named := map[string]bool{}
	for _, m := range regexp.MustCompile(`\((TestGoMilter\w+)\)`).FindAllSubmatch(doc, -1) {
		named[string(m[1])] = true
	}
	defined := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^func (TestGoMilter\w+)\(`).FindAllSubmatch(tests, -1) {
		defined[string(m[1])] = true
	}
	for name := range named {
		if !defined[name] {
			t.Errorf("doc.go names %s, which gomilter_test.go does not define", name)
		}
	}
	for name := range defined {
		if !named[name] {
			t.Errorf("%s pins a go-milter behaviour that doc.go does not list", name)
		}
	}
	if len(defined) < 10 {
		t.Errorf("found only %d pinning tests", len(defined))
	}
}
