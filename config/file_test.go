package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// padded returns a valid config of exactly size bytes: one key, then a
// comment running to the end.
func padded(size int) []byte {
	head := "dry_run: true\n#"
	return []byte(head + strings.Repeat("x", size-len(head)-1) + "\n")
}

// TestReadFileRefuses: a config path pointed at something other than a
// regular file, or at a file padded past the limit, is refused at once
// with an error that names the path and says why, and nothing is read
// from it (a FIFO with no writer would block a plain open for ever;
// /dev/zero would be read until memory ran out).
func TestReadFileRefuses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	fifoLink := filepath.Join(dir, "fifo-link")
	if err := os.Symlink(fifo, fifoLink); err != nil {
		t.Fatal(err)
	}
	zeroLink := filepath.Join(dir, "zero-link")
	if err := os.Symlink("/dev/zero", zeroLink); err != nil {
		t.Fatal(err)
	}
	over := filepath.Join(dir, "over.yaml")
	if err := os.WriteFile(over, padded(MaxFileSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	// Sparse: a gigabyte that takes no disk, and must take no memory.
	huge := filepath.Join(dir, "huge.yaml")
	if err := os.WriteFile(huge, []byte("dry_run: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(huge, 1<<30); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		path string
		is   error
		want string
	}{
		{"fifo", fifo, ErrNotRegular, "it is a FIFO (named pipe)"},
		{"symlink to a fifo", fifoLink, ErrNotRegular, "it is a FIFO (named pipe)"},
		{"symlink to /dev/zero", zeroLink, ErrNotRegular, "it is a character device"},
		{"directory", dir, ErrNotRegular, "it is a directory"},
		{"one byte over the limit", over, ErrTooLarge, "over the limit of 1048576 bytes (1 MiB)"},
		{"sparse gigabyte", huge, ErrTooLarge, "over the limit of 1048576 bytes (1 MiB)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.path == zeroLink {
				if _, err := os.Stat("/dev/zero"); err != nil {
					t.Skip("no /dev/zero")
				}
			}
			type result struct {
				cfg *Config
				err error
			}
			done := make(chan result, 1)
			go func() {
				cfg, err := Load(tt.path)
				done <- result{cfg, err}
			}()
			var r result
			select {
			case r = <-done:
			case <-time.After(30 * time.Second):
				// The goroutine stays blocked; the test binary ends anyway.
				t.Fatalf("Load(%s) blocked", tt.path)
			}
			if r.cfg != nil || !errors.Is(r.err, tt.is) {
				t.Fatalf("Load: %v, %v; want an error wrapping %v", r.cfg, r.err, tt.is)
			}
			if msg := r.err.Error(); !strings.Contains(msg, tt.path) || !strings.Contains(msg, tt.want) {
				t.Errorf("error %q: want the path and %q", msg, tt.want)
			}
		})
	}
}

// TestReadFileAccepts: the limit is inclusive, and a symlink to a regular
// file (as admins keep configs under version control) is followed.
func TestReadFileAccepts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	full := filepath.Join(dir, "full.yaml")
	if err := os.WriteFile(full, padded(MaxFileSize), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.yaml")
	if err := os.Symlink(full, link); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{full, link} {
		cfg, err := Load(path)
		if err != nil {
			t.Errorf("Load(%s): %v", path, err)
			continue
		}
		if !cfg.DryRun {
			t.Errorf("Load(%s): dry_run not read", path)
		}
	}
	if _, err := ReadFile(filepath.Join(dir, "missing.yaml")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}
}

// TestReadFileSwapped: a path swapped for a FIFO between the check and
// the open is refused too, without the open waiting for a writer. Not
// parallel: it sets a package hook.
func TestReadFileSwapped(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real.yaml")
	if err := os.WriteFile(real, []byte("dry_run: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "config.yaml")
	if err := os.Symlink(real, path); err != nil {
		t.Fatal(err)
	}
	afterStat = func() {
		tmp := path + ".new"
		if err := os.Symlink(fifo, tmp); err != nil {
			t.Error(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Error(err)
		}
	}
	defer func() { afterStat = nil }()
	done := make(chan error, 1)
	go func() {
		_, err := ReadFile(path)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrNotRegular) {
			t.Errorf("ReadFile: %v, want ErrNotRegular", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("ReadFile blocked on a FIFO swapped in after the check")
	}
}
