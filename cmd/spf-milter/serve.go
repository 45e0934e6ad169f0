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
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/decisions"
	"github.com/spf-milter/spf-milter/internal/httpserve"
	"github.com/spf-milter/spf-milter/milter"
	"github.com/spf-milter/spf-milter/policy"
	"github.com/spf-milter/spf-milter/spf"
	"github.com/spf-milter/spf-milter/why"
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
	// milter's defaults, which tests shorten.
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

// reloadResult is what a reload made: a runtime and its resolver, or a
// nil runtime when the running config is kept.
type reloadResult struct {
	rt  *milter.Runtime
	dns *resolverSetup
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

// whyPage is the why page under the running config: its checks use the
// current runtime's checker (and so its resolver and cache), and a reload
// that changes why.rate, why.concurrent or why.cache starts a new handler
// with those limits and an empty cache.
type whyPage struct {
	checker func() *spf.Checker
	// policy is why.Options.Policy: the current config's.
	policy func() *policy.Policy
	cur    atomic.Pointer[whyVersion]
}

// whyVersion is the page's handler and the settings it was made with.
type whyVersion struct {
	settings config.Why
	h        http.Handler
}

// newWhyPage returns the why page for cfg, or nil when no listener would
// serve it (why.listen and metrics.listen both empty).
func newWhyPage(cfg *config.Config, current func() *milter.Runtime, log *slog.Logger) *whyPage {
	if cfg.Why.Listen == "" && cfg.Metrics.Listen == "" {
		if cfg.Why.URL != "" {
			log.Warn("why.url is set but this daemon serves no why page: set why.listen or metrics.listen, or serve it elsewhere", "url", cfg.Why.URL)
		}
		return nil
	}
	p := &whyPage{
		checker: func() *spf.Checker { return current().Checker },
		// The page explains the check a session would have decided by
		// under the config of the moment, as the decision log's replay
		// does.
		policy: func() *policy.Policy { return current().Policy },
	}
	p.update(cfg.Why, log)
	return p
}

// update applies the why settings of a new config.
func (p *whyPage) update(w config.Why, log *slog.Logger) {
	if p == nil {
		return
	}
	old := p.cur.Load()
	if old != nil && old.settings.Rate == w.Rate && old.settings.Concurrent == w.Concurrent && old.settings.Cache == w.Cache {
		return
	}
	ttl := w.Cache
	if ttl == 0 {
		ttl = -1 // why.Options: negative turns the cache off
	}
	p.cur.Store(&whyVersion{settings: w, h: why.NewHandler(why.Options{
		Checker:    p.checker,
		Policy:     p.policy,
		Rate:       w.Rate,
		Concurrent: w.Concurrent,
		CacheTTL:   ttl,
		Log:        log,
	})})
}

// ServeHTTP serves the page with the handler of the latest settings.
func (p *whyPage) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.cur.Load().h.ServeHTTP(w, r)
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

// reload loads the config file again. It returns the new runtime and the
// resolver it uses (oldDNS when the dns settings did not change, so that
// the cache survives), or nil after logging why the running one is kept.
func reload(o serveOptions, listening *config.Config, old *milter.Runtime, oldDNS *resolverSetup, m *milter.Metrics, stderr io.Writer) (*milter.Runtime, *resolverSetup) {
	old.Log.Info("reloading the config", "path", o.configPath)
	rt, dns, err := rebuild(o, listening, oldDNS, m, stderr)
	if err != nil {
		for _, problem := range strings.Split(err.Error(), "\n") {
			if problem = strings.TrimSpace(problem); problem != "" {
				old.Log.Error("config problem", "path", o.configPath, "problem", problem)
			}
		}
		old.Log.Error("reload failed; the running config is kept", "path", o.configPath, "error", oneLine(err))
		return nil, oldDNS
	}
	return rt, dns
}

// rebuild is reload's work: the config file's runtime, logging to the new
// logger what changed that a reload does not apply.
func rebuild(o serveOptions, listening *config.Config, oldDNS *resolverSetup, m *milter.Metrics, stderr io.Writer) (*milter.Runtime, *resolverSetup, error) {
	load := loadServeConfig
	if o.load != nil {
		load = o.load
	}
	cfg, defaults, err := load(o.configPath, o.explicit)
	if err != nil {
		return nil, nil, err
	}
	dns, kept, err := newResolver(cfg.DNS, m, oldDNS)
	if err != nil {
		return nil, nil, err
	}
	rt, err := newRuntime(cfg, dns.resolver, m, stderr)
	if err != nil {
		return nil, nil, err
	}
	if !sameListen(listening, cfg) {
		rt.Log.Warn("listen or socket_mode changed; restart spf-milter to apply it",
			"listening", listening.Listen, "configured", cfg.Listen)
	}
	if listening.Metrics.Listen != cfg.Metrics.Listen {
		rt.Log.Warn("metrics.listen changed; restart spf-milter to apply it",
			"listening", listening.Metrics.Listen, "configured", cfg.Metrics.Listen)
	}
	if listening.Why.Listen != cfg.Why.Listen {
		rt.Log.Warn("why.listen changed; restart spf-milter to apply it",
			"listening", listening.Why.Listen, "configured", cfg.Why.Listen)
	}
	if kept {
		rt.Log.Info("DNS settings unchanged; the resolver and its cache are kept", "cache_entries", dns.resolver.CacheLen())
	} else {
		rt.Log.Info("DNS settings changed; a new resolver starts with an empty cache",
			"servers", strings.Join(dns.servers, ","), "timeout", dns.timeout.String(), "cache_size", dns.cacheSize, "cache_bytes", dns.cacheBytes)
	}
	if defaults {
		rt.Log.Info("no config file; running on the built-in defaults", "path", o.configPath)
	}
	rt.Log.Info("config reloaded", "path", o.configPath)
	return rt, dns, nil
}

// decisionLogOptions are the decision log writer's options for c.
func decisionLogOptions(c config.DecisionLog) decisions.Options {
	return decisions.Options{Path: c.Path, MaxSize: c.MaxSize, Keep: c.Keep}
}

// useDecisionLog sets the decision log up for rt's config, reopening the
// file (SIGHUP is how logrotate asks for that), and has rt's sessions
// write to it when the config names a file. It says where the log goes
// only when the file opened, and otherwise why not; the writer tries
// again later and logs its later errors itself.
func useDecisionLog(rt *milter.Runtime, w *decisions.Writer) {
	w.SetLogger(rt.Log)
	err := w.Configure(decisionLogOptions(rt.Config.DecisionLog))
	dl := rt.Config.DecisionLog
	if dl.Path == "" {
		return
	}
	rt.Decisions = w
	if err != nil {
		rt.Log.Error("decision log not open; records are lost until it opens", "path", dl.Path, "error", err.Error())
		return
	}
	rt.Log.Info("decision log to "+dl.Path, "path", dl.Path, "max_size", dl.MaxSize, "keep", dl.Keep)
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

// resolverSetup is a resolver with the settings it was built from, so
// that a reload can tell whether it may keep it, and its cache.
type resolverSetup struct {
	resolver *spf.DNSResolver
	// servers are the servers the resolver asks, from the config or from
	// /etc/resolv.conf when the config names none.
	servers    []string
	timeout    time.Duration
	cacheSize  int
	cacheBytes int64
}

// newResolver builds the resolver of dns, reporting every query and cache
// lookup to m. When old asks the same servers with the same timeout and
// cache size it is returned instead, with kept set, so that the cache
// outlives a reload. The servers compared are the effective ones, so that
// a reload rereads /etc/resolv.conf when the config names none.
func newResolver(dns config.DNS, m *milter.Metrics, old *resolverSetup) (setup *resolverSetup, kept bool, err error) {
	r, err := spf.NewDNSResolver(spf.DNSOptions{
		Servers:    dns.Servers,
		Timeout:    dns.Timeout,
		CacheSize:  dns.CacheSize,
		CacheBytes: dns.CacheBytes,
		Observer:   m,
	})
	if err != nil {
		return nil, false, fmt.Errorf("dns: %w", err)
	}
	setup = &resolverSetup{resolver: r, servers: r.Servers(), timeout: dns.Timeout, cacheSize: dns.CacheSize, cacheBytes: dns.CacheBytes}
	if old != nil && slices.Equal(old.servers, setup.servers) && old.timeout == setup.timeout &&
		old.cacheSize == setup.cacheSize && old.cacheBytes == setup.cacheBytes {
		return old, true, nil
	}
	return setup, false, nil
}

// newRuntime builds what sessions need from cfg, with resolver for DNS
// and m for metrics.
func newRuntime(cfg *config.Config, resolver spf.Resolver, m *milter.Metrics, logTo io.Writer) (*milter.Runtime, error) {
	log, err := newLogger(cfg.Log, logTo)
	if err != nil {
		return nil, err
	}
	checker := &spf.Checker{
		Resolver:    resolver,
		Receiver:    cfg.Receiver,
		Explanation: cfg.Explanation,
		Timeout:     cfg.DNS.CheckTimeout,
	}
	rt := &milter.Runtime{Config: cfg, Policy: policy.New(cfg), Checker: checker, Log: log, Metrics: m}
	warnExpiring(rt.Log, rt.Policy, time.Now())
	return rt, nil
}

func daemonOptions(rt *milter.Runtime, o *serveOptions) milter.DaemonOptions {
	opts := milter.DaemonOptions{
		IdleTimeout: rt.Config.Session.IdleTimeout,
		MaxDuration: rt.Config.Session.MaxDuration,
		IOBuffer:    o.ioBuffer,
		SkipReplies: o.skipReplies,
		Log:         rt.Log,
	}
	return opts
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
