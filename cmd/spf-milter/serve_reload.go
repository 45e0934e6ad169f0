package main

import (
	"io"
	"strings"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/milter"
)

// reloadResult is what a reload made: a runtime and its resolver, or a
// nil runtime when the running config is kept.
type reloadResult struct {
	rt  *milter.Runtime
	dns *resolverSetup
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
