package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/spf-milter/spf-milter/internal/httpserve"
	"github.com/spf-milter/spf-milter/milter"
)

// httpShutdownTimeout bounds the wait for scrapes in flight at exit.
const httpShutdownTimeout = 5 * time.Second

// httpListener is the running metrics and health listener.
type httpListener struct {
	srv  *httpserve.Server
	addr net.Addr
	done chan struct{}
}

// startHTTP opens the metrics listener on addr and serves it, not ready
// yet, with the why page at /why when page is not nil; with no addr it
// returns nil, which the methods accept. limits bound its connections.
func startHTTP(addr string, m *milter.Metrics, log *slog.Logger, page http.Handler, limits httpserve.Limits) (*httpListener, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := httpserve.Listen(addr)
	if err != nil {
		return nil, err
	}
	h := &httpListener{srv: httpserve.New(m.Handler(), log), addr: ln.Addr(), done: make(chan struct{})}
	h.srv.SetLimits(limits)
	if page != nil {
		h.srv.Handle("/why", page)
		log.Info("why page on http://"+ln.Addr().String()+"/why", "addr", ln.Addr().String())
	}
	go func() {
		defer close(h.done)
		if err := h.srv.Serve(ln); err != nil {
			// Mail matters more than metrics: the milter keeps running.
			log.Error("metrics listener failed; metrics and /healthz are unavailable", "error", err)
		}
	}()
	log.Info("metrics and /healthz on http://"+ln.Addr().String(), "addr", ln.Addr().String(), "max_connections", h.srv.MaxConns())
	return h, nil
}

// startWhy opens the why page's own listener on addr and serves the page
// there at /why, with a /healthz as on the metrics listener but no
// metrics, not ready yet; with no addr it returns nil. limits bound its
// connections.
func startWhy(addr string, page *whyPage, log *slog.Logger, limits httpserve.Limits) (*httpListener, error) {
	if addr == "" || page == nil {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("why page listener on %s: %w", addr, err)
	}
	h := &httpListener{srv: httpserve.New(nil, log), addr: ln.Addr(), done: make(chan struct{})}
	h.srv.SetLimits(limits)
	h.srv.Handle("/why", page)
	go func() {
		defer close(h.done)
		if err := h.srv.Serve(ln); err != nil {
			log.Error("why page listener failed; the page is unavailable", "error", err)
		}
	}()
	log.Info("why page on http://"+ln.Addr().String()+"/why", "addr", ln.Addr().String(), "max_connections", h.srv.MaxConns())
	return h, nil
}

func (h *httpListener) setReady() {
	if h != nil {
		h.srv.SetReady(true)
	}
}

func (h *httpListener) draining() {
	if h != nil {
		h.srv.Draining()
	}
}

// stop closes the listener, letting scrapes in flight finish briefly.
func (h *httpListener) stop(log *slog.Logger) {
	if h == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), httpShutdownTimeout)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != nil {
		log.Warn("metrics listener did not close cleanly", "error", err)
	}
	<-h.done
}
