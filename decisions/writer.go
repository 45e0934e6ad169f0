package decisions

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf-milter/spf-milter/milter"
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
)

// fileMode keeps the log from other users: it names senders and clients.
const fileMode = 0o640

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
	Log           *slog.Logger
	Buffer        int
	ErrorInterval time.Duration
	RetryInterval time.Duration
}

// Writer appends records to the decision log from one goroutine of its
// own. Write never blocks: a record that finds the queue full, or the
// file unwritable, is lost, counted and reported in the log at most once
// per ErrorInterval, because a session must never wait for the log, let
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

	lost    atomic.Uint64
	written atomic.Uint64
	log     atomic.Pointer[slog.Logger]

	// The rest belongs to the writer goroutine.
	opts       Options
	f          *os.File
	buf        *bufio.Writer
	size       int64
	regular    bool // only a regular file is rotated, never a device
	pending    int  // records in buf, lost if the flush fails
	line       bytes.Buffer
	enc        *json.Encoder
	lastOpen   time.Time
	reported   uint64 // lost records already reported
	lastReport time.Time
	lastErr    error
}

// control is an operation run on the writer goroutine, after the records
// queued before it.
type control struct {
	fn   func() error
	done chan error
}

var _ milter.DecisionRecorder = (*Writer)(nil)

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

// RecordDecision implements milter.DecisionRecorder.
func (w *Writer) RecordDecision(d milter.MessageDecision) {
	w.Write(FromDecision(d))
}

// Write queues r for the file; it never blocks.
func (w *Writer) Write(r Record) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		w.lost.Add(1)
		return
	}
	select {
	case w.in <- r:
	default:
		w.lost.Add(1)
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
func (w *Writer) Lost() uint64 { return w.lost.Load() }

// Written returns how many records reached the file (or its buffer, for
// the last few: Sync flushes them).
func (w *Writer) Written() uint64 { return w.written.Load() }

// Configure switches to opts after the records queued so far, reopening
// the file even when opts are unchanged, so that a reload also serves
// logrotate's renaming. It returns the error of opening the file, which
// is tried again later.
func (w *Writer) Configure(opts Options) error {
	return w.do(func() error {
		w.closeFile()
		w.opts = opts
		return w.open()
	})
}

// Reopen closes the file and opens Path again, after the records queued
// so far: after logrotate renamed the file, the next records go to a new
// one.
func (w *Writer) Reopen() error {
	return w.do(func() error {
		w.closeFile()
		return w.open()
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
		w.fail(fmt.Errorf("encoding a record: %w", err), 1)
		return
	}
	if w.f == nil && !w.retryOpen() {
		w.lost.Add(1)
		w.report(false)
		return
	}
	n := int64(w.line.Len())
	if w.regular && w.opts.MaxSize > 0 && w.size > 0 && w.size+n > w.opts.MaxSize {
		w.rotate()
		if w.f == nil {
			w.lost.Add(1)
			w.report(false)
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

// retryOpen opens the file again after a failure, at most once per
// RetryInterval.
func (w *Writer) retryOpen() bool {
	if time.Since(w.lastOpen) < w.settings.RetryInterval {
		return false
	}
	return w.open() == nil
}

func (w *Writer) open() error {
	w.lastOpen = time.Now()
	if w.opts.Path == "" {
		w.lastErr = nil
		return nil
	}
	f, err := os.OpenFile(w.opts.Path, os.O_RDWR|os.O_APPEND|os.O_CREATE, fileMode)
	if err != nil {
		w.lastErr = fmt.Errorf("decision log: %w", err)
		w.errorLine("cannot open the decision log; records are lost until it opens", err)
		return w.lastErr
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() && st.Mode()&fs.ModeCharDevice == 0 {
		// A directory, a FIFO: nothing a log can go to without blocking
		// or failing. A character device (/dev/null) is taken.
		err = fmt.Errorf("%s is not a regular file", w.opts.Path)
	}
	if err == nil && st.Mode().IsRegular() {
		err = endLine(f, st.Size())
	}
	if err != nil {
		f.Close()
		w.lastErr = fmt.Errorf("decision log: %w", err)
		w.errorLine("cannot open the decision log; records are lost until it opens", err)
		return w.lastErr
	}
	w.f, w.size, w.regular, w.pending, w.lastErr = f, st.Size(), st.Mode().IsRegular(), 0, nil
	if w.buf == nil {
		w.buf = bufio.NewWriterSize(f, 64<<10)
	} else {
		w.buf.Reset(f)
	}
	return nil
}

// endLine ends a line cut short by a failed write (a full disk), so that
// only that line is lost and the next record starts a line of its own.
func endLine(f *os.File, size int64) error {
	if size == 0 {
		return nil
	}
	var last [1]byte
	if _, err := f.ReadAt(last[:], size-1); err != nil {
		return err
	}
	if last[0] == '\n' {
		return nil
	}
	_, err := f.Write([]byte{'\n'})
	return err
}

// rotate shifts PATH.N-1 to PATH.N ... PATH to PATH.1, keeping Keep
// files and removing any beyond them, and opens a new PATH. When the renaming fails the current file
// is kept and grows, which loses nothing.
func (w *Writer) rotate() {
	if err := w.flush(); err != nil {
		w.fail(err, uint64(w.pending))
		return
	}
	w.closeFile()
	p, keep := w.opts.Path, w.opts.Keep
	var err error
	if keep == 0 {
		err = os.Remove(p)
	} else {
		for i := keep - 1; i >= 1; i-- {
			if e := os.Rename(p+"."+strconv.Itoa(i), p+"."+strconv.Itoa(i+1)); e != nil && !errors.Is(e, fs.ErrNotExist) {
				err = e
			}
		}
		if e := os.Rename(p, p+".1"); e != nil {
			err = e
		}
	}
	// Files past Keep are left by a larger Keep before a reload: they go
	// now, as they would have at their turn. Rotated files are numbered
	// without gaps, so the first one missing ends them.
	for i := keep + 1; os.Remove(p+"."+strconv.Itoa(i)) == nil; i++ {
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		w.errorLine("rotating the decision log failed; writing on in the same file", err)
	}
	w.open()
}

func (w *Writer) flush() error {
	if w.buf == nil || w.f == nil {
		return nil
	}
	if err := w.buf.Flush(); err != nil {
		return err
	}
	w.pending = 0
	return nil
}

// flushOrLose flushes, and on failure gives up the file and counts what
// was in the buffer as lost.
func (w *Writer) flushOrLose() {
	if err := w.flush(); err != nil {
		w.fail(err, uint64(w.pending))
	}
}

// fail gives up the file after a write error, counting n records lost; it
// is opened again on a later record.
func (w *Writer) fail(err error, n uint64) {
	w.lost.Add(n)
	w.unwrite(uint64(w.pending))
	w.lastErr = fmt.Errorf("decision log: %w", err)
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
	w.pending = 0
	w.report(false)
}

// unwrite takes back from the written count the n buffered records that
// a failed flush lost.
func (w *Writer) unwrite(n uint64) {
	if n > 0 {
		w.written.Add(^(n - 1))
	}
}

func (w *Writer) closeFile() {
	if w.f == nil {
		return
	}
	if err := w.flush(); err != nil {
		w.lost.Add(uint64(w.pending))
		w.unwrite(uint64(w.pending))
		w.lastErr = fmt.Errorf("decision log: %w", err)
	}
	if err := w.f.Close(); err != nil && w.lastErr == nil {
		w.lastErr = fmt.Errorf("decision log: %w", err)
	}
	w.f, w.pending = nil, 0
}

// report logs the records lost since the last report, at most once per
// ErrorInterval unless final.
func (w *Writer) report(final bool) {
	lost := w.lost.Load()
	if lost == w.reported {
		return
	}
	if !final && !w.lastReport.IsZero() && time.Since(w.lastReport) < w.settings.ErrorInterval {
		return
	}
	attrs := []any{"path", w.opts.Path, "lost", lost - w.reported, "lost_total", lost}
	if w.lastErr != nil {
		attrs = append(attrs, "error", w.lastErr.Error())
	} else {
		attrs = append(attrs, "error", "queue full: the disk is slower than the mail")
	}
	w.log.Load().Error("decision log records lost", attrs...)
	w.reported, w.lastReport = lost, time.Now()
}

// errorLine logs a problem with the file, at most once per
// ErrorInterval.
func (w *Writer) errorLine(msg string, err error) {
	if !w.lastReport.IsZero() && time.Since(w.lastReport) < w.settings.ErrorInterval {
		return
	}
	w.log.Load().Error(msg, "path", w.opts.Path, "error", err.Error())
	w.lastReport = time.Now()
}
