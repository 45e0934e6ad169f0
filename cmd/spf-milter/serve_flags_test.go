package main

import (
	"io"
	"strings"
	"testing"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/milter"
)

// TestServeFlags checks what the command line makes of the daemon's
// options.
func TestServeFlags(t *testing.T) {
	tests := []struct {
		args       []string
		wantBuffer int
		wantSkip   bool
		wantErr    string
	}{
		{args: nil, wantBuffer: milter.DefaultIOBuffer, wantSkip: true},
		{args: []string{"--skip-replies=false"}, wantBuffer: milter.DefaultIOBuffer},
		{args: []string{"--io-buffer", "0", "--skip-replies=false"}, wantBuffer: 0},
		{args: []string{"--io-buffer", "4096", "--skip-replies"}, wantBuffer: 4096, wantSkip: true},
		{args: []string{"--io-buffer", "-1"}, wantErr: "bad --io-buffer -1"},
		{args: []string{"--skip-replies=maybe"}, wantErr: "skip-replies"},
	}
	cfg := config.Default()
	rt := &milter.Runtime{Config: cfg}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			o, err := parseServe(tt.args, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			opts := daemonOptions(rt, o)
			if opts.IOBuffer != tt.wantBuffer || opts.SkipReplies != tt.wantSkip {
				t.Errorf("IOBuffer %d, SkipReplies %v; want %d, %v", opts.IOBuffer, opts.SkipReplies, tt.wantBuffer, tt.wantSkip)
			}
			if opts.IdleTimeout != cfg.Session.IdleTimeout || opts.MaxDuration != cfg.Session.MaxDuration {
				t.Errorf("session limits %v, %v; want the config's %v, %v", opts.IdleTimeout, opts.MaxDuration, cfg.Session.IdleTimeout, cfg.Session.MaxDuration)
			}
		})
	}
}
