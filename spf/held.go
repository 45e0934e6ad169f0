package spf

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"
)

// The SPF records a check reads are held for the whole check: the texts
// of its TXT answers (and of those fetched ahead), the parsed records of
// its include chain, and the steps their terms add to the trace. A zone
// owner may publish records of up to 64 KiB of one-letter terms, each of
// which takes megabytes once parsed, so a check charges what it holds to
// a budget of its resolver, the record budget, and gives it all back when
// it ends. A parsed record the resolver keeps in its cache is shared by
// every check and already bounded there: only its text and steps are
// charged.
//
// The record budget is a sibling of the in-flight budget, not a share of
// it. Its bytes are held for a whole check, the in-flight budget's for
// one exchange; sharing one count, checks holding their records could
// spend it all and then wait for a share to ask their next question,
// which only the end of another check gives back. Separate, a lookup
// never waits for the record budget while it holds in-flight bytes (the
// answer is charged after the resolver has given its share back), and no
// check waits on the one while holding the other against it.

// DefaultHeldRecordBytes is the record budget of a DNSResolver unless
// DNSOptions.HeldRecordBytes says otherwise.
//
// It always admits the largest charge one answer can make, so that no
// record is refused for its size alone: a TXT answer is one DNS message,
// at most 64 KiB, and heldTXTBytes charges at most maxHeldAnswer for the
// texts it can hold (some 19 MB, for a record of 64 KiB written as " %"
// over and over, which recordBytes counts as a term and a macro every two
// octets). TestHeldRecordBudgetAdmitsAnyAnswer checks it. With ordinary
// records (a few hundred octets, parsed once and shared through the
// cache) the budget is never near spent; it is there for zone owners who
// make each record cost megabytes.
const DefaultHeldRecordBytes = 24 << 20

// Estimates of what a check holds for a record beside the parsed form,
// checked against the heap by TestHeldRecordBytesCoverHeap.
const (
	// heldTextOverhead covers a text's string header in its slice and
	// the rounding of its bytes up to an allocation class.
	heldTextOverhead = 32
	// heldStepBytes covers the step of the trace that evaluating one
	// term adds, in a slice grown by doubling.
	heldStepBytes = 2 * int64(unsafe.Sizeof(Step{}))
	// maxHeldAnswer bounds heldTXTBytes for any answer: 64 KiB of text
	// (less, in truth: the message also holds its header, question and
	// the length octets of its strings), charged its octets, a term, a
	// step and a macro every two octets, and the overhead of one record
	// and of a text for every string the message can hold (five octets
	// of header and one of length at the least).
	maxHeldAnswer = 1<<16*(recordPerOctet+1+(recordPerTerm+heldStepBytes+recordPerMacro)/2) +
		1<<16/6*(heldTextOverhead+recordOverhead)
)

// Classes of charges. A charge over largeCharge (an answer of some tens
// of KiB of short terms: no real record comes near) is large, and large
// charges may take at most all but smallReserve of the budget: a zone
// owner whose checks hold large records for as long as they can never
// keeps checks of ordinary records from theirs. Checks that each hold a
// part of the large class and wait for more can keep one another waiting
// until their deadlines, but only one another.
const (
	largeCharge  = 1 << 20
	smallReserve = 8 // 1/8 of the budget, 3 MiB of the default
)

// newHeldBudget returns a record budget of bytes.
func newHeldBudget(bytes int64) *inflightBudget {
	b := newInflightBudget(bytes)
	b.tcpMax = max(bytes-bytes/smallReserve, 1)
	return b
}

// recordHolder is implemented by a resolver that bounds the records checks
// hold with a record budget (DNSResolver).
type recordHolder interface {
	// recordBudget returns the budget checks charge.
	recordBudget() *inflightBudget
	// keepsRecord reports whether the resolver keeps the parse of txt,
	// from an answer kept until until, for every check.
	keepsRecord(txt string, until time.Time) bool
}

// heldRecords is what one check holds of its resolver's record budget.
// The zero value, for a resolver without a budget, charges nothing.
type heldRecords struct {
	r recordHolder
	// small and large are what the check holds in each class; the
	// evaluation and the goroutines that fetch records ahead of it both
	// add to them.
	small, large atomic.Int64
}

// errNoRoomAhead is what a TXT lookup made ahead of need gets when the
// record budget has no room for its answer at once: it is dropped, and
// the evaluation asks again when it needs it, waiting for room then.
var errNoRoomAhead = errors.New("no room in the record budget to hold an answer fetched ahead")

// holdRecords returns what a check of c charges its records to.
func (c *Checker) holdRecords() heldRecords {
	r, _ := c.Resolver.(recordHolder)
	return heldRecords{r: r}
}

// hold charges the texts of the TXT answer at name, kept until until,
// waiting for room within ctx when wait is set. A check that cannot get
// room before its deadline fails as a lookup that got no answer would:
// temperror. So does, at once, a check whose records could not be held
// even with the budget all its own: waiting would only keep others from
// it until its deadline.
func (h *heldRecords) hold(ctx context.Context, name string, txts []string, until time.Time, wait bool) error {
	if h.r == nil {
		return nil
	}
	b := h.r.recordBudget()
	n := heldTXTBytes(txts, func(txt string) bool { return h.r.keepsRecord(txt, until) })
	large, limit := n > largeCharge, b.max
	if large {
		limit = b.tcpMax
	}
	// What reserve takes: a charge over its class's part takes the part.
	c := min(n, limit)
	if large && c+h.large.Load() > limit || c+h.small.Load()+h.large.Load() > b.max {
		return &DNSError{Name: name, Type: "TXT", Err: fmt.Errorf(
			"the check's SPF records would take more than the %d bytes it may hold", b.max)}
	}
	if !wait {
		// Reserving under a context already done takes the bytes only
		// if they are free now.
		ctx = doneContext
	}
	res, err := b.reserve(ctx, n, large)
	if err != nil {
		if !wait {
			return errNoRoomAhead
		}
		return &DNSError{Name: name, Type: "TXT", Err: fmt.Errorf("no room to hold its records: %w", err)}
	}
	if large {
		h.large.Add(res.bytes)
	} else {
		h.small.Add(res.bytes)
	}
	return nil
}

// release gives back all the check holds. It is called once the check
// has ended and nothing fetched ahead is running.
func (h *heldRecords) release() {
	if h.r == nil {
		return
	}
	b := h.r.recordBudget()
	b.release(&reservation{bytes: h.small.Swap(0)})
	b.release(&reservation{bytes: h.large.Swap(0), tcp: true})
}

// doneContext is a context that is always done.
var doneContext = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// heldTXTBytes estimates the heap a check holds for the texts of a TXT
// answer: the texts, and for each SPF record among them whose parse the
// resolver does not keep (kept says which), its parse; for every SPF
// record, the trace steps its terms may add. Everything is charged before
// anything is parsed: Parse itself allocates most of it.
func heldTXTBytes(txts []string, kept func(string) bool) int64 {
	var n int64
	for _, t := range txts {
		n += heldTextOverhead + int64(len(t))
		if !IsSPFRecord(t) {
			continue
		}
		n += heldStepBytes * int64(fields(t))
		if !kept(t) {
			n += recordBytes(t)
		}
	}
	return n
}

// fields counts the space-separated terms of txt, as many as it can make
// trace steps.
func fields(txt string) int {
	n, in := 0, false
	for i := 0; i < len(txt); i++ {
		if txt[i] == ' ' {
			in = false
		} else if !in {
			in = true
			n++
		}
	}
	return n
}

// keepsRecord implements recordHolder: the record cache keeps the parse of
// txt when its answer is kept and the parse is not too large for it, as
// recordCache.parse decides.
func (r *DNSResolver) keepsRecord(txt string, until time.Time) bool {
	return r.records != nil && until.After(r.now()) && r.records.fits(txt)
}

// recordBudget implements recordHolder.
func (r *DNSResolver) recordBudget() *inflightBudget { return r.heldBudget }

// HeldRecordBytes returns the bytes of the record budget that checks hold
// now; 0 when none is running.
func (r *DNSResolver) HeldRecordBytes() int64 {
	used, _ := r.heldBudget.usage()
	return used
}

// HeldRecordPeak returns the most bytes of the record budget held at once
// since r was made: never more than the budget.
func (r *DNSResolver) HeldRecordPeak() int64 {
	_, peak := r.heldBudget.usage()
	return peak
}

var _ recordHolder = (*DNSResolver)(nil)
