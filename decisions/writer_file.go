package decisions

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/spf-milter/spf-milter/config"
)

// fileMode keeps the log from other users: it names senders and clients.
const fileMode = 0o640

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
			err = fmt.Errorf("%s is not a regular file: it is %s", path, config.FileKind(m))
		}
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, st, nil
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
