package main

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf-milter/spf-milter/config"
)

// writeConfig writes text to a config file in a fresh directory.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestValidateGood(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, "authserv_id: mx.example.net\npolicy:\n  mailfrom: {softfail: quarantine}\nnever_refuse: [postmaster]\n")
	code, stdout, stderr := runCmd("validate", "--config", path)
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q; want 0 and nothing", code, stderr)
	}
	// The output is the effective config: defaults filled in, the file's
	// values kept, and it loads back to the same thing.
	for _, want := range []string{
		"listen: inet:127.0.0.1:8895\n",
		"authserv_id: mx.example.net\n",
		"receiver: mx.example.net\n",
		"  mailfrom: {none: accept, neutral: accept, pass: accept, fail: reject, softfail: quarantine, temperror: tempfail, permerror: accept}\n",
		"never_refuse: [postmaster]\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
	want, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	back, err := config.Parse("stdout", []byte(stdout))
	if err != nil {
		t.Fatalf("output does not load: %v\n%s", err, stdout)
	}
	if !reflect.DeepEqual(back, want) {
		t.Errorf("output loads to another config:\n%s", stdout)
	}
}

func TestValidateExample(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runCmd("validate", "-config", filepath.Join("..", "..", "examples", "config.yaml"))
	if code != 0 || stderr != "" || string(config.Default().YAML()) != stdout {
		t.Errorf("exit %d, stderr %q, stdout:\n%s\nwant 0 and the defaults", code, stderr, stdout)
	}
}

func TestValidateBad(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, "listen: inet:8895\ndns:\n  timeout: 0s\npolicy:\n  helo: {fail: bounce}\nlog: {level: loud}\n")
	code, stdout, stderr := runCmd("validate", "--config", path)
	want := path + `:1: listen: bad value "inet:8895": no host; write inet:127.0.0.1:8895 for this host only, or inet:0.0.0.0:8895 for every address (allowed: inet:HOST:PORT, inet6:[HOST]:PORT, unix:/PATH, inet:PORT@HOST)` + "\n" +
		path + `:3: dns.timeout: bad value "0s": must be more than zero (allowed: a Go duration such as 5s or 1m30s)` + "\n" +
		path + `:5: policy.helo.fail: bad value "bounce": unknown value (allowed: accept, reject, tempfail, quarantine)` + "\n" +
		path + `:6: log.level: bad value "loud": unknown value (allowed: debug, info, warn, error)` + "\n" +
		"spf-milter validate: " + path + ": 4 problems\n"
	if code != 1 || stdout != "" || stderr != want {
		t.Errorf("exit %d, stdout %q, stderr:\n%s\nwant 1, nothing, and:\n%s", code, stdout, stderr, want)
	}

	path = writeConfig(t, "dry_run: maybe\n")
	code, _, stderr = runCmd("validate", "--config", path)
	want = path + `:1: dry_run: bad value "maybe": not a boolean (allowed: true, false)` + "\n" +
		"spf-milter validate: " + path + ": 1 problem\n"
	if code != 1 || stderr != want {
		t.Errorf("exit %d, stderr:\n%s\nwant 1 and:\n%s", code, stderr, want)
	}
}

func TestValidateUnreadable(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "missing.yaml")
	code, stdout, stderr := runCmd("validate", "--config", path)
	want := "spf-milter validate: open " + path + ": no such file or directory\n"
	if code != 1 || stdout != "" || stderr != want {
		t.Errorf("exit %d, stdout %q, stderr %q; want 1, nothing, %q", code, stdout, stderr, want)
	}
}

func TestValidateUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"validate", "config.yaml"}, `spf-milter validate: unexpected argument "config.yaml" (the file is given with --config) (run 'spf-milter validate -h' for usage)`},
		{[]string{"validate", "--strict"}, "spf-milter validate: flag provided but not defined: -strict (run 'spf-milter validate -h' for usage)"},
		{[]string{"validate", "--config"}, "spf-milter validate: flag needs an argument: -config (run 'spf-milter validate -h' for usage)"},
		{[]string{"validate", "--config", ""}, "spf-milter validate: --config needs a file path (run 'spf-milter validate -h' for usage)"},
	}
	for _, tt := range tests {
		code, stdout, stderr := runCmd(tt.args...)
		if code != exitUsage || stdout != "" || stderr != tt.want+"\n" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want %d and %q", tt.args, code, stdout, stderr, exitUsage, tt.want)
		}
	}
	for _, args := range [][]string{{"validate", "-h"}, {"help", "validate"}} {
		code, stdout, stderr := runCmd(args...)
		if code != 0 || stderr != "" || !strings.HasPrefix(stdout, "Usage: spf-milter validate [--config PATH]\n") ||
			!strings.Contains(stdout, "-config path") {
			t.Errorf("%q: exit %d, stderr %q, stdout:\n%s", args, code, stderr, stdout)
		}
	}
	if code, stdout, _ := runCmd("help"); code != 0 || !strings.Contains(stdout, "\n  validate check a config file") {
		t.Errorf("help does not list validate:\n%s", stdout)
	}
}

// TestConfigPathNotAFile: every command that takes --config refuses a
// FIFO or an oversized file promptly, with one line naming the path and
// the reason; a FIFO used to block the command for ever.
func TestConfigPathNotAFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, []byte("dry_run: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, config.MaxFileSize+1); err != nil {
		t.Fatal(err)
	}
	files := []struct{ path, want string }{
		{fifo, "not a regular file: it is a FIFO (named pipe)"},
		{big, "file too large: over the limit of 1048576 bytes (1 MiB)"},
	}
	commands := [][]string{
		{"validate", "--config"},
		{"check", "--ip", "192.0.2.1", "--sender", "joe@example.org", "--config"},
		{"replay", "--config"},
		// serve's start, without runServe's process-wide signals and GC
		// settings.
		{"serve"},
	}
	for _, f := range files {
		for _, c := range commands {
			args := append(slices.Clone(c), f.path)
			if c[0] == "replay" {
				args = append(args, filepath.Join(dir, "missing.jsonl"))
			}
			t.Run(c[0]+" "+filepath.Base(f.path), func(t *testing.T) {
				t.Parallel()
				type result struct {
					code           int
					stdout, stderr string
				}
				done := make(chan result, 1)
				go func() {
					if c[0] == "serve" {
						var stderr strings.Builder
						code := serve(context.Background(), serveOptions{configPath: f.path, explicit: true}, nil, &stderr)
						done <- result{code, "", stderr.String()}
						return
					}
					code, stdout, stderr := runCmd(args...)
					done <- result{code, stdout, stderr}
				}()
				select {
				case r := <-done:
					if r.code != 1 || !strings.Contains(r.stderr, f.path) || !strings.Contains(r.stderr, f.want) || strings.Count(r.stderr, "\n") != 1 {
						t.Errorf("%v: exit %d, stderr %q; want 1 and one line with the path and %q", args, r.code, r.stderr, f.want)
					}
				case <-time.After(30 * time.Second):
					t.Fatalf("%v blocked", args)
				}
			})
		}
	}
}
