package load

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// flatTolerance is how far the mean of the last third of the steady-state
// samples may be from the middle third's for a curve to count as flat.
const flatTolerance = 0.10

// Trend sums up one figure over the steady-state samples.
type Trend struct {
	What string
	// Start and End are the first and last steady-state values, Max the
	// largest of all samples under load.
	Start, End, Max float64
	// Middle and Last are the means of the middle and last thirds; Change
	// is (Last-Middle)/Middle. Judged is false when there were fewer than
	// three samples to split; then Flat says nothing.
	Middle, Last, Change float64
	Judged, Flat         bool
	// Informational: no verdict is given on flatness, the figure being
	// expected to swing (heap in use follows the collector's sawtooth).
	Informational bool
}

// trend computes the Trend of steady (the values in steady state) and all
// (every value under load, for the maximum).
func trend(what string, steady, all []float64) Trend {
	t := Trend{What: what}
	if len(all) > 0 {
		t.Max = slices.Max(all)
	}
	n := len(steady)
	if n == 0 {
		return t
	}
	t.Start, t.End = steady[0], steady[n-1]
	if n < 3 {
		return t
	}
	t.Middle, t.Last = mean(steady[n/3:2*n/3]), mean(steady[2*n/3:])
	t.Judged = true
	if t.Middle > 0 {
		t.Change = (t.Last - t.Middle) / t.Middle
	}
	t.Flat = t.Middle > 0 && t.Change <= flatTolerance && t.Change >= -flatTolerance
	return t
}

func mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// Steady returns the samples taken once every worker had started.
func (r *SoakReport) Steady() []SoakSample {
	return slices.DeleteFunc(slices.Clone(r.Samples), func(s SoakSample) bool { return s.At < r.RampEnd })
}

// Trends sums up RSS, goroutines and heap in use over the load.
func (r *SoakReport) Trends() []Trend {
	steady := r.Steady()
	pick := func(ss []SoakSample, f func(SoakSample) int64) []float64 {
		out := make([]float64, len(ss))
		for i, s := range ss {
			out[i] = float64(f(s))
		}
		return out
	}
	rss := func(s SoakSample) int64 { return s.RSS }
	gor := func(s SoakSample) int64 { return s.Goroutines }
	heap := func(s SoakSample) int64 { return s.HeapInuse }
	heapTrend := trend("heap in use", pick(steady, heap), pick(r.Samples, heap))
	heapTrend.Informational = true
	return []Trend{
		trend("RSS", pick(steady, rss), pick(r.Samples, rss)),
		trend("goroutines", pick(steady, gor), pick(r.Samples, gor)),
		heapTrend,
	}
}

// Leak says what the daemon still held once every connection was closed
// and it had SettleTimeout to let go, compared with the baseline; "" when
// it was back to it.
func (r *SoakReport) Leak() string {
	var out []string
	if r.After.Err != "" {
		return "" // counted as a failed sample
	}
	if d := r.After.Goroutines - r.Baseline.Goroutines; d > 0 {
		out = append(out, fmt.Sprintf("%d goroutines more than at the baseline", d))
	}
	if r.After.SessionsOpen > 0 {
		out = append(out, fmt.Sprintf("%d sessions still open", r.After.SessionsOpen))
	}
	return strings.Join(out, ", ")
}

// Failures counts what makes the soak fail: failed or wrong messages and
// connections (warm-up included), failed samples, and a leak.
func (r *SoakReport) Failures() int {
	n := int(r.Errors) + r.WarmupErrors + r.SampleErrors
	if r.Leak() != "" {
		n++
	}
	return n
}

// Summary is a one-line account of the soak for logs.
func (r *SoakReport) Summary() string {
	s := fmt.Sprintf("soak: %d messages over %d connections, %d errors (warm-up: %d), %d failed samples",
		r.Messages, r.Connections, r.Errors, r.WarmupErrors, r.SampleErrors)
	if l := r.Leak(); l != "" {
		s += "; after close: " + l
	}
	return s
}

// Markdown writes the curve of the samples and the summary.
func (r *SoakReport) Markdown(w io.Writer) {
	o := r.Options
	fmt.Fprintf(w, "Soak run %s, %s; %s; %d connections kept busy (half of the workers send %d message per connection, half %d; each connection one case of the mix), for %v, sampled every %v; warmed up with %d messages; load average before: %s.\n\n",
		r.Started.Format("2006-01-02 15:04 MST"), machine(), r.Target, o.Conns, soakSingle, soakMulti, o.Duration, o.Interval, r.WarmupMessages, r.LoadAvg)

	fmt.Fprintln(w, "| time | conns open (generator) | sessions open | goroutines | RSS MB | heap in use MB | messages | msgs/s | errors |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|")
	row := func(label string, s SoakSample, load bool) {
		if s.Err != "" {
			fmt.Fprintf(w, "| %s | %s |\n", label, strings.ReplaceAll(s.Err, "|", "/"))
			return
		}
		msgs, rate, errs := "–", "–", "–"
		if load {
			msgs, rate, errs = fmt.Sprint(s.Messages), fmt.Sprintf("%.0f", s.Rate), fmt.Sprint(s.Errors)
		}
		fmt.Fprintf(w, "| %s | %d | %d | %d | %s | %s | %s | %s | %s |\n",
			label, s.ConnsOpen, s.SessionsOpen, s.Goroutines, mb(s.RSS), mb(s.HeapInuse), msgs, rate, errs)
	}
	row("fresh", r.Fresh, false)
	row("baseline (after warm-up)", r.Baseline, false)
	for _, s := range r.Samples {
		row(s.At.Round(100*time.Millisecond).String(), s, true)
	}
	if after := r.After; after.Label != "" {
		fmt.Fprintf(w, "| after close (+%v) | %d | %d | %d | %s | %s | %d | – | %d |\n",
			r.AfterWait.Round(100*time.Millisecond), after.ConnsOpen, after.SessionsOpen, after.Goroutines,
			mb(after.RSS), mb(after.HeapInuse), after.Messages, after.Errors)
	}

	fmt.Fprintln(w)
	fmt.Fprintf(w, "- Load: %d messages over %d connections, %d errors (failed or wrong verdict); warm-up: %d messages, %d errors; failed samples: %d.\n",
		r.Messages, r.Connections, r.Errors, r.WarmupMessages, r.WarmupErrors, r.SampleErrors)
	steady := r.Steady()
	if len(steady) > 0 {
		first, last := steady[0], steady[len(steady)-1]
		for _, t := range r.Trends() {
			unit := func(v float64) string { return fmt.Sprintf("%.0f", v) }
			if t.What != "goroutines" {
				unit = func(v float64) string { return mb(int64(v)) + " MB" }
			}
			line := fmt.Sprintf("- %s: %s at the start of steady state (%v), %s at the end (%v), max %s",
				t.What, unit(t.Start), first.At.Round(100*time.Millisecond), unit(t.End), last.At.Round(100*time.Millisecond), unit(t.Max))
			if t.What == "RSS" && r.PeakRSS > 0 {
				line += fmt.Sprintf(" (%s MB read every second)", mb(r.PeakRSS))
			}
			switch {
			case t.Judged && t.Informational:
				line += fmt.Sprintf("; last third's mean %s vs middle third's %s (%+.1f%%; for information: it follows the collector's sawtooth)", unit(t.Last), unit(t.Middle), 100*t.Change)
			case !t.Judged:
				line += "; flatness not judged (fewer than 3 samples in steady state)"
			case t.Flat:
				line += fmt.Sprintf("; last third's mean %s vs middle third's %s (%+.1f%%): flat (within %.0f%%)", unit(t.Last), unit(t.Middle), 100*t.Change, 100*flatTolerance)
			default:
				line += fmt.Sprintf("; last third's mean %s vs middle third's %s (%+.1f%%): NOT flat (beyond %.0f%%)", unit(t.Last), unit(t.Middle), 100*t.Change, 100*flatTolerance)
			}
			fmt.Fprintln(w, line+".")
		}
	} else {
		fmt.Fprintln(w, "- No sample in steady state.")
	}
	if r.After.Label != "" && r.After.Err == "" {
		verdict := "goroutines and sessions back to the baseline"
		if l := r.Leak(); l != "" {
			verdict = "NOT back to the baseline: " + l
		}
		fmt.Fprintf(w, "- After closing every connection (+%v): %d goroutines vs %d at the baseline, %d sessions open: %s. RSS %s MB vs %s MB at the baseline (the Go runtime hands freed memory back to the system gradually, so RSS is not judged here).\n",
			r.AfterWait.Round(100*time.Millisecond), r.After.Goroutines, r.Baseline.Goroutines, r.After.SessionsOpen,
			verdict, mb(r.After.RSS), mb(r.Baseline.RSS))
	}
	if len(r.ErrorSamples) > 0 {
		fmt.Fprintf(w, "\nThe first errors:\n\n")
		for _, s := range r.ErrorSamples {
			fmt.Fprintf(w, "- %s\n", s)
		}
	}
}
