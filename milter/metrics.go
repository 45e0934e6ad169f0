package milter

import (
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/policy"
	"github.com/spf-milter/spf-milter/spf"
)

// The label values a Metrics knows in advance. Their series are created at
// start, so that a rate over them exists before the first event, and their
// counters are looked up without hashing label values on the hot path.
var (
	metricIdentities = []spf.Identity{spf.IdentityMailFrom, spf.IdentityHELO}
	metricActions    = []config.Action{config.Accept, config.Reject, config.Tempfail, config.Quarantine}
	metricSkips      = []string{"trusted_networks", "skip_clients", "authenticated", "skip_senders", "rule"}
	metricStages     = []string{"connect", "helo", "mail", "rcpt", "header", "eoh", "eom", "abort"}
	metricDNSTypes   = []string{"TXT", "A", "AAAA", "MX", "PTR"}
	metricDNSOutcome = []string{"noerror", "nxdomain", "servfail", "refused", "other_rcode", "timeout", "network_error", "bad_answer", "cancelled"}
)

// checkBuckets spans a check from a warm cache (100µs) to the 20s check
// timeout of RFC 7208 §4.6.4.
var checkBuckets = []float64{
	.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20,
}

// dnsBuckets spans one query from a resolver on loopback to the default
// 5s query timeout.
var dnsBuckets = []float64{
	.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5,
}

// Metrics counts what the milter does, for Prometheus. One Metrics serves
// the process for its lifetime, across config reloads, so that counters
// never go back to zero while the daemon runs. It has its own registry,
// holding the Go runtime and process collectors too, so that nothing is
// shared with the global one.
//
// Every method may be called on a nil *Metrics and then does nothing, so a
// Runtime without metrics needs no checks. All methods are safe for
// concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	checks       map[spf.Identity]map[spf.Result]prometheus.Counter
	checksVec    *prometheus.CounterVec
	checkTime    map[spf.Identity]prometheus.Observer
	checkTimeVec *prometheus.HistogramVec
	actions      map[config.Action]prometheus.Counter
	actionsVec   *prometheus.CounterVec
	skipped      *prometheus.CounterVec
	shadow       *prometheus.CounterVec
	failures     *prometheus.CounterVec
	sessions     prometheus.Counter
	reloads      *prometheus.CounterVec
	dns          map[string]*dnsTypeMetrics
	dnsQueries   *prometheus.CounterVec
	dnsTime      *prometheus.HistogramVec
	cacheHits    *prometheus.CounterVec
	cacheMisses  *prometheus.CounterVec
	openSessions atomic.Pointer[func() int]
	cacheEntries atomic.Pointer[func() int]
	lastReload   prometheus.Gauge
	logLost      *decisionLogLost
}

// decisionLogLost exposes the decision log's lost records, counted by the
// writer itself: the metric and the writer's own count cannot disagree,
// and the writer needs no Prometheus.
type decisionLogLost struct {
	desc *prometheus.Desc
	f    atomic.Pointer[func() map[string]uint64]
}

// Describe implements prometheus.Collector.
func (d *decisionLogLost) Describe(ch chan<- *prometheus.Desc) { ch <- d.desc }

// Collect implements prometheus.Collector: nothing until a writer is
// wired.
func (d *decisionLogLost) Collect(ch chan<- prometheus.Metric) {
	f := d.f.Load()
	if f == nil {
		return
	}
	for reason, n := range (*f)() {
		ch <- prometheus.MustNewConstMetric(d.desc, prometheus.CounterValue, float64(n), reason)
	}
}

// dnsTypeMetrics are the series of one query type, resolved once.
type dnsTypeMetrics struct {
	queries map[string]prometheus.Counter
	time    prometheus.Observer
	hits    prometheus.Counter
	misses  prometheus.Counter
}

var _ spf.DNSObserver = (*Metrics)(nil)

// NewMetrics returns a Metrics with every series registered.
func NewMetrics() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.checksVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "spf_milter_checks_total",
		Help: "SPF checks made, by identity (mailfrom, helo) and result. A HELO check is made once per connection and HELO name.",
	}, []string{"identity", "result"})
	m.checkTimeVec = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "spf_milter_check_duration_seconds",
		Help:    "Time taken by one SPF check, DNS lookups included, by identity.",
		Buckets: checkBuckets,
	}, []string{"identity"})
	m.actionsVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "spf_milter_actions_total",
		Help: "Checked messages by the action applied (accept, reject, tempfail, quarantine) and the rule that applied (\"\" for none); in a dry run nothing is refused and every message counts as accept.",
	}, []string{"action", "rule"})
	m.skipped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "spf_milter_skipped_total",
		Help: "Messages not checked and let through, by reason (trusted_networks, skip_clients, authenticated, skip_senders, rule) and the rule that skipped them (\"\" for the others).",
	}, []string{"reason", "rule"})
	m.shadow = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "spf_milter_shadow_actions_total",
		Help: "Messages by the shadow policy's action, never applied, and whether it differs from the action of the live policy (true, false).",
	}, []string{"action", "differs"})
	m.failures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "spf_milter_internal_errors_total",
		Help: "Internal failures answered with 451 4.3.0, by milter stage.",
	}, []string{"stage"})
	m.sessions = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "spf_milter_sessions_total",
		Help: "MTA connections (milter sessions) started.",
	})
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "spf_milter_config_reloads_total",
		Help: "Config reloads on SIGHUP, by result (ok, failed); a failed reload keeps the running config.",
	}, []string{"result"})
	m.lastReload = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "spf_milter_config_last_reload_success_timestamp_seconds",
		Help: "When the running config was loaded, in seconds since the Unix epoch.",
	})
	m.dnsQueries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "spf_milter_dns_queries_total",
		Help: "DNS queries sent to servers, by type and outcome (noerror, nxdomain, servfail, refused, other_rcode, timeout, network_error, bad_answer, cancelled: the lookup was abandoned first).",
	}, []string{"type", "outcome"})
	m.dnsTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "spf_milter_dns_query_duration_seconds",
		Help:    "Time taken by one DNS query to one server, by type.",
		Buckets: dnsBuckets,
	}, []string{"type"})
	m.cacheHits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "spf_milter_dns_cache_hits_total",
		Help: "DNS lookups answered from the cache, by type.",
	}, []string{"type"})
	m.cacheMisses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "spf_milter_dns_cache_misses_total",
		Help: "DNS lookups the cache could not answer, by type.",
	}, []string{"type"})
	open := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "spf_milter_sessions_open",
		Help: "MTA connections (milter sessions) open now.",
	}, func() float64 { return read(&m.openSessions) })
	entries := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "spf_milter_dns_cache_entries",
		Help: "Answers held in the DNS cache now.",
	}, func() float64 { return read(&m.cacheEntries) })

	m.logLost = &decisionLogLost{desc: prometheus.NewDesc(
		"spf_milter_decision_log_lost_total",
		"Decision log records lost, by reason (queue_full: the disk is slower than the mail; write_error; open_error: the file cannot be opened; closed: written after shutdown).",
		[]string{"reason"}, nil,
	)}

	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.checksVec, m.checkTimeVec, m.actionsVec, m.skipped, m.shadow, m.failures,
		m.sessions, open, m.reloads, m.lastReload,
		m.dnsQueries, m.dnsTime, m.cacheHits, m.cacheMisses, entries,
		m.logLost,
	)

	m.checks = map[spf.Identity]map[spf.Result]prometheus.Counter{}
	m.checkTime = map[spf.Identity]prometheus.Observer{}
	for _, id := range metricIdentities {
		m.checks[id] = map[spf.Result]prometheus.Counter{}
		for _, r := range spf.Results {
			m.checks[id][r] = m.checksVec.WithLabelValues(string(id), string(r))
		}
		m.checkTime[id] = m.checkTimeVec.WithLabelValues(string(id))
	}
	m.actions = map[config.Action]prometheus.Counter{}
	for _, a := range metricActions {
		m.actions[a] = m.actionsVec.WithLabelValues(string(a), "")
	}
	for _, r := range metricSkips {
		if r != "rule" {
			m.skipped.WithLabelValues(r, "")
		}
	}
	for _, s := range metricStages {
		m.failures.WithLabelValues(s)
	}
	for _, r := range []string{"ok", "failed"} {
		m.reloads.WithLabelValues(r)
	}
	m.dns = map[string]*dnsTypeMetrics{}
	for _, t := range metricDNSTypes {
		d := &dnsTypeMetrics{
			queries: map[string]prometheus.Counter{},
			time:    m.dnsTime.WithLabelValues(t),
			hits:    m.cacheHits.WithLabelValues(t),
			misses:  m.cacheMisses.WithLabelValues(t),
		}
		for _, o := range metricDNSOutcome {
			d.queries[o] = m.dnsQueries.WithLabelValues(t, o)
		}
		m.dns[t] = d
	}
	m.lastReload.SetToCurrentTime()
	return m
}

// read calls the function held by p, or gives 0 when none is set.
func read(p *atomic.Pointer[func() int]) float64 {
	if f := p.Load(); f != nil {
		return float64((*f)())
	}
	return 0
}

// Registry returns the registry holding every series, for a caller that
// adds its own collectors or gathers in tests.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// Handler serves the metrics in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.InstrumentMetricHandler(m.reg, promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		// A scrape that cannot gather everything still gets what was
		// gathered, rather than a bare 500.
		ErrorHandling: promhttp.ContinueOnError,
	}))
}

// SetOpenSessions names the function that counts the sessions open now,
// read at each scrape: the daemon's connection tracking knows, where a
// session object does not (go-milter makes one per message too).
func (m *Metrics) SetOpenSessions(f func() int) {
	if m != nil {
		m.openSessions.Store(&f)
	}
}

// SetCacheEntries names the function that counts the DNS cache's entries,
// read at each scrape; it is set again when a reload builds a new resolver.
func (m *Metrics) SetCacheEntries(f func() int) {
	if m != nil {
		m.cacheEntries.Store(&f)
	}
}

// SetDecisionLogLost names the function that gives the decision log's
// lost records by reason, read at each scrape: one series per reason it
// returns, so the writer, which returns every reason it knows, keeps the
// set bounded and present from the start.
func (m *Metrics) SetDecisionLogLost(f func() map[string]uint64) {
	if m != nil {
		m.logLost.f.Store(&f)
	}
}

// SessionStarted counts a new MTA connection.
func (m *Metrics) SessionStarted() {
	if m != nil {
		m.sessions.Inc()
	}
}

// Checked counts one SPF check made and its duration.
func (m *Metrics) Checked(o *spf.Outcome) {
	if m == nil || o == nil {
		return
	}
	c, ok := m.checks[o.Identity][o.Result]
	if !ok {
		c = m.checksVec.WithLabelValues(string(o.Identity), string(o.Result))
	}
	c.Inc()
	h, ok := m.checkTime[o.Identity]
	if !ok {
		h = m.checkTimeVec.WithLabelValues(string(o.Identity))
	}
	h.Observe(o.Duration.Seconds())
}

// Decided counts the action applied to a checked message: in a dry run
// nothing is refused or held, so every message counts as accepted.
func (m *Metrics) Decided(d policy.Decision) {
	if m == nil {
		return
	}
	a := d.Action
	if d.DryRun || a == "" {
		a = config.Accept
	}
	// The rule names come from the config: the series stay bounded.
	c, ok := m.actions[a]
	if !ok || d.Rule != "" {
		c = m.actionsVec.WithLabelValues(string(a), d.Rule)
	}
	c.Inc()
}

// Skipped counts a message let through unchecked, by the reason's
// policy.Skip.Key.
func (m *Metrics) Skipped(reason string) {
	m.SkippedBy(reason, "")
}

// SkippedBy counts a message let through unchecked, by the reason's
// policy.Skip.Key and, for a rule, its name.
func (m *Metrics) SkippedBy(reason, rule string) {
	if m == nil {
		return
	}
	m.skipped.WithLabelValues(strings.ReplaceAll(reason, " ", "_"), rule).Inc()
}

// Shadowed counts the shadow policy's action on a message, beside live,
// the live policy's action; nothing when the shadow did not decide.
func (m *Metrics) Shadowed(d policy.ShadowDecision, live config.Action) {
	if m == nil || !d.Known {
		return
	}
	if live == "" {
		live = config.Accept
	}
	m.shadow.WithLabelValues(string(d.Action), strconv.FormatBool(d.Action != live)).Inc()
}

// Failed counts an internal failure at a milter stage.
func (m *Metrics) Failed(stage string) {
	if m != nil {
		m.failures.WithLabelValues(stage).Inc()
	}
}

// ConfigReloaded counts a reload, successful or not.
func (m *Metrics) ConfigReloaded(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.reloads.WithLabelValues("ok").Inc()
		m.lastReload.SetToCurrentTime()
		return
	}
	m.reloads.WithLabelValues("failed").Inc()
}

// DNSQuery implements spf.DNSObserver: one query sent to a server.
func (m *Metrics) DNSQuery(qtype, outcome string, elapsed time.Duration) {
	if m == nil {
		return
	}
	if d, ok := m.dns[qtype]; ok {
		c, ok := d.queries[outcome]
		if !ok {
			c = m.dnsQueries.WithLabelValues(qtype, outcome)
		}
		c.Inc()
		d.time.Observe(elapsed.Seconds())
		return
	}
	m.dnsQueries.WithLabelValues(qtype, outcome).Inc()
	m.dnsTime.WithLabelValues(qtype).Observe(elapsed.Seconds())
}

// DNSCache implements spf.DNSObserver: one lookup of the cache.
func (m *Metrics) DNSCache(qtype string, hit bool) {
	if m == nil {
		return
	}
	d, ok := m.dns[qtype]
	switch {
	case ok && hit:
		d.hits.Inc()
	case ok:
		d.misses.Inc()
	case hit:
		m.cacheHits.WithLabelValues(qtype).Inc()
	default:
		m.cacheMisses.WithLabelValues(qtype).Inc()
	}
}
