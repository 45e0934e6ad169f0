package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/milter"
	"github.com/spf-milter/spf-milter/spf"
)

const serveUsage = `Usage: spf-milter serve [--config PATH] [--drain-timeout DURATION] [--read-buffer BYTES]

Runs the milter daemon. Without --config it reads ` + config.DefaultPath + `,
or runs on the built-in defaults when that file does not exist.

Signals: SIGHUP reloads the config file (a bad file is logged and the
running config kept; a changed listen address needs a restart); SIGTERM
or SIGINT stops accepting, lets open sessions finish within the drain
timeout and exits 0; a second SIGTERM or SIGINT exits at once.

Flags:
`

// defaultDrainTimeout bounds a shutdown: long enough for a check in flight
// (20s by default) to finish, short enough for a service manager's stop
// timeout (90s for systemd).
const defaultDrainTimeout = 30 * time.Second

// serveOptions is a parsed serve command line, plus the hooks tests use.
type serveOptions struct {
	configPath string
	// explicit is set when the path was given: then a missing file is an
	// error rather than a reason to run on the defaults.
	explicit     bool
	drainTimeout time.Duration
	// readBuffer is milter.DaemonOptions.ReadBuffer.
	readBuffer int
	// setDefaultLogger makes each config's logger the process default, so
	// that go-milter's own log.Printf lines come out in the configured
	// format too. Off in in-process tests, which must not touch globals.
	setDefaultLogger bool
	// ready, when set, is called with the listener's address once the
	// daemon serves.
	ready func(net.Addr)
}

func parseServe(args []string, stdout io.Writer) (*serveOptions, error) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	path := fs.String("config", config.DefaultPath, "config file `path`")
	drain := fs.Duration("drain-timeout", defaultDrainTimeout, "at shutdown, how long open sessions may take to finish (`duration`)")
	readBuffer := fs.Int("read-buffer", milter.DefaultReadBuffer, "read buffer per MTA connection in `bytes`; 0 reads unbuffered, as plain go-milter does (for comparison)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, serveUsage)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	o := &serveOptions{configPath: *path, drainTimeout: *drain, readBuffer: *readBuffer, setDefaultLogger: true}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "config" {
			o.explicit = true
		}
	})
	if o.configPath == "" {
		return nil, errors.New("--config needs a path")
	}
	if o.drainTimeout <= 0 {
		return nil, fmt.Errorf("bad --drain-timeout %v: must be positive", o.drainTimeout)
	}
	if o.readBuffer < 0 || o.readBuffer > 1<<20 {
		return nil, fmt.Errorf("bad --read-buffer %d: want 0 (unbuffered) to 1048576 bytes", o.readBuffer)
	}
	return o, nil
}

func runServe(args []string, stdout, stderr io.Writer) int {
	o, err := parseServe(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return usageError(stderr, "serve", "%v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		// Once draining, give the signals back their default action, so
		// that a second one ends the process when draining takes too long.
		<-ctx.Done()
		stop()
	}()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	return serve(ctx, *o, hup, stderr)
}

// serve runs the daemon until ctx is done, then drains it and returns the
// exit status; each value from hup reloads the config. It is runServe
// without the process's signals, so that tests can drive it.
func serve(ctx context.Context, o serveOptions, hup <-chan os.Signal, stderr io.Writer) int {
	// Loggers of successive configs share stderr.
	stderr = &lockedWriter{w: stderr}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "spf-milter serve: %s\n", oneLine(err))
		return 1
	}

	cfg, defaults, err := loadServeConfig(o.configPath, o.explicit)
	if err != nil {
		return fail(err)
	}
	rt, err := newRuntime(cfg, stderr)
	if err != nil {
		return fail(err)
	}
	if o.setDefaultLogger {
		slog.SetDefault(rt.Log)
	}
	if defaults {
		rt.Log.Info("no config file; running on the built-in defaults", "path", o.configPath)
	} else {
		rt.Log.Info("config loaded", "path", o.configPath)
	}

	ln, err := milter.Listen(cfg.Listen, cfg.SocketMode)
	if err != nil {
		return fail(err)
	}
	var cur atomic.Pointer[milter.Runtime]
	cur.Store(rt)
	d := milter.NewDaemon(milter.NewServer(cur.Load), daemonOptions(rt, o.readBuffer))
	served := make(chan error, 1)
	go func() { served <- d.Serve(ln) }()
	rt.Log.Info("listening on "+cfg.Listen, "addr", ln.Addr().String())
	if o.ready != nil {
		o.ready(ln.Addr())
	}
	listening := cfg

	for {
		select {
		case <-ctx.Done():
			shutdown(d, cur.Load().Log, o.drainTimeout, served)
			return 0
		case <-hup:
			if next := reload(o, listening, cur.Load(), stderr); next != nil {
				cur.Store(next)
				d.SetOptions(daemonOptions(next, o.readBuffer))
				if o.setDefaultLogger {
					slog.SetDefault(next.Log)
				}
			}
		case err := <-served:
			log := cur.Load().Log
			log.Error("listener failed; stopping", "error", err)
			served <- err // for shutdown, which waits for Serve
			shutdown(d, log, o.drainTimeout, served)
			return 1
		}
	}
}

// shutdown stops accepting and drains the open sessions for at most
// drain, then waits for Serve to return.
func shutdown(d *milter.Daemon, log *slog.Logger, drain time.Duration, served <-chan error) {
	log.Info("shutting down", "open_sessions", d.Open(), "drain_timeout", drain.String())
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if err := d.Shutdown(ctx); err != nil {
		log.Warn("shutdown did not drain cleanly", "error", err)
	}
	<-served
	log.Info("stopped")
}

// reload loads the config file again. It returns the new runtime, or nil
// after logging why the running one is kept.
func reload(o serveOptions, listening *config.Config, old *milter.Runtime, stderr io.Writer) *milter.Runtime {
	old.Log.Info("reloading the config", "path", o.configPath)
	cfg, defaults, err := loadServeConfig(o.configPath, o.explicit)
	if err == nil {
		var rt *milter.Runtime
		if rt, err = newRuntime(cfg, stderr); err == nil {
			if !sameListen(listening, cfg) {
				rt.Log.Warn("listen or socket_mode changed; restart spf-milter to apply it",
					"listening", listening.Listen, "configured", cfg.Listen)
			}
			if defaults {
				rt.Log.Info("no config file; running on the built-in defaults", "path", o.configPath)
			}
			rt.Log.Info("config reloaded", "path", o.configPath)
			return rt
		}
	}
	for _, problem := range strings.Split(err.Error(), "\n") {
		if problem = strings.TrimSpace(problem); problem != "" {
			old.Log.Error("config problem", "path", o.configPath, "problem", problem)
		}
	}
	old.Log.Error("reload failed; the running config is kept", "path", o.configPath, "error", oneLine(err))
	return nil
}

// sameListen reports whether b listens where a does; equivalent spellings
// (inet:25@host and inet:host:25) are the same.
func sameListen(a, b *config.Config) bool {
	if a.SocketMode != b.SocketMode {
		return false
	}
	na, aa, errA := config.ParseListen(a.Listen)
	nb, ab, errB := config.ParseListen(b.Listen)
	if errA != nil || errB != nil {
		return a.Listen == b.Listen
	}
	return na == nb && aa == ab
}

// loadServeConfig loads the file at path. A missing file at the default
// path means the built-in defaults (reported by defaults); at a path given
// explicitly it is an error.
func loadServeConfig(path string, explicit bool) (cfg *config.Config, defaults bool, err error) {
	if !explicit {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return config.Default(), true, nil
		}
	}
	cfg, err = config.Load(path)
	if err != nil {
		return nil, false, err
	}
	return cfg, false, nil
}

// newRuntime builds what sessions need from cfg.
func newRuntime(cfg *config.Config, logTo io.Writer) (*milter.Runtime, error) {
	log, err := newLogger(cfg.Log, logTo)
	if err != nil {
		return nil, err
	}
	resolver, err := spf.NewDNSResolver(spf.DNSOptions{Servers: cfg.DNS.Servers, Timeout: cfg.DNS.Timeout})
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	checker := &spf.Checker{
		Resolver:    resolver,
		Receiver:    cfg.Receiver,
		Explanation: cfg.Explanation,
		Timeout:     cfg.DNS.CheckTimeout,
	}
	return &milter.Runtime{Config: cfg, Checker: checker, Log: log}, nil
}

func daemonOptions(rt *milter.Runtime, readBuffer int) milter.DaemonOptions {
	return milter.DaemonOptions{
		IdleTimeout: rt.Config.Session.IdleTimeout,
		MaxDuration: rt.Config.Session.MaxDuration,
		ReadBuffer:  readBuffer,
		Log:         rt.Log,
	}
}

// newLogger returns a logger writing to w in the format and from the level
// that l names.
func newLogger(l config.Log, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.Level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", l.Level, err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch l.Format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log format %q: want text or json", l.Format)
	}
}

// oneLine joins the lines of a multi-problem error with "; ".
func oneLine(err error) string {
	var parts []string
	for _, p := range strings.Split(err.Error(), "\n") {
		if p = strings.TrimSpace(p); p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, "; ")
}

// lockedWriter serialises writes from loggers that do not share a lock.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
