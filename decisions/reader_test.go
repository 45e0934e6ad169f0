package decisions

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// good is a valid line with queue id Q.
const good = `{"time":"2026-03-01T00:00:00Z","queue_id":"Q","client_ip":"192.0.2.1","helo":"mx.example.org","sender":"joe@example.org","domain":"example.org","mailfrom":{"domain":"example.org","result":"pass"},"identity":"mailfrom","result":"pass","action":"accept"}`

// readEvents reads r to the end: a queue id per record, the error text
// per malformed line.
func readEvents(r *Reader) []string {
	var out []string
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			out = append(out, err.Error())
			continue
		}
		out = append(out, rec.QueueID)
	}
}

func TestReader(t *testing.T) {
	t.Parallel()
	long := `{"time":"2026-03-01T00:00:00Z","helo":"` + strings.Repeat("x", MaxLine) + `"}`
	tests := []struct {
		name  string
		input string
		want  []string
	}{
		{"records", good + "\n" + good + "\n", []string{"Q", "Q"}},
		{"blank lines and CRLF", "\n" + good + "\r\n\n  \n" + good + "\n", []string{"Q", "Q"}},
		{"last line without newline", good + "\n" + good, []string{"Q", "Q"}},
		{"not JSON", good + "\nhello\n" + good + "\n",
			[]string{"Q", "f:2: not a decision record: invalid character 'h' looking for beginning of value (at byte 1)", "Q"}},
		{"cut short", good + "\n" + good[:60] + "\n" + good + "\n",
			[]string{"Q", "f:2: not a decision record: unexpected end of JSON input (at byte 60)", "Q"}},
		{"wrong type", strings.Replace(good, `"helo":"mx.example.org"`, `"helo":7`, 1) + "\n",
			[]string{"f:1: not a decision record: helo is number, where string is needed"}},
		{"no time", strings.Replace(good, `"time":"2026-03-01T00:00:00Z",`, "", 1) + "\n",
			[]string{"f:1: no time"}},
		{"bad time", strings.Replace(good, `2026-03-01T00:00:00Z`, `yesterday`, 1) + "\n",
			[]string{`f:1: not a decision record: parsing time "yesterday" as "2006-01-02T15:04:05Z07:00": cannot parse "yesterday" as "2006"`}},
		{"bad action", strings.Replace(good, `"action":"accept"`, `"action":"bounce"`, 1) + "\n",
			[]string{`f:1: action "bounce" is not accept, reject, tempfail or quarantine`}},
		{"bad result", strings.Replace(good, `"result":"pass"}`, `"result":"hardfail"}`, 1) + "\n",
			[]string{`f:1: mailfrom result "hardfail" is not an SPF result`}},
		{"bad IP", strings.Replace(good, `192.0.2.1`, `192.0.2.300`, 1) + "\n",
			[]string{`f:1: client_ip "192.0.2.300" is not an IP address`}},
		{"no check and not skipped", `{"time":"2026-03-01T00:00:00Z","client_ip":"","action":"accept"}` + "\n",
			[]string{"f:1: neither a mailfrom check nor a skipped reason"}},
		{"unknown skip reason", `{"time":"2026-03-01T00:00:00Z","skipped":"friends","action":"accept"}` + "\n",
			[]string{`f:1: skipped "friends" is not trusted_networks, skip_clients, authenticated, skip_senders or rule`}},
		{"skipped record", `{"time":"2026-03-01T00:00:00Z","queue_id":"S","client_ip":"127.0.0.1","skipped":"trusted_networks","action":"accept"}` + "\n",
			[]string{"S"}},
		{"unknown fields are kept for later versions", strings.Replace(good, `"action"`, `"future":{"x":1},"action"`, 1) + "\n",
			[]string{"Q"}},
		{"line too long", good + "\n" + long + "\n" + good + "\n",
			[]string{"Q", "f:2: line longer than 65536 bytes", "Q"}},
		{"line too long at the end", good + "\n" + long, []string{"Q", "f:2: line longer than 65536 bytes"}},
		{"empty", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := readEvents(NewReader(strings.NewReader(tt.input), "f"))
			if !slices.Equal(got, tt.want) {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

// failingReader gives data, then an error.
type failingReader struct {
	data []byte
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

func TestReaderReadError(t *testing.T) {
	t.Parallel()
	r := NewReader(&failingReader{data: []byte(good + "\n"), err: errors.New("disk on fire")}, "f")
	got := readEvents(r)
	want := []string{"Q", "f: read error: disk on fire"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestOpenGzip reads a log compressed by logrotate, told by its content,
// and reports a cut compressed file as a read error.
func TestOpenGzip(t *testing.T) {
	t.Parallel()
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write([]byte(good + "\n" + good + "\n"))
	zw.Close()
	dir := t.TempDir()
	for _, tt := range []struct {
		name string
		data []byte
		want []string
	}{
		{"decisions.jsonl.1", z.Bytes(), []string{"Q", "Q"}},
		{"cut.gz", z.Bytes()[:z.Len()-10], []string{"Q", "Q", "cut.gz: read error: unexpected EOF"}},
		{"plain.gz", []byte(good + "\n"), []string{"Q"}},
	} {
		path := filepath.Join(dir, tt.name)
		if err := os.WriteFile(path, tt.data, 0o600); err != nil {
			t.Fatal(err)
		}
		rc, err := Open(path)
		if err != nil {
			t.Fatalf("Open(%s): %v", tt.name, err)
		}
		got := readEvents(NewReader(rc, tt.name))
		rc.Close()
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

// FuzzReader checks that no input makes the reader panic or loop: every
// call to Next makes progress, malformed lines carry increasing line
// numbers, and every record it returns is valid.
func FuzzReader(f *testing.F) {
	f.Add([]byte(good + "\n" + good))
	f.Add([]byte("hello\n\n" + good[:50] + "\n{}\n"))
	f.Add([]byte(`{"time":"2026-03-01T00:00:00Z","skipped":"skip_senders","action":"accept","client_ip":"::1"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data), "f")
		last := 0
		for calls := 0; ; calls++ {
			if calls > len(data)+1 {
				t.Fatalf("more than %d results from %d bytes", calls, len(data))
			}
			rec, err := r.Next()
			if errors.Is(err, io.EOF) {
				return
			}
			var m *Malformed
			switch {
			case errors.As(err, &m):
				if m.Line != 0 && m.Line <= last {
					t.Fatalf("line %d after line %d", m.Line, last)
				}
				last = max(last, m.Line)
			case err != nil:
				t.Fatalf("error %T %v", err, err)
			default:
				if verr := rec.Validate(); verr != nil {
					t.Fatalf("invalid record returned: %v", verr)
				}
			}
		}
	})
}
