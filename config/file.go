package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// MaxFileSize is the largest config file ReadFile accepts: 1 MiB. A real
// config is a few kilobytes; the cap keeps a file padded with junk, or a
// path pointed at an endless device, from filling the daemon's memory.
const MaxFileSize = 1 << 20

// ErrNotRegular is wrapped by ReadFile's error for a path that names a
// FIFO, a device, a directory, a socket or anything else that is not a
// regular file.
var ErrNotRegular = errors.New("not a regular file")

// ErrTooLarge is wrapped by ReadFile's error for a file over MaxFileSize.
var ErrTooLarge = errors.New("file too large")

// ReadFile reads the config file at path, the one way every command reads
// it. A symlink to a regular file is followed; anything else that is not a
// regular file is refused without reading it, and so is a file larger
// than MaxFileSize. Open errors are those of os.Open, so that
// errors.Is(err, fs.ErrNotExist) tells a missing file.
func ReadFile(path string) ([]byte, error) {
	// Refused before opening: opening some devices does something. A
	// stat error is left to the open to report.
	if fi, err := os.Stat(path); err == nil {
		if err := checkFile(path, fi); err != nil {
			return nil, err
		}
	}
	if afterStat != nil {
		afterStat()
	}
	// The path may have been swapped since: what is opened is checked
	// again. O_NONBLOCK: opening a FIFO for reading would otherwise wait
	// for a writer, for ever if none comes. It changes nothing for a
	// regular file, the only kind read below.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if err := checkFile(path, fi); err != nil {
		return nil, err
	}
	// The size may change after Stat: the limit holds whatever is read.
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileSize {
		return nil, tooLarge(path)
	}
	return data, nil
}

// afterStat, when set, runs between ReadFile's stat and its open, so that
// a test can swap the file there.
var afterStat func()

// checkFile refuses what is not a regular file, or is too large.
func checkFile(path string, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return &fs.PathError{Op: "read config", Path: path,
			Err: fmt.Errorf("%w: it is %s", ErrNotRegular, FileKind(fi.Mode()))}
	}
	if fi.Size() > MaxFileSize {
		return tooLarge(path)
	}
	return nil
}

func tooLarge(path string) error {
	return &fs.PathError{Op: "read config", Path: path,
		Err: fmt.Errorf("%w: over the limit of %d bytes (1 MiB)", ErrTooLarge, MaxFileSize)}
}

// FileKind names what a file that is not a regular file is ("a FIFO
// (named pipe)", "a directory"...), for the admin who pointed a config or
// a log path there. The config loader and the decision log both say it.
func FileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO (named pipe)"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	default:
		return fmt.Sprintf("of type %v", m.Type())
	}
}
