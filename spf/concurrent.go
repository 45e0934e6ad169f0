package spf

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Lookups in parallel, where RFC 7208 leaves room for them.
//
// The evaluation itself stays sequential: one goroutine evaluates the terms,
// counts the lookups and writes the trace in the order RFC 7208 §4.6 gives.
// Only DNS questions go out early or side by side, and their answers are
// taken in that same order, so a check gives the outcome a sequential check
// gives (Checker.Sequential turns all of this off). Every goroutine started
// here ends before the check returns.

// maxPrefetches bounds the records one check fetches ahead. A match before a
// target leaves it unvisited and its query spent for nothing; the bound keeps
// that waste within what the lookup limit allows a check anyway.
const maxPrefetches = 10

// txtFuture is the answer of a TXT lookup started ahead of need.
//
// Whoever claims it first makes the lookup: its goroutine, or the
// evaluation when it needs the answer before that goroutine has even run.
// With answers that come at once (from a cache) that is the usual case, and
// the evaluation then goes on without waiting for a goroutine to be
// scheduled.
type txtFuture struct {
	name    string
	claimed atomic.Bool
	ready   sync.WaitGroup // done once txts, until and err are set
	txts    []string
	until   time.Time // as lookupTXTUntil gives it
	err     error
}

// fetch makes the lookup under ctx unless it has been claimed already,
// and charges its answer to h: waiting for room when wait is set, else
// dropping the answer if there is none at once (errNoRoomAhead).
func (f *txtFuture) fetch(ctx context.Context, r Resolver, h *heldRecords, wait bool) {
	if f.claimed.Swap(true) {
		return
	}
	f.txts, f.until, f.err = lookupTXTUntil(ctx, r, f.name)
	if f.err == nil {
		if f.err = h.hold(ctx, f.name, f.txts, f.until, wait); f.err != nil {
			f.txts = nil
		}
	}
	f.ready.Done()
}

// prefetcher holds the TXT lookups a check started ahead. Only the
// evaluation's goroutine starts or looks up futures; a lookup goroutine
// writes only its own future, and ready publishes what it wrote. The
// futures sit in one array, allocated on the first prefetch: a dozen small
// allocations less per check.
type prefetcher struct {
	running sync.WaitGroup // the lookup goroutines
	n       int            // futures in use
	futures *[maxPrefetches]txtFuture
}

// future returns the lookup started ahead for name, or nil.
func (p *prefetcher) future(name string) *txtFuture {
	for i := range p.n {
		if p.futures[i].name == name {
			return &p.futures[i]
		}
	}
	return nil
}

// prefetchTargets starts fetching the records of the include: and redirect=
// targets that evaluating rec may reach, so that the answers are there, or
// on their way, when the evaluation gets to them. The evaluation calls it
// when it first has to wait for DNS in rec: a record whose ip4 and ip6
// terms decide first (the common case for a large provider's own servers)
// sends nothing ahead.
//
// A target is fetched only when a sequential check could reach it within
// the limit of RFC 7208 §4.6.4: the lookups counted so far plus the
// DNS-querying terms of rec up to and including it stay within maxDNSTerms.
// Nothing after an "all" is ever reached, not even redirect= (§6.1).
func (e *evaluation) prefetchTargets(rec *Record, domain string) {
	if e.c.Sequential {
		return
	}
	n := e.lookups
	for _, d := range rec.Directives {
		if d.Mechanism == MechanismAll {
			return
		}
		if !d.Mechanism.queriesDNS() {
			continue
		}
		if n++; n > maxDNSTerms {
			return
		}
		if d.Mechanism == MechanismInclude {
			e.prefetch(d.Domain, domain)
		}
	}
	if rec.Redirect != nil && n+1 <= maxDNSTerms {
		e.prefetch(rec.Redirect.Value, domain)
	}
}

// txtAtHand is implemented by a resolver that can tell, without asking
// anyone, that it already holds the TXT answer for name (DNSResolver with
// its cache). Fetching such a name ahead would only cost a goroutine.
type txtAtHand interface {
	holdsTXT(name string) bool
}

// prefetch starts the TXT lookup of the target spec names, unless that
// target is already being fetched, the check has fetched as many ahead as
// it may, or the name cannot be known without DNS: %{p} stands for names
// found by PTR and address lookups that the evaluation must make in its own
// order, and would have to wait for here.
func (e *evaluation) prefetch(spec *MacroString, domain string) {
	if expandsPTR(spec) || e.pf.n >= maxPrefetches {
		return
	}
	name, ok := e.target(spec, domain)
	if !ok || e.pf.future(name) != nil {
		return // the evaluation sends no query for it, or it is on its way
	}
	if r, ok := e.c.Resolver.(txtAtHand); ok && r.holdsTXT(name) {
		return
	}
	if e.pf.futures == nil {
		e.pf.futures = new([maxPrefetches]txtFuture)
	}
	f := &e.pf.futures[e.pf.n]
	e.pf.n++
	f.name = name
	f.ready.Add(1)
	e.pf.running.Add(1)
	go func() {
		defer e.pf.running.Done()
		// Under the check's context, which ends with the check. An
		// answer that may never be needed does not wait for room.
		f.fetch(e.ctx, e.c.Resolver, &e.held, false)
	}()
}

// lookupTXT returns the TXT records at name: the answer of a lookup started
// ahead when there is one, which is the answer the same question asked now
// would get, or else the answer to a question asked now. A name fetched
// ahead is asked once per check, even if it is visited again, unless
// its answer came while the record budget had no room for it. until is
// as lookupTXTUntil gives it. The texts are charged to the record budget
// until the check ends.
func (e *evaluation) lookupTXT(name string) (_ []string, until time.Time, _ error) {
	if f := e.pf.future(name); f != nil {
		f.fetch(e.ctx, e.c.Resolver, &e.held, true)
		f.ready.Wait()
		if !errors.Is(f.err, errNoRoomAhead) {
			return f.txts, f.until, f.err
		}
	}
	txts, until, err := lookupTXTUntil(e.ctx, e.c.Resolver, name)
	if err == nil {
		err = e.held.hold(e.ctx, name, txts, until, true)
	}
	if err != nil {
		return nil, time.Time{}, err
	}
	return txts, until, nil
}

// expandsPTR reports whether m holds a %{p} macro.
func expandsPTR(m *MacroString) bool {
	if m == nil {
		return false
	}
	for _, p := range m.parts {
		if p.kind == partMacro && p.letter == 'p' {
			return true
		}
	}
	return false
}

// addrLookups are the address lookups of a list of names: the hosts of an
// mx term, or the PTR names to validate. RFC 7208 gives an order in which
// their answers decide (§5.4, §5.5), not an order in which to ask: they all
// go out at once, and get hands out the answers in list order. Only
// whether each answer matched is kept: a zone owner's ten answers of
// thousands of addresses each would otherwise be held until the first
// host's answer comes, which may be the last.
type addrLookups struct {
	e       *evaluation
	names   []string
	match   func([]netip.Addr) bool
	results []addrResult
	ready   chan int // index of each result once it is set
	have    []bool   // results received from ready
	pending int      // lookups whose index has not come from ready yet
	cancel  context.CancelFunc
}

type addrResult struct {
	match bool
	err   error
}

// startAddrLookups starts the lookups of names in the client's address
// family, each answer to be tested with match. A sequential check, or a
// single name, gains nothing from goroutines: then get asks each question
// when its answer is wanted, exactly as the evaluation did before any of
// this.
func (e *evaluation) startAddrLookups(names []string, match func([]netip.Addr) bool) *addrLookups {
	l := &addrLookups{e: e, names: names, match: match}
	if e.c.Sequential || len(names) < 2 {
		return l
	}
	ctx, cancel := context.WithCancel(e.ctx)
	l.cancel = cancel
	l.results = make([]addrResult, len(names))
	l.have = make([]bool, len(names))
	// Buffered for every result, so that no lookup waits for a reader
	// that has stopped reading.
	l.ready = make(chan int, len(names))
	l.pending = len(names)
	for i, name := range names {
		go func() {
			addrs, err := e.addrsIn(ctx, name)
			l.results[i] = addrResult{err == nil && match(addrs), err}
			l.ready <- i
		}()
	}
	return l
}

// get returns whether the answer for names[i] matched, or why there is
// none, waiting for it if need be.
func (l *addrLookups) get(i int) (bool, error) {
	if l.ready == nil {
		addrs, err := l.e.addrs(l.names[i])
		return err == nil && l.match(addrs), err
	}
	for !l.have[i] {
		l.have[<-l.ready] = true
		l.pending--
	}
	return l.results[i].match, l.results[i].err
}

// stop cancels the lookups whose answers are no longer wanted, once the
// evaluation knows its answer, and waits until every lookup has ended.
func (l *addrLookups) stop() {
	if l.ready == nil {
		return
	}
	l.cancel()
	for ; l.pending > 0; l.pending-- {
		<-l.ready
	}
}
