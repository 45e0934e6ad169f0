package httpserve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spf-milter/spf-milter/milter"
)

func TestHTTPRoutes(t *testing.T) {
	h := New(milter.NewMetrics().Handler(), nil)
	h.Handle("/why", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "because\n") }))

	type step struct {
		method, path string
		code         int
		body         string // the start of the body
		allow        string // the Allow header of a 405
	}
	run := func(t *testing.T, steps []step) {
		t.Helper()
		for _, st := range steps {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(st.method, st.path, nil))
			if rec.Code != st.code || !strings.HasPrefix(rec.Body.String(), st.body) {
				t.Errorf("%s %s: %d %q, want %d %q", st.method, st.path, rec.Code, rec.Body.String(), st.code, st.body)
			}
			if st.allow != "" && rec.Header().Get("Allow") != st.allow {
				t.Errorf("%s %s: Allow %q, want %q", st.method, st.path, rec.Header().Get("Allow"), st.allow)
			}
			if rec.Code == http.StatusOK && rec.Header().Get("Cache-Control") != "no-store" {
				t.Errorf("%s %s: Cache-Control %q, want no-store", st.method, st.path, rec.Header().Get("Cache-Control"))
			}
		}
	}

	t.Run("starting", func(t *testing.T) {
		run(t, []step{
			{"GET", "/healthz", 503, "not ready\n", ""},
			{"HEAD", "/healthz", 503, "", ""},
			// Metrics are served before the milter is up: a scrape must
			// not fail because the daemon is starting.
			{"GET", "/metrics", 200, "# HELP ", ""},
		})
	})
	h.SetReady(true)
	t.Run("ready", func(t *testing.T) {
		run(t, []step{
			{"GET", "/healthz", 200, "ok\n", ""},
			{"HEAD", "/healthz", 200, "", ""},
			{"GET", "/metrics", 200, "# HELP ", ""},
			{"HEAD", "/metrics", 200, "", ""},
			{"GET", "/why", 200, "because\n", ""},
			{"POST", "/healthz", 405, "", "GET, HEAD"},
			{"PUT", "/metrics", 405, "", "GET, HEAD"},
			{"DELETE", "/why", 405, "", "GET, HEAD"},
			{"GET", "/", 404, "404 page not found", ""},
			{"GET", "/metrics/", 404, "", ""},
			{"GET", "/healthz/x", 404, "", ""},
			{"GET", "/debug/pprof/", 404, "", ""},
			{"POST", "/nothing", 404, "", ""},
		})
	})
	h.Draining()
	t.Run("draining", func(t *testing.T) {
		run(t, []step{
			{"GET", "/healthz", 503, "shutting down\n", ""},
			{"GET", "/metrics", 200, "# HELP ", ""},
		})
		if h.Ready() {
			t.Error("Ready() while draining")
		}
	})
	h.SetReady(true)
	t.Run("draining is for good", func(t *testing.T) {
		run(t, []step{{"GET", "/healthz", 503, "shutting down\n", ""}})
	})

	t.Run("no metrics", func(t *testing.T) {
		h := New(nil, nil)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		if rec.Code != http.StatusNotFound {
			t.Errorf("GET /metrics without Metrics: %d, want 404", rec.Code)
		}
	})
}

// TestHTTPServeShutdown runs the server on a real listener: it answers,
// and after Shutdown Serve returns nil and nothing listens.
func TestHTTPServeShutdown(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	h := New(milter.NewMetrics().Handler(), nil)
	h.SetReady(true)
	served := make(chan error, 1)
	go func() { served <- h.Serve(ln) }()

	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok\n" {
		t.Errorf("GET /healthz: %d %q, want 200 ok", resp.StatusCode, body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve returned %v after Shutdown, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after Shutdown")
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Error("the listener still accepts after Shutdown")
	}
	if h.Ready() {
		t.Error("Ready() after Shutdown")
	}
}

func TestListenBusy(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_, err = Listen(taken.Addr().String())
	if err == nil || !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "metrics listener on "+taken.Addr().String()) {
		t.Errorf("Listen on a taken port: %v, want address in use, naming the metrics listener", err)
	}
}

// TestHTTPTimeouts: every timeout of the server is set, so that a client
// that sends its request slowly, or never reads the answer, cannot hold a
// connection for ever.
func TestHTTPTimeouts(t *testing.T) {
	h := New(nil, nil)
	for name, d := range map[string]time.Duration{
		"ReadHeaderTimeout": h.srv.ReadHeaderTimeout,
		"ReadTimeout":       h.srv.ReadTimeout,
		"WriteTimeout":      h.srv.WriteTimeout,
		"IdleTimeout":       h.srv.IdleTimeout,
	} {
		if d <= 0 {
			t.Errorf("%s is %v: a client could hold a connection for ever", name, d)
		}
	}
	// An idle keep-alive connection holds one of the listener's few
	// connections: it must not be kept for minutes.
	if h.srv.IdleTimeout > 30*time.Second {
		t.Errorf("IdleTimeout is %v: idle clients could keep the listener full", h.srv.IdleTimeout)
	}
	if h.srv.MaxHeaderBytes <= 0 || h.srv.MaxHeaderBytes > 1<<20 {
		t.Errorf("MaxHeaderBytes %d", h.srv.MaxHeaderBytes)
	}
}

// TestHTTPConnectionCap opens far more keep-alive connections than the
// cap, each sending one request: the server never has more than the cap
// open (the rest wait in the backlog, taking none of the daemon's
// descriptors), and since idle connections are closed after the idle
// timeout, every client is served in the end. Without the cap every
// connection was accepted, and each held a descriptor for two minutes.
func TestHTTPConnectionCap(t *testing.T) {
	const maxConns, clients = 4, 54
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := New(nil, nil)
	h.SetReady(true)
	h.SetLimits(Limits{MaxConns: maxConns, IdleTimeout: 100 * time.Millisecond})
	cl := &countingListener{Listener: ln}
	ln = cl
	served := make(chan error, 1)
	go func() { served <- h.Serve(ln) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h.Shutdown(ctx)
		<-served
	}()

	errs := make(chan error, clients)
	for range clients {
		go func() {
			errs <- func() error {
				c, err := net.DialTimeout("tcp", ln.Addr().String(), 20*time.Second)
				if err != nil {
					return err
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(60 * time.Second))
				if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n"); err != nil {
					return err
				}
				// The answer, then the server's close of the idle
				// connection: both must come while the client waits.
				all, err := io.ReadAll(c)
				if err != nil {
					return fmt.Errorf("after %q: %w", all, err)
				}
				if !strings.HasPrefix(string(all), "HTTP/1.1 200 ") {
					return fmt.Errorf("answer %q", all)
				}
				return nil
			}()
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if peak := cl.peak; peak > maxConns {
		t.Errorf("%d connections open at once, want at most %d", peak, maxConns)
	}
}

// countingListener counts the connections it has accepted and not yet
// closed, and their peak. The server closes them through it before the
// cap's slot is freed, so the count is exact.
type countingListener struct {
	net.Listener
	mu         sync.Mutex
	open, peak int
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.open++
	l.peak = max(l.peak, l.open)
	l.mu.Unlock()
	return &countedConn{Conn: c, l: l}, nil
}

type countedConn struct {
	net.Conn
	l    *countingListener
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.open--
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// TestDefaultMaxConns: the default cap shrinks with the descriptor limit,
// so that two HTTP listeners never take more than a quarter of it.
func TestDefaultMaxConns(t *testing.T) {
	tests := []struct {
		nofile uint64
		want   int
	}{
		{0, DefaultMaxConns}, // limit unknown
		{1 << 20, DefaultMaxConns},
		{1024, DefaultMaxConns},
		{256, 32},
		{64, 8},
		{3, 1},
	}
	for _, tt := range tests {
		if got := defaultMaxConns(tt.nofile); got != tt.want {
			t.Errorf("defaultMaxConns(%d) = %d, want %d", tt.nofile, got, tt.want)
		}
	}
}
