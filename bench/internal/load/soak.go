package load

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-milter"

	spfmilter "github.com/spf-milter/spf-milter/milter"
)

// SoakOptions configure a soak run (see Soak).
type SoakOptions struct {
	// Conns is the number of connections kept busy at the same time.
	Conns int
	// Duration is the length of the load.
	Duration time.Duration
	// Interval is the time between two samples under load; 0 means 10s.
	Interval time.Duration
	// Warmup is the number of messages sent before the load, to fill the
	// DNS cache and let the process settle.
	Warmup int
	// SettleTimeout bounds the wait, once every connection is closed, for
	// the daemon's sessions and goroutines to go back to their baseline;
	// 0 means 30s.
	SettleTimeout time.Duration
	// Bin.SPFMilter is the daemon to run; Dir holds its config and log.
	Bin Binaries
	Dir string
	// Progress receives a line per sample; nil discards them.
	Progress io.Writer
}

// Workers of a soak alternate between these two kinds of SMTP connection:
// Postfix keeps one milter connection per SMTP session, so a client that
// delivers several messages in one session, as relays and bulk senders
// do, sends them all over the same milter connection.
const (
	soakSingle = 1
	soakMulti  = 5
)

// settleMin is the least time given to the daemon, once every connection
// is closed, before the last sample: enough for it to see the closes and
// end the sessions' goroutines.
const settleMin = 3 * time.Second

// soakRamp is the time between the starts of two workers: the connections
// open as a busy MTA's would, not all in the same millisecond.
const soakRamp = 2 * time.Millisecond

// SoakSample is one reading of the daemon, and of the load so far.
type SoakSample struct {
	// Label names the samples taken outside the load ("fresh", "baseline",
	// "after close"); At is the time since the load started.
	Label string
	At    time.Duration
	// ConnsOpen counts the generator's milter connections open.
	ConnsOpen int64
	// RSS is the daemon's VmRSS; Goroutines, SessionsOpen and HeapInuse
	// come from its /metrics (go_goroutines, spf_milter_sessions_open,
	// go_memstats_heap_inuse_bytes).
	RSS          int64
	Goroutines   int64
	SessionsOpen int64
	HeapInuse    int64
	// Messages and Errors count the messages sent and those that failed
	// or got a wrong verdict, since the load started; Rate is the
	// messages per second since the previous sample.
	Messages, Errors int64
	Rate             float64
	// Err says why figures are missing, when some are.
	Err string
}

// SoakReport is the outcome of a soak run.
type SoakReport struct {
	Started time.Time
	Options SoakOptions
	Target  string
	LoadAvg string
	// Fresh is read once the daemon listens, Baseline after the warm-up,
	// with no connection open: the idle state the daemon must come back to.
	Fresh, Baseline SoakSample
	// Samples are taken every Interval under load, the last one at the
	// end of Duration, before the connections close.
	Samples []SoakSample
	// After is read once every connection is closed and the daemon's
	// sessions and goroutines are back to the baseline, or SettleTimeout
	// passed; AfterWait is how long that took.
	After     SoakSample
	AfterWait time.Duration
	// RampEnd is when the last worker started.
	RampEnd time.Duration
	// Messages and Connections count what the load sent, Errors the
	// messages and connections that failed or got a wrong verdict; the
	// warm-up's are apart. ErrorSamples holds the first few of any kind.
	Messages, Connections, Errors int64
	WarmupMessages, WarmupErrors  int
	ErrorSamples                  []string
	// SampleErrors counts readings of the daemon that failed.
	SampleErrors int
	// v6: the daemon is offered protocol 6 (it can skip replies).
	v6 bool
	// PeakRSS is the largest VmRSS read, every second, under load.
	PeakRSS int64
}

// Soak runs spf-milter (default I/O buffer, cache on, /metrics served)
// against the DNS server, warms it up, then keeps Conns connections busy
// for Duration with the message mix, checking every verdict: half the
// workers send one message per connection, half soakMulti. It samples the
// daemon's memory and goroutines every Interval, then closes every
// connection and samples once more, to compare with the idle baseline.
func Soak(ctx context.Context, o SoakOptions) (*SoakReport, error) {
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Conns < 2 {
		return nil, errors.New("soak: at least 2 connections")
	}
	if o.Duration <= 0 {
		return nil, errors.New("soak: no duration")
	}
	if o.Interval <= 0 {
		o.Interval = 10 * time.Second
	}
	if o.SettleTimeout <= 0 {
		o.SettleTimeout = 30 * time.Second
	}
	logf := func(format string, args ...any) { fmt.Fprintf(o.Progress, format+"\n", args...) }
	// The generator holds one descriptor per connection, the daemon (which
	// inherits this limit) one per session; both need a few more for DNS,
	// HTTP, logs and connections on their way in or out.
	if err := raiseFileLimit(uint64(o.Conns)*2 + 256); err != nil {
		return nil, err
	}

	dns, err := StartDNSServer()
	if err != nil {
		return nil, err
	}
	defer dns.Close()
	metricsPort, err := freePort()
	if err != nil {
		return nil, err
	}
	f := DetectFeatures(o.Bin.SPFMilter, o.Dir)
	so := SPFMilterOptions{IOBuffer: spfmilter.DefaultIOBuffer, CacheSize: -1, MetricsListen: fmt.Sprintf("127.0.0.1:%d", metricsPort)}
	r := &SoakReport{Started: time.Now().UTC(), Options: o, LoadAvg: loadAvg(),
		Target: fmt.Sprintf("spf-milter --io-buffer %d, GOGC=%d (its defaults), DNS cache on", spfmilter.DefaultIOBuffer, spfmilter.DefaultGCPercent)}
	if !f.IOBuffer {
		so.IOBuffer = -1
		r.Target = "spf-milter (this build has no --io-buffer), DNS cache on"
	}
	if f.SkipReplies {
		// Offered protocol 6, as Postfix offers it: the replies of the
		// stages milter.DaemonOptions.SkipReplies covers are skipped.
		r.v6 = true
		r.Target += ", replies skipped (protocol 6)"
	}
	p, err := StartSPFMilter(o.Bin.SPFMilter, o.Dir, "spf-milter soak", dns.Addr(), so)
	if err != nil {
		return r, err
	}
	defer p.Stop()
	sc := newScraper(fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort))
	defer sc.close()

	// The metrics listener may start a moment after the milter's.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		r.Fresh = sc.sample(p)
		if r.Fresh.Err == "" || time.Now().After(deadline) {
			break
		}
	}
	r.Fresh.Label = "fresh"
	r.noteSample(r.Fresh)
	logf("soak: %s started: RSS %s MB, %d goroutines %s", r.Target, mb(r.Fresh.RSS), r.Fresh.Goroutines, r.Fresh.Err)

	t := target{role: RoleSPF, name: r.Target, kind: KindSPFMilter}
	if o.Warmup > 0 {
		w := drive(ctx, p, t, 8, 0, o.Warmup)
		r.WarmupMessages, r.WarmupErrors = w.Messages, w.Errors
		r.ErrorSamples = appendSamples(r.ErrorSamples, w.ErrorSamples)
		logf("soak: warm-up, %d messages, %d errors %s", w.Messages, w.Errors, strings.Join(w.ErrorSamples, "; "))
	}
	// The baseline is the daemon at rest: the warm-up's sessions ended.
	for deadline := time.Now().Add(10 * time.Second); ; {
		time.Sleep(time.Second)
		r.Baseline = sc.sample(p)
		if r.Baseline.Err == "" && r.Baseline.SessionsOpen == 0 || time.Now().After(deadline) {
			break
		}
	}
	r.Baseline.Label = "baseline"
	r.noteSample(r.Baseline)
	logf("soak: baseline after warm-up: RSS %s MB, %d goroutines, %d sessions open %s",
		mb(r.Baseline.RSS), r.Baseline.Goroutines, r.Baseline.SessionsOpen, r.Baseline.Err)

	err = r.load(ctx, p, sc, logf)
	if err == nil {
		err = r.settle(ctx, p, sc)
		logf("soak: all connections closed; after %v: RSS %s MB, %d goroutines (baseline %d), %d sessions open %s",
			r.AfterWait.Round(100*time.Millisecond), mb(r.After.RSS), r.After.Goroutines, r.Baseline.Goroutines, r.After.SessionsOpen, r.After.Err)
	}
	if err == nil && !p.Alive() {
		err = fmt.Errorf("spf-milter died: %s", p.LogTail())
	}
	return r, err
}

// soakCounters are what the workers of a soak count.
type soakCounters struct {
	conns, open, messages, errors atomic.Int64
	seq                           atomic.Int64
	mu                            sync.Mutex
	samples                       []string
}

func (c *soakCounters) fail(what string, err error) {
	c.errors.Add(1)
	c.mu.Lock()
	c.samples = appendSamples(c.samples, []string{what + ": " + err.Error()})
	c.mu.Unlock()
}

// load runs the workers for the duration and samples the daemon meanwhile.
func (r *SoakReport) load(ctx context.Context, p *Process, sc *scraper, logf func(string, ...any)) error {
	o := r.Options
	client := newClient(p.Addr, r.v6)
	var (
		cnt  soakCounters
		stop atomic.Bool
		wg   sync.WaitGroup
	)
	start := time.Now()
	stopAll := func() {
		stop.Store(true)
		wg.Wait()
		r.Messages, r.Connections, r.Errors = cnt.messages.Load(), cnt.conns.Load(), cnt.errors.Load()
		r.ErrorSamples = appendSamples(r.ErrorSamples, cnt.samples)
	}
	rampDone := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(rampDone)
		for i := range o.Conns {
			if stop.Load() || ctx.Err() != nil {
				return
			}
			perConn := soakSingle
			if i%2 == 1 {
				perConn = soakMulti
			}
			// On the clock, not by a sleep per worker: on a loaded
			// machine a thousand short sleeps add up to many seconds.
			time.Sleep(time.Until(start.Add(time.Duration(i) * soakRamp)))
			wg.Add(1)
			go func() {
				defer wg.Done()
				soakWorker(ctx, client, KindSPFMilter, perConn, &stop, &cnt)
			}()
		}
	}()

	// A reading of RSS every second catches a peak between samples.
	peakStop, peakDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(peakDone)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-peakStop:
				return
			case <-tick.C:
				if rss, err := p.RSS(); err == nil {
					r.PeakRSS = max(r.PeakRSS, rss)
				}
			}
		}
	}()
	defer func() {
		close(peakStop)
		<-peakDone
	}()

	prev, prevAt := int64(0), time.Duration(0)
	for next := min(o.Interval, o.Duration); ; next = min(next+o.Interval, o.Duration) {
		timer := time.NewTimer(time.Until(start.Add(next)))
		select {
		case <-ctx.Done():
			timer.Stop()
			stopAll()
			return ctx.Err()
		case <-p.done:
			timer.Stop()
			stopAll()
			return fmt.Errorf("spf-milter died: %s", p.LogTail())
		case <-timer.C:
		}
		select {
		case <-rampDone:
			if r.RampEnd == 0 {
				r.RampEnd = time.Since(start)
			}
		default:
		}
		// The time of a sample is when the reading began: under load,
		// the scrape itself may take a while.
		at := time.Since(start)
		s := sc.sample(p)
		s.At = at
		s.ConnsOpen = cnt.open.Load()
		s.Messages, s.Errors = cnt.messages.Load(), cnt.errors.Load()
		s.Rate = float64(s.Messages-prev) / (s.At - prevAt).Seconds()
		prev, prevAt = s.Messages, s.At
		r.Samples = append(r.Samples, s)
		r.noteSample(s)
		logf("soak: %v: %d conns open, %d sessions open, %d goroutines, RSS %s MB, heap in use %s MB, %d messages (%.0f/s), %d errors %s",
			s.At.Round(100*time.Millisecond), s.ConnsOpen, s.SessionsOpen, s.Goroutines, mb(s.RSS), mb(s.HeapInuse), s.Messages, s.Rate, s.Errors, s.Err)
		if next >= o.Duration {
			break
		}
	}
	<-rampDone
	stopAll()
	if r.RampEnd == 0 {
		// The ramp outlasted the load: no sample was in steady state.
		r.RampEnd = o.Duration
	}
	return nil
}

// soakWorker opens connection after connection, each with perConn
// messages of one case (one client, one HELO name), and checks every
// verdict as a milter of kind k must answer, until stop is set; the
// message under way is finished first.
func soakWorker(ctx context.Context, client *milter.Client, k Kind, perConn int, stop *atomic.Bool, cnt *soakCounters) {
	for !stop.Load() && ctx.Err() == nil {
		n := int(cnt.conns.Add(1)) - 1
		c := &Cases[n%len(Cases)]
		ip := c.IPs[(n/len(Cases))%len(c.IPs)]
		seq := int(cnt.seq.Add(int64(perConn))) - perConn
		s, err := openSession(client, c, ip, seq)
		if err != nil {
			cnt.fail(c.Name+", connection", err)
			// Do not spin on a daemon that refuses connections.
			time.Sleep(100 * time.Millisecond)
			continue
		}
		cnt.open.Add(1)
		broken := false
		for i := range perConn {
			if i > 0 {
				if stop.Load() || ctx.Err() != nil {
					break
				}
				// Postfix resets its milters at the end of each
				// transaction (smtpd's mail_reset calls milter_abort).
				if err := s.Abort(); err != nil {
					cnt.fail(c.Name+", abort", err)
					broken = true
					break
				}
			}
			m, err := sendMessage(s, c, ip, seq+i)
			if err == nil {
				err = k.Verify(m)
			}
			cnt.messages.Add(1)
			if err != nil {
				cnt.fail(c.Name, err)
				broken = true
				break
			}
		}
		// Closing a session broken by an error fails too: that error
		// is already counted.
		if err := s.Close(); err != nil && !broken {
			cnt.fail(c.Name+", close", err)
		}
		cnt.open.Add(-1)
	}
}

// settle waits, once every connection is closed, settleMin, then until
// the daemon has no session open and no more goroutines than at the
// baseline, or until SettleTimeout, and records that last sample.
func (r *SoakReport) settle(ctx context.Context, p *Process, sc *scraper) error {
	start := time.Now()
	deadline := start.Add(max(r.Options.SettleTimeout, settleMin))
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(settleMin):
	}
	for {
		s := sc.sample(p)
		r.After, r.AfterWait = s, time.Since(start)
		if s.Err == "" && s.SessionsOpen == 0 && s.Goroutines <= r.Baseline.Goroutines || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	r.After.Label = "after close"
	r.After.At = r.AfterWait
	r.After.Messages, r.After.Errors = r.Messages, r.Errors
	r.noteSample(r.After)
	return nil
}

// noteSample counts a failed reading.
func (r *SoakReport) noteSample(s SoakSample) {
	if s.Err != "" {
		r.SampleErrors++
		r.ErrorSamples = appendSamples(r.ErrorSamples, []string{"sample: " + s.Err})
	}
}

// scraper reads the daemon's /metrics over one kept-alive connection, so
// that every sample sees the same HTTP goroutines in the daemon.
type scraper struct {
	url    string
	client *http.Client
}

func newScraper(url string) *scraper {
	return &scraper{url: url, client: &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true},
	}}
}

func (s *scraper) close() { s.client.CloseIdleConnections() }

// sample reads the process's RSS and its metrics; Err says what failed.
func (s *scraper) sample(p *Process) SoakSample {
	var out SoakSample
	var errs []string
	rss, err := p.RSS()
	if err != nil {
		errs = append(errs, "RSS: "+err.Error())
	}
	out.RSS = rss
	m, err := s.scrape("go_goroutines", "spf_milter_sessions_open", "go_memstats_heap_inuse_bytes")
	if err != nil {
		errs = append(errs, "metrics: "+err.Error())
	}
	out.Goroutines = int64(m["go_goroutines"])
	out.SessionsOpen = int64(m["spf_milter_sessions_open"])
	out.HeapInuse = int64(m["go_memstats_heap_inuse_bytes"])
	out.Err = strings.Join(errs, "; ")
	return out
}

func (s *scraper) scrape(names ...string) (map[string]float64, error) {
	resp, err := s.client.Get(s.url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil, fmt.Errorf("GET %s: %s", s.url, resp.Status)
	}
	return parseMetrics(resp.Body, names...)
}

// parseMetrics reads the unlabelled samples of names from Prometheus's
// text format; a name missing from it is an error.
func parseMetrics(r io.Reader, names ...string) (map[string]float64, error) {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		// NAME VALUE [TIMESTAMP]; a labelled sample's name is followed
		// by "{", so it is not one of names.
		f := strings.Fields(line)
		if len(f) < 2 || !want[f[0]] {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			return out, fmt.Errorf("%s: %w", f[0], err)
		}
		out[f[0]] = v
	}
	if err := sc.Err(); err != nil {
		return out, err
	}
	var missing []string
	for _, n := range names {
		if _, ok := out[n]; !ok {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return out, fmt.Errorf("no %s in the metrics", strings.Join(missing, ", "))
	}
	return out, nil
}

// raiseFileLimit sets this process's soft limit on open files to at least
// need, which the daemon inherits: Go raises its own soft limit at start,
// but gives a child the limit it was started with unless the program set
// one itself.
func raiseFileLimit(need uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("open files limit: %w", err)
	}
	if lim.Max != ^uint64(0) && lim.Max < need {
		return fmt.Errorf("open files limit: hard limit %d, the soak needs %d (raise it, e.g. in /etc/security/limits.conf, or use fewer -soak-conns)", lim.Max, need)
	}
	lim.Cur = max(lim.Cur, need)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("open files limit: %w", err)
	}
	return nil
}
