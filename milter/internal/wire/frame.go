package wire

import "encoding/binary"

// packetFrame tracks where a stream of milter packets (a 4-byte
// big-endian length, then that many bytes: a command code and its data) is,
// as it is read.
type packetFrame struct {
	length [4]byte
	// got counts the bytes of the length read so far.
	got int
	// left counts the bytes of the packet still to read after its length.
	left uint32
	// head keeps the code and the first data bytes of the packet, enough
	// for a negotiation; seen counts the bytes of it filled.
	head [13]byte
	seen int
}

// atStart reports whether the next byte starts a packet.
func (f *packetFrame) atStart() bool { return f.got == 0 && f.left == 0 }

// consume moves past b, calling done, when not nil, with the code and the
// first data bytes of every packet b completes.
func (f *packetFrame) consume(b []byte, done func(code byte, data []byte)) {
	for len(b) > 0 {
		if f.left > 0 {
			k := len(b)
			if uint64(k) > uint64(f.left) {
				k = int(f.left)
			}
			if f.seen < len(f.head) {
				f.seen += copy(f.head[f.seen:], b[:k])
			}
			f.left -= uint32(k)
			b = b[k:]
			if f.left == 0 && done != nil {
				done(f.head[0], f.head[1:f.seen])
			}
			continue
		}
		f.length[f.got] = b[0]
		f.got++
		b = b[1:]
		if f.got == len(f.length) {
			f.got, f.left, f.seen = 0, binary.BigEndian.Uint32(f.length[:]), 0
		}
	}
}
