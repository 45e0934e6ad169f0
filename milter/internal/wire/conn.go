package wire

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	gomilter "github.com/emersion/go-milter"
)

// Options bound one connection and say where it logs. The daemon makes
// them once per configuration, and every connection accepted under that
// configuration shares them.
type Options struct {
	// IdleTimeout bounds the wait for each packet, from when go-milter
	// starts reading it until it is whole, and for each write; 0 means no
	// limit.
	IdleTimeout time.Duration
	// MaxDuration ends the connection this long after it was accepted; 0
	// means no limit.
	MaxDuration time.Duration
	// IOBuffer, when over 0, is the size of the read buffer, and makes the
	// packets go-milter writes wait until it next reads, to leave in one
	// write.
	IOBuffer int
	// SkipReplies lets an MTA of protocol 6 skip waiting for the replies
	// of NoReplyStages.
	SkipReplies bool
	// Log receives the connection's events; it must not be nil.
	Log *slog.Logger
}

// DefaultIOBuffer is the read buffer the daemon gives a connection unless
// told otherwise. The packets of a stage (its macros and its command, or a
// header field) fit in it; a larger packet is read straight into
// go-milter's own buffer. A connection lives for one or a few messages,
// so its buffer is garbage soon: small is cheaper.
const DefaultIOBuffer = 1024

// holdLimit bounds the bytes of written packets held back; past it they
// are sent at once.
const holdLimit = 64 << 10

// maxConnectPacket bounds the connect packet read ahead to be normalised:
// a host name and an address take a few hundred bytes. A larger one goes
// to go-milter as it came, and an address it cannot read is refused by the
// session.
const maxConnectPacket = 4096

// Errors a connection's context is cancelled with (context.Cause).
var (
	// ErrConnClosed: the connection closed, whoever closed it.
	ErrConnClosed = errors.New("milter connection closed")
	// ErrSessionForced: ForceClose closed it.
	ErrSessionForced = errors.New("session closed by shutdown: drain time over")
	// ErrMTAHungUp: the MTA closed it while a Watch was on.
	ErrMTAHungUp = errors.New("the MTA closed the connection during the check")
)

// Conn is one milter connection as go-milter's session loop is to see it:
// timed per packet, buffered, with its replies filtered and its connect
// packet normalised. Read, Write and Close are for the session's goroutine
// (go-milter's loop and the callbacks it runs); ForceClose and Context
// are safe from any goroutine.
type Conn struct {
	net.Conn
	opts     *Options
	accepted time.Time
	// onClose runs once, after the socket is closed.
	onClose func(*Conn)

	// buf, when set, buffers reads from the socket, and held collects the
	// packets written until go-milter reads again (Options.IOBuffer).
	// Only the session's goroutine uses them.
	buf  *bufio.Reader
	held []byte
	// frame follows the packets in what go-milter reads, so that the idle
	// time is counted per packet: from when go-milter starts reading one
	// until it has the whole packet. Counted per read instead, one byte a
	// second would keep a session open for good.
	frame packetFrame
	// replies, when set, lets the MTA skip waiting for the replies of
	// NoReplyStages.
	replies *replyFilter
	// packetRead is replies.packetRead, made once: a method value
	// allocates.
	packetRead func(code byte, data []byte)
	// packetDeadline is when the packet being read must have arrived.
	packetDeadline time.Time
	// readDeadline is the read deadline last set on the socket.
	readDeadline time.Time

	// pending holds bytes read from the socket ahead of go-milter (a
	// connect packet being normalised, what the watch read), which
	// Read hands over before reading more; aheadErr is the error that
	// ended the read ahead, returned once pending is empty.
	pending  []byte
	aheadErr error
	// connectSeen is set once a connect packet went by: only packets up to
	// it are read ahead.
	connectSeen bool

	// ctx is the connection's context, cancelled by Close and ForceClose.
	ctx    context.Context
	cancel context.CancelCauseFunc

	// forced is set when ForceClose closes the connection, so that the
	// read error this causes is not reported as a failure, and so that
	// Close leaves held alone: it belongs to the session's goroutine.
	forced    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// NewConn wraps nc, just accepted, for go-milter. opts must stay unchanged
// while the connection is open; onClose, when not nil, is called once the
// connection is closed, by whichever goroutine closes it.
func NewConn(nc net.Conn, opts *Options, onClose func(*Conn)) *Conn {
	c := &Conn{Conn: nc, opts: opts, accepted: time.Now(), onClose: onClose}
	c.ctx, c.cancel = context.WithCancelCause(context.Background())
	if opts.IOBuffer > 0 {
		c.buf = bufio.NewReaderSize(socketReader{c}, opts.IOBuffer)
	}
	if opts.SkipReplies {
		c.replies = &replyFilter{allowed: NoReplyStages}
		c.packetRead = c.replies.packetRead
	}
	return c
}

// Context is cancelled when the connection closes, whoever closes it (the
// MTA, a timeout, ForceClose); context.Cause tells which.
func (c *Conn) Context() context.Context { return c.ctx }

// Watch returns a context derived from parent that is also cancelled, with
// ErrMTAHungUp, when the MTA closes the connection while nothing is being
// read from it, as during a check; stop must be called once the check is
// over, from the session's goroutine.
//
// go-milter reads nothing while a callback runs, so a hang-up would only
// be seen after the check: a goroutine reads the socket meanwhile, as
// net/http does while a handler runs. The end of the stream (or a reset)
// with nothing before it is a hang-up. Bytes are an MTA that does not wait
// for the reply: they are kept for go-milter, and the watch ends there, as
// an MTA that sends more is not gone. When bytes are already buffered,
// there is nothing to watch.
func (c *Conn) Watch(parent context.Context) (ctx context.Context, stop func()) {
	if len(c.pending) > 0 || (c.buf != nil && c.buf.Buffered() > 0) || c.aheadErr != nil {
		return parent, func() {}
	}
	// No deadline while the check runs: the check has its own.
	if err := c.Conn.SetReadDeadline(time.Time{}); err != nil {
		return parent, func() {}
	}
	ctx, cancel := context.WithCancelCause(parent)
	var (
		got  [512]byte
		n    int
		done = make(chan struct{})
	)
	go func() {
		defer close(done)
		var err error
		n, err = c.Conn.Read(got[:])
		if n == 0 && err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			cancel(ErrMTAHungUp)
		}
	}()
	return ctx, func() {
		// A deadline in the past ends the read at once.
		_ = c.Conn.SetReadDeadline(time.Unix(1, 0))
		<-done
		c.readDeadline = time.Unix(1, 0)
		c.pending = append(c.pending, got[:n]...)
		cancel(nil)
	}
}

// Log is where the connection logs.
func (c *Conn) Log() *slog.Logger { return c.opts.Log }

// deadline is when the next read or write must have finished: the idle
// time from now, but never past the connection's overall end.
func (c *Conn) deadline() time.Time {
	var dl time.Time
	if c.opts.IdleTimeout > 0 {
		dl = time.Now().Add(c.opts.IdleTimeout)
	}
	if c.opts.MaxDuration > 0 {
		if end := c.accepted.Add(c.opts.MaxDuration); dl.IsZero() || end.Before(dl) {
			dl = end
		}
	}
	return dl
}

// Read reads with the connection's deadline, through the read buffer when
// there is one. A timeout or a forced close is logged here and reported to
// go-milter as the end of the stream, so that it ends the session quietly
// instead of logging a read error on its own.
//
// The deadline is set when a packet starts and holds until it is whole:
// the bytes a packet arrives in, however many, do not move it.
func (c *Conn) Read(p []byte) (n int, err error) {
	if len(c.held) > 0 {
		if err := c.flush(); err != nil {
			return 0, err
		}
	}
	if c.frame.atStart() {
		c.packetDeadline = c.deadline()
		if !c.connectSeen && c.aheadErr == nil {
			c.aheadErr = c.readAhead()
		}
	}
	switch {
	case len(c.pending) > 0:
		n = copy(p, c.pending)
		c.pending = c.pending[n:]
	case c.aheadErr != nil:
		return 0, c.aheadErr
	case c.buf != nil:
		n, err = c.buf.Read(p)
	default:
		n, err = c.readSocket(p)
	}
	c.frame.consume(p[:n], c.packetRead)
	return n, err
}

// readAhead reads the start of the next packet into pending, and the
// whole packet when it is a connect packet, whose client address it
// rewrites so that go-milter can read it (normalizeConnect). Other
// packets go on from the socket as they come.
func (c *Conn) readAhead() error {
	if err := c.readPending(4); err != nil {
		return err
	}
	size := binary.BigEndian.Uint32(c.pending)
	if size == 0 || size > maxConnectPacket {
		return nil
	}
	if err := c.readPending(5); err != nil {
		return err
	}
	if c.pending[4] != byte(gomilter.CodeConn) {
		return nil
	}
	c.connectSeen = true
	if err := c.readPending(4 + int(size)); err != nil {
		return err
	}
	normalizeConnect(c.pending[5 : 4+size])
	return nil
}

// readPending reads into pending until it holds n bytes.
func (c *Conn) readPending(n int) error {
	for len(c.pending) < n {
		if cap(c.pending) < n {
			c.pending = append(make([]byte, 0, max(n, 16)), c.pending...)
		}
		var k int
		var err error
		dst := c.pending[len(c.pending):n]
		if c.buf != nil {
			k, err = c.buf.Read(dst)
		} else {
			k, err = c.readSocket(dst)
		}
		c.pending = c.pending[:len(c.pending)+k]
		if err != nil {
			return err
		}
	}
	return nil
}

// socketReader is what a connection's read buffer fills from.
type socketReader struct{ c *Conn }

func (r socketReader) Read(p []byte) (int, error) { return r.c.readSocket(p) }

func (c *Conn) readSocket(p []byte) (int, error) {
	if err := c.setReadDeadline(c.packetDeadline); err != nil {
		return 0, c.ended(err, "read")
	}
	n, err := c.Conn.Read(p)
	if err != nil {
		return n, c.ended(err, "read")
	}
	return n, nil
}

// setReadDeadline moves the socket's read deadline to dl, unless it would
// move later by less than a twentieth of the idle timeout: a busy session
// reads several packets a millisecond, and an idle timeout that fires a
// few percent early does no harm.
func (c *Conn) setReadDeadline(dl time.Time) error {
	if dl.Equal(c.readDeadline) {
		return nil
	}
	if !c.readDeadline.IsZero() && !dl.IsZero() && dl.After(c.readDeadline) &&
		dl.Sub(c.readDeadline) < c.opts.IdleTimeout/20 {
		return nil
	}
	c.readDeadline = dl
	return c.Conn.SetReadDeadline(dl)
}

// Write writes with the connection's deadline, so that an MTA that stops
// reading cannot pin the session either. With an IOBuffer, p is held until
// go-milter reads again (or the connection closes) and written with what
// follows it.
func (c *Conn) Write(p []byte) (int, error) {
	if c.replies != nil {
		out, err := c.replies.filter(p)
		if err != nil {
			c.Log().Error("session closed: protocol error", "peer", PeerName(c.Conn), "error", err)
			c.Close()
			return 0, err
		}
		if c.replies.upgraded {
			c.replies.upgraded = false
			c.Log().Debug("milter protocol 6 negotiated, replies skipped",
				"peer", PeerName(c.Conn), "stages", StageNames(c.replies.quiet))
		}
		if _, err := c.write(out); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.write(p)
}

// write sends p on, or holds it with an IOBuffer.
func (c *Conn) write(p []byte) (int, error) {
	if c.buf == nil {
		if len(p) == 0 {
			return 0, nil
		}
		return c.writeSocket(p)
	}
	c.held = append(c.held, p...)
	if len(c.held) >= holdLimit {
		if err := c.flush(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// flush writes the packets held back. They are taken off c.held first:
// a failed write closes the connection, and Close must not flush them
// again.
func (c *Conn) flush() error {
	p := c.held
	if cap(p) > 2*DefaultIOBuffer {
		c.held = nil // an unusually large burst: do not keep its memory
	} else {
		c.held = p[:0:cap(p)]
	}
	_, err := c.writeSocket(p)
	return err
}

func (c *Conn) writeSocket(p []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(c.deadline()); err != nil {
		return 0, c.ended(err, "write")
	}
	n, err := c.Conn.Write(p)
	if err != nil {
		return n, c.ended(err, "write")
	}
	return n, nil
}

// ended turns the error that ends a session into what go-milter should
// see, logging the reason when it is ours.
func (c *Conn) ended(err error, op string) error {
	if c.forced.Load() {
		return io.EOF
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		return err
	}
	age := time.Since(c.accepted)
	if c.opts.MaxDuration > 0 && age >= c.opts.MaxDuration {
		c.Log().Info("session closed: maximum duration reached",
			"peer", PeerName(c.Conn), "op", op, "max_duration", c.opts.MaxDuration.String(), "duration", age.Round(time.Millisecond).String())
	} else if op == "read" {
		// mid_packet tells a slow or stuck sender from a silent one.
		c.Log().Info("session closed: idle timeout",
			"peer", PeerName(c.Conn), "op", op, "mid_packet", !c.frame.atStart() || len(c.pending) > 0,
			"idle_timeout", c.opts.IdleTimeout.String(), "duration", age.Round(time.Millisecond).String())
	} else {
		c.Log().Info("session closed: idle timeout",
			"peer", PeerName(c.Conn), "op", op, "idle_timeout", c.opts.IdleTimeout.String(), "duration", age.Round(time.Millisecond).String())
	}
	// Closing here rather than waiting for go-milter to do it frees the
	// slot even if its loop were stuck elsewhere.
	c.Close()
	if op == "read" {
		return io.EOF
	}
	return err
}

// Close closes the connection once, cancels its context and calls
// onClose. Packets still held are sent first, unless ForceClose came
// first. Only the session's goroutine calls Close (go-milter's loop, or
// ended); other goroutines use ForceClose.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() { c.shut(!c.forced.Load()) })
	return c.closeErr
}

// ForceClose closes the connection from another goroutine than its
// session's, as a shutdown does when the drain time is over: the check the
// session may be running is cancelled (ErrSessionForced), and the packets
// held, which its goroutine may be writing, are not touched.
func (c *Conn) ForceClose() {
	c.forced.Store(true)
	c.cancel(ErrSessionForced)
	c.closeOnce.Do(func() { c.shut(false) })
}

// shut is Close's work, done once; flush says whether held may be sent.
func (c *Conn) shut(flush bool) {
	c.cancel(ErrConnClosed)
	if flush && len(c.held) > 0 {
		// Straight to the socket: a failure here has nothing left to
		// end, and ended would call Close again.
		_ = c.Conn.SetWriteDeadline(c.deadline())
		_, _ = c.Conn.Write(c.held)
		c.held = nil
	}
	c.closeErr = c.Conn.Close()
	if c.onClose != nil {
		c.onClose(c)
	}
	c.Log().Debug("session ended", "peer", PeerName(c.Conn), "duration", time.Since(c.accepted).Round(time.Millisecond).String())
}

// PeerName names the MTA end of a connection for the log; a unix socket
// client usually has no address, so the socket path stands in.
func PeerName(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil && a.String() != "" && a.String() != "@" {
		return a.String()
	}
	if a := c.LocalAddr(); a != nil {
		return a.Network() + ":" + a.String()
	}
	return "unknown"
}
