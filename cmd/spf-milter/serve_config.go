package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/decisions"
	"github.com/spf-milter/spf-milter/milter"
	"github.com/spf-milter/spf-milter/policy"
	"github.com/spf-milter/spf-milter/spf"
)

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
