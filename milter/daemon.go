package milter

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/spf-milter/spf-milter/config"
)

// DaemonOptions bound the sessions a Daemon serves and say where it logs.
type DaemonOptions struct {
	// IdleTimeout ends a session whose MTA sends nothing (or reads
	// nothing) for this long; 0 means no limit. A packet must arrive whole
	// within it from when the milter starts waiting for it, so an MTA that
	// trickles bytes cannot hold a session open either.
	IdleTimeout time.Duration
	// MaxDuration ends a session this long after it was accepted,
	// however busy it is; 0 means no limit.
	MaxDuration time.Duration
	// IOBuffer, when over 0, buffers each session's connection: reads go
	// through a buffer of this size, and the packets written are held until
	// go-milter next reads, then sent in one write. 0 reads and writes
	// straight from and to the socket, as plain go-milter does.
	//
	// go-milter reads every packet in two reads (its length, then its
	// body), and an MTA sends the macros and the command of a stage back to
	// back: the read buffer turns those four system calls into about one.
	// At the end of a message go-milter writes each header change and then
	// the reply in writes of their own; held, they go out together. Holding
	// delays nothing: the MTA waits for the reply before it sends more, and
	// go-milter reads right after it has written the reply.
	IOBuffer int
	// NoReply lists the stages (SMFIP_NR_* bits, NoReplyStages for
	// spf-milter's sessions) whose replies an MTA of milter protocol 6 may
	// be told not to wait for, so that it sends, say, all the header
	// fields of a message in one go. Only the bits the MTA offers are
	// negotiated. The server's milter must answer continue at those
	// stages, or refuse again at the next stage that is answered: the
	// reply it gives there is dropped.
	NoReply gomilter.OptProtocol
	// Log receives the daemon's own events (timeouts, shutdown); nil means
	// slog.Default().
	Log *slog.Logger
}

// DefaultIOBuffer is the IOBuffer the daemon runs with unless told
// otherwise. The packets of a stage (its macros and its command, or a
// header field) fit in it; a larger packet is read straight into
// go-milter's own buffer. A connection lives for one or a few messages,
// so its buffer is garbage soon: small is cheaper.
const DefaultIOBuffer = 1024

// DefaultGCPercent is the garbage collector setting (GOGC) the daemon runs
// with unless GOGC is set in its environment. Its live heap is a few
// megabytes, and go-milter allocates a 4 KiB buffer for every packet it
// writes, so with Go's default of 100 the collector runs every few hundred
// messages and takes about a quarter of the CPU of a warm session. 400
// makes it run a fifth as often, for a few megabytes more of memory.
const DefaultGCPercent = 400

// DefaultMemoryLimit is the soft memory limit (GOMEMLIMIT) the daemon runs
// with unless GOMEMLIMIT is set in its environment. With DefaultGCPercent
// alone the heap may grow to five times what is live: a thousand busy
// sessions took the process to 270 MB in a soak. Near this limit the
// collector runs more often instead; Go caps the CPU it then takes, so a
// live heap above the limit costs CPU, never a crash.
const DefaultMemoryLimit = 128 << 20

// holdLimit bounds the bytes of written packets held back; past it they
// are sent at once.
const holdLimit = 64 << 10

// Daemon serves milter sessions on listeners and can drain them.
//
// go-milter's Server accepts connections and runs one goroutine per
// session, but it neither bounds a session's time nor knows which sessions
// are open: Server.Close only closes listeners. Daemon accepts the
// connections itself and wraps each one it hands to the Server so that
// every session is timed and tracked, which is what a graceful shutdown
// needs, and has a context that ends with its connection.
type Daemon struct {
	srv  *gomilter.Server
	opts atomic.Pointer[DaemonOptions]

	mu        sync.Mutex
	closing   bool
	listeners map[*listener]struct{}
	conns     map[*conn]struct{}
	// changed, made when Shutdown waits, is closed and dropped when a
	// session ends, so that Shutdown can wait for the count to reach zero
	// without polling. It stays nil while nobody waits: no channel to make
	// for every session.
	changed chan struct{}
}

// NewDaemon returns a Daemon that runs srv's milter on the listeners given
// to Serve.
func NewDaemon(srv *gomilter.Server, opts DaemonOptions) *Daemon {
	d := &Daemon{
		srv:       srv,
		listeners: map[*listener]struct{}{},
		conns:     map[*conn]struct{}{},
	}
	d.SetOptions(opts)
	return d
}

// SetOptions replaces the options for sessions accepted from now on (a
// config reload); sessions already open keep the limits they started with.
func (d *Daemon) SetOptions(opts DaemonOptions) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	d.opts.Store(&opts)
}

func (d *Daemon) log() *slog.Logger { return d.opts.Load().Log }

// Listen opens the listener named by spec, in the syntax of the config
// file's listen key (inet:HOST:PORT, inet6:[HOST]:PORT, inet:PORT@HOST,
// unix:/path). For a unix socket, a stale socket file left by a crashed
// daemon is replaced, but a socket something still answers on, or a file
// that is not a socket, is refused; the socket gets mode (0 leaves it as
// the umask made it) and is removed when the listener is closed.
func Listen(spec string, mode fs.FileMode) (net.Listener, error) {
	network, address, err := config.ParseListen(spec)
	if err != nil {
		return nil, err
	}
	if network != "unix" {
		ln, err := net.Listen(network, address)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", spec, err)
		}
		return ln, nil
	}
	if err := removeStaleSocket(address); err != nil {
		return nil, err
	}
	// net.Listen unlinks the socket file when the listener is closed.
	ln, err := net.Listen("unix", address)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", spec, err)
	}
	if mode != 0 {
		if err := os.Chmod(address, mode); err != nil {
			ln.Close()
			return nil, fmt.Errorf("listen on %s: set socket mode %04o: %w", spec, mode, err)
		}
	}
	return ln, nil
}

// removeStaleSocket removes the socket file at path if no process answers
// on it. Anything else at path is left alone and refused: a daemon must
// not delete a file it did not create, nor steal a live daemon's socket.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("unix socket %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("unix socket %s: the path exists and is not a socket; refusing to replace it", path)
	}
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("unix socket %s: another process is listening on it (is spf-milter already running?)", path)
	}
	// Only a refused connection proves that nobody listens; a permission
	// error or a full backlog could hide a live daemon.
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("unix socket %s: cannot tell whether it is in use: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("unix socket %s: remove stale socket: %w", path, err)
	}
	return nil
}

// Serve accepts milter sessions on ln until ln fails or Shutdown is
// called; it closes ln before returning. After Shutdown it returns
// gomilter.ErrServerClosed, as net/http does.
func (d *Daemon) Serve(ln net.Listener) error {
	l := &listener{Listener: ln, d: d}
	d.mu.Lock()
	if d.closing {
		d.mu.Unlock()
		ln.Close()
		return gomilter.ErrServerClosed
	}
	d.listeners[l] = struct{}{}
	d.mu.Unlock()

	defer l.Close()
	for {
		nc, err := l.Accept()
		if err != nil {
			if d.isClosing() {
				return gomilter.ErrServerClosed
			}
			return err
		}
		d.serveConn(nc.(*conn))
	}
}

// serveConn starts go-milter's session loop on c with a copy of the
// Server of its own, whose NewMilter hands every Milter it makes for this
// connection (the first one, and those go-milter makes after a final
// reply) the connection's context (sessionBinder). The Server's own
// NewMilter is called with no way of telling which connection it is for.
// A copy also keeps Server.Serve's unguarded append to its listener list
// from racing.
func (d *Daemon) serveConn(c *conn) {
	srv := *d.srv
	newMilter := d.srv.NewMilter
	srv.NewMilter = func() gomilter.Milter {
		m := newMilter()
		if b, ok := m.(sessionBinder); ok {
			b.bindSession(c)
		}
		return m
	}
	// Serve accepts c, starts its session on a goroutine of its own and
	// returns at the next Accept.
	_ = srv.Serve(&oneConn{c: c})
}

// sessionBinder is a Milter that can use the connection it serves: its
// context, and a watch for the MTA hanging up while a check runs.
type sessionBinder interface {
	bindSession(sessionConn)
}

// sessionConn is what a session may ask of its connection.
type sessionConn interface {
	// Context is cancelled when the connection closes, whoever closes it
	// (the MTA, a timeout, a forced Shutdown).
	Context() context.Context
	// watch returns a context derived from parent that is also cancelled
	// when the MTA closes the connection while nothing is being read from
	// it, as during a check; stop must be called once the check is over.
	watch(parent context.Context) (ctx context.Context, stop func())
}

// oneConn is a listener that accepts one connection and then reports
// itself closed.
type oneConn struct {
	c    *conn
	done bool
}

func (o *oneConn) Accept() (net.Conn, error) {
	if o.done {
		return nil, net.ErrClosed
	}
	o.done = true
	return o.c, nil
}

// Close does nothing: the connection belongs to its session.
func (o *oneConn) Close() error   { return nil }
func (o *oneConn) Addr() net.Addr { return o.c.LocalAddr() }

// Open returns the number of sessions open now.
func (d *Daemon) Open() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.conns)
}

// Shutdown stops accepting (closing every listener, which removes unix
// socket files), then waits for the open sessions to end. When ctx is done
// first, it closes the sessions still open and returns ctx's error. It is
// safe to call more than once.
func (d *Daemon) Shutdown(ctx context.Context) error {
	d.mu.Lock()
	d.closing = true
	lns := make([]*listener, 0, len(d.listeners))
	for l := range d.listeners {
		lns = append(lns, l)
	}
	d.mu.Unlock()

	var errs []error
	for _, l := range lns {
		if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if n := d.Open(); n > 0 {
		d.log().Info("stopped accepting; waiting for open sessions to end", "open", n)
	} else {
		d.log().Info("stopped accepting; no session open")
	}

	for {
		d.mu.Lock()
		if d.changed == nil {
			d.changed = make(chan struct{})
		}
		n, changed := len(d.conns), d.changed
		d.mu.Unlock()
		if n == 0 {
			return errors.Join(errs...)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			d.mu.Lock()
			open := make([]*conn, 0, len(d.conns))
			for c := range d.conns {
				open = append(open, c)
			}
			d.mu.Unlock()
			for _, c := range open {
				c.forceClose()
			}
			d.log().Warn("drain time over; closed the sessions still open", "closed", len(open))
			return errors.Join(append(errs, ctx.Err())...)
		}
	}
}

func (d *Daemon) isClosing() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closing
}

// track registers a newly accepted connection, or reports false when the
// daemon is shutting down and the connection must not be served.
func (d *Daemon) track(nc net.Conn) (*conn, bool) {
	opts := d.opts.Load()
	c := &conn{Conn: nc, d: d, opts: opts, accepted: time.Now()}
	c.ctx, c.cancel = context.WithCancelCause(context.Background())
	if opts.IOBuffer > 0 {
		c.buf = bufio.NewReaderSize(socketReader{c}, opts.IOBuffer)
	}
	if opts.NoReply != 0 {
		c.replies = &replyFilter{allowed: opts.NoReply}
		c.packetRead = c.replies.packetRead
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closing {
		return nil, false
	}
	d.conns[c] = struct{}{}
	return c, true
}

func (d *Daemon) untrack(c *conn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.conns[c]; !ok {
		return
	}
	delete(d.conns, c)
	if d.changed != nil {
		close(d.changed)
		d.changed = nil
	}
}

// peerName names the MTA end of a connection for the log; a unix socket
// client usually has no address, so the socket path stands in.
func peerName(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil && a.String() != "" && a.String() != "@" {
		return a.String()
	}
	if a := c.LocalAddr(); a != nil {
		return a.Network() + ":" + a.String()
	}
	return "unknown"
}

// listener hands the Server tracked connections.
type listener struct {
	net.Listener
	d *Daemon

	closeOnce sync.Once
	closeErr  error
}

// Accept returns the next connection, wrapped. Errors that pass (too many
// open files, out of buffers) are waited out rather than returned, because
// go-milter's Serve gives up on the first error and the daemon would stop
// listening for good.
func (l *listener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			if !transientAcceptError(err) || l.d.isClosing() {
				return nil, err
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.d.log().Warn("accept failed; retrying", "error", err, "retry_in", delay.String())
			time.Sleep(delay)
			continue
		}
		c, ok := l.d.track(nc)
		if !ok {
			nc.Close()
			return nil, net.ErrClosed
		}
		if c.log().Enabled(context.Background(), slog.LevelDebug) {
			c.log().Debug("session opened", "peer", peerName(c.Conn))
		}
		return c, nil
	}
}

// transientAcceptError reports whether an Accept error is a shortage of
// resources that may pass.
func transientAcceptError(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Close closes the listener once (go-milter's Serve closes it too) and
// forgets it.
func (l *listener) Close() error {
	l.closeOnce.Do(func() {
		l.closeErr = l.Listener.Close()
		l.d.mu.Lock()
		delete(l.d.listeners, l)
		l.d.mu.Unlock()
	})
	return l.closeErr
}

// conn is one tracked, timed milter session. go-milter closes the
// connection when its session loop ends (on a read error, a QUIT or a
// protocol error), so Close is where a session is known to be over.
type conn struct {
	net.Conn
	d        *Daemon
	opts     *DaemonOptions
	accepted time.Time
	// buf, when set, buffers reads from the socket, and held collects the
	// packets written until go-milter reads again (DaemonOptions.IOBuffer).
	// Only the session's goroutine uses them.
	buf  *bufio.Reader
	held []byte
	// frame follows the packets in what go-milter reads, so that the idle
	// time is counted per packet: from when go-milter starts reading one
	// until it has the whole packet. Counted per read instead, one byte a
	// second would keep a session open for good.
	frame packetFrame
	// replies, when set, lets the MTA skip waiting for the replies of
	// DaemonOptions.NoReply.
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

	// ctx is the session's context (sessionConn.Context), cancelled by
	// Close and forceClose.
	ctx    context.Context
	cancel context.CancelCauseFunc

	// forced is set when Shutdown closes the session, so that the read
	// error this causes is not reported as a failure, and so that Close
	// leaves held alone: it belongs to the session's goroutine.
	forced    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// Errors a session's context is cancelled with (context.Cause).
var (
	errConnClosed    = errors.New("milter connection closed")
	errSessionForced = errors.New("session closed by shutdown: drain time over")
	errMTAHungUp     = errors.New("the MTA closed the connection during the check")
)

// Context implements sessionConn.
func (c *conn) Context() context.Context { return c.ctx }

// watch implements sessionConn. go-milter reads nothing while a callback
// runs, so a hang-up would only be seen after the check: a goroutine
// reads the socket meanwhile, as net/http does while a handler runs. The
// end of the stream (or a reset) with nothing before it is a hang-up.
// Bytes are an MTA that does not wait for the reply: they are kept for
// go-milter, and the watch ends there, as an MTA that sends more is not
// gone. When bytes are already buffered, there is nothing to watch.
func (c *conn) watch(parent context.Context) (context.Context, func()) {
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
			cancel(errMTAHungUp)
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

func (c *conn) log() *slog.Logger { return c.opts.Log }

// deadline is when the next read or write must have finished: the idle
// time from now, but never past the session's overall end.
func (c *conn) deadline() time.Time {
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

// Read reads with the session's deadline, through the read buffer when
// there is one. A timeout or a forced close is logged here and reported to
// go-milter as the end of the stream, so that it ends the session quietly
// instead of logging a read error on its own.
//
// The deadline is set when a packet starts and holds until it is whole:
// the bytes a packet arrives in, however many, do not move it.
func (c *conn) Read(p []byte) (n int, err error) {
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

// maxConnectPacket bounds the connect packet read ahead to be normalised:
// a host name and an address take a few hundred bytes. A larger one goes
// to go-milter as it came, and an address it cannot read is refused by the
// session.
const maxConnectPacket = 4096

// readAhead reads the start of the next packet into pending, and the
// whole packet when it is a connect packet, whose client address it
// rewrites so that go-milter can read it (normalizeConnect). Other
// packets go on from the socket as they come.
func (c *conn) readAhead() error {
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
func (c *conn) readPending(n int) error {
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

// socketReader is what a session's read buffer fills from.
type socketReader struct{ c *conn }

func (r socketReader) Read(p []byte) (int, error) { return r.c.readSocket(p) }

func (c *conn) readSocket(p []byte) (int, error) {
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
func (c *conn) setReadDeadline(dl time.Time) error {
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

// Write writes with the session's deadline, so that an MTA that stops
// reading cannot pin the session either. With an IOBuffer, p is held until
// go-milter reads again (or the session closes) and written with what
// follows it.
func (c *conn) Write(p []byte) (int, error) {
	if c.replies != nil {
		out, err := c.replies.filter(p)
		if err != nil {
			c.log().Error("session closed: protocol error", "peer", peerName(c.Conn), "error", err)
			c.Close()
			return 0, err
		}
		if c.replies.upgraded {
			c.replies.upgraded = false
			c.log().Debug("milter protocol 6 negotiated, replies skipped",
				"peer", peerName(c.Conn), "stages", stageNames(c.replies.quiet))
		}
		if _, err := c.write(out); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.write(p)
}

// write sends p on, or holds it with an IOBuffer.
func (c *conn) write(p []byte) (int, error) {
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
func (c *conn) flush() error {
	p := c.held
	if cap(p) > 2*DefaultIOBuffer {
		c.held = nil // an unusually large burst: do not keep its memory
	} else {
		c.held = p[:0:cap(p)]
	}
	_, err := c.writeSocket(p)
	return err
}

func (c *conn) writeSocket(p []byte) (int, error) {
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
func (c *conn) ended(err error, op string) error {
	if c.forced.Load() {
		return io.EOF
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		return err
	}
	age := time.Since(c.accepted)
	if c.opts.MaxDuration > 0 && age >= c.opts.MaxDuration {
		c.log().Info("session closed: maximum duration reached",
			"peer", peerName(c.Conn), "op", op, "max_duration", c.opts.MaxDuration.String(), "duration", age.Round(time.Millisecond).String())
	} else if op == "read" {
		// mid_packet tells a slow or stuck sender from a silent one.
		c.log().Info("session closed: idle timeout",
			"peer", peerName(c.Conn), "op", op, "mid_packet", !c.frame.atStart() || len(c.pending) > 0,
			"idle_timeout", c.opts.IdleTimeout.String(), "duration", age.Round(time.Millisecond).String())
	} else {
		c.log().Info("session closed: idle timeout",
			"peer", peerName(c.Conn), "op", op, "idle_timeout", c.opts.IdleTimeout.String(), "duration", age.Round(time.Millisecond).String())
	}
	// Closing here rather than waiting for go-milter to do it frees the
	// slot even if its loop were stuck elsewhere.
	c.Close()
	if op == "read" {
		return io.EOF
	}
	return err
}

// Close closes the connection once, cancels its context and ends its
// tracking. Packets still held are sent first, unless Shutdown forced the
// close. Only the session's goroutine calls Close (go-milter's loop, or
// ended); Shutdown uses forceClose.
func (c *conn) Close() error {
	c.closeOnce.Do(func() { c.shut(!c.forced.Load()) })
	return c.closeErr
}

// forceClose closes the session from another goroutine than its own, as
// Shutdown does when the drain time is over: the check it may be running
// is cancelled, and held, which its goroutine may be writing, is not
// touched.
func (c *conn) forceClose() {
	c.forced.Store(true)
	c.cancel(errSessionForced)
	c.closeOnce.Do(func() { c.shut(false) })
}

// shut is Close's work, done once; flush says whether held may be sent.
func (c *conn) shut(flush bool) {
	c.cancel(errConnClosed)
	if flush && len(c.held) > 0 {
		// Straight to the socket: a failure here has nothing left to
		// end, and ended would call Close again.
		_ = c.Conn.SetWriteDeadline(c.deadline())
		_, _ = c.Conn.Write(c.held)
		c.held = nil
	}
	c.closeErr = c.Conn.Close()
	c.d.untrack(c)
	c.log().Debug("session ended", "peer", peerName(c.Conn), "duration", time.Since(c.accepted).Round(time.Millisecond).String())
}
