package milter

import (
	"bufio"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/internal/dnstest"
	"github.com/spf-milter/spf-milter/policy"
	"github.com/spf-milter/spf-milter/spf"
)

// exposition is a scrape: the value of each sample, keyed by the series
// as the text format writes it (name{label="value",...}, labels sorted),
// and the names that have a HELP and a TYPE line.
type exposition struct {
	samples  map[string]float64
	help     map[string]bool
	typeLine map[string]string
}

// scrape fetches h's /metrics in the text format and parses it.
func scrape(t *testing.T, h http.Handler) exposition {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET /metrics: content type %q, want the text format", ct)
	}
	return parseExposition(t, rec.Body.String())
}

// parseExposition reads the Prometheus text format.
func parseExposition(t *testing.T, text string) exposition {
	t.Helper()
	e := exposition{samples: map[string]float64{}, help: map[string]bool{}, typeLine: map[string]string{}}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
		case strings.HasPrefix(line, "# HELP "):
			name, _, _ := strings.Cut(strings.TrimPrefix(line, "# HELP "), " ")
			e.help[name] = true
		case strings.HasPrefix(line, "# TYPE "):
			name, typ, _ := strings.Cut(strings.TrimPrefix(line, "# TYPE "), " ")
			e.typeLine[name] = typ
		case strings.HasPrefix(line, "#"):
		default:
			i := strings.LastIndexByte(line, ' ')
			if i < 0 {
				t.Fatalf("sample line %q has no value", line)
			}
			v, err := strconv.ParseFloat(line[i+1:], 64)
			if err != nil {
				t.Fatalf("sample line %q: %v", line, err)
			}
			e.samples[line[:i]] = v
		}
	}
	return e
}

// check compares the samples named in want.
func (e exposition) check(t *testing.T, want map[string]float64) {
	t.Helper()
	for series, v := range want {
		got, ok := e.samples[series]
		switch {
		case !ok:
			t.Errorf("no series %s", series)
		case got != v:
			t.Errorf("%s = %v, want %v", series, got, v)
		}
	}
}

// metricsHarness is a milter server whose Runtime carries m.
func metricsHarness(t *testing.T, cfg *config.Config, r spf.Resolver, m *Metrics) *harness {
	t.Helper()
	logs := &logBuffer{}
	rt := &Runtime{
		Config:  cfg,
		Checker: &spf.Checker{Resolver: r, Receiver: cfg.Receiver, Timeout: 10 * time.Second},
		Log:     slog.New(slog.NewJSONHandler(logs, nil)),
		Metrics: m,
	}
	return startServer(t, func() *Runtime { return rt }, nil, logs)
}

// TestMetricsSessions drives transactions through the milter and reads
// back what the metrics say about them.
func TestMetricsSessions(t *testing.T) {
	m := NewMetrics()
	zone := testZone(t)
	h := metricsHarness(t, testConfig(), panicResolver{dnstest.NewMapResolver(zone)}, m)

	// Connection 1: HELO passes (checked once for the connection), then one
	// message per MAIL FROM result and action.
	cs := h.connect(clientIP, passHELO)
	for _, tt := range []struct {
		from, mail string
	}{
		{"alice@pass.example", "continue"},
		{"alice@softfail.example", "continue"},
		{"alice@fail.example", "550"},
		{"alice@temperror.example", "451"},
		{"alice@permerror.example", "continue"},
		{"alice@pass.example", "continue"},
		{"alice@panic.example", "451"},
	} {
		o := h.send(cs, message{from: tt.from, rcpts: []string{"bob@example.net"}})
		if got := reply(o.mail); !strings.HasPrefix(got, tt.mail) {
			t.Fatalf("MAIL FROM %s answered %q, want %s", tt.from, got, tt.mail)
		}
	}
	// An authenticated client's message is not checked.
	o := h.send(cs, message{from: "alice@fail.example", mailMacro: []string{"{auth_authen}", "alice"}, rcpts: []string{"bob@example.net"}})
	if reply(o.mail) != "continue" {
		t.Fatalf("authenticated MAIL FROM answered %q", reply(o.mail))
	}

	// Connection 2: a trusted client, two messages, neither checked.
	cs2 := h.connect("127.0.0.1", failHELO)
	for range 2 {
		h.send(cs2, message{from: "alice@fail.example", rcpts: []string{"bob@example.net"}})
	}

	// Connection 3: HELO fails, which the HELO policy rejects.
	cs3 := h.connect(clientIP, failHELO)
	if o := h.send(cs3, message{from: "alice@pass.example", rcpts: []string{"bob@example.net"}}); !strings.HasPrefix(reply(o.mail), "550") {
		t.Fatalf("MAIL FROM after a failing HELO answered %q", reply(o.mail))
	}

	e := scrape(t, m.Handler())
	e.check(t, map[string]float64{
		`spf_milter_sessions_total`:                                           3,
		`spf_milter_checks_total{identity="helo",result="pass"}`:              1,
		`spf_milter_checks_total{identity="helo",result="fail"}`:              1,
		`spf_milter_checks_total{identity="mailfrom",result="pass"}`:          3,
		`spf_milter_checks_total{identity="mailfrom",result="softfail"}`:      1,
		`spf_milter_checks_total{identity="mailfrom",result="fail"}`:          1,
		`spf_milter_checks_total{identity="mailfrom",result="temperror"}`:     1,
		`spf_milter_checks_total{identity="mailfrom",result="permerror"}`:     1,
		`spf_milter_checks_total{identity="mailfrom",result="none"}`:          0,
		`spf_milter_checks_total{identity="mailfrom",result="neutral"}`:       0,
		`spf_milter_check_duration_seconds_count{identity="mailfrom"}`:        7,
		`spf_milter_check_duration_seconds_count{identity="helo"}`:            2,
		`spf_milter_check_duration_seconds_bucket{identity="helo",le="+Inf"}`: 2,
		`spf_milter_actions_total{action="accept",rule=""}`:                   4,
		`spf_milter_actions_total{action="reject",rule=""}`:                   2,
		`spf_milter_actions_total{action="tempfail",rule=""}`:                 1,
		`spf_milter_actions_total{action="quarantine",rule=""}`:               0,
		`spf_milter_skipped_total{reason="authenticated",rule=""}`:            1,
		`spf_milter_skipped_total{reason="trusted_networks",rule=""}`:         2,
		`spf_milter_skipped_total{reason="skip_senders",rule=""}`:             0,
		`spf_milter_internal_errors_total{stage="mail"}`:                      1,
		`spf_milter_internal_errors_total{stage="eom"}`:                       0,
		`spf_milter_sessions_open`:                                            0, // no source set
		`spf_milter_dns_cache_entries`:                                        0,
		`spf_milter_config_reloads_total{result="ok"}`:                        0,
	})
	// A histogram's buckets are cumulative and end at its count.
	if lo, hi := e.samples[`spf_milter_check_duration_seconds_bucket{identity="mailfrom",le="0.0001"}`],
		e.samples[`spf_milter_check_duration_seconds_bucket{identity="mailfrom",le="20"}`]; lo > hi || hi != 7 {
		t.Errorf("mailfrom duration buckets: le=0.0001 %v, le=20 %v; want cumulative up to 7", lo, hi)
	}
	for name, typ := range map[string]string{
		"spf_milter_checks_total":                "counter",
		"spf_milter_check_duration_seconds":      "histogram",
		"spf_milter_actions_total":               "counter",
		"spf_milter_skipped_total":               "counter",
		"spf_milter_internal_errors_total":       "counter",
		"spf_milter_sessions_total":              "counter",
		"spf_milter_sessions_open":               "gauge",
		"spf_milter_dns_queries_total":           "counter",
		"spf_milter_dns_query_duration_seconds":  "histogram",
		"spf_milter_dns_cache_hits_total":        "counter",
		"spf_milter_dns_cache_misses_total":      "counter",
		"spf_milter_dns_cache_entries":           "gauge",
		"spf_milter_config_reloads_total":        "counter",
		"go_goroutines":                          "gauge",
		"process_start_time_seconds":             "gauge",
		"promhttp_metric_handler_requests_total": "counter",
	} {
		if e.typeLine[name] != typ || !e.help[name] {
			t.Errorf("%s: TYPE %q (HELP %v), want %s with help", name, e.typeLine[name], e.help[name], typ)
		}
	}
}

// TestMetricsDryRun: nothing is refused in a dry run, so every checked
// message counts as accepted, whatever the policy names.
func TestMetricsDryRun(t *testing.T) {
	m := NewMetrics()
	cfg := testConfig()
	cfg.DryRun = true
	cfg.Policy.MailFrom[spf.Softfail] = config.Quarantine
	h := metricsHarness(t, cfg, dnstest.NewMapResolver(testZone(t)), m)
	cs := h.connect(clientIP, passHELO)
	for _, from := range []string{"alice@fail.example", "alice@softfail.example", "alice@pass.example"} {
		if o := h.send(cs, message{from: from, rcpts: []string{"bob@example.net"}}); reply(o.end) != "continue" {
			t.Fatalf("%s: end of message answered %q", from, reply(o.end))
		}
	}
	scrape(t, m.Handler()).check(t, map[string]float64{
		`spf_milter_actions_total{action="accept",rule=""}`:              3,
		`spf_milter_actions_total{action="reject",rule=""}`:              0,
		`spf_milter_actions_total{action="quarantine",rule=""}`:          0,
		`spf_milter_checks_total{identity="mailfrom",result="fail"}`:     1,
		`spf_milter_checks_total{identity="mailfrom",result="softfail"}`: 1,
	})
}

// TestMetricsQuarantine: a held message counts as quarantine.
func TestMetricsQuarantine(t *testing.T) {
	m := NewMetrics()
	cfg := testConfig()
	cfg.Policy.MailFrom[spf.Softfail] = config.Quarantine
	h := metricsHarness(t, cfg, dnstest.NewMapResolver(testZone(t)), m)
	cs := h.connect(clientIP, passHELO)
	o := h.send(cs, message{from: "alice@softfail.example", rcpts: []string{"bob@example.net"}})
	if len(quarantineReasons(o.mods)) != 1 {
		t.Fatalf("modifications %+v, want a quarantine", o.mods)
	}
	scrape(t, m.Handler()).check(t, map[string]float64{
		`spf_milter_actions_total{action="quarantine",rule=""}`: 1,
		`spf_milter_actions_total{action="accept",rule=""}`:     0,
	})
}

// TestMetricsOpenSessions reads the open sessions from a Daemon's
// tracking, as the daemon wires it.
func TestMetricsOpenSessions(t *testing.T) {
	m := NewMetrics()
	f := startDaemon(t, nil, DaemonOptions{})
	m.SetOpenSessions(f.d.Open)
	open := func() float64 { return scrape(t, m.Handler()).samples["spf_milter_sessions_open"] }
	a, b := f.session(t), f.session(t)
	waitFor(t, "two sessions are open", func() bool { return open() == 2 })
	a.Close()
	waitFor(t, "one session is open", func() bool { return open() == 1 })
	b.Close()
	waitFor(t, "no session is open", func() bool { return open() == 0 })
}

// TestMetricsDecisionLogLost reads the decision log's lost records from
// the function the daemon wires, one series per reason it gives, and none
// before it is wired.
func TestMetricsDecisionLogLost(t *testing.T) {
	m := NewMetrics()
	if got := scrape(t, m.Handler()); got.typeLine["spf_milter_decision_log_lost_total"] != "" {
		t.Errorf("decision log series before a writer is wired: %v", got.samples)
	}
	lost := map[string]uint64{"queue_full": 0, "write_error": 7, "open_error": 2}
	m.SetDecisionLogLost(func() map[string]uint64 { return lost })
	e := scrape(t, m.Handler())
	e.check(t, map[string]float64{
		`spf_milter_decision_log_lost_total{reason="queue_full"}`:  0,
		`spf_milter_decision_log_lost_total{reason="write_error"}`: 7,
		`spf_milter_decision_log_lost_total{reason="open_error"}`:  2,
	})
	if e.typeLine["spf_milter_decision_log_lost_total"] != "counter" || !e.help["spf_milter_decision_log_lost_total"] {
		t.Errorf("spf_milter_decision_log_lost_total: type %q, help %v", e.typeLine["spf_milter_decision_log_lost_total"], e.help["spf_milter_decision_log_lost_total"])
	}
}

// TestMetricsDNS counts the queries and cache lookups of a real resolver
// asking a DNS server on loopback.
func TestMetricsDNS(t *testing.T) {
	m := NewMetrics()
	zone := testZone(t)
	// Negative answers are cached for the SOA minimum (RFC 2308).
	if err := zone.Add("example. SOA ns.example. hostmaster.example. 1 3600 600 86400 300"); err != nil {
		t.Fatal(err)
	}
	srv := dnstest.StartServer(t, zone)
	r, err := spf.NewDNSResolver(spf.DNSOptions{Servers: []string{srv.Addr()}, Timeout: 5 * time.Second, CacheSize: 100, Observer: m})
	if err != nil {
		t.Fatal(err)
	}
	m.SetCacheEntries(r.CacheLen)
	ctx := context.Background()
	for range 3 {
		if _, err := r.LookupTXT(ctx, "pass.example"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.LookupTXT(ctx, "nothing.example"); !spf.IsNotFound(err) {
		t.Fatalf("TXT nothing.example: %v, want not found", err)
	}
	if _, err := r.LookupA(ctx, "none.example"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.LookupTXT(ctx, "temperror.example"); err == nil || spf.IsNotFound(err) {
		t.Fatalf("TXT temperror.example: %v, want a temporary error", err)
	}
	e := scrape(t, m.Handler())
	e.check(t, map[string]float64{
		`spf_milter_dns_queries_total{outcome="noerror",type="TXT"}`:  1,
		`spf_milter_dns_queries_total{outcome="nxdomain",type="TXT"}`: 1,
		`spf_milter_dns_queries_total{outcome="servfail",type="TXT"}`: 1,
		`spf_milter_dns_queries_total{outcome="noerror",type="A"}`:    1,
		`spf_milter_dns_queries_total{outcome="timeout",type="MX"}`:   0,
		`spf_milter_dns_query_duration_seconds_count{type="TXT"}`:     3,
		`spf_milter_dns_query_duration_seconds_count{type="A"}`:       1,
		`spf_milter_dns_cache_hits_total{type="TXT"}`:                 2,
		`spf_milter_dns_cache_misses_total{type="TXT"}`:               3,
		`spf_milter_dns_cache_misses_total{type="A"}`:                 1,
		`spf_milter_dns_cache_hits_total{type="PTR"}`:                 0,
		// pass.example, the NXDOMAIN and none.example's A; never a failure.
		`spf_milter_dns_cache_entries`: 3,
	})
	if n := len(srv.Queries()); n != 4 {
		t.Errorf("the server got %d queries, want the 4 the metrics count", n)
	}
}

// TestMetricsUnknownLabels: values outside the known sets are still
// counted, under their own label.
func TestMetricsUnknownLabels(t *testing.T) {
	m := NewMetrics()
	m.DNSQuery("SRV", "noerror", time.Millisecond)
	m.DNSQuery("TXT", "weird", time.Millisecond)
	m.DNSCache("SRV", true)
	m.DNSCache("SRV", false)
	m.Checked(&spf.Outcome{Identity: "pra", Result: spf.Pass, Duration: time.Millisecond})
	m.Decided(policy.Decision{Action: "discard"})
	m.Skipped("some reason")
	m.Failed("negotiate")
	m.ConfigReloaded(true)
	m.ConfigReloaded(false)
	m.ConfigReloaded(false)
	scrape(t, m.Handler()).check(t, map[string]float64{
		`spf_milter_dns_queries_total{outcome="noerror",type="SRV"}`: 1,
		`spf_milter_dns_queries_total{outcome="weird",type="TXT"}`:   1,
		`spf_milter_dns_query_duration_seconds_count{type="SRV"}`:    1,
		`spf_milter_dns_query_duration_seconds_count{type="TXT"}`:    1,
		`spf_milter_dns_cache_hits_total{type="SRV"}`:                1,
		`spf_milter_dns_cache_misses_total{type="SRV"}`:              1,
		`spf_milter_checks_total{identity="pra",result="pass"}`:      1,
		`spf_milter_check_duration_seconds_count{identity="pra"}`:    1,
		`spf_milter_actions_total{action="discard",rule=""}`:         1,
		`spf_milter_skipped_total{reason="some_reason",rule=""}`:     1,
		`spf_milter_internal_errors_total{stage="negotiate"}`:        1,
		`spf_milter_config_reloads_total{result="ok"}`:               1,
		`spf_milter_config_reloads_total{result="failed"}`:           2,
	})
}

// TestMetricsNil: a nil *Metrics takes every call and counts nothing, so
// that a Runtime needs none.
func TestMetricsNil(t *testing.T) {
	var m *Metrics
	m.SetOpenSessions(func() int { return 1 })
	m.SetCacheEntries(func() int { return 1 })
	m.SetDecisionLogLost(func() map[string]uint64 { return map[string]uint64{"queue_full": 1} })
	m.SessionStarted()
	m.Checked(&spf.Outcome{Identity: spf.IdentityMailFrom, Result: spf.Pass})
	m.Decided(policy.Decision{Action: config.Reject})
	m.Skipped("authenticated")
	m.Failed("mail")
	m.ConfigReloaded(true)
	m.DNSQuery("TXT", "noerror", time.Millisecond)
	m.DNSCache("TXT", true)
	if m.Registry() != nil {
		t.Error("a nil Metrics has a registry")
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("nil Metrics handler answered %d, want 404", rec.Code)
	}
	// A real one ignores a nil outcome.
	NewMetrics().Checked(nil)
}

// TestMetricsSeparateRegistries: two Metrics in one process (as tests
// make) do not share counters.
func TestMetricsSeparateRegistries(t *testing.T) {
	a, b := NewMetrics(), NewMetrics()
	a.SessionStarted()
	if got := scrape(t, b.Handler()).samples["spf_milter_sessions_total"]; got != 0 {
		t.Errorf("the second Metrics counts %v sessions, want 0", got)
	}
	if got := scrape(t, a.Handler()).samples["spf_milter_sessions_total"]; got != 1 {
		t.Errorf("the first Metrics counts %v sessions, want 1", got)
	}
	if a.Registry() == b.Registry() {
		t.Error("two Metrics share a registry")
	}
}
