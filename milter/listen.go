package milter

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/milter/internal/wire"
)

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
		if c.Log().Enabled(context.Background(), slog.LevelDebug) {
			c.Log().Debug("session opened", "peer", wire.PeerName(c.Conn))
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
