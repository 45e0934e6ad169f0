package logtest

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// TestBuffer checks that writers in many goroutines lose nothing, and
// that Reset empties the buffer.
func TestBuffer(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				b.Write([]byte("x"))
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if got := len(b.String()); got != 800 {
		t.Errorf("%d bytes written, want 800", got)
	}
	b.Reset()
	if got := b.String(); got != "" {
		t.Errorf("after Reset: %q", got)
	}
}

// TestHandler checks which records the handler keeps and what it keeps
// of them.
func TestHandler(t *testing.T) {
	tests := []struct {
		name  string
		level slog.Level
		keep  func(slog.Record) bool
		want  []string // messages kept
	}{
		{"everything at info", slog.LevelInfo, nil, []string{"session closed", "panic", "other"}},
		{"errors only", slog.LevelError, nil, []string{"panic"}},
		{"as Keep says", slog.LevelDebug, func(r slog.Record) bool { return strings.HasPrefix(r.Message, "session") },
			[]string{"session closed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &Handler{Level: tt.level, Keep: tt.keep}
			log := slog.New(h).With("dropped", 1)
			log.Info("session closed", "reason", "timeout")
			log.Error("panic", "error", "boom", "stack", "trace")
			log.Debug("other")
			log.Warn("other")
			var got []string
			for _, r := range h.Records() {
				got = append(got, r.Message)
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("kept %q, want %q", got, tt.want)
			}
			for _, r := range h.Records() {
				if Attr(r, "dropped") != "" {
					t.Errorf("%s: kept an attribute added with With", r.Message)
				}
			}
		})
	}
}

// TestAttr checks the reading of one attribute.
func TestAttr(t *testing.T) {
	h := &Handler{}
	slog.New(h).Info("m", "error", "boom", "n", 3)
	r := h.Records()[0]
	for _, tt := range []struct{ key, want string }{{"error", "boom"}, {"n", "3"}, {"missing", ""}} {
		if got := Attr(r, tt.key); got != tt.want {
			t.Errorf("Attr(%q) = %q, want %q", tt.key, got, tt.want)
		}
	}
}
