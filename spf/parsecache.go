package spf

import (
	"context"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/idna"

	"github.com/spf-milter/spf-milter/internal/lru"
)

// A busy receiver sees the same few hundred records all day; parsing each
// once saves most of the work of a warm check. Parsed records are never
// modified, so one copy serves every check.
//
// The parsed records are owned by whoever keeps the answers they came in:
// a DNSResolver with a cache keeps each one no longer than its TXT answer
// (recordKeeper); with any other resolver the Checker keeps them, for at
// most maxCacheTTL. Either way they are bounded in bytes, so a zone owner
// who publishes a new record for every local part costs a bounded amount.

// recordShare is the part of a DNSResolver's cache bytes its parsed records
// may take on top: 4 MiB of the default 32 MiB, some thousands of records
// of the usual size.
const recordShare = 8

// defaultRecordBytes bounds the records a Checker keeps for a resolver
// that keeps none itself.
const defaultRecordBytes = DefaultCacheBytes / recordShare

// Estimates of the heap a parsed record takes, as recordBytes sums them.
// They were measured with the heap profile of a test that parses and keeps
// many copies of records of every shape (short and long, ip4/ip6 lists,
// includes with macros, thousands of one-letter terms) and rounded up: a
// record costs about its text a few times over, plus a Directive or
// Modifier per term and a part per macro. TestRecordBytesCoverHeap checks
// they do not fall below what the heap shows.
const (
	recordOverhead = 192 // the Record, the entry, its list element and map slot
	recordPerOctet = 4   // the text, kept as the key and in the terms
	recordPerTerm  = 192 // a term's struct and what its value parses into
	recordPerMacro = 192 // a macro and the literal before it
)

// recordBytes estimates the heap that keeping the parse of txt takes,
// whatever Parse makes of it: terms are counted by the spaces that could
// separate them, macros by their '%'.
func recordBytes(txt string) int64 {
	return recordOverhead + recordPerOctet*int64(len(txt)) +
		recordPerTerm*int64(strings.Count(txt, " ")) + recordPerMacro*int64(strings.Count(txt, "%"))
}

// recordCache keeps parsed records by text, each until the time it was
// given, within maxBytes as recordBytes accounts them; the least recently
// used goes first, and one record over maxBytes/lru.EntryShare is not
// kept. It is safe for concurrent use.
type recordCache struct {
	mu      sync.Mutex
	records *lru.Cache[string, parsed]
}

// parsed is what Parse gave for a text: a record, or why it is none.
type parsed struct {
	rec *Record
	err error
}

func newRecordCache(maxBytes int64) *recordCache {
	return &recordCache{records: lru.New[string, parsed](0, maxBytes)}
}

// parse is Parse, remembered until until: the expiry of the answer txt
// came in. A text met again in a fresher answer is kept until that one
// expires.
func (c *recordCache) parse(txt string, until, now time.Time) (*Record, error) {
	c.mu.Lock()
	if p, _, ok := c.records.Get(txt, now); ok {
		c.records.Extend(txt, until)
		c.mu.Unlock()
		return p.rec, p.err
	}
	c.mu.Unlock()

	// Parsed outside the lock: a long record must not hold up the checks
	// that find theirs kept. Two checks may parse the same text at once;
	// the later Add keeps one copy.
	rec, err := Parse(txt)
	if !until.After(now) {
		return rec, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.records.Add(txt, parsed{rec, err}, recordBytes(txt), until)
	return rec, err
}

// fits reports whether the parse of txt is small enough to be kept.
func (c *recordCache) fits(txt string) bool { return c.records.Fits(recordBytes(txt)) }

// size returns the number of records kept and their accounted bytes.
func (c *recordCache) size() (int, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.records.Len(), c.records.Bytes()
}

// holds reports whether the parse of txt is kept, expired or not.
func (c *recordCache) holds(txt string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, _, ok := c.records.Get(txt, time.Time{})
	return ok
}

// recordKeeper is implemented by a resolver that keeps the parsed SPF
// records of its TXT answers beside them (DNSResolver), so that a record
// goes when its answer does.
type recordKeeper interface {
	// lookupTXTUntil is LookupTXT, and tells until when the answer is
	// kept.
	lookupTXTUntil(ctx context.Context, name string) ([]string, time.Time, error)
	// parseRecord is Parse, remembered until until.
	parseRecord(txt string, until time.Time) (*Record, error)
}

// lookupTXTUntil asks r for the TXT records at name, and until when its
// answer is kept: the zero time when r does not say.
func lookupTXTUntil(ctx context.Context, r Resolver, name string) ([]string, time.Time, error) {
	if k, ok := r.(recordKeeper); ok {
		return k.lookupTXTUntil(ctx, name)
	}
	txts, err := r.LookupTXT(ctx, name)
	return txts, time.Time{}, err
}

// parseRecord is Parse, remembered: by the resolver beside the answer
// that ends at until when it keeps records, by the Checker otherwise.
func (c *Checker) parseRecord(txt string, until time.Time) (*Record, error) {
	if k, ok := c.Resolver.(recordKeeper); ok {
		return k.parseRecord(txt, until)
	}
	memo := c.records.Load()
	if memo == nil {
		c.records.CompareAndSwap(nil, newRecordCache(defaultRecordBytes))
		memo = c.records.Load()
	}
	// The resolver says nothing of TTLs: a record is kept while in use,
	// within the byte bound, and a day at most after its last use.
	now := time.Now()
	return memo.parse(txt, now.Add(maxCacheTTL), now)
}

// explanation is the parsed default explanation of a Checker: one text
// per Checker, so one entry.
type explanation struct {
	text string
	ms   *MacroString
}

// defaultExplanation returns text parsed, from the Checker's memo when it
// holds that text.
func (c *Checker) defaultExplanation(text string) (*MacroString, error) {
	if e := c.expl.Load(); e != nil && e.text == text {
		return e.ms, nil
	}
	m, err := ParseMacroString(text, true)
	if err != nil {
		return nil, err
	}
	c.expl.Store(&explanation{text, m})
	return m, nil
}

// idnaToASCII converts an internationalised domain name to its A-label
// form, which is what DNS holds.
func idnaToASCII(d string) (string, error) {
	return idna.Lookup.ToASCII(d)
}
