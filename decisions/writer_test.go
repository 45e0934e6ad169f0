package decisions

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/internal/logtest"
	"github.com/spf-milter/spf-milter/spf"
)

// numbered is record n of a test: its number in the queue id, so that the
// order of the lines in the files can be checked.
func numbered(n int) Record {
	return Record{
		Time:     time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(n) * time.Second),
		QueueID:  strconv.Itoa(n),
		ClientIP: "192.0.2.1",
		HELO:     "mx.example.org",
		Sender:   "joe@example.org",
		Domain:   "example.org",
		MailFrom: &Check{Domain: "example.org", Result: spf.Pass, Mechanism: "ip4:192.0.2.0/24"},
		Identity: spf.IdentityMailFrom,
		Result:   spf.Pass,
		Action:   config.Accept,
	}
}

// readAll reads every record of a file, failing on any malformed line.
func readAll(t *testing.T, path string) []Record {
	t.Helper()
	rc, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var out []Record
	r := NewReader(rc, path)
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%v", err)
		}
		out = append(out, rec)
	}
}

// queueIDs are the numbers of records, in order.
func queueIDs(t *testing.T, recs []Record) []int {
	t.Helper()
	out := make([]int, len(recs))
	for i, r := range recs {
		n, err := strconv.Atoi(r.QueueID)
		if err != nil {
			t.Fatalf("queue id %q", r.QueueID)
		}
		out[i] = n
	}
	return out
}

func newTestWriter(t *testing.T, opts Options, s Settings) *Writer {
	t.Helper()
	w, err := NewWriter(opts, s)
	if err != nil {
		t.Fatalf("NewWriter: %v", err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func TestWriterRotation(t *testing.T) {
	t.Parallel()
	// Each line of numbered is under 300 bytes: a 2000-byte file holds 7
	// or so.
	const records, maxSize, maxLine = 100, 2000, 300
	for _, keep := range []int{0, 1, 3} {
		t.Run(fmt.Sprintf("keep %d", keep), func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "decisions.jsonl")
			w := newTestWriter(t, Options{Path: path, MaxSize: maxSize, Keep: keep}, Settings{Buffer: records})
			for i := range records {
				w.Write(numbered(i))
			}
			if err := w.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if w.Lost() != 0 || w.Written() != records {
				t.Fatalf("lost %d, written %d; want 0, %d", w.Lost(), w.Written(), records)
			}
			// Oldest first: PATH.keep ... PATH.1, PATH.
			var names []string
			for i := keep; i >= 1; i-- {
				names = append(names, path+"."+strconv.Itoa(i))
			}
			names = append(names, path)
			var all []int
			for _, name := range names {
				st, err := os.Stat(name)
				if err != nil {
					t.Fatalf("rotated file missing: %v", err)
				}
				if st.Size() > maxSize {
					t.Errorf("%s is %d bytes, over the %d of max_size", name, st.Size(), maxSize)
				}
				if name != path && st.Size() <= maxSize-maxLine {
					t.Errorf("%s was rotated at %d bytes, with room left for another line", name, st.Size())
				}
				if st.Mode().Perm() != fileMode {
					t.Errorf("%s has mode %v, want %v", name, st.Mode().Perm(), fs.FileMode(fileMode))
				}
				ids := queueIDs(t, readAll(t, name))
				if len(ids) == 0 {
					t.Errorf("%s is empty", name)
				}
				all = append(all, ids...)
			}
			if _, err := os.Stat(path + "." + strconv.Itoa(keep+1)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s.%d exists (%v): only %d rotated files are kept", path, keep+1, err, keep)
			}
			// The files hold the newest records, in order, none cut or
			// repeated: a run ending with the last one written.
			for i, id := range all {
				if want := records - len(all) + i; id != want {
					t.Fatalf("records in the files %v: want a run ending at %d", all, records-1)
				}
			}
		})
	}
}

// TestWriterKeepLowered checks that the rotated files beyond a Keep
// lowered since they were written (a reload) go at the next rotation.
func TestWriterKeepLowered(t *testing.T) {
	t.Parallel()
	for _, keep := range []int{0, 2} {
		t.Run(fmt.Sprintf("keep %d", keep), func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "decisions.jsonl")
			// What Keep 5 left.
			for i := 1; i <= 5; i++ {
				if err := os.WriteFile(path+"."+strconv.Itoa(i), []byte("{}\n"), fileMode); err != nil {
					t.Fatal(err)
				}
			}
			w := newTestWriter(t, Options{Path: path, MaxSize: 2000, Keep: keep}, Settings{Buffer: 100})
			for i := range 20 { // a few rotations at 2000 bytes
				w.Write(numbered(i))
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			for i := 1; i <= 5; i++ {
				_, err := os.Stat(path + "." + strconv.Itoa(i))
				if exists := err == nil; exists != (i <= keep) {
					t.Errorf("%s.%d exists: %v, want %v (keep %d)", path, i, exists, i <= keep, keep)
				}
			}
		})
	}
}

// TestWriterConcurrent writes from many goroutines while the file
// rotates: every record ends up whole in exactly one file.
func TestWriterConcurrent(t *testing.T) {
	t.Parallel()
	const writers, each = 8, 250
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	w := newTestWriter(t, Options{Path: path, MaxSize: 10000, Keep: 1000}, Settings{Buffer: writers * each})
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range each {
				w.Write(numbered(g*each + i))
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(path + "*")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 10 {
		t.Errorf("%d files, want the log rotated many times", len(files))
	}
	seen := map[int]int{}
	for _, f := range files {
		for _, id := range queueIDs(t, readAll(t, f)) {
			seen[id]++
		}
	}
	for i := range writers * each {
		if seen[i] != 1 {
			t.Errorf("record %d is in the files %d times, want once", i, seen[i])
		}
	}
	if w.Lost() != 0 {
		t.Errorf("lost %d records", w.Lost())
	}
}

// TestWriterReopen plays logrotate: the file is renamed, and after
// Reopen the records go to a new file at the path; those written before
// Reopen returned are in the renamed one.
func TestWriterReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "decisions.jsonl")
	// No check of the path on a slow machine: the records written
	// between the rename and Reopen must go to the renamed file.
	w := newTestWriter(t, Options{Path: path, MaxSize: 1 << 20, Keep: 2}, Settings{StatInterval: time.Hour})
	for i := range 3 {
		w.Write(numbered(i))
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, path+"-20260301"); err != nil {
		t.Fatal(err)
	}
	for i := 3; i < 5; i++ {
		w.Write(numbered(i))
	}
	if err := w.Reopen(); err != nil {
		t.Fatal(err)
	}
	for i := 5; i < 7; i++ {
		w.Write(numbered(i))
	}
	// Configure with the same options reopens too, as a reload does.
	if err := os.Rename(path, path+"-20260302"); err != nil {
		t.Fatal(err)
	}
	if err := w.Configure(Options{Path: path, MaxSize: 1 << 20, Keep: 2}); err != nil {
		t.Fatal(err)
	}
	w.Write(numbered(7))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		file string
		want []int
	}{
		{path + "-20260301", []int{0, 1, 2, 3, 4}},
		{path + "-20260302", []int{5, 6}},
		{path, []int{7}},
	} {
		if got := queueIDs(t, readAll(t, tt.file)); fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("%s holds %v, want %v", filepath.Base(tt.file), got, tt.want)
		}
	}
}

// TestWriterOff checks that an empty path writes nothing and that a
// reload can turn the log on and off.
func TestWriterOff(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	w := newTestWriter(t, Options{}, Settings{})
	w.Write(numbered(0))
	if err := w.Configure(Options{Path: path, MaxSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	w.Write(numbered(1))
	if err := w.Configure(Options{}); err != nil {
		t.Fatal(err)
	}
	w.Write(numbered(2))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := queueIDs(t, readAll(t, path)); fmt.Sprint(got) != "[1]" {
		t.Errorf("file holds %v, want [1]", got)
	}
	if w.Lost() != 0 {
		t.Errorf("lost %d: records written while off are not lost, just not kept", w.Lost())
	}
}

// TestWriterUnwritable checks that a full disk neither blocks nor fails
// the writer's callers: records are lost, counted, and reported once per
// interval.
func TestWriterUnwritable(t *testing.T) {
	t.Parallel()
	const full = "/dev/full" // every write fails with ENOSPC
	if _, err := os.Stat(full); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is needed: %v", full, err)
		}
		t.Skipf("%s is needed: %v", full, err)
	}
	logs := &logtest.Buffer{}
	w := newTestWriter(t, Options{Path: full, MaxSize: 1000, Keep: 2}, Settings{
		Log: slog.New(slog.NewTextHandler(logs, nil)), ErrorInterval: time.Hour, RetryInterval: time.Nanosecond,
	})
	// Two rounds of failures: the second is within the hour of the
	// first, so only Close reports it.
	for round := range 2 {
		// Held up, the writer takes the 50 in one batch: one failure.
		release := hold(w)
		for i := range 50 {
			w.Write(numbered(round*50 + i))
		}
		release()
		if err := w.Sync(); err == nil || !strings.Contains(err.Error(), "no space left") {
			t.Errorf("Sync: %v, want the ENOSPC of %s", err, full)
		}
	}
	if err := w.Close(); err == nil {
		t.Error("Close: no error after failed writes")
	}
	if w.Lost() != 100 || w.Written() != 0 {
		t.Errorf("lost %d, written %d; want 100, 0", w.Lost(), w.Written())
	}
	out := logs.String()
	// One line while running (the interval is an hour), one at Close.
	if n := strings.Count(out, "decision log records lost"); n != 2 {
		t.Errorf("%d lines about lost records, want 2:\n%s", n, out)
	}
	if !strings.Contains(out, "lost=50 lost_total=50") || !strings.Contains(out, "lost=50 lost_total=100") || !strings.Contains(out, "no space left") {
		t.Errorf("log does not give the total and the cause:\n%s", out)
	}
	if _, err := os.Stat(full + ".1"); err == nil {
		t.Errorf("%s was rotated: a device must never be", full)
	}
}

// TestWriterOpenRetry starts with a directory that does not exist yet:
// records are lost until it does, then written.
func TestWriterOpenRetry(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "later")
	path := filepath.Join(dir, "decisions.jsonl")
	w, err := NewWriter(Options{Path: path, MaxSize: 1 << 20}, Settings{
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), RetryInterval: time.Nanosecond,
	})
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("NewWriter: %v, want the error of the missing directory", err)
	}
	defer w.Close()
	w.Write(numbered(0))
	if err := w.Sync(); err == nil {
		t.Error("Sync: no error while the file cannot open")
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	w.Write(numbered(1))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := queueIDs(t, readAll(t, path)); fmt.Sprint(got) != "[1]" {
		t.Errorf("file holds %v, want [1]", got)
	}
	if w.Lost() != 1 {
		t.Errorf("lost %d, want 1", w.Lost())
	}
}

// TestWriterQueueFull holds the writer goroutine up: Write must return at
// once, losing what does not fit the queue.
func TestWriterQueueFull(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	w := newTestWriter(t, Options{Path: path, MaxSize: 1 << 20}, Settings{
		Buffer: 4, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	release := hold(w)
	for i := range 10 {
		w.Write(numbered(i))
	}
	release()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := queueIDs(t, readAll(t, path)); fmt.Sprint(got) != "[0 1 2 3]" {
		t.Errorf("file holds %v, want the 4 that fit the queue", got)
	}
	if w.Lost() != 6 {
		t.Errorf("lost %d, want 6", w.Lost())
	}
	// After Close, Write loses the record rather than panicking.
	w.Write(numbered(10))
	if w.Lost() != 7 {
		t.Errorf("lost %d after a Write past Close, want 7", w.Lost())
	}
	if err := w.Reopen(); !errors.Is(err, errClosed) {
		t.Errorf("Reopen after Close: %v, want %v", err, errClosed)
	}
}

// TestWriterCutLine appends to a file whose last line a full disk cut
// short: the next record starts a line of its own.
func TestWriterCutLine(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	if err := os.WriteFile(path, []byte(`{"time":"2026-03-01T00:00:00Z","client_ip":"192.0`), 0o640); err != nil {
		t.Fatal(err)
	}
	w := newTestWriter(t, Options{Path: path, MaxSize: 1 << 20}, Settings{})
	w.Write(numbered(1))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := NewReader(f, "d")
	if _, err := r.Next(); err == nil || !strings.HasPrefix(err.Error(), "d:1: ") {
		t.Errorf("first line: %v, want it malformed", err)
	}
	if rec, err := r.Next(); err != nil || rec.QueueID != "1" {
		t.Errorf("second line: %+v, %v; want record 1", rec, err)
	}
}

// hold keeps the writer goroutine busy until release is called, so that
// records queue up.
func hold(w *Writer) (release func()) {
	held, done := make(chan struct{}), make(chan struct{})
	go w.do(func() error {
		close(held)
		<-done
		return nil
	})
	<-held
	return func() { close(done) }
}

// BenchmarkRecordDecision is what a session pays per message: the record
// built and queued. Run with -benchtime high enough to fill the queue and
// the figure includes the writer keeping up (or losing, see lost/op).
func BenchmarkRecordDecision(b *testing.B) {
	d := recordedDecisions()[2]
	path := filepath.Join(b.TempDir(), "decisions.jsonl")
	w, err := NewWriter(Options{Path: path, MaxSize: 10 << 20, Keep: 2}, Settings{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w.RecordDecision(d)
		}
	})
	b.StopTimer()
	w.Close()
	b.ReportMetric(float64(w.Lost())/float64(b.N), "lost/op")
}

// BenchmarkWriterThroughput is what the writer goroutine takes per
// record: encoding, buffered writing, rotation. Sync every thousand keeps
// the queue from overflowing, so that nothing is lost.
func BenchmarkWriterThroughput(b *testing.B) {
	r := FromDecision(recordedDecisions()[2])
	path := filepath.Join(b.TempDir(), "decisions.jsonl")
	w, err := NewWriter(Options{Path: path, MaxSize: 10 << 20, Keep: 2}, Settings{})
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; b.Loop(); i++ {
		w.Write(r)
		if i%1000 == 999 {
			w.Sync()
		}
	}
	w.Close()
	if w.Lost() != 0 {
		b.Fatalf("lost %d", w.Lost())
	}
}

// TestWriterCauses walks the decision log path through the causes of
// loss an attacker or a full disk produce: each new one is logged at once
// though the same one is logged at most once an hour here, every record
// is counted under its reason, and nothing is blamed on a full queue that
// never overflowed.
func TestWriterCauses(t *testing.T) {
	t.Parallel()
	const full = "/dev/full" // every write fails with ENOSPC
	if _, err := os.Stat(full); err != nil {
		t.Skipf("%s is needed: %v", full, err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "decisions.jsonl")
	if err := os.Symlink(full, path); err != nil {
		t.Fatal(err)
	}
	logs := &logtest.Buffer{}
	w := newTestWriter(t, Options{Path: path, MaxSize: 1 << 20}, Settings{
		Log: slog.New(slog.NewTextHandler(logs, nil)), ErrorInterval: time.Hour, RetryInterval: time.Nanosecond,
	})
	n := 0
	write := func(records int) {
		for range records {
			w.Write(numbered(n))
			n++
			w.Sync() // one record at a time: one failure each
		}
	}
	unlink := func() {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	}

	write(4) // the disk is full
	unlink()
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	write(3) // a FIFO: refused, and the writer is not blocked on it
	unlink()
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	write(2) // a directory
	unlink()
	write(1) // a file again: written
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	if got := queueIDs(t, readAll(t, path)); fmt.Sprint(got) != "[9]" {
		t.Errorf("file holds %v, want [9]", got)
	}
	want := map[string]uint64{LostQueueFull: 0, LostWriteError: 4, LostOpenError: 5, LostClosed: 0}
	if got := w.LostByReason(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("lost by reason %v, want %v", got, want)
	}
	if w.Lost() != 9 || w.Written() != 1 {
		t.Errorf("lost %d, written %d; want 9, 1", w.Lost(), w.Written())
	}
	out := logs.String()
	for _, tt := range []struct {
		line  string
		count int
	}{
		// The first failure at once, the three after it at Close.
		{`msg="decision log records lost" path=` + path + ` reason=write_error lost=1 lost_total=1 `, 1},
		{`reason=write_error lost=3 lost_total=9 `, 1},
		{"no space left on device", 2},
		{`msg="cannot open the decision log; records are lost until it opens"`, 2},
		{"is not a regular file: it is a FIFO (named pipe)", 2}, // when it happens, and its count at Close
		{`reason=open_error lost=3 lost_total=9 error="decision log: ` + path + ` is not a regular file: it is a FIFO (named pipe)"`, 1},
		{"is a directory", 3}, // and in the line saying the file opened again
		{`reason=open_error lost=2 lost_total=9 `, 1},
		{`msg="decision log open again"`, 1},
		{"queue full", 0},
		{"slower than the mail", 0},
	} {
		if got := strings.Count(out, tt.line); got != tt.count {
			t.Errorf("%d lines with %q, want %d", got, tt.line, tt.count)
		}
	}
	if t.Failed() {
		t.Logf("log:\n%s", out)
	}
}

// TestWriterQueueFullReported checks that records lost to a full queue
// are reported as such, under their reason.
func TestWriterQueueFullReported(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	logs := &logtest.Buffer{}
	w := newTestWriter(t, Options{Path: path, MaxSize: 1 << 20}, Settings{
		Buffer: 2, Log: slog.New(slog.NewTextHandler(logs, nil)), ErrorInterval: time.Hour,
	})
	release := hold(w)
	for i := range 5 {
		w.Write(numbered(i))
	}
	release()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w.Write(numbered(5))
	want := map[string]uint64{LostQueueFull: 3, LostWriteError: 0, LostOpenError: 0, LostClosed: 1}
	if got := w.LostByReason(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("lost by reason %v, want %v", got, want)
	}
	if out := logs.String(); strings.Count(out, `reason=queue_full lost=3 lost_total=3 error="queue full: the disk is slower than the mail"`) != 1 {
		t.Errorf("the full queue is not reported once:\n%s", out)
	}
}

// TestWriterFileGone removes or replaces the open file behind the
// writer's back: it notices at the next record and reopens the path, so
// that the records go on landing in the file at the path.
func TestWriterFileGone(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		change func(path string) error
		old    string // where the first record is now, "" for nowhere
	}{
		{"deleted", os.Remove, ""},
		{"renamed", func(p string) error { return os.Rename(p, p+".old") }, ".old"},
		{"replaced", func(p string) error {
			// Written aside and renamed over it, as an editor does.
			if err := os.WriteFile(p+".new", nil, fileMode); err != nil {
				return err
			}
			return os.Rename(p+".new", p)
		}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "decisions.jsonl")
			logs := &logtest.Buffer{}
			w := newTestWriter(t, Options{Path: path, MaxSize: 1 << 20}, Settings{
				Log: slog.New(slog.NewTextHandler(logs, nil)), StatInterval: time.Nanosecond,
			})
			w.Write(numbered(0))
			if err := w.Sync(); err != nil {
				t.Fatal(err)
			}
			if err := tt.change(path); err != nil {
				t.Fatal(err)
			}
			w.Write(numbered(1))
			w.Write(numbered(2))
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if got := queueIDs(t, readAll(t, path)); fmt.Sprint(got) != "[1 2]" {
				t.Errorf("file holds %v, want [1 2]", got)
			}
			if tt.old != "" {
				if got := queueIDs(t, readAll(t, path+tt.old)); fmt.Sprint(got) != "[0]" {
					t.Errorf("%s holds %v, want [0]", tt.old, got)
				}
			}
			if w.Lost() != 0 {
				t.Errorf("lost %d", w.Lost())
			}
			if n := strings.Count(logs.String(), "underneath; reopening"); n != 1 {
				t.Errorf("%d lines about the reopening, want 1:\n%s", n, logs)
			}
		})
	}
}

// TestWriterOpenRefuses opens paths that are no place for a log: the
// error names the cause, and opening does not wait for a FIFO's reader.
func TestWriterOpenRefuses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		path string
		want string
	}{
		{fifo, "is not a regular file: it is a FIFO (named pipe)"},
		{dir, "is a directory"},
		{filepath.Join(dir, "missing", "decisions.jsonl"), "no such file or directory"},
	} {
		w, err := NewWriter(Options{Path: tt.path}, Settings{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.path, err, tt.want)
		}
		w.Close()
	}
}
