package load

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// idleRSSLimit is the bound on resident memory with 1000 idle
// connections.
const idleRSSLimit = 64 << 20

// Markdown writes the report as Markdown, ready for a dated run in
// docs/benchmarks/: how it was run, the table of rows, the idle-memory
// table, the ratios the targets are stated in, and any error seen.
func (r *Report) Markdown(w io.Writer) {
	o := r.Options
	length := fmt.Sprintf("%v per row", o.Duration)
	if o.Messages > 0 {
		length = fmt.Sprintf("%d messages per row", o.Messages)
	}
	if o.Rounds > 1 {
		length += fmt.Sprintf(", taken in %d rounds that visit every target in turn", o.Rounds)
	}
	fmt.Fprintf(w, "Run %s, %s; %s; each target warmed up with %d messages; load average before: %s.\n\n",
		r.Started.Format("2006-01-02 15:04 MST"), machine(), length, o.Warmup, r.LoadAvg)

	fmt.Fprintln(w, "| target | DNS answers | conns | messages | msgs/s | msgs/s, rounds' range | p50 ms | p99 ms | milter CPU µs/msg | generator CPU µs/msg | DNS queries/msg | errors | peak RSS MB |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, row := range r.Rows {
		if row.Skipped != "" {
			fmt.Fprintf(w, "| %s | %s | %d | %s | | | | | | | | | |\n", row.Target, row.DNS, row.Conns, row.Skipped)
			continue
		}
		spread := "–"
		if len(row.RoundRates) > 1 {
			spread = fmt.Sprintf("%.0f–%.0f", slices.Min(row.RoundRates), slices.Max(row.RoundRates))
		}
		fmt.Fprintf(w, "| %s | %s | %d | %d | %.0f | %s | %s | %s | %s | %s | %s | %d | %s |\n",
			row.Target, row.DNS, row.Conns, row.Messages, row.PerSecond, spread, ms(row.P50), ms(row.P99),
			cpuPerMessage(row.MilterCPU, row.Messages), cpuPerMessage(row.GeneratorCPU, row.Messages),
			perMessage(row.DNSQueries, row.Messages), row.Errors, mb(row.PeakRSS))
	}
	if len(r.Idle) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| target | idle connections | RSS fresh, MB | RSS with them open, MB | errors |")
		fmt.Fprintln(w, "|---|--:|--:|--:|--:|")
		for _, row := range r.Idle {
			if row.Skipped != "" {
				fmt.Fprintf(w, "| %s | %d | %s | | |\n", row.Target, row.Conns, row.Skipped)
				continue
			}
			fmt.Fprintf(w, "| %s | %d | %s | %s | %d |\n", row.Target, row.Conns, mb(row.RSSBefore), mb(row.RSSIdle), row.Errors)
		}
	}
	if lines := r.Ratios(); len(lines) > 0 {
		fmt.Fprintln(w)
		for _, l := range lines {
			fmt.Fprintf(w, "- %s\n", l)
		}
	}
	var samples []string
	samples = appendSamples(samples, r.WarmupSample)
	for _, row := range r.Rows {
		samples = appendSamples(samples, row.ErrorSamples)
	}
	for _, row := range r.Idle {
		samples = appendSamples(samples, row.ErrorSamples)
	}
	if n := r.Errors(); n > 0 {
		fmt.Fprintf(w, "\n%d errors (wrong verdicts or failed sessions, warm-ups included); the first ones:\n\n", n)
		for _, s := range samples {
			fmt.Fprintf(w, "- %s\n", s)
		}
	}
}

// row finds the measured row of role at conns.
func (r *Report) row(role string, conns int) *Row {
	for i := range r.Rows {
		if row := &r.Rows[i]; row.Role == role && row.Conns == conns && row.Skipped == "" && row.Messages > 0 {
			return row
		}
	}
	return nil
}

// Ratios states the targets against the figures, for the
// concurrency levels closest to the ones the targets name (32 and 8).
func (r *Report) Ratios() []string {
	hi, lo := closest(r.Options.Conns, 32), closest(r.Options.Conns, 8)
	var out []string
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "not met"
	}
	spf := r.row(RoleSPF, hi)
	for _, x := range []struct {
		role, base, what string
	}{
		{RoleSPF, RoleNull, "target ≥ 0.90"},
		{RoleSPFUnbuffered, RoleNull, "both with plain go-milter I/O and GC"},
		{RoleSPF, RoleNullBuffered, "both with spf-milter's I/O, replies skipped and GC"},
	} {
		a, b := r.row(x.role, hi), r.row(x.base, hi)
		if a == nil || b == nil {
			continue
		}
		ratio := a.PerSecond / b.PerSecond
		line := fmt.Sprintf("%s / %s, msgs/s at %d conns: %.2f (%s)", a.Target, b.Target, hi, ratio, x.what)
		if x.role == RoleSPF && x.base == RoleNull {
			line += ": " + verdict(ratio >= 0.90)
		}
		out = append(out, line)
	}
	for _, x := range []struct{ role, base string }{{RoleSPF, RoleNull}, {RoleSPFUnbuffered, RoleNull}, {RoleNullBuffered, RoleNull}} {
		a, b := r.row(x.role, hi), r.row(x.base, hi)
		if a == nil || b == nil || b.MilterCPU <= 0 {
			continue
		}
		pa, pb := float64(a.MilterCPU)/float64(a.Messages), float64(b.MilterCPU)/float64(b.Messages)
		out = append(out, fmt.Sprintf("%s / %s, milter CPU per message at %d conns: %.2f (less sensitive than msgs/s to the machine's other load)", a.Target, b.Target, hi, pa/pb))
	}
	if py := r.row(RolePySPF, hi); spf != nil && py != nil {
		ratio := spf.PerSecond / py.PerSecond
		out = append(out, fmt.Sprintf("%s / pyspf-milter, msgs/s at %d conns: %.1f× (target ≥ 8×): %s", spf.Target, hi, ratio, verdict(ratio >= 8)))
	}
	if a, b := r.row(RoleSPF, lo), r.row(RoleNull, lo); a != nil && b != nil && b.P99 > 0 {
		ratio := float64(a.P99) / float64(b.P99)
		out = append(out, fmt.Sprintf("%s p99 / do-nothing p99 at %d conns: %.2f (target ≤ 1.2): %s", a.Target, lo, ratio, verdict(ratio <= 1.2)))
	}
	if a, b := r.row(RoleSPFCold, hi), r.row(RolePySPFCold, hi); a != nil && b != nil {
		out = append(out, fmt.Sprintf("cold, %s: spf-milter / pyspf-milter, msgs/s at %d conns: %.1f×", a.DNS, hi, a.PerSecond/b.PerSecond))
	}
	for _, row := range r.Idle {
		if row.Skipped != "" || row.Role != RoleSPF && row.Role != RoleSPFUnbuffered {
			continue
		}
		v := verdict(row.RSSIdle < idleRSSLimit)
		if row.Conns < 1000 {
			v = "not judged, the target names 1000 connections"
		}
		out = append(out, fmt.Sprintf("%s with %d idle connections: %s MB resident (target < %d MB with 1000): %s",
			row.Target, row.Conns, mb(row.RSSIdle), idleRSSLimit>>20, v))
	}
	return out
}

// closest returns the element of xs nearest to want.
func closest(xs []int, want int) int {
	if len(xs) == 0 {
		return want
	}
	return slices.MinFunc(xs, func(a, b int) int { return abs(a-want) - abs(b-want) })
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// Summary is a one-line account of the run for logs.
func (r *Report) Summary() string {
	var b strings.Builder
	n := 0
	for _, row := range r.Rows {
		if row.Skipped == "" {
			n += row.Messages
		}
	}
	fmt.Fprintf(&b, "%d messages, %d errors, in %v", n, r.Errors(), time.Since(r.Started).Round(time.Second))
	return b.String()
}
