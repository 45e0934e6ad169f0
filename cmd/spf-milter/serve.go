package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/decisions"
	"github.com/spf-milter/spf-milter/internal/httpserve"
	"github.com/spf-milter/spf-milter/milter"
)

const serveUsage = `Usage: spf-milter serve [--config PATH] [--drain-timeout DURATION] [--io-buffer BYTES]
                         [--skip-replies=false]

Runs the milter daemon. Without --config it reads ` + config.DefaultPath + `,
or runs on the built-in defaults when that file does not exist.

The config file must be a regular file (or a symlink to one) of at most
1 MiB; anything else is refused unread.

Signals: SIGHUP reloads the config file in the background (a bad file is
logged and the running config kept; SIGHUPs during a reload make one more
reload after it; a changed listen, metrics.listen or why.listen address
needs a restart; the DNS cache is kept unless the dns settings changed);
SIGTERM or SIGINT stops accepting, lets open sessions finish within the
drain timeout and exits 0, even while a reload runs; a second SIGTERM or
SIGINT exits at once.

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
	// ioBuffer is milter.DaemonOptions.IOBuffer.
	ioBuffer int
	// skipReplies is milter.DaemonOptions.SkipReplies.
	skipReplies bool
	// setDefaultLogger makes each config's logger the process default, so
	// that go-milter's own log.Printf lines come out in the configured
	// format too. Off in in-process tests, which must not touch globals.
	setDefaultLogger bool
	// ready, when set, is called with the listener's address once the
	// daemon serves.
	ready func(net.Addr)
	// httpReady, when set, is called with the metrics listener's address
	// once it is open, before ready.
	httpReady func(net.Addr)
	// whyReady, when set, is called with the why page's own listener's
	// address once it is open, before ready.
	whyReady func(net.Addr)
	// load, when set, stands in for loadServeConfig at reloads, so that
	// tests can hold a reload in the middle of reading.
	load func(path string, explicit bool) (*config.Config, bool, error)
	// httpLimits bound the metrics and why listeners; the zero value is
	// httpserve's defaults, which tests shorten.
	httpLimits httpserve.Limits
}

func parseServe(args []string, stdout io.Writer) (*serveOptions, error) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	path := fs.String("config", config.DefaultPath, "config file `path`")
	drain := fs.Duration("drain-timeout", defaultDrainTimeout, "at shutdown, how long open sessions may take to finish (`duration`)")
	ioBuffer := fs.Int("io-buffer", milter.DefaultIOBuffer, "I/O buffer per MTA connection in `bytes` (reads buffered, replies sent together); 0 reads and writes each packet straight, as plain go-milter does (for comparison)")
	skipReplies := fs.Bool("skip-replies", true, "let an MTA of milter protocol 6 (Postfix, Sendmail 8.14 and later) send connect, HELO and the header fields without waiting for a reply to each; false answers every command, as plain go-milter does (for comparison)")
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
	o := &serveOptions{configPath: *path, drainTimeout: *drain, ioBuffer: *ioBuffer, skipReplies: *skipReplies, setDefaultLogger: true}
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
	if o.ioBuffer < 0 || o.ioBuffer > 1<<20 {
		return nil, fmt.Errorf("bad --io-buffer %d: want 0 (unbuffered) to 1048576 bytes", o.ioBuffer)
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
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(milter.DefaultGCPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(milter.DefaultMemoryLimit)
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
	// One Metrics and one DNS cache for the life of the process: reloads
	// keep both.
	metrics := milter.NewMetrics()
	dns, _, err := newResolver(cfg.DNS, metrics, nil)
	if err != nil {
		return fail(err)
	}
	metrics.SetCacheEntries(dns.resolver.CacheLen)
	rt, err := newRuntime(cfg, dns.resolver, metrics, stderr)
	if err != nil {
		return fail(err)
	}
	// One decision log for the life of the process, closed (its last
	// records written) once the sessions have drained. A file that
	// cannot be opened at start is an error: the admin is watching.
	dlog, err := decisions.NewWriter(decisionLogOptions(cfg.DecisionLog), decisions.Settings{Log: rt.Log})
	defer dlog.Close()
	if err != nil {
		return fail(err)
	}
	metrics.SetDecisionLogLost(dlog.LostByReason)
	useDecisionLog(rt, dlog)
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
	page := newWhyPage(cfg, cur.Load, rt.Log)
	var pageOnMetrics http.Handler
	if page != nil && cfg.Why.Listen == "" {
		pageOnMetrics = page
	}
	web, err := startHTTP(cfg.Metrics.Listen, metrics, rt.Log, pageOnMetrics, o.httpLimits)
	if err != nil {
		ln.Close() // removes a unix socket
		return fail(err)
	}
	if web != nil && o.httpReady != nil {
		o.httpReady(web.addr)
	}
	whyWeb, err := startWhy(cfg.Why.Listen, page, rt.Log, o.httpLimits)
	if err != nil {
		web.stop(rt.Log)
		ln.Close()
		return fail(err)
	}
	if whyWeb != nil && o.whyReady != nil {
		o.whyReady(whyWeb.addr)
	}
	d := milter.NewDaemon(milter.NewServer(cur.Load), daemonOptions(rt, &o))
	metrics.SetOpenSessions(d.Open)
	served := make(chan error, 1)
	go func() { served <- d.Serve(ln) }()
	rt.Log.Info("listening on "+cfg.Listen, "addr", ln.Addr().String())
	// The socket accepts from here on: connections wait in its backlog
	// until Serve takes them.
	web.setReady()
	whyWeb.setReady()
	if o.ready != nil {
		o.ready(ln.Addr())
	}
	listening := cfg

	// A reload runs off this loop, so that a config file slow to read
	// never delays a SIGTERM; SIGHUPs that come during one are folded
	// into one more reload after it, which reads the file as it is then.
	reloaded := make(chan reloadResult, 1)
	reloading, again := false, false
	startReload := func() {
		reloading = true
		old, oldDNS := cur.Load(), dns
		go func() {
			next, nextDNS := reload(o, listening, old, oldDNS, metrics, stderr)
			reloaded <- reloadResult{next, nextDNS}
		}()
	}

	for {
		select {
		case <-ctx.Done():
			// A reload still running is abandoned: its result is never
			// applied, and its goroutine ends with the process.
			// The why page is for people, not for the MTA: it goes first.
			whyWeb.stop(cur.Load().Log)
			shutdown(d, web, cur.Load().Log, o.drainTimeout, served)
			return 0
		case <-hup:
			if reloading {
				again = true
				continue
			}
			startReload()
		case r := <-reloaded:
			reloading = false
			next, nextDNS := r.rt, r.dns
			metrics.ConfigReloaded(next != nil)
			if next != nil {
				useDecisionLog(next, dlog)
				cur.Store(next)
				if nextDNS != dns {
					dns = nextDNS
					metrics.SetCacheEntries(dns.resolver.CacheLen)
				}
				d.SetOptions(daemonOptions(next, &o))
				page.update(next.Config.Why, next.Log)
				if o.setDefaultLogger {
					slog.SetDefault(next.Log)
				}
			} else {
				// logrotate's postrotate sends SIGHUP whatever the state
				// of the config file.
				dlog.Reopen()
			}
			if again {
				again = false
				startReload()
			}
		case err := <-served:
			log := cur.Load().Log
			log.Error("listener failed; stopping", "error", err)
			served <- err // for shutdown, which waits for Serve
			whyWeb.stop(log)
			shutdown(d, web, log, o.drainTimeout, served)
			return 1
		}
	}
}

// shutdown stops accepting and drains the open sessions for at most
// drain, then waits for Serve to return. The metrics listener answers
// /healthz with 503 from the start, so that a load balancer or
// orchestrator stops sending mail here, and serves metrics until the
// sessions are gone.
func shutdown(d *milter.Daemon, web *httpListener, log *slog.Logger, drain time.Duration, served <-chan error) {
	web.draining()
	log.Info("shutting down", "open_sessions", d.Open(), "drain_timeout", drain.String())
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if err := d.Shutdown(ctx); err != nil {
		log.Warn("shutdown did not drain cleanly", "error", err)
	}
	<-served
	web.stop(log)
	log.Info("stopped")
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
