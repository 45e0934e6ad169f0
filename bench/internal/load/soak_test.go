package load

import (
	"bytes"
	"context"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The milters are built once for every test that runs them.
var (
	binOnce sync.Once
	binDir  string
	bins    Binaries
	binErr  error
)

func testBinaries(t *testing.T) Binaries {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "load-test-bin-")
		if binErr == nil {
			bins, binErr = BuildBinaries(context.Background(), binDir)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return bins
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func TestParseMetrics(t *testing.T) {
	const text = `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 23
go_memstats_heap_inuse_bytes 1.1665408e+07
spf_milter_sessions_open{shard="x"} 99
spf_milter_sessions_open 7
spf_milter_sessions_total 12 1700000000000
`
	tests := []struct {
		name    string
		text    string
		names   []string
		want    map[string]float64
		wantErr string
	}{
		{"plain and exponent", text, []string{"go_goroutines", "go_memstats_heap_inuse_bytes"},
			map[string]float64{"go_goroutines": 23, "go_memstats_heap_inuse_bytes": 11665408}, ""},
		{"labelled sample left aside", text, []string{"spf_milter_sessions_open"}, map[string]float64{"spf_milter_sessions_open": 7}, ""},
		{"timestamp", text, []string{"spf_milter_sessions_total"}, map[string]float64{"spf_milter_sessions_total": 12}, ""},
		{"missing", text, []string{"go_goroutines", "go_threads"}, nil, "no go_threads"},
		{"only a labelled one", "x{a=\"b\"} 1\n", []string{"x"}, nil, "no x"},
		{"not a number", "go_goroutines many\n", []string{"go_goroutines"}, nil, "go_goroutines"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMetrics(strings.NewReader(tt.text), tt.names...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
		})
	}
}

func TestTrend(t *testing.T) {
	tests := []struct {
		name         string
		steady, all  []float64
		judged, flat bool
		start, end   float64
		max          float64
	}{
		{"flat", []float64{100, 104, 98, 101, 99, 103}, []float64{90, 100, 104, 98, 101, 99, 103}, true, true, 100, 103, 104},
		{"growing", []float64{100, 110, 120, 130, 140, 150}, []float64{100, 110, 120, 130, 140, 150}, true, false, 100, 150, 150},
		{"shrinking", []float64{200, 150, 120, 100, 90, 80}, []float64{200, 150, 120, 100, 90, 80}, true, false, 200, 80, 200},
		{"just within", []float64{100, 100, 110, 110, 110, 110}, []float64{100, 100, 110, 110, 110, 110}, true, true, 100, 110, 110},
		{"two samples", []float64{100, 300}, []float64{100, 300}, false, false, 100, 300, 300},
		{"none in steady state", nil, []float64{5}, false, false, 0, 0, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := trend("x", tt.steady, tt.all)
			if got.Judged != tt.judged || got.Flat != tt.flat || got.Start != tt.start || got.End != tt.end || got.Max != tt.max {
				t.Errorf("got %+v; want judged %v, flat %v, start %v, end %v, max %v", got, tt.judged, tt.flat, tt.start, tt.end, tt.max)
			}
		})
	}
}

func TestSoakLeak(t *testing.T) {
	base := SoakSample{Goroutines: 11}
	tests := []struct {
		name  string
		after SoakSample
		want  string // "" for no leak, else a part of the message
	}{
		{"back", SoakSample{Goroutines: 11}, ""},
		{"below", SoakSample{Goroutines: 9}, ""},
		{"goroutines", SoakSample{Goroutines: 14}, "3 goroutines more"},
		{"sessions", SoakSample{Goroutines: 11, SessionsOpen: 2}, "2 sessions still open"},
		{"failed sample is counted elsewhere", SoakSample{Goroutines: 0, Err: "metrics: refused"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &SoakReport{Baseline: base, After: tt.after}
			got := r.Leak()
			if tt.want == "" && got != "" || tt.want != "" && !strings.Contains(got, tt.want) {
				t.Errorf("Leak() = %q, want %q", got, tt.want)
			}
			if wantFail := tt.want != ""; (r.Failures() > 0) != wantFail {
				t.Errorf("Failures() = %d with leak %q", r.Failures(), got)
			}
		})
	}
}

// TestSoakWorker drives the do-nothing milter with workers of both kinds:
// judged as what it is, every message passes and a connection of
// soakMulti carries several of them; judged as spf-milter, every message
// is an error, so the worker counts wrong verdicts.
func TestSoakWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the milters")
	}
	b := testBinaries(t)
	p, err := StartNullMilter(b.NullMilter, t.TempDir(), "null soak", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	tests := []struct {
		name    string
		kind    Kind
		perConn int
		wrong   bool
	}{
		{"right, one per connection", KindNull, soakSingle, false},
		{"right, several per connection", KindNull, soakMulti, false},
		{"wrong verdicts counted", KindSPFMilter, soakMulti, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var (
				cnt  soakCounters
				stop atomic.Bool
				done = make(chan struct{})
			)
			go func() {
				defer close(done)
				soakWorker(context.Background(), newClient(p.Addr, false), tt.kind, tt.perConn, &stop, &cnt)
			}()
			for cnt.messages.Load() < 30 {
				time.Sleep(10 * time.Millisecond)
			}
			stop.Store(true)
			<-done
			msgs, conns, errs := cnt.messages.Load(), cnt.conns.Load(), cnt.errors.Load()
			t.Logf("%d messages over %d connections, %d errors %q", msgs, conns, errs, cnt.samples)
			if cnt.open.Load() != 0 {
				t.Errorf("%d connections left open", cnt.open.Load())
			}
			if tt.wrong {
				// A wrong verdict ends its connection.
				if errs != msgs || conns != msgs {
					t.Errorf("%d errors over %d messages and %d connections; want all three equal", errs, msgs, conns)
				}
				return
			}
			if errs != 0 {
				t.Errorf("%d errors: %q", errs, cnt.samples)
			}
			// Only the last connection may end early, when stopped.
			if minMsgs := (conns-1)*int64(tt.perConn) + 1; msgs < minMsgs || msgs > conns*int64(tt.perConn) {
				t.Errorf("%d messages over %d connections of %d", msgs, conns, tt.perConn)
			}
		})
	}
}

// TestSoak is the CI run of the soak: spf-milter under 50 connections for
// 5 s, sampled twice. Every verdict must be right, every sample read, and
// the daemon back to its baseline of sessions and goroutines once the
// connections are closed. It asserts no timing.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the milters")
	}
	o := SoakOptions{
		Conns:    50,
		Duration: 5 * time.Second,
		Interval: 2500 * time.Millisecond,
		Warmup:   100,
		Bin:      testBinaries(t),
		Dir:      t.TempDir(),
	}
	var progress, table bytes.Buffer
	o.Progress = &progress
	r, err := Soak(context.Background(), o)
	if r != nil {
		r.Markdown(&table)
	}
	t.Logf("progress:\n%s\nreport:\n%s", progress.String(), table.String())
	if err != nil {
		t.Fatal(err)
	}
	if n := r.Failures(); n != 0 {
		t.Errorf("%d failures: %s", n, r.Summary())
	}
	if len(r.Samples) != 2 {
		t.Fatalf("%d samples, want 2", len(r.Samples))
	}
	if r.Messages == 0 || r.Connections == 0 || r.WarmupMessages != o.Warmup {
		t.Errorf("%d messages over %d connections, warm-up %d", r.Messages, r.Connections, r.WarmupMessages)
	}
	busy := false
	for _, s := range append([]SoakSample{r.Fresh, r.Baseline, r.After}, r.Samples...) {
		if s.RSS <= 0 || s.Goroutines <= 0 || s.HeapInuse <= 0 {
			t.Errorf("sample %q at %v: RSS %d, %d goroutines, heap in use %d", s.Label, s.At, s.RSS, s.Goroutines, s.HeapInuse)
		}
		busy = busy || s.SessionsOpen > 0
	}
	if !busy {
		t.Errorf("no sample saw a session open")
	}
	if r.Baseline.SessionsOpen != 0 || r.After.SessionsOpen != 0 {
		t.Errorf("sessions open: %d at the baseline, %d after close", r.Baseline.SessionsOpen, r.After.SessionsOpen)
	}
	for _, want := range []string{"| baseline (after warm-up) |", "| after close (+", "- goroutines:", "- RSS:"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("report has no %q", want)
		}
	}
}
