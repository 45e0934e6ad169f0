// Package httpserve is the daemon's HTTP side: a listener for the
// metrics, the health check and the why page, bounded so that web clients
// can never take the descriptors or the time the milter listener needs.
package httpserve

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/netutil"
)

// Timeouts of the HTTP listener. A scrape or a why page takes a request or
// two; the limits keep a slow or idle client from holding a connection,
// and so one of the connections a listener may have open.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second
	maxHeaderBytes    = 16 << 10
)

// DefaultIdleTimeout is how long an HTTP listener keeps a keep-alive
// connection open with no request: long enough for a browser's next
// click or a scrape's next request, short enough that idle clients cannot
// keep the listener full.
const DefaultIdleTimeout = 10 * time.Second

// DefaultMaxConns is the most connections one HTTP listener (metrics,
// or the why page's own) keeps open at once, and so the most descriptors
// it may take. More clients wait in the kernel's listen backlog, holding
// none of the daemon's descriptors, until one ends. Under a low
// descriptor limit the cap is lower still (see Limits), so that
// however many clients the web side gets, the milter listener can accept
// MTA sessions.
const DefaultMaxConns = 100

// shareOfDescriptors is the fraction (1/n) of the process's
// descriptor limit one HTTP listener may use: two listeners take at most
// a quarter.
const shareOfDescriptors = 8

// Limits bound what clients may hold of an HTTP listener. The zero
// value means the defaults.
type Limits struct {
	// MaxConns caps the connections open at once; 0 means
	// DefaultMaxConns, lowered to an eighth of the descriptor limit
	// (RLIMIT_NOFILE) when that is smaller.
	MaxConns int
	// IdleTimeout closes a keep-alive connection that long without a
	// request; 0 means DefaultIdleTimeout.
	IdleTimeout time.Duration
}

// maxConns is l.MaxConns or its default under the descriptor limit.
func (l Limits) maxConns() int {
	if l.MaxConns > 0 {
		return l.MaxConns
	}
	return defaultMaxConns(descriptorLimit())
}

// defaultMaxConns is DefaultMaxConns, or a share of nofile
// descriptors when that is smaller (nofile 0 means unknown).
func defaultMaxConns(nofile uint64) int {
	n := DefaultMaxConns
	if nofile > 0 {
		n = int(min(uint64(n), nofile/shareOfDescriptors))
	}
	return max(n, 1)
}

// descriptorLimit is the process's soft RLIMIT_NOFILE, or 0 when unknown.
func descriptorLimit() uint64 {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0
	}
	return r.Cur
}

// Server is the optional HTTP listener of the daemon: Prometheus
// metrics at /metrics and a health check at /healthz, GET and HEAD only.
// Other paths answer 404, other methods on a known path 405. More pages
// can be added with Handle before Serve.
type Server struct {
	mux   *http.ServeMux
	srv   *http.Server
	ready atomic.Bool
	// stopping is set by Draining and Shutdown, so that /healthz answers
	// "shutting down" rather than "not ready" from then on.
	stopping atomic.Bool
	limits   Limits
}

// New returns a server with metrics at /metrics (none when metrics is
// nil: then /metrics answers 404) that logs its own errors to log (nil
// means slog.Default()). It is not ready until SetReady(true).
func New(metrics http.Handler, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	h := &Server{mux: http.NewServeMux()}
	h.srv = &http.Server{
		Handler:           h.mux,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       DefaultIdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if metrics != nil {
		h.Handle("/metrics", metrics)
	}
	h.Handle("/healthz", http.HandlerFunc(h.healthz))
	return h
}

// SetLimits replaces the default limits; call it before Serve.
func (h *Server) SetLimits(l Limits) {
	h.limits = l
	h.srv.IdleTimeout = cmp.Or(l.IdleTimeout, DefaultIdleTimeout)
}

// MaxConns is the most connections Serve keeps open at once.
func (h *Server) MaxConns() int { return h.limits.maxConns() }

// Handle serves handler at path, for GET and HEAD requests only, as
// http.ServeMux matches a "GET /path" pattern. path follows ServeMux's
// rules: "/why" is that path only, "/why/" the tree below it.
func (h *Server) Handle(path string, handler http.Handler) {
	h.mux.Handle("GET "+path, noCache(handler))
}

// ServeHTTP serves a request as the listener would, for tests and for a
// caller that runs its own http.Server.
func (h *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mux.ServeHTTP(w, r)
}

// noCache marks answers as not to be cached: every one is of the moment.
func noCache(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		next.ServeHTTP(w, r)
	})
}

// SetReady says whether the milter serves: /healthz answers 200 only
// while it is set, and until Draining.
func (h *Server) SetReady(ready bool) { h.ready.Store(ready) }

// Draining turns /healthz to 503 "shutting down" for good, while metrics
// are still served: the daemon has stopped accepting sessions and waits
// for the open ones.
func (h *Server) Draining() { h.stopping.Store(true) }

// Ready reports what /healthz answers: true for 200.
func (h *Server) Ready() bool { return h.ready.Load() && !h.stopping.Load() }

func (h *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	switch {
	case h.Ready():
		fmt.Fprintln(w, "ok")
	case h.stopping.Load():
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "shutting down")
	default:
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready")
	}
}

// Listen opens the listener for addr, the HOST:PORT of the config's
// metrics.listen.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener on %s: %w", addr, err)
	}
	return ln, nil
}

// Serve answers requests on ln until Shutdown, and then returns nil; any
// other error ends it too and is returned. It keeps at most the limits'
// MaxConns connections open: it accepts no more until one closes.
func (h *Server) Serve(ln net.Listener) error {
	err := h.srv.Serve(netutil.LimitListener(ln, h.limits.maxConns()))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown turns /healthz to 503, stops accepting and waits for the
// requests in flight, up to ctx; then it closes what is left.
func (h *Server) Shutdown(ctx context.Context) error {
	h.stopping.Store(true)
	err := h.srv.Shutdown(ctx)
	if err != nil {
		h.srv.Close()
	}
	return err
}
