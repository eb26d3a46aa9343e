package tarcopy

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ErrFileSpec wraps the errors about a malformed file spec (--file
// HOST:GUEST[:MODE]) or one whose host path is missing.
var ErrFileSpec = errors.New("invalid file spec")

// FileSpec is a host file (or directory) to put at a guest path before a
// command runs: `--file HOST:GUEST[:MODE]`.
type FileSpec struct {
	// Host is the host path.
	Host string `json:"host"`
	// Guest is the absolute guest path. It is the destination as with
	// `docker cp` (an existing guest directory receives the file under its
	// own name); missing parent directories are created.
	Guest string `json:"guest"`
	// Mode, with SetMode, replaces the host file's permission bits.
	Mode    fs.FileMode `json:"mode,omitempty"`
	SetMode bool        `json:"setMode,omitempty"`
}

// String formats the spec as it is written on the command line.
func (f FileSpec) String() string {
	s := f.Host + ":" + f.Guest
	if f.SetMode {
		s += fmt.Sprintf(":%04o", unixMode(f.Mode))
	}
	return s
}

// ParseFileSpec reads HOST:GUEST[:MODE] (MODE octal, e.g. 0600) and checks
// it (see Check). A host path holding a colon is read up to the last colon
// before GUEST.
func ParseFileSpec(s string) (FileSpec, error) {
	var f FileSpec
	rest := s
	if i := strings.LastIndexByte(rest, ':'); i > 0 && allDigits(rest[i+1:]) {
		m, err := ParseMode(rest[i+1:])
		if err != nil {
			return f, fmt.Errorf("%w: %q: %v (give HOST:GUEST[:MODE])", ErrFileSpec, s, err)
		}
		f.Mode, f.SetMode, rest = m, true, rest[:i]
	}
	i := strings.LastIndexByte(rest, ':')
	if i <= 0 || i == len(rest)-1 {
		return f, fmt.Errorf("%w: %q: give HOST:GUEST[:MODE], e.g. ./config.json:/etc/app/config.json:0600", ErrFileSpec, s)
	}
	f.Host, f.Guest = rest[:i], rest[i+1:]
	return f, f.Check()
}

// Check verifies that the guest path is absolute and the host path
// exists, and makes the host path absolute.
func (f *FileSpec) Check() error {
	if !filepath.IsAbs(f.Guest) {
		return fmt.Errorf("%w: %s: the guest path %q is not absolute", ErrFileSpec, f, f.Guest)
	}
	if f.Host == "" {
		return fmt.Errorf("%w: %s: no host path", ErrFileSpec, f)
	}
	if _, err := os.Lstat(f.Host); err != nil {
		return fmt.Errorf("%w: %s: host path %s: %v", ErrFileSpec, f, f.Host, unwrapPath(err))
	}
	abs, err := filepath.Abs(f.Host)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrFileSpec, f, err)
	}
	f.Host = abs
	return nil
}

// WriteOptions returns the options that archive the spec's host path.
func (f FileSpec) WriteOptions() WriteOptions {
	return WriteOptions{Mode: f.Mode, SetMode: f.SetMode}
}

func allDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}
