package load

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-milter"
)

// measureIdle starts a fresh process, opens n connections that go as far
// as HELO and stay, and reads the resident memory with them open.
func measureIdle(t target, n int) (IdleRow, error) {
	row := IdleRow{Role: t.role, Target: t.name, Conns: n}
	p, err := t.start()
	if err != nil {
		return row, err
	}
	defer p.Stop()
	time.Sleep(300 * time.Millisecond)
	if row.RSSBefore, err = p.RSS(); err != nil {
		return row, err
	}
	// Protocol 2, where the milter answers CONNECT and HELO: an MTA that
	// skips those replies (Postfix) also holds the commands back until it
	// next waits for one, so the milter would hold less for a session
	// that has only negotiated.
	client := newClient(p.Addr, false)
	sessions := make([]*milter.ClientSession, n)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		next atomic.Int64
	)
	// Opened 32 at a time, as a busy MTA would, not as a flood that
	// overflows the listen queue.
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				s, err := idleSession(client, fmt.Sprintf("198.18.%d.%d", 200+i/250, 1+i%250))
				if err != nil {
					mu.Lock()
					row.Errors++
					row.ErrorSamples = appendSamples(row.ErrorSamples, []string{err.Error()})
					mu.Unlock()
					continue
				}
				sessions[i] = s
			}
		}()
	}
	wg.Wait()
	// Let the process settle, then take the largest of a few readings.
	for range 10 {
		time.Sleep(100 * time.Millisecond)
		if rss, err := p.RSS(); err == nil {
			row.RSSIdle = max(row.RSSIdle, rss)
		}
	}
	for _, s := range sessions {
		if s != nil {
			s.Close()
		}
	}
	return row, nil
}
