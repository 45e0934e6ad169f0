package milter

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/spf-milter/spf-milter/internal/dnstest"
	"github.com/spf-milter/spf-milter/internal/logtest"
	"github.com/spf-milter/spf-milter/spf"
)

// goMilterProtocol is what go-milter answers for spf-milter's server
// (NewServer): the steps it leaves out.
const goMilterProtocol = gomilter.OptNoBody | gomilter.OptNoUnknown | gomilter.OptNoData

// TestNoReplyNegotiation plays an MTA that sends a whole connection in one
// write once negotiated, as it may when it waits for no reply, and checks
// what is negotiated and which commands are answered.
func TestNoReplyNegotiation(t *testing.T) {
	all := uint32(0x1fffff) // every step and every SMFIP_NR_* bit, as Postfix offers
	tests := []struct {
		name       string
		noReply    gomilter.OptProtocol // the Daemon's option
		mtaVersion uint32
		mtaProto   uint32
		// wantVersion and wantQuiet are the answer's version and the
		// SMFIP_NR_* bits it adds to go-milter's.
		wantVersion uint32
		wantQuiet   gomilter.OptProtocol
	}{
		{name: "Postfix, protocol 6", noReply: NoReplyStages, mtaVersion: 6, mtaProto: all,
			wantVersion: 6, wantQuiet: NoReplyStages},
		{name: "MTA offering only SMFIP_NR_HDR", noReply: NoReplyStages, mtaVersion: 6, mtaProto: uint32(gomilter.OptNoHeaderReply),
			wantVersion: 6, wantQuiet: gomilter.OptNoHeaderReply},
		{name: "MTA offering no SMFIP_NR_* bit", noReply: NoReplyStages, mtaVersion: 6, mtaProto: 0x7f &^ uint32(gomilter.OptNoHeaderReply),
			wantVersion: 2},
		{name: "MTA of protocol 2 offering no_header_reply", noReply: NoReplyStages, mtaVersion: 2, mtaProto: 0x7f | uint32(gomilter.OptNoHeaderReply),
			wantVersion: 2},
		{name: "option off", noReply: 0, mtaVersion: 6, mtaProto: all,
			wantVersion: 2},
		{name: "option allowing more than the session's stages", noReply: NoReplyStages | gomilter.OptNoMailReply, mtaVersion: 6, mtaProto: all,
			wantVersion: 6, wantQuiet: NoReplyStages | gomilter.OptNoMailReply},
	}
	for _, rb := range []int{0, DefaultIOBuffer} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("io-buffer=%d/%s", rb, tt.name), func(t *testing.T) {
				addr, logs := startNoReplyDaemon(t, DaemonOptions{IdleTimeout: time.Minute, IOBuffer: rb, NoReply: tt.noReply})
				optneg := binary.BigEndian.AppendUint32(nil, tt.mtaVersion)
				optneg = binary.BigEndian.AppendUint32(optneg, 0x1ff)
				optneg = binary.BigEndian.AppendUint32(optneg, tt.mtaProto)
				pkts := append([]fuzzPacket{{'O', optneg}}, noReplySession()...)

				resps := exchange(t, addr, pkts)
				if len(resps) == 0 || resps[0].code != 'O' || len(resps[0].data) < 12 {
					t.Fatalf("negotiation answered %q", resps)
				}
				version := binary.BigEndian.Uint32(resps[0].data)
				proto := gomilter.OptProtocol(binary.BigEndian.Uint32(resps[0].data[8:]))
				if version != tt.wantVersion || proto != goMilterProtocol|tt.wantQuiet {
					t.Errorf("negotiated version %d, protocol %#x; want %d, %#x", version, proto, tt.wantVersion, goMilterProtocol|tt.wantQuiet)
				}
				logged := strings.Contains(logs.String(), "milter protocol 6 negotiated, replies skipped")
				if logged != (tt.wantQuiet != 0) || logged && !strings.Contains(logs.String(), "stages="+stageNames(tt.wantQuiet)+"\n") {
					t.Errorf("daemon log %q, want the negotiation logged with stages %q: %v", logs.String(), stageNames(tt.wantQuiet), tt.wantQuiet != 0)
				}

				// Every command not left unanswered gets one reply, in
				// order; the changes come at the end of the message.
				var want []string
				for _, p := range pkts[1:] {
					switch {
					case p.code == 'D' || p.code == 'Q':
					case tt.wantQuiet&commandBit(p.code) != 0:
					case p.code == 'E':
						// Two forged fields removed; Received-SPF for MAIL FROM
						// and HELO, and Authentication-Results, inserted.
						want = append(want, "change", "change", "insert", "insert", "insert", "c")
					default:
						want = append(want, "c")
					}
				}
				var got []string
				for _, r := range resps[1:] {
					switch r.code {
					case 'm':
						got = append(got, "change")
					case 'i':
						got = append(got, "insert")
					default:
						got = append(got, string(r.code))
					}
				}
				if strings.Join(got, " ") != strings.Join(want, " ") {
					t.Errorf("replies %q\nwant    %q", got, want)
				}
				// The check was made and the forged field removed
				// whatever was negotiated.
				var inserted []string
				for _, r := range resps {
					if r.code == 'i' {
						inserted = append(inserted, string(r.data))
					}
				}
				if joined := strings.Join(inserted, "\n"); !strings.Contains(joined, "Received-SPF\x00pass") {
					t.Errorf("inserted fields %q, want a Received-SPF pass", inserted)
				}
			})
		}
	}
}

// noReplySession is a connection with one message that passes, carrying
// two forged Received-SPF fields, then QUIT.
func noReplySession() []fuzzPacket {
	return []fuzzPacket{
		pMacros('C', "j", ourAuthID, "{daemon_name}", "smtpd"),
		pConnect("mx.pass.example", '4', 40000, "192.0.2.1"),
		pHelo("mx.pass.example"),
		pMacros('M', "i", "QNR1"),
		pMail("alice@pass.example"),
		pRcpt("bob@example.net"),
		pHeader("Received-SPF", "pass (forged)"),
		pHeader("Subject", "hello"),
		pHeader("Received-SPF", "pass (forged again)"),
		pEOH,
		pEOM,
		pQuit,
	}
}

// startNoReplyDaemon serves spf-milter's sessions through a Daemon with
// opts, checking against a zone in memory, and returns its address and
// its log, debug lines included.
func startNoReplyDaemon(t *testing.T, opts DaemonOptions) (string, *logtest.Buffer) {
	t.Helper()
	cfg := testConfig()
	rt := &Runtime{
		Config:  cfg,
		Checker: &spf.Checker{Resolver: dnstest.NewMapResolver(fuzzZone(t)), Receiver: cfg.Receiver, Timeout: 10 * time.Second},
		Log:     slog.New(slog.DiscardHandler),
	}
	logs := &logtest.Buffer{}
	opts.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d := NewDaemon(NewServer(func() *Runtime { return rt }), opts)
	ln, err := Listen("inet:127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- d.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := d.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		<-served
		if s := logs.String(); strings.Contains(s, "level=ERROR") {
			t.Errorf("daemon logged errors:\n%s", s)
		}
	})
	return ln.Addr().String(), logs
}

// exchange sends the negotiation, waits for its answer, then sends the
// rest in one write and reads every reply until the milter hangs up.
func exchange(t *testing.T, addr string, pkts []fuzzPacket) []fuzzResponse {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var stream []byte
	for _, p := range pkts {
		stream = appendPacket(stream, p.code, p.data)
	}
	if _, err := c.Write(stream); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	resps, err := readResponses(c)
	if err != nil {
		t.Fatal(err)
	}
	return resps
}

// TestReplyFilter covers what a whole session cannot reach: packets
// written in pieces, and replies that must not be dropped.
func TestReplyFilter(t *testing.T) {
	packet := func(code byte, data ...byte) []byte { return appendPacket(nil, code, data) }
	optnegReply := packet('O', 0, 0, 0, 2, 0, 0, 0, 0x31, 0, 0, 3, 0x10)
	offer := func(version uint32, proto gomilter.OptProtocol) []byte {
		d := binary.BigEndian.AppendUint32(nil, version)
		d = binary.BigEndian.AppendUint32(d, 0x1ff)
		return binary.BigEndian.AppendUint32(d, uint32(proto))
	}
	tests := []struct {
		name string
		// read is the command go-milter read; writes are its writes.
		read    []byte
		writes  [][]byte
		want    []byte
		wantErr string
	}{
		{name: "answer to the negotiation in three writes", read: packet('O', offer(6, 0x1fffff)...),
			writes: [][]byte{optnegReply[:3], optnegReply[3:9], optnegReply[9:]},
			want:   packet('O', 0, 0, 0, 6, 0, 0, 0, 0x31, 0, 0x04, 0x33, 0x90)},
		{name: "continue to a header dropped", read: packet('L', 'X', 0, 'y', 0),
			writes: [][]byte{packet('c')}, want: nil},
		{name: "refusal to a header dropped, to be repeated", read: packet('L', 'X', 0, 'y', 0),
			writes: [][]byte{packet('y', []byte("451 4.3.0 x\x00")...)}, want: nil},
		{name: "continue to MAIL kept", read: packet('M', '<', '>', 0),
			writes: [][]byte{packet('c')}, want: packet('c')},
		{name: "header left unanswered, then MAIL", read: append(packet('L', 'X', 0, 'y', 0), packet('M', '<', '>', 0)...),
			writes: [][]byte{packet('c')}, want: packet('c')},
		{name: "reject to a header", read: packet('L', 'X', 0, 'y', 0),
			writes: [][]byte{packet('r')}, wantErr: `reply 'r'`},
		{name: "negotiation answered with something else", read: packet('O', offer(6, 0x1fffff)...),
			writes: [][]byte{packet('c')}, wantErr: "negotiation answered"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &replyFilter{allowed: NoReplyStages}
			var frame packetFrame
			// The negotiation of protocol 6 comes first, except where the
			// case is the negotiation.
			if tt.read[4] != 'O' {
				frame.consume(packet('O', offer(6, 0x1fffff)...), f.packetRead)
				if _, err := f.filter(optnegReply); err != nil {
					t.Fatal(err)
				}
			}
			// Read a byte at a time: the frame must put the packet
			// together.
			for i := range tt.read {
				frame.consume(tt.read[i:i+1], f.packetRead)
			}
			var got []byte
			var err error
			for _, w := range tt.writes {
				var out []byte
				out, err = f.filter(w)
				if err != nil {
					break
				}
				got = append(got, out...)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("sent % x\nwant % x", got, tt.want)
			}
			// What follows passes untouched.
			if out, err := f.filter(packet('c')); err != nil || !bytes.Equal(out, packet('c')) {
				t.Errorf("next packet sent as % x, %v", out, err)
			}
		})
	}
}

// postfixProtocol is the protocol mask Postfix offers with its default
// milter_protocol = 6: every step may be left out, and every reply.
const postfixProtocol = gomilter.OptNoConnect | gomilter.OptNoHelo | gomilter.OptNoMailFrom | gomilter.OptNoRcptTo |
	gomilter.OptNoBody | gomilter.OptNoHeaders | gomilter.OptNoEOH | gomilter.OptNoHeaderReply | gomilter.OptNoUnknown |
	gomilter.OptNoData | gomilter.OptSkip | gomilter.OptRcptRej | gomilter.OptNoConnReply | gomilter.OptNoHeloReply |
	gomilter.OptNoMailReply | gomilter.OptNoRcptReply | gomilter.OptNoDataReply | gomilter.OptNoUnknownReply |
	gomilter.OptNoEOHReply | gomilter.OptNoBodyReply | gomilter.OptHeaderLeadingSpace
