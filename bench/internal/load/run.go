// Package load is a load generator for milters that plays Postfix with
// go-milter's client: many concurrent connections, each one SMTP
// transaction over a mix of realistic SPF policies served by a DNS server
// in the same process. It runs spf-milter and two references (a do-nothing
// milter on go-milter, the ceiling of that protocol stack, and Debian's
// pyspf-milter) one after the other, checks every verdict, and reports
// messages per second, latency percentiles, errors and resident memory.
package load

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	spfmilter "github.com/spf-milter/spf-milter/milter"
)

// Options configure a run.
type Options struct {
	// Conns are the numbers of concurrent connections, one row each.
	Conns []int
	// Duration is the length of a row, unless Messages is set.
	Duration time.Duration
	// Messages, when positive, is the number of messages of a row.
	Messages int
	// Warmup is the number of messages sent to each target before its
	// rows, to fill caches and let the process settle.
	Warmup int
	// ColdDelay is the DNS delay of the cold-cache rows; 0 leaves them out.
	ColdDelay time.Duration
	// Rounds splits each row into this many shares, taken in turn with
	// the other targets' (see Run); 0 means 1.
	Rounds int
	// Idle is the number of connections held open and idle for the memory
	// figure; 0 leaves it out.
	Idle int
	// PySPF includes pyspf-milter when it is installed.
	PySPF bool
	// Only, when not empty, keeps the targets whose role is listed
	// (RoleSPF, RoleNull, ...).
	Only []string
	// Bin are the programs to run; Dir holds their configs and logs.
	Bin Binaries
	Dir string
	// Progress receives a line per step; nil discards them.
	Progress io.Writer
}

// Roles name the targets, for Options.Only and the ratios.
const (
	RoleSPFUnbuffered = "spf-unbuffered"
	RoleSPF           = "spf"
	RoleNull          = "null"
	RoleNullBuffered  = "null-buffered"
	RolePySPF         = "pyspf"
	RoleSPFCold       = "spf-cold"
	RolePySPFCold     = "pyspf-cold"
)

// Row is the measure of one target at one concurrency, or the reason there
// is none.
type Row struct {
	Role   string
	Target string
	// DNS says how DNS answers come: delay and cache.
	DNS   string
	Conns int
	// Skipped, when set, says why the row has no figures.
	Skipped string

	// Messages counts the sessions run, every one verified; Elapsed is
	// the row's length. PerSecond is the rate of sessions that ended within
	// it; P50 and P99 are percentiles of the session latency, from connect
	// to close.
	Messages  int
	Elapsed   time.Duration
	PerSecond float64
	P50, P99  time.Duration
	// Errors counts sessions that failed or got a wrong verdict;
	// ErrorSamples holds the first few, different, messages.
	Errors       int
	ErrorSamples []string
	// PeakRSS is the largest resident memory seen during the row.
	PeakRSS int64
	// DNSQueries counts the queries the DNS server received during the
	// row: only the target under load asks.
	DNSQueries int64
	// MilterCPU is the CPU time the milter's process used during the row,
	// GeneratorCPU that of the load generator's (DNS server included).
	// Per message, they depend much less than the rates on what else runs
	// on the machine.
	MilterCPU, GeneratorCPU time.Duration
	// RoundRates are the messages per second of each round's share.
	RoundRates []float64

	// Max is the longest session, for the progress lines.
	Max time.Duration

	latencies []time.Duration // until finish
	// counted are the sessions the rate counts: in a row of a duration,
	// those that ended within it (Messages also has those that ended
	// after, every one of them verified).
	counted int
}

// IdleRow is the memory of a target holding many idle connections.
type IdleRow struct {
	Role, Target string
	Conns        int
	Skipped      string
	// RSSBefore is the fresh process's resident memory, RSSIdle the
	// largest seen with the connections open.
	RSSBefore, RSSIdle int64
	Errors             int
	ErrorSamples       []string
}

// Report is the outcome of a run.
type Report struct {
	Started  time.Time
	Options  Options
	Features SPFMilterFeatures
	LoadAvg  string
	Rows     []Row
	Idle     []IdleRow
	// WarmupErrors counts wrong verdicts during warm-ups.
	WarmupErrors int
	WarmupSample []string
}

// Errors is the number of failed or wrong sessions of the whole run.
func (r *Report) Errors() int {
	n := r.WarmupErrors
	for _, row := range r.Rows {
		n += row.Errors
	}
	for _, row := range r.Idle {
		n += row.Errors
	}
	return n
}

// target is one milter configuration to measure.
type target struct {
	role, name, dns string
	kind            Kind
	// v6: offer the masks of milter protocol 6, as Postfix does; plain
	// go-milter servers, which answer version 2, only take protocol 2's.
	v6    bool
	cold  bool
	idle  bool
	skip  string
	start func() (*Process, error)
}

// targets lists the targets of a run in the order of the report, with the
// reason each one that cannot run is skipped.
func targets(o Options, f SPFMilterFeatures, dnsAddr string) []target {
	spfWarm, spfCold := "instant, cache on", fmt.Sprintf("%v delay, cache off (dns.cache_size: 0)", o.ColdDelay)
	cacheSize := 0
	if !f.CacheSize {
		spfWarm, spfCold = "instant (no cache in this build)", fmt.Sprintf("%v delay (no cache in this build)", o.ColdDelay)
		cacheSize = -1
	}
	spfName, spfBuffer := fmt.Sprintf("spf-milter --io-buffer %d (default)", spfmilter.DefaultIOBuffer), spfmilter.DefaultIOBuffer
	if !f.IOBuffer {
		spfName, spfBuffer = "spf-milter (this build has no --io-buffer)", -1
	}
	start := func(name string, so SPFMilterOptions) func() (*Process, error) {
		return func() (*Process, error) { return StartSPFMilter(o.Bin.SPFMilter, o.Dir, name, dnsAddr, so) }
	}
	null := func(name string, rb int) func() (*Process, error) {
		return func() (*Process, error) { return StartNullMilter(o.Bin.NullMilter, o.Dir, name, rb) }
	}
	py := func(name string) func() (*Process, error) {
		return func() (*Process, error) { return StartPySPF(o.Dir, name, dnsAddr) }
	}
	pySkip := ""
	switch {
	case !o.PySPF:
		pySkip = "left out (-pyspf=false)"
	case !PySPFInstalled():
		pySkip = "not installed (apt-get install pyspf-milter python3-spf)"
	}
	// The plain row runs as go-milter alone would: unbuffered I/O and Go's
	// default garbage collector setting.
	plainName := "spf-milter --io-buffer 0, GOGC=100 (plain go-milter I/O and GC)"
	if f.SkipReplies {
		plainName = "spf-milter --io-buffer 0 --skip-replies=false, GOGC=100 (plain go-milter I/O and GC)"
	}
	nullOursName := fmt.Sprintf("do-nothing through spf-milter's I/O (--io-buffer %d, replies skipped, GOGC=%d)", spfmilter.DefaultIOBuffer, spfmilter.DefaultGCPercent)
	unbufferedSkip := ""
	if !f.IOBuffer {
		unbufferedSkip = "this spf-milter has no --io-buffer flag"
	}
	ts := []target{
		{role: RoleSPFUnbuffered, name: plainName, dns: spfWarm, kind: KindSPFMilter, idle: true, skip: unbufferedSkip,
			start: start(plainName, SPFMilterOptions{IOBuffer: 0, CacheSize: -1, GOGC: "100", WaitReplies: f.SkipReplies})},
		{role: RoleSPF, name: spfName, dns: spfWarm, kind: KindSPFMilter, idle: true, v6: f.SkipReplies,
			start: start(spfName, SPFMilterOptions{IOBuffer: spfBuffer, CacheSize: -1})},
		{role: RoleNull, name: "do-nothing (go-milter)", dns: "not used", kind: KindNull, idle: true,
			start: null("do-nothing (go-milter)", 0)},
		{role: RoleNullBuffered, name: nullOursName, dns: "not used", kind: KindNull, idle: true, v6: true,
			start: null(nullOursName, spfmilter.DefaultIOBuffer)},
		{role: RolePySPF, name: "pyspf-milter", dns: "instant, no cache (it has none)", kind: KindPySPF, v6: true, skip: pySkip,
			start: py("pyspf-milter")},
	}
	if o.ColdDelay > 0 {
		ts = append(ts,
			target{role: RoleSPFCold, name: spfName, dns: spfCold, kind: KindSPFMilter, cold: true, v6: f.SkipReplies,
				start: start(spfName+" cold", SPFMilterOptions{IOBuffer: spfBuffer, CacheSize: cacheSize})},
			target{role: RolePySPFCold, name: "pyspf-milter", dns: fmt.Sprintf("%v delay, no cache", o.ColdDelay), kind: KindPySPF, v6: true, cold: true, skip: pySkip,
				start: py("pyspf-milter cold")},
		)
	}
	if len(o.Only) > 0 {
		ts = slices.DeleteFunc(ts, func(t target) bool { return !slices.Contains(o.Only, t.role) })
	}
	return ts
}

// Run measures the targets against a DNS server of its own: first the
// warm-cache group, then the cold one (the same DNS server answering after
// ColdDelay). The targets of a group run at the same time, each in its
// process, but only one is under load at any moment: each round gives
// every target, in turn, its share of every row. So a change in the
// machine's load over the run (other jobs, thermal limits) spreads over
// all targets rather than falling on whichever ran at that time.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if len(o.Conns) == 0 {
		o.Conns = []int{8, 32}
	}
	if o.Messages <= 0 && o.Duration <= 0 {
		o.Duration = 20 * time.Second
	}
	o.Rounds = max(o.Rounds, 1)
	dns, err := StartDNSServer()
	if err != nil {
		return nil, err
	}
	defer dns.Close()

	r := &Report{Started: time.Now().UTC(), Options: o, LoadAvg: loadAvg()}
	r.Features = DetectFeatures(o.Bin.SPFMilter, o.Dir)
	logf := func(format string, args ...any) { fmt.Fprintf(o.Progress, format+"\n", args...) }

	all := targets(o, r.Features, dns.Addr())
	var warm, cold []target
	for _, t := range all {
		if t.skip != "" {
			logf("%s: %s", t.name, t.skip)
		}
		if t.cold {
			cold = append(cold, t)
		} else {
			warm = append(warm, t)
		}
	}
	for _, g := range []struct {
		ts    []target
		delay time.Duration
	}{{warm, 0}, {cold, o.ColdDelay}} {
		dns.SetDelay(g.delay)
		rows, err := measureGroup(ctx, g.ts, o, r, dns, logf)
		r.Rows = append(r.Rows, rows...)
		if err != nil {
			return r, err
		}
	}
	dns.SetDelay(0)
	if o.Idle > 0 {
		for _, t := range warm {
			if !t.idle {
				continue
			}
			if t.skip != "" {
				r.Idle = append(r.Idle, IdleRow{Role: t.role, Target: t.name, Conns: o.Idle, Skipped: t.skip})
				continue
			}
			row, err := measureIdle(t, o.Idle)
			r.Idle = append(r.Idle, row)
			if err != nil {
				return r, err
			}
			logf("%s: %d idle connections: RSS %s MB before, %s MB with them open", t.name, o.Idle, mb(row.RSSBefore), mb(row.RSSIdle))
		}
	}
	return r, nil
}

// measureGroup starts the targets of a group, warms each up, and runs the
// rows in rounds; it returns the rows in target order, skipped targets
// included.
func measureGroup(ctx context.Context, ts []target, o Options, r *Report, dns *DNSServer, logf func(string, ...any)) ([]Row, error) {
	procs := make([]*Process, len(ts))
	defer func() {
		for _, p := range procs {
			if p != nil {
				p.Stop()
			}
		}
	}()
	rows := make([][]Row, len(ts))
	for i, t := range ts {
		rows[i] = make([]Row, len(o.Conns))
		for j, c := range o.Conns {
			rows[i][j] = Row{Role: t.role, Target: t.name, DNS: t.dns, Conns: c, Skipped: t.skip}
		}
		if t.skip != "" {
			continue
		}
		p, err := t.start()
		if err != nil {
			return flatten(rows), err
		}
		procs[i] = p
	}
	for i, t := range ts {
		// A cold target has no cache to fill: its warm-up only lets the
		// process settle, and a tenth does that at 20 ms per query.
		n := o.Warmup
		if t.cold {
			n = max(n/10, min(n, 50))
		}
		if procs[i] == nil || n <= 0 {
			continue
		}
		w := drive(ctx, procs[i], t, 8, 0, n)
		r.WarmupErrors += w.Errors
		r.WarmupSample = appendSamples(r.WarmupSample, w.ErrorSamples)
		logf("%s (%s): warm-up, %d messages, %d errors %s", t.name, t.dns, w.Messages, w.Errors, strings.Join(w.ErrorSamples, "; "))
	}
	for round := range o.Rounds {
		for j, c := range o.Conns {
			for i, t := range ts {
				if procs[i] == nil {
					continue
				}
				if err := ctx.Err(); err != nil {
					return flatten(rows), err
				}
				// This round's share of the row, so that the shares add
				// up to Duration or Messages exactly.
				dur := o.Duration * time.Duration(round+1) / time.Duration(o.Rounds)
				dur -= o.Duration * time.Duration(round) / time.Duration(o.Rounds)
				count := o.Messages*(round+1)/o.Rounds - o.Messages*round/o.Rounds
				q0 := dns.Queries()
				part := drive(ctx, procs[i], t, c, dur, count)
				part.DNSQueries = dns.Queries() - q0
				rows[i][j].add(part)
				logf("round %d/%d: %s, %s, %d conns: %d messages, %.0f/s, p50 %s ms, p99 %s ms, max %s ms, %s DNS queries/msg, CPU µs/msg %s milter %s generator, %d errors, peak RSS %s MB %s",
					round+1, o.Rounds, t.name, t.dns, c, part.Messages, part.PerSecond, ms(part.P50), ms(part.P99), ms(part.Max),
					perMessage(part.DNSQueries, part.Messages), cpuPerMessage(part.MilterCPU, part.Messages),
					cpuPerMessage(part.GeneratorCPU, part.Messages), part.Errors, mb(part.PeakRSS), strings.Join(part.ErrorSamples, "; "))
				if !procs[i].Alive() {
					return flatten(rows), fmt.Errorf("%s died: %s", t.name, procs[i].LogTail())
				}
			}
		}
	}
	return flatten(rows), nil
}

func flatten(rows [][]Row) []Row {
	var out []Row
	for _, rs := range rows {
		for _, r := range rs {
			r.finish()
			out = append(out, r)
		}
	}
	return out
}

// add merges one round's share into the row.
func (row *Row) add(part Row) {
	row.Messages += part.Messages
	row.Elapsed += part.Elapsed
	row.Errors += part.Errors
	row.DNSQueries += part.DNSQueries
	row.MilterCPU += part.MilterCPU
	row.GeneratorCPU += part.GeneratorCPU
	row.ErrorSamples = appendSamples(row.ErrorSamples, part.ErrorSamples)
	row.PeakRSS = max(row.PeakRSS, part.PeakRSS)
	row.latencies = append(row.latencies, part.latencies...)
	row.counted += part.counted
	row.RoundRates = append(row.RoundRates, part.PerSecond)
}

// finish computes the row's rate and percentiles from what was added.
func (row *Row) finish() {
	if row.Elapsed > 0 {
		row.PerSecond = float64(row.counted) / row.Elapsed.Seconds()
	}
	slices.Sort(row.latencies)
	row.P50, row.P99 = percentile(row.latencies, 0.50), percentile(row.latencies, 0.99)
	if n := len(row.latencies); n > 0 {
		row.Max = row.latencies[n-1]
	}
	row.latencies = nil
}

// maxSamples bounds the error messages kept per row.
const maxSamples = 5

func appendSamples(dst []string, src []string) []string {
	for _, s := range src {
		if len(dst) < maxSamples && !slices.Contains(dst, s) {
			dst = append(dst, s)
		}
	}
	return dst
}
