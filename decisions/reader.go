package decisions

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// MaxLine bounds one line of the log. The daemon's lines are well under a
// kilobyte; anything longer is not one of them.
const MaxLine = 64 << 10

// Malformed is a line of a decision log that is not a usable record.
type Malformed struct {
	File string `json:"file"`
	// Line is 1-based; 0 for a problem with the file as a whole, such as
	// a read error.
	Line   int    `json:"line"`
	Reason string `json:"reason"`
}

// Error formats the problem as FILE:LINE: REASON.
func (m *Malformed) Error() string {
	if m.Line == 0 {
		return m.File + ": " + m.Reason
	}
	return fmt.Sprintf("%s:%d: %s", m.File, m.Line, m.Reason)
}

// Reader reads the records of one decision log, line by line. A line that
// is not a record is reported and skipped, never the end of the reading:
// a log cut by a crash or a full disk still replays.
type Reader struct {
	name string
	br   *bufio.Reader
	line int
	err  error
}

// NewReader reads records from r; name is the file's name for Malformed.
func NewReader(r io.Reader, name string) *Reader {
	return &Reader{name: name, br: bufio.NewReaderSize(r, 64<<10)}
}

// Next returns the next record. A line that is not a record gives a
// *Malformed error, after which Next goes on with the next line; the end
// of the input gives io.EOF, and a read error a *Malformed for the file
// (Line 0) followed by io.EOF. Blank lines are skipped.
func (r *Reader) Next() (Record, error) {
	for {
		if r.err != nil {
			return Record{}, r.err
		}
		line, err := r.readLine()
		if err != nil {
			r.err = io.EOF
			if errors.Is(err, io.EOF) {
				return Record{}, io.EOF
			}
			return Record{}, &Malformed{File: r.name, Reason: "read error: " + err.Error()}
		}
		if line == nil {
			return Record{}, r.malformed(fmt.Sprintf("line longer than %d bytes", MaxLine))
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		var rec Record
		if err := json.Unmarshal(line, &rec); err != nil {
			return Record{}, r.malformed("not a decision record: " + jsonReason(err))
		}
		if err := rec.Validate(); err != nil {
			return Record{}, r.malformed(err.Error())
		}
		return rec, nil
	}
}

func (r *Reader) malformed(reason string) *Malformed {
	return &Malformed{File: r.name, Line: r.line, Reason: reason}
}

// readLine returns the next line, or nil for a line longer than MaxLine
// (which it skips). A last line without a newline counts as a line.
func (r *Reader) readLine() ([]byte, error) {
	var long []byte
	tooLong := false
	for {
		chunk, err := r.br.ReadSlice('\n')
		if !tooLong {
			long = append(long, chunk...)
			if len(long) > MaxLine {
				tooLong, long = true, nil
			}
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && (len(long) > 0 || tooLong):
			// The last line, without its newline: a log cut short.
		case err != nil:
			return nil, err
		}
		r.line++
		if tooLong {
			return nil, nil
		}
		return long, nil
	}
}

// jsonReason shortens a JSON error to what helps find the problem.
func jsonReason(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("%s (at byte %d)", syn.Error(), syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("%s is %s, where %s is needed", typ.Field, typ.Value, typ.Type)
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// gzipMagic starts every gzip stream.
var gzipMagic = []byte{0x1f, 0x8b}

// Open opens a decision log for reading: plain, or compressed with gzip
// as logrotate's compress option leaves the rotated files (told by the
// content, not the name).
func Open(path string) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	br := bufio.NewReader(f)
	head, _ := br.Peek(len(gzipMagic))
	if !bytes.Equal(head, gzipMagic) {
		return readCloser{br, f}, nil
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return readCloser{zr, f}, nil
}

type readCloser struct {
	io.Reader
	f *os.File
}

func (r readCloser) Close() error { return r.f.Close() }
