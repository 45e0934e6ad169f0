package milter

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/spf-milter/spf-milter/milter/internal/wire"
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
	// SkipReplies lets an MTA of milter protocol 6 skip waiting for the
	// replies at connect, HELO, each header field and the end of the
	// headers, so that it sends, say, all the header fields of a message
	// in one go; only the stages the MTA offers are negotiated. These are
	// the only stages it can cover: a session answers continue there, or
	// refuses again at the next stage that is answered (MAIL FROM, RCPT
	// TO, end of message), so no refusal is lost (docs/wire.md).
	SkipReplies bool
	// Log receives the daemon's own events (timeouts, shutdown); nil means
	// slog.Default().
	Log *slog.Logger
}

// DefaultIOBuffer is the IOBuffer the daemon runs with unless told
// otherwise. The packets of a stage (its macros and its command, or a
// header field) fit in it; a larger packet is read straight into
// go-milter's own buffer. A connection lives for one or a few messages,
// so its buffer is garbage soon: small is cheaper.
const DefaultIOBuffer = wire.DefaultIOBuffer

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

// Daemon serves milter sessions on listeners and can drain them.
//
// go-milter's Server accepts connections and runs one goroutine per
// session, but it neither bounds a session's time nor knows which sessions
// are open: Server.Close only closes listeners. Daemon accepts the
// connections itself and wraps each one it hands to the Server (a
// wire.Conn) so that every session is timed and tracked, which is what a
// graceful shutdown needs, and has a context that ends with its
// connection.
type Daemon struct {
	srv  *gomilter.Server
	opts atomic.Pointer[daemonOptions]

	mu        sync.Mutex
	closing   bool
	listeners map[*listener]struct{}
	conns     map[*wire.Conn]struct{}
	// changed, made when Shutdown waits, is closed and dropped when a
	// session ends, so that Shutdown can wait for the count to reach zero
	// without polling. It stays nil while nobody waits: no channel to make
	// for every session.
	changed chan struct{}
	// untrackFn is d.untrack, made once: a method value allocates.
	untrackFn func(*wire.Conn)
}

// daemonOptions are the options of SetOptions, and the wire options made
// from them once for every connection they apply to.
type daemonOptions struct {
	DaemonOptions
	wire wire.Options
}

// NewDaemon returns a Daemon that runs srv's milter on the listeners given
// to Serve.
func NewDaemon(srv *gomilter.Server, opts DaemonOptions) *Daemon {
	d := &Daemon{
		srv:       srv,
		listeners: map[*listener]struct{}{},
		conns:     map[*wire.Conn]struct{}{},
	}
	d.untrackFn = d.untrack
	d.SetOptions(opts)
	return d
}

// SetOptions replaces the options for sessions accepted from now on (a
// config reload); sessions already open keep the limits they started with.
func (d *Daemon) SetOptions(opts DaemonOptions) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	d.opts.Store(&daemonOptions{DaemonOptions: opts, wire: wire.Options{
		IdleTimeout: opts.IdleTimeout,
		MaxDuration: opts.MaxDuration,
		IOBuffer:    opts.IOBuffer,
		SkipReplies: opts.SkipReplies,
		Log:         opts.Log,
	}})
}

func (d *Daemon) log() *slog.Logger { return d.opts.Load().Log }

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
		d.serveConn(nc.(*wire.Conn))
	}
}

// serveConn starts go-milter's session loop on c with a copy of the
// Server of its own, whose NewMilter hands every Milter it makes for this
// connection (the first one, and those go-milter makes after a final
// reply) the connection's context (sessionBinder). The Server's own
// NewMilter is called with no way of telling which connection it is for.
// A copy also keeps Server.Serve's unguarded append to its listener list
// from racing.
func (d *Daemon) serveConn(c *wire.Conn) {
	srv := *d.srv
	newMilter := d.srv.NewMilter
	srv.NewMilter = func() gomilter.Milter {
		m := newMilter()
		if b, ok := m.(sessionBinder); ok {
			b.bindSession(sessionLink{c})
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

// sessionLink is a session's connection as a sessionConn.
type sessionLink struct{ *wire.Conn }

func (l sessionLink) watch(parent context.Context) (context.Context, func()) {
	return l.Watch(parent)
}

// oneConn is a listener that accepts one connection and then reports
// itself closed.
type oneConn struct {
	c    *wire.Conn
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
			open := make([]*wire.Conn, 0, len(d.conns))
			for c := range d.conns {
				open = append(open, c)
			}
			d.mu.Unlock()
			for _, c := range open {
				c.ForceClose()
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
func (d *Daemon) track(nc net.Conn) (*wire.Conn, bool) {
	c := wire.NewConn(nc, &d.opts.Load().wire, d.untrackFn)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closing {
		return nil, false
	}
	d.conns[c] = struct{}{}
	return c, true
}

func (d *Daemon) untrack(c *wire.Conn) {
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
