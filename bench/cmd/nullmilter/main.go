// Command nullmilter is a milter that does nothing but insert one fixed
// header field at the end of every message: the ceiling of any milter
// built on go-milter v0.5.0, for the load generator to compare spf-milter
// with. It negotiates what spf-milter's server does (milter.NewServer):
// the same actions and the same steps left out, so that the MTA sends it
// the same packets.
//
//	nullmilter -listen 127.0.0.1:8899 [-io-buffer 4096]
//
// With -io-buffer N the sessions are served through spf-milter's own I/O
// layer (milter.Daemon with that IOBuffer: reads through a buffer, the
// packets of a reply sent in one write, no reply to the commands of
// the stages milter.DaemonOptions.SkipReplies covers for an MTA of
// protocol 6), as spf-milter serve
// does by default, with spf-milter's garbage collector setting
// (milter.DefaultGCPercent); 0 (the default) is plain go-milter: two
// system calls per packet read, one per packet written, and a reply to
// every command.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/textproto"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/emersion/go-milter"

	spfmilter "github.com/spf-milter/spf-milter/milter"
)

// header is the field inserted; the load generator checks for it.
var header = [2]string{"X-Null-Milter", "seen"}

func main() {
	listen := flag.String("listen", "127.0.0.1:8899", "TCP `address` to listen on")
	ioBuffer := flag.Int("io-buffer", 0, "I/O buffer per connection in `bytes`, through spf-milter's daemon; 0 is plain go-milter")
	flag.Parse()
	if *ioBuffer < 0 {
		fmt.Fprintln(os.Stderr, "nullmilter: -io-buffer must be 0 or more")
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nullmilter:", err)
		os.Exit(1)
	}
	srv := &milter.Server{
		NewMilter: func() milter.Milter { return nullMilter{} },
		Actions:   milter.OptAddHeader | milter.OptChangeHeader | milter.OptQuarantine,
		Protocol:  milter.OptNoBody | milter.OptNoUnknown | milter.OptNoData,
	}
	serve, stop := srv.Serve, func() { srv.Close() }
	if *ioBuffer > 0 {
		// spf-milter's I/O layer, and its garbage collector setting.
		if os.Getenv("GOGC") == "" {
			debug.SetGCPercent(spfmilter.DefaultGCPercent)
		}
		if os.Getenv("GOMEMLIMIT") == "" {
			debug.SetMemoryLimit(spfmilter.DefaultMemoryLimit)
		}
		// It answers continue everywhere, so it can skip the replies
		// spf-milter's sessions skip.
		d := spfmilter.NewDaemon(srv, spfmilter.DaemonOptions{IOBuffer: *ioBuffer, SkipReplies: true, Log: slog.New(slog.DiscardHandler)})
		serve, stop = d.Serve, func() { d.Shutdown(context.Background()) }
	}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
		<-sig
		stop()
	}()
	if err := serve(ln); err != nil && err != milter.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "nullmilter:", err)
		os.Exit(1)
	}
}

// nullMilter answers continue to everything, as spf-milter's sessions do
// (a final answer would make go-milter build a new milter object), and
// inserts the header at the end of the message.
type nullMilter struct{ milter.NoOpMilter }

func (nullMilter) Headers(textproto.MIMEHeader, *milter.Modifier) (milter.Response, error) {
	return milter.RespContinue, nil
}

func (nullMilter) Body(m *milter.Modifier) (milter.Response, error) {
	if err := m.InsertHeader(0, header[0], header[1]); err != nil {
		return nil, err
	}
	return milter.RespContinue, nil
}
