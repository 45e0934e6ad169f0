// Package logtest holds what tests use to read back the logs of code
// running in other goroutines: a Buffer to give a text or JSON handler,
// and a Handler that keeps records as they are.
package logtest

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
)

// Buffer is a bytes.Buffer that the goroutines under test may write while
// the test reads it. The zero value is ready to use.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written since the last Reset.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Reset forgets everything written.
func (b *Buffer) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Reset()
}

// Handler is a slog.Handler that keeps the records at Level or above for
// which Keep, when set, reports true. Attributes added with WithAttrs and
// groups are dropped: the tests that use it read the attributes of the
// call itself. A fuzz target runs millions of sessions through one, so
// records it is not asked to keep cost no more than Keep.
type Handler struct {
	Level slog.Level
	Keep  func(slog.Record) bool

	mu   sync.Mutex
	kept []slog.Record
}

// Enabled reports whether l is at Level or above.
func (h *Handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.Level }

// Handle keeps r if Keep allows it.
func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	if h.Keep != nil && !h.Keep(r) {
		return nil
	}
	r = r.Clone()
	h.mu.Lock()
	h.kept = append(h.kept, r)
	h.mu.Unlock()
	return nil
}

// WithAttrs returns h itself: see Handler.
func (h *Handler) WithAttrs([]slog.Attr) slog.Handler { return h }

// WithGroup returns h itself: see Handler.
func (h *Handler) WithGroup(string) slog.Handler { return h }

// Records returns the records kept so far, in the order they came.
func (h *Handler) Records() []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]slog.Record(nil), h.kept...)
}

// Attr returns the value of r's attribute key as a string, or "" when r
// has none.
func Attr(r slog.Record, key string) string {
	v := ""
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
			return false
		}
		return true
	})
	return v
}
