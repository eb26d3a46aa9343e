package usernet

import (
	"errors"
	"fmt"
	"os"
	"sync"
)

// MaxLogBytes is the size at which a decision log is rotated: the file
// becomes FILE.1 (replacing the one before) and a new FILE is begun, so
// one network keeps at most twice this on disk however busy its guest.
const MaxLogBytes = 8 << 20

// RotatedSuffix names the previous part of a rotated log.
const RotatedSuffix = ".1"

// Log is a decision log file (vmm.Network.EgressLog) that rotates itself.
// Written by the host side only: the guest can neither forge nor erase it.
type Log struct {
	mu   sync.Mutex
	path string
	f    *os.File
	size int64
}

// OpenLog opens (appends to) the decision log at path, creating it 0600.
func OpenLog(path string) (*Log, error) {
	l := &Log{path: path}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *Log) open() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("egress log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("egress log: %w", err)
	}
	l.f, l.size = f, fi.Size()
	return nil
}

// Write appends b (whole lines: the caller writes one decision at a time),
// rotating first when b would take the file past MaxLogBytes.
func (l *Log) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return 0, errors.New("egress log: closed")
	}
	if l.size > 0 && l.size+int64(len(b)) > MaxLogBytes {
		l.f.Close()
		l.f = nil
		if err := os.Rename(l.path, l.path+RotatedSuffix); err != nil {
			return 0, fmt.Errorf("egress log: rotating: %w", err)
		}
		if err := l.open(); err != nil {
			return 0, err
		}
	}
	n, err := l.f.Write(b)
	l.size += int64(n)
	return n, err
}

// Close closes the file.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
