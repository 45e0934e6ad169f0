package decisions

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf-milter/spf-milter/policy"
)

// Defaults of Options.
const (
	// DefaultBuffer is how many records may wait for the writer: a burst
	// of that many messages is absorbed while the disk is slow.
	DefaultBuffer = 4096
	// DefaultErrorInterval spaces the error lines about lost records, so
	// that a full disk does not flood the daemon's log.
	DefaultErrorInterval = time.Minute
	// DefaultRetryInterval spaces the attempts to open the file again
	// after it failed.
	DefaultRetryInterval = 10 * time.Second
	// DefaultStatInterval spaces the checks that the path still names
	// the open file, so that a file deleted or renamed underneath is
	// noticed within seconds at the cost of one stat per interval.
	DefaultStatInterval = 5 * time.Second
)

// The reasons a record is lost, the values of the reason label of
// spf_milter_decision_log_lost_total. The set is closed, so that the
// metric has a bounded number of series.
const (
	// LostQueueFull: the queue was full, the writer being behind.
	LostQueueFull = "queue_full"
	// LostWriteError: writing or flushing the file failed (a full disk).
	LostWriteError = "write_error"
	// LostOpenError: the file could not be opened, or not reopened after
	// a failed write.
	LostOpenError = "open_error"
	// LostClosed: the record came after Close.
	LostClosed = "closed"
)

// lostReasons are the reasons in the order of Writer.lostBy.
var lostReasons = [...]string{LostQueueFull, LostWriteError, LostOpenError, LostClosed}

// Indexes of Writer.lostBy.
const (
	lostQueueFull = iota
	lostWriteError
	lostOpenError
	lostClosed
)

// Options configures a Writer.
type Options struct {
	// Path is the file written; "" writes nothing.
	Path string
	// MaxSize is the size in bytes past which the file is rotated: PATH
	// becomes PATH.1, PATH.1 becomes PATH.2, and so on. 0 never rotates.
	MaxSize int64
	// Keep is how many rotated files are kept; with 0 the file is
	// started anew when it is full.
	Keep int
}

// Settings are what does not change with a reload: the logger and the
// limits of the writer itself. Zero values take the defaults.
type Settings struct {
	// Log receives the writer's own errors; nil means slog.Default().
	// SetLogger changes it.
	Log    *slog.Logger
	Buffer int
	// ErrorInterval is how often one cause of lost records is logged; a
	// new cause is logged at once.
	ErrorInterval time.Duration
	RetryInterval time.Duration
	// StatInterval is how often the path is compared with the open file
	// while records are written.
	StatInterval time.Duration
}

// Writer appends records to the decision log from one goroutine of its
// own. Write never blocks: a record that finds the queue full, or the
// file unwritable, is lost, counted by reason and reported in the log:
// each distinct cause at once, then at most once per ErrorInterval with
// what was lost since, because a session must never wait for the log, let
// alone fail because of it. Rotation and reopening happen between two
// records on that goroutine, so that none is lost or cut in two by them.
type Writer struct {
	settings Settings
	in       chan Record
	ctl      chan control
	done     chan struct{}

	// mu guards closed against a Write racing with Close: a send on the
	// closed channel would panic.
	mu     sync.RWMutex
	closed bool

	lostBy  [len(lostReasons)]atomic.Uint64
	written atomic.Uint64
	log     atomic.Pointer[slog.Logger]

	// The rest belongs to the writer goroutine.
	opts     Options
	f        *os.File
	buf      *bufio.Writer
	size     int64
	regular  bool // only a regular file is rotated, never a device
	pending  int  // records in buf, lost if the flush fails
	line     bytes.Buffer
	enc      *json.Encoder
	lastOpen time.Time
	lastStat time.Time
	st       os.FileInfo // of f, to tell when the path names another file
	lastErr  error
	// lastReason is the index in lostBy of what lastErr stands for.
	lastReason int
	// queueSeen and closedSeen are the losses counted by Write already
	// given to their cause.
	queueSeen, closedSeen uint64
	causes                []*cause
}

// control is an operation run on the writer goroutine, after the records
// queued before it.
type control struct {
	fn   func() error
	done chan error
}

var _ policy.DecisionRecorder = (*Writer)(nil)

// NewWriter starts a Writer on opts. An error opening the file is
// returned, and the Writer, running and usable, keeps trying to open it.
func NewWriter(opts Options, s Settings) (*Writer, error) {
	if s.Log == nil {
		s.Log = slog.Default()
	}
	if s.Buffer <= 0 {
		s.Buffer = DefaultBuffer
	}
	if s.ErrorInterval <= 0 {
		s.ErrorInterval = DefaultErrorInterval
	}
	if s.RetryInterval <= 0 {
		s.RetryInterval = DefaultRetryInterval
	}
	if s.StatInterval <= 0 {
		s.StatInterval = DefaultStatInterval
	}
	w := &Writer{
		settings: s,
		in:       make(chan Record, s.Buffer),
		ctl:      make(chan control),
		done:     make(chan struct{}),
	}
	w.log.Store(s.Log)
	w.enc = json.NewEncoder(&w.line)
	// A sender or an exp= text is easier to read without \u003c escapes;
	// the encoder still escapes every control character.
	w.enc.SetEscapeHTML(false)
	go w.run()
	return w, w.Configure(opts)
}

// RecordDecision implements policy.DecisionRecorder.
func (w *Writer) RecordDecision(d policy.MessageDecision) {
	w.Write(FromDecision(d))
}

// Write queues r for the file; it never blocks.
func (w *Writer) Write(r Record) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		w.lostBy[lostClosed].Add(1)
		return
	}
	select {
	case w.in <- r:
	default:
		w.lostBy[lostQueueFull].Add(1)
	}
}

// SetLogger sends the writer's own errors to l from now on, as a reload
// changes the daemon's log format or level.
func (w *Writer) SetLogger(l *slog.Logger) {
	if l != nil {
		w.log.Store(l)
	}
}

// Lost returns how many records were lost so far: queue full, file
// unwritable, or written after Close.
func (w *Writer) Lost() uint64 {
	var n uint64
	for i := range w.lostBy {
		n += w.lostBy[i].Load()
	}
	return n
}

// LostByReason returns how many records were lost so far by reason, with
// every reason present (LostQueueFull, LostWriteError, LostOpenError,
// LostClosed), for the metrics.
func (w *Writer) LostByReason() map[string]uint64 {
	m := make(map[string]uint64, len(lostReasons))
	for i, r := range lostReasons {
		m[r] = w.lostBy[i].Load()
	}
	return m
}

// Written returns how many records reached the file (or its buffer, for
// the last few: Sync flushes them).
func (w *Writer) Written() uint64 { return w.written.Load() }

// Configure switches to opts after the records queued so far, reopening
// the file even when opts are unchanged, so that a reload also serves
// logrotate's renaming. It returns the error of opening the file, which
// is tried again later. That error is not logged here, the caller
// reporting it (a reload says the log did not open); later failures of
// the same cause are logged at most once per ErrorInterval.
func (w *Writer) Configure(opts Options) error {
	return w.do(func() error {
		w.closeFile()
		w.opts = opts
		return w.open(false)
	})
}

// Reopen closes the file and opens Path again, after the records queued
// so far: after logrotate renamed the file, the next records go to a new
// one. An error opening it is logged, as by the later attempts.
func (w *Writer) Reopen() error {
	return w.do(func() error {
		w.closeFile()
		return w.open(true)
	})
}

// Sync writes out the records queued so far.
func (w *Writer) Sync() error {
	return w.do(func() error {
		if w.f == nil {
			return w.lastErr
		}
		return w.flush()
	})
}

// Close writes out the queued records and closes the file. Records
// written after it are lost.
func (w *Writer) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	close(w.in)
	w.mu.Unlock()
	<-w.done
	return w.lastErr
}

// errClosed is what operations on a closed Writer give.
var errClosed = errors.New("decision log closed")

func (w *Writer) do(fn func() error) error {
	c := control{fn: fn, done: make(chan error, 1)}
	select {
	case w.ctl <- c:
		return <-c.done
	case <-w.done:
		return errClosed
	}
}

func (w *Writer) run() {
	defer close(w.done)
	tick := time.NewTicker(w.settings.ErrorInterval / 4)
	defer tick.Stop()
	for {
		select {
		case r, ok := <-w.in:
			if !ok {
				w.closeFile()
				w.report(true)
				return
			}
			w.write(r)
			if len(w.in) == 0 {
				// Flush when the queue is empty: at once when mail is
				// slow, in batches when it is busy.
				w.flushOrLose()
			}
		case c := <-w.ctl:
			w.drain()
			c.done <- c.fn()
		case <-tick.C:
			w.report(false)
		}
	}
}

// drain writes the records already queued, so that a control operation
// comes after every Write that returned before it.
func (w *Writer) drain() {
	for {
		select {
		case r, ok := <-w.in:
			if !ok {
				return
			}
			w.write(r)
		default:
			w.flushOrLose()
			return
		}
	}
}

// write appends one record, rotating first when it would overflow the
// file.
func (w *Writer) write(r Record) {
	if w.opts.Path == "" {
		return // off: records of sessions from before a reload
	}
	w.line.Reset()
	if err := w.enc.Encode(r); err != nil {
		// Only a value JSON cannot hold fails, and a Record has none.
		w.lose(lostWriteError, fmt.Errorf("decision log: encoding a record: %w", err), 1)
		return
	}
	if w.f != nil {
		w.checkPath()
	}
	if w.f == nil && !w.retryOpen() {
		w.lose(w.lastReason, w.lastErr, 1)
		return
	}
	n := int64(w.line.Len())
	if w.regular && w.opts.MaxSize > 0 && w.size > 0 && w.size+n > w.opts.MaxSize {
		w.rotate()
		if w.f == nil {
			w.lose(w.lastReason, w.lastErr, 1)
			return
		}
	}
	if _, err := w.buf.Write(w.line.Bytes()); err != nil {
		w.fail(err, uint64(w.pending)+1)
		return
	}
	w.size += n
	w.pending++
	w.written.Add(1)
}
