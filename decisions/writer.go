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
	"syscall"
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

// maxCauses bounds the distinct causes remembered for rate-limiting their
// log lines: a cause is a handful of error texts in practice, but the
// texts come from the system.
const maxCauses = 16

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

// cause is one distinct cause of lost records or of a problem with the
// file, rate-limited in the log on its own.
type cause struct {
	reason string // "" for a problem that loses nothing
	err    string
	lost   uint64 // since its last line
	logged time.Time
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

// retryOpen opens the file again after a failure, at most once per
// RetryInterval, and says so when it opens.
func (w *Writer) retryOpen() bool {
	if time.Since(w.lastOpen) < w.settings.RetryInterval {
		return false
	}
	failed, reason := w.lastErr, w.lastReason
	if w.open(true) != nil {
		return false
	}
	// After a write error the file opens every time (a full disk takes
	// an open, not a write): only the end of an open error is news.
	if failed != nil && reason == lostOpenError {
		w.log.Load().Info("decision log open again", "path", w.opts.Path, "after", failed.Error())
	}
	return true
}

// checkPath reopens the file when its path no longer names it: deleted
// or renamed underneath, the records would go to a file no one reads.
// The path is looked at most once per StatInterval.
func (w *Writer) checkPath() {
	if w.st == nil || time.Since(w.lastStat) < w.settings.StatInterval {
		return
	}
	w.lastStat = time.Now()
	st, err := os.Stat(w.opts.Path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return // unreadable for a moment: the open file is still good
	}
	if err == nil && os.SameFile(st, w.st) {
		return
	}
	how := "replaced"
	if err != nil {
		how = "deleted or renamed"
	}
	w.log.Load().Warn("decision log file "+how+" underneath; reopening", "path", w.opts.Path)
	w.closeFile()
	w.open(true)
}

// open opens the file at Path, logging an error when logErr (a caller
// that returns the error to someone who reports it passes false).
func (w *Writer) open(logErr bool) error {
	w.lastOpen = time.Now()
	if w.opts.Path == "" {
		w.lastErr = nil
		return nil
	}
	f, st, err := openLog(w.opts.Path)
	if err != nil {
		w.lastErr, w.lastReason = fmt.Errorf("decision log: %w", err), lostOpenError
		w.problem(LostOpenError, w.lastErr, "cannot open the decision log; records are lost until it opens", logErr)
		return w.lastErr
	}
	w.f, w.st, w.size, w.regular, w.pending, w.lastErr = f, st, st.Size(), st.Mode().IsRegular(), 0, nil
	w.lastStat = w.lastOpen
	if w.buf == nil {
		w.buf = bufio.NewWriterSize(f, 64<<10)
	} else {
		w.buf.Reset(f)
	}
	return nil
}

// openLog opens path for appending. O_NONBLOCK keeps a FIFO at the path
// from blocking the open until a reader comes; the file is then refused
// unless it is a regular file or a character device (/dev/null), so
// that no write can block on it either.
func openLog(path string) (*os.File, os.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE|syscall.O_NONBLOCK, fileMode)
	if err != nil {
		return nil, nil, err
	}
	st, err := f.Stat()
	if err == nil {
		switch m := st.Mode(); {
		case m.IsRegular():
			err = endLine(f, st.Size())
		case m&fs.ModeCharDevice != 0:
		default:
			err = fmt.Errorf("%s is not a regular file (%s)", path, fileType(m))
		}
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, st, nil
}

// fileType names the type of a file that is not regular, for the error.
func fileType(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a block device"
	default:
		return "mode " + m.String()
	}
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
		w.problem("", err, "rotating the decision log failed; writing on in the same file", true)
	}
	w.open(true)
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
	w.unwrite(uint64(w.pending))
	w.lastErr, w.lastReason = fmt.Errorf("decision log: %w", err), lostWriteError
	if w.f != nil {
		w.f.Close()
		w.f, w.st = nil, nil
	}
	w.pending = 0
	w.lose(lostWriteError, w.lastErr, n)
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
		n := uint64(w.pending)
		w.unwrite(n)
		w.lastErr, w.lastReason = fmt.Errorf("decision log: %w", err), lostWriteError
		w.lose(lostWriteError, w.lastErr, n)
	}
	if err := w.f.Close(); err != nil && w.lastErr == nil {
		w.lastErr, w.lastReason = fmt.Errorf("decision log: %w", err), lostWriteError
	}
	w.f, w.st, w.pending = nil, nil, 0
}

// lose counts n records lost for reason (an index of lostBy) and err,
// and reports them.
func (w *Writer) lose(reason int, err error, n uint64) {
	if n == 0 {
		return
	}
	w.lostBy[reason].Add(n)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	w.cause(lostReasons[reason], msg).lost += n
	w.report(false)
}

// queueFullError is the cause given for records lost to a full queue.
const queueFullError = "queue full: the disk is slower than the mail"

// report logs the records lost since each cause's last line: a cause
// never logged at once, another at most once per ErrorInterval, every
// one when final.
func (w *Writer) report(final bool) {
	// Write counts what it loses on the sessions' goroutines; it is given
	// to its cause here.
	if q := w.lostBy[lostQueueFull].Load(); q != w.queueSeen {
		w.cause(LostQueueFull, queueFullError).lost += q - w.queueSeen
		w.queueSeen = q
	}
	if c := w.lostBy[lostClosed].Load(); c != w.closedSeen {
		w.cause(LostClosed, "written after the decision log was closed").lost += c - w.closedSeen
		w.closedSeen = c
	}
	now := time.Now()
	for _, c := range w.causes {
		if final || c.logged.IsZero() || now.Sub(c.logged) >= w.settings.ErrorInterval {
			w.logLost(c, now)
		}
	}
}

// logLost logs what c lost since its last line, if anything.
func (w *Writer) logLost(c *cause, now time.Time) {
	if c.lost == 0 {
		return
	}
	w.log.Load().Error("decision log records lost", "path", w.opts.Path, "reason", c.reason,
		"lost", c.lost, "lost_total", w.Lost(), "error", c.err)
	c.lost, c.logged = 0, now
}

// problem logs a problem with the file: at once for a new cause, at most
// once per ErrorInterval for one already logged. When !logNow the caller
// reports err itself, and the cause only counts as logged.
func (w *Writer) problem(reason string, err error, msg string, logNow bool) {
	c := w.cause(reason, err.Error())
	if !c.logged.IsZero() && time.Since(c.logged) < w.settings.ErrorInterval {
		return
	}
	if logNow {
		w.log.Load().Error(msg, "path", w.opts.Path, "error", err.Error())
	}
	c.logged = time.Now()
}

// cause finds or adds the cause of reason and err. Causes idle for an
// ErrorInterval are forgotten, since a new line for them would be due
// anyway; should more than maxCauses be live, what they hold is logged
// and they are all forgotten.
func (w *Writer) cause(reason, err string) *cause {
	for _, c := range w.causes {
		if c.reason == reason && c.err == err {
			return c
		}
	}
	live := w.causes[:0]
	for _, c := range w.causes {
		if c.lost > 0 || time.Since(c.logged) < w.settings.ErrorInterval {
			live = append(live, c)
		}
	}
	clear(w.causes[len(live):])
	w.causes = live
	if len(w.causes) >= maxCauses {
		now := time.Now()
		for _, c := range w.causes {
			w.logLost(c, now)
		}
		clear(w.causes)
		w.causes = w.causes[:0]
	}
	c := &cause{reason: reason, err: err}
	w.causes = append(w.causes, c)
	return c
}
