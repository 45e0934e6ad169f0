package wire

import (
	"encoding/binary"
	"fmt"
	"strings"

	gomilter "github.com/emersion/go-milter"
)

// NoReplyStages are the stages whose replies Options.SkipReplies lets an
// MTA of protocol 6 skip waiting for: connect, HELO, each header field and
// the end of the headers. They are the only ones: spf-milter decides at
// MAIL FROM, RCPT TO and the end of the message, and a failure at an
// earlier stage marks the connection or the message, so that the next
// stage that is answered refuses it again. A refusal at a stage the MTA
// does not wait for would be lost, and the mail accepted.
const NoReplyStages = gomilter.OptNoConnReply | gomilter.OptNoHeloReply | gomilter.OptNoHeaderReply | gomilter.OptNoEOHReply

// noReplyProtocol is the protocol version that defines all the SMFIP_NR_*
// bits. go-milter v0.5.0 answers every negotiation with version 2.
const noReplyProtocol = 6

// replyStages are the commands a milter may leave unanswered: their code,
// the SMFIP_NR_* bit that says so, and their name in the log.
var replyStages = []struct {
	code byte
	bit  gomilter.OptProtocol
	name string
}{
	{byte(gomilter.CodeConn), gomilter.OptNoConnReply, "connect"},
	{byte(gomilter.CodeHelo), gomilter.OptNoHeloReply, "helo"},
	{byte(gomilter.CodeMail), gomilter.OptNoMailReply, "mail"},
	{byte(gomilter.CodeRcpt), gomilter.OptNoRcptReply, "rcpt"},
	{byte(gomilter.CodeData), gomilter.OptNoDataReply, "data"},
	{'U', gomilter.OptNoUnknownReply, "unknown"}, // SMFIC_UNKNOWN, which go-milter does not name
	{byte(gomilter.CodeHeader), gomilter.OptNoHeaderReply, "header"},
	{byte(gomilter.CodeEOH), gomilter.OptNoEOHReply, "eoh"},
	{byte(gomilter.CodeBody), gomilter.OptNoBodyReply, "body"},
}

// replyBits maps a command code to its SMFIP_NR_* bit: it is looked up
// for every packet read.
var replyBits = func() (bits [256]gomilter.OptProtocol) {
	for _, st := range replyStages {
		bits[st.code] = st.bit
	}
	return bits
}()

// CommandBit is the SMFIP_NR_* bit that lets a milter leave the command
// of code unanswered; 0 for a command that is always answered.
func CommandBit(code byte) gomilter.OptProtocol { return replyBits[code] }

// StageNames names the SMFIP_NR_* bits of p as the log does
// ("connect,helo,header,eoh").
func StageNames(p gomilter.OptProtocol) string {
	var names []string
	for _, st := range replyStages {
		if p&st.bit != 0 {
			names = append(names, st.name)
		}
	}
	return strings.Join(names, ",")
}

// replyAction is what replyFilter does with the next packet go-milter
// writes.
type replyAction uint8

const (
	passReply    replyAction = iota
	upgradeReply             // the answer to the MTA's negotiation
	dropReply                // the reply to a stage the MTA does not wait for
)

// replyFilter lets an MTA of protocol 6 send the stages a session need not
// answer without waiting for each reply, which go-milter cannot: it
// negotiates protocol 2 and answers every command. With a header field
// per packet, that is most of the round trips of a message.
//
// It watches the packets go-milter reads; when the MTA offers protocol 6
// and some of the allowed SMFIP_NR_* bits, it adds them to go-milter's
// answer (with version 6), and then drops go-milter's reply to every
// command of those stages. go-milter writes one reply after each command
// it reads, and nothing else before it, so the reply is the next packet
// written.
type replyFilter struct {
	// allowed is the stages that may go unanswered (NoReplyStages for a
	// Conn); quiet is what was negotiated.
	allowed, quiet gomilter.OptProtocol
	next           replyAction
	// pkt gathers a packet to drop or change until it is whole.
	pkt []byte
	// upgraded is set when the negotiation's answer was changed, until
	// the connection logs it.
	upgraded bool
}

// packetRead notes a whole packet go-milter has read: its command code
// and its first bytes of data.
func (f *replyFilter) packetRead(code byte, data []byte) {
	// go-milter writes a command's reply before it reads again: whatever
	// is still armed is for a command it left unanswered (one it closed
	// the session on), and must not catch the next command's reply.
	f.next, f.pkt = passReply, f.pkt[:0]
	if code == byte(gomilter.CodeOptNeg) {
		f.quiet = 0
		if len(data) >= 12 && binary.BigEndian.Uint32(data) >= noReplyProtocol {
			f.quiet = f.allowed & gomilter.OptProtocol(binary.BigEndian.Uint32(data[8:]))
			if f.quiet != 0 {
				f.next = upgradeReply
			}
		}
		return
	}
	if f.quiet&CommandBit(code) != 0 {
		f.next = dropReply
	}
}

// filter takes p, written by go-milter, and returns what to send on: p
// itself, or nothing while a packet to drop or change is incomplete, or
// the changed packet and what followed it. The result is only valid
// until the next call.
func (f *replyFilter) filter(p []byte) ([]byte, error) {
	if f.next == passReply {
		return p, nil
	}
	f.pkt = append(f.pkt, p...)
	if len(f.pkt) < 4 {
		return nil, nil
	}
	size := 4 + uint64(binary.BigEndian.Uint32(f.pkt))
	if uint64(len(f.pkt)) < size {
		return nil, nil
	}
	action := f.next
	f.next = passReply
	out := f.pkt
	f.pkt = f.pkt[:0]
	switch action {
	case dropReply:
		// Continue, or a refusal the session repeats at the next stage
		// that is answered (NoReplyStages). Anything else would change
		// the MTA's state: the MTA must not miss it.
		if size < 5 {
			return nil, fmt.Errorf("milter: empty reply to a command the MTA was told not to wait for")
		}
		if out[4] != byte(gomilter.ActContinue) && out[4] != byte(gomilter.ActReplyCode) {
			return nil, fmt.Errorf("milter: reply %q to a command the MTA was told not to wait for", rune(out[4]))
		}
		return out[size:], nil
	case upgradeReply:
		if size < 17 || out[4] != byte(gomilter.CodeOptNeg) {
			return nil, fmt.Errorf("milter: negotiation answered with a %d-byte packet %q", size, out[4:min(size, 8)])
		}
		binary.BigEndian.PutUint32(out[5:], noReplyProtocol)
		proto := gomilter.OptProtocol(binary.BigEndian.Uint32(out[13:])) | f.quiet
		binary.BigEndian.PutUint32(out[13:], uint32(proto))
		f.upgraded = true
		return out, nil
	}
	return out, nil
}
