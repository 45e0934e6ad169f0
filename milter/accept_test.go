package milter

import (
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
)

// failingListener fails its first fails Accepts with err, as a process
// out of descriptors does, then accepts as ln does.
type failingListener struct {
	net.Listener
	err   error
	fails atomic.Int32
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: l.err}
	}
	return l.Listener.Accept()
}

// TestAcceptOutOfResources: when the process runs out of descriptors or
// buffers (however many the HTTP side holds), the milter listener waits
// and accepts again; go-milter's own loop would stop serving for good at
// the first such error.
func TestAcceptOutOfResources(t *testing.T) {
	t.Parallel()
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM} {
		t.Run(errno.Error(), func(t *testing.T) {
			t.Parallel()
			ln, err := Listen("inet:127.0.0.1:0", 0)
			if err != nil {
				t.Fatal(err)
			}
			fl := &failingListener{Listener: ln, err: os.NewSyscallError("accept4", errno)}
			fl.fails.Store(3)
			f := startDaemon(t, fl, DaemonOptions{})
			s := f.session(t)
			defer s.Close()
			if _, err := s.Conn("client.example", 0, 0, ""); err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(f.logs.String(), "accept failed; retrying"); n != 3 {
				t.Errorf("%d retries logged, want 3:\n%s", n, f.logs)
			}
		})
	}
}
