package main

import (
	"log/slog"
	"net/http"
	"sync/atomic"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/milter"
	"github.com/spf-milter/spf-milter/policy"
	"github.com/spf-milter/spf-milter/spf"
	"github.com/spf-milter/spf-milter/why"
)

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
