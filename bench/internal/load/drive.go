package load

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// drive sends messages to p over conns concurrent connections for dur, or
// until count messages have been sent when count is positive, and
// verifies every answer.
func drive(ctx context.Context, p *Process, t target, conns int, dur time.Duration, count int) Row {
	row := Row{Role: t.role, Target: t.name, DNS: t.dns, Conns: conns}
	client := newClient(p.Addr, t.v6)
	var (
		issued  atomic.Int64
		mu      sync.Mutex
		wg      sync.WaitGroup
		stopRSS = make(chan struct{})
		rssDone = make(chan struct{})
	)
	go func() {
		defer close(rssDone)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			if rss, err := p.RSS(); err == nil {
				row.PeakRSS = max(row.PeakRSS, rss)
			}
			select {
			case <-stopRSS:
				return
			case <-tick.C:
			}
		}
	}()

	cpu0, cpuErr := p.CPU()
	self0 := selfCPU()
	start := time.Now()
	deadline := start.Add(dur)
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			var errs []string
			nerr, counted := 0, 0
			for ctx.Err() == nil {
				n := int(issued.Add(1)) - 1
				if count > 0 && n >= count || count <= 0 && time.Now().After(deadline) {
					break
				}
				c := &Cases[n%len(Cases)]
				ip := c.IPs[(n/len(Cases))%len(c.IPs)]
				t0 := time.Now()
				m, err := session(client, c, ip, n)
				end := time.Now()
				mine = append(mine, end.Sub(t0))
				if count > 0 || !end.After(deadline) {
					counted++
				}
				if err == nil {
					err = t.kind.Verify(m)
				}
				if err != nil {
					nerr++
					errs = appendSamples(errs, []string{c.Name + ": " + err.Error()})
				}
			}
			mu.Lock()
			row.latencies = append(row.latencies, mine...)
			row.counted += counted
			row.Errors += nerr
			row.ErrorSamples = appendSamples(row.ErrorSamples, errs)
			mu.Unlock()
		}()
	}
	wg.Wait()
	row.Elapsed = time.Since(start)
	if count <= 0 {
		// The rate is over the window: a session that stalls at its end
		// must not leave the others idle on the clock.
		row.Elapsed = dur
	}
	row.GeneratorCPU = selfCPU() - self0
	if cpu1, err := p.CPU(); err == nil && cpuErr == nil {
		row.MilterCPU = cpu1 - cpu0
	}
	close(stopRSS)
	<-rssDone
	row.Messages = len(row.latencies)
	lats := row.latencies
	row.finish()
	row.latencies = lats
	return row
}

// percentile returns the q-quantile of sorted by the nearest-rank method.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}
