package milter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/spf-milter/spf-milter/internal/logtest"
)

// daemonFixture is a Daemon serving a do-nothing milter on one listener.
type daemonFixture struct {
	d      *Daemon
	addr   net.Addr
	logs   *logtest.Buffer
	served chan error // Serve's return value
}

// startDaemon serves a milter that answers continue to everything on ln
// (a fresh 127.0.0.1 listener when nil), and shuts it down at the end of
// the test.
func startDaemon(t *testing.T, ln net.Listener, opts DaemonOptions) *daemonFixture {
	t.Helper()
	if ln == nil {
		var err error
		ln, err = Listen("inet:127.0.0.1:0", 0)
		if err != nil {
			t.Fatal(err)
		}
	}
	logs := &logtest.Buffer{}
	opts.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := &gomilter.Server{
		NewMilter: func() gomilter.Milter { return gomilter.NoOpMilter{} },
		Actions:   gomilter.OptAddHeader,
	}
	f := &daemonFixture{d: NewDaemon(srv, opts), addr: ln.Addr(), logs: logs, served: make(chan error, 1)}
	go func() { f.served <- f.d.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		f.d.Shutdown(ctx)
	})
	return f
}

// session opens a negotiated milter session with the daemon.
func (f *daemonFixture) session(t *testing.T) *gomilter.ClientSession {
	t.Helper()
	c := gomilter.NewClientWithOptions(f.addr.Network(), f.addr.String(), gomilter.ClientOptions{
		ReadTimeout:  10 * time.Second,
		WriteTimeout: 10 * time.Second,
		ActionMask:   gomilter.OptAddHeader,
	})
	s, err := c.Session()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// waitFor polls cond until it holds or a generous time has passed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// staleSocket leaves a socket file at path that nothing listens on, as a
// killed daemon does.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
}

func TestListenUnix(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		prepare func(t *testing.T, path string)
		mode    fs.FileMode
		wantErr string // "" means Listen must succeed
	}{
		{name: "new socket, mode 0660", mode: 0o660},
		{name: "new socket, mode 0600", mode: 0o600},
		{name: "stale socket replaced", prepare: staleSocket, mode: 0o660},
		{
			name: "live socket refused",
			prepare: func(t *testing.T, path string) {
				ln, err := net.Listen("unix", path)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { ln.Close() })
				go func() {
					for {
						c, err := ln.Accept()
						if err != nil {
							return
						}
						c.Close()
					}
				}()
			},
			mode:    0o660,
			wantErr: "another process is listening on it",
		},
		{
			name: "regular file refused",
			prepare: func(t *testing.T, path string) {
				if err := os.WriteFile(path, []byte("precious"), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			mode:    0o660,
			wantErr: "exists and is not a socket",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "m.sock")
			if tt.prepare != nil {
				tt.prepare(t, path)
			}
			before, _ := os.Lstat(path)
			ln, err := Listen("unix:"+path, tt.mode)
			if tt.wantErr != "" {
				if err == nil {
					ln.Close()
					t.Fatalf("Listen succeeded, want an error containing %q", tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), path) {
					t.Fatalf("Listen error = %q, want it to name %s and contain %q", err, path, tt.wantErr)
				}
				// What was there must be left as it was.
				after, statErr := os.Lstat(path)
				if statErr != nil || !os.SameFile(before, after) {
					t.Fatalf("Listen touched %s after refusing it (stat error %v)", path, statErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			fi, err := os.Lstat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != tt.mode {
				t.Errorf("socket mode = %v, want socket with %v", fi.Mode(), tt.mode)
			}

			// The daemon serves on it and removes it at shutdown.
			f := startDaemon(t, ln, DaemonOptions{})
			s := f.session(t)
			if act, err := s.Helo("mx.example.org"); err != nil || act.Code != gomilter.ActContinue {
				t.Fatalf("Helo over the socket = %+v, %v; want continue", act, err)
			}
			s.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := f.d.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("socket file still there after Shutdown (stat error %v)", err)
			}
			if err := <-f.served; !errors.Is(err, gomilter.ErrServerClosed) {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
		})
	}
}

func TestListenErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		spec string
	}{
		{"bogus:whatever"},
		{"inet:256.0.0.1:25"},
		{"unix:" + filepath.Join(os.DevNull, "no", "such", "dir", "m.sock")},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			t.Parallel()
			ln, err := Listen(tt.spec, 0o660)
			if err == nil {
				ln.Close()
				t.Fatalf("Listen(%q) succeeded, want an error", tt.spec)
			}
		})
	}
}

func TestListenInet(t *testing.T) {
	t.Parallel()
	ln, err := Listen("inet:127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, ok := ln.Addr().(*net.TCPAddr)
	if !ok || !a.IP.Equal(net.IPv4(127, 0, 0, 1)) || a.Port == 0 {
		t.Fatalf("listener address = %v, want 127.0.0.1 and a port", ln.Addr())
	}
}

func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	for _, rb := range []int{0, DefaultIOBuffer} {
		t.Run(fmt.Sprintf("io-buffer=%d", rb), func(t *testing.T) {
			t.Parallel()
			f := startDaemon(t, nil, DaemonOptions{IdleTimeout: 200 * time.Millisecond, IOBuffer: rb})
			c, err := net.Dial("tcp", f.addr.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			waitFor(t, "the connection is tracked", func() bool { return f.d.Open() == 1 })

			// A silent MTA: the daemon must hang up on its own.
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if n, err := c.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("read from an idle session = %d, %v; want EOF (closed by the daemon)", n, err)
			}
			waitFor(t, "the session is no longer counted", func() bool { return f.d.Open() == 0 })
			logs := f.logs.String()
			if !strings.Contains(logs, "idle timeout") || !strings.Contains(logs, "peer="+c.LocalAddr().String()) {
				t.Errorf("log does not report the idle timeout with the peer %s:\n%s", c.LocalAddr(), logs)
			}
		})
	}
}

func TestIdleTimeoutRestartsOnActivity(t *testing.T) {
	t.Parallel()
	for _, rb := range []int{0, DefaultIOBuffer} {
		t.Run(fmt.Sprintf("io-buffer=%d", rb), func(t *testing.T) {
			t.Parallel()
			f := startDaemon(t, nil, DaemonOptions{IdleTimeout: 2 * time.Second, IOBuffer: rb})
			s := f.session(t)
			defer s.Close()
			// Busy for longer than the idle timeout, with short pauses: each
			// command must push the deadline back.
			for start := time.Now(); time.Since(start) < 3*time.Second; time.Sleep(100 * time.Millisecond) {
				if act, err := s.Helo("mx.example.org"); err != nil || act.Code != gomilter.ActContinue {
					t.Fatalf("Helo after %v = %+v, %v; want continue", time.Since(start), act, err)
				}
			}
			if strings.Contains(f.logs.String(), "idle timeout") {
				t.Errorf("an active session was closed as idle:\n%s", f.logs.String())
			}
		})
	}
}

func TestMaxDuration(t *testing.T) {
	t.Parallel()
	for _, rb := range []int{0, DefaultIOBuffer} {
		t.Run(fmt.Sprintf("io-buffer=%d", rb), func(t *testing.T) {
			t.Parallel()
			f := startDaemon(t, nil, DaemonOptions{IdleTimeout: time.Minute, MaxDuration: 500 * time.Millisecond, IOBuffer: rb})
			s := f.session(t)
			defer s.Close()
			start := time.Now()
			// Never idle, but the session must still end.
			for {
				_, err := s.Helo("mx.example.org")
				if err != nil {
					break
				}
				if time.Since(start) > 10*time.Second {
					t.Fatal("the session outlived its maximum duration")
				}
				time.Sleep(20 * time.Millisecond)
			}
			waitFor(t, "the session is no longer counted", func() bool { return f.d.Open() == 0 })
			if logs := f.logs.String(); !strings.Contains(logs, "maximum duration reached") {
				t.Errorf("log does not report the maximum duration:\n%s", logs)
			}
		})
	}
}

func TestOpenCounts(t *testing.T) {
	t.Parallel()
	f := startDaemon(t, nil, DaemonOptions{})
	var sessions []*gomilter.ClientSession
	for i := 1; i <= 3; i++ {
		sessions = append(sessions, f.session(t))
		waitFor(t, "the new session is counted", func() bool { return f.d.Open() == i })
	}
	for i, s := range sessions {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		want := len(sessions) - i - 1
		waitFor(t, "the closed session is no longer counted", func() bool { return f.d.Open() == want })
	}
}

func TestShutdownDrains(t *testing.T) {
	t.Parallel()
	f := startDaemon(t, nil, DaemonOptions{})
	s := f.session(t)
	waitFor(t, "the session is counted", func() bool { return f.d.Open() == 1 })

	done := make(chan error, 1)
	go func() { done <- f.d.Shutdown(context.Background()) }()

	// New connections are refused once the listener is closed...
	waitFor(t, "the listener is closed", func() bool {
		c, err := net.Dial("tcp", f.addr.String())
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) while a session was open", err)
	default:
	}
	// ...but the session in flight is still served to its end.
	if act, err := s.Mail("joe@example.org", nil); err != nil || act.Code != gomilter.ActContinue {
		t.Fatalf("MAIL during drain = %+v, %v; want continue", act, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown = %v, want nil after a full drain", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the last session ended")
	}
	if err := <-f.served; !errors.Is(err, gomilter.ErrServerClosed) {
		t.Errorf("Serve returned %v, want ErrServerClosed", err)
	}
}

func TestShutdownForcesAfterContext(t *testing.T) {
	t.Parallel()
	f := startDaemon(t, nil, DaemonOptions{})
	s := f.session(t)
	waitFor(t, "the session is counted", func() bool { return f.d.Open() == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := f.d.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want context.DeadlineExceeded", err)
	}
	if n := f.d.Open(); n != 0 {
		t.Errorf("Open() = %d after a forced shutdown, want 0", n)
	}
	// The stuck session was hung up on.
	if _, err := s.Mail("joe@example.org", nil); err == nil {
		t.Error("the session still answers after a forced shutdown")
	}
	if logs := f.logs.String(); !strings.Contains(logs, "closed the sessions still open") || !strings.Contains(logs, "closed=1") {
		t.Errorf("log does not report the forced close:\n%s", logs)
	}
	// Shutdown again is harmless.
	if err := f.d.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown = %v", err)
	}
}

func TestServeAfterShutdown(t *testing.T) {
	t.Parallel()
	d := NewDaemon(&gomilter.Server{NewMilter: func() gomilter.Milter { return gomilter.NoOpMilter{} }}, DaemonOptions{})
	if err := d.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	ln, err := Listen("inet:127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Serve(ln); !errors.Is(err, gomilter.ErrServerClosed) {
		t.Fatalf("Serve after Shutdown = %v, want ErrServerClosed", err)
	}
	// The listener was closed, not leaked.
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Error("the listener given to Serve after Shutdown still accepts")
	}
}

// recordingMilter keeps the header fields it is given.
type recordingMilter struct {
	gomilter.NoOpMilter
	mu     *sync.Mutex
	fields *[]string
}

func (m recordingMilter) Header(name, value string, _ *gomilter.Modifier) (gomilter.Response, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	*m.fields = append(*m.fields, name+": "+value)
	return gomilter.RespContinue, nil
}

// TestIOBuffer runs whole sessions through read buffers smaller than a
// packet, about the size of one, and larger than a session: every packet
// must arrive intact and in order, whatever the buffer cuts.
func TestIOBuffer(t *testing.T) {
	t.Parallel()
	for _, rb := range []int{0, 16, 64, DefaultIOBuffer} {
		t.Run(fmt.Sprintf("io-buffer=%d", rb), func(t *testing.T) {
			t.Parallel()
			var (
				mu  sync.Mutex
				got []string
			)
			srv := &gomilter.Server{
				NewMilter: func() gomilter.Milter { return recordingMilter{mu: &mu, fields: &got} },
				Actions:   gomilter.OptAddHeader,
			}
			ln, err := Listen("inet:127.0.0.1:0", 0)
			if err != nil {
				t.Fatal(err)
			}
			d := NewDaemon(srv, DaemonOptions{IOBuffer: rb, Log: slog.New(slog.DiscardHandler)})
			go d.Serve(ln)
			t.Cleanup(func() { d.Shutdown(context.Background()) })
			f := &daemonFixture{d: d, addr: ln.Addr()}

			var want []string
			for i := range 3 {
				s := f.session(t)
				for j := range 20 {
					value := fmt.Sprintf("session %d field %d %s", i, j, strings.Repeat("x", 7*j))
					want = append(want, "X-Test: "+value)
					if act, err := s.HeaderField("X-Test", value); err != nil || act.Code != gomilter.ActContinue {
						t.Fatalf("HeaderField = %+v, %v", act, err)
					}
				}
				s.Close()
			}
			waitFor(t, "every session ended", func() bool { return d.Open() == 0 })
			mu.Lock()
			defer mu.Unlock()
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("the milter saw\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

// headerMilter inserts three header fields at the end of each message.
type headerMilter struct{ gomilter.NoOpMilter }

func (headerMilter) Body(m *gomilter.Modifier) (gomilter.Response, error) {
	for i := range 3 {
		if err := m.InsertHeader(0, "X-Test", fmt.Sprint(i)); err != nil {
			return nil, err
		}
	}
	return gomilter.RespContinue, nil
}

// writeCountingListener counts the writes made on the connections it
// accepts.
type writeCountingListener struct {
	net.Listener
	writes *atomic.Int64
}

func (l writeCountingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return writeCountingConn{c, l.writes}, nil
}

type writeCountingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c writeCountingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestIOBufferHoldsWrites shows that with an IOBuffer the header changes
// and the reply of an end of message leave in one write, that nothing
// held is lost, and that without one each packet has a write of its own.
func TestIOBufferHoldsWrites(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		ioBuffer   int
		wantWrites int64
	}{
		{0, 4},
		{DefaultIOBuffer, 1},
	} {
		t.Run(fmt.Sprintf("io-buffer=%d", tt.ioBuffer), func(t *testing.T) {
			t.Parallel()
			ln, err := Listen("inet:127.0.0.1:0", 0)
			if err != nil {
				t.Fatal(err)
			}
			var writes atomic.Int64
			srv := &gomilter.Server{
				NewMilter: func() gomilter.Milter { return headerMilter{} },
				Actions:   gomilter.OptAddHeader | gomilter.OptChangeHeader,
			}
			d := NewDaemon(srv, DaemonOptions{IOBuffer: tt.ioBuffer, Log: slog.New(slog.DiscardHandler)})
			go d.Serve(writeCountingListener{ln, &writes})
			t.Cleanup(func() { d.Shutdown(context.Background()) })

			c := gomilter.NewClientWithOptions("tcp", ln.Addr().String(), gomilter.ClientOptions{
				ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
				ActionMask: gomilter.OptAddHeader | gomilter.OptChangeHeader,
			})
			s, err := c.Session()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, err := s.Mail("a@example.org", nil); err != nil {
				t.Fatal(err)
			}
			before := writes.Load()
			mods, act, err := s.End()
			if err != nil || act.Code != gomilter.ActContinue {
				t.Fatalf("End = %+v, %v", act, err)
			}
			if n := writes.Load() - before; n != tt.wantWrites {
				t.Errorf("end of message took %d writes, want %d", n, tt.wantWrites)
			}
			var got []string
			for _, m := range mods {
				got = append(got, fmt.Sprintf("%c %s=%s", m.Code, m.HeaderName, m.HeaderValue))
			}
			if want := "i X-Test=0|i X-Test=1|i X-Test=2"; strings.Join(got, "|") != want {
				t.Errorf("modifications %q, want %q", strings.Join(got, "|"), want)
			}
		})
	}
}
