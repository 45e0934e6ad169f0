package milter

import (
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
	"github.com/spf-milter/spf-milter/milter/internal/wire"
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
		skip       bool // the Daemon's SkipReplies
		mtaVersion uint32
		mtaProto   uint32
		// wantVersion and wantQuiet are the answer's version and the
		// SMFIP_NR_* bits it adds to go-milter's.
		wantVersion uint32
		wantQuiet   gomilter.OptProtocol
	}{
		{name: "Postfix, protocol 6", skip: true, mtaVersion: 6, mtaProto: all,
			wantVersion: 6, wantQuiet: wire.NoReplyStages},
		{name: "MTA offering only SMFIP_NR_HDR", skip: true, mtaVersion: 6, mtaProto: uint32(gomilter.OptNoHeaderReply),
			wantVersion: 6, wantQuiet: gomilter.OptNoHeaderReply},
		{name: "MTA offering no SMFIP_NR_* bit", skip: true, mtaVersion: 6, mtaProto: 0x7f &^ uint32(gomilter.OptNoHeaderReply),
			wantVersion: 2},
		{name: "MTA of protocol 2 offering no_header_reply", skip: true, mtaVersion: 2, mtaProto: 0x7f | uint32(gomilter.OptNoHeaderReply),
			wantVersion: 2},
		{name: "option off", skip: false, mtaVersion: 6, mtaProto: all,
			wantVersion: 2},
		// A filter allowed more than the session's stages is
		// TestReplyFilter's; SkipReplies never negotiates more.
		{name: "MTA offering only the stages a session decides at", skip: true, mtaVersion: 6,
			mtaProto:    uint32(gomilter.OptNoMailReply | gomilter.OptNoRcptReply | gomilter.OptNoBodyReply | gomilter.OptNoDataReply | gomilter.OptNoUnknownReply),
			wantVersion: 2},
	}
	for _, rb := range []int{0, DefaultIOBuffer} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("io-buffer=%d/%s", rb, tt.name), func(t *testing.T) {
				addr, logs := startNoReplyDaemon(t, DaemonOptions{IdleTimeout: time.Minute, IOBuffer: rb, SkipReplies: tt.skip})
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
				if logged != (tt.wantQuiet != 0) || logged && !strings.Contains(logs.String(), "stages="+wire.StageNames(tt.wantQuiet)+"\n") {
					t.Errorf("daemon log %q, want the negotiation logged with stages %q: %v", logs.String(), wire.StageNames(tt.wantQuiet), tt.wantQuiet != 0)
				}

				// Every command not left unanswered gets one reply, in
				// order; the changes come at the end of the message.
				var want []string
				for _, p := range pkts[1:] {
					switch {
					case p.code == 'D' || p.code == 'Q':
					case tt.wantQuiet&wire.CommandBit(p.code) != 0:
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

// postfixProtocol is the protocol mask Postfix offers with its default
// milter_protocol = 6: every step may be left out, and every reply.
const postfixProtocol = gomilter.OptNoConnect | gomilter.OptNoHelo | gomilter.OptNoMailFrom | gomilter.OptNoRcptTo |
	gomilter.OptNoBody | gomilter.OptNoHeaders | gomilter.OptNoEOH | gomilter.OptNoHeaderReply | gomilter.OptNoUnknown |
	gomilter.OptNoData | gomilter.OptSkip | gomilter.OptRcptRej | gomilter.OptNoConnReply | gomilter.OptNoHeloReply |
	gomilter.OptNoMailReply | gomilter.OptNoRcptReply | gomilter.OptNoDataReply | gomilter.OptNoUnknownReply |
	gomilter.OptNoEOHReply | gomilter.OptNoBodyReply | gomilter.OptHeaderLeadingSpace
