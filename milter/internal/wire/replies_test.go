package wire

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	gomilter "github.com/emersion/go-milter"
)

// appendPacket appends a milter packet of code and payload to b.
func appendPacket(b []byte, code byte, payload []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)+1))
	b = append(b, code)
	return append(b, payload...)
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
		// allowed is the stages the filter may leave unanswered; 0
		// means NoReplyStages, a Conn's.
		allowed gomilter.OptProtocol
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
		// A filter allowed more than a session's stages negotiates and
		// drops them too: what keeps refusals from being lost is that a
		// Conn only ever allows NoReplyStages (TestNoReplyStagesSafe).
		{name: "allowed more than a session's stages: negotiation", allowed: NoReplyStages | gomilter.OptNoMailReply,
			read: packet('O', offer(6, 0x1fffff)...), writes: [][]byte{optnegReply},
			want: packet('O', 0, 0, 0, 6, 0, 0, 0, 0x31, 0, 0x04, 0x73, 0x90)},
		{name: "allowed more than a session's stages: continue to MAIL dropped", allowed: NoReplyStages | gomilter.OptNoMailReply,
			read: packet('M', '<', '>', 0), writes: [][]byte{packet('c')}, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			allowed := tt.allowed
			if allowed == 0 {
				allowed = NoReplyStages
			}
			f := &replyFilter{allowed: allowed}
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

// TestNoReplyStagesSafe pins what SkipReplies may let an MTA skip: only
// stages at which a session answers continue, or a refusal it gives again
// at the next stage that is answered. The stages where a session decides
// (MAIL FROM, RCPT TO, the end of the message, which go-milter calls Body)
// and those whose reply nothing repeats must never be in it.
func TestNoReplyStagesSafe(t *testing.T) {
	tests := []struct {
		bit  gomilter.OptProtocol
		want bool
	}{
		{gomilter.OptNoConnReply, true},
		{gomilter.OptNoHeloReply, true},
		{gomilter.OptNoHeaderReply, true},
		{gomilter.OptNoEOHReply, true},
		{gomilter.OptNoMailReply, false},
		{gomilter.OptNoRcptReply, false},
		{gomilter.OptNoDataReply, false},
		{gomilter.OptNoUnknownReply, false},
		{gomilter.OptNoBodyReply, false},
	}
	for _, tt := range tests {
		if got := NoReplyStages&tt.bit != 0; got != tt.want {
			t.Errorf("NoReplyStages has %s: %v, want %v", StageNames(tt.bit), got, tt.want)
		}
	}
	if got, want := StageNames(NoReplyStages), "connect,helo,header,eoh"; got != want {
		t.Errorf("StageNames(NoReplyStages) = %q, want %q", got, want)
	}
	c := NewConn(nil, &Options{SkipReplies: true}, nil)
	if c.replies == nil || c.replies.allowed != NoReplyStages {
		t.Errorf("a Conn with SkipReplies allows %#v, want NoReplyStages", c.replies)
	}
}
